//! Model bundles: a folder with `manifest.json` (versioned metadata), `weights.safetensors`
//! (every tensor of the featurisers and the head, f32) and named JSON files for what is not a
//! tensor (vocabularies). No pickle, no opaque blobs.
//!
//! [`save`] writes the whole folder beside the destination, fsyncs it, and swaps it in with one
//! atomic rename (`renameat2(RENAME_EXCHANGE)` when a bundle is already there), so an
//! interrupted save leaves either the old bundle or the new one, never a mix. [`load`] checks the
//! format version, every file's sha256 and every tensor before anything is used.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Version of the bundle layout written by this lmfuse.
///
/// - 1: the first layout.
/// - 2: model cards may carry `block_weights` (feature blocks scaled before the head) and the
///   `mlp`/`shared` heads. A version-1 lmfuse would ignore the weights and predict wrongly, so
///   it must refuse these bundles; version-1 bundles still load here (weights default to 1).
/// - 3: a head may be a bag of fold models (`"bagged": k` in its card, tensors under
///   `head.fold{j}.`), as ensemble members that predict with their out-of-fold models are.
///   Only bundles with such a head are written as version 3 ([`BAGGED_HEADS_VERSION`]); the
///   others stay version 2, which the lmfuse before bags reads. Versions 1 and 2 load here.
/// - 4: an ensemble member may read an encoder fine-tuned inside the bundle (under
///   [`ENCODER_DIR`]) instead of the one the members share. Only such ensembles are written
///   as version 4 ([`MIXED_ENCODERS_VERSION`]), which an lmfuse that reads up to 3 refuses
///   by its version rather than by a member's encoder.
/// - 5: a card may carry a `temperature` its probabilities are scaled by (calibration fit by
///   `compare`). An lmfuse that reads up to 4 would ignore it and report uncalibrated
///   probabilities, so only calibrated bundles are written as version 5
///   ([`CALIBRATED_VERSION`]), which it refuses.
pub const FORMAT_VERSION: u32 = 5;
/// The version of a bundle whose probabilities are scaled by a temperature.
pub const CALIBRATED_VERSION: u32 = 5;
/// The version of an ensemble with a member whose encoder is fine-tuned inside the bundle.
pub const MIXED_ENCODERS_VERSION: u32 = 4;
/// The version of a bundle that holds a bag of fold models as a head.
pub const BAGGED_HEADS_VERSION: u32 = 3;
/// The version of every other bundle written now.
pub const PLAIN_VERSION: u32 = 2;
/// The oldest bundle layout this lmfuse reads.
pub const OLDEST_READABLE_VERSION: u32 = 1;
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The weights' file name.
pub const WEIGHTS: &str = "weights.safetensors";

/// Why a bundle could not be saved or loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file is missing.
    #[error("bundle file {path} is missing")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing failed; the cause is the [`source`](std::error::Error::source), not
    /// repeated in the message.
    #[error("I/O error on {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("{path}: invalid manifest: {message}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The bundle was written in a layout this lmfuse does not read.
    #[error("{path}: bundle format version {found} is not supported (this lmfuse reads versions {OLDEST_READABLE_VERSION} to {FORMAT_VERSION}); retrain or use the lmfuse that wrote it ({writer})")]
    Version {
        /// The manifest.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// lmfuse version that wrote it.
        writer: String,
    },
    /// A file's content differs from the sha256 in the manifest.
    #[error("{path}: sha256 {actual} differs from {expected} in the manifest; the file is corrupt or was changed")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Expected digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// The weights file is not valid safetensors, or holds an unexpected tensor.
    #[error("{path}: {message}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The metadata of a bundle. `created_at` is the one field that differs between two bundles
/// trained from the same data with the same seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Version of the lmfuse that wrote the bundle.
    pub lmfuse_version: String,
    /// When the bundle was written (RFC 3339, UTC).
    pub created_at: String,
    /// What the bundle does and how, as written by the trainer (encoder, labels, features,
    /// head, training data hash, metrics).
    pub model: serde_json::Value,
    /// sha256 of each file of the bundle but the manifest.
    pub files: BTreeMap<String, String>,
}

pub use lmfuse_core::{Tensor, TensorData};

/// A loaded bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// The manifest.
    pub manifest: Manifest,
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// JSON files by name (checksummed like the weights).
    pub json: BTreeMap<String, serde_json::Value>,
    /// Other files (a fine-tuned encoder under [`ENCODER_DIR`]), checked against their
    /// sha256 but not read into memory: paths relative to the bundle folder.
    pub files: Vec<String>,
}

/// The folder inside a bundle that holds a fine-tuned encoder's model files.
pub const ENCODER_DIR: &str = "encoder";

/// Whether `name` can be an extra file of a bundle: `encoder/<file>` or
/// `encoder/<folder>/<file>`, plain names without leading dots.
fn valid_file_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() >= 2
        && parts.len() <= 3
        && parts[0] == ENCODER_DIR
        && parts[1..].iter().all(|c| {
            !c.is_empty()
                && !c.starts_with('.')
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
        })
}

/// A missing file is [`BundleError::Missing`]; other failures are I/O errors.
fn open_error(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BundleError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            BundleError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    }
}

/// sha256 of a file, read in 1 MiB blocks.
fn sha256_file(path: &Path) -> Result<String, BundleError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(open_error(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    let mut f = std::fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), BundleError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Serialises `tensors` to safetensors bytes (sorted by name, so equal input gives equal bytes).
fn weights_bytes(tensors: &BTreeMap<String, Tensor>) -> Result<Vec<u8>, String> {
    let raw: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            if t.shape.iter().product::<usize>() != t.len() {
                return Err(format!(
                    "tensor {name:?}: shape {:?} does not hold {} values",
                    t.shape,
                    t.len()
                ));
            }
            let (dtype, bytes) = match &t.data {
                TensorData::F32(v) => (
                    safetensors::Dtype::F32,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
                TensorData::I32(v) => (
                    safetensors::Dtype::I32,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
            };
            Ok((name.clone(), dtype, t.shape.clone(), bytes))
        })
        .collect::<Result<_, _>>()?;
    let views = raw
        .iter()
        .map(|(n, dtype, s, d)| {
            safetensors::tensor::TensorView::new(*dtype, s.clone(), d)
                .map(|v| (n.clone(), v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, None).map_err(|e| e.to_string())
}

/// Whether `name` can be a JSON file of a bundle: `*.json`, a plain file name, not the manifest.
fn valid_json_name(name: &str) -> bool {
    name.ends_with(".json")
        && name != MANIFEST
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Writes a bundle to folder `dir` atomically: `tensors` into the weights file, each entry of
/// `json` into its own file. `manifest.files` is filled in here; `manifest.format_version`
/// must be one this lmfuse reads (the writer sets the oldest that holds its model).
pub fn save(
    dir: &Path,
    manifest: Manifest,
    tensors: &BTreeMap<String, Tensor>,
    json: &BTreeMap<String, serde_json::Value>,
) -> Result<(), BundleError> {
    save_with_files(dir, manifest, tensors, json, &[])
}

/// [`save`], plus extra files given as (path relative to the bundle, bytes): a fine-tuned
/// encoder's model folder under [`ENCODER_DIR`]. Everything lands in one atomic step.
pub fn save_with_files(
    dir: &Path,
    mut manifest: Manifest,
    tensors: &BTreeMap<String, Tensor>,
    json: &BTreeMap<String, serde_json::Value>,
    files: &[(String, Vec<u8>)],
) -> Result<(), BundleError> {
    for (name, _) in files {
        if !valid_file_name(name) {
            return Err(BundleError::Manifest {
                path: dir.join(MANIFEST),
                message: format!("{name:?} is not a valid name for a bundle file (encoder/...)"),
            });
        }
    }
    let weights = weights_bytes(tensors).map_err(|message| BundleError::Weights {
        path: dir.join(WEIGHTS),
        message,
    })?;
    let mut extra_files = Vec::with_capacity(json.len());
    for (name, value) in json {
        if !valid_json_name(name) {
            return Err(BundleError::Manifest {
                path: dir.join(MANIFEST),
                message: format!("{name:?} is not a valid name for a bundle JSON file"),
            });
        }
        let bytes = serde_json::to_vec(value).map_err(|e| BundleError::Manifest {
            path: dir.join(name),
            message: e.to_string(),
        })?;
        extra_files.push((name.clone(), bytes));
    }
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&manifest.format_version) {
        return Err(BundleError::Manifest {
            path: dir.join(MANIFEST),
            message: format!(
                "format version {} is not one this lmfuse writes ({OLDEST_READABLE_VERSION} to {FORMAT_VERSION})",
                manifest.format_version
            ),
        });
    }
    manifest.files = BTreeMap::from([(WEIGHTS.to_string(), sha256_hex(&weights))]);
    for (name, bytes) in &extra_files {
        manifest.files.insert(name.clone(), sha256_hex(bytes));
    }
    for (name, bytes) in files {
        manifest.files.insert(name.clone(), sha256_hex(bytes));
    }
    let mut manifest_bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BundleError::Manifest {
            path: dir.join(MANIFEST),
            message: e.to_string(),
        })?;
    manifest_bytes.push(b'\n');

    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let name = dir
        .file_name()
        .ok_or_else(|| BundleError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other("the bundle path has no folder name"),
        })?
        .to_string_lossy()
        .into_owned();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = parent.join(format!(".{name}.tmp-{}-{stamp}", std::process::id()));
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    let staged = (|| {
        write_synced(&tmp.join(WEIGHTS), &weights)?;
        for (name, bytes) in &extra_files {
            write_synced(&tmp.join(name), bytes)?;
        }
        for (name, bytes) in files {
            let path = tmp.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            write_synced(&path, bytes)?;
            if let Some(parent) = path.parent() {
                sync_dir(parent)?;
            }
        }
        write_synced(&tmp.join(MANIFEST), &manifest_bytes)?;
        sync_dir(&tmp)
    })();
    if let Err(e) = staged {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        exchange(&tmp, dir)?;
        // `tmp` now holds the previous bundle.
        sync_dir(&parent)?;
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        std::fs::rename(&tmp, dir).map_err(io(dir))?;
        sync_dir(&parent)?;
    }
    remove_stale_temps(&parent, &name);
    Ok(())
}

/// Swaps two paths in one atomic step.
fn exchange(a: &Path, b: &Path) -> Result<(), BundleError> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let ca = CString::new(a.as_os_str().as_bytes()).map_err(|e| BundleError::Io {
            path: a.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        let cb = CString::new(b.as_os_str().as_bytes()).map_err(|e| BundleError::Io {
            path: b.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves them as given.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                ca.as_ptr(),
                libc::AT_FDCWD,
                cb.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
            return Err(BundleError::Io {
                path: b.to_path_buf(),
                source: err,
            });
        }
    }
    // Without an atomic exchange: move the old bundle aside, then the new one in. A crash
    // between the two renames leaves the old bundle under its aside name, never destroyed.
    let aside = a.with_extension("old");
    std::fs::rename(b, &aside).map_err(io(b))?;
    std::fs::rename(a, b).map_err(io(b))?;
    std::fs::rename(&aside, a).map_err(io(a))
}

/// Removes temp folders left by saves of `name` that were killed.
fn remove_stale_temps(parent: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let own = format!("{prefix}{}-", std::process::id());
    if let Ok(entries) = std::fs::read_dir(parent) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) && !n.starts_with(&own) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Loads and verifies the bundle in `dir`.
pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
    let manifest_path = dir.join(MANIFEST);
    let read = |path: &Path| std::fs::read(path).map_err(open_error(path));
    let bytes = read(&manifest_path)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| BundleError::Manifest {
            path: manifest_path.clone(),
            message: e.to_string(),
        })?;
    let found = value.get("format_version").and_then(|v| v.as_u64());
    match found {
        Some(v) if (OLDEST_READABLE_VERSION as u64..=FORMAT_VERSION as u64).contains(&v) => {}
        Some(v) => {
            return Err(BundleError::Version {
                path: manifest_path,
                found: v as u32,
                writer: value
                    .get("lmfuse_version")
                    .and_then(|v| v.as_str())
                    .unwrap_or("unknown")
                    .to_string(),
            })
        }
        None => {
            return Err(BundleError::Manifest {
                path: manifest_path,
                message: "no format_version".into(),
            })
        }
    }
    let manifest: Manifest = serde_json::from_value(value).map_err(|e| BundleError::Manifest {
        path: manifest_path.clone(),
        message: e.to_string(),
    })?;
    let weights_path = dir.join(WEIGHTS);
    let expected = manifest
        .files
        .get(WEIGHTS)
        .ok_or_else(|| BundleError::Manifest {
            path: manifest_path.clone(),
            message: format!("no sha256 for {WEIGHTS}"),
        })?;
    let weights = read(&weights_path)?;
    let actual = sha256_hex(&weights);
    if &actual != expected {
        return Err(BundleError::Checksum {
            path: weights_path,
            expected: expected.clone(),
            actual,
        });
    }
    let st = safetensors::SafeTensors::deserialize(&weights).map_err(|e| BundleError::Weights {
        path: weights_path.clone(),
        message: format!("invalid safetensors: {e}"),
    })?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let words = view
            .data()
            .chunks_exact(4)
            .map(|b| [b[0], b[1], b[2], b[3]]);
        let data = match view.dtype() {
            safetensors::Dtype::F32 => TensorData::F32(words.map(f32::from_le_bytes).collect()),
            safetensors::Dtype::I32 => TensorData::I32(words.map(i32::from_le_bytes).collect()),
            other => {
                return Err(BundleError::Weights {
                    path: weights_path,
                    message: format!("tensor {name:?} has dtype {other:?}, expected F32 or I32"),
                })
            }
        };
        tensors.insert(
            name,
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    let mut json = BTreeMap::new();
    let mut files = Vec::new();
    for (name, expected) in manifest.files.iter().filter(|(n, _)| n.as_str() != WEIGHTS) {
        let path = dir.join(name);
        if valid_file_name(name) {
            let actual = sha256_file(&path)?;
            if &actual != expected {
                return Err(BundleError::Checksum {
                    path,
                    expected: expected.clone(),
                    actual,
                });
            }
            files.push(name.clone());
            continue;
        }
        if !valid_json_name(name) {
            return Err(BundleError::Manifest {
                path: manifest_path.clone(),
                message: format!("file {name:?} is not a valid bundle file name"),
            });
        }
        let bytes = read(&path)?;
        let actual = sha256_hex(&bytes);
        if &actual != expected {
            return Err(BundleError::Checksum {
                path,
                expected: expected.clone(),
                actual,
            });
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| BundleError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        json.insert(name.clone(), value);
    }
    Ok(Bundle {
        manifest,
        tensors,
        json,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json() -> BTreeMap<String, serde_json::Value> {
        BTreeMap::from([(
            "vocab.json".to_string(),
            serde_json::json!(["a", "b c", "中"]),
        )])
    }

    fn sample(version: &str) -> (Manifest, BTreeMap<String, Tensor>) {
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            lmfuse_version: version.into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            model: serde_json::json!({"head": {"kind": "logreg"}, "labels": ["neg", "pos"]}),
            files: BTreeMap::new(),
        };
        let tensors = BTreeMap::from([
            (
                "head.coef".to_string(),
                Tensor::f32(vec![3, 2], vec![1.0, -2.0, 3.5, 0.0, 1e-7, 9.0]),
            ),
            (
                "head.intercept".to_string(),
                Tensor::f32(vec![2], vec![0.5, -0.5]),
            ),
        ]);
        (manifest, tensors)
    }

    #[test]
    fn round_trip_and_identical_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (m, t) = sample("a");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        save(&a, m.clone(), &t, &json()).unwrap();
        save(&b, m.clone(), &t, &json()).unwrap();
        for f in [MANIFEST, WEIGHTS] {
            assert_eq!(
                std::fs::read(a.join(f)).unwrap(),
                std::fs::read(b.join(f)).unwrap(),
                "{f}"
            );
        }
        let loaded = load(&a).unwrap();
        assert_eq!(loaded.tensors, t);
        assert_eq!(loaded.json, json());
        assert_eq!(loaded.manifest.model, m.model);
        // Overwrite in place: the new one is there, no temp folders left.
        let (m2, mut t2) = sample("b");
        t2.get_mut("head.intercept").unwrap().data = TensorData::F32(vec![7.0, 8.0]);
        save(&a, m2, &t2, &json()).unwrap();
        assert_eq!(load(&a).unwrap().tensors, t2);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A JSON file that was changed or removed is caught.
        std::fs::write(a.join("vocab.json"), "[\"x\"]").unwrap();
        let e = load(&a).unwrap_err().to_string();
        assert!(e.contains("vocab.json") && e.contains("sha256"), "{e}");
        std::fs::remove_file(a.join("vocab.json")).unwrap();
        let e = load(&a).unwrap_err().to_string();
        assert!(e.contains("vocab.json") && e.contains("missing"), "{e}");
    }

    fn corrupt_case(edit: impl FnOnce(&Path)) -> String {
        let dir = tempfile::tempdir().unwrap();
        let (m, t) = sample("x");
        let b = dir.path().join("bundle");
        save(&b, m, &t, &json()).unwrap();
        edit(&b);
        load(&b).unwrap_err().to_string()
    }

    #[test]
    fn corrupt_bundles_are_typed_errors_naming_the_file() {
        let e = corrupt_case(|b| std::fs::remove_file(b.join(WEIGHTS)).unwrap());
        assert!(e.contains(WEIGHTS) && e.contains("missing"), "{e}");
        let e = corrupt_case(|b| std::fs::remove_file(b.join(MANIFEST)).unwrap());
        assert!(e.contains(MANIFEST) && e.contains("missing"), "{e}");
        for cut in [0usize, 4, 8, 50] {
            let e = corrupt_case(|b| {
                let w = b.join(WEIGHTS);
                let bytes = std::fs::read(&w).unwrap();
                std::fs::write(&w, &bytes[..cut.min(bytes.len())]).unwrap();
            });
            assert!(
                e.contains(WEIGHTS) && e.contains("sha256"),
                "cut {cut}: {e}"
            );
        }
        let e = corrupt_case(|b| {
            let w = b.join(WEIGHTS);
            let mut bytes = std::fs::read(&w).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x55;
            std::fs::write(&w, &bytes).unwrap();
        });
        assert!(e.contains("sha256") && e.contains("corrupt"), "{e}");
        let e = corrupt_case(|b| {
            let p = b.join(MANIFEST);
            let s = std::fs::read_to_string(&p).unwrap().replace(
                &format!("\"format_version\": {FORMAT_VERSION}"),
                "\"format_version\": 99",
            );
            std::fs::write(&p, s).unwrap();
        });
        assert!(
            e.contains("format version 99") && e.contains(MANIFEST),
            "{e}"
        );
        let e =
            corrupt_case(|b| std::fs::write(b.join(MANIFEST), "{\"format_version\": 1,").unwrap());
        assert!(e.contains("invalid manifest"), "{e}");
    }

    #[test]
    fn encoder_files_travel_inside_the_bundle_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let (manifest, tensors) = sample("0.1.0");
        let files = vec![
            ("encoder/model.safetensors".to_string(), vec![1u8, 2, 3]),
            ("encoder/1_Pooling/config.json".to_string(), b"{}".to_vec()),
        ];
        save_with_files(&path, manifest.clone(), &tensors, &json(), &files).unwrap();
        let b = load(&path).unwrap();
        assert_eq!(
            b.files,
            vec!["encoder/1_Pooling/config.json", "encoder/model.safetensors"]
        );
        assert_eq!(
            std::fs::read(path.join("encoder/model.safetensors")).unwrap(),
            [1, 2, 3]
        );
        std::fs::write(path.join("encoder/model.safetensors"), [1u8, 2, 4]).unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, BundleError::Checksum { .. }), "{err}");
        std::fs::remove_file(path.join("encoder/model.safetensors")).unwrap();
        assert!(matches!(
            load(&path).unwrap_err(),
            BundleError::Missing { .. }
        ));
        for bad in [
            "../x",
            "encoder/../x",
            "encoder/.hidden",
            "other/file",
            "encoder/a/b/c",
            "encoder",
        ] {
            let r = save_with_files(
                &path,
                manifest.clone(),
                &tensors,
                &json(),
                &[(bad.to_string(), vec![0])],
            );
            assert!(r.is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_bad_tensor_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (m, mut t) = sample("x");
        t.get_mut("head.coef").unwrap().shape = vec![4, 4];
        let b = dir.path().join("bundle");
        let e = save(&b, m, &t, &json()).unwrap_err().to_string();
        assert!(e.contains("head.coef"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Child side of the kill test: saves bundles in a loop until killed.
    #[test]
    #[ignore = "run by kill_during_save_keeps_a_loadable_bundle"]
    fn save_forever() {
        let Ok(dir) = std::env::var("LMFUSE_BUNDLE_SAVE_FOREVER") else {
            return;
        };
        let (m, mut t) = sample("loop");
        let big = Tensor::f32(vec![512, 512], vec![0.25; 512 * 512]);
        t.insert("big".into(), big);
        for i in 0.. {
            t.get_mut("head.intercept").unwrap().data =
                TensorData::F32(vec![i as f32, -(i as f32)]);
            save(Path::new(&dir), m.clone(), &t, &json()).unwrap();
        }
    }

    #[test]
    fn kill_during_save_keeps_a_loadable_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("bundle");
        let (m, t) = sample("first");
        save(&b, m, &t, &json()).unwrap();
        let exe = std::env::current_exe().unwrap();
        for round in 0..20u64 {
            let mut child = std::process::Command::new(&exe)
                .args(["--ignored", "--exact", "tests::save_forever", "--nocapture"])
                .env("LMFUSE_BUNDLE_SAVE_FOREVER", &b)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(30 + (round * 37) % 120));
            child.kill().unwrap();
            child.wait().unwrap();
            let loaded = load(&b).unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(loaded.tensors["head.intercept"].len(), 2);
        }
    }
}
