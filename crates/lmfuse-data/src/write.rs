//! Writers. Every file is written atomically: a temp file in the destination folder, fsync,
//! rename over the destination, fsync of the folder. A crash leaves the old file or the new
//! one, never a half-written file.

use std::io::{BufWriter, Write};
use std::path::Path;

/// Writes a file atomically with `write`, which receives a buffered writer.
pub fn atomic_write(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".lmfuse-tmp-")
        .tempfile_in(dir)?;
    {
        let mut w = BufWriter::new(tmp.as_file());
        write(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // Make the rename itself durable.
    std::fs::File::open(dir)?.sync_all()
}

/// The format of an embeddings file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// NumPy `.npy`, float32, shape `(rows, dim)`.
    Npy,
    /// One `{"embedding": [...]}` object per line.
    Jsonl,
}

impl OutputFormat {
    /// `.npy` files are NumPy; everything else is JSON Lines.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("npy") => OutputFormat::Npy,
            _ => OutputFormat::Jsonl,
        }
    }
}

/// Writes `rows × dim` row-major `data` to `w` in `format`.
pub fn write_embeddings(
    w: &mut dyn Write,
    format: OutputFormat,
    dim: usize,
    data: &[f32],
) -> std::io::Result<()> {
    let rows = data.len().checked_div(dim).unwrap_or(0);
    match format {
        OutputFormat::Npy => {
            let dict =
                format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
            // Magic (6) + version (2) + header length (2) + dict + padding + '\n', to 64 bytes.
            let unpadded = 10 + dict.len() + 1;
            let pad = (64 - unpadded % 64) % 64;
            let header_len = (dict.len() + pad + 1) as u16;
            w.write_all(b"\x93NUMPY\x01\x00")?;
            w.write_all(&header_len.to_le_bytes())?;
            w.write_all(dict.as_bytes())?;
            w.write_all(&vec![b' '; pad])?;
            w.write_all(b"\n")?;
            for v in data {
                w.write_all(&v.to_le_bytes())?;
            }
        }
        OutputFormat::Jsonl => {
            for row in data.chunks_exact(dim.max(1)) {
                w.write_all(b"{\"embedding\":")?;
                serde_json::to_writer(&mut *w, row)?;
                w.write_all(b"}\n")?;
            }
        }
    }
    Ok(())
}

/// sha256 of a file's bytes as lower-case hex, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_parsable() {
        let mut buf = Vec::new();
        write_embeddings(
            &mut buf,
            OutputFormat::Npy,
            3,
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        )
        .unwrap();
        assert_eq!(&buf[..8], b"\x93NUMPY\x01\x00");
        let hl = u16::from_le_bytes([buf[8], buf[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let header = std::str::from_utf8(&buf[10..10 + hl]).unwrap();
        assert!(header.contains("'shape': (2, 3)") && header.ends_with('\n'));
        let body = &buf[10 + hl..];
        assert_eq!(body.len(), 24);
        assert_eq!(f32::from_le_bytes(body[20..24].try_into().unwrap()), 6.0);
    }

    #[test]
    fn jsonl_round_trips() {
        let mut buf = Vec::new();
        write_embeddings(&mut buf, OutputFormat::Jsonl, 2, &[0.5, -1.25, 3.0, 0.1]).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let rows: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["embedding"][1].as_f64().unwrap() as f32, 0.1f32);
    }

    #[test]
    fn atomic_write_keeps_old_file_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        atomic_write(&p, |w| w.write_all(b"old")).unwrap();
        let err = atomic_write(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "temp file left behind");
    }
}
