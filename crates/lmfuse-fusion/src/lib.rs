//! Fusion of several classifiers ("members") into one.
//!
//! Everything here works on class-probability matrices (`rows × classes`, row-major), so the
//! members can be any head on any features. The combiners that learn something (weights, a
//! meta-learner, a gate) learn it from **out-of-fold** probabilities only: each training row's
//! member probabilities come from a member fit on the other folds ([`out_of_fold`]), never from
//! a member that saw the row.

mod calibrate;
mod combine;
mod folds;

pub use calibrate::{apply_temperature, fit_temperature};
pub use combine::{
    Combiner, CombinerParams, CombinerSelection, MemberRows, Strategy, GATE_FEATURES_PER_MEMBER,
};
pub use folds::{out_of_fold, out_of_fold_by, out_of_fold_models, stratified_folds};

use lmfuse_classic::ClassicError;

/// Why fusion failed.
#[derive(Debug, thiserror::Error)]
pub enum FusionError {
    /// A member or meta-learner could not be fit.
    #[error(transparent)]
    Classic(#[from] ClassicError),
    /// Inputs of inconsistent shapes.
    #[error("{0}")]
    Shape(String),
    /// An option is out of range.
    #[error("invalid option: {0}")]
    Option(String),
}
