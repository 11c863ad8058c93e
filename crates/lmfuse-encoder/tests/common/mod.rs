//! Shared helpers of the encoder's integration tests: where models and fixtures live, and
//! skipping (loudly) when they are absent.

#![allow(dead_code)]

use lmfuse_encoder::{LoadOptions, ModelFiles, SentenceEncoder};
use std::path::PathBuf;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `../shared` beside the workspace, or `$LMFUSE_SHARED_DIR`.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("LMFUSE_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared"))
}

/// Returns `path` if it exists. Otherwise prints why the test is skipped and returns `None`,
/// or panics when `LMFUSE_REQUIRE_ASSETS=1` (CI sets it, so a missing asset fails there).
pub fn require(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let msg = format!(
        "{what} not found at {}: run `bash scripts/fetch-models.sh` (models) or provide ../shared",
        path.display()
    );
    if std::env::var("LMFUSE_REQUIRE_ASSETS").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// Loads `models/<name>` with default options, or `None` (skipped) when absent.
pub fn load_model(name: &str) -> Option<SentenceEncoder> {
    let dir = require(workspace().join("models").join(name), name)?;
    let files = ModelFiles::from_dir(&dir, name).expect("model files");
    Some(SentenceEncoder::load(&files, &LoadOptions::default()).expect("load model"))
}

/// Cosine similarity.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}
