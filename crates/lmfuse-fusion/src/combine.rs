//! Combiners: how member probabilities become one distribution.

use crate::FusionError;
use lmfuse_classic::{
    minimize, FitHead, LbfgsOptions, LogisticRegression, LogisticRegressionParams,
};
use lmfuse_classic::{stored_f32, ProbaHead};
use lmfuse_core::{DenseMatrix, Features, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How member probabilities are fused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Majority of the members' top classes (ties broken by the mean probability).
    HardVote,
    /// Mean of the members' probabilities.
    SoftVote,
    /// Weighted mean, weights fit on out-of-fold probabilities (log loss).
    Weighted,
    /// A logistic regression over the members' out-of-fold log-probabilities.
    Stacking,
    /// A gate that weighs the members per input from their confidence, entropy and margin and
    /// the text length (a mixture of experts over fixed members, fit on out-of-fold rows).
    Adaptive,
}

impl Strategy {
    /// Every strategy, in a fixed order.
    pub const ALL: [Strategy; 5] = [
        Strategy::HardVote,
        Strategy::SoftVote,
        Strategy::Weighted,
        Strategy::Stacking,
        Strategy::Adaptive,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::HardVote => "hard_vote",
            Strategy::SoftVote => "soft_vote",
            Strategy::Weighted => "weighted",
            Strategy::Stacking => "stacking",
            Strategy::Adaptive => "adaptive",
        }
    }

    /// Whether [`CombinerParams::c`] changes the fit: only the stacking meta-learner and the
    /// adaptive gate have regularised weights.
    pub fn uses_c(self) -> bool {
        matches!(self, Strategy::Stacking | Strategy::Adaptive)
    }

    /// Whether the combiner learns from the members' out-of-fold probabilities (the votes
    /// learn nothing).
    pub fn learns_from_out_of_fold(self) -> bool {
        !matches!(self, Strategy::HardVote | Strategy::SoftVote)
    }
}

/// Member probabilities, labels and text lengths of one set of rows, for
/// [`CombinerParams::fit_selecting_c`].
#[derive(Debug, Clone, Copy)]
pub struct MemberRows<'a> {
    /// One `rows × classes` probability matrix per member.
    pub members: &'a [&'a [f32]],
    /// The rows' labels.
    pub y: &'a [usize],
    /// The rows' text lengths in characters (the adaptive gate's input).
    pub lengths: &'a [f32],
}

/// A combiner whose `c` was chosen on dev rows.
#[derive(Debug, Clone)]
pub struct CombinerSelection {
    /// The hyperparameters with the chosen `c`.
    pub params: CombinerParams,
    /// The combiner fit with them.
    pub combiner: Combiner,
    /// Its accuracy on the dev rows.
    pub dev_accuracy: f64,
}

/// Hyperparameters of a combiner.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CombinerParams {
    /// The strategy.
    pub strategy: Strategy,
    /// Inverse regularisation of the learnt parts (stacking meta-learner, gate), > 0.
    pub c: f64,
}

impl Default for CombinerParams {
    fn default() -> Self {
        Self {
            strategy: Strategy::SoftVote,
            c: 1.0,
        }
    }
}

/// A fitted combiner.
#[derive(Debug, Clone, PartialEq)]
pub enum Combiner {
    /// Majority vote.
    HardVote,
    /// Mean probability.
    SoftVote,
    /// Weighted mean; weights sum to 1.
    Weighted(Vec<f32>),
    /// Meta-learner over `ln(p + 1e-6)` of every member, members side by side.
    Stacking(LogisticRegression),
    /// Gate: member logits `g = f(x)·W + b`, `W` being `features × members` row-major.
    Adaptive {
        /// Weights, `(GATE_FEATURES_PER_MEMBER·members + 1) × members`.
        w: Vec<f32>,
        /// Bias, one per member.
        b: Vec<f32>,
    },
}

/// Gate inputs per member: top probability, normalised entropy, top-1 minus top-2 margin.
pub const GATE_FEATURES_PER_MEMBER: usize = 3;

/// Member probabilities for the same rows: one `rows × classes` matrix per member.
fn check_members(members: &[&[f32]], k: usize) -> Result<usize, FusionError> {
    let first = members
        .first()
        .ok_or_else(|| FusionError::Option("no member to fuse".into()))?;
    if k < 2 || first.len() % k != 0 {
        return Err(FusionError::Shape(format!(
            "{} probabilities are not rows of {k} classes",
            first.len()
        )));
    }
    if let Some(m) = members.iter().position(|m| m.len() != first.len()) {
        return Err(FusionError::Shape(format!(
            "member {m} has {} probabilities, member 0 has {}",
            members[m].len(),
            first.len()
        )));
    }
    Ok(first.len() / k)
}

fn stacking_features(members: &[&[f32]], k: usize, n: usize) -> Features {
    let width = members.len() * k;
    let mut data = Vec::with_capacity(n * width);
    for i in 0..n {
        for m in members {
            data.extend(m[i * k..(i + 1) * k].iter().map(|p| (p + 1e-6).ln()));
        }
    }
    Features::Dense(DenseMatrix::new(n, width, data).expect("built to shape"))
}

/// Gate inputs of row `i`: per member (top p, entropy / ln k, margin), then `ln(1+len)/5`.
fn gate_features(members: &[&[f32]], k: usize, n: usize, lengths: &[f32]) -> Vec<f64> {
    let width = GATE_FEATURES_PER_MEMBER * members.len() + 1;
    let mut f = Vec::with_capacity(n * width);
    for i in 0..n {
        for m in members {
            let row = &m[i * k..(i + 1) * k];
            let (mut top, mut second) = (0.0f32, 0.0f32);
            let mut entropy = 0.0f64;
            for &p in row {
                if p > top {
                    second = top;
                    top = p;
                } else if p > second {
                    second = p;
                }
                if p > 0.0 {
                    entropy -= p as f64 * (p as f64).ln();
                }
            }
            f.extend([top as f64, entropy / (k as f64).ln(), (top - second) as f64]);
        }
        f.push((1.0 + lengths.get(i).copied().unwrap_or(0.0) as f64).ln() / 5.0);
    }
    f
}

/// Fits member logits `z = F·W + b` (or `b` alone when `bias_only`) maximising the
/// log-likelihood of the mixture `Σₘ softmax(z)ₘ · pₘ(y)`, with `‖W‖²/(2·C·n)`.
fn fit_gate(
    members: &[&[f32]],
    y: &[usize],
    k: usize,
    features: &[f64],
    width: usize,
    bias_only: bool,
    c: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (n, m) = (y.len(), members.len());
    // p[i][m]: member m's probability of the true class of row i.
    let p_true: Vec<f64> = (0..n)
        .flat_map(|i| members.iter().map(move |mm| mm[i * k + y[i]] as f64))
        .collect();
    let reg = 1.0 / (c * n as f64);
    let dims = if bias_only { m } else { width * m + m };
    let objective = |theta: &[f64], grad: &mut [f64]| -> f64 {
        grad.fill(0.0);
        let (w, b) = if bias_only {
            (&theta[..0], theta)
        } else {
            theta.split_at(width * m)
        };
        let mut loss = 0.0;
        let mut z = vec![0.0f64; m];
        let mut resid = vec![0.0f64; m];
        for i in 0..n {
            z.copy_from_slice(b);
            if !bias_only {
                let fi = &features[i * width..(i + 1) * width];
                for (j, &v) in fi.iter().enumerate() {
                    for (zz, ww) in z.iter_mut().zip(&w[j * m..(j + 1) * m]) {
                        *zz += v * ww;
                    }
                }
            }
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
            let mut mix = 0.0;
            for mm in 0..m {
                let g = (z[mm] - max).exp() / sum;
                resid[mm] = g;
                mix += g * p_true[i * m + mm];
            }
            let mix = mix.max(1e-12);
            loss -= mix.ln();
            // d(−ln mix)/dz = g − q, q the posterior responsibility g·p/mix.
            for mm in 0..m {
                let q = resid[mm] * p_true[i * m + mm] / mix;
                resid[mm] = (resid[mm] - q) / n as f64;
            }
            let (gw, gb) = if bias_only {
                grad.split_at_mut(0)
            } else {
                grad.split_at_mut(width * m)
            };
            for (g, r) in gb.iter_mut().zip(&resid) {
                *g += r;
            }
            if !bias_only {
                let fi = &features[i * width..(i + 1) * width];
                for (j, &v) in fi.iter().enumerate() {
                    for (g, r) in gw[j * m..(j + 1) * m].iter_mut().zip(&resid) {
                        *g += v * r;
                    }
                }
            }
        }
        let mut penalty = 0.0;
        if !bias_only {
            for (g, wv) in grad[..width * m].iter_mut().zip(w) {
                *g += reg * wv;
                penalty += wv * wv;
            }
        }
        loss / n as f64 + 0.5 * reg * penalty
    };
    let r = minimize(
        objective,
        vec![0.0; dims],
        LbfgsOptions {
            max_iter: 500,
            gtol: 1e-6,
            memory: 10,
        },
    );
    if bias_only {
        (Vec::new(), r.x)
    } else {
        let mut w = r.x;
        let b = w.split_off(width * m);
        (w, b)
    }
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

impl CombinerParams {
    /// Validates the hyperparameters.
    pub fn check(&self) -> Result<(), FusionError> {
        if !(self.c.is_finite() && self.c > 0.0) {
            return Err(FusionError::Option(format!(
                "combiner c = {} must be a positive finite number",
                self.c
            )));
        }
        Ok(())
    }

    /// Fits the combiner on out-of-fold member probabilities of the training rows, their
    /// labels and text lengths (characters; used by the adaptive gate).
    pub fn fit(
        &self,
        members: &[&[f32]],
        y: &[usize],
        k: usize,
        lengths: &[f32],
    ) -> Result<Combiner, FusionError> {
        self.check()?;
        let n = check_members(members, k)?;
        if n != y.len() {
            return Err(FusionError::Shape(format!(
                "{n} rows of probabilities, {} labels",
                y.len()
            )));
        }
        let m = members.len();
        Ok(match self.strategy {
            Strategy::HardVote => Combiner::HardVote,
            Strategy::SoftVote => Combiner::SoftVote,
            Strategy::Weighted => {
                let (_, b) = fit_gate(members, y, k, &[], 0, true, self.c);
                Combiner::Weighted(softmax(&b).into_iter().map(|v| v as f32).collect())
            }
            Strategy::Stacking => {
                let x = stacking_features(members, k, n);
                let meta = LogisticRegressionParams {
                    c: self.c,
                    ..Default::default()
                };
                Combiner::Stacking(FitHead::fit(&meta, &x, y, k)?)
            }
            Strategy::Adaptive => {
                let width = GATE_FEATURES_PER_MEMBER * m + 1;
                let f = gate_features(members, k, n, lengths);
                let (w, b) = fit_gate(members, y, k, &f, width, false, self.c);
                Combiner::Adaptive {
                    w: w.into_iter().map(|v| v as f32).collect(),
                    b: b.into_iter().map(|v| v as f32).collect(),
                }
            }
        })
    }

    /// Fits on `train` (out-of-fold member probabilities) once per `c` of `grid` and keeps the
    /// fit most accurate on `dev` (ties: the earlier `c` in `grid`). Strategies for which
    /// [`Strategy::uses_c`] is false fit once, with `self.c`.
    pub fn fit_selecting_c(
        &self,
        train: MemberRows<'_>,
        dev: MemberRows<'_>,
        k: usize,
        grid: &[f64],
    ) -> Result<CombinerSelection, FusionError> {
        let own = [self.c];
        let grid = if self.strategy.uses_c() { grid } else { &own };
        if grid.is_empty() {
            return Err(FusionError::Option("the combiner's c grid is empty".into()));
        }
        let mut best: Option<CombinerSelection> = None;
        for &c in grid {
            let params = CombinerParams { c, ..*self };
            let combiner = params.fit(train.members, train.y, k, train.lengths)?;
            let p = combiner.combine(dev.members, k, dev.lengths)?;
            if p.len() != dev.y.len() * k {
                return Err(FusionError::Shape(format!(
                    "{} dev rows of probabilities, {} dev labels",
                    p.len() / k.max(1),
                    dev.y.len()
                )));
            }
            let dev_accuracy = accuracy(&p, dev.y, k);
            if best.as_ref().is_none_or(|b| dev_accuracy > b.dev_accuracy) {
                best = Some(CombinerSelection {
                    params,
                    combiner,
                    dev_accuracy,
                });
            }
        }
        Ok(best.expect("grid is not empty"))
    }
}

impl Combiner {
    /// The fitted state as named tensors (none for the votes).
    pub fn to_tensors(&self) -> BTreeMap<String, Tensor> {
        match self {
            Combiner::HardVote | Combiner::SoftVote => BTreeMap::new(),
            Combiner::Weighted(w) => {
                BTreeMap::from([("weights".into(), Tensor::f32(vec![w.len()], w.clone()))])
            }
            Combiner::Stacking(meta) => meta.to_tensors(),
            Combiner::Adaptive { w, b } => BTreeMap::from([
                (
                    "gate_w".into(),
                    Tensor::f32(vec![w.len() / b.len().max(1), b.len()], w.clone()),
                ),
                ("gate_b".into(), Tensor::f32(vec![b.len()], b.clone())),
            ]),
        }
    }

    /// Rebuilds the combiner of `params` for `members` members and `k` classes from
    /// [`Combiner::to_tensors`]' output, checking names and shapes.
    pub fn restore(
        params: &CombinerParams,
        members: usize,
        k: usize,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<Self, FusionError> {
        Ok(match params.strategy {
            Strategy::HardVote => Combiner::HardVote,
            Strategy::SoftVote => Combiner::SoftVote,
            Strategy::Weighted => {
                let w = stored_f32(tensors, "weights", Some(&[members]))?;
                if w.iter().any(|v| *v < 0.0) || (w.iter().sum::<f32>() - 1.0).abs() > 1e-3 {
                    return Err(FusionError::Shape(format!(
                        "stored weights {w:?} are not a distribution"
                    )));
                }
                Combiner::Weighted(w.to_vec())
            }
            Strategy::Stacking => Combiner::Stacking(LogisticRegressionParams::default().restore(
                members * k,
                k,
                tensors,
            )?),
            Strategy::Adaptive => {
                let width = GATE_FEATURES_PER_MEMBER * members + 1;
                Combiner::Adaptive {
                    w: stored_f32(tensors, "gate_w", Some(&[width, members]))?.to_vec(),
                    b: stored_f32(tensors, "gate_b", Some(&[members]))?.to_vec(),
                }
            }
        })
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        match self {
            Combiner::HardVote => Strategy::HardVote,
            Combiner::SoftVote => Strategy::SoftVote,
            Combiner::Weighted(_) => Strategy::Weighted,
            Combiner::Stacking(_) => Strategy::Stacking,
            Combiner::Adaptive { .. } => Strategy::Adaptive,
        }
    }

    /// Fused probabilities, `rows × k`, from each member's probabilities for the same rows.
    pub fn combine(
        &self,
        members: &[&[f32]],
        k: usize,
        lengths: &[f32],
    ) -> Result<Vec<f32>, FusionError> {
        let n = check_members(members, k)?;
        let m = members.len();
        let mean = |i: usize, weights: &[f64]| -> Vec<f64> {
            let mut row = vec![0.0f64; k];
            for (mm, w) in members.iter().zip(weights) {
                for (r, p) in row.iter_mut().zip(&mm[i * k..(i + 1) * k]) {
                    *r += w * *p as f64;
                }
            }
            row
        };
        let uniform = vec![1.0 / m as f64; m];
        let mut out = Vec::with_capacity(n * k);
        match self {
            Combiner::SoftVote => (0..n).for_each(|i| out.extend(mean(i, &uniform))),
            Combiner::HardVote => {
                for i in 0..n {
                    let avg = mean(i, &uniform);
                    let mut votes = vec![0.0f64; k];
                    for mm in members {
                        votes[lmfuse_metrics_argmax(&mm[i * k..(i + 1) * k])] += 1.0;
                    }
                    // Votes decide; the mean probability only breaks ties and keeps every
                    // class above zero.
                    let row: Vec<f64> = votes.iter().zip(&avg).map(|(v, a)| v + 1e-3 * a).collect();
                    let s: f64 = row.iter().sum();
                    out.extend(row.into_iter().map(|v| v / s));
                }
            }
            Combiner::Weighted(w) => {
                if w.len() != m {
                    return Err(FusionError::Shape(format!(
                        "{} weights for {m} members",
                        w.len()
                    )));
                }
                let w: Vec<f64> = w.iter().map(|&v| v as f64).collect();
                (0..n).for_each(|i| out.extend(mean(i, &w)));
            }
            Combiner::Stacking(meta) => {
                return Ok(meta.predict_proba(&stacking_features(members, k, n))?);
            }
            Combiner::Adaptive { w, b } => {
                let width = GATE_FEATURES_PER_MEMBER * m + 1;
                if w.len() != width * m || b.len() != m {
                    return Err(FusionError::Shape(format!(
                        "gate of {} weights and {} biases does not fit {m} members",
                        w.len(),
                        b.len()
                    )));
                }
                let f = gate_features(members, k, n, lengths);
                for i in 0..n {
                    let mut z: Vec<f64> = b.iter().map(|&v| v as f64).collect();
                    for (j, &v) in f[i * width..(i + 1) * width].iter().enumerate() {
                        for (zz, ww) in z.iter_mut().zip(&w[j * m..(j + 1) * m]) {
                            *zz += v * *ww as f64;
                        }
                    }
                    out.extend(mean(i, &softmax(&z)));
                }
            }
        }
        Ok(out.into_iter().map(|v| v as f32).collect())
    }
}

/// Share of rows whose largest probability (of `k` per row) is at their label.
fn accuracy(p: &[f32], y: &[usize], k: usize) -> f64 {
    let hits = p
        .chunks(k)
        .zip(y)
        .filter(|(row, &t)| lmfuse_metrics_argmax(row) == t)
        .count();
    hits as f64 / y.len().max(1) as f64
}

/// Index of the largest value (the first on ties).
fn lmfuse_metrics_argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two members over 3 classes: member 0 is right on even rows, member 1 on odd rows; the
    /// text length tells which row is which.
    fn complementary(n: usize) -> (Vec<f32>, Vec<f32>, Vec<usize>, Vec<f32>) {
        let (mut a, mut b, mut y, mut len) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let t = i % 3;
            let wrong = (t + 1) % 3;
            let sharp =
                |c: usize| -> Vec<f32> { (0..3).map(|j| if j == c { 0.8 } else { 0.1 }).collect() };
            let flat = |c: usize| -> Vec<f32> {
                (0..3).map(|j| if j == c { 0.5 } else { 0.25 }).collect()
            };
            if i % 2 == 0 {
                a.extend(sharp(t));
                b.extend(flat(wrong));
                len.push(10.0);
            } else {
                a.extend(flat(wrong));
                b.extend(sharp(t));
                len.push(500.0);
            }
            y.push(t);
        }
        (a, b, y, len)
    }

    #[test]
    fn every_strategy_gives_distributions_and_the_gate_learns_who_to_trust() {
        let (a, b, y, len) = complementary(120);
        let members = [a.as_slice(), b.as_slice()];
        for strategy in Strategy::ALL {
            let c = CombinerParams { strategy, c: 10.0 }
                .fit(&members, &y, 3, &len)
                .unwrap();
            let p = c.combine(&members, 3, &len).unwrap();
            for row in p.chunks(3) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{strategy:?}");
            }
            let acc = accuracy(&p, &y, 3);
            match strategy {
                // The sharp member wins the average on every row.
                Strategy::SoftVote | Strategy::Weighted | Strategy::Stacking => {
                    assert!(acc > 0.95, "{strategy:?} {acc}")
                }
                Strategy::Adaptive => assert!(acc > 0.99, "{acc}"),
                Strategy::HardVote => {}
            }
        }
    }

    #[test]
    fn the_combiner_c_is_chosen_on_dev_and_only_where_it_matters() {
        let (a, b, y, len) = complementary(120);
        let (da, db, dy, dlen) = complementary(60);
        let (tm, dm) = ([a.as_slice(), b.as_slice()], [da.as_slice(), db.as_slice()]);
        let train = MemberRows {
            members: &tm,
            y: &y,
            lengths: &len,
        };
        let dev = MemberRows {
            members: &dm,
            y: &dy,
            lengths: &dlen,
        };
        let grid = [10.0, 1e-7, 20.0];
        let adaptive = CombinerParams {
            strategy: Strategy::Adaptive,
            c: 1.0,
        };
        let s = adaptive.fit_selecting_c(train, dev, 3, &grid).unwrap();
        for &c in &grid {
            let p = CombinerParams { c, ..adaptive }
                .fit(&tm, &y, 3, &len)
                .unwrap()
                .combine(&dm, 3, &dlen)
                .unwrap();
            assert!(s.dev_accuracy >= accuracy(&p, &dy, 3), "c = {c}");
        }
        assert!(s.dev_accuracy > 0.99, "{}", s.dev_accuracy);
        // Ties go to the earlier c; the returned combiner is the fit with the chosen c.
        assert_eq!(s.params.c, 10.0);
        let again = CombinerParams {
            c: 10.0,
            ..adaptive
        }
        .fit(&tm, &y, 3, &len)
        .unwrap();
        assert_eq!(s.combiner, again);
        // Votes have no c: one fit with the given one, whatever the grid.
        let soft = CombinerParams {
            strategy: Strategy::SoftVote,
            c: 3.0,
        };
        assert_eq!(
            soft.fit_selecting_c(train, dev, 3, &grid).unwrap().params.c,
            3.0
        );
        assert!(adaptive.fit_selecting_c(train, dev, 3, &[]).is_err());
    }

    #[test]
    fn weighted_prefers_the_better_member() {
        let n = 90;
        let y: Vec<usize> = (0..n).map(|i| i % 3).collect();
        let good: Vec<f32> = y
            .iter()
            .flat_map(|&t| (0..3).map(move |j| if j == t { 0.9 } else { 0.05 }))
            .collect();
        let noise = vec![1.0 / 3.0; n * 3];
        let c = CombinerParams {
            strategy: Strategy::Weighted,
            c: 1.0,
        }
        .fit(&[&good, &noise], &y, 3, &[])
        .unwrap();
        let Combiner::Weighted(w) = c else { panic!() };
        assert!(w[0] > 0.9, "{w:?}");
    }

    #[test]
    fn every_combiner_round_trips_through_tensors() {
        let (a, b, y, len) = complementary(60);
        let members = [a.as_slice(), b.as_slice()];
        for strategy in Strategy::ALL {
            let params = CombinerParams { strategy, c: 1.0 };
            let c = params.fit(&members, &y, 3, &len).unwrap();
            let back = Combiner::restore(&params, 2, 3, &c.to_tensors()).unwrap();
            assert_eq!(
                back.combine(&members, 3, &len).unwrap(),
                c.combine(&members, 3, &len).unwrap(),
                "{strategy:?}"
            );
            if !c.to_tensors().is_empty() {
                assert!(Combiner::restore(&params, 3, 3, &c.to_tensors()).is_err());
            }
        }
    }

    #[test]
    fn mismatched_members_are_errors() {
        let r = CombinerParams::default().fit(&[&[0.5, 0.5], &[1.0]], &[0], 2, &[]);
        assert!(matches!(r, Err(FusionError::Shape(_))));
    }
}
