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
mod tree_data;

pub use any::{Head, HeadParams};
pub use bag::Bag;
pub use forest::{MaxFeatures, RandomForest, RandomForestParams};
pub use gbdt::{Gbdt, GbdtParams};
pub use head::{check_input, stored_f32, stored_i32, FitHead, ProbaHead};
pub use knn::{Knn, KnnParams, KnnWeighting};
pub use lbfgs::{minimize, minimize_with, LbfgsOptions, LbfgsResult};
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

    /// Mixed rows in which most values are 0: `(dense, sparse, labels)` with the same values.
    /// Columns `0..4` are non-zero in about 60 % of the rows, the others in about 5 %, so the
    /// tree heads see features of both kinds; values are of both signs, some repeated. The
    /// label is the class of the largest of three sums of columns. The sparse rows list their
    /// entries in descending column order, with an explicit 0 entry in some rows.
    pub fn mostly_zero(n: usize, d: usize, seed: u64) -> (Features, Features, Vec<usize>) {
        let mut rng = SeededRng::new(seed);
        let mut dense = vec![0.0f32; n * d];
        let (mut indptr, mut indices, mut values) = (vec![0], Vec::new(), Vec::new());
        let mut y = Vec::with_capacity(n);
        for r in 0..n {
            let row = &mut dense[r * d..(r + 1) * d];
            for (j, v) in row.iter_mut().enumerate() {
                let keep = if j < 4 { 60 } else { 5 };
                if rng.below(100) < keep {
                    // Quarter steps in [-2, 4): repeated values, both signs.
                    *v = (rng.below(24) as f32 - 8.0) / 4.0;
                }
            }
            let score = |c: usize| (0..d).filter(|j| j % 3 == c).map(|j| row[j]).sum::<f32>();
            y.push(
                (0..3)
                    .max_by(|&a, &b| score(a).total_cmp(&score(b)))
                    .unwrap(),
            );
            for j in (0..d).rev() {
                if row[j] != 0.0 || (j == r % d && r % 5 == 0) {
                    indices.push(j as u32);
                    values.push(row[j]);
                }
            }
            indptr.push(indices.len());
        }
        let sparse = CsrMatrix::new(n, d, indptr, indices, values).unwrap();
        let dense = DenseMatrix::new(n, d, dense).unwrap();
        assert_eq!(sparse.to_dense(), dense);
        (Features::Dense(dense), Features::Sparse(sparse), y)
    }

    /// Bag-of-words rows over `vocab` columns: each of `n` rows holds 2 words of its class
    /// (class `c` owns 20 words, spread over the vocabulary) and 4 random words, with
    /// TF-IDF-like positive values; labels cycle through 3 classes.
    pub fn documents(n: usize, vocab: usize, seed: u64) -> (Features, Vec<usize>) {
        let mut rng = SeededRng::new(seed);
        let word = |c: usize, i: usize| ((c * 20 + i) * (vocab / 61) + 7) % vocab;
        let (mut indptr, mut indices, mut values) = (vec![0], Vec::new(), Vec::new());
        let mut y = Vec::with_capacity(n);
        for r in 0..n {
            let c = r % 3;
            let mut row: Vec<(u32, f32)> = Vec::new();
            for _ in 0..2 {
                row.push((
                    word(c, rng.below(20)) as u32,
                    0.5 + rng.below(50) as f32 / 100.0,
                ));
            }
            for _ in 0..4 {
                row.push((rng.below(vocab) as u32, 0.1 + rng.below(50) as f32 / 100.0));
            }
            row.sort_by_key(|e| e.0);
            row.dedup_by_key(|e| e.0);
            indices.extend(row.iter().map(|e| e.0));
            values.extend(row.iter().map(|e| e.1));
            indptr.push(indices.len());
            y.push(c);
        }
        let m = CsrMatrix::new(n, vocab, indptr, indices, values).unwrap();
        (Features::Sparse(m), y)
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
