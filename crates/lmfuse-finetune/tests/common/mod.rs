//! Helpers shared by the fine-tuning tests.

use lmfuse_core::Pooling;
use lmfuse_encoder::{LoadOptions, ModelFiles, SentenceEncoder};
use std::path::PathBuf;

/// splade-tiny (2 layers, hidden 128) at 32 tokens, or `None` (skipped loudly; a failure
/// under LMFUSE_REQUIRE_ASSETS=1) when it was not fetched.
pub fn tiny() -> Option<SentenceEncoder> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/splade-tiny");
    if !dir.join("model.safetensors").is_file() {
        let msg = format!(
            "splade-tiny not found at {}: run `bash scripts/fetch-models.sh`",
            dir.display()
        );
        assert!(
            std::env::var("LMFUSE_REQUIRE_ASSETS").as_deref() != Ok("1"),
            "{msg}"
        );
        eprintln!("SKIPPED: {msg}");
        return None;
    }
    let files = ModelFiles::from_dir(&dir, "splade-tiny").expect("splade-tiny loads");
    let options = LoadOptions {
        pooling: Some(Pooling::Mean),
        max_seq_length: Some(32),
        ..LoadOptions::default()
    };
    Some(SentenceEncoder::load(&files, &options).expect("encoder"))
}
