//! Naive Bayes: multinomial for non-negative features (TF-IDF, counts), Gaussian otherwise
//! (embeddings), as scikit-learn's `MultinomialNB` and `GaussianNB`.

use crate::logreg::{softmax_rows, Design};
use crate::{check_input, check_training_data, stored_f32, ClassicError, FitHead, ProbaHead};
use lmfuse_core::{CsrMatrix, DenseMatrix, Features, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which likelihood the model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NbVariant {
    /// Multinomial when every training feature is ≥ 0, Gaussian otherwise.
    #[default]
    Auto,
    /// Multinomial (features are non-negative weights of terms).
    Multinomial,
    /// One Gaussian per class and feature.
    Gaussian,
}

/// Hyperparameters of [`NaiveBayes`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NaiveBayesParams {
    /// The likelihood.
    pub variant: NbVariant,
    /// Additive (Laplace/Lidstone) smoothing of the multinomial (> 0).
    pub alpha: f64,
    /// Share of the largest feature variance added to every Gaussian variance (≥ 0).
    pub var_smoothing: f64,
}

impl Default for NaiveBayesParams {
    fn default() -> Self {
        Self {
            variant: NbVariant::Auto,
            alpha: 1.0,
            var_smoothing: 1e-9,
        }
    }
}

/// A fitted naive Bayes model. Its joint log-likelihood is linear in `x` and `x²`:
/// `bias[c] + Σⱼ xⱼ·lin[j,c] + Σⱼ xⱼ²·quad[j,c]` (`quad` is zero for the multinomial).
#[derive(Debug, Clone, PartialEq)]
pub struct NaiveBayes {
    variant: NbVariant,
    n_features: usize,
    n_classes: usize,
    bias: Vec<f64>,
    /// `n_features × n_classes`, row-major.
    lin: Vec<f64>,
    /// `n_features × n_classes`, row-major; empty for the multinomial.
    quad: Vec<f64>,
}

fn any_negative(x: &Features) -> bool {
    match x {
        Features::Dense(m) => m.as_slice().iter().any(|v| *v < 0.0),
        Features::Sparse(m) => (0..m.rows()).any(|r| m.row(r).1.iter().any(|v| *v < 0.0)),
    }
}

/// Calls `f(row, col, value)` for every stored value (every cell of a dense matrix).
fn for_each(x: &Features, mut f: impl FnMut(usize, usize, f64)) {
    match x {
        Features::Dense(m) => {
            for r in 0..m.rows() {
                for (c, v) in m.row(r).iter().enumerate() {
                    f(r, c, *v as f64);
                }
            }
        }
        Features::Sparse(m) => {
            for r in 0..m.rows() {
                let (cols, vals) = m.row(r);
                for (c, v) in cols.iter().zip(vals) {
                    f(r, *c as usize, *v as f64);
                }
            }
        }
    }
}

fn squared(x: &Features) -> Features {
    match x {
        Features::Dense(m) => Features::Dense(
            DenseMatrix::new(
                m.rows(),
                m.cols(),
                m.as_slice().iter().map(|v| v * v).collect(),
            )
            .expect("same shape"),
        ),
        Features::Sparse(m) => {
            let mut indptr = vec![0];
            let (mut indices, mut values) = (Vec::new(), Vec::new());
            for r in 0..m.rows() {
                let (c, v) = m.row(r);
                indices.extend_from_slice(c);
                values.extend(v.iter().map(|x| x * x));
                indptr.push(indices.len());
            }
            Features::Sparse(
                CsrMatrix::new(m.rows(), m.cols(), indptr, indices, values).expect("same shape"),
            )
        }
    }
}

impl FitHead for NaiveBayesParams {
    type Model = NaiveBayes;

    fn check(&self) -> Result<(), ClassicError> {
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(ClassicError::InvalidParam {
                name: "alpha",
                value: self.alpha.to_string(),
                reason: "must be a positive finite number",
            });
        }
        if !(self.var_smoothing.is_finite() && self.var_smoothing >= 0.0) {
            return Err(ClassicError::InvalidParam {
                name: "var_smoothing",
                value: self.var_smoothing.to_string(),
                reason: "must be a finite number ≥ 0",
            });
        }
        Ok(())
    }

    fn fit(&self, x: &Features, y: &[usize], k: usize) -> Result<NaiveBayes, ClassicError> {
        self.check()?;
        check_training_data(x, y, k)?;
        let (n, d) = (x.rows(), x.cols());
        let negative = any_negative(x);
        let variant = match self.variant {
            NbVariant::Auto if negative => NbVariant::Gaussian,
            NbVariant::Auto => NbVariant::Multinomial,
            NbVariant::Multinomial if negative => {
                return Err(ClassicError::InvalidParam {
                    name: "variant",
                    value: "multinomial".into(),
                    reason: "needs non-negative features; these have negative values",
                })
            }
            v => v,
        };
        let mut counts = vec![0.0f64; k];
        for &c in y {
            counts[c] += 1.0;
        }
        let log_prior: Vec<f64> = counts.iter().map(|c| (c / n as f64).ln()).collect();
        let mut sum = vec![0.0f64; d * k];
        for_each(x, |r, j, v| sum[j * k + y[r]] += v);
        if variant == NbVariant::Multinomial {
            let mut lin = vec![0.0; d * k];
            for c in 0..k {
                let total: f64 =
                    (0..d).map(|j| sum[j * k + c]).sum::<f64>() + self.alpha * d as f64;
                for j in 0..d {
                    lin[j * k + c] = ((sum[j * k + c] + self.alpha) / total).ln();
                }
            }
            return Ok(NaiveBayes::stored_precision(
                variant,
                d,
                k,
                log_prior,
                lin,
                Vec::new(),
            ));
        }
        let mut sum_sq = vec![0.0f64; d * k];
        for_each(x, |r, j, v| sum_sq[j * k + y[r]] += v * v);
        // The smoothing is a share of the largest variance over all rows, as scikit-learn's.
        let (mut col_sum, mut col_sq) = (vec![0.0f64; d], vec![0.0f64; d]);
        for_each(x, |_, j, v| {
            col_sum[j] += v;
            col_sq[j] += v * v;
        });
        let max_var = (0..d)
            .map(|j| col_sq[j] / n as f64 - (col_sum[j] / n as f64).powi(2))
            .fold(0.0, f64::max);
        let eps = self.var_smoothing * max_var;
        let (mut lin, mut quad) = (vec![0.0; d * k], vec![0.0; d * k]);
        let mut bias = log_prior;
        for c in 0..k {
            for j in 0..d {
                let mean = sum[j * k + c] / counts[c];
                let var = (sum_sq[j * k + c] / counts[c] - mean * mean).max(0.0) + eps;
                // A feature constant within a class and without smoothing: a tiny floor keeps
                // the likelihood finite rather than dividing by zero.
                let var = var.max(1e-12);
                bias[c] -= 0.5 * (2.0 * std::f64::consts::PI * var).ln() + 0.5 * mean * mean / var;
                lin[j * k + c] = mean / var;
                quad[j * k + c] = -0.5 / var;
            }
        }
        Ok(NaiveBayes::stored_precision(variant, d, k, bias, lin, quad))
    }

    fn restore(
        &self,
        n_features: usize,
        n_classes: usize,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<NaiveBayes, ClassicError> {
        let widen = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let bias = widen(stored_f32(tensors, "bias", Some(&[n_classes]))?);
        let lin = widen(stored_f32(tensors, "lin", Some(&[n_features, n_classes]))?);
        let (variant, quad) = match tensors.contains_key("quad") {
            true => (
                NbVariant::Gaussian,
                widen(stored_f32(tensors, "quad", Some(&[n_features, n_classes]))?),
            ),
            false => (NbVariant::Multinomial, Vec::new()),
        };
        Ok(NaiveBayes {
            variant,
            n_features,
            n_classes,
            bias,
            lin,
            quad,
        })
    }
}

impl NaiveBayes {
    /// A model whose parameters are rounded to f32, the precision of the bundle, so that a
    /// reloaded model predicts exactly what the freshly fitted one did.
    fn stored_precision(
        variant: NbVariant,
        n_features: usize,
        n_classes: usize,
        bias: Vec<f64>,
        lin: Vec<f64>,
        quad: Vec<f64>,
    ) -> Self {
        let round = |v: Vec<f64>| v.into_iter().map(|x| x as f32 as f64).collect();
        Self {
            variant,
            n_features,
            n_classes,
            bias: round(bias),
            lin: round(lin),
            quad: round(quad),
        }
    }

    /// The likelihood chosen at fit time (never `Auto`).
    pub fn variant(&self) -> NbVariant {
        self.variant
    }
}

impl ProbaHead for NaiveBayes {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn n_classes(&self) -> usize {
        self.n_classes
    }

    fn predict_proba(&self, x: &Features) -> Result<Vec<f32>, ClassicError> {
        check_input(x, self.n_features)?;
        let k = self.n_classes;
        let mut z = vec![0.0f64; x.rows() * k];
        Design::new(x).scores(&self.lin, &self.bias, k, &mut z);
        if !self.quad.is_empty() {
            let mut z2 = vec![0.0f64; x.rows() * k];
            Design::new(&squared(x)).scores(&self.quad, &vec![0.0; k], k, &mut z2);
            for (a, b) in z.iter_mut().zip(&z2) {
                *a += b;
            }
        }
        Ok(softmax_rows(&z, k))
    }

    fn to_tensors(&self) -> BTreeMap<String, Tensor> {
        let narrow = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let (d, k) = (self.n_features, self.n_classes);
        let mut t = BTreeMap::from([
            ("bias".to_string(), Tensor::f32(vec![k], narrow(&self.bias))),
            (
                "lin".to_string(),
                Tensor::f32(vec![d, k], narrow(&self.lin)),
            ),
        ]);
        if !self.quad.is_empty() {
            t.insert("quad".into(), Tensor::f32(vec![d, k], narrow(&self.quad)));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::{accuracy, blobs, to_sparse};

    #[test]
    fn gaussian_on_signed_features_separates_blobs() {
        let (x, y) = blobs(300, 3, 0.8, 11);
        let m = NaiveBayesParams::default().fit(&x, &y, 3).unwrap();
        assert_eq!(m.variant(), NbVariant::Gaussian);
        assert!(accuracy(&m.predict_proba(&x).unwrap(), &y, 3) > 0.9);
    }

    #[test]
    fn gaussian_matches_the_direct_density() {
        // Two classes, one feature: check the posterior against the textbook formula.
        let x = Features::Dense(DenseMatrix::new(4, 1, vec![0.0, 1.0, 3.0, 5.0]).unwrap());
        let y = [0, 0, 1, 1];
        let m = NaiveBayesParams {
            variant: NbVariant::Gaussian,
            var_smoothing: 0.0,
            ..Default::default()
        }
        .fit(&x, &y, 2)
        .unwrap();
        let p = m
            .predict_proba(&Features::Dense(DenseMatrix::new(1, 1, vec![2.0]).unwrap()))
            .unwrap();
        let pdf = |x: f64, mu: f64, var: f64| {
            (-(x - mu).powi(2) / (2.0 * var)).exp() / (2.0 * std::f64::consts::PI * var).sqrt()
        };
        let (a, b) = (pdf(2.0, 0.5, 0.25), pdf(2.0, 4.0, 1.0));
        assert!((p[0] as f64 - a / (a + b)).abs() < 1e-5, "{p:?}");
    }

    #[test]
    fn multinomial_on_counts_matches_hand_computation() {
        // Class 0 uses term 0, class 1 term 1; alpha = 1.
        let x = to_sparse(&Features::Dense(
            DenseMatrix::new(4, 2, vec![2.0, 0.0, 1.0, 0.0, 0.0, 3.0, 0.0, 1.0]).unwrap(),
        ));
        let y = [0, 0, 1, 1];
        let m = NaiveBayesParams::default().fit(&x, &y, 2).unwrap();
        assert_eq!(m.variant(), NbVariant::Multinomial);
        // θ0 = (4/5, 1/5), θ1 = (1/6, 5/6); query (1, 0): P0 ∝ 0.8, P1 ∝ 1/6.
        let q = to_sparse(&Features::Dense(
            DenseMatrix::new(1, 2, vec![1.0, 0.0]).unwrap(),
        ));
        let p = m.predict_proba(&q).unwrap();
        let expected = 0.8 / (0.8 + 1.0 / 6.0);
        assert!((p[0] as f64 - expected).abs() < 1e-6, "{p:?}");
        let t = m.to_tensors();
        let back = NaiveBayesParams::default().restore(2, 2, &t).unwrap();
        assert_eq!(back.predict_proba(&q).unwrap(), p);
    }

    #[test]
    fn multinomial_refuses_negative_features() {
        let (x, y) = blobs(30, 2, 0.5, 1);
        let r = NaiveBayesParams {
            variant: NbVariant::Multinomial,
            ..Default::default()
        }
        .fit(&x, &y, 2);
        assert!(matches!(r, Err(ClassicError::InvalidParam { .. })));
    }
}
