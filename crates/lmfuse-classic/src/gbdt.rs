//! Histogram gradient-boosted trees for multiclass classification (softmax loss), after
//! LightGBM and scikit-learn's `HistGradientBoostingClassifier`.
//!
//! Every feature is binned once into at most `max_bins` quantile bins of the training rows
//! (u8 codes). Each boosting round grows one tree per class on the softmax gradients and
//! hessians, depth-wise up to `max_depth`; a node's split comes from per-feature histograms of
//! gradient sums, built two features per pass over the node's rows, and only for the smaller
//! child: the larger child's histogram is the parent's minus the smaller one's. Leaves
//! hold `-learning_rate · G / (H + l2)`. Split thresholds are stored as raw f32 values, so
//! prediction needs no bins. A seeded, per-class stratified holdout drives early stopping on
//! its log loss; the model keeps the rounds up to the best one.
//!
//! Our own code rather than a crate: lightgbm3 needs cmake ≥ 3.28 and libclang, which the build
//! machine lacks, and linfa-ensemble needs ndarray 0.16 and has no boosting. Our own code keeps
//! one binary, stores the model as tensors of our bundle format, and makes a seed give the same
//! model on any number of threads: each tree draws its features from a generator derived from
//! the seed, the round and the class, and every float sum runs in a fixed order.

use crate::forest::{dense, leaf_of, midpoint, stored, stored_trees, stream_rng, tree_tensors};
use crate::forest::{vec_len, Node};
use crate::{check_input, check_training_data, stored_f32, ClassicError, FitHead, ProbaHead};
use lmfuse_core::{DenseMatrix, Features, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// Hyperparameters of [`Gbdt`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GbdtParams {
    /// Shrinkage of every leaf value (> 0).
    pub learning_rate: f64,
    /// Boosting rounds at most (≥ 1); a round adds one tree per class.
    pub max_rounds: usize,
    /// Deepest a leaf may lie, the root at depth 0 (≥ 1): at most `2^max_depth` leaves.
    pub max_depth: usize,
    /// Fewest training rows in a leaf (≥ 1).
    pub min_samples_leaf: usize,
    /// L2 penalty on leaf values (≥ 0): a leaf holds `-G / (H + l2)`.
    pub l2: f64,
    /// Quantile bins per feature, in `2..=255`.
    pub max_bins: usize,
    /// Share of features each tree may split on, in `(0, 1]`.
    pub colsample: f64,
    /// Share of each class's rows held out for early stopping, in `[0, 1)`; 0 trains all
    /// `max_rounds` rounds on every row.
    pub validation_fraction: f64,
    /// Stop after this many rounds (≥ 1) without a better holdout log loss.
    pub early_stopping_rounds: usize,
    /// Seed of the holdout split and the feature draws.
    pub seed: u64,
}

impl Default for GbdtParams {
    fn default() -> Self {
        Self {
            learning_rate: 0.1,
            max_rounds: 300,
            max_depth: 4,
            min_samples_leaf: 20,
            l2: 1.0,
            max_bins: 255,
            colsample: 0.5,
            validation_fraction: 0.1,
            early_stopping_rounds: 10,
            seed: 0,
        }
    }
}

/// A fitted gradient-boosted tree ensemble.
#[derive(Debug, Clone, PartialEq)]
pub struct Gbdt {
    n_features: usize,
    n_classes: usize,
    /// Raw score of each class before any tree: the log class priors.
    init: Vec<f32>,
    /// Index of each tree's root in `nodes`; tree `t` adds to class `t % n_classes`.
    roots: Vec<u32>,
    nodes: Vec<Node>,
    /// Leaf values, per node (0 at split nodes).
    values: Vec<f32>,
}

/// Smallest hessian sum of a child (scikit-learn's `min_hessian_to_split`).
const MIN_CHILD_HESSIAN: f64 = 1e-3;
/// Smallest hessian of one row, so leaves of confidently predicted rows stay finite.
const MIN_ROW_HESSIAN: f32 = 1e-16;
/// Least holdout log-loss improvement that counts as better.
const TOL: f64 = 1e-7;
/// Histogram slots per feature (u8 codes).
const NB: usize = 256;
/// Most training rows: f32 counts them exactly up to here.
const MAX_ROWS: usize = 1 << 24;

impl GbdtParams {
    /// Validates the hyperparameters.
    pub fn check(&self) -> Result<(), ClassicError> {
        let bad = |name, value: String, reason| {
            Err(ClassicError::InvalidParam {
                name,
                value,
                reason,
            })
        };
        let lr = self.learning_rate;
        if !(lr.is_finite() && lr > 0.0) {
            return bad(
                "learning_rate",
                lr.to_string(),
                "must be positive and finite",
            );
        }
        for (name, v) in [
            ("max_rounds", self.max_rounds),
            ("max_depth", self.max_depth),
            ("min_samples_leaf", self.min_samples_leaf),
            ("early_stopping_rounds", self.early_stopping_rounds),
        ] {
            if v == 0 {
                return bad(name, "0".into(), "must be at least 1");
            }
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return bad("l2", self.l2.to_string(), "must be finite and at least 0");
        }
        if !(2..=255).contains(&self.max_bins) {
            return bad("max_bins", self.max_bins.to_string(), "must lie in 2..=255");
        }
        if !(self.colsample > 0.0 && self.colsample <= 1.0) {
            return bad(
                "colsample",
                self.colsample.to_string(),
                "must lie in (0, 1]",
            );
        }
        let vf = self.validation_fraction;
        if !(0.0..1.0).contains(&vf) {
            return bad("validation_fraction", vf.to_string(), "must lie in [0, 1)");
        }
        Ok(())
    }

    /// Fits on dense features `x` with class indices `y` in `0..n_classes`.
    pub fn fit(&self, x: &Features, y: &[usize], n_classes: usize) -> Result<Gbdt, ClassicError> {
        self.check()?;
        check_training_data(x, y, n_classes)?;
        let m = dense(x, "gbdt")?;
        let (d, k) = (m.cols(), n_classes);
        if m.rows() > MAX_ROWS {
            return Err(ClassicError::InvalidParam {
                name: "rows",
                value: m.rows().to_string(),
                reason: "at most 2^24 training rows (histogram row counts are f32)",
            });
        }
        if self.max_rounds.saturating_mul(k) > i32::MAX as usize {
            return Err(ClassicError::InvalidParam {
                name: "max_rounds",
                value: self.max_rounds.to_string(),
                reason: "rounds × classes must fit in i32",
            });
        }
        let (train, val) = holdout(y, k, self.validation_fraction, self.seed);
        let nt = train.len();
        let y_train: Vec<u32> = train.iter().map(|&i| y[i] as u32).collect();
        let y_val: Vec<u32> = val.iter().map(|&i| y[i] as u32).collect();
        let binned = Binned::new(m, &train, self.max_bins);

        let mut counts = vec![0usize; k];
        for &c in &y_train {
            counts[c as usize] += 1;
        }
        let init: Vec<f32> = counts
            .iter()
            .map(|&c| ((c as f64 / nt as f64).max(1e-12)).ln() as f32)
            .collect();
        // Training scores and gradients are class-major: a class's tree reads and updates one
        // contiguous run.
        let mut f_train: Vec<f64> = init
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v as f64, nt))
            .collect();
        let mut f_val: Vec<f64> = init
            .iter()
            .map(|&v| v as f64)
            .cycle()
            .take(val.len() * k)
            .collect();
        let mut best_loss = log_loss(&f_val, &y_val, k);
        let mut best_round = 0;
        let mut trees: Vec<Tree> = Vec::new();
        let mut grad = vec![[0.0f32; 2]; nt * k];
        let scratches: Mutex<Vec<Scratch>> = Mutex::new(Vec::new());
        let n_cols = ((self.colsample * d as f64).round() as usize).max(1).min(d);
        for round in 0..self.max_rounds {
            gradients(&f_train, &y_train, k, &mut grad);
            let grad = &grad;
            let grown: Vec<Grown> = (0..k)
                .into_par_iter()
                .map(|c| {
                    let mut rng = stream_rng(self.seed, (round * k + c) as u64);
                    let mut feats: Vec<u32> = (0..d as u32).collect();
                    for i in 0..n_cols {
                        let j = i + rng.below(d - i);
                        feats.swap(i, j);
                    }
                    feats.truncate(n_cols);
                    feats.sort_unstable();
                    let job = TreeJob {
                        data: &binned,
                        params: self,
                        grad: &grad[c * nt..(c + 1) * nt],
                        feats: &feats,
                    };
                    // Buffers live across rounds: a worker takes one set per tree.
                    let mut scratch = scratches
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop()
                        .unwrap_or_default();
                    let grown = job.grow(&mut scratch);
                    scratches
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(scratch);
                    grown
                })
                .collect();
            for (c, g) in grown.iter().enumerate() {
                for &(start, end, value) in &g.leaves {
                    for &r in &g.rows[start..end] {
                        f_train[c * nt + r as usize] += value as f64;
                    }
                }
            }
            trees.extend(grown.into_iter().map(|g| g.tree));
            if val.is_empty() {
                best_round = round + 1;
                continue;
            }
            let new = &trees[round * k..];
            f_val
                .par_chunks_mut(k)
                .zip(val.par_iter())
                .with_min_len(16)
                .for_each(|(f, &i)| {
                    let row = m.row(i);
                    for (fc, t) in f.iter_mut().zip(new) {
                        *fc += t.values[leaf_of(&t.nodes, 0, row)] as f64;
                    }
                });
            let loss = log_loss(&f_val, &y_val, k);
            if loss < best_loss - TOL {
                best_loss = loss;
                best_round = round + 1;
            } else if round + 1 - best_round >= self.early_stopping_rounds {
                break;
            }
        }
        trees.truncate(best_round * k);
        let mut model = Gbdt {
            n_features: d,
            n_classes: k,
            init,
            roots: Vec::with_capacity(trees.len()),
            nodes: Vec::new(),
            values: Vec::new(),
        };
        for t in trees {
            let base = model.nodes.len() as u32;
            model.roots.push(base);
            model.nodes.extend(t.nodes.iter().map(|n| {
                if n.feature < 0 {
                    *n
                } else {
                    Node {
                        left: n.left + base,
                        right: n.right + base,
                        ..*n
                    }
                }
            }));
            model.values.extend(t.values);
        }
        if model.nodes.len() > i32::MAX as usize {
            return Err(ClassicError::InvalidParam {
                name: "max_rounds",
                value: self.max_rounds.to_string(),
                reason: "the model outgrows i32 node indices",
            });
        }
        Ok(model)
    }
}

/// Row indices of the training part and of the early-stopping holdout, both ascending: each
/// class gives `round(fraction · count)` random rows to the holdout but keeps at least one.
pub(crate) fn holdout(y: &[usize], k: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    if fraction == 0.0 {
        return ((0..y.len()).collect(), Vec::new());
    }
    let mut by_class = vec![Vec::new(); k];
    for (i, &c) in y.iter().enumerate() {
        by_class[c].push(i);
    }
    let mut rng = stream_rng(seed, u64::MAX);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for rows in &mut by_class {
        rng.shuffle(rows);
        let n_val =
            ((fraction * rows.len() as f64).round() as usize).min(rows.len().saturating_sub(1));
        val.extend_from_slice(&rows[..n_val]);
        train.extend_from_slice(&rows[n_val..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

/// Mean negative log-likelihood of the labels under the softmax of raw scores `f`.
fn log_loss(f: &[f64], y: &[u32], k: usize) -> f64 {
    if y.is_empty() {
        return 0.0;
    }
    let per_row: Vec<f64> = f
        .par_chunks(k)
        .zip(y.par_iter())
        .with_min_len(64)
        .map(|(row, &t)| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            lse - row[t as usize]
        })
        .collect();
    per_row.iter().sum::<f64>() / y.len() as f64
}

/// Softmax gradient and hessian `[p - 1{y = c}, p (1 - p)]` of every class and row, from
/// scores `f`; both class-major.
fn gradients(f: &[f64], y: &[u32], k: usize, grad: &mut [[f32; 2]]) {
    let n = y.len();
    let log_norm: Vec<f64> = (0..n)
        .into_par_iter()
        .with_min_len(64)
        .map(|i| {
            let score = |c: usize| f[c * n + i];
            let max = (0..k).map(score).fold(f64::NEG_INFINITY, f64::max);
            max + (0..k).map(|c| (score(c) - max).exp()).sum::<f64>().ln()
        })
        .collect();
    grad.par_chunks_mut(n)
        .zip(f.par_chunks(n))
        .enumerate()
        .for_each(|(c, (g, fc))| {
            for (((gi, &fi), &norm), &t) in g.iter_mut().zip(fc).zip(&log_norm).zip(y) {
                let p = (fi - norm).exp();
                let target = if t as usize == c { 1.0 } else { 0.0 };
                *gi = [
                    (p - target) as f32,
                    ((p * (1.0 - p)) as f32).max(MIN_ROW_HESSIAN),
                ];
            }
        });
}

/// The training rows binned: `codes` is `d × n` column-major; feature `f`'s code `b` means
/// `thresholds[f][b - 1] < x <= thresholds[f][b]` (open-ended at the ends).
struct Binned {
    n: usize,
    codes: Vec<u8>,
    thresholds: Vec<Vec<f32>>,
}

impl Binned {
    fn new(m: &DenseMatrix, rows: &[usize], max_bins: usize) -> Self {
        let d = m.cols();
        let per_feature: Vec<(Vec<f32>, Vec<u8>)> = (0..d)
            .into_par_iter()
            .map(|f| {
                let values: Vec<f32> = rows.iter().map(|&r| m.row(r)[f] + 0.0).collect();
                let thr = bin_thresholds(&values, max_bins);
                let codes = values
                    .iter()
                    .map(|&v| thr.partition_point(|&t| t < v) as u8)
                    .collect();
                (thr, codes)
            })
            .collect();
        let mut codes = Vec::with_capacity(d * rows.len());
        let mut thresholds = Vec::with_capacity(d);
        for (t, c) in per_feature {
            thresholds.push(t);
            codes.extend(c);
        }
        Binned {
            n: rows.len(),
            codes,
            thresholds,
        }
    }
}

/// At most `max_bins - 1` ascending thresholds splitting `values` into near-equal-count bins:
/// midpoints between neighbouring distinct values when there are few enough, else between the
/// values at the quantiles. No threshold reaches the largest value.
fn bin_thresholds(values: &[f32], max_bins: usize) -> Vec<f32> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f32::total_cmp);
    let mut distinct = sorted.clone();
    distinct.dedup();
    if distinct.len() <= max_bins {
        return distinct.windows(2).map(|w| midpoint(w[0], w[1])).collect();
    }
    let (n, max) = (sorted.len(), sorted[sorted.len() - 1]);
    let mut thr: Vec<f32> = Vec::with_capacity(max_bins - 1);
    for b in 1..max_bins {
        let i = (b * n / max_bins).max(1);
        let (lo, hi) = (sorted[i - 1], sorted[i]);
        let t = if lo < hi { midpoint(lo, hi) } else { lo };
        if t < max && thr.last().is_none_or(|&last| t > last) {
            thr.push(t);
        }
    }
    thr
}

/// One histogram slot: the sums `[g, h, rows, 0]` of its rows, in four f32 lanes so one SIMD
/// add counts a row. A slot sums one bin of one node (about `rows / bins` values), ample
/// precision for ranking splits; row counts stay exact below 2^24, and leaf values are summed
/// in f64 from the rows themselves.
type Bin = [f32; 4];

/// A tree with tree-local node indices.
struct Tree {
    nodes: Vec<Node>,
    values: Vec<f32>,
}

/// A grown tree with its training rows, permuted so each leaf's rows are contiguous.
struct Grown {
    tree: Tree,
    rows: Vec<u32>,
    /// `(start, end, value)` of each leaf's rows in `rows`.
    leaves: Vec<(usize, usize, f32)>,
}

/// Buffers reused from tree to tree (a tree takes one set from a pool shared by the round).
#[derive(Default)]
struct Scratch {
    hists: Vec<Vec<Bin>>,
    gh: Vec<Bin>,
    right: Vec<u32>,
}

/// The best split of a node.
struct Split {
    gain: f64,
    /// Position in the tree's feature list.
    fi: usize,
    /// Rows with codes `<= bin` go left.
    bin: usize,
    g_left: f64,
    h_left: f64,
    n_left: u32,
}

/// A node waiting to be split or made a leaf.
struct Pending {
    node: usize,
    start: usize,
    end: usize,
    depth: usize,
    hist: Option<Vec<Bin>>,
    g: f64,
    h: f64,
}

/// Adds row sums `v` to slot `b`, lane by lane so it compiles to one SIMD add.
#[inline(always)]
fn add(slots: &mut [Bin; NB], b: u8, v: &Bin) {
    let s = &mut slots[b as usize];
    *s = [s[0] + v[0], s[1] + v[1], s[2] + v[2], s[3] + v[3]];
}

/// `s` as one feature's block of slots.
fn block(s: &[Bin]) -> &[Bin; NB] {
    s.try_into().expect("blocks of NB slots")
}

/// A node's sums and the split constraints.
struct Totals {
    g: f64,
    h: f64,
    n: f32,
    l2: f64,
    msl: f32,
}

impl Totals {
    /// The best boundary `(bin, num, den)` of one feature's histogram: rows with codes
    /// `<= bin` go left. Candidates run from the first boundary with `min_samples_leaf` rows
    /// and the least hessian on the left to the last with both on the right. A split's score
    /// `gl²/(hl + l2) + gr²/(hr + l2)` is kept as the fraction `num / den` and compared by
    /// cross-multiplying, so the scan never divides; it must beat the parent's `g²/(h + l2)`.
    /// An empty bin repeats the previous boundary, which keeps the tie.
    #[inline(always)]
    fn scan(&self, slots: &[Bin; NB]) -> Option<(usize, f64, f64)> {
        let (g, h, l2) = (self.g, self.h, self.l2);
        let (mut gl, mut hl, mut nl) = (0.0f64, 0.0f64, 0.0f32);
        let mut b = 0;
        loop {
            let s = slots[b];
            gl += s[0] as f64;
            hl += s[1] as f64;
            nl += s[2];
            if nl >= self.msl && hl >= MIN_CHILD_HESSIAN {
                break;
            }
            b += 1;
            if b == NB - 1 {
                return None;
            }
        }
        let (max_left, max_hl) = (self.n - self.msl, h - MIN_CHILD_HESSIAN);
        let mut best = None;
        let (mut best_num, mut best_den) = (g * g, h + l2);
        while nl <= max_left && hl <= max_hl {
            let (dl, dr) = (hl + l2, h - hl + l2);
            let gr = g - gl;
            let (num, den) = (gl * gl * dr + gr * gr * dl, dl * dr);
            if num * best_den > best_num * den {
                (best_num, best_den) = (num, den);
                best = Some((b, num, den));
            }
            b += 1;
            if b == NB - 1 {
                break;
            }
            let s = slots[b];
            gl += s[0] as f64;
            hl += s[1] as f64;
            nl += s[2];
        }
        best
    }

    /// The split at boundary `bin` of histogram `slots` (feature `fi`), if its gain is
    /// positive.
    fn split(&self, slots: &[Bin], fi: usize, (bin, num, den): (usize, f64, f64)) -> Option<Split> {
        let (mut g_left, mut h_left, mut n_left) = (0.0f64, 0.0f64, 0.0f32);
        for s in &slots[..=bin] {
            g_left += s[0] as f64;
            h_left += s[1] as f64;
            n_left += s[2];
        }
        let gain = num / den - self.g * self.g / (self.h + self.l2);
        (gain > 0.0).then_some(Split {
            gain,
            fi,
            bin,
            g_left,
            h_left,
            n_left: n_left as u32,
        })
    }
}

/// Everything one class's tree of one round needs.
struct TreeJob<'a> {
    data: &'a Binned,
    params: &'a GbdtParams,
    /// This class's gradient and hessian per training row.
    grad: &'a [[f32; 2]],
    feats: &'a [u32],
}

impl TreeJob<'_> {
    fn gh(&self, r: u32) -> [f32; 2] {
        self.grad[r as usize]
    }

    /// Histograms of `rows` (ascending) for every feature of the tree, one `NB` slot block per
    /// feature. Features go in pairs: one pass over the rows fills both, and each column is
    /// read forwards.
    fn build_hist(&self, rows: &[u32], scratch: &mut Scratch) -> Vec<Bin> {
        let mut hist = scratch
            .hists
            .pop()
            .unwrap_or_else(|| vec![[0.0; 4]; self.feats.len() * NB]);
        let n = self.data.n;
        let all = rows.len() == n;
        scratch.gh.clear();
        scratch.gh.extend(rows.iter().map(|&r| {
            let [g, h] = self.gh(r);
            [g, h, 1.0, 0.0]
        }));
        let gh = &scratch.gh;
        let col = |f: u32| &self.data.codes[f as usize * n..(f as usize + 1) * n];
        hist.par_chunks_mut(2 * NB)
            .zip(self.feats.par_chunks(2))
            .with_min_len(4)
            .for_each(|(slots, fs)| {
                slots.fill([0.0; 4]);
                let (a, b) = slots.split_at_mut(NB);
                let a: &mut [Bin; NB] = a.try_into().expect("blocks of NB slots");
                match *fs {
                    [fa, fb] => {
                        let b: &mut [Bin; NB] = b.try_into().expect("blocks of NB slots");
                        let (ca, cb) = (col(fa), col(fb));
                        if all {
                            // The root: every row, in order.
                            for ((&x, &y), v) in ca.iter().zip(cb).zip(gh) {
                                add(a, x, v);
                                add(b, y, v);
                            }
                        } else {
                            for (&r, v) in rows.iter().zip(gh) {
                                add(a, ca[r as usize], v);
                                add(b, cb[r as usize], v);
                            }
                        }
                    }
                    [fa] => {
                        let ca = col(fa);
                        for (&r, v) in rows.iter().zip(gh) {
                            add(a, ca[r as usize], v);
                        }
                    }
                    _ => unreachable!("features come in pairs"),
                }
            });
        hist
    }

    /// The split of largest positive gain, or `None`.
    fn best_split(&self, hist: &[Bin], g: f64, h: f64, n: u32) -> Option<Split> {
        let p = self.params;
        let t = Totals {
            g,
            h,
            n: n as f32,
            l2: p.l2,
            msl: p.min_samples_leaf as f32,
        };
        let per_feature: Vec<Option<Split>> = hist
            .par_chunks(NB)
            .enumerate()
            .with_min_len(16)
            .map(|(fi, slots)| {
                t.scan(block(slots))
                    .and_then(|found| t.split(slots, fi, found))
            })
            .collect();
        per_feature
            .into_iter()
            .flatten()
            .fold(None, |best: Option<Split>, s| match best {
                Some(b) if b.gain >= s.gain => Some(b),
                _ => Some(s),
            })
    }

    /// Grows the tree depth first (every node is split while it can, so the tree is the one
    /// level-wise growth gives); node indices are handed out at the split, children after
    /// their parent.
    fn grow(&self, scratch: &mut Scratch) -> Grown {
        let p = self.params;
        let n = self.data.n;
        let msl = p.min_samples_leaf;
        let wants_hist = |rows: usize, depth: usize| depth < p.max_depth && rows >= 2 * msl;
        let mut rows: Vec<u32> = (0..n as u32).collect();
        let mut tree = Tree {
            nodes: vec![Node::LEAF],
            values: vec![0.0],
        };
        let mut leaves = Vec::new();
        let (mut g, mut h) = (0.0f64, 0.0f64);
        for &r in &rows {
            let [gr, hr] = self.gh(r);
            g += gr as f64;
            h += hr as f64;
        }
        let hist = wants_hist(n, 0).then(|| self.build_hist(&rows, scratch));
        let mut stack = vec![Pending {
            node: 0,
            start: 0,
            end: n,
            depth: 0,
            hist,
            g,
            h,
        }];
        while let Some(t) = stack.pop() {
            let count = (t.end - t.start) as u32;
            let split = t
                .hist
                .as_ref()
                .and_then(|hist| self.best_split(hist, t.g, t.h, count));
            let (s, mut parent) = match (split, t.hist) {
                (Some(s), Some(hist)) => (s, hist),
                (_, hist) => {
                    scratch.hists.extend(hist);
                    let (mut g, mut h) = (0.0f64, 0.0f64);
                    for &r in &rows[t.start..t.end] {
                        let [gr, hr] = self.gh(r);
                        g += gr as f64;
                        h += hr as f64;
                    }
                    let value = (-p.learning_rate * g / (h + p.l2)) as f32;
                    tree.values[t.node] = value;
                    leaves.push((t.start, t.end, value));
                    continue;
                }
            };
            let f = self.feats[s.fi] as usize;
            let col = &self.data.codes[f * n..(f + 1) * n];
            // A stable partition keeps every node's rows ascending, so histograms read the
            // feature columns forwards.
            let part = &mut rows[t.start..t.end];
            let mut i = 0;
            scratch.right.clear();
            for j in 0..part.len() {
                let r = part[j];
                if col[r as usize] as usize <= s.bin {
                    part[i] = r;
                    i += 1;
                } else {
                    scratch.right.push(r);
                }
            }
            part[i..].copy_from_slice(&scratch.right);
            debug_assert_eq!(i, s.n_left as usize);
            let mid = t.start + i;
            let (left, right) = (tree.nodes.len(), tree.nodes.len() + 1);
            tree.nodes.extend([Node::LEAF; 2]);
            tree.values.extend([0.0; 2]);
            tree.nodes[t.node] = Node {
                feature: f as i32,
                threshold: self.data.thresholds[f][s.bin],
                left: left as u32,
                right: right as u32,
            };
            let depth = t.depth + 1;
            let (n_left, n_right) = (mid - t.start, t.end - mid);
            let (left_wants, right_wants) = (wants_hist(n_left, depth), wants_hist(n_right, depth));
            let (mut left_hist, mut right_hist) = (None, None);
            if left_wants || right_wants {
                // Build the smaller child's histogram; the larger one's is the parent's minus it.
                let small_is_left = n_left <= n_right;
                let small_rows = if small_is_left {
                    &rows[t.start..mid]
                } else {
                    &rows[mid..t.end]
                };
                let small = self.build_hist(small_rows, scratch);
                let (small_wants, large_wants) = if small_is_left {
                    (left_wants, right_wants)
                } else {
                    (right_wants, left_wants)
                };
                let large = if large_wants {
                    for (a, b) in parent.iter_mut().zip(&small) {
                        *a = [a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3]];
                    }
                    Some(parent)
                } else {
                    scratch.hists.push(parent);
                    None
                };
                let small = if small_wants {
                    Some(small)
                } else {
                    scratch.hists.push(small);
                    None
                };
                (left_hist, right_hist) = if small_is_left {
                    (small, large)
                } else {
                    (large, small)
                };
            } else {
                scratch.hists.push(parent);
            }
            stack.push(Pending {
                node: right,
                start: mid,
                end: t.end,
                depth,
                hist: right_hist,
                g: t.g - s.g_left,
                h: t.h - s.h_left,
            });
            stack.push(Pending {
                node: left,
                start: t.start,
                end: mid,
                depth,
                hist: left_hist,
                g: s.g_left,
                h: s.h_left,
            });
        }
        Grown { tree, rows, leaves }
    }
}

impl Gbdt {
    /// Feature columns the model takes.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Boosting rounds kept: the best on the holdout, or all that ran without one.
    pub fn rounds(&self) -> usize {
        self.roots.len() / self.n_classes
    }

    /// Trees, `rounds() × n_classes()`.
    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    /// Nodes over all trees.
    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Raw class scores, `rows × n_classes`: log priors plus the sum of each class's trees.
    fn raw_scores(&self, m: &DenseMatrix) -> Vec<f64> {
        let k = self.n_classes;
        let mut out = vec![0.0f64; m.rows() * k];
        out.par_chunks_mut(k)
            .enumerate()
            .with_min_len(16)
            .for_each(|(i, s)| {
                let row = m.row(i);
                for (o, &v) in s.iter_mut().zip(&self.init) {
                    *o = v as f64;
                }
                for (t, &root) in self.roots.iter().enumerate() {
                    s[t % k] += self.values[leaf_of(&self.nodes, root, row)] as f64;
                }
            });
        out
    }

    /// Class probabilities, `rows × n_classes` row-major: the softmax of the raw scores.
    pub fn predict_proba(&self, x: &Features) -> Result<Vec<f32>, ClassicError> {
        let m = dense(x, "gbdt")?;
        check_input(x, self.n_features)?;
        let mut z = self.raw_scores(m);
        for row in z.chunks_exact_mut(self.n_classes) {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            row.iter_mut().for_each(|v| *v /= sum);
        }
        Ok(z.into_iter().map(|v| v as f32).collect())
    }

    /// Rebuilds a model from [`ProbaHead::to_tensors`]' output, checking every value.
    pub fn from_tensors(
        n_features: usize,
        n_classes: usize,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<Self, ClassicError> {
        if n_classes < 2 {
            return Err(stored(
                "init_score",
                format!("{n_classes} classes; at least 2 needed"),
            ));
        }
        let init = stored_f32(tensors, "init_score", Some(&[n_classes]))?;
        let (roots, nodes) = stored_trees(tensors, n_features)?;
        if roots.len() % n_classes != 0 {
            return Err(stored(
                "tree_root",
                format!("{} trees are not whole rounds of {n_classes}", roots.len()),
            ));
        }
        let n = vec_len(tensors, "node_feature")?;
        let values = stored_f32(tensors, "node_value", Some(&[n]))?;
        Ok(Self {
            n_features,
            n_classes,
            init: init.to_vec(),
            roots,
            nodes,
            values: values.to_vec(),
        })
    }
}

impl FitHead for GbdtParams {
    type Model = Gbdt;

    fn check(&self) -> Result<(), ClassicError> {
        GbdtParams::check(self)
    }

    fn fit(&self, x: &Features, y: &[usize], n_classes: usize) -> Result<Gbdt, ClassicError> {
        GbdtParams::fit(self, x, y, n_classes)
    }

    fn restore(
        &self,
        n_features: usize,
        n_classes: usize,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<Gbdt, ClassicError> {
        Gbdt::from_tensors(n_features, n_classes, tensors)
    }
}

impl ProbaHead for Gbdt {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn n_classes(&self) -> usize {
        self.n_classes
    }

    fn predict_proba(&self, x: &Features) -> Result<Vec<f32>, ClassicError> {
        Gbdt::predict_proba(self, x)
    }

    /// Tensors `init_score` (f32) `[classes]`, `tree_root` `[trees]`, `node_feature` /
    /// `node_left` / `node_right` (i32) and `node_threshold` / `node_value` (f32) `[nodes]`.
    fn to_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut t = tree_tensors(&self.roots, &self.nodes);
        t.insert(
            "node_value".into(),
            Tensor::f32(vec![self.values.len()], self.values.clone()),
        );
        t.insert(
            "init_score".into(),
            Tensor::f32(vec![self.n_classes], self.init.clone()),
        );
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forest::tests::{accuracy, blobs};
    use lmfuse_core::{CsrMatrix, TensorData};

    fn small() -> GbdtParams {
        GbdtParams {
            max_rounds: 60,
            min_samples_leaf: 5,
            seed: 3,
            ..Default::default()
        }
    }

    #[test]
    fn separates_noisy_blobs_and_rows_sum_to_one() {
        let (all, y_all) = blobs(1000, 8, 4, 1.0, 1);
        let (train, test): (Vec<usize>, Vec<usize>) = ((0..600).collect(), (600..1000).collect());
        let (xtr, xte, y) = (
            all.select_rows(&train),
            all.select_rows(&test),
            &y_all[..600],
        );
        let m = small().fit(&xtr, y, 4).unwrap();
        assert!(m.rounds() >= 1 && m.rounds() <= 60);
        assert_eq!(m.n_trees(), 4 * m.rounds());
        let p = m.predict_proba(&xte).unwrap();
        let acc = accuracy(&p, &y_all[600..], 4);
        assert!(acc > 0.85, "held-out accuracy {acc}");
        for r in p.chunks(4) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert!(r.iter().all(|v| v.is_finite()));
        }
    }

    /// The first round's trees against an exhaustive search on raw values: histogram
    /// subtraction, the split scan and the leaf values must give the same trees.
    #[test]
    fn first_round_matches_an_exhaustive_search() {
        let (x, y) = blobs(90, 3, 3, 0.7, 21);
        let Features::Dense(dm) = &x else {
            unreachable!()
        };
        let p = GbdtParams {
            max_rounds: 1,
            max_depth: 2,
            min_samples_leaf: 7,
            learning_rate: 0.5,
            l2: 0.3,
            colsample: 1.0,
            validation_fraction: 0.0,
            ..Default::default()
        };
        let m = p.fit(&x, &y, 3).unwrap();
        let (g, h): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (0..3)
            .map(|c| {
                let p = 1.0 / 3.0;
                let g = y.iter().map(|&t| p - (t == c) as u8 as f64).collect();
                (g, vec![p * (1.0 - p); 90])
            })
            .unzip();
        let score = |rows: &[usize], c: usize| {
            let gs: f64 = rows.iter().map(|&r| g[c][r]).sum();
            let hs: f64 = rows.iter().map(|&r| h[c][r]).sum();
            (gs * gs / (hs + p.l2), -p.learning_rate * gs / (hs + p.l2))
        };
        /// (Gain term, leaf value) of rows for class c.
        type Score<'a> = dyn Fn(&[usize], usize) -> (f64, f64) + 'a;
        // Raw score added by class c's tree to each row, grown exhaustively.
        fn grow(
            rows: Vec<usize>,
            depth: usize,
            c: usize,
            dm: &DenseMatrix,
            score: &Score<'_>,
            out: &mut [f64],
        ) {
            let mut best: Option<(f64, Vec<usize>, Vec<usize>)> = None;
            if depth < 2 && rows.len() >= 14 {
                for f in 0..3 {
                    let mut vals: Vec<f32> = rows.iter().map(|&r| dm.row(r)[f]).collect();
                    vals.sort_by(f32::total_cmp);
                    vals.dedup();
                    for w in vals.windows(2) {
                        let (l, r): (Vec<usize>, Vec<usize>) =
                            rows.iter().partition(|&&i| dm.row(i)[f] <= w[0]);
                        if l.len() < 7 || r.len() < 7 {
                            continue;
                        }
                        let gain = score(&l, c).0 + score(&r, c).0 - score(&rows, c).0;
                        if gain > 1e-12 && best.as_ref().is_none_or(|b| gain > b.0 + 1e-9) {
                            best = Some((gain, l, r));
                        }
                    }
                }
            }
            match best {
                Some((_, l, r)) => {
                    grow(l, depth + 1, c, dm, score, out);
                    grow(r, depth + 1, c, dm, score, out);
                }
                None => {
                    let v = score(&rows, c).1;
                    for r in rows {
                        out[r] = v;
                    }
                }
            }
        }
        assert_eq!(m.n_trees(), 3);
        // Some tree splits twice (7 nodes), so a subtracted histogram was used.
        assert!(m.n_nodes() > 3 * 5, "{} nodes", m.n_nodes());
        for c in 0..3 {
            let mut want = vec![0.0; 90];
            grow((0..90).collect(), 0, c, dm, &score, &mut want);
            for (i, w) in want.iter().enumerate() {
                let got = m.values[leaf_of(&m.nodes, m.roots[c], dm.row(i))] as f64;
                assert!((got - w).abs() < 1e-4, "class {c} row {i}: {got} vs {w}");
            }
        }
    }

    #[test]
    fn two_classes_and_no_holdout_work() {
        let (x, y) = blobs(300, 4, 2, 1.0, 9);
        let p = GbdtParams {
            validation_fraction: 0.0,
            max_rounds: 25,
            ..small()
        };
        let m = p.fit(&x, &y, 2).unwrap();
        assert_eq!(m.rounds(), 25);
        let proba = m.predict_proba(&x).unwrap();
        assert!(accuracy(&proba, &y, 2) > 0.9);
        // A class absent from the labels gets a tiny probability, not NaN.
        let m3 = p.fit(&x, &y, 3).unwrap();
        let p3 = m3.predict_proba(&x).unwrap();
        assert!(p3.iter().all(|v| v.is_finite()));
        assert!(p3.chunks(3).all(|r| r[2] < 1e-6));
    }

    #[test]
    fn early_stopping_keeps_the_best_round() {
        // Pure noise: the holdout loss stops improving early.
        let (x, _) = blobs(400, 4, 4, 0.0, 11);
        let y: Vec<usize> = (0..400).map(|i| (i * 7 + i / 3) % 4).collect();
        let m = GbdtParams {
            max_rounds: 200,
            ..small()
        }
        .fit(&x, &y, 4)
        .unwrap();
        assert!(m.rounds() < 50, "{} rounds", m.rounds());
    }

    #[test]
    fn same_seed_gives_the_same_model_on_any_thread_count() {
        let (x, y) = blobs(300, 6, 3, 1.0, 2);
        let fit_on = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| small().fit(&x, &y, 3).unwrap())
        };
        let (a, b) = (fit_on(1), fit_on(3));
        assert_eq!(a, b);
        let bits = |m: &Gbdt| -> Vec<u32> {
            m.predict_proba(&x)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(&a), bits(&b));
        let other = GbdtParams { seed: 4, ..small() }.fit(&x, &y, 3).unwrap();
        assert_ne!(a, other);
    }

    #[test]
    fn bins_split_at_quantiles_and_keep_the_raw_order() {
        let few = [3.0f32, 1.0, 2.0, 2.0, 1.0];
        assert_eq!(bin_thresholds(&few, 255), vec![1.5, 2.5]);
        let many: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let t = bin_thresholds(&many, 4);
        assert_eq!(t, vec![249.5, 499.5, 749.5]);
        let skewed: Vec<f32> = (0..100)
            .map(|i| if i < 90 { 0.0 } else { i as f32 })
            .collect();
        let t = bin_thresholds(&skewed, 4);
        assert!(t.windows(2).all(|w| w[0] < w[1]) && t.iter().all(|&v| v < 99.0));
    }

    #[test]
    fn params_are_checked() {
        let d = GbdtParams::default();
        let bad = [
            GbdtParams {
                learning_rate: 0.0,
                ..d
            },
            GbdtParams {
                learning_rate: f64::NAN,
                ..d
            },
            GbdtParams { max_rounds: 0, ..d },
            GbdtParams { max_depth: 0, ..d },
            GbdtParams {
                min_samples_leaf: 0,
                ..d
            },
            GbdtParams { l2: -1.0, ..d },
            GbdtParams { max_bins: 1, ..d },
            GbdtParams { max_bins: 256, ..d },
            GbdtParams {
                colsample: 0.0,
                ..d
            },
            GbdtParams {
                colsample: 1.5,
                ..d
            },
            GbdtParams {
                validation_fraction: 1.0,
                ..d
            },
            GbdtParams {
                validation_fraction: -0.1,
                ..d
            },
            GbdtParams {
                early_stopping_rounds: 0,
                ..d
            },
        ];
        for p in bad {
            assert!(
                matches!(p.check(), Err(ClassicError::InvalidParam { .. })),
                "{p:?}"
            );
        }
        assert!(d.check().is_ok());
    }

    #[test]
    fn sparse_input_and_bad_rows_are_refused() {
        let sparse = Features::Sparse(
            CsrMatrix::new(2, 5, vec![0, 1, 2], vec![0, 3], vec![1.0, 2.0]).unwrap(),
        );
        assert_eq!(
            small().fit(&sparse, &[0, 1], 2).unwrap_err(),
            ClassicError::NeedsDense {
                head: "gbdt",
                cols: 5
            }
        );
        let (x, y) = blobs(60, 3, 3, 1.0, 4);
        let m = small().fit(&x, &y, 3).unwrap();
        assert!(matches!(
            m.predict_proba(&sparse),
            Err(ClassicError::NeedsDense { head: "gbdt", .. })
        ));
        let narrow = Features::Dense(DenseMatrix::new(1, 2, vec![0.0; 2]).unwrap());
        assert!(matches!(
            m.predict_proba(&narrow),
            Err(ClassicError::Width { .. })
        ));
        let inf = Features::Dense(DenseMatrix::new(1, 3, vec![0.0, 0.0, f32::INFINITY]).unwrap());
        assert_eq!(
            m.predict_proba(&inf).unwrap_err(),
            ClassicError::NotFinite { row: 0, col: 2 }
        );
    }

    #[test]
    fn tensors_round_trip_and_corruption_is_an_error() {
        let (x, y) = blobs(300, 5, 3, 1.0, 5);
        let params = small();
        let m = params.fit(&x, &y, 3).unwrap();
        let t = m.to_tensors();
        let back = params.restore(5, 3, &t).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            back.predict_proba(&x).unwrap(),
            m.predict_proba(&x).unwrap()
        );

        let split = m.nodes.iter().position(|n| n.feature >= 0).unwrap();
        let set_i32 = |name: &str, i: usize, v: i32| {
            let mut t = t.clone();
            if let TensorData::I32(d) = &mut t.get_mut(name).unwrap().data {
                d[i] = v;
            }
            params.restore(5, 3, &t)
        };
        let n = m.nodes.len() as i32;
        for (name, v) in [
            ("node_left", split as i32),
            ("node_left", 0),
            ("node_right", n),
            ("node_right", -1),
            ("node_feature", 5),
            ("node_feature", -2),
        ] {
            assert!(
                matches!(set_i32(name, split, v), Err(ClassicError::Stored { .. })),
                "{name} = {v}"
            );
        }
        let mut bad = t.clone();
        if let TensorData::I32(d) = &mut bad.get_mut("tree_root").unwrap().data {
            d[1] = 0;
        }
        assert!(params.restore(5, 3, &bad).is_err());
        let mut bad = t.clone();
        bad.insert("node_value".into(), Tensor::f32(vec![1], vec![f32::NAN]));
        assert!(params.restore(5, 3, &bad).is_err());
        let mut bad = t.clone();
        bad.insert("init_score".into(), Tensor::i32(vec![3], vec![0; 3]));
        assert!(params.restore(5, 3, &bad).is_err());
        let mut bad = t.clone();
        let roots = m.roots.len() - 1;
        bad.insert(
            "tree_root".into(),
            Tensor::i32(
                vec![roots],
                m.roots[..roots].iter().map(|&r| r as i32).collect(),
            ),
        );
        assert!(params.restore(5, 3, &bad).is_err());
        for name in t.keys() {
            let mut missing = t.clone();
            missing.remove(name);
            assert!(matches!(
                params.restore(5, 3, &missing),
                Err(ClassicError::Stored { .. })
            ));
        }
        assert!(params.restore(5, 1, &t).is_err());
        assert!(params.restore(4, 3, &t).is_err() || m.nodes.iter().all(|n| n.feature < 4));
    }

    /// Manual timing on embedding-sized data: `cargo test --release -p lmfuse-classic --
    /// --ignored --nocapture gbdt::tests::timing_150_classes` (`GBDT_ROUNDS=n` caps the
    /// rounds, 300 by default). The rows are 150 noisy blobs in 384 dimensions.
    #[test]
    #[ignore]
    fn timing_150_classes() {
        let (all, y) = blobs(15_000, 384, 150, 0.35, 42);
        let train: Vec<usize> = (0..13_500).collect();
        let test: Vec<usize> = (13_500..15_000).collect();
        let (xtr, xte) = (all.select_rows(&train), all.select_rows(&test));
        let max_rounds = std::env::var("GBDT_ROUNDS").map_or(300, |v| v.parse().unwrap());
        let t0 = std::time::Instant::now();
        let m = GbdtParams {
            max_rounds,
            ..Default::default()
        }
        .fit(&xtr, &y[..13_500], 150)
        .unwrap();
        let fit = t0.elapsed();
        let t1 = std::time::Instant::now();
        let p = m.predict_proba(&xte).unwrap();
        let predict = t1.elapsed();
        let bytes: usize = m.to_tensors().values().map(|t| t.len() * 4).sum();
        println!(
            "gbdt: fit {fit:.2?} ({} rounds, {:.2?} per round), predict 1500 rows {predict:.2?}, \
             {} nodes, {:.1} MB stored, held-out accuracy {:.3}",
            m.rounds(),
            fit / m.rounds().max(1) as u32,
            m.n_nodes(),
            bytes as f64 / 1e6,
            accuracy(&p, &y[13_500..], 150)
        );
    }
}
