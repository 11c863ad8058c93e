//! Linear support vector machine (one-vs-rest, squared hinge, L2), with class probabilities
//! from Platt scaling fit on out-of-fold decision values.
//!
//! The objective per class is liblinear's `LinearSVC` default (`loss="squared_hinge"`):
//! `½‖w‖² + C·Σ sᵢ·max(0, 1 − tᵢ·(w·xᵢ + b))²`, intercept unpenalised. The squared hinge is
//! differentiable, so all classes are solved together by the same L-BFGS and matrix products as
//! the logistic regression, on dense or sparse rows. linfa-svm solves the kernel dual (SMO),
//! which is far slower at these sizes and takes no sparse rows.
//!
//! Probabilities follow scikit-learn's `CalibratedClassifierCV(method="sigmoid",
//! ensemble=False)`: decision values of `calibration_folds` stratified folds, each predicted by
//! a model fit on the others, fit one sigmoid per class; the final model is fit on all rows and
//! the per-class sigmoids are normalised to sum to 1.

use crate::lbfgs::{minimize, LbfgsOptions};
use crate::logreg::{sample_weights, Design};
use crate::{
    check_input, check_training_data, stored_f32, ClassWeight, ClassicError, FitHead, ProbaHead,
};
use lmfuse_core::{Features, SeededRng, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Hyperparameters of [`LinearSvm`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinearSvmParams {
    /// Inverse regularisation strength (> 0), as `LinearSVC`'s `C`.
    pub c: f64,
    /// L-BFGS iterations at most, per fit.
    pub max_iter: usize,
    /// Stop when the largest gradient component is at most this.
    pub tol: f64,
    /// Class weighting.
    pub class_weight: ClassWeight,
    /// Folds whose out-of-fold decision values fit the probability sigmoids (≥ 2), or 0 for
    /// no calibration (probabilities ∝ σ(decision value); cheaper, for model selection).
    pub calibration_folds: usize,
    /// Seed of the fold assignment.
    pub seed: u64,
}

impl Default for LinearSvmParams {
    fn default() -> Self {
        Self {
            c: 1.0,
            max_iter: 1000,
            tol: 1e-5,
            class_weight: ClassWeight::Uniform,
            calibration_folds: 3,
            seed: 0,
        }
    }
}

/// A fitted linear SVM with per-class sigmoid calibration.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearSvm {
    n_features: usize,
    n_classes: usize,
    /// `n_features × n_classes`, row-major.
    coef: Vec<f32>,
    intercept: Vec<f32>,
    /// Per class `(a, b)`: `P(class | f) ∝ 1 / (1 + exp(a·f + b))`, `f` the decision value.
    sigmoid: Vec<f32>,
}

impl LinearSvmParams {
    fn fit_raw(
        &self,
        x: &Features,
        y: &[usize],
        k: usize,
    ) -> Result<(Vec<f64>, Vec<f64>), ClassicError> {
        check_training_data(x, y, k)?;
        let (n, d) = (x.rows(), x.cols());
        let weights = sample_weights(y, k, self.class_weight);
        let total: f64 = weights.iter().sum();
        let design = Design::new(x);
        let reg = 1.0 / (self.c * total);
        let mut z = vec![0.0f64; n * k];
        // The objective divided by C·Σs, which leaves the minimiser unchanged and keeps the
        // gradient's scale independent of the data size.
        let objective = |theta: &[f64], grad: &mut [f64]| -> f64 {
            let (w, b) = theta.split_at(d * k);
            design.scores(w, b, k, &mut z);
            let loss: f64 = z
                .par_chunks_mut(k)
                .zip(y.par_iter().zip(weights.par_iter()))
                .map(|(row, (&t, &s))| {
                    let mut l = 0.0;
                    for (c, v) in row.iter_mut().enumerate() {
                        let sign = if c == t { 1.0 } else { -1.0 };
                        let margin = (1.0 - sign * *v).max(0.0);
                        l += s * margin * margin;
                        *v = -2.0 * s * sign * margin / total;
                    }
                    l
                })
                .sum::<f64>()
                / total;
            loss + design.linear_gradient(&z, k, w, reg, grad)
        };
        let result = minimize(
            objective,
            vec![0.0; d * k + k],
            LbfgsOptions {
                max_iter: self.max_iter,
                gtol: self.tol,
                memory: 10,
            },
        );
        let mut w = result.x;
        let b = w.split_off(d * k);
        Ok((w, b))
    }
}

/// Stratified fold of every row: each class's rows are shuffled and dealt round-robin.
fn stratified_folds(y: &[usize], k: usize, folds: usize, seed: u64) -> Vec<usize> {
    let mut rng = SeededRng::new(seed);
    let mut fold = vec![0; y.len()];
    let mut next = 0;
    for class in 0..k {
        let mut rows: Vec<usize> = (0..y.len()).filter(|&i| y[i] == class).collect();
        rng.shuffle(&mut rows);
        for r in rows {
            fold[r] = next % folds;
            next += 1;
        }
    }
    fold
}

/// Platt's sigmoid for one class: `(a, b)` minimising the log loss of
/// `1 / (1 + exp(a·f + b))` against Platt's smoothed targets.
fn fit_sigmoid(f: &[f64], positive: &[bool]) -> (f64, f64) {
    let n_pos = positive.iter().filter(|p| **p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    let hi = (n_pos + 1.0) / (n_pos + 2.0);
    let lo = 1.0 / (n_neg + 2.0);
    let targets: Vec<f64> = positive.iter().map(|&p| if p { hi } else { lo }).collect();
    let objective = |ab: &[f64], g: &mut [f64]| -> f64 {
        let (mut loss, mut ga, mut gb) = (0.0, 0.0, 0.0);
        for (&fi, &t) in f.iter().zip(&targets) {
            let u = ab[0] * fi + ab[1];
            // p = σ(−u); log-loss terms in a form stable for large |u|.
            let log_p = -softplus(u);
            let log_1mp = -softplus(-u);
            loss -= t * log_p + (1.0 - t) * log_1mp;
            let p = (-softplus(u)).exp();
            // d loss / d u = t − p.
            ga += (t - p) * fi;
            gb += t - p;
        }
        g[0] = ga;
        g[1] = gb;
        loss
    };
    let r = minimize(
        objective,
        vec![0.0, (n_neg + 1.0).ln() - (n_pos + 1.0).ln()],
        LbfgsOptions {
            max_iter: 200,
            gtol: 1e-8,
            memory: 5,
        },
    );
    (r.x[0], r.x[1])
}

fn softplus(u: f64) -> f64 {
    if u > 0.0 {
        u + (-u).exp().ln_1p()
    } else {
        u.exp().ln_1p()
    }
}

/// Decision values `X·W + b`, `rows × k`.
fn decisions(x: &Features, w: &[f64], b: &[f64], k: usize) -> Vec<f64> {
    let mut z = vec![0.0; x.rows() * k];
    Design::new(x).scores(w, b, k, &mut z);
    z
}

impl FitHead for LinearSvmParams {
    type Model = LinearSvm;

    fn check(&self) -> Result<(), ClassicError> {
        let bad = |name, value: String, reason| {
            Err(ClassicError::InvalidParam {
                name,
                value,
                reason,
            })
        };
        if !(self.c.is_finite() && self.c > 0.0) {
            return bad("c", self.c.to_string(), "must be a positive finite number");
        }
        if self.max_iter == 0 {
            return bad("max_iter", "0".into(), "must be at least 1");
        }
        if !(self.tol.is_finite() && self.tol > 0.0) {
            return bad(
                "tol",
                self.tol.to_string(),
                "must be a positive finite number",
            );
        }
        if self.calibration_folds == 1 {
            return bad(
                "calibration_folds",
                "1".into(),
                "must be 0 (no calibration) or at least 2",
            );
        }
        Ok(())
    }

    fn fit(&self, x: &Features, y: &[usize], k: usize) -> Result<LinearSvm, ClassicError> {
        self.check()?;
        check_training_data(x, y, k)?;
        if self.calibration_folds == 0 {
            let (w, b) = self.fit_raw(x, y, k)?;
            return Ok(LinearSvm {
                n_features: x.cols(),
                n_classes: k,
                coef: w.iter().map(|&v| v as f32).collect(),
                intercept: b.iter().map(|&v| v as f32).collect(),
                sigmoid: [-1.0, 0.0].repeat(k),
            });
        }
        let folds = stratified_folds(y, k, self.calibration_folds, self.seed);
        let mut oof = vec![0.0f64; y.len() * k];
        for fold in 0..self.calibration_folds {
            let train: Vec<usize> = (0..y.len()).filter(|&i| folds[i] != fold).collect();
            let held: Vec<usize> = (0..y.len()).filter(|&i| folds[i] == fold).collect();
            let train_y: Vec<usize> = train.iter().map(|&i| y[i]).collect();
            if held.is_empty() {
                continue;
            }
            let (w, b) = match self.fit_raw(&x.select_rows(&train), &train_y, k) {
                Ok(m) => m,
                // A fold whose training rows hold one class only: its rows get the decision
                // values of a model that knows nothing (zeros), which the sigmoid then treats
                // as uninformative.
                Err(ClassicError::TooFewClasses { .. }) => continue,
                Err(e) => return Err(e),
            };
            let z = decisions(&x.select_rows(&held), &w, &b, k);
            for (j, &i) in held.iter().enumerate() {
                oof[i * k..(i + 1) * k].copy_from_slice(&z[j * k..(j + 1) * k]);
            }
        }
        let sigmoid: Vec<f32> = (0..k)
            .into_par_iter()
            .flat_map_iter(|c| {
                let f: Vec<f64> = (0..y.len()).map(|i| oof[i * k + c]).collect();
                let pos: Vec<bool> = y.iter().map(|&t| t == c).collect();
                let (a, b) = fit_sigmoid(&f, &pos);
                [a as f32, b as f32]
            })
            .collect();
        let (w, b) = self.fit_raw(x, y, k)?;
        Ok(LinearSvm {
            n_features: x.cols(),
            n_classes: k,
            coef: w.iter().map(|&v| v as f32).collect(),
            intercept: b.iter().map(|&v| v as f32).collect(),
            sigmoid,
        })
    }

    fn restore(
        &self,
        n_features: usize,
        n_classes: usize,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<LinearSvm, ClassicError> {
        Ok(LinearSvm {
            n_features,
            n_classes,
            coef: stored_f32(tensors, "coef", Some(&[n_features, n_classes]))?.to_vec(),
            intercept: stored_f32(tensors, "intercept", Some(&[n_classes]))?.to_vec(),
            sigmoid: stored_f32(tensors, "sigmoid", Some(&[n_classes, 2]))?.to_vec(),
        })
    }
}

impl LinearSvm {
    /// Decision values `X·W + b`, `rows × classes` row-major.
    pub fn decision_function(&self, x: &Features) -> Result<Vec<f64>, ClassicError> {
        check_input(x, self.n_features)?;
        let w: Vec<f64> = self.coef.iter().map(|&v| v as f64).collect();
        let b: Vec<f64> = self.intercept.iter().map(|&v| v as f64).collect();
        Ok(decisions(x, &w, &b, self.n_classes))
    }
}

impl ProbaHead for LinearSvm {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn n_classes(&self) -> usize {
        self.n_classes
    }

    fn predict_proba(&self, x: &Features) -> Result<Vec<f32>, ClassicError> {
        let k = self.n_classes;
        let z = self.decision_function(x)?;
        Ok(z.chunks_exact(k)
            .flat_map(|row| {
                let p: Vec<f64> = row
                    .iter()
                    .zip(self.sigmoid.chunks_exact(2))
                    .map(|(&f, ab)| (-softplus(ab[0] as f64 * f + ab[1] as f64)).exp())
                    .collect();
                let sum: f64 = p.iter().sum();
                p.into_iter().map(move |v| {
                    if sum > 0.0 {
                        (v / sum) as f32
                    } else {
                        1.0 / k as f32
                    }
                })
            })
            .collect())
    }

    fn to_tensors(&self) -> BTreeMap<String, Tensor> {
        BTreeMap::from([
            (
                "coef".to_string(),
                Tensor::f32(vec![self.n_features, self.n_classes], self.coef.clone()),
            ),
            (
                "intercept".to_string(),
                Tensor::f32(vec![self.n_classes], self.intercept.clone()),
            ),
            (
                "sigmoid".to_string(),
                Tensor::f32(vec![self.n_classes, 2], self.sigmoid.clone()),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::blobs;

    #[test]
    fn separates_blobs_with_calibrated_probabilities() {
        let (x, y) = blobs(300, 3, 0.8, 7);
        let m = LinearSvmParams::default().fit(&x, &y, 3).unwrap();
        let p = m.predict_proba(&x).unwrap();
        let mut correct = 0;
        for (row, &t) in p.chunks(3).zip(&y) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            let best = (0..3).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            correct += usize::from(best == t);
        }
        assert!(correct >= 280, "{correct}/300");
        // Calibrated: the mean top probability is near the accuracy, not pinned at 1.
        let mean_top: f32 = p
            .chunks(3)
            .map(|r| r.iter().copied().fold(0.0, f32::max))
            .sum::<f32>()
            / 300.0;
        assert!(
            (mean_top - correct as f32 / 300.0).abs() < 0.1,
            "{mean_top}"
        );
    }

    #[test]
    fn sparse_and_dense_rows_give_the_same_model() {
        let (x, y) = blobs(120, 3, 0.8, 3);
        let dense = LinearSvmParams::default().fit(&x, &y, 3).unwrap();
        let sparse = LinearSvmParams::default()
            .fit(&crate::test_data::to_sparse(&x), &y, 3)
            .unwrap();
        let (a, b) = (
            dense.predict_proba(&x).unwrap(),
            sparse.predict_proba(&x).unwrap(),
        );
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() < 1e-3, "{u} vs {v}");
        }
    }

    #[test]
    fn round_trips_and_rejects_bad_tensors() {
        let (x, y) = blobs(90, 3, 0.8, 5);
        let params = LinearSvmParams::default();
        let m = params.fit(&x, &y, 3).unwrap();
        let t = m.to_tensors();
        let back = params.restore(2, 3, &t).unwrap();
        assert_eq!(
            back.predict_proba(&x).unwrap(),
            m.predict_proba(&x).unwrap()
        );
        let mut broken = t.clone();
        broken.remove("sigmoid");
        assert!(params.restore(2, 3, &broken).is_err());
        assert!(params.restore(3, 3, &t).is_err());
    }

    #[test]
    fn bad_params_are_rejected() {
        for p in [
            LinearSvmParams {
                c: 0.0,
                ..Default::default()
            },
            LinearSvmParams {
                calibration_folds: 1,
                ..Default::default()
            },
        ] {
            assert!(matches!(p.check(), Err(ClassicError::InvalidParam { .. })));
        }
    }
}
