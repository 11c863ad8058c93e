//! Reading tensors from a safetensors file, with the naming quirks of real checkpoints.

use crate::error::EncoderError;
use lmfuse_core::Precision;
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A memory-mapped safetensors file that hands out tensors as f32 vectors.
pub(crate) struct WeightFile {
    path: PathBuf,
    // SAFETY of the map: the file is opened read-only; lmfuse never writes model files in
    // place (bundles and models are written to a temp file and renamed), so the mapping does
    // not change under us in normal use.
    mmap: Arc<memmap2::Mmap>,
    prefix: &'static str,
}

impl WeightFile {
    pub(crate) fn open(path: &Path) -> Result<Self, EncoderError> {
        let file = std::fs::File::open(path).map_err(|e| EncoderError::io(path, e))?;
        // SAFETY: see the field comment.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| EncoderError::io(path, e))?;
        let mut wf = Self {
            path: path.to_path_buf(),
            mmap: Arc::new(mmap),
            prefix: "",
        };
        let st = wf.parse()?;
        // Checkpoints saved from `BertModel` have no prefix; those from `BertFor*` heads have
        // `bert.` (`roberta.` for the RoBERTa family). Decide once from the embeddings tensor.
        let names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
        if !names.iter().any(|n| n.starts_with("embeddings.")) {
            let has = |prefix: &str| {
                let stem = format!("{prefix}embeddings.");
                names.iter().any(|n| n.starts_with(&stem))
            };
            if let Some(prefix) = ["bert.", "roberta."].into_iter().find(|p| has(p)) {
                wf.prefix = prefix;
            }
        }
        Ok(wf)
    }

    /// Drops this process's resident pages of the file once the weights have been copied out,
    /// so they stop counting towards its memory (tables page back in as rows are read).
    pub(crate) fn release_pages(&self) {
        // SAFETY: the map is a read-only view of a file that is never written in place (see
        // the field comment), so pages dropped here read back identical on the next access.
        // A hint only: failure leaves the pages resident, which is harmless.
        #[cfg(unix)]
        let _ = unsafe {
            self.mmap
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
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
        self.with_stored(name, self.candidates(name), shape, read)
    }

    /// [`WeightFile::with_view`] over the stored names `tried`, in order.
    fn with_stored<T>(
        &self,
        name: &str,
        tried: Vec<String>,
        shape: &[usize],
        read: impl FnOnce(String, Dtype, &[u8]) -> Result<T, EncoderError>,
    ) -> Result<T, EncoderError> {
        let st = self.parse()?;
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

    /// The element type of a stored float tensor, or an error naming it.
    fn element(&self, stored: String, dtype: Dtype) -> Result<Element, EncoderError> {
        match dtype {
            Dtype::F32 => Ok(Element::F32),
            Dtype::F16 => Ok(Element::F16),
            Dtype::BF16 => Ok(Element::Bf16),
            other => Err(EncoderError::TensorDtype {
                name: stored,
                path: self.path.clone(),
                dtype: format!("{other:?}"),
            }),
        }
    }

    /// Reads tensor `name` as stored (a task head's, outside the encoder's prefix: the
    /// `classifier.weight` of a `BertForSequenceClassification`) as f32, checking its shape.
    pub(crate) fn head_tensor(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<Vec<f32>, EncoderError> {
        self.with_stored(
            name,
            vec![name.to_string()],
            shape,
            |stored, dtype, bytes| {
                let element = self.element(stored, dtype)?;
                let mut out = vec![0.0; bytes.len() / element.size()];
                element.widen(bytes, &mut out);
                Ok(out)
            },
        )
    }

    /// The shape of tensor `name` as stored, when the file has it.
    pub(crate) fn stored_shape(&self, name: &str) -> Result<Option<Vec<usize>>, EncoderError> {
        Ok(self.parse()?.tensor(name).ok().map(|v| v.shape().to_vec()))
    }

    /// Reads tensor `name` (canonical, un-prefixed) as f32, checking its shape.
    pub(crate) fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EncoderError> {
        self.with_view(name, shape, |stored, dtype, bytes| {
            let element = self.element(stored, dtype)?;
            let mut out = vec![0.0; bytes.len() / element.size()];
            element.widen(bytes, &mut out);
            Ok(out)
        })
    }

    /// [`Precision::Int8`] when some tensor is stored in int8 (a converted model), else f32.
    pub(crate) fn stored_precision(&self) -> Result<Precision, EncoderError> {
        let st = self.parse()?;
        let int8 = st.tensors().iter().any(|(_, v)| v.dtype() == Dtype::I8);
        Ok(if int8 {
            Precision::Int8
        } else {
            Precision::F32
        })
    }

    /// The precision to run weights stored in `stored` (this file's [`stored_precision`]) in:
    /// `asked`, or `stored` when nothing is asked. Weights stored in int8 cannot run in any
    /// other precision: that is an error naming `weights`.
    ///
    /// [`stored_precision`]: WeightFile::stored_precision
    pub(crate) fn run_precision(
        stored: Precision,
        asked: Option<Precision>,
        weights: &Path,
    ) -> Result<Precision, EncoderError> {
        match (stored, asked) {
            (Precision::Int8, Some(asked)) if asked != Precision::Int8 => {
                Err(EncoderError::Unsupported {
                    path: weights.to_path_buf(),
                    message: format!(
                        "the weights are stored in int8, so the model cannot run in {asked} \
                         (use the f32 model it was converted from)"
                    ),
                })
            }
            (stored, asked) => Ok(asked.unwrap_or(stored)),
        }
    }

    /// The weight of linear layer `name` (canonical, un-prefixed), `[out, inp]` as stored:
    /// f32 (widened from f16/bf16), or int8 with the `{name}.weight_scale` f32 per row.
    pub(crate) fn linear_rows(
        &self,
        name: &str,
        out: usize,
        inp: usize,
    ) -> Result<StoredRows, EncoderError> {
        let weight = format!("{name}.weight");
        let int8 = self.with_view(&weight, &[out, inp], |_, dtype, bytes| {
            Ok((dtype == Dtype::I8).then(|| bytes.iter().map(|&b| b as i8).collect::<Vec<_>>()))
        })?;
        match int8 {
            Some(rows) => {
                let scales = self.tensor(&format!("{name}.weight_scale"), &[out])?;
                if let Some(bad) = scales.iter().position(|s| !s.is_finite() || *s < 0.0) {
                    return Err(EncoderError::Safetensors {
                        path: self.path.clone(),
                        message: format!("{name}.weight_scale[{bad}] is {}", scales[bad]),
                    });
                }
                Ok(StoredRows::Int8 { rows, scales })
            }
            None => Ok(StoredRows::F32(self.tensor(&weight, &[out, inp])?)),
        }
    }

    /// An embedding table left in the mapped file, in its stored precision (f32, f16 or bf16):
    /// rows are read, and widened, on lookup, and their pages released after each batch
    /// ([`Table::release_pages`]), so a 250,037-piece multilingual table (384 MB in f32, 192 MB
    /// in f16) costs the server next to no resident memory instead of all of it.
    pub(crate) fn table(&self, name: &str, shape: &[usize]) -> Result<Table, EncoderError> {
        self.with_view(name, shape, |stored, dtype, bytes| {
            let element = self.element(stored, dtype)?;
            let offset = bytes.as_ptr() as usize - self.mmap.as_ptr() as usize;
            // Lookups jump across the table: no read-ahead. A hint only: where the kernel
            // refuses it, lookups are just as correct.
            let _ = self
                .mmap
                .advise_range(memmap2::Advice::Random, offset, bytes.len());
            Ok(Table {
                map: self.mmap.clone(),
                offset,
                len: bytes.len(),
                element,
            })
        })
    }
}

/// A stored float type and how to widen it to f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    F32,
    F16,
    Bf16,
}

impl Element {
    /// Bytes per value.
    fn size(self) -> usize {
        match self {
            Element::F32 => 4,
            Element::F16 | Element::Bf16 => 2,
        }
    }

    /// Widens little-endian `bytes` (`out.len()` values) into `out`.
    fn widen(self, bytes: &[u8], out: &mut [f32]) {
        let values = out.iter_mut().zip(bytes.chunks_exact(self.size()));
        match self {
            Element::F32 => {
                values.for_each(|(o, b)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            Element::F16 => {
                values.for_each(|(o, b)| *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            }
            Element::Bf16 => {
                values.for_each(|(o, b)| *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            }
        }
    }
}

/// An embedding table: a view of its bytes in the mapped weight file.
pub(crate) struct Table {
    map: Arc<memmap2::Mmap>,
    offset: usize,
    len: usize,
    element: Element,
}

impl Table {
    fn bytes(&self) -> &[u8] {
        &self.map[self.offset..self.offset + self.len]
    }

    /// Drops this process's resident pages of the table (the kernel maps whole neighbourhoods
    /// of a looked-up row), so that after a batch it holds none of them.
    pub(crate) fn release_pages(&self) {
        // SAFETY: as for `WeightFile::release_pages`: a read-only view of a file never written
        // in place reads back identical; a concurrent lookup just pages its row in again.
        #[cfg(unix)]
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                self.offset,
                self.len,
            )
        };
    }

    /// Writes row `row` (of width `out.len()`) into `out`.
    pub(crate) fn copy_row(&self, row: usize, out: &mut [f32]) {
        let row_bytes = out.len() * self.element.size();
        self.element
            .widen(&self.bytes()[row * row_bytes..][..row_bytes], out);
    }

    /// The whole table in f32.
    pub(crate) fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.len / self.element.size()];
        self.element.widen(self.bytes(), &mut out);
        out
    }
}

/// A linear layer's weight as stored, `[out, in]` rows.
pub(crate) enum StoredRows {
    /// f32 rows.
    F32(Vec<f32>),
    /// int8 rows and one f32 scale per row.
    Int8 { rows: Vec<i8>, scales: Vec<f32> },
}

impl StoredRows {
    /// The layers' rows one after the other (query, key and value fused); all must be stored
    /// alike.
    pub(crate) fn stack(parts: Vec<StoredRows>, path: &Path) -> Result<StoredRows, EncoderError> {
        let mut f32_rows = Vec::new();
        let (mut int8_rows, mut int8_scales) = (Vec::new(), Vec::new());
        for part in parts {
            match part {
                StoredRows::F32(w) => f32_rows.extend(w),
                StoredRows::Int8 { rows, scales } => {
                    int8_rows.extend(rows);
                    int8_scales.extend(scales);
                }
            }
        }
        match (f32_rows.is_empty(), int8_rows.is_empty()) {
            (_, true) => Ok(StoredRows::F32(f32_rows)),
            (true, false) => Ok(StoredRows::Int8 {
                rows: int8_rows,
                scales: int8_scales,
            }),
            (false, false) => Err(EncoderError::Safetensors {
                path: path.to_path_buf(),
                message: "the query, key and value weights are stored in different types (some \
                          int8, some not)"
                    .into(),
            }),
        }
    }
}
