//! Linear-chain conditional random fields for sequence labelling.
//!
//! A [`Crf`] scores a tag sequence by state weights (one per attribute seen with a tag in
//! training, as crfsuite keeps them) and tag-to-tag transition weights. Training minimises the
//! negative log-likelihood plus `c2 · ‖w‖²` (crfsuite's L2 convention, so `c2` values carry
//! over) by L-BFGS, stopping when the objective improved by less than `delta` (relative) over
//! `period` iterations or after `max_iter`. Transitions that break IOB2 (`I-X` after anything
//! but `B-X`/`I-X`, or first in a sentence) are forbidden in training and decoding alike, so
//! every decoded sequence is well formed.
//!
//! Written here rather than bound to crfsuite (C): the model must live in lmfuse's bundles
//! (safetensors), take features from the encoder later (fusion), and train on both cores; the
//! forward–backward pass is ~100 lines.

mod chain;
pub mod features;
mod model;

pub use chain::Chain;
pub use features::{sentence_attributes, FeatureParams, Gazetteer};
pub use model::{Crf, FitReport, StoredCrf, Tagged, TaggedTokens};

/// Why a CRF cannot be trained or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CrfError {
    /// A hyperparameter is out of range.
    #[error("invalid CRF parameter {name}: {reason}")]
    Param {
        /// The parameter.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// Nothing to train on.
    #[error("no training sentences")]
    Empty,
    /// A sentence has another number of tags than tokens.
    #[error("sentence {sentence}: {tokens} tokens but {tags} tags")]
    Lengths {
        /// Sentence index.
        sentence: usize,
        /// Tokens.
        tokens: usize,
        /// Tags.
        tags: usize,
    },
    /// A sentence's dense features are not tokens × dim finite values.
    #[error("sentence {sentence}: {values} dense values for {tokens} tokens of dimension {dim}, or not all finite")]
    Dense {
        /// Sentence index.
        sentence: usize,
        /// Tokens.
        tokens: usize,
        /// Values given.
        values: usize,
        /// Dimension.
        dim: usize,
    },
    /// A stored model is inconsistent.
    #[error("CRF model: {0}")]
    Stored(String),
}

fn yes() -> bool {
    true
}

/// Training hyperparameters, validated once by [`CrfParams::validate`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CrfParams {
    /// L2 coefficient (crfsuite's `c2`).
    pub c2: f64,
    /// L-BFGS iterations at most.
    pub max_iter: usize,
    /// Stop when the objective improved by less than this fraction over `period` iterations.
    pub delta: f64,
    /// Iterations the improvement is measured over.
    pub period: usize,
    /// Attributes seen fewer times than this in training are dropped.
    pub min_freq: usize,
    /// Whether the hand-made features are used (else only a bias, beside dense features).
    #[serde(default = "yes")]
    pub hand_features: bool,
    /// Which token features are made.
    pub features: FeatureParams,
}

impl Default for CrfParams {
    fn default() -> Self {
        Self {
            c2: 0.1,
            max_iter: 100,
            delta: 1e-5,
            period: 10,
            min_freq: 1,
            hand_features: true,
            features: FeatureParams::default(),
        }
    }
}

impl CrfParams {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), CrfError> {
        let bad = |name, reason: &str| {
            Err(CrfError::Param {
                name,
                reason: reason.to_string(),
            })
        };
        if !(self.c2.is_finite() && self.c2 >= 0.0) {
            return bad("c2", "must be a finite number ≥ 0");
        }
        if self.max_iter == 0 {
            return bad("max_iter", "must be at least 1");
        }
        if !(self.delta.is_finite() && self.delta >= 0.0) {
            return bad("delta", "must be a finite number ≥ 0");
        }
        if self.period == 0 {
            return bad("period", "must be at least 1");
        }
        if self.min_freq == 0 {
            return bad("min_freq", "must be at least 1");
        }
        Ok(())
    }
}
