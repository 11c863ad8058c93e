//! Fine-tuning for lmfuse: encoder and head trained together.
//!
//! [`Network`] is a BERT encoder with a linear head whose forward pass keeps its activations
//! and whose backward pass gives the gradient of every trainable tensor. [`fit`] trains it
//! with AdamW (decoupled weight decay), linear warm-up and decay, dropout, gradient clipping
//! and accumulation, optional freezing, layer-wise learning rates, LoRA adapters and FGM
//! adversarial training; it evaluates on dev, stops early, restores the best weights, logs
//! metrics as JSON Lines and checkpoints atomically so that a killed run can be resumed.
//! [`fit_with_head`] trains the encoder end to end with a head of the caller's
//! ([`PooledHead`]) in place of the linear one. [`fit_tagger`] fine-tunes it for tagging
//! (a softmax or CRF over each word's first subword); [`fit_relation`] for relation
//! classification (a layer over the states of the first token and the two entity markers).

mod export;
mod joint;
mod lora;
mod network;
mod optim;
mod relation;
mod rows;
mod tagging;
mod train;

pub use export::{encoder_files, save_encoder};
pub use joint::{fit_with_head, HeadError, PooledHead};
pub use lora::{Lora, LoraParams, LoraTarget};
pub use network::{Batch, Dropout, Forward, Network, ParamStore, TensorSpec};
pub use optim::{AdamW, Schedule};
pub use relation::{add_marker_tokens, fit_relation, relation_layer, PairSet, RelationFit};
pub use tagging::{fit_tagger, Decoded, TagHead, TagSet, TaggerFit};
pub use train::{
    contrastive_pairs, embed, fit, fit_contrastive, predict_proba, ContrastiveParams, EvalRecord,
    Event, FinetuneParams, FitSummary, Metric, Pgd, CHECKPOINT_DIR, METRICS_LOG,
};

use std::path::PathBuf;

/// What can go wrong while fine-tuning.
#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    /// A hyperparameter or input is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing a file failed; the cause is the
    /// [`source`](std::error::Error::source) (a field named `source` is one), not repeated in
    /// the message.
    #[error("I/O error on {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A checkpoint cannot be used.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A [`PooledHead`] failed.
    #[error("the head failed")]
    Head(#[source] HeadError),
    /// The loss or a gradient became NaN or infinite.
    #[error("training diverged at step {step}: the loss is {loss} (lower the learning rate)")]
    Diverged {
        /// Optimiser step.
        step: usize,
        /// The loss.
        loss: f32,
    },
}

/// Fills each `bias.len()`-wide row of `dst` with `bias`.
pub(crate) fn kernels_fill(dst: &mut [f32], bias: &[f32]) {
    for row in dst.chunks_exact_mut(bias.len()) {
        row.copy_from_slice(bias);
    }
}
