//! Classical heads of lmfuse, fit on dense (embeddings, tabular) or sparse (TF-IDF) features,
//! and a small MLP that fuses the two (see [`mlp`]).
//!
//! Hyperparameters and fitted models are separate types: `*Params` is validated by `check()`
//! and consumed by `fit`, which returns the fitted model with `predict_proba`.

pub mod any;
pub mod bag;
pub mod forest;
pub mod gbdt;
pub mod head;
pub mod knn;
mod lbfgs;
pub mod logreg;
pub mod mlp;
pub mod nb;
pub mod svm;

pub use any::{Head, HeadParams};
pub use bag::Bag;
pub use forest::{MaxFeatures, RandomForest, RandomForestParams};
pub use gbdt::{Gbdt, GbdtParams};
pub use head::{check_input, stored_f32, stored_i32, FitHead, ProbaHead};
pub use knn::{Knn, KnnParams, KnnWeighting};
pub use lbfgs::{minimize, LbfgsOptions, LbfgsResult};
pub use logreg::{ClassWeight, LogisticRegression, LogisticRegressionParams};
pub use mlp::{Mlp, MlpParams, MlpTrainer};
pub use nb::{NaiveBayes, NaiveBayesParams, NbVariant};
pub use svm::{LinearSvm, LinearSvmParams};

use lmfuse_core::Features;

/// Why a head could not be fit or used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClassicError {
    /// A hyperparameter is out of its range.
    #[error("invalid hyperparameter {name} = {value}: {reason}")]
    InvalidParam {
        /// Parameter name.
        name: &'static str,
        /// Value given.
        value: String,
        /// Allowed range.
        reason: &'static str,
    },
    /// Features and labels disagree in length.
    #[error("{rows} feature rows but {labels} labels")]
    LengthMismatch {
        /// Feature rows.
        rows: usize,
        /// Labels.
        labels: usize,
    },
    /// No training rows.
    #[error("no training examples")]
    Empty,
    /// Fewer than two classes among the labels.
    #[error("the training labels hold only {present} distinct class(es); at least 2 are needed")]
    TooFewClasses {
        /// Distinct classes present.
        present: usize,
    },
    /// A label index is out of range.
    #[error("label index {label} at row {row} is not below the class count {classes}")]
    LabelOutOfRange {
        /// Row.
        row: usize,
        /// Label.
        label: usize,
        /// Classes.
        classes: usize,
    },
    /// A feature is NaN or infinite.
    #[error("feature at row {row}, column {col} is NaN or infinite")]
    NotFinite {
        /// Row.
        row: usize,
        /// Column.
        col: usize,
    },
    /// A stored model tensor is missing or does not fit the model.
    #[error("stored tensor {tensor:?}: {reason}")]
    Stored {
        /// Tensor name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// The head needs dense features but got sparse ones.
    #[error("the {head} head needs dense features (emb, tab); got {cols} sparse columns (TF-IDF)")]
    NeedsDense {
        /// Head name.
        head: &'static str,
        /// Sparse columns given.
        cols: usize,
    },
    /// Training produced NaN or infinite weights.
    #[error("training diverged: the {head} head's weights are NaN or infinite (lower the learning rate or raise the weight decay)")]
    Diverged {
        /// Head name.
        head: &'static str,
    },
    /// Rows of another storage (dense or sparse) than a step-wise trainer was set up for.
    #[error("the trainer was set up for {expected} rows, got {got} rows")]
    InputKind {
        /// The storage the trainer was set up for (`dense` or `sparse`).
        expected: &'static str,
        /// The storage given.
        got: &'static str,
    },
    /// Features of another width than the model was fit on.
    #[error("features have {got} columns, the model was fit on {expected}")]
    Width {
        /// Columns expected.
        expected: usize,
        /// Columns given.
        got: usize,
    },
}

/// Checks a training set before any fitting work.
pub fn check_training_data(
    x: &Features,
    y: &[usize],
    n_classes: usize,
) -> Result<(), ClassicError> {
    if x.rows() != y.len() {
        return Err(ClassicError::LengthMismatch {
            rows: x.rows(),
            labels: y.len(),
        });
    }
    if y.is_empty() {
        return Err(ClassicError::Empty);
    }
    let mut seen = vec![false; n_classes];
    for (row, &label) in y.iter().enumerate() {
        if label >= n_classes {
            return Err(ClassicError::LabelOutOfRange {
                row,
                label,
                classes: n_classes,
            });
        }
        seen[label] = true;
    }
    let present = seen.iter().filter(|s| **s).count();
    if present < 2 {
        return Err(ClassicError::TooFewClasses { present });
    }
    if let Some((row, col)) = x.first_non_finite() {
        return Err(ClassicError::NotFinite { row, col });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_data {
    use lmfuse_core::{CsrMatrix, DenseMatrix, Features, SeededRng};

    /// `n` points in 2-D around `k` centres on a circle of radius 3, uniform noise of
    /// half-width `noise`; labels cycle through the classes.
    pub fn blobs(n: usize, k: usize, noise: f32, seed: u64) -> (Features, Vec<usize>) {
        let mut rng = SeededRng::new(seed);
        let mut u = || (rng.next_u64() >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0;
        let (mut data, mut y) = (Vec::new(), Vec::new());
        for i in 0..n {
            let c = i % k;
            let a = c as f32 * std::f32::consts::TAU / k as f32;
            data.push(3.0 * a.cos() + noise * u());
            data.push(3.0 * a.sin() + noise * u());
            y.push(c);
        }
        (Features::Dense(DenseMatrix::new(n, 2, data).unwrap()), y)
    }

    /// The same rows as CSR.
    pub fn to_sparse(x: &Features) -> Features {
        match x {
            Features::Dense(m) => Features::Sparse(CsrMatrix::from_dense(m)),
            Features::Sparse(_) => x.clone(),
        }
    }

    /// Share of rows whose most probable class is the label.
    pub fn accuracy(proba: &[f32], y: &[usize], k: usize) -> f64 {
        let hits = proba
            .chunks(k)
            .zip(y)
            .filter(|(row, &t)| (0..k).max_by(|&a, &b| row[a].total_cmp(&row[b])) == Some(t))
            .count();
        hits as f64 / y.len() as f64
    }
}
