//! Out-of-scope detection: reject inputs that belong to no known class (intent routing).
//!
//! A detector scores each input (higher = further from the known classes) from the
//! classifier's probabilities (`max_prob`) or from the encoder embeddings: the Mahalanobis
//! distance to the nearest class mean under one shared covariance (`mahalanobis`, Lee et al.
//! 2018), or the cosine distance to the k-th nearest training text (`knn`, Sun et al. 2022).
//! The threshold is tuned on dev for an [`OosObjective`] when dev has out-of-scope examples;
//! without them, it keeps 95% of the in-scope dev texts.

use crate::TrainError;
use lmfuse_core::{DenseMatrix, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How inputs are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OosMethod {
    /// 1 − the largest class probability.
    MaxProb,
    /// Squared Mahalanobis distance to the nearest class mean (shared, shrunk covariance).
    Mahalanobis,
    /// 1 − cosine similarity to the k-th nearest in-scope training text.
    Knn,
}

impl OosMethod {
    /// Every method, in the order `--oos auto` tries them (ties keep the earlier).
    pub const ALL: [OosMethod; 3] = [OosMethod::MaxProb, OosMethod::Mahalanobis, OosMethod::Knn];
}

impl std::str::FromStr for OosMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "max_prob" | "maxprob" => Ok(OosMethod::MaxProb),
            "mahalanobis" => Ok(OosMethod::Mahalanobis),
            "knn" => Ok(OosMethod::Knn),
            _ => Err(format!(
                "unknown out-of-scope method {s:?} (max_prob, mahalanobis, knn)"
            )),
        }
    }
}

/// The threshold that rejects no finite score. Not `f32::INFINITY`: JSON has no infinity
/// (serde_json writes it as `null`, which would not load back).
const NEVER: f32 = f32::MAX;

/// What the threshold is tuned for on dev (when dev has out-of-scope examples).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OosObjective {
    /// Accuracy over every dev row, out of scope counted as one more class (right when
    /// rejected): the usual clinc150 measure. Follows dev's share of out-of-scope texts.
    Accuracy,
    /// The mean of in-scope accuracy and out-of-scope recall, whatever their shares.
    Balanced,
    /// The loosest threshold that still rejects at least this share of dev's out-of-scope
    /// texts (an operating point chosen by recall).
    Recall(f64),
}

impl OosObjective {
    /// How well decisions with dev metrics `m` meet this objective, higher is better: to
    /// compare detectors, each with its own tuned threshold. `Recall(r)`: the in-scope
    /// accuracy when the recall reaches `r`, else the recall − 1 (below every detector that
    /// reaches it).
    pub fn value(&self, m: &OosMetrics) -> f64 {
        match *self {
            OosObjective::Balanced => (m.in_scope_accuracy + m.oos_recall) / 2.0,
            OosObjective::Accuracy => {
                let (n_in, n_oos) = (m.in_scope as f64, m.out_of_scope as f64);
                (m.in_scope_accuracy * n_in + m.oos_recall * n_oos) / (n_in + n_oos).max(1.0)
            }
            OosObjective::Recall(r) => {
                if m.oos_recall + 1e-12 >= r {
                    m.in_scope_accuracy
                } else {
                    m.oos_recall - 1.0
                }
            }
        }
    }
}

impl std::str::FromStr for OosObjective {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "accuracy" => Ok(OosObjective::Accuracy),
            "balanced" => Ok(OosObjective::Balanced),
            _ => match s.strip_prefix("recall:").map(str::parse::<f64>) {
                Some(Ok(r)) if r > 0.0 && r <= 1.0 => Ok(OosObjective::Recall(r)),
                Some(_) => Err(format!(
                    "out-of-scope objective {s:?}: the recall must be a number in (0, 1]"
                )),
                None => Err(format!(
                    "unknown out-of-scope objective {s:?} (accuracy, balanced, recall:R)"
                )),
            },
        }
    }
}

/// The detector's description in a bundle's model card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OosCard {
    /// Scoring method.
    pub method: OosMethod,
    /// Inputs scoring above this are out of scope.
    pub threshold: f32,
    /// The label of out-of-scope examples in the data (e.g. `oos`), if the classifier has it
    /// as a class: predicting it also counts as out of scope.
    pub label: Option<String>,
    /// Neighbours for `knn`.
    pub k: usize,
    /// Embedding width the detector was fit on.
    pub dim: usize,
    /// What the threshold was tuned for (absent in bundles from before the choice existed,
    /// and when dev had no out-of-scope texts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<OosObjective>,
}

/// A fitted out-of-scope detector.
#[derive(Debug, Clone, PartialEq)]
pub struct OosDetector {
    /// Settings and threshold.
    pub card: OosCard,
    /// Index of `card.label` among the classes.
    oos_class: Option<usize>,
    /// Class means, `classes × dim` (`mahalanobis`).
    means: Vec<f32>,
    /// Shared precision matrix, `dim × dim` (`mahalanobis`).
    precision: Vec<f32>,
    /// Unit-length in-scope training embeddings, `rows × dim` (`knn`).
    bank: Vec<f32>,
}

/// Shrinkage of the covariance towards its mean variance (a well-conditioned inverse with
/// 384 dimensions and a few thousand texts).
const SHRINK: f64 = 0.1;

fn unit_rows(x: &DenseMatrix) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.rows() * x.cols());
    for r in 0..x.rows() {
        let row = x.row(r);
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        out.extend(row.iter().map(|v| v / n));
    }
    out
}

/// Inverse of a symmetric positive-definite matrix by Cholesky (f64).
fn spd_inverse(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            let mut s = a[i * d + j];
            for k in 0..j {
                s -= l[i * d + k] * l[j * d + k];
            }
            if i == j {
                if s <= 0.0 {
                    return None;
                }
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    // Invert L, then A⁻¹ = L⁻ᵀ L⁻¹.
    let mut li = vec![0.0f64; d * d];
    for i in 0..d {
        li[i * d + i] = 1.0 / l[i * d + i];
        for j in 0..i {
            let mut s = 0.0;
            for k in j..i {
                s -= l[i * d + k] * li[k * d + j];
            }
            li[i * d + j] = s / l[i * d + i];
        }
    }
    let mut inv = vec![0.0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (i.max(j)..d).map(|k| li[k * d + i] * li[k * d + j]).sum();
            inv[i * d + j] = s;
            inv[j * d + i] = s;
        }
    }
    Some(inv)
}

/// Labelled dev rows a detector's threshold is tuned on: embeddings, the classifier's
/// probabilities (`rows × n_classes`), class indices and the out-of-scope marks.
#[derive(Debug, Clone, Copy)]
pub struct OosDev<'a> {
    /// Encoder embeddings, one row per text.
    pub emb: &'a DenseMatrix,
    /// Class probabilities, row-major.
    pub proba: &'a [f32],
    /// Class index of each row (ignored where `is_oos`).
    pub y: &'a [usize],
    /// Which rows are out of scope.
    pub is_oos: &'a [bool],
}

/// What [`OosDetector::fit_best`] chose: the detector, every tried one's dev figures in
/// order, and the index of the chosen one among them.
#[derive(Debug, Clone)]
pub struct OosSelection {
    /// The chosen detector, its threshold tuned on dev.
    pub detector: OosDetector,
    /// Each tried detector's dev figures, in the order of the methods.
    pub trials: Vec<OosTrial>,
    /// Index of the chosen detector in `trials`.
    pub chosen: usize,
}

/// One detector tried by [`OosDetector::fit_best`]: its dev figures at its tuned threshold
/// and how well they meet the objective.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OosTrial {
    /// [`OosObjective::value`] of `dev`.
    pub objective_value: f64,
    /// Dev figures.
    #[serde(flatten)]
    pub dev: OosMetrics,
}

impl OosDetector {
    /// Fits a detector of each of `methods` on `train` (as [`OosDetector::fit`]), tunes its
    /// threshold on `dev` for `objective`, and keeps the one whose dev figures best meet it
    /// (ties: the earlier in `methods`), with every one's dev figures, in order.
    /// Choosing among several needs out-of-scope rows in dev: without them no figure tells
    /// the detectors apart, and that is an error rather than an arbitrary pick.
    pub fn fit_best(
        methods: &[OosMethod],
        (x, y): (&DenseMatrix, &[usize]),
        n_classes: usize,
        oos: Option<(usize, String)>,
        k: usize,
        dev: OosDev<'_>,
        objective: OosObjective,
    ) -> Result<OosSelection, TrainError> {
        if methods.len() > 1 && !dev.is_oos.contains(&true) {
            return Err(TrainError::Option(
                "choosing an out-of-scope method on dev needs out-of-scope rows in dev; \
                 name one method instead"
                    .to_string(),
            ));
        }
        let mut best: Option<(f64, usize, Self)> = None;
        let mut trials = Vec::with_capacity(methods.len());
        for (i, &method) in methods.iter().enumerate() {
            let mut det = Self::fit(method, x, y, n_classes, oos.clone(), k)?;
            let scores = det.score(dev.emb, dev.proba, n_classes);
            det.tune(&scores, dev.proba, n_classes, dev.y, dev.is_oos, objective);
            let m = det.metrics(&scores, dev.proba, n_classes, dev.y, dev.is_oos);
            let value = objective.value(&m);
            trials.push(OosTrial {
                objective_value: value,
                dev: m,
            });
            if best.as_ref().is_none_or(|b| value > b.0) {
                best = Some((value, i, det));
            }
        }
        let (_, chosen, detector) =
            best.ok_or_else(|| TrainError::Option("no out-of-scope method to try".to_string()))?;
        Ok(OosSelection {
            detector,
            trials,
            chosen,
        })
    }

    /// Fits a detector on in-scope training embeddings `x` with classes `y` (rows whose class
    /// is `oos_class` are left out). The threshold is set by [`OosDetector::tune`].
    pub fn fit(
        method: OosMethod,
        x: &DenseMatrix,
        y: &[usize],
        n_classes: usize,
        oos: Option<(usize, String)>,
        k: usize,
    ) -> Result<Self, TrainError> {
        let d = x.cols();
        let oos_class = oos.as_ref().map(|o| o.0);
        let keep: Vec<usize> = (0..x.rows()).filter(|&i| Some(y[i]) != oos_class).collect();
        if keep.len() < 2 {
            return Err(TrainError::Option(
                "out-of-scope detection needs at least two in-scope training texts".into(),
            ));
        }
        if method == OosMethod::Knn && (k == 0 || k > keep.len()) {
            return Err(TrainError::Option(format!(
                "knn needs 1 ≤ k ≤ {} in-scope training texts, got {k}",
                keep.len()
            )));
        }
        let (mut means, mut precision, mut bank) = (Vec::new(), Vec::new(), Vec::new());
        match method {
            OosMethod::MaxProb => {}
            OosMethod::Mahalanobis => {
                let mut sums = vec![0.0f64; n_classes * d];
                let mut counts = vec![0usize; n_classes];
                for &i in &keep {
                    counts[y[i]] += 1;
                    for (s, v) in sums[y[i] * d..(y[i] + 1) * d].iter_mut().zip(x.row(i)) {
                        *s += *v as f64;
                    }
                }
                for c in 0..n_classes {
                    for s in &mut sums[c * d..(c + 1) * d] {
                        *s /= counts[c].max(1) as f64;
                    }
                }
                let mut cov = vec![0.0f64; d * d];
                for &i in &keep {
                    let m = &sums[y[i] * d..(y[i] + 1) * d];
                    let diff: Vec<f64> =
                        x.row(i).iter().zip(m).map(|(v, m)| *v as f64 - m).collect();
                    for a in 0..d {
                        let da = diff[a];
                        for b in 0..=a {
                            cov[a * d + b] += da * diff[b];
                        }
                    }
                }
                let n = keep.len() as f64;
                let mean_var = (0..d).map(|a| cov[a * d + a] / n).sum::<f64>() / d as f64;
                for a in 0..d {
                    for b in 0..=a {
                        let mut v = cov[a * d + b] / n * (1.0 - SHRINK);
                        if a == b {
                            v += SHRINK * mean_var.max(1e-12);
                        }
                        cov[a * d + b] = v;
                        cov[b * d + a] = v;
                    }
                }
                let inv = spd_inverse(&cov, d).ok_or_else(|| {
                    TrainError::Option("the embeddings' covariance is singular".into())
                })?;
                precision = inv.into_iter().map(|v| v as f32).collect();
                means = sums.into_iter().map(|v| v as f32).collect();
                // Classes without in-scope rows (the oos class) get no mean: mark them NaN-free
                // by copying a real class, and skip them when scoring.
            }
            OosMethod::Knn => {
                let rows: Vec<f32> = keep.iter().flat_map(|&i| x.row(i).to_vec()).collect();
                let m = DenseMatrix::new(keep.len(), d, rows).expect("rows × d");
                bank = unit_rows(&m);
            }
        }
        Ok(Self {
            card: OosCard {
                method,
                threshold: NEVER,
                label: oos.map(|o| o.1),
                k,
                dim: d,
                objective: None,
            },
            oos_class,
            means,
            precision,
            bank,
        })
    }

    /// Scores rows (higher = more out of scope) from their embeddings `x` and the classifier's
    /// probabilities `proba` (`rows × classes`).
    pub fn score(&self, x: &DenseMatrix, proba: &[f32], n_classes: usize) -> Vec<f32> {
        let d = self.card.dim;
        match self.card.method {
            OosMethod::MaxProb => proba
                .chunks_exact(n_classes)
                .map(|p| 1.0 - p.iter().copied().fold(0.0, f32::max))
                .collect(),
            OosMethod::Mahalanobis => (0..x.rows())
                .map(|r| {
                    let row = x.row(r);
                    let mut best = f32::INFINITY;
                    for c in 0..n_classes {
                        if Some(c) == self.oos_class {
                            continue;
                        }
                        let diff: Vec<f32> = row
                            .iter()
                            .zip(&self.means[c * d..(c + 1) * d])
                            .map(|(a, b)| a - b)
                            .collect();
                        let mut q = 0.0f32;
                        for (a, da) in diff.iter().enumerate() {
                            let p = &self.precision[a * d..(a + 1) * d];
                            q += da * p.iter().zip(&diff).map(|(pv, db)| pv * db).sum::<f32>();
                        }
                        best = best.min(q);
                    }
                    best
                })
                .collect(),
            OosMethod::Knn => {
                let q = unit_rows(x);
                let n = self.bank.len() / d;
                let k = self.card.k;
                (0..x.rows())
                    .map(|r| {
                        let qr = &q[r * d..(r + 1) * d];
                        let mut sims: Vec<f32> = (0..n)
                            .map(|i| {
                                self.bank[i * d..(i + 1) * d]
                                    .iter()
                                    .zip(qr)
                                    .map(|(a, b)| a * b)
                                    .sum()
                            })
                            .collect();
                        sims.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
                        1.0 - sims[k - 1]
                    })
                    .collect()
            }
        }
    }

    /// Whether a row with this score and these probabilities is out of scope.
    pub fn is_oos(&self, score: f32, proba_row: &[f32]) -> bool {
        score > self.card.threshold
            || self
                .oos_class
                .is_some_and(|c| lmfuse_metrics::argmax(proba_row) == c)
    }

    /// Sets the threshold from dev scores: `y_dev` holds class indices and `is_oos_dev` marks
    /// the out-of-scope rows. With out-of-scope rows, the threshold that best meets
    /// `objective` (the stricter one on ties); without, the one that keeps 95% of the
    /// in-scope rows.
    pub fn tune(
        &mut self,
        scores: &[f32],
        proba: &[f32],
        n_classes: usize,
        y_dev: &[usize],
        is_oos_dev: &[bool],
        objective: OosObjective,
    ) {
        let n_oos = is_oos_dev.iter().filter(|&&o| o).count();
        let in_scope: Vec<usize> = (0..scores.len()).filter(|&i| !is_oos_dev[i]).collect();
        if n_oos == 0 || in_scope.is_empty() {
            self.card.objective = None;
            let mut s: Vec<f32> = in_scope.iter().map(|&i| scores[i]).collect();
            s.sort_by(f32::total_cmp);
            self.card.threshold = s
                .get(((s.len() as f64) * 0.95).ceil() as usize)
                .or(s.last())
                .copied()
                .unwrap_or(NEVER);
            return;
        }
        self.card.objective = Some(objective);
        let mut candidates: Vec<f32> = scores.to_vec();
        candidates.push(NEVER);
        candidates.sort_by(f32::total_cmp);
        candidates.dedup();
        // Candidates run from strict to loose. `best` keeps the first (strictest) of equal
        // values; `loosest_reaching` the last threshold that reaches a recall target.
        let mut best = (f64::MIN, NEVER);
        let mut loosest_reaching = None;
        for &t in &candidates {
            self.card.threshold = t;
            let m = self.metrics(scores, proba, n_classes, y_dev, is_oos_dev);
            let value = match objective {
                OosObjective::Recall(r) => {
                    if m.oos_recall + 1e-12 >= r {
                        loosest_reaching = Some(t);
                    }
                    // Ranks the thresholds in case none reaches the target.
                    m.oos_recall
                }
                _ => objective.value(&m),
            };
            if value > best.0 {
                best = (value, t);
            }
        }
        self.card.threshold = loosest_reaching.unwrap_or(best.1);
    }

    /// In-scope accuracy and out-of-scope recall/precision of the decisions on labelled rows.
    pub fn metrics(
        &self,
        scores: &[f32],
        proba: &[f32],
        n_classes: usize,
        y: &[usize],
        is_oos: &[bool],
    ) -> OosMetrics {
        let (mut in_ok, mut in_n, mut oos_hit, mut oos_n, mut flagged) =
            (0usize, 0usize, 0usize, 0usize, 0usize);
        for (i, (&s, p)) in scores.iter().zip(proba.chunks_exact(n_classes)).enumerate() {
            let says_oos = self.is_oos(s, p);
            flagged += says_oos as usize;
            if is_oos[i] {
                oos_n += 1;
                oos_hit += says_oos as usize;
            } else {
                in_n += 1;
                in_ok += (!says_oos && lmfuse_metrics::argmax(p) == y[i]) as usize;
            }
        }
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        OosMetrics {
            method: self.card.method,
            threshold: self.card.threshold,
            in_scope_accuracy: ratio(in_ok, in_n),
            oos_recall: ratio(oos_hit, oos_n),
            oos_precision: ratio(oos_hit, flagged),
            in_scope: in_n,
            out_of_scope: oos_n,
        }
    }

    /// The tensors to store (`means`, `precision` or `bank`).
    pub fn to_tensors(&self) -> BTreeMap<String, Tensor> {
        let d = self.card.dim;
        let mut t = BTreeMap::new();
        if !self.means.is_empty() {
            t.insert(
                "means".into(),
                Tensor::f32(vec![self.means.len() / d, d], self.means.clone()),
            );
            t.insert(
                "precision".into(),
                Tensor::f32(vec![d, d], self.precision.clone()),
            );
        }
        if !self.bank.is_empty() {
            t.insert(
                "bank".into(),
                Tensor::f32(vec![self.bank.len() / d, d], self.bank.clone()),
            );
        }
        t
    }

    /// Rebuilds a detector from its card and tensors, checking shapes.
    pub fn restore(
        card: OosCard,
        labels: &[String],
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<Self, TrainError> {
        let bad = |m: String| TrainError::Bundle {
            what: "out-of-scope detector",
            message: m,
        };
        let d = card.dim;
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>, TrainError> {
            lmfuse_classic::stored_f32(tensors, name, Some(shape))
                .map(<[f32]>::to_vec)
                .map_err(|e| bad(e.to_string()))
        };
        let (mut means, mut precision, mut bank) = (Vec::new(), Vec::new(), Vec::new());
        match card.method {
            OosMethod::MaxProb => {}
            OosMethod::Mahalanobis => {
                means = get("means", &[labels.len(), d])?;
                precision = get("precision", &[d, d])?;
            }
            OosMethod::Knn => {
                let t = tensors
                    .get("bank")
                    .ok_or_else(|| bad("bank is missing".into()))?;
                let rows = t.shape.first().copied().unwrap_or(0);
                if rows < card.k || card.k == 0 {
                    return Err(bad(format!(
                        "knn with k = {} over {rows} stored texts",
                        card.k
                    )));
                }
                bank = get("bank", &[rows, d])?;
            }
        }
        let oos_class = match &card.label {
            Some(l) => Some(
                labels
                    .iter()
                    .position(|x| x == l)
                    .ok_or_else(|| bad(format!("label {l:?} is not a class")))?,
            ),
            None => None,
        };
        if !card.threshold.is_finite() && card.threshold != f32::INFINITY {
            return Err(bad(format!("threshold {}", card.threshold)));
        }
        Ok(Self {
            card,
            oos_class,
            means,
            precision,
            bank,
        })
    }
}

/// How well a detector separates in-scope from out-of-scope rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OosMetrics {
    /// Scoring method.
    pub method: OosMethod,
    /// Threshold used.
    pub threshold: f32,
    /// Share of in-scope rows given their true class (and not flagged).
    pub in_scope_accuracy: f64,
    /// Share of out-of-scope rows flagged.
    pub oos_recall: f64,
    /// Share of flagged rows that are out of scope.
    pub oos_precision: f64,
    /// In-scope rows.
    pub in_scope: usize,
    /// Out-of-scope rows.
    pub out_of_scope: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use lmfuse_core::SeededRng;

    /// Three tight in-scope clusters and far-away out-of-scope points.
    fn data(n: usize, seed: u64) -> (DenseMatrix, Vec<usize>, Vec<bool>) {
        let mut rng = SeededRng::new(seed);
        let mut u = || (rng.next_u64() >> 11) as f32 / (1u64 << 53) as f32 - 0.5;
        let centres = [[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]];
        let (mut rows, mut y, mut oos) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            if i % 4 == 3 {
                rows.extend([-3.0 + u(), -3.0 + u(), -3.0 + u()]);
                y.push(3);
                oos.push(true);
            } else {
                let c = i % 4;
                rows.extend(centres[c].iter().map(|v| v + u()));
                y.push(c);
                oos.push(false);
            }
        }
        (DenseMatrix::new(n, 3, rows).unwrap(), y, oos)
    }

    /// Probabilities that know the three in-scope classes well and say "class 0" for the rest.
    fn proba(y: &[usize]) -> Vec<f32> {
        y.iter()
            .flat_map(|&c| {
                let mut p = vec![0.01f32; 4];
                p[if c == 3 { 0 } else { c }] = 0.97;
                p
            })
            .collect()
    }

    #[test]
    fn embedding_detectors_separate_far_points_and_round_trip() {
        let (x, y, _) = data(200, 1);
        let (xd, yd, od) = data(80, 2);
        for method in [OosMethod::Mahalanobis, OosMethod::Knn] {
            // The oos examples are not a class here: fit on in-scope rows only.
            let keep: Vec<usize> = (0..y.len()).filter(|&i| y[i] < 3).collect();
            let xi = x.select_rows(&keep);
            let yi: Vec<usize> = keep.iter().map(|&i| y[i]).collect();
            let mut det = OosDetector::fit(method, &xi, &yi, 4, None, 5).unwrap();
            let pd = proba(&yd);
            let s = det.score(&xd, &pd, 4);
            det.tune(&s, &pd, 4, &yd, &od, OosObjective::Balanced);
            let m = det.metrics(&s, &pd, 4, &yd, &od);
            assert!(
                m.oos_recall == 1.0 && m.in_scope_accuracy == 1.0,
                "{method:?}: {m:?}"
            );
            let labels: Vec<String> = (0..4).map(|i| i.to_string()).collect();
            let back = OosDetector::restore(det.card.clone(), &labels, &det.to_tensors()).unwrap();
            assert_eq!(back.score(&xd, &pd, 4), s);
        }
    }

    #[test]
    fn fit_best_keeps_the_first_detector_that_best_meets_the_objective() {
        let (x, y, _) = data(200, 1);
        let keep: Vec<usize> = (0..y.len()).filter(|&i| y[i] < 3).collect();
        let xi = x.select_rows(&keep);
        let yi: Vec<usize> = keep.iter().map(|&i| y[i]).collect();
        let (xd, yd, od) = data(80, 2);
        let pd = proba(&yd);
        let dev = OosDev {
            emb: &xd,
            proba: &pd,
            y: &yd,
            is_oos: &od,
        };
        let OosSelection {
            detector: det,
            trials,
            chosen,
        } = OosDetector::fit_best(
            &OosMethod::ALL,
            (&xi, &yi),
            4,
            None,
            5,
            dev,
            OosObjective::Balanced,
        )
        .unwrap();
        let methods: Vec<OosMethod> = trials.iter().map(|t| t.dev.method).collect();
        assert_eq!(methods, OosMethod::ALL);
        // max_prob cannot see the far points; mahalanobis and knn both separate them
        // perfectly, and the earlier of the two is kept.
        assert!(trials[0].objective_value < 1.0, "{trials:?}");
        assert_eq!(trials[1].objective_value, 1.0, "{trials:?}");
        assert_eq!(trials[2].objective_value, 1.0, "{trials:?}");
        assert_eq!(det.card.method, OosMethod::Mahalanobis);
        assert_eq!(chosen, 1);
        assert_eq!(det.card.threshold, trials[1].dev.threshold);
        // One method: that one, whatever its figures.
        let only = OosDetector::fit_best(
            &[OosMethod::MaxProb],
            (&xi, &yi),
            4,
            None,
            5,
            dev,
            OosObjective::Balanced,
        )
        .unwrap();
        assert_eq!(
            (only.detector.card.method, only.trials.len(), only.chosen),
            (OosMethod::MaxProb, 1, 0)
        );
        assert!(
            OosDetector::fit_best(&[], (&xi, &yi), 4, None, 5, dev, OosObjective::Balanced)
                .is_err()
        );
        // Without out-of-scope rows in dev, nothing tells the detectors apart: refused.
        let no_oos = vec![false; yd.len()];
        let in_scope_only = OosDev {
            is_oos: &no_oos,
            ..dev
        };
        let err = OosDetector::fit_best(
            &OosMethod::ALL,
            (&xi, &yi),
            4,
            None,
            5,
            in_scope_only,
            OosObjective::Balanced,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("out-of-scope rows in dev"),
            "{err}"
        );
    }

    #[test]
    fn max_prob_cannot_see_confident_mistakes_and_without_dev_oos_keeps_95_percent() {
        let (xd, yd, od) = data(80, 3);
        let pd = proba(&yd);
        let mut det = OosDetector::fit(OosMethod::MaxProb, &xd, &yd, 4, None, 1).unwrap();
        let s = det.score(&xd, &pd, 4);
        det.tune(&s, &pd, 4, &yd, &od, OosObjective::Balanced);
        // Every row is equally confident: max-prob cannot tell the far points apart.
        assert!(
            det.metrics(&s, &pd, 4, &yd, &od).oos_recall < 1.0
                || det.metrics(&s, &pd, 4, &yd, &od).in_scope_accuracy < 1.0
        );
        let no_oos = vec![false; yd.len()];
        det.tune(&s, &pd, 4, &yd, &no_oos, OosObjective::Balanced);
        let kept = s.iter().filter(|&&v| v <= det.card.threshold).count();
        assert!(kept as f64 >= 0.95 * s.len() as f64);
    }

    /// A `max_prob` detector over two classes (the tests below give it scores directly).
    fn two_class_max_prob(oos_class: Option<(usize, String)>) -> OosDetector {
        let (x, y, _) = data(40, 4);
        let keep: Vec<usize> = (0..y.len()).filter(|&i| y[i] < 2).collect();
        let y: Vec<usize> = keep.iter().map(|&i| y[i]).collect();
        OosDetector::fit(
            OosMethod::MaxProb,
            &x.select_rows(&keep),
            &y,
            2,
            oos_class,
            1,
        )
        .unwrap()
    }

    #[test]
    fn each_objective_picks_its_threshold() {
        // Eight in-scope dev rows (all classified right) scoring 1..=8 and two out-of-scope
        // rows scoring 5.5 and 9, so thresholds trade one against the other.
        let scores = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 5.5, 9.0];
        let is_oos = [
            false, false, false, false, false, false, false, false, true, true,
        ];
        let y = vec![0usize; 10];
        let proba: Vec<f32> = (0..10).flat_map(|_| [0.9f32, 0.1]).collect();
        let mut det = two_class_max_prob(None);
        let tuned = |det: &mut OosDetector, objective| {
            det.tune(&scores, &proba, 2, &y, &is_oos, objective);
            assert_eq!(det.card.objective, Some(objective));
            det.card.threshold
        };
        // Accuracy over all 10 rows: t = 8 rejects only the 9 (9/10 right); t = 5 rejects
        // 5.5, 6, 7, 8, 9 (2 oos + 5 in-scope kept = 7/10). Best: 8.
        assert_eq!(tuned(&mut det, OosObjective::Accuracy), 8.0);
        // Balanced: t = 5 gives (5/8 + 2/2) / 2 = 0.8125; t = 8 gives (1 + 1/2) / 2 = 0.75.
        assert_eq!(tuned(&mut det, OosObjective::Balanced), 5.0);
        // Recall 1: the loosest threshold below 5.5 is 5; recall 0.5: anything below 9, the
        // loosest being 8.
        assert_eq!(tuned(&mut det, OosObjective::Recall(1.0)), 5.0);
        assert_eq!(tuned(&mut det, OosObjective::Recall(0.5)), 8.0);
        for (text, want) in [
            ("accuracy", Ok(OosObjective::Accuracy)),
            ("balanced", Ok(OosObjective::Balanced)),
            ("recall:0.9", Ok(OosObjective::Recall(0.9))),
        ] {
            assert_eq!(text.parse::<OosObjective>(), want);
        }
        for bad in ["recall:0", "recall:1.5", "recall:x", "f1"] {
            assert!(bad.parse::<OosObjective>().is_err(), "{bad}");
        }
    }

    #[test]
    fn objective_values_rank_tuned_detectors() {
        let m = |in_scope_accuracy, oos_recall| OosMetrics {
            method: OosMethod::Knn,
            threshold: 0.5,
            in_scope_accuracy,
            oos_recall,
            oos_precision: 0.5,
            in_scope: 30,
            out_of_scope: 10,
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        // Accuracy weighs the rows: (0.9 · 30 + 0.5 · 10) / 40 = 0.8.
        assert!(close(OosObjective::Accuracy.value(&m(0.9, 0.5)), 0.8));
        assert!(close(OosObjective::Balanced.value(&m(0.9, 0.5)), 0.7));
        // Recall 0.8: reaching it, the in-scope accuracy counts; below it, every detector
        // that reaches it ranks higher, and a higher recall ranks higher.
        let r = OosObjective::Recall(0.8);
        assert!(close(r.value(&m(0.7, 0.8)), 0.7));
        assert!(r.value(&m(0.1, 0.9)) > r.value(&m(0.99, 0.79)));
        assert!(r.value(&m(0.5, 0.7)) > r.value(&m(0.9, 0.6)));
    }

    #[test]
    fn a_threshold_that_rejects_nothing_by_score_survives_json() {
        // The classifier's own `oos` class (index 1) catches every out-of-scope row, so
        // no score threshold is needed: the loosest one is chosen and must round-trip.
        let scores = [0.1f32, 0.2, 0.3, 0.4];
        let is_oos = [false, false, true, true];
        let y = vec![0usize, 0, 1, 1];
        let proba = [0.9f32, 0.1, 0.9, 0.1, 0.1, 0.9, 0.1, 0.9];
        let mut det = two_class_max_prob(Some((1, "oos".into())));
        det.tune(&scores, &proba, 2, &y, &is_oos, OosObjective::Recall(0.9));
        assert!(det.card.threshold.is_finite());
        let json = serde_json::to_string(&det.card).unwrap();
        let back: OosCard = serde_json::from_str(&json).unwrap();
        assert_eq!(back, det.card);
        assert_eq!(det.metrics(&scores, &proba, 2, &y, &is_oos).oos_recall, 1.0);
    }

    #[test]
    fn inverse_is_an_inverse() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0];
        let inv = spd_inverse(&a, 3).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| a[i * 3 + k] * inv[k * 3 + j]).sum();
                assert!((v - (i == j) as u8 as f64).abs() < 1e-12);
            }
        }
        assert!(spd_inverse(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }
}
