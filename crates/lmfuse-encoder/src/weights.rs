//! Reading tensors from a safetensors file, with the naming quirks of real checkpoints.

use crate::error::EncoderError;
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

/// A memory-mapped safetensors file that hands out tensors as f32 vectors.
pub(crate) struct WeightFile {
    path: PathBuf,
    // SAFETY of the map: the file is opened read-only; lmfuse never writes model files in
    // place (bundles and models are written to a temp file and renamed), so the mapping does
    // not change under us in normal use.
    mmap: memmap2::Mmap,
    prefix: &'static str,
}

impl WeightFile {
    pub(crate) fn open(path: &Path) -> Result<Self, EncoderError> {
        let file = std::fs::File::open(path).map_err(|e| EncoderError::io(path, e))?;
        // SAFETY: see the field comment.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| EncoderError::io(path, e))?;
        let mut wf = Self {
            path: path.to_path_buf(),
            mmap,
            prefix: "",
        };
        let st = wf.parse()?;
        // Checkpoints saved from `BertModel` have no prefix; those from `BertFor*` heads have
        // `bert.`. Decide once from the embeddings tensor.
        let names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
        if !names.iter().any(|n| n.starts_with("embeddings."))
            && names.iter().any(|n| n.starts_with("bert.embeddings."))
        {
            wf.prefix = "bert.";
        }
        Ok(wf)
    }

    fn parse(&self) -> Result<SafeTensors<'_>, EncoderError> {
        SafeTensors::deserialize(&self.mmap).map_err(|e| EncoderError::Safetensors {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// Candidate stored names for canonical `name`: with the file's prefix, and with the old
    /// LayerNorm names `gamma`/`beta` for `weight`/`bias`.
    fn candidates(&self, name: &str) -> Vec<String> {
        let mut out = vec![format!("{}{name}", self.prefix)];
        if name.contains("LayerNorm.") {
            if let Some(stem) = name.strip_suffix(".weight") {
                out.push(format!("{}{stem}.gamma", self.prefix));
            } else if let Some(stem) = name.strip_suffix(".bias") {
                out.push(format!("{}{stem}.beta", self.prefix));
            }
        }
        out
    }

    /// Reads tensor `name` (canonical, un-prefixed) as f32, checking its shape.
    pub(crate) fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EncoderError> {
        let st = self.parse()?;
        let tried = self.candidates(name);
        let (stored, view) = tried
            .iter()
            .find_map(|n| st.tensor(n).ok().map(|v| (n.clone(), v)))
            .ok_or_else(|| EncoderError::MissingTensor {
                name: name.to_string(),
                path: self.path.clone(),
                tried: tried.join(", "),
            })?;
        if view.shape() != shape {
            return Err(EncoderError::TensorShape {
                name: stored,
                path: self.path.clone(),
                expected: shape.to_vec(),
                actual: view.shape().to_vec(),
            });
        }
        let bytes = view.data();
        let values = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(EncoderError::TensorDtype {
                    name: stored,
                    path: self.path.clone(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        Ok(values)
    }
}
