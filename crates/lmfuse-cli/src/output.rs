//! Writing a command's output file: atomically to a path, or to standard output for `-`.

use anyhow::Context as _;
use std::io::Write;
use std::path::Path;

/// Runs `write` on `path` (atomically: a temp file renamed into place), or on a buffered
/// standard output for `-`.
pub(crate) fn write_to(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    if path == Path::new("-") {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        write(&mut out)?;
        out.flush()?;
        return Ok(());
    }
    lmfuse_data::atomic_write(path, write)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `lines` as JSON Lines to `output` (see [`write_to`]).
pub(crate) fn write_lines<T: serde::Serialize>(output: &Path, lines: &[T]) -> anyhow::Result<()> {
    write_to(output, |w| {
        for line in lines {
            serde_json::to_writer(&mut *w, line)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}
