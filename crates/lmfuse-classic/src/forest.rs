//! Random forest classifier: CART trees on Gini impurity, each grown on a bootstrap sample with
//! a random subset of features tried at every split; `predict_proba` is the mean over the trees
//! of the leaf's class distribution, as scikit-learn's `RandomForestClassifier`.
//!
//! Our own code rather than a crate: linfa-ensemble needs ndarray 0.16 and only takes dense
//! ndarray input, and lightgbm3 needs cmake ≥ 3.28 and libclang, which the build machine lacks.
//! Our own code keeps one binary, stores the model as tensors of our bundle format, and makes a
//! seed give the same forest on any number of threads: every tree draws from its own generator,
//! derived from the seed and the tree's index, and no float sum depends on scheduling.
//!
//! Split search sorts the node's samples by each candidate feature and sweeps the sorted order
//! with running class counts; the running sums of squared counts on both sides update in O(1)
//! per position, so a split costs O(m log m) for m samples whatever the class count.
//!
//! Dense and sparse (TF-IDF) rows give the same forest for the same values and seed. Sparse
//! rows are never written out in full: training keeps each column's non-zero entries (see
//! [`crate::tree_data`]), a node's candidate features are those that vary over its rows
//! (found from the rows' entries), and a sweep moves the node's zero rows as one group, so
//! time and memory follow the non-zero entries, not rows × vocabulary.

use crate::tree_data::{Row, Rows, SparseColumns};
use crate::{check_input, check_training_data, stored_f32, stored_i32, ClassicError};
use crate::{FitHead, ProbaHead};
use lmfuse_core::{Features, SeededRng, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many features a split tries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MaxFeatures {
    /// `⌊√d⌋`, at least 1 (scikit-learn's default for classifiers).
    #[default]
    Sqrt,
    /// `⌊log₂ d⌋`, at least 1.
    Log2,
    /// All `d` features (plain bagging).
    All,
    /// This many (≥ 1), at most `d`.
    Count(usize),
    /// This share of `d` in `(0, 1]`, rounded down, at least 1.
    Fraction(f64),
}

impl MaxFeatures {
    /// The number of features tried per split for `d` features.
    pub fn resolve(self, d: usize) -> usize {
        let m = match self {
            MaxFeatures::Sqrt => (d as f64).sqrt() as usize,
            MaxFeatures::Log2 => (d as f64).log2() as usize,
            MaxFeatures::All => d,
            MaxFeatures::Count(c) => c,
            MaxFeatures::Fraction(f) => (f * d as f64) as usize,
        };
        m.clamp(1, d.max(1))
    }
}

/// Hyperparameters of [`RandomForest`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RandomForestParams {
    /// Trees (≥ 1).
    pub n_trees: usize,
    /// Features tried per split.
    pub max_features: MaxFeatures,
    /// Fewest distinct training rows in a leaf (≥ 1).
    pub min_samples_leaf: usize,
    /// Deepest a leaf may lie (root at depth 0; ≥ 1), or `None` to grow until leaves are pure.
    pub max_depth: Option<usize>,
    /// Grow each tree on a bootstrap sample (rows drawn with replacement) rather than all rows.
    pub bootstrap: bool,
    /// Seed of the bootstrap samples and feature draws.
    pub seed: u64,
}

impl Default for RandomForestParams {
    fn default() -> Self {
        Self {
            n_trees: 100,
            max_features: MaxFeatures::Sqrt,
            min_samples_leaf: 1,
            max_depth: None,
            bootstrap: true,
            seed: 0,
        }
    }
}

/// A node of a stored tree: `feature < 0` marks a leaf; rows with `x[feature] <= threshold` go
/// to `left`. Children are absolute indices into the forest's node array.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Node {
    pub(crate) feature: i32,
    pub(crate) threshold: f32,
    pub(crate) left: u32,
    pub(crate) right: u32,
}

impl Node {
    pub(crate) const LEAF: Node = Node {
        feature: -1,
        threshold: 0.0,
        left: 0,
        right: 0,
    };
}

/// The leaf that `row` reaches from node `root`; links are checked to point forward within the
/// tree, so the walk ends.
#[inline]
pub(crate) fn leaf_of(nodes: &[Node], root: u32, row: Row) -> usize {
    let mut i = root as usize;
    loop {
        let n = nodes[i];
        if n.feature < 0 {
            return i;
        }
        i = if row.get(n.feature as usize) <= n.threshold {
            n.left
        } else {
            n.right
        } as usize;
    }
}

/// An independent generator for `stream` (a tree, a split) under `seed`.
pub(crate) fn stream_rng(seed: u64, stream: u64) -> SeededRng {
    // Hash the stream index first: SplitMix states of seeds a fixed step apart would otherwise
    // give shifted copies of one sequence.
    let mut h = SeededRng::new(stream ^ 0x6A09_E667_F3BC_C909);
    SeededRng::new(seed ^ h.next_u64())
}

/// A fitted random forest.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomForest {
    n_features: usize,
    n_classes: usize,
    /// Index of each tree's root in `nodes`; tree `t` spans `roots[t]..roots[t + 1]`.
    roots: Vec<u32>,
    nodes: Vec<Node>,
    /// Node `i`'s class distribution is entries `leaf_ptr[i]..leaf_ptr[i + 1]` (empty for
    /// internal nodes).
    leaf_ptr: Vec<u32>,
    leaf_class: Vec<u32>,
    leaf_prob: Vec<f32>,
}

impl RandomForestParams {
    /// Validates the hyperparameters.
    pub fn check(&self) -> Result<(), ClassicError> {
        let bad = |name, value: String, reason| {
            Err(ClassicError::InvalidParam {
                name,
                value,
                reason,
            })
        };
        if self.n_trees == 0 {
            return bad("n_trees", "0".into(), "must be at least 1");
        }
        if self.n_trees > i32::MAX as usize {
            return bad("n_trees", self.n_trees.to_string(), "must fit in i32");
        }
        if self.min_samples_leaf == 0 {
            return bad("min_samples_leaf", "0".into(), "must be at least 1");
        }
        if self.max_depth == Some(0) {
            return bad("max_depth", "0".into(), "must be at least 1 (or none)");
        }
        match self.max_features {
            MaxFeatures::Count(0) => {
                return bad("max_features", "count 0".into(), "must be at least 1");
            }
            MaxFeatures::Fraction(f) if !(f > 0.0 && f <= 1.0) => {
                return bad(
                    "max_features",
                    format!("fraction {f}"),
                    "must lie in (0, 1]",
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// Fits on dense or sparse features `x` with class indices `y` in `0..n_classes`.
    pub fn fit(
        &self,
        x: &Features,
        y: &[usize],
        n_classes: usize,
    ) -> Result<RandomForest, ClassicError> {
        self.check()?;
        check_training_data(x, y, n_classes)?;
        let (n, d) = (x.rows(), x.cols());
        if n > i32::MAX as usize || n_classes > i32::MAX as usize || d > i32::MAX as usize {
            return Err(ClassicError::InvalidParam {
                name: "rows",
                value: n.to_string(),
                reason: "rows, columns and classes must fit in i32",
            });
        }
        let cols = Columns::new(x);
        let data = TrainData {
            cols: &cols,
            n,
            y: &y.iter().map(|&c| c as u32).collect::<Vec<_>>(),
            k: n_classes,
        };
        let mtry = self.max_features.resolve(d);
        let trees: Vec<Grown> = (0..self.n_trees)
            .into_par_iter()
            .map(|t| grow(&data, self, mtry, stream_rng(self.seed, t as u64)))
            .collect();
        let mut forest = RandomForest {
            n_features: d,
            n_classes,
            roots: Vec::with_capacity(trees.len()),
            nodes: Vec::with_capacity(trees.iter().map(|t| t.nodes.len()).sum()),
            leaf_ptr: vec![0],
            leaf_class: Vec::new(),
            leaf_prob: Vec::new(),
        };
        for t in trees {
            let base = forest.nodes.len() as u32;
            let entries = forest.leaf_class.len() as u32;
            forest.roots.push(base);
            forest.nodes.extend(t.nodes.iter().map(|n| {
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
            forest
                .leaf_ptr
                .extend(t.leaf_ptr[1..].iter().map(|p| p + entries));
            forest.leaf_class.extend(t.leaf_class);
            forest.leaf_prob.extend(t.leaf_prob);
        }
        if forest.nodes.len() > i32::MAX as usize || forest.leaf_class.len() > i32::MAX as usize {
            return Err(ClassicError::InvalidParam {
                name: "n_trees",
                value: self.n_trees.to_string(),
                reason: "the forest outgrows i32 indices; use fewer or shallower trees",
            });
        }
        Ok(forest)
    }
}

/// Training values as the split search reads them.
enum Columns {
    /// Dense input: `d × n`, column-major, -0.0 normalised to 0.0.
    Dense { n: usize, d: usize, cols: Vec<f32> },
    /// Sparse input: the non-zero entries; features are the columns that hold any.
    Sparse(SparseColumns),
}

impl Columns {
    fn new(x: &Features) -> Self {
        match x {
            Features::Dense(m) => {
                let (n, d) = (m.rows(), m.cols());
                let mut cols = vec![0.0f32; n * d];
                for (i, row) in m.as_slice().chunks_exact(d.max(1)).enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        // +0.0 turns -0.0 into 0.0, so equal values get equal sort keys.
                        cols[j * n + i] = v + 0.0;
                    }
                }
                Columns::Dense { n, d, cols }
            }
            Features::Sparse(m) => {
                let rows: Vec<usize> = (0..m.rows()).collect();
                Columns::Sparse(SparseColumns::new(m, &rows))
            }
        }
    }

    /// The matrix column of feature `f`.
    fn column(&self, f: u32) -> u32 {
        match self {
            Columns::Dense { .. } => f,
            Columns::Sparse(s) => s.columns[f as usize],
        }
    }

    /// Feature `f`'s value in row `r`.
    fn value(&self, f: u32, r: u32) -> f32 {
        match self {
            Columns::Dense { n, cols, .. } => cols[f as usize * n + r as usize],
            Columns::Sparse(s) => s.value(f, r as usize),
        }
    }

    /// Sets `out` to the features a split of `rows` tries, in order: of the features that
    /// take more than one value over the rows, the `mtry` of least [`rank`] under `key`.
    /// Dense input ranks every column and checks the least ranked first (most vary); sparse
    /// input lists the varying features from the rows' entries (a feature stored in only
    /// some rows varies: the others hold 0), as most columns hold 0 throughout a node.
    fn candidates(
        &self,
        rows: &[u32],
        sc: &mut Scratch,
        (key, mtry): (u64, usize),
        out: &mut Vec<u32>,
    ) {
        out.clear();
        let ranked = &mut sc.ranked;
        ranked.clear();
        match self {
            Columns::Dense { n, d, cols } => {
                let varies = |f: u32| {
                    let col = &cols[f as usize * n..(f as usize + 1) * n];
                    let first = col[rows[0] as usize];
                    rows[1..].iter().any(|&r| col[r as usize] != first)
                };
                // First the features ranked below a cut that about 2·mtry ranks fall under;
                // usually enough of them vary.
                let cut = if 4 * mtry >= *d {
                    u64::MAX
                } else {
                    ((2 * mtry) as u128 * (1u128 << 64) / *d as u128) as u64
                };
                ranked.extend(
                    (0..*d as u32)
                        .map(|f| (rank(key, f), f))
                        .filter(|e| e.0 < cut),
                );
                ranked.sort_unstable();
                out.extend(
                    ranked
                        .iter()
                        .map(|&(_, f)| f)
                        .filter(|&f| varies(f))
                        .take(mtry),
                );
                if out.len() == mtry || cut == u64::MAX {
                    return;
                }
                // Then the others, in batches in rank order, each as large as still wanted.
                ranked.clear();
                ranked.extend(
                    (0..*d as u32)
                        .map(|f| (rank(key, f), f))
                        .filter(|e| e.0 >= cut),
                );
                let mut start = 0;
                while out.len() < mtry && start < ranked.len() {
                    let want = mtry - out.len();
                    let end = (start + want).min(ranked.len());
                    if end < ranked.len() {
                        ranked[start..].select_nth_unstable(want - 1);
                    }
                    ranked[start..end].sort_unstable();
                    out.extend(
                        ranked[start..end]
                            .iter()
                            .map(|&(_, f)| f)
                            .filter(|&f| varies(f)),
                    );
                    start = end;
                }
            }
            Columns::Sparse(s) => {
                let stamp = sc.stamp;
                for &r in rows {
                    let (feats, vals) = s.row(r as usize);
                    for (&f, &v) in feats.iter().zip(vals) {
                        let f = f as usize;
                        if sc.seen[f] != stamp {
                            (sc.seen[f], sc.count[f], sc.first[f], sc.same[f]) =
                                (stamp, 0, v, true);
                            ranked.push((rank(key, s.columns[f]), f as u32));
                        }
                        sc.count[f] += 1;
                        sc.same[f] &= v == sc.first[f];
                    }
                }
                let m = rows.len() as u32;
                ranked.retain(|&(_, f)| sc.count[f as usize] < m || !sc.same[f as usize]);
                if ranked.len() > mtry {
                    ranked.select_nth_unstable(mtry - 1);
                    ranked.truncate(mtry);
                }
                ranked.sort_unstable();
                out.extend(ranked.iter().map(|&(_, f)| f));
            }
        }
    }

    /// Sets `out` to the sort keys ([`sort_key`] above, row below) of feature `f`'s values in
    /// `rows`, ascending: every row's for dense input, the non-zero ones for sparse input
    /// (where `mark[r] == stamp` flags the rows). [`sweep`] gives the same split either way.
    fn nonzero_keys(&self, f: u32, rows: &[u32], (mark, stamp): (&[u32], u32), out: &mut Vec<u64>) {
        out.clear();
        let key = |v: f32, r: u32| (sort_key(v) as u64) << 32 | r as u64;
        match self {
            Columns::Dense { n, cols, .. } => {
                let col = &cols[f as usize * n..(f as usize + 1) * n];
                out.extend(rows.iter().map(|&r| key(col[r as usize], r)));
            }
            Columns::Sparse(s) => {
                let (col_rows, col_vals) = s.column(f as usize);
                // Walk the column when it is short, else look the value up in each row.
                if col_rows.len() <= 8 * rows.len() {
                    out.extend(
                        col_rows
                            .iter()
                            .zip(col_vals)
                            .filter(|&(&r, _)| mark[r as usize] == stamp)
                            .map(|(&r, &v)| key(v, r)),
                    );
                } else {
                    out.extend(rows.iter().filter_map(|&r| {
                        let v = s.value(f, r as usize);
                        (v != 0.0).then(|| key(v, r))
                    }));
                }
            }
        }
        out.sort_unstable();
    }
}

/// Training data shared by all trees.
struct TrainData<'a> {
    cols: &'a Columns,
    n: usize,
    y: &'a [u32],
    k: usize,
}

/// One tree with tree-local node indices.
struct Grown {
    nodes: Vec<Node>,
    leaf_ptr: Vec<u32>,
    leaf_class: Vec<u32>,
    leaf_prob: Vec<f32>,
}

impl Grown {
    /// Appends a leaf holding the class distribution `total` (weight `w_sum`) of `classes`.
    fn push_leaf(&mut self, classes: &[u32], total: &[i64], w_sum: i64) {
        for &c in classes {
            self.leaf_class.push(c);
            self.leaf_prob
                .push((total[c as usize] as f64 / w_sum as f64) as f32);
        }
        self.nodes.push(Node::LEAF);
        self.leaf_ptr.push(self.leaf_class.len() as u32);
    }
}

/// Adds the weight of each class among `rows` to `total` (all 0 before) and lists the classes
/// present, ascending, in `classes` (empty before); returns the rows' weight.
fn class_weights(
    y: &[u32],
    weight: &[u32],
    rows: &[u32],
    total: &mut [i64],
    classes: &mut Vec<u32>,
) -> i64 {
    let mut w_sum = 0i64;
    for &s in rows {
        let c = y[s as usize] as usize;
        if total[c] == 0 {
            classes.push(c as u32);
        }
        let w = weight[s as usize] as i64;
        total[c] += w;
        w_sum += w;
    }
    classes.sort_unstable();
    w_sum
}

/// How often each of `n` rows is in a tree's sample: a bootstrap draw, or once each.
fn sample_weights(n: usize, bootstrap: bool, rng: &mut SeededRng) -> Vec<u32> {
    let mut weight = vec![0u32; n];
    if bootstrap {
        for _ in 0..n {
            weight[rng.below(n)] += 1;
        }
    } else {
        weight.fill(1);
    }
    weight
}

/// Moves the rows for which `goes_left` holds to the front of `rows`, keeping the order on
/// both sides (so every node's rows stay ascending); returns how many went left. `right` is
/// scratch.
pub(crate) fn partition(
    rows: &mut [u32],
    right: &mut Vec<u32>,
    goes_left: impl Fn(u32) -> bool,
) -> usize {
    let mut i = 0;
    right.clear();
    for j in 0..rows.len() {
        let s = rows[j];
        if goes_left(s) {
            rows[i] = s;
            i += 1;
        } else {
            right.push(s);
        }
    }
    rows[i..].copy_from_slice(right);
    i
}

/// An f32 as a u32 whose unsigned order is the float order (no NaN here).
#[inline]
fn sort_key(v: f32) -> u32 {
    let b = v.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

#[inline]
fn from_sort_key(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & 0x7FFF_FFFF } else { !k })
}

/// The sort key of 0.0: keys below it are negative values.
const ZERO_KEY: u32 = 0x8000_0000;

/// A threshold `t` with `a <= t < b` for `a < b`, near their midpoint.
pub(crate) fn midpoint(a: f32, b: f32) -> f32 {
    let t = ((a as f64 + b as f64) / 2.0) as f32;
    if t >= b || t < a {
        a
    } else {
        t
    }
}

/// A pseudo-random rank of matrix column `column` at the node keyed `key` (SplitMix64's
/// finaliser): the features a split tries are the varying ones of least rank.
fn rank(key: u64, column: u32) -> u64 {
    let mut z = key ^ (column as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Work left: grow the node for rows `start..end` at `depth`, linked from `parent`.
struct Task {
    start: usize,
    end: usize,
    depth: usize,
    parent: Option<(usize, bool)>,
}

/// Scratch of one tree's split search.
struct Scratch {
    keys: Vec<u64>,
    /// Per class: weight on the left of the sweep, and in the node's zero rows.
    left: Vec<i64>,
    zero: Vec<i64>,
    /// The features a split tries, and (rank, feature) pairs to choose them.
    tried: Vec<u32>,
    ranked: Vec<(u64, u32)>,
    /// Sparse input: per feature, the node that last saw it, its count there, its first
    /// value and whether all its values there equal that one; per row, the node it is in.
    seen: Vec<u32>,
    count: Vec<u32>,
    first: Vec<f32>,
    same: Vec<bool>,
    mark: Vec<u32>,
    /// The node being searched, counted from 1.
    stamp: u32,
}

impl Scratch {
    fn new(data: &TrainData) -> Self {
        let u = match data.cols {
            Columns::Dense { .. } => 0,
            Columns::Sparse(s) => s.columns.len(),
        };
        let n = if u == 0 { 0 } else { data.n };
        Self {
            keys: Vec::new(),
            left: vec![0; data.k],
            zero: vec![0; data.k],
            tried: Vec::new(),
            ranked: Vec::new(),
            seen: vec![0; u],
            count: vec![0; u],
            first: vec![0.0; u],
            same: vec![false; u],
            mark: vec![0; n],
            stamp: 0,
        }
    }

    /// Starts the search of a node over `rows`.
    fn enter(&mut self, rows: &[u32]) {
        if self.stamp == u32::MAX {
            self.seen.fill(0);
            self.mark.fill(0);
            self.stamp = 0;
        }
        self.stamp += 1;
        if !self.mark.is_empty() {
            for &r in rows {
                self.mark[r as usize] = self.stamp;
            }
        }
    }
}

/// A node's class weights and the split constraints.
struct NodeStats<'a> {
    /// Weight per class (bootstrap counts).
    total: &'a [i64],
    /// Classes present, ascending.
    classes: &'a [u32],
    w_sum: i64,
    /// Σ over classes of the squared weight.
    sq_sum: i64,
    msl: usize,
}

/// Grows one tree, depth first; nodes are numbered in visiting order, so children follow
/// their parent and each leaf's distribution is appended in node order.
fn grow(data: &TrainData, p: &RandomForestParams, mtry: usize, mut rng: SeededRng) -> Grown {
    let n = data.n;
    let weight = sample_weights(n, p.bootstrap, &mut rng);
    let mut samples: Vec<u32> = (0..n as u32).filter(|&i| weight[i as usize] > 0).collect();
    let max_depth = p.max_depth.unwrap_or(usize::MAX);
    let msl = p.min_samples_leaf;
    let mut g = Grown {
        nodes: Vec::new(),
        leaf_ptr: vec![0],
        leaf_class: Vec::new(),
        leaf_prob: Vec::new(),
    };
    let mut total = vec![0i64; data.k];
    let mut touched: Vec<u32> = Vec::new();
    let mut right_rows: Vec<u32> = Vec::new();
    let mut sc = Scratch::new(data);
    let mut stack = vec![Task {
        start: 0,
        end: samples.len(),
        depth: 0,
        parent: None,
    }];
    while let Some(t) = stack.pop() {
        let id = g.nodes.len();
        if let Some((parent, is_left)) = t.parent {
            let link = if is_left {
                &mut g.nodes[parent].left
            } else {
                &mut g.nodes[parent].right
            };
            *link = id as u32;
        }
        let rows = &mut samples[t.start..t.end];
        let w_sum = class_weights(data.y, &weight, rows, &mut total, &mut touched);
        let split = if touched.len() > 1 && rows.len() >= 2 * msl && t.depth < max_depth {
            let node = NodeStats {
                total: &total,
                classes: &touched,
                w_sum,
                sq_sum: touched.iter().map(|&c| total[c as usize].pow(2)).sum(),
                msl,
            };
            sc.enter(rows);
            best(data, &mut sc, &node, rows, &weight, mtry, rng.next_u64())
        } else {
            None
        };
        match split {
            Some((f, thr)) => {
                let goes_left = |s: u32| data.cols.value(f, s) <= thr;
                let mid = t.start + partition(rows, &mut right_rows, goes_left);
                g.nodes.push(Node {
                    feature: data.cols.column(f) as i32,
                    threshold: thr,
                    left: 0,
                    right: 0,
                });
                g.leaf_ptr.push(g.leaf_class.len() as u32);
                for (start, end, is_left) in [(mid, t.end, false), (t.start, mid, true)] {
                    stack.push(Task {
                        start,
                        end,
                        depth: t.depth + 1,
                        parent: Some((id, is_left)),
                    });
                }
            }
            None => g.push_leaf(&touched, &total, w_sum),
        }
        for &c in &touched {
            total[c as usize] = 0;
        }
        touched.clear();
    }
    g
}

/// The best Gini split of `rows` (ascending, distinct) as (feature, threshold), or `None`:
/// of the features that vary over the rows, the `mtry` of least [`rank`] under `key` are
/// tried, in rank order ([`Columns::candidates`]); a tie keeps the earlier. This picks a uniform random subset of the
/// varying features, as scikit-learn's rule (draw features until `mtry` non-constant ones are
/// found) does, without visiting the constant ones, which are most of a sparse matrix.
fn best(
    data: &TrainData,
    sc: &mut Scratch,
    node: &NodeStats,
    rows: &[u32],
    weight: &[u32],
    mtry: usize,
    key: u64,
) -> Option<(u32, f32)> {
    let cols = data.cols;
    let mut tried = std::mem::take(&mut sc.tried);
    cols.candidates(rows, sc, (key, mtry), &mut tried);
    let mut best: Option<(f64, u32, f32)> = None;
    let mut keys = std::mem::take(&mut sc.keys);
    for &f in &tried {
        cols.nonzero_keys(f, rows, (&sc.mark, sc.stamp), &mut keys);
        let found = sweep(data, sc, node, &keys, rows.len(), weight);
        if let Some((score, thr)) = found {
            if best.is_none_or(|(s, _, _)| score > s) {
                best = Some((score, f, thr));
            }
        }
    }
    (sc.tried, sc.keys) = (tried, keys);
    best.map(|(_, f, thr)| (f, thr))
}

/// Running sums of a sweep: weight on the left, and Σ_c weight_c² on each side.
struct Sums {
    w_left: i64,
    sq_left: i64,
    sq_right: i64,
}

impl Sums {
    /// Moves weight `w` of class `c` to the left (`left` holds the left weight per class).
    #[inline]
    fn add(&mut self, left: &mut [i64], total: &[i64], c: usize, w: i64) {
        let l = left[c];
        let r = total[c] - l;
        self.sq_left += (2 * l + w) * w;
        self.sq_right += (w - 2 * r) * w;
        left[c] = l + w;
        self.w_left += w;
    }
}

/// The best boundary of one feature over a node's `m` rows as (score, threshold): `keys` are
/// the rows' values, ascending, and may leave out rows holding 0: those move left as one
/// group, between the negative and the positive values. Minimising the children's weighted Gini
/// impurity is maximising Σ_side (Σ_c weight_c²) / weight, kept exactly in integers and
/// updated in O(1) per row (O(classes) for the zero group), so the boundaries and scores are
/// those of a sweep over every row one by one.
fn sweep(
    data: &TrainData,
    sc: &mut Scratch,
    node: &NodeStats,
    keys: &[u64],
    m: usize,
    weight: &[u32],
) -> Option<(f64, f32)> {
    let zero_rows = m - keys.len();
    let has_zero = zero_rows > 0;
    if has_zero {
        for &c in node.classes {
            sc.zero[c as usize] = node.total[c as usize];
        }
        for &k in keys {
            let s = (k & 0xFFFF_FFFF) as usize;
            sc.zero[data.y[s] as usize] -= weight[s] as i64;
        }
    }
    let neg = keys.partition_point(|&k| ((k >> 32) as u32) < ZERO_KEY);
    let items = keys.len() + usize::from(has_zero);
    let is_zero = |i: usize| has_zero && i == neg;
    let key_index = |i: usize| if has_zero && i > neg { i - 1 } else { i };
    let value_key = |i: usize| {
        if is_zero(i) {
            ZERO_KEY
        } else {
            (keys[key_index(i)] >> 32) as u32
        }
    };
    let mut sums = Sums {
        w_left: 0,
        sq_left: 0,
        sq_right: node.sq_sum,
    };
    let mut n_left = 0usize;
    let mut best: Option<(f64, f32)> = None;
    for i in 0..items.saturating_sub(1) {
        if is_zero(i) {
            for &c in node.classes {
                let w = sc.zero[c as usize];
                if w != 0 {
                    sums.add(&mut sc.left, node.total, c as usize, w);
                }
            }
            n_left += zero_rows;
        } else {
            let s = (keys[key_index(i)] & 0xFFFF_FFFF) as usize;
            sums.add(
                &mut sc.left,
                node.total,
                data.y[s] as usize,
                weight[s] as i64,
            );
            n_left += 1;
        }
        if n_left < node.msl {
            continue;
        }
        if m - n_left < node.msl {
            break;
        }
        let (a, b) = (value_key(i), value_key(i + 1));
        if a == b {
            continue;
        }
        let score = sums.sq_left as f64 / sums.w_left as f64
            + sums.sq_right as f64 / (node.w_sum - sums.w_left) as f64;
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, midpoint(from_sort_key(a), from_sort_key(b))));
        }
    }
    for &c in node.classes {
        sc.left[c as usize] = 0;
    }
    best
}

impl RandomForest {
    /// Feature columns the model takes.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Trees.
    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    /// Nodes over all trees.
    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Class probabilities, `rows × n_classes` row-major: the mean of the trees' leaf
    /// distributions.
    pub fn predict_proba(&self, x: &Features) -> Result<Vec<f32>, ClassicError> {
        check_input(x, self.n_features)?;
        let rows = Rows::new(x);
        let k = self.n_classes;
        let mut out = vec![0.0f32; x.rows() * k];
        out.par_chunks_mut(k)
            .enumerate()
            .with_min_len(16)
            .for_each_init(
                || vec![0.0f64; k],
                |acc, (i, o)| {
                    acc.fill(0.0);
                    let row = rows.row(i);
                    for &root in &self.roots {
                        let leaf = leaf_of(&self.nodes, root, row);
                        let (a, b) = (
                            self.leaf_ptr[leaf] as usize,
                            self.leaf_ptr[leaf + 1] as usize,
                        );
                        for (&c, &p) in self.leaf_class[a..b].iter().zip(&self.leaf_prob[a..b]) {
                            acc[c as usize] += p as f64;
                        }
                    }
                    let sum: f64 = acc.iter().sum();
                    for (o, a) in o.iter_mut().zip(acc.iter()) {
                        *o = (a / sum) as f32;
                    }
                },
            );
        Ok(out)
    }

    /// Rebuilds a forest from [`ProbaHead::to_tensors`]' output, checking every value.
    pub fn from_tensors(
        n_features: usize,
        n_classes: usize,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<Self, ClassicError> {
        if n_classes < 2 {
            return Err(stored(
                "leaf_class",
                format!("{n_classes} classes; at least 2 needed"),
            ));
        }
        let (roots, nodes) = stored_trees(tensors, n_features)?;
        if roots.is_empty() {
            return Err(stored(
                "tree_root",
                "a forest needs at least one tree".into(),
            ));
        }
        let entries = vec_len(tensors, "leaf_class")?;
        let leaf_ptr = stored_i32(
            tensors,
            "leaf_ptr",
            Some(&[nodes.len() + 1]),
            0..entries as i64 + 1,
        )?;
        let leaf_class = stored_i32(tensors, "leaf_class", Some(&[entries]), 0..n_classes as i64)?;
        let leaf_prob = stored_f32(tensors, "leaf_prob", Some(&[entries]))?;
        if leaf_ptr[0] != 0 || leaf_ptr[nodes.len()] as usize != entries {
            return Err(stored("leaf_ptr", format!("must run from 0 to {entries}")));
        }
        for (i, node) in nodes.iter().enumerate() {
            let (a, b) = (leaf_ptr[i] as usize, leaf_ptr[i + 1] as usize);
            if a > b {
                return Err(stored("leaf_ptr", format!("decreases at node {i}")));
            }
            if (node.feature < 0) != (a < b) {
                return Err(stored(
                    "leaf_ptr",
                    format!("node {i}: leaves need a distribution, split nodes none"),
                ));
            }
            if leaf_class[a..b].windows(2).any(|w| w[0] >= w[1]) {
                return Err(stored(
                    "leaf_class",
                    format!("classes of node {i} are not strictly increasing"),
                ));
            }
            let probs = &leaf_prob[a..b];
            if probs.iter().any(|p| !(0.0..=1.0).contains(p)) {
                return Err(stored("leaf_prob", format!("node {i}: outside [0, 1]")));
            }
            let sum: f64 = probs.iter().map(|&p| p as f64).sum();
            if a < b && (sum - 1.0).abs() > 1e-3 {
                return Err(stored("leaf_prob", format!("node {i}: sums to {sum}")));
            }
        }
        Ok(Self {
            n_features,
            n_classes,
            roots,
            nodes,
            leaf_ptr: leaf_ptr.iter().map(|&v| v as u32).collect(),
            leaf_class: leaf_class.iter().map(|&v| v as u32).collect(),
            leaf_prob: leaf_prob.to_vec(),
        })
    }
}

pub(crate) fn stored(tensor: &str, reason: String) -> ClassicError {
    ClassicError::Stored {
        tensor: tensor.to_string(),
        reason,
    }
}

/// Length of the 1-D tensor `name`.
pub(crate) fn vec_len(
    tensors: &BTreeMap<String, Tensor>,
    name: &str,
) -> Result<usize, ClassicError> {
    let t = tensors
        .get(name)
        .ok_or_else(|| stored(name, "missing".into()))?;
    match t.shape[..] {
        [len] => Ok(len),
        _ => Err(stored(name, format!("shape {:?}, expected 1-D", t.shape))),
    }
}

/// The checked trees of tensors `tree_root`, `node_feature`, `node_threshold`, `node_left`,
/// `node_right`: roots strictly increasing from 0, tree `t` spanning `root[t]..root[t + 1]`,
/// leaves (`feature == -1`) with both links -1, split nodes with `feature < n_features` and both
/// links after the node and inside its tree, so every walk ends at a leaf.
pub(crate) fn stored_trees(
    tensors: &BTreeMap<String, Tensor>,
    n_features: usize,
) -> Result<(Vec<u32>, Vec<Node>), ClassicError> {
    let n_trees = vec_len(tensors, "tree_root")?;
    let n = vec_len(tensors, "node_feature")?;
    if n > i32::MAX as usize {
        return Err(stored("node_feature", "more nodes than i32 indexes".into()));
    }
    let shape = [n];
    let roots = stored_i32(tensors, "tree_root", Some(&[n_trees]), 0..n as i64)?;
    let feature = stored_i32(tensors, "node_feature", Some(&shape), -1..n_features as i64)?;
    let threshold = stored_f32(tensors, "node_threshold", Some(&shape))?;
    let left = stored_i32(tensors, "node_left", Some(&shape), -1..n as i64)?;
    let right = stored_i32(tensors, "node_right", Some(&shape), -1..n as i64)?;
    if roots.first().is_some_and(|&r| r != 0) || (roots.is_empty() && n > 0) {
        return Err(stored(
            "tree_root",
            "the first tree must start at node 0".into(),
        ));
    }
    if roots.windows(2).any(|w| w[0] >= w[1]) {
        return Err(stored("tree_root", "roots must strictly increase".into()));
    }
    let mut nodes = Vec::with_capacity(n);
    for (t, &start) in roots.iter().enumerate() {
        let end = roots.get(t + 1).map_or(n, |&r| r as usize);
        for i in start as usize..end {
            let (l, r) = (left[i], right[i]);
            let node = if feature[i] < 0 {
                if l != -1 || r != -1 {
                    return Err(stored("node_left", format!("leaf {i} has children")));
                }
                Node::LEAF
            } else {
                let inside = |c: i32| c as usize > i && (c as usize) < end && c >= 0;
                if !inside(l) {
                    return Err(stored(
                        "node_left",
                        format!("node {i} links to {l}, outside {}..{end}", i + 1),
                    ));
                }
                if !inside(r) {
                    return Err(stored(
                        "node_right",
                        format!("node {i} links to {r}, outside {}..{end}", i + 1),
                    ));
                }
                Node {
                    feature: feature[i],
                    threshold: threshold[i],
                    left: l as u32,
                    right: r as u32,
                }
            };
            nodes.push(node);
        }
    }
    Ok((roots.iter().map(|&r| r as u32).collect(), nodes))
}

/// The tensors of [`stored_trees`].
pub(crate) fn tree_tensors(roots: &[u32], nodes: &[Node]) -> BTreeMap<String, Tensor> {
    let n = nodes.len();
    let link = |f: fn(&Node) -> u32| -> Vec<i32> {
        nodes
            .iter()
            .map(|nd| if nd.feature < 0 { -1 } else { f(nd) as i32 })
            .collect()
    };
    BTreeMap::from([
        (
            "tree_root".to_string(),
            Tensor::i32(vec![roots.len()], roots.iter().map(|&r| r as i32).collect()),
        ),
        (
            "node_feature".to_string(),
            Tensor::i32(vec![n], nodes.iter().map(|nd| nd.feature).collect()),
        ),
        (
            "node_threshold".to_string(),
            Tensor::f32(vec![n], nodes.iter().map(|nd| nd.threshold).collect()),
        ),
        (
            "node_left".to_string(),
            Tensor::i32(vec![n], link(|nd| nd.left)),
        ),
        (
            "node_right".to_string(),
            Tensor::i32(vec![n], link(|nd| nd.right)),
        ),
    ])
}

impl FitHead for RandomForestParams {
    type Model = RandomForest;

    fn check(&self) -> Result<(), ClassicError> {
        RandomForestParams::check(self)
    }

    fn fit(
        &self,
        x: &Features,
        y: &[usize],
        n_classes: usize,
    ) -> Result<RandomForest, ClassicError> {
        RandomForestParams::fit(self, x, y, n_classes)
    }

    fn restore(
        &self,
        n_features: usize,
        n_classes: usize,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<RandomForest, ClassicError> {
        RandomForest::from_tensors(n_features, n_classes, tensors)
    }
}

impl ProbaHead for RandomForest {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn n_classes(&self) -> usize {
        self.n_classes
    }

    fn predict_proba(&self, x: &Features) -> Result<Vec<f32>, ClassicError> {
        RandomForest::predict_proba(self, x)
    }

    /// Tensors `tree_root` `[trees]`, `node_feature` / `node_left` / `node_right` (i32) and
    /// `node_threshold` (f32) `[nodes]`, and the leaves' sparse class distributions as CSR:
    /// `leaf_ptr` `[nodes + 1]`, `leaf_class` (i32) and `leaf_prob` (f32) `[entries]`.
    fn to_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut t = tree_tensors(&self.roots, &self.nodes);
        let e = self.leaf_class.len();
        t.insert(
            "leaf_ptr".into(),
            Tensor::i32(
                vec![self.leaf_ptr.len()],
                self.leaf_ptr.iter().map(|&v| v as i32).collect(),
            ),
        );
        t.insert(
            "leaf_class".into(),
            Tensor::i32(vec![e], self.leaf_class.iter().map(|&v| v as i32).collect()),
        );
        t.insert(
            "leaf_prob".into(),
            Tensor::f32(vec![e], self.leaf_prob.clone()),
        );
        t
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lmfuse_core::{CsrMatrix, DenseMatrix, TensorData};

    /// `n` rows in `d` dimensions around `k` random centres (uniform in ±`spread`), uniform
    /// noise of half-width 1; labels cycle through the classes.
    pub(crate) fn blobs(
        n: usize,
        d: usize,
        k: usize,
        spread: f32,
        seed: u64,
    ) -> (Features, Vec<usize>) {
        let mut rng = SeededRng::new(seed);
        let mut u = || (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
        let centres: Vec<f32> = (0..k * d).map(|_| spread * u()).collect();
        let mut data = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % k;
            for j in 0..d {
                data.push(centres[c * d + j] + u());
            }
            y.push(c);
        }
        (Features::Dense(DenseMatrix::new(n, d, data).unwrap()), y)
    }

    pub(crate) fn accuracy(p: &[f32], y: &[usize], k: usize) -> f64 {
        let hits = p
            .chunks(k)
            .zip(y)
            .filter(|(r, &t)| (0..k).max_by(|&a, &b| r[a].total_cmp(&r[b])) == Some(t))
            .count();
        hits as f64 / y.len() as f64
    }

    fn small() -> RandomForestParams {
        RandomForestParams {
            n_trees: 20,
            seed: 7,
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
        let p = m.predict_proba(&xte).unwrap();
        let acc = accuracy(&p, &y_all[600..], 4);
        assert!(acc > 0.85, "held-out accuracy {acc}");
        for r in p.chunks(4) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert!(r.iter().all(|v| v.is_finite()));
        }
        let p_train = m.predict_proba(&xtr).unwrap();
        assert!(accuracy(&p_train, y, 4) > 0.99);
    }

    #[test]
    fn same_seed_gives_the_same_forest_on_any_thread_count() {
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
        let bits = |m: &RandomForest| -> Vec<u32> {
            m.predict_proba(&x)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(&a), bits(&b));
        let other = RandomForestParams { seed: 8, ..small() }
            .fit(&x, &y, 3)
            .unwrap();
        assert_ne!(a, other);
    }

    #[test]
    fn depth_and_leaf_size_limits_hold() {
        let (x, y) = blobs(300, 4, 3, 0.5, 3);
        let m = RandomForestParams {
            max_depth: Some(1),
            ..small()
        }
        .fit(&x, &y, 3)
        .unwrap();
        // A stump has at most 3 nodes.
        assert!(m.n_nodes() <= 3 * m.n_trees());
        let full = small().fit(&x, &y, 3).unwrap();
        let coarse = RandomForestParams {
            min_samples_leaf: 40,
            ..small()
        }
        .fit(&x, &y, 3)
        .unwrap();
        assert!(coarse.n_nodes() < full.n_nodes());
    }

    #[test]
    fn params_are_checked() {
        let bad = [
            RandomForestParams {
                n_trees: 0,
                ..Default::default()
            },
            RandomForestParams {
                min_samples_leaf: 0,
                ..Default::default()
            },
            RandomForestParams {
                max_depth: Some(0),
                ..Default::default()
            },
            RandomForestParams {
                max_features: MaxFeatures::Count(0),
                ..Default::default()
            },
            RandomForestParams {
                max_features: MaxFeatures::Fraction(1.5),
                ..Default::default()
            },
            RandomForestParams {
                max_features: MaxFeatures::Fraction(f64::NAN),
                ..Default::default()
            },
        ];
        for p in bad {
            assert!(
                matches!(p.check(), Err(ClassicError::InvalidParam { .. })),
                "{p:?}"
            );
        }
        assert!(RandomForestParams::default().check().is_ok());
        assert_eq!(MaxFeatures::Sqrt.resolve(384), 19);
        assert_eq!(MaxFeatures::Count(1000).resolve(384), 384);
        assert_eq!(MaxFeatures::Fraction(0.001).resolve(384), 1);
    }

    #[test]
    fn sparse_and_dense_rows_of_equal_values_grow_the_same_forest() {
        let (dense, sparse, y) = crate::test_data::mostly_zero(300, 12, 3);
        for params in [
            small(),
            RandomForestParams {
                max_features: MaxFeatures::All,
                min_samples_leaf: 3,
                bootstrap: false,
                ..small()
            },
            RandomForestParams {
                max_depth: Some(4),
                seed: 11,
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
    }

    #[test]
    fn separates_sparse_documents_over_a_large_vocabulary() {
        let (x, y) = crate::test_data::documents(900, 200_000, 5);
        let train: Vec<usize> = (0..600).collect();
        let test: Vec<usize> = (600..900).collect();
        let m = small().fit(&x.select_rows(&train), &y[..600], 3).unwrap();
        let acc = accuracy(
            &m.predict_proba(&x.select_rows(&test)).unwrap(),
            &y[600..],
            3,
        );
        assert!(acc > 0.9, "held-out accuracy {acc}");
    }

    #[test]
    fn a_split_search_tries_varying_features_only_and_ranks_them_by_seed() {
        // Column 0 is constant, column 1 decides the label, column 2 is noise.
        let rows: Vec<f32> = (0..40)
            .flat_map(|i| [5.0, (i % 2) as f32, (i * 7 % 5) as f32])
            .collect();
        let x = Features::Dense(DenseMatrix::new(40, 3, rows).unwrap());
        let y: Vec<usize> = (0..40).map(|i| i % 2).collect();
        let cols = Columns::new(&x);
        let data = TrainData {
            cols: &cols,
            n: 40,
            y: &y.iter().map(|&c| c as u32).collect::<Vec<_>>(),
            k: 2,
        };
        let mut sc = Scratch::new(&data);
        let rows: Vec<u32> = (0..40).collect();
        sc.enter(&rows);
        let sparse_x = crate::test_data::to_sparse(&x);
        let sparse_cols = Columns::new(&sparse_x);
        let sparse_data = TrainData {
            cols: &sparse_cols,
            ..data
        };
        let mut sparse_sc = Scratch::new(&sparse_data);
        let (mut dense_tried, mut sparse_tried) = (Vec::new(), Vec::new());
        for key in 0..20u64 {
            cols.candidates(&rows, &mut sc, (key, 3), &mut dense_tried);
            sparse_sc.enter(&rows);
            sparse_cols.candidates(&rows, &mut sparse_sc, (key, 3), &mut sparse_tried);
            let mut want = vec![1, 2];
            want.sort_by_key(|&f| rank(key, f));
            assert_eq!(dense_tried, want, "key {key}");
            // Sparse features are the columns holding non-zero values (1, 2 here as well).
            let cols_of: Vec<u32> = sparse_tried
                .iter()
                .map(|&f| sparse_cols.column(f))
                .collect();
            assert_eq!(cols_of, want, "key {key}");
        }
        // With one feature a split, the split is on whichever ranks first under the key.
        let (total, classes) = ([20i64, 20], [0u32, 1]);
        let node = NodeStats {
            total: &total,
            classes: &classes,
            w_sum: 40,
            sq_sum: 800,
            msl: 1,
        };
        let mut firsts = std::collections::BTreeSet::new();
        for key in 0..20u64 {
            let (f, thr) = best(&data, &mut sc, &node, &rows, &[1; 40], 1, key).unwrap();
            let want = if rank(key, 1) < rank(key, 2) { 1 } else { 2 };
            assert_eq!(f, want, "key {key}");
            if f == 1 {
                assert_eq!(thr, 0.5);
            }
            firsts.insert(f);
        }
        assert_eq!(firsts.len(), 2, "both features rank first under some key");
        // With both tried, the label's column wins.
        assert_eq!(
            best(&data, &mut sc, &node, &rows, &[1; 40], 3, 0),
            Some((1, 0.5))
        );
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
        let nan = Features::Dense(DenseMatrix::new(1, 3, vec![0.0, f32::NAN, 0.0]).unwrap());
        assert_eq!(
            m.predict_proba(&nan).unwrap_err(),
            ClassicError::NotFinite { row: 0, col: 1 }
        );
        let inf = Features::Sparse(
            CsrMatrix::new(1, 3, vec![0, 1], vec![2], vec![f32::INFINITY]).unwrap(),
        );
        assert_eq!(
            m.predict_proba(&inf).unwrap_err(),
            ClassicError::NotFinite { row: 0, col: 2 }
        );
    }

    #[test]
    fn tensors_round_trip_and_corruption_is_an_error() {
        let (x, y) = blobs(200, 5, 3, 1.0, 5);
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
        let leaf = m.nodes.iter().position(|n| n.feature < 0).unwrap();
        let n = m.nodes.len() as i32;
        let with = |name: &str, i: usize, v: TensorData| {
            let mut t = t.clone();
            match (&mut t.get_mut(name).unwrap().data, v) {
                (TensorData::I32(d), TensorData::I32(v)) => d[i] = v[0],
                (TensorData::F32(d), TensorData::F32(v)) => d[i] = v[0],
                _ => unreachable!(),
            }
            params.restore(5, 3, &t)
        };
        let int = |v: i32| TensorData::I32(vec![v]);
        let float = |v: f32| TensorData::F32(vec![v]);
        for (name, i, v) in [
            ("node_left", split, int(split as i32)),
            ("node_left", split, int(0)),
            ("node_right", split, int(n)),
            ("node_right", split, int(-1)),
            ("node_feature", split, int(5)),
            ("node_feature", split, int(-7)),
            ("node_feature", leaf, int(0)),
            ("node_left", leaf, int(leaf as i32 + 1)),
            ("tree_root", 1, int(0)),
            ("leaf_class", 0, int(3)),
            ("leaf_ptr", leaf + 1, int(m.leaf_ptr[leaf] as i32)),
            ("leaf_prob", 0, float(2.0)),
            ("leaf_prob", 0, float(0.5)),
            ("node_threshold", 0, float(f32::NAN)),
        ] {
            assert!(
                matches!(with(name, i, v), Err(ClassicError::Stored { .. })),
                "{name}[{i}]"
            );
        }
        let mut bad = t.clone();
        bad.insert("leaf_ptr".into(), Tensor::i32(vec![1], vec![0]));
        assert!(params.restore(5, 3, &bad).is_err());
        let mut bad = t.clone();
        let len = t["node_left"].len();
        bad.insert("node_left".into(), Tensor::f32(vec![len], vec![0.0; len]));
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
    }

    /// Manual timing on embedding-sized data: `cargo test --release -p lmfuse-classic --
    /// --ignored --nocapture forest::tests::timing_150_classes`.
    #[test]
    #[ignore]
    fn timing_150_classes() {
        let (all, y) = blobs(15_000, 384, 150, 0.35, 42);
        let train: Vec<usize> = (0..13_500).collect();
        let test: Vec<usize> = (13_500..15_000).collect();
        let (xtr, xte) = (all.select_rows(&train), all.select_rows(&test));
        let t0 = std::time::Instant::now();
        let m = RandomForestParams::default()
            .fit(&xtr, &y[..13_500], 150)
            .unwrap();
        let fit = t0.elapsed();
        let t1 = std::time::Instant::now();
        let p = m.predict_proba(&xte).unwrap();
        let predict = t1.elapsed();
        let bytes: usize = m.to_tensors().values().map(|t| t.len() * 4).sum();
        println!(
            "rf: fit {fit:.2?}, predict 1500 rows {predict:.2?}, {} nodes, {:.1} MB stored, \
             held-out accuracy {:.3}",
            m.n_nodes(),
            bytes as f64 / 1e6,
            accuracy(&p, &y[13_500..], 150)
        );
    }
}
