//! `NativeEncoder`: a model resolved once, and the embedding cache, encoding lists of texts
//! into numpy arrays through `lmfuse_pipeline::encoders` (as `lmfuse embed` does).

use crate::{py_err, value_error};
use lmfuse_cache::EmbeddingCache;
use lmfuse_encoder::ModelFiles;
use lmfuse_pipeline::encoders::{embed_texts, CacheSpec, EncoderChoice};
use lmfuse_pipeline::{Result, Silent};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::Mutex;

/// An encoder: its model's files (resolved and hashed once) and the cache.
#[pyclass(module = "lmfuse._native", frozen)]
pub struct NativeEncoder {
    files: ModelFiles,
    /// Text put before every input (`None`: the model's default prompt).
    prefix: Option<String>,
    /// The precision of the matrix products (`None`: as the weights are stored).
    precision: Option<lmfuse_core::Precision>,
    /// The model's maximum tokens per text.
    max_seq_length: usize,
    /// `None` when the cache is off; locked while one call encodes.
    cache: Mutex<Option<EmbeddingCache>>,
}

#[pymethods]
impl NativeEncoder {
    /// Resolves `model` (a folder or Hugging Face id; `None`: the default model) and opens
    /// the cache unless `use_cache` is false (`cache_dir`: instead of the default folder).
    #[new]
    #[pyo3(signature = (model, use_cache, cache_dir, prefix, precision=None))]
    fn new(
        py: Python<'_>,
        model: Option<String>,
        use_cache: bool,
        cache_dir: Option<PathBuf>,
        prefix: Option<String>,
        precision: Option<String>,
    ) -> PyResult<Self> {
        let precision =
            crate::settings::parse_optional("precision", precision.as_deref()).map_err(py_err)?;
        let choice = EncoderChoice {
            model,
            prefix: prefix.clone(),
            precision,
            ..EncoderChoice::default()
        };
        let cache = CacheSpec {
            disabled: !use_cache,
            dir: cache_dir,
        };
        let opened = py.detach(|| -> Result<_> {
            let files = choice.resolve()?;
            let max_seq_length = choice.load_options().fingerprint(&files)?.max_seq_length;
            Ok((files, max_seq_length, cache.open()?))
        });
        let (files, max_seq_length, cache) = opened.map_err(py_err)?;
        Ok(NativeEncoder {
            files,
            prefix,
            precision,
            max_seq_length,
            cache: Mutex::new(cache),
        })
    }

    /// Vector dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.files.config.hidden_size
    }

    /// The model as named (a folder, a hub id or the default's name).
    #[getter]
    fn reference(&self) -> String {
        self.files.reference.clone()
    }

    /// The model's folder.
    #[getter]
    fn path(&self) -> PathBuf {
        self.files.dir.clone()
    }

    /// Maximum tokens per text.
    #[getter]
    fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Embeds `texts` (float32, one row per text, in order), L2-normalised when `normalize`;
    /// a forward batch holds up to `batch_size` × the maximum length tokens (`None`: the
    /// library's default budget).
    #[pyo3(signature = (texts, batch_size, normalize))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        batch_size: Option<usize>,
        normalize: bool,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        if batch_size == Some(0) {
            return Err(value_error("batch_size must be at least 1"));
        }
        let choice = EncoderChoice {
            normalize: Some(normalize),
            batch_tokens: batch_size.map(|b| b.saturating_mul(self.max_seq_length)),
            prefix: self.prefix.clone(),
            precision: self.precision,
            ..EncoderChoice::default()
        };
        let options = choice.load_options();
        let embedded = py.detach(|| {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            embed_texts(&texts, &self.files, &options, cache.as_mut(), &Silent)
        });
        let (emb, _) = embedded.map_err(py_err)?;
        let (rows, dim) = (emb.rows(), emb.dim());
        let array = Array2::from_shape_vec((rows, dim), emb.as_slice().to_vec())
            .map_err(|e| value_error(format!("embeddings of the wrong shape: {e}")))?;
        Ok(array.into_pyarray(py))
    }
}
