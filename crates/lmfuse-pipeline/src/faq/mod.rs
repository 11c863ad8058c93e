//! The customer-service answer engine: a question/answer table (with categories and
//! paraphrases when it has them) searched by BM25 and dense vectors against both the answers
//! and the known questions, the candidates ranked by a learned ranker that also reads the
//! intent classifier's view of each entry's category, and a calibrated confidence in the
//! first answer: below a threshold chosen on dev for a target precision, the engine hands
//! the question over to a person. A session keeps the last turns, so that a follow-up is
//! searched with its context.
//!
//! The folder: `faq.json` (format `lmfuse-faq`, version 1, the current generation) and
//! `gen-NNNNNN/` holding three search indexes (`answers/`, `questions/`, `entries/`: the
//! last one document per entry, for the BM25-only and dense-only modes) and `model/` (a
//! bundle: the card, the entries, every learned part's tensors). A rebuild writes a new
//! generation and swaps `faq.json` atomically.

mod build;
mod engine;
mod signals;
mod train;

pub use build::{build_faq, FaqBuildReport, FaqBuildSpec};
pub use engine::{
    evaluate_faq, Faq, FaqAnswer, FaqEvalReport, FaqHit, FaqIntent, FaqMode, FaqSessions, FaqTurn,
    ModeFigures,
};
pub use signals::{CONFIDENCE_FEATURES, FAQ_FEATURES};
pub use train::threshold_for_precision;

use crate::error::{PipelineError, Result};
use lmfuse_retrieval::store::{clear_other_generations, generation_dir};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `faq.json`'s `format`.
pub const FORMAT: &str = "lmfuse-faq";
/// `faq.json`'s `version` this lmfuse writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name in an answer engine's folder.
pub const MANIFEST: &str = "faq.json";

/// `faq.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FaqManifest {
    format: String,
    version: u32,
    generation: u64,
    written_by: String,
}

/// The current generation of the engine in `dir`.
fn current_generation(dir: &Path) -> Result<u64> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(|e| {
        PipelineError::Invalid(format!(
            "{}: not an answer engine folder ({e}); build one with `lmfuse faq build`",
            dir.display()
        ))
    })?;
    let m: FaqManifest = serde_json::from_slice(&bytes)
        .map_err(|e| PipelineError::Invalid(format!("{}: damaged ({e})", path.display())))?;
    if m.format != FORMAT || m.version != FORMAT_VERSION {
        return Err(PipelineError::Invalid(format!(
            "{}: {} version {}, this lmfuse reads {FORMAT} version {FORMAT_VERSION}",
            path.display(),
            m.format,
            m.version
        )));
    }
    Ok(m.generation)
}

/// The current generation's folder of the engine in `dir`.
fn current_generation_dir(dir: &Path) -> Result<PathBuf> {
    Ok(generation_dir(dir, current_generation(dir)?))
}

/// The next generation's number in `dir` (1 for a new folder), after clearing folders left
/// by killed builds.
fn next_generation(dir: &Path) -> Result<u64> {
    std::fs::create_dir_all(dir)?;
    let current = current_generation(dir).ok();
    clear_other_generations(dir, current)?;
    Ok(current.unwrap_or(0) + 1)
}

/// Makes `generation` the current one (atomic swap of `faq.json`), then removes the others.
fn publish(dir: &Path, generation: u64) -> Result<()> {
    let manifest = FaqManifest {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        generation,
        written_by: crate::VERSION.into(),
    };
    let json = serde_json::to_vec_pretty(&manifest)?;
    lmfuse_data::atomic_write(&dir.join(MANIFEST), |w| w.write_all(&json))?;
    Ok(clear_other_generations(dir, Some(generation))?)
}
