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
//! Sparse rows (TF-IDF) are never written out in full. Features that hold one value over the
//! training rows are dropped; a feature non-zero in fewer than a quarter of the rows is stored
//! as the codes of those rows only, with 0 in a bin of its own. Its histogram (a slot per bin,
//! not 256) is filled from the node's non-zero entries, and 0's bin gets the node's totals
//! minus the other bins. So memory and time follow the non-zero values, not rows × vocabulary,
//! and dense and sparse rows of equal values give the same model (the storage of a feature
//! depends on its values only). Features stored densely are binned and summed as before.
//!
//! Our own code rather than a crate: lightgbm3 needs cmake ≥ 3.28 and libclang, which the build
//! machine lacks, and linfa-ensemble needs ndarray 0.16 and has no boosting. Our own code keeps
//! one binary, stores the model as tensors of our bundle format, and makes a seed give the same
//! model on any number of threads: each tree draws its features from a generator derived from
//! the seed, the round and the class, and every float sum runs in a fixed order.

use crate::forest::tree_tensors;
use crate::forest::{leaf_of, midpoint, partition, stored, stored_trees, stream_rng};
use crate::forest::{vec_len, Node};
use crate::tree_data::{Rows, SparseColumns};
use crate::{check_input, check_training_data, stored_f32, ClassicError, FitHead, ProbaHead};
use lmfuse_core::{Features, Tensor};
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

    /// Fits on dense or sparse features `x` with class indices `y` in `0..n_classes`.
    pub fn fit(&self, x: &Features, y: &[usize], n_classes: usize) -> Result<Gbdt, ClassicError> {
        self.check()?;
        check_training_data(x, y, n_classes)?;
        let (d, k) = (x.cols(), n_classes);
        if x.rows() > MAX_ROWS || d > i32::MAX as usize {
            return Err(ClassicError::InvalidParam {
                name: "rows",
                value: x.rows().to_string(),
                reason: "at most 2^24 training rows (histogram row counts are f32) and 2^31 \
                         columns",
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
        let binned = Binned::new(x, &train, self.max_bins);
        let rows = Rows::new(x);

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
        // Trees draw from the features that vary over the training rows (all of them for
        // embeddings); the others can never split.
        let usable = binned.feats.len();
        let n_cols = ((self.colsample * usable as f64).round() as usize)
            .max(1)
            .min(usable);
        for round in 0..self.max_rounds {
            gradients(&f_train, &y_train, k, &mut grad);
            let grad = &grad;
            let grown: Vec<Grown> = (0..k)
                .into_par_iter()
                .map(|c| {
                    let mut rng = stream_rng(self.seed, (round * k + c) as u64);
                    let mut feats: Vec<u32> = (0..usable as u32).collect();
                    for i in 0..n_cols {
                        let j = i + rng.below(usable - i);
                        feats.swap(i, j);
                    }
                    feats.truncate(n_cols);
                    feats.sort_unstable();
                    let job = TreeJob::new(&binned, self, &grad[c * nt..(c + 1) * nt], &feats);
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
                    let row = rows.row(i);
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

/// The training rows binned. The features that vary over the rows are kept, in column order.
/// Each is stored densely (a code per row) or, when fewer than a quarter of the rows hold a
/// non-zero value, sparsely (the codes of those rows; every other row holds 0's code), so
/// memory follows the non-zero values. Feature `f`'s code `b` means
/// `thresholds[b - 1] < x <= thresholds[b]` (open-ended at the ends).
struct Binned {
    n: usize,
    feats: Vec<BinnedFeature>,
    /// Codes of the densely stored features, `n` each.
    dense: Vec<u8>,
    /// Row `r`'s sparsely stored codes are entries `row_ptr[r]..row_ptr[r + 1]` of
    /// `row_feat` (sparse numbers, ascending) and `row_code`.
    row_ptr: Vec<usize>,
    row_feat: Vec<u32>,
    row_code: Vec<u8>,
    /// Sparsely stored features.
    n_sparse: usize,
}

/// One kept feature.
struct BinnedFeature {
    /// Its matrix column.
    column: u32,
    thresholds: Vec<f32>,
    store: Store,
}

/// Where a feature's codes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    /// Codes `dense[at · n..(at + 1) · n]`.
    Dense { at: u32 },
    /// Sparse number `at`; rows without an entry hold code `zero`.
    Sparse { at: u32, zero: u8 },
}

/// One column binned (see [`bin_column`]).
struct BinnedColumn {
    thresholds: Vec<f32>,
    codes: Codes,
}

enum Codes {
    /// A code per row.
    Dense(Vec<u8>),
    /// Codes of the rows holding a non-zero value (ascending rows), and 0's code.
    Sparse {
        rows: Vec<u32>,
        codes: Vec<u8>,
        zero: u8,
    },
}

/// Bins one column of `n` rows from its non-zero values `vals` at `rows` (ascending); `None`
/// when it holds one value only. A column stored densely is binned over all its values as
/// [`bin_thresholds`] does; a sparse one by [`sparse_thresholds`], 0 in a bin of its own.
fn bin_column(rows: &[u32], vals: &[f32], n: usize, max_bins: usize) -> Option<BinnedColumn> {
    let zeros = n - vals.len();
    let mut sorted = vals.to_vec();
    sorted.sort_unstable_by(f32::total_cmp);
    let constant = match (sorted.first(), sorted.last()) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => zeros == 0 && a == b,
    };
    if constant {
        return None;
    }
    let code = |thr: &[f32], v: f32| thr.partition_point(|&t| t < v) as u8;
    if vals.len() * 4 >= n {
        // All values ascending: the negatives, the zeros, the positives.
        let neg = sorted.partition_point(|&v| v < 0.0);
        let mut all = Vec::with_capacity(n);
        all.extend_from_slice(&sorted[..neg]);
        all.resize(neg + zeros, 0.0);
        all.extend_from_slice(&sorted[neg..]);
        let thresholds = sorted_thresholds(&all, max_bins);
        let mut codes = vec![code(&thresholds, 0.0); n];
        for (&r, &v) in rows.iter().zip(vals) {
            codes[r as usize] = code(&thresholds, v);
        }
        return Some(BinnedColumn {
            thresholds,
            codes: Codes::Dense(codes),
        });
    }
    let thresholds = sparse_thresholds(&sorted, zeros, max_bins);
    let codes = vals.iter().map(|&v| code(&thresholds, v)).collect();
    let zero = code(&thresholds, 0.0);
    Some(BinnedColumn {
        thresholds,
        codes: Codes::Sparse {
            rows: rows.to_vec(),
            codes,
            zero,
        },
    })
}

impl Binned {
    /// Bins rows `rows` of `x` into at most `max_bins` bins per feature.
    fn new(x: &Features, rows: &[usize], max_bins: usize) -> Self {
        let n = rows.len();
        let columns: Vec<(u32, BinnedColumn)> = match x {
            Features::Dense(m) => (0..m.cols())
                .into_par_iter()
                .filter_map(|j| {
                    let (mut at, mut vals) = (Vec::new(), Vec::new());
                    for (i, &r) in rows.iter().enumerate() {
                        // +0.0 turns -0.0 into 0.0.
                        let v = m.row(r)[j] + 0.0;
                        if v != 0.0 {
                            at.push(i as u32);
                            vals.push(v);
                        }
                    }
                    bin_column(&at, &vals, n, max_bins).map(|b| (j as u32, b))
                })
                .collect(),
            Features::Sparse(m) => {
                let s = SparseColumns::new(m, rows);
                (0..s.columns.len())
                    .into_par_iter()
                    .filter_map(|f| {
                        let (at, vals) = s.column(f);
                        bin_column(at, vals, n, max_bins).map(|b| (s.columns[f], b))
                    })
                    .collect()
            }
        };
        Self::assemble(n, columns)
    }

    /// Lays out the binned columns (in column order).
    fn assemble(n: usize, columns: Vec<(u32, BinnedColumn)>) -> Self {
        let mut b = Binned {
            n,
            feats: Vec::with_capacity(columns.len()),
            dense: Vec::new(),
            row_ptr: vec![0; n + 1],
            row_feat: Vec::new(),
            row_code: Vec::new(),
            n_sparse: 0,
        };
        let mut sparse = Vec::new();
        for (column, c) in columns {
            let store = match c.codes {
                Codes::Dense(codes) => {
                    b.dense.extend_from_slice(&codes);
                    Store::Dense {
                        at: (b.dense.len() / n.max(1) - 1) as u32,
                    }
                }
                Codes::Sparse { rows, codes, zero } => {
                    for &r in &rows {
                        b.row_ptr[r as usize + 1] += 1;
                    }
                    sparse.push((rows, codes));
                    Store::Sparse {
                        at: (sparse.len() - 1) as u32,
                        zero,
                    }
                }
            };
            b.feats.push(BinnedFeature {
                column,
                thresholds: c.thresholds,
                store,
            });
        }
        for r in 0..n {
            b.row_ptr[r + 1] += b.row_ptr[r];
        }
        // Counting sort by row; features are visited in order, so each row's entries come
        // out ascending by sparse number.
        let mut next = b.row_ptr.clone();
        b.row_feat = vec![0; b.row_ptr[n]];
        b.row_code = vec![0; b.row_ptr[n]];
        for (at, (rows, codes)) in sparse.iter().enumerate() {
            for (&r, &c) in rows.iter().zip(codes) {
                let p = &mut next[r as usize];
                b.row_feat[*p] = at as u32;
                b.row_code[*p] = c;
                *p += 1;
            }
        }
        b.n_sparse = sparse.len();
        b
    }

    /// The densely stored codes number `at`.
    fn dense_codes(&self, at: u32) -> &[u8] {
        &self.dense[at as usize * self.n..(at as usize + 1) * self.n]
    }

    /// Row `r`'s code of kept feature `f`.
    fn code(&self, f: usize, r: u32) -> u8 {
        match self.feats[f].store {
            Store::Dense { at } => self.dense_codes(at)[r as usize],
            Store::Sparse { at, zero } => {
                let (a, b) = (self.row_ptr[r as usize], self.row_ptr[r as usize + 1]);
                match self.row_feat[a..b].binary_search(&at) {
                    Ok(p) => self.row_code[a + p],
                    Err(_) => zero,
                }
            }
        }
    }
}

/// At most `max_bins - 1` ascending thresholds splitting `values` into near-equal-count bins
/// (see [`sorted_thresholds`]).
#[cfg(test)]
fn bin_thresholds(values: &[f32], max_bins: usize) -> Vec<f32> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f32::total_cmp);
    sorted_thresholds(&sorted, max_bins)
}

/// At most `max_bins - 1` ascending thresholds splitting the ascending `sorted` into
/// near-equal-count bins: midpoints between neighbouring distinct values when there are few
/// enough, else between the values at the quantiles. No threshold reaches the largest value.
fn sorted_thresholds(sorted: &[f32], max_bins: usize) -> Vec<f32> {
    if max_bins == 0 || sorted.is_empty() {
        return Vec::new();
    }
    let mut distinct = sorted.to_vec();
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

/// Thresholds of a mostly-zero feature from its ascending non-zero values `sorted` and its
/// `zeros` zero rows: every distinct value its own bin when they fit in `max_bins`; else 0
/// in a bin of its own and the non-zero values in quantile bins, shared by the negative and
/// the positive ones in proportion to their counts. (With `max_bins` 2 and values of both
/// signs, there is no room for that: all values are binned as [`sorted_thresholds`] does.)
fn sparse_thresholds(sorted: &[f32], zeros: usize, max_bins: usize) -> Vec<f32> {
    let neg = sorted.partition_point(|&v| v < 0.0);
    let (negs, poss) = sorted.split_at(neg);
    let mut distinct = Vec::with_capacity(sorted.len() + 1);
    distinct.extend_from_slice(negs);
    if zeros > 0 {
        distinct.push(0.0);
    }
    distinct.extend_from_slice(poss);
    distinct.dedup();
    let budget = max_bins - 1;
    let both = !negs.is_empty() && !poss.is_empty();
    if distinct.len() <= max_bins || zeros == 0 || (both && budget < 2) {
        let mut all = negs.to_vec();
        all.resize(neg + zeros, 0.0);
        all.extend_from_slice(poss);
        return sorted_thresholds(&all, max_bins);
    }
    let for_negs = if poss.is_empty() {
        budget
    } else if negs.is_empty() {
        0
    } else {
        let share = budget as f64 * negs.len() as f64 / sorted.len() as f64;
        (share.round() as usize).clamp(1, budget - 1)
    };
    let mut thr = sorted_thresholds(negs, for_negs);
    if let Some(&last) = negs.last() {
        thr.push(midpoint(last, 0.0));
    }
    if let Some(&first) = poss.first() {
        thr.push(midpoint(0.0, first));
    }
    thr.extend(sorted_thresholds(poss, budget - for_negs));
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

/// Adds row sums `v` to `slot`.
#[inline(always)]
fn add_slot(slot: &mut Bin, v: &Bin) {
    *slot = [
        slot[0] + v[0],
        slot[1] + v[1],
        slot[2] + v[2],
        slot[3] + v[3],
    ];
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
    /// The best boundary `(bin, num, den)` of one feature's histogram (`NB` slots for a
    /// densely stored feature, one per bin for a sparse one): rows with codes `<= bin` go
    /// left. Candidates run from the first boundary with `min_samples_leaf` rows
    /// and the least hessian on the left to the last with both on the right. A split's score
    /// `gl²/(hl + l2) + gr²/(hr + l2)` is kept as the fraction `num / den` and compared by
    /// cross-multiplying, so the scan never divides; it must beat the parent's `g²/(h + l2)`.
    /// An empty bin repeats the previous boundary, which keeps the tie.
    #[inline(always)]
    fn scan(&self, slots: &[Bin]) -> Option<(usize, f64, f64)> {
        let (g, h, l2) = (self.g, self.h, self.l2);
        let w = slots.len();
        if w < 2 {
            return None;
        }
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
            if b == w - 1 {
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
            if b == w - 1 {
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
    /// The tree's features (indices into `data.feats`), ascending.
    feats: &'a [u32],
    /// Histogram block of each of `feats`: (offset, width). The densely stored features'
    /// blocks come first, `NB` slots each, in `dense` order; the sparse ones' follow, a slot
    /// per bin.
    blocks: Vec<(usize, usize)>,
    /// The densely stored features' code columns (`Store::Dense::at`), in `feats` order.
    dense: Vec<u32>,
    /// Each sparsely stored feature's block offset, by sparse number (`NONE` when the tree
    /// does not use it).
    sparse_at: Vec<usize>,
    /// The tree's sparse blocks as (offset, width, code of 0).
    sparse: Vec<(usize, usize, u8)>,
    /// Histogram length.
    len: usize,
}

/// No block.
const NONE: usize = usize::MAX;

impl<'a> TreeJob<'a> {
    fn new(
        data: &'a Binned,
        params: &'a GbdtParams,
        grad: &'a [[f32; 2]],
        feats: &'a [u32],
    ) -> Self {
        let dense: Vec<u32> = feats
            .iter()
            .filter_map(|&f| match data.feats[f as usize].store {
                Store::Dense { at } => Some(at),
                Store::Sparse { .. } => None,
            })
            .collect();
        let mut job = TreeJob {
            data,
            params,
            grad,
            feats,
            blocks: Vec::with_capacity(feats.len()),
            sparse_at: Vec::new(),
            sparse: Vec::new(),
            len: dense.len() * NB,
            dense,
        };
        if data.n_sparse > 0 {
            job.sparse_at = vec![NONE; data.n_sparse];
        }
        let mut next_dense = 0;
        for &f in feats {
            let feat = &data.feats[f as usize];
            match feat.store {
                Store::Dense { .. } => {
                    job.blocks.push((next_dense * NB, NB));
                    next_dense += 1;
                }
                Store::Sparse { at, zero } => {
                    let width = feat.thresholds.len() + 1;
                    job.blocks.push((job.len, width));
                    job.sparse_at[at as usize] = job.len;
                    job.sparse.push((job.len, width, zero));
                    job.len += width;
                }
            }
        }
        job
    }

    fn gh(&self, r: u32) -> [f32; 2] {
        self.grad[r as usize]
    }

    /// Histograms of `rows` (ascending) for every feature of the tree. Densely stored
    /// features go in pairs: one pass over the rows fills both, and each column is read
    /// forwards. Sparse ones are filled from the rows' entries (see [`Self::sparse_hist`]).
    fn build_hist(&self, rows: &[u32], scratch: &mut Scratch) -> Vec<Bin> {
        let mut hist = scratch.hists.pop().unwrap_or_default();
        hist.clear();
        hist.resize(self.len, [0.0; 4]);
        let n = self.data.n;
        let all = rows.len() == n;
        scratch.gh.clear();
        scratch.gh.extend(rows.iter().map(|&r| {
            let [g, h] = self.gh(r);
            [g, h, 1.0, 0.0]
        }));
        let gh = &scratch.gh;
        let (dense, sparse) = hist.split_at_mut(self.dense.len() * NB);
        let col = |at: u32| self.data.dense_codes(at);
        dense
            .par_chunks_mut(2 * NB)
            .zip(self.dense.par_chunks(2))
            .with_min_len(4)
            .for_each(|(slots, fs)| {
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
        if !self.sparse.is_empty() {
            self.sparse_hist(rows, gh, sparse);
        }
        hist
    }

    /// The sparsely stored features' blocks (`slots`, which start at offset
    /// `dense.len() · NB`): the rows' non-zero entries are added to their bins, then each
    /// block's bin of 0 gets what the rows' totals leave, the sums of the rows holding 0.
    fn sparse_hist(&self, rows: &[u32], gh: &[Bin], slots: &mut [Bin]) {
        let base = self.dense.len() * NB;
        let d = self.data;
        let mut total = [0.0f64; 3];
        for (&r, v) in rows.iter().zip(gh) {
            for (t, &x) in total.iter_mut().zip(v) {
                *t += x as f64;
            }
            for e in d.row_ptr[r as usize]..d.row_ptr[r as usize + 1] {
                let at = self.sparse_at[d.row_feat[e] as usize];
                if at != NONE {
                    add_slot(&mut slots[at - base + d.row_code[e] as usize], v);
                }
            }
        }
        for &(at, width, zero) in &self.sparse {
            let block = &mut slots[at - base..at - base + width];
            let mut rest = total;
            for s in block.iter() {
                for (t, &x) in rest.iter_mut().zip(s) {
                    *t -= x as f64;
                }
            }
            // Row counts are exact: no zero rows means nothing to add.
            if rest[2] > 0.0 {
                let z = &mut block[zero as usize];
                for (zl, r) in z.iter_mut().zip(rest) {
                    *zl = (*zl as f64 + r) as f32;
                }
            }
        }
    }

    /// The split of largest positive gain, or `None`; of equal gains, the feature first in
    /// column order.
    fn best_split(&self, hist: &[Bin], g: f64, h: f64, n: u32) -> Option<Split> {
        let p = self.params;
        let t = Totals {
            g,
            h,
            n: n as f32,
            l2: p.l2,
            msl: p.min_samples_leaf as f32,
        };
        let per_feature: Vec<Option<Split>> = self
            .blocks
            .par_iter()
            .enumerate()
            .with_min_len(16)
            .map(|(fi, &(at, width))| {
                let slots = &hist[at..at + width];
                t.scan(slots).and_then(|found| t.split(slots, fi, found))
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
            // A stable partition keeps every node's rows ascending, so histograms read the
            // feature columns forwards.
            let goes_left = |r: u32| self.data.code(f, r) as usize <= s.bin;
            let i = partition(&mut rows[t.start..t.end], &mut scratch.right, goes_left);
            debug_assert_eq!(i, s.n_left as usize);
            let mid = t.start + i;
            let (left, right) = (tree.nodes.len(), tree.nodes.len() + 1);
            tree.nodes.extend([Node::LEAF; 2]);
            tree.values.extend([0.0; 2]);
            let feat = &self.data.feats[f];
            tree.nodes[t.node] = Node {
                feature: feat.column as i32,
                threshold: feat.thresholds[s.bin],
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
    fn raw_scores(&self, rows: &Rows, n: usize) -> Vec<f64> {
        let k = self.n_classes;
        let mut out = vec![0.0f64; n * k];
        out.par_chunks_mut(k)
            .enumerate()
            .with_min_len(16)
            .for_each(|(i, s)| {
                let row = rows.row(i);
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
        check_input(x, self.n_features)?;
        let mut z = self.raw_scores(&Rows::new(x), x.rows());
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
    use crate::tree_data::Row;
    use lmfuse_core::{CsrMatrix, DenseMatrix, TensorData};

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
                let got = m.values[leaf_of(&m.nodes, m.roots[c], Row::Dense(dm.row(i)))] as f64;
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

    /// A hash of every tensor's name and bits.
    fn fingerprint(m: &Gbdt) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |v: u64| h = (h ^ v).wrapping_mul(0x100_0000_01b3);
        for (name, t) in m.to_tensors() {
            name.bytes().for_each(|b| eat(b as u64));
            match &t.data {
                TensorData::F32(v) => v.iter().for_each(|x| eat(x.to_bits() as u64)),
                TensorData::I32(v) => v.iter().for_each(|&x| eat(x as u32 as u64)),
            }
        }
        h
    }

    /// Dense rows whose features all hold non-zero values in at least a quarter of the rows
    /// are binned and grown exactly as before sparse input was supported: the fingerprint
    /// was taken from the model of the earlier code.
    #[test]
    fn dense_fits_are_as_before_sparse_support() {
        let (x, y) = blobs(400, 6, 3, 1.0, 17);
        let Features::Dense(m) = &x else {
            unreachable!()
        };
        // Columns 0 and 1 clipped at zero: about half their values are 0.
        let data: Vec<f32> = m
            .as_slice()
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % 6 < 2 { v.max(0.0) } else { v })
            .collect();
        let x = Features::Dense(DenseMatrix::new(400, 6, data).unwrap());
        let p = GbdtParams {
            max_rounds: 30,
            min_samples_leaf: 5,
            seed: 5,
            ..Default::default()
        };
        let model = p.fit(&x, &y, 3).unwrap();
        assert_eq!((model.rounds(), model.n_nodes()), (30, 1120));
        assert_eq!(fingerprint(&model), 0x8cda_e0cc_5e17_b256);
    }

    #[test]
    fn sparse_and_dense_rows_of_equal_values_grow_the_same_model() {
        let (dense, sparse, y) = crate::test_data::mostly_zero(400, 12, 4);
        for params in [
            small(),
            GbdtParams {
                max_bins: 8,
                colsample: 1.0,
                ..small()
            },
            GbdtParams {
                max_bins: 2,
                validation_fraction: 0.0,
                max_rounds: 10,
                ..small()
            },
        ] {
            let a = params.fit(&dense, &y, 3).unwrap();
            let b = params.fit(&sparse, &y, 3).unwrap();
            assert_eq!(a, b, "{params:?}");
            let bits = |p: Vec<f32>| p.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let p = bits(a.predict_proba(&dense).unwrap());
            assert_eq!(p, bits(a.predict_proba(&sparse).unwrap()));
            assert_eq!(p, bits(b.predict_proba(&dense).unwrap()));
        }
        // Both kinds of storage were used.
        let Features::Dense(m) = &dense else {
            unreachable!()
        };
        let rows: Vec<usize> = (0..400).collect();
        let binned = Binned::new(&dense, &rows, 255);
        let stores: Vec<Store> = binned.feats.iter().map(|f| f.store).collect();
        assert!(matches!(stores[0], Store::Dense { .. }), "{stores:?}");
        assert!(matches!(stores[11], Store::Sparse { .. }), "{stores:?}");
        // Every row's code of every feature puts its value on the right side of the
        // thresholds, for both storages.
        for (f, feat) in binned.feats.iter().enumerate() {
            for r in 0..400 {
                let v = m.row(r)[feat.column as usize];
                let b = binned.code(f, r as u32) as usize;
                let t = &feat.thresholds;
                assert!(b == 0 || t[b - 1] < v, "feature {f} row {r}");
                assert!(b == t.len() || v <= t[b], "feature {f} row {r}");
            }
        }
    }

    #[test]
    fn sparse_bins_give_zero_its_own_bin() {
        // 990 zeros, values of both signs, more distinct values than bins.
        let vals: Vec<f32> = (1..=10)
            .flat_map(|i| [i as f32, -(i as f32) / 2.0])
            .collect();
        let mut sorted = vals.clone();
        sorted.sort_by(f32::total_cmp);
        let t = sparse_thresholds(&sorted, 990, 8);
        assert!(t.len() <= 7 && t.windows(2).all(|w| w[0] < w[1]), "{t:?}");
        let code = |v: f32| t.partition_point(|&x| x < v);
        let zero = code(0.0);
        assert!(sorted.iter().all(|&v| code(v) != zero), "{t:?}");
        // Few distinct values: each its own bin.
        assert_eq!(sparse_thresholds(&[-1.0, 2.0, 2.0], 50, 8), vec![-0.5, 1.0]);
        // Room for 0 alone needs three bins with both signs; with two, all values share.
        assert_eq!(
            sparse_thresholds(&sorted, 990, 2),
            sorted_thresholds(&[&sorted[..10], &[0.0; 990][..], &sorted[10..]].concat(), 2)
        );
    }

    #[test]
    fn separates_sparse_documents_over_a_large_vocabulary() {
        let (x, y) = crate::test_data::documents(900, 200_000, 5);
        let train: Vec<usize> = (0..600).collect();
        let test: Vec<usize> = (600..900).collect();
        let m = GbdtParams {
            min_samples_leaf: 3,
            ..small()
        }
        .fit(&x.select_rows(&train), &y[..600], 3)
        .unwrap();
        let acc = accuracy(
            &m.predict_proba(&x.select_rows(&test)).unwrap(),
            &y[600..],
            3,
        );
        assert!(acc > 0.9, "held-out accuracy {acc}");
    }

    #[test]
    fn bad_rows_are_refused() {
        let (x, y) = blobs(60, 3, 3, 1.0, 4);
        let m = small().fit(&x, &y, 3).unwrap();
        let wide = Features::Sparse(
            CsrMatrix::new(2, 5, vec![0, 1, 2], vec![0, 3], vec![1.0, 2.0]).unwrap(),
        );
        assert!(matches!(
            m.predict_proba(&wide),
            Err(ClassicError::Width {
                expected: 3,
                got: 5
            })
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
