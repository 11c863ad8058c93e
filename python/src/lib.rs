//! `lmfuse._native`: the Python package's bindings to lmfuse's pipelines. The Python classes
//! in `python/lmfuse/__init__.py` check their arguments and call these functions, which call
//! the same `lmfuse_pipeline` functions as the CLI; every long computation runs with the GIL
//! released.

mod active;
mod classifier;
mod encoder;
mod jobs;
mod ner;
mod relation;
mod search;
mod settings;

use lmfuse_encoder::EncoderError;
use lmfuse_pipeline::PipelineError;
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

/// A pipeline error as the Python exception its kind calls for, carrying the whole chain of
/// messages: a missing file or folder is `FileNotFoundError`, the caller's bad input or
/// settings `ValueError`, anything else `RuntimeError`. A data file or model folder that does
/// not exist counts as missing.
pub(crate) fn py_err(e: PipelineError) -> PyErr {
    let message = e.chain_message();
    // Missing files the libraries report by their own variants rather than an I/O error.
    let missing = matches!(
        e.root(),
        PipelineError::Encoder(
            EncoderError::ModelNotFound { .. } | EncoderError::DefaultModelMissing { .. }
        ) | PipelineError::Data(lmfuse_data::DataError::NotFound { .. })
    );
    if e.is_not_found() || missing {
        PyFileNotFoundError::new_err(message)
    } else if e.is_invalid_input() {
        PyValueError::new_err(message)
    } else {
        PyRuntimeError::new_err(message)
    }
}

/// `ValueError(message)`.
pub(crate) fn value_error(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}

/// Sizes rayon's pool from `LMFUSE_THREADS` (as the CLI's `--threads`), when set; otherwise
/// rayon's default (`RAYON_NUM_THREADS`, else every CPU).
fn init_threads() -> PyResult<()> {
    let Some(raw) = std::env::var_os("LMFUSE_THREADS") else {
        return Ok(());
    };
    let threads: usize = raw
        .to_str()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n: &usize| n > 0)
        .ok_or_else(|| value_error(format!("LMFUSE_THREADS={raw:?} is not a positive integer")))?;
    // Fails only when the pool was already built (the module imported twice): keep it.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    Ok(())
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    init_threads()?;
    m.add("__version__", lmfuse_pipeline::VERSION)?;
    m.add("DEFAULT_MODEL_NAME", lmfuse_encoder::DEFAULT_MODEL_NAME)?;
    m.add("MODELS_DIR_ENV", lmfuse_encoder::MODELS_DIR_ENV)?;
    // The checkout this module was built from: its models/ folder is one place the Python
    // package looks for the default model.
    m.add("SOURCE_ROOT", concat!(env!("CARGO_MANIFEST_DIR"), "/.."))?;
    m.add_class::<encoder::NativeEncoder>()?;
    m.add_class::<classifier::Fitted>()?;
    m.add_function(wrap_pyfunction!(classifier::fit, m)?)?;
    m.add_function(wrap_pyfunction!(classifier::load, m)?)?;
    m.add_function(wrap_pyfunction!(classifier::convert_bundle, m)?)?;
    m.add_function(wrap_pyfunction!(classifier::stratified_folds, m)?)?;
    m.add_function(wrap_pyfunction!(jobs::compare, m)?)?;
    m.add_function(wrap_pyfunction!(active::learning_curves, m)?)?;
    m.add_function(wrap_pyfunction!(active::select, m)?)?;
    m.add_function(wrap_pyfunction!(jobs::finetune, m)?)?;
    m.add_class::<ner::Tagger>()?;
    m.add_function(wrap_pyfunction!(ner::ner_fit, m)?)?;
    m.add_function(wrap_pyfunction!(ner::ner_load, m)?)?;
    m.add_class::<relation::Relations>()?;
    m.add_function(wrap_pyfunction!(relation::relation_fit, m)?)?;
    m.add_function(wrap_pyfunction!(relation::relation_load, m)?)?;
    m.add_class::<search::Index>()?;
    m.add_function(wrap_pyfunction!(search::index_build, m)?)?;
    m.add_function(wrap_pyfunction!(search::index_update, m)?)?;
    m.add_function(wrap_pyfunction!(search::index_open, m)?)?;
    Ok(())
}
