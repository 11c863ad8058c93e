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
        // `bert.` (`roberta.` for the RoBERTa family). Decide once from the embeddings tensor.
        let names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
        if !names.iter().any(|n| n.starts_with("embeddings.")) {
            for prefix in ["bert.", "roberta."] {
                if names
                    .iter()
                    .any(|n| n.starts_with(&format!("{prefix}embeddings.")))
                {
                    wf.prefix = prefix;
                }
            }
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

    /// Calls `read` with the stored name, dtype and bytes of tensor `name` (canonical,
    /// un-prefixed) after checking its shape.
    fn with_view<T>(
        &self,
        name: &str,
        shape: &[usize],
        read: impl FnOnce(String, Dtype, &[u8]) -> Result<T, EncoderError>,
    ) -> Result<T, EncoderError> {
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
        read(stored, view.dtype(), view.data())
    }

    fn dtype_error(&self, stored: String, dtype: Dtype) -> EncoderError {
        EncoderError::TensorDtype {
            name: stored,
            path: self.path.clone(),
            dtype: format!("{dtype:?}"),
        }
    }

    /// Reads tensor `name` (canonical, un-prefixed) as f32, checking its shape.
    pub(crate) fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EncoderError> {
        self.with_view(name, shape, |stored, dtype, bytes| match dtype {
            Dtype::F32 => Ok(bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()),
            Dtype::F16 => Ok(bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect()),
            Dtype::BF16 => Ok(bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect()),
            other => Err(self.dtype_error(stored, other)),
        })
    }

    /// Reads an embedding table, keeping half-precision storage as it is.
    pub(crate) fn table(&self, name: &str, shape: &[usize]) -> Result<Table, EncoderError> {
        self.with_view(name, shape, |stored, dtype, bytes| match dtype {
            Dtype::F16 => Ok(Table::F16(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            )),
            Dtype::BF16 => Ok(Table::Bf16(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            )),
            Dtype::F32 => Ok(Table::F32(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )),
            other => Err(self.dtype_error(stored, other)),
        })
    }
}

/// An embedding table in its stored precision. Half-precision tables stay half in memory and
/// are widened row by row on lookup (the multilingual word table is 384 MB in f32, 192 in f16).
pub(crate) enum Table {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    Bf16(Vec<half::bf16>),
}

impl Table {
    /// Writes row `row` (of width `out.len()`) into `out`.
    pub(crate) fn copy_row(&self, row: usize, out: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        let h = out.len();
        match self {
            Table::F32(t) => out.copy_from_slice(&t[row * h..][..h]),
            Table::F16(t) => t[row * h..][..h].convert_to_f32_slice(out),
            Table::Bf16(t) => t[row * h..][..h].convert_to_f32_slice(out),
        }
    }

    /// The whole table in f32.
    pub(crate) fn to_f32(&self) -> Vec<f32> {
        match self {
            Table::F32(t) => t.clone(),
            Table::F16(t) => t.iter().map(|v| v.to_f32()).collect(),
            Table::Bf16(t) => t.iter().map(|v| v.to_f32()).collect(),
        }
    }
}
