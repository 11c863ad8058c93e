//! Multinomial logistic regression with L2 regularisation, fit by L-BFGS.
//!
//! The objective is scikit-learn's (`LogisticRegression(penalty="l2", solver="lbfgs")`): the
//! sample-weighted mean cross-entropy plus `‖W‖² / (2·C·Σw)`, intercepts unpenalised, so the
//! same `C` gives the same model. Our own code rather than linfa-logistic because the heads must
//! also train on sparse TF-IDF rows, which linfa's dense ndarray interface cannot take.

use crate::lbfgs::{minimize, LbfgsOptions};
use crate::{check_input, check_training_data, stored_f32, ClassicError, FitHead, ProbaHead};
use gemm::Parallelism;
use lmfuse_core::Tensor;
use lmfuse_core::{DenseMatrix, Features};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How training examples are weighted by class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClassWeight {
    /// Every example weighs 1.
    #[default]
    Uniform,
    /// Example weight `n / (classes · count(class))`, as scikit-learn's `"balanced"`.
    Balanced,
}

/// Hyperparameters of [`LogisticRegression`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LogisticRegressionParams {
    /// Inverse regularisation strength (> 0); larger fits the training data more closely.
    pub c: f64,
    /// L-BFGS iterations at most.
    pub max_iter: usize,
    /// Stop when the largest gradient component is at most this.
    pub tol: f64,
    /// Class weighting.
    pub class_weight: ClassWeight,
}

impl Default for LogisticRegressionParams {
    fn default() -> Self {
        Self {
            c: 1.0,
            max_iter: 1000,
            tol: 1e-5,
            class_weight: ClassWeight::Uniform,
        }
    }
}

/// A fitted multinomial logistic regression.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticRegression {
    n_features: usize,
    n_classes: usize,
    /// `n_features × n_classes`, row-major.
    coef: Vec<f32>,
    intercept: Vec<f32>,
    iterations: usize,
    converged: bool,
}

impl LogisticRegressionParams {
    /// Validates the hyperparameters.
    pub fn check(&self) -> Result<(), ClassicError> {
        if !(self.c.is_finite() && self.c > 0.0) {
            return Err(ClassicError::InvalidParam {
                name: "c",
                value: self.c.to_string(),
                reason: "must be a positive finite number",
            });
        }
        if self.max_iter == 0 {
            return Err(ClassicError::InvalidParam {
                name: "max_iter",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        if !(self.tol.is_finite() && self.tol > 0.0) {
            return Err(ClassicError::InvalidParam {
                name: "tol",
                value: self.tol.to_string(),
                reason: "must be a positive finite number",
            });
        }
        Ok(())
    }

    /// Fits on features `x` with class indices `y` in `0..n_classes`.
    pub fn fit(
        &self,
        x: &Features,
        y: &[usize],
        n_classes: usize,
    ) -> Result<LogisticRegression, ClassicError> {
        self.fit_from(x, y, n_classes, None)
    }

    /// [`LogisticRegressionParams::fit`] starting from `start`'s coefficients instead of zeros
    /// when it has the same shape (a warm start: along a path of `C`, the previous `C`'s
    /// solution is a few steps from this one's). The optimum is the same; only the steps to
    /// it are fewer.
    pub fn fit_from(
        &self,
        x: &Features,
        y: &[usize],
        n_classes: usize,
        start: Option<&LogisticRegression>,
    ) -> Result<LogisticRegression, ClassicError> {
        self.check()?;
        check_training_data(x, y, n_classes)?;
        let (n, d, k) = (x.rows(), x.cols(), n_classes);
        let weights = sample_weights(y, k, self.class_weight);
        let total: f64 = weights.iter().sum();
        let design = Design::new(x);
        let reg = 1.0 / (self.c * total);
        let mut z = vec![0.0f64; n * k];
        let objective = |theta: &[f64], grad: &mut [f64]| -> f64 {
            let (w, b) = theta.split_at(d * k);
            design.scores(w, b, k, &mut z);
            // z becomes the residual (p - onehot) · weight / total.
            let loss: f64 = z
                .par_chunks_mut(k)
                .zip(y.par_iter().zip(weights.par_iter()))
                .map(|(row, (&t, &wt))| {
                    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let mut sum = 0.0;
                    for v in row.iter_mut() {
                        *v = (*v - max).exp();
                        sum += *v;
                    }
                    let log_p_true = (row[t] / sum).max(f64::MIN_POSITIVE).ln();
                    for (c, v) in row.iter_mut().enumerate() {
                        let p = *v / sum;
                        *v = (p - if c == t { 1.0 } else { 0.0 }) * wt / total;
                    }
                    -log_p_true * wt
                })
                .sum::<f64>()
                / total;
            let penalty = design.linear_gradient(&z, k, w, reg, grad);
            if k == 2 {
                let (gw, gb) = grad.split_at_mut(d * k);
                // Two classes: class 0's weights and intercept stay at zero, which turns the
                // softmax into scikit-learn's binomial model (one weight vector penalised
                // once); a free two-class softmax would halve the effective penalty.
                for g in gw.iter_mut().step_by(2) {
                    *g = 0.0;
                }
                gb[0] = 0.0;
            }
            loss + penalty
        };
        let x0 = match start {
            Some(m) if m.n_features == d && m.n_classes == k => m
                .coef
                .iter()
                .chain(&m.intercept)
                .map(|&v| f64::from(v))
                .collect(),
            _ => vec![0.0; d * k + k],
        };
        let result = minimize(
            objective,
            x0,
            LbfgsOptions {
                max_iter: self.max_iter,
                gtol: self.tol,
                memory: 10,
            },
        );
        let (w, b) = result.x.split_at(d * k);
        Ok(LogisticRegression {
            n_features: d,
            n_classes: k,
            coef: w.iter().map(|&v| v as f32).collect(),
            intercept: b.iter().map(|&v| v as f32).collect(),
            iterations: result.iterations,
            converged: result.converged,
        })
    }
}

impl LogisticRegression {
    /// Rebuilds a model from stored parts: `coef` is `n_features × n_classes` row-major.
    pub fn from_parts(
        n_features: usize,
        n_classes: usize,
        coef: Vec<f32>,
        intercept: Vec<f32>,
    ) -> Result<Self, ClassicError> {
        if coef.len() != n_features * n_classes || intercept.len() != n_classes || n_classes < 2 {
            return Err(ClassicError::Width {
                expected: n_features * n_classes,
                got: coef.len(),
            });
        }
        Ok(Self {
            n_features,
            n_classes,
            coef,
            intercept,
            iterations: 0,
            converged: true,
        })
    }

    /// Feature columns the model takes.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Weights, `n_features × n_classes` row-major.
    pub fn coef(&self) -> &[f32] {
        &self.coef
    }

    /// Intercepts, one per class.
    pub fn intercept(&self) -> &[f32] {
        &self.intercept
    }

    /// L-BFGS iterations of the fit.
    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// Whether the fit met its gradient tolerance.
    pub fn converged(&self) -> bool {
        self.converged
    }

    /// Class probabilities, `rows × n_classes` row-major.
    pub fn predict_proba(&self, x: &Features) -> Result<Vec<f32>, ClassicError> {
        check_input(x, self.n_features)?;
        let k = self.n_classes;
        let w: Vec<f64> = self.coef.iter().map(|&v| v as f64).collect();
        let b: Vec<f64> = self.intercept.iter().map(|&v| v as f64).collect();
        let mut z = vec![0.0f64; x.rows() * k];
        Design::new(x).scores(&w, &b, k, &mut z);
        Ok(softmax_rows(&z, k))
    }
}

impl FitHead for LogisticRegressionParams {
    type Model = LogisticRegression;

    fn check(&self) -> Result<(), ClassicError> {
        LogisticRegressionParams::check(self)
    }

    fn fit(
        &self,
        x: &Features,
        y: &[usize],
        n_classes: usize,
    ) -> Result<LogisticRegression, ClassicError> {
        LogisticRegressionParams::fit(self, x, y, n_classes)
    }

    fn restore(
        &self,
        n_features: usize,
        n_classes: usize,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<LogisticRegression, ClassicError> {
        let coef = stored_f32(tensors, "coef", Some(&[n_features, n_classes]))?;
        let intercept = stored_f32(tensors, "intercept", Some(&[n_classes]))?;
        LogisticRegression::from_parts(n_features, n_classes, coef.to_vec(), intercept.to_vec())
    }
}

impl ProbaHead for LogisticRegression {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn n_classes(&self) -> usize {
        self.n_classes
    }

    fn predict_proba(&self, x: &Features) -> Result<Vec<f32>, ClassicError> {
        LogisticRegression::predict_proba(self, x)
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
        ])
    }
}

/// Per-row weights: 1, or `n / (classes · count(class))` for [`ClassWeight::Balanced`].
pub(crate) fn sample_weights(y: &[usize], k: usize, class_weight: ClassWeight) -> Vec<f64> {
    let mut counts = vec![0usize; k];
    for &c in y {
        counts[c] += 1;
    }
    y.iter()
        .map(|&c| match class_weight {
            ClassWeight::Uniform => 1.0,
            ClassWeight::Balanced => y.len() as f64 / (k as f64 * counts[c] as f64),
        })
        .collect()
}

/// Softmax of every row of `z` (rows of `k` scores), as f32 probabilities.
pub(crate) fn softmax_rows(z: &[f64], k: usize) -> Vec<f32> {
    z.chunks_exact(k)
        .flat_map(|row| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.into_iter().map(move |v| (v / sum) as f32)
        })
        .collect()
}

/// Features in the form the solver multiplies: dense rows widened to f64 once, or CSR.
pub(crate) enum Design<'a> {
    Dense {
        rows: usize,
        cols: usize,
        data: Vec<f64>,
    },
    Sparse(&'a lmfuse_core::CsrMatrix),
}

fn parallelism(work: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && work > 1 << 20 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

impl<'a> Design<'a> {
    pub(crate) fn new(x: &'a Features) -> Self {
        match x {
            Features::Dense(m) => Self::dense(m),
            Features::Sparse(m) => Design::Sparse(m),
        }
    }

    fn dense(m: &DenseMatrix) -> Self {
        Design::Dense {
            rows: m.rows(),
            cols: m.cols(),
            data: m.as_slice().iter().map(|&v| v as f64).collect(),
        }
    }

    /// `z (n×k) = X·W + b`, `W` being `d×k` row-major.
    pub(crate) fn scores(&self, w: &[f64], b: &[f64], k: usize, z: &mut [f64]) {
        for row in z.chunks_exact_mut(k) {
            row.copy_from_slice(b);
        }
        match self {
            Design::Dense { rows, cols, data } => {
                let (n, d) = (*rows, *cols);
                // SAFETY: z is n×k, data n×d, w d×k, all row-major; strides match.
                unsafe {
                    gemm::gemm(
                        n,
                        k,
                        d,
                        z.as_mut_ptr(),
                        1,
                        k as isize,
                        true,
                        data.as_ptr(),
                        1,
                        d as isize,
                        w.as_ptr(),
                        1,
                        k as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism(n * d * k),
                    );
                }
            }
            Design::Sparse(m) => {
                z.par_chunks_mut(k).enumerate().for_each(|(i, row)| {
                    let (cols, vals) = m.row(i);
                    for (&c, &v) in cols.iter().zip(vals) {
                        let wr = &w[c as usize * k..(c as usize + 1) * k];
                        for (o, wv) in row.iter_mut().zip(wr) {
                            *o += v as f64 * wv;
                        }
                    }
                });
            }
        }
    }

    /// The gradient of a linear model `X·W + b` whose loss has residuals `r` (`n×k`, the
    /// derivative of the loss by each score) plus `reg/2 · ‖W‖²`: writes `[Xᵀ·r + reg·W, Σᵢ rᵢ]`
    /// into `grad` (`d·k + k`) and returns the penalty `reg/2 · ‖W‖²`.
    pub(crate) fn linear_gradient(
        &self,
        r: &[f64],
        k: usize,
        w: &[f64],
        reg: f64,
        grad: &mut [f64],
    ) -> f64 {
        let (gw, gb) = grad.split_at_mut(w.len());
        self.transpose_times(r, k, gw);
        let mut penalty = 0.0;
        for (g, wv) in gw.iter_mut().zip(w) {
            *g += reg * wv;
            penalty += wv * wv;
        }
        gb.fill(0.0);
        for row in r.chunks_exact(k) {
            for (g, v) in gb.iter_mut().zip(row) {
                *g += v;
            }
        }
        0.5 * reg * penalty
    }

    /// `g (d×k) = Xᵀ·r`, `r` being `n×k` row-major.
    pub(crate) fn transpose_times(&self, r: &[f64], k: usize, g: &mut [f64]) {
        match self {
            Design::Dense { rows, cols, data } => {
                let (n, d) = (*rows, *cols);
                // SAFETY: g is d×k; Xᵀ is read from the n×d data with swapped strides.
                unsafe {
                    gemm::gemm(
                        d,
                        k,
                        n,
                        g.as_mut_ptr(),
                        1,
                        k as isize,
                        false,
                        data.as_ptr(),
                        d as isize,
                        1,
                        r.as_ptr(),
                        1,
                        k as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism(n * d * k),
                    );
                }
            }
            Design::Sparse(m) => {
                g.fill(0.0);
                for i in 0..m.rows() {
                    let (cols, vals) = m.row(i);
                    let rr = &r[i * k..(i + 1) * k];
                    for (&c, &v) in cols.iter().zip(vals) {
                        let gr = &mut g[c as usize * k..(c as usize + 1) * k];
                        for (o, x) in gr.iter_mut().zip(rr) {
                            *o += v as f64 * x;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lmfuse_core::CsrMatrix;

    /// Three Gaussian-ish blobs in 2-D, deterministic.
    fn blobs() -> (Features, Vec<usize>) {
        let centers = [(0.0, 0.0), (3.0, 0.5), (0.5, 3.0)];
        let mut data = Vec::new();
        let mut y = Vec::new();
        for i in 0..90 {
            let c = i % 3;
            let jitter = ((i as f32 * 12.9898).sin() * 43758.545).fract() - 0.5;
            let jitter2 = ((i as f32 * 78.233).sin() * 12345.678).fract() - 0.5;
            data.push(centers[c].0 + 1.2 * jitter);
            data.push(centers[c].1 + 1.2 * jitter2);
            y.push(c);
        }
        (Features::Dense(DenseMatrix::new(90, 2, data).unwrap()), y)
    }

    #[test]
    fn separates_blobs_and_probabilities_sum_to_one() {
        let (x, y) = blobs();
        let m = LogisticRegressionParams::default().fit(&x, &y, 3).unwrap();
        assert!(m.converged());
        let p = m.predict_proba(&x).unwrap();
        let correct = p
            .chunks(3)
            .zip(&y)
            .filter(|(r, &t)| lmfuse_core_argmax(r) == t)
            .count();
        assert!(correct >= 85, "{correct}/90");
        for r in p.chunks(3) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    fn lmfuse_core_argmax(r: &[f32]) -> usize {
        r.iter()
            .enumerate()
            .fold(0, |b, (i, v)| if *v > r[b] { i } else { b })
    }

    #[test]
    fn gradient_vanishes_at_the_optimum_of_the_scikit_objective() {
        // At the optimum of mean CE + ‖W‖²/(2Cn), the gradient is W/(Cn) + Xᵀ(P−Y)/n = 0, so
        // Xᵀ(Y−P) = W/C: check that identity on the fitted model.
        let (x, y) = blobs();
        let c = 0.5;
        let m = LogisticRegressionParams {
            c,
            tol: 1e-9,
            ..Default::default()
        }
        .fit(&x, &y, 3)
        .unwrap();
        let p = m.predict_proba(&x).unwrap();
        let Features::Dense(dm) = &x else {
            unreachable!()
        };
        for j in 0..2 {
            for k in 0..3 {
                let lhs: f64 = (0..90)
                    .map(|i| dm.row(i)[j] as f64 * ((y[i] == k) as u8 as f64 - p[i * 3 + k] as f64))
                    .sum();
                let rhs = m.coef()[j * 3 + k] as f64 / c;
                assert!(
                    (lhs - rhs).abs() < 1e-3,
                    "feature {j} class {k}: {lhs} vs {rhs}"
                );
            }
        }
    }

    /// Reference values from scikit-learn 1.9.1:
    /// `LogisticRegression(C=0.5, tol=1e-12, max_iter=100000).fit(X, y)` with
    /// `X = round(RandomState(0).randn(24, 3), 2)` shifted per class, `y = [0, 1, 2] * 8`;
    /// and `C=2, class_weight="balanced"` on the first 20 rows.
    #[test]
    fn matches_scikit_learn_coefficients() {
        let x: Vec<f32> = vec![
            1.76, 0.4, 0.98, 3.74, 1.87, -0.98, 0.95, 1.35, -0.1, 0.41, 0.14, 1.45, 2.26, 0.12,
            0.44, 0.33, 2.99, -0.21, 0.31, -0.85, -2.55, 2.15, 0.86, -0.74, 2.27, 0.05, 0.05,
            -0.19, 1.53, 1.47, 1.65, 0.38, -0.89, -1.98, 1.15, 0.16, 1.23, 1.2, -0.39, 1.2, -1.05,
            -1.42, -1.71, 3.45, -0.51, -0.44, -1.25, 0.78, -0.11, -0.21, -0.9, 0.39, 0.99, -1.18,
            -0.03, 0.43, 0.07, 1.8, -0.63, -0.36, -0.67, 1.14, -0.81, -1.73, 0.18, -0.4, -0.13,
            0.46, -0.91, 0.05, 2.23, 0.13,
        ];
        let y: Vec<usize> = (0..24).map(|i| i % 3).collect();
        let features = Features::Dense(DenseMatrix::new(24, 3, x.clone()).unwrap());
        let tight = LogisticRegressionParams {
            c: 0.5,
            tol: 1e-10,
            max_iter: 10_000,
            ..Default::default()
        };
        let m = tight.fit(&features, &y, 3).unwrap();
        let coef = [
            -0.296946, 0.567779, -0.270832, -0.410931, -0.333108, 0.74404, 0.481742, -0.358798,
            -0.122945,
        ];
        let intercept = [0.697612, -0.325298, -0.372314];
        for (got, want) in m
            .coef()
            .iter()
            .zip(coef)
            .chain(m.intercept().iter().zip(intercept))
        {
            assert!((*got as f64 - want).abs() < 1e-4, "{got} vs {want}");
        }
        let p = m.predict_proba(&features).unwrap();
        let proba = [0.485255, 0.361796, 0.152949, 0.032271, 0.776341, 0.191388];
        for (got, want) in p.iter().zip(proba) {
            assert!((*got as f64 - want).abs() < 1e-4, "{got} vs {want}");
        }
        let first20 = Features::Dense(DenseMatrix::new(20, 3, x[..60].to_vec()).unwrap());
        let balanced = LogisticRegressionParams {
            c: 2.0,
            class_weight: ClassWeight::Balanced,
            ..tight
        };
        let m = balanced.fit(&first20, &y[..20], 3).unwrap();
        let coef = [
            -0.409784, 0.867713, -0.457929, -0.376378, -0.508222, 0.8846, 0.591173, -0.406254,
            -0.184919,
        ];
        let intercept = [0.956507, -0.821277, -0.13523];
        for (got, want) in m
            .coef()
            .iter()
            .zip(coef)
            .chain(m.intercept().iter().zip(intercept))
        {
            assert!((*got as f64 - want).abs() < 1e-4, "{got} vs {want}");
        }
    }

    /// scikit-learn 1.9.1 on the rows of classes 0 and 1 of the data above (binomial model):
    /// `coef_ = [[0.717408, -0.095207, -0.531159]]`, `intercept_ = [-0.754239]`.
    #[test]
    fn two_classes_match_scikit_learns_binomial_model() {
        let x: Vec<f32> = vec![
            1.76, 0.4, 0.98, 3.74, 1.87, -0.98, 0.41, 0.14, 1.45, 2.26, 0.12, 0.44, 0.31, -0.85,
            -2.55, 2.15, 0.86, -0.74, -0.19, 1.53, 1.47, 1.65, 0.38, -0.89, 1.23, 1.2, -0.39, 1.2,
            -1.05, -1.42, -0.44, -1.25, 0.78, -0.11, -0.21, -0.9, -0.03, 0.43, 0.07, 1.8, -0.63,
            -0.36, -1.73, 0.18, -0.4, -0.13, 0.46, -0.91,
        ];
        let y: Vec<usize> = (0..16).map(|i| i % 2).collect();
        let features = Features::Dense(DenseMatrix::new(16, 3, x).unwrap());
        let m = LogisticRegressionParams {
            c: 0.5,
            tol: 1e-10,
            max_iter: 10_000,
            ..Default::default()
        }
        .fit(&features, &y, 2)
        .unwrap();
        // Class 0 holds zeros; class 1 holds scikit-learn's single vector.
        let want = [0.717408, -0.095207, -0.531159];
        for (pair, want) in m.coef().chunks(2).zip(want) {
            assert_eq!(pair[0], 0.0);
            assert!((pair[1] as f64 - want).abs() < 1e-4, "{:?}", m.coef());
        }
        assert!((m.intercept()[1] - m.intercept()[0] - -0.754239f32).abs() < 1e-4);
        let p = m.predict_proba(&features).unwrap();
        for (got, want) in p.iter().zip([0.512552, 0.487448, 0.093523, 0.906477]) {
            assert!((*got as f64 - want).abs() < 1e-4, "{got} vs {want}");
        }
    }

    #[test]
    fn a_warm_start_reaches_the_same_optimum_in_fewer_steps() {
        let (x, y) = crate::test_data::blobs(300, 4, 2.5, 7);
        let at = |c: f64| LogisticRegressionParams {
            c,
            ..LogisticRegressionParams::default()
        };
        let previous = at(0.1).fit(&x, &y, 4).unwrap();
        let cold = at(1.0).fit(&x, &y, 4).unwrap();
        let warm = at(1.0).fit_from(&x, &y, 4, Some(&previous)).unwrap();
        assert!(cold.converged && warm.converged);
        assert!(
            warm.iterations < cold.iterations,
            "warm {} vs cold {} iterations",
            warm.iterations,
            cold.iterations
        );
        let (pc, pw) = (
            cold.predict_proba(&x).unwrap(),
            warm.predict_proba(&x).unwrap(),
        );
        let diff = pc
            .iter()
            .zip(&pw)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-3, "probabilities differ by {diff}");
        // A start of another shape is ignored: the fit is the cold one.
        let other = at(0.1)
            .fit(&x, &y.iter().map(|&c| c % 2).collect::<Vec<_>>(), 2)
            .unwrap();
        assert_eq!(at(1.0).fit_from(&x, &y, 4, Some(&other)).unwrap(), cold);
    }

    #[test]
    fn sparse_and_dense_give_the_same_model() {
        let (x, y) = blobs();
        let Features::Dense(dm) = &x else {
            unreachable!()
        };
        let mut indptr = vec![0];
        let (mut idx, mut val) = (Vec::new(), Vec::new());
        for i in 0..dm.rows() {
            for (j, v) in dm.row(i).iter().enumerate() {
                idx.push(j as u32);
                val.push(*v);
            }
            indptr.push(idx.len());
        }
        let xs = Features::Sparse(CsrMatrix::new(90, 2, indptr, idx, val).unwrap());
        let params = LogisticRegressionParams {
            tol: 1e-8,
            ..Default::default()
        };
        let a = params.fit(&x, &y, 3).unwrap();
        let b = params.fit(&xs, &y, 3).unwrap();
        for (u, v) in a.coef().iter().zip(b.coef()) {
            assert!((u - v).abs() < 1e-4, "{u} vs {v}");
        }
    }

    #[test]
    fn bad_params_and_data_are_rejected_before_fitting() {
        let (x, y) = blobs();
        for c in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = LogisticRegressionParams {
                c,
                ..Default::default()
            }
            .fit(&x, &y, 3);
            assert!(
                matches!(e, Err(ClassicError::InvalidParam { name: "c", .. })),
                "{c}"
            );
        }
        let one_class = vec![0; 90];
        assert_eq!(
            LogisticRegressionParams::default()
                .fit(&x, &one_class, 3)
                .unwrap_err(),
            ClassicError::TooFewClasses { present: 1 }
        );
        assert!(matches!(
            LogisticRegressionParams::default().fit(&x, &y[..10], 3),
            Err(ClassicError::LengthMismatch { .. })
        ));
        let nan = Features::Dense(DenseMatrix::new(2, 1, vec![0.0, f32::NAN]).unwrap());
        assert_eq!(
            LogisticRegressionParams::default()
                .fit(&nan, &[0, 1], 2)
                .unwrap_err(),
            ClassicError::NotFinite { row: 1, col: 0 }
        );
        let m = LogisticRegressionParams::default().fit(&x, &y, 3).unwrap();
        let narrow = Features::Dense(DenseMatrix::new(1, 1, vec![0.0]).unwrap());
        assert_eq!(
            m.predict_proba(&narrow).unwrap_err(),
            ClassicError::Width {
                expected: 2,
                got: 1
            }
        );
    }

    #[test]
    fn balanced_weights_raise_minority_recall() {
        // 80 of class 0 around 0, 10 of class 1 around 1.2: balanced weights move the boundary.
        let mut data = Vec::new();
        let mut y = Vec::new();
        for i in 0..90 {
            let c = usize::from(i >= 80);
            let jitter = ((i as f32 * 12.9898).sin() * 43758.545).fract() - 0.5;
            data.push(c as f32 * 1.2 + 1.5 * jitter);
            y.push(c);
        }
        let x = Features::Dense(DenseMatrix::new(90, 1, data).unwrap());
        let recall = |cw| {
            let m = LogisticRegressionParams {
                class_weight: cw,
                ..Default::default()
            }
            .fit(&x, &y, 2)
            .unwrap();
            let p = m.predict_proba(&x).unwrap();
            (80..90).filter(|&i| p[i * 2 + 1] > 0.5).count()
        };
        assert!(recall(ClassWeight::Balanced) > recall(ClassWeight::Uniform));
    }
}
