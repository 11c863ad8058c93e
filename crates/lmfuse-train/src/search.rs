//! Hyperparameter and strategy search (`lmfuse tune`): the search space, seeded random and
//! grid draws from it, and the successive-halving schedule with its nested stratified
//! subsamples. Scoring is the caller's (k-fold cross-validation on train).

use crate::{HeadKind, TrainError};
use lmfuse_classic::HeadParams;
use lmfuse_core::SeededRng;
use serde::{Deserialize, Serialize};

/// Which text feature blocks a configuration reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FeatureSet {
    /// Encoder embeddings.
    #[serde(rename = "emb")]
    Emb,
    /// Word and character TF-IDF.
    #[serde(rename = "tfidf")]
    Tfidf,
    /// Both, side by side (feature fusion), the embeddings weighted.
    #[serde(rename = "tfidf+emb")]
    TfidfEmb,
}

impl FeatureSet {
    /// Every set, in the default search order.
    pub const ALL: [FeatureSet; 3] = [FeatureSet::Emb, FeatureSet::Tfidf, FeatureSet::TfidfEmb];

    /// The name on the command line: `emb`, `tfidf`, `tfidf+emb`.
    pub fn name(self) -> &'static str {
        match self {
            FeatureSet::Emb => "emb",
            FeatureSet::Tfidf => "tfidf",
            FeatureSet::TfidfEmb => "tfidf+emb",
        }
    }

    /// Parses a name; `emb+tfidf` is `tfidf+emb`.
    pub fn parse(s: &str) -> Result<Self, TrainError> {
        match s {
            "emb" => Ok(FeatureSet::Emb),
            "tfidf" => Ok(FeatureSet::Tfidf),
            "tfidf+emb" | "emb+tfidf" => Ok(FeatureSet::TfidfEmb),
            other => Err(TrainError::Option(format!(
                "unknown feature set {other:?}: expected emb, tfidf or tfidf+emb"
            ))),
        }
    }

    /// Whether it reads the embeddings.
    pub fn emb(self) -> bool {
        self != FeatureSet::Tfidf
    }

    /// Whether it reads TF-IDF.
    pub fn tfidf(self) -> bool {
        self != FeatureSet::Emb
    }
}

/// The range a head's main hyperparameter is searched over, and its grid.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamRange {
    /// The hyperparameter's name, as [`HeadParams::tuned`] gives it.
    pub name: &'static str,
    /// Random search draws log-uniformly from `lo..=hi`.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    /// Whether it is a whole number (rounded after drawing).
    pub integer: bool,
    /// The values grid search tries.
    pub grid: Vec<f64>,
}

/// The main hyperparameter's range of each searchable head, or `None` for a head the search
/// does not know. `c_grid` is the grid of `C` (logreg, svm).
pub fn param_range(head: HeadKind, c_grid: &[f64]) -> Option<ParamRange> {
    let r = |name, lo, hi, integer, grid: &[f64]| {
        Some(ParamRange {
            name,
            lo,
            hi,
            integer,
            grid: grid.to_vec(),
        })
    };
    #[allow(unreachable_patterns)]
    match head {
        HeadKind::Logreg => r("c", 0.01, 100.0, false, c_grid),
        // Large C makes the SVM's coordinate descent slow to converge, for little gain.
        HeadKind::Svm => r("c", 0.01, 10.0, false, c_grid),
        HeadKind::Nb => r("alpha", 0.01, 1.0, false, &[0.01, 0.03, 0.1, 0.3, 1.0]),
        HeadKind::Knn => r("k", 1.0, 50.0, true, &[1.0, 3.0, 5.0, 10.0, 20.0, 50.0]),
        HeadKind::Rf => r("n_trees", 50.0, 300.0, true, &[50.0, 100.0, 200.0]),
        HeadKind::Gbdt => r("learning_rate", 0.02, 0.3, false, &[0.03, 0.1, 0.3]),
        // Deep fusion (every column into one hidden layer): its decoupled AdamW weight decay,
        // around `lmfuse train`'s grid (10, 3, 1).
        HeadKind::Mlp => r("alpha", 0.3, 30.0, false, &[1.0, 3.0, 10.0]),
        _ => None,
    }
}

/// The head's hyperparameters with its main one set to `value` (the others at their
/// defaults; `seed` for the random ones), as `lmfuse train` builds them; `None` for the
/// shared head, which is not searched.
pub fn head_params(head: HeadKind, value: f64, seed: u64) -> Option<HeadParams> {
    (head != HeadKind::Shared).then(|| {
        crate::TrainOptions {
            head,
            seed,
            ..Default::default()
        }
        .params_with(value)
    })
}

/// One point of the search space.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Feature blocks.
    pub features: FeatureSet,
    /// The head and all its hyperparameters.
    pub params: HeadParams,
    /// The embedding block's weight (feature fusion only; the other blocks weigh 1).
    pub emb_weight: Option<f32>,
}

impl Config {
    /// `FEATURES:HEAD PARAM=VALUE [emb_weight=W]`, e.g. `tfidf+emb:logreg c=3 emb_weight=2`.
    pub fn label(&self) -> String {
        let (p, v) = self.params.tuned();
        let mut s = format!(
            "{}:{} {p}={}",
            self.features.name(),
            self.params.name(),
            fmt_num(v)
        );
        if let Some(w) = self.emb_weight {
            s.push_str(&format!(" emb_weight={}", fmt_num(f64::from(w))));
        }
        s
    }
}

/// `v` to 6 significant digits, without trailing zeros (`1.26` for the f32 weight 1.26).
fn fmt_num(v: f64) -> String {
    format!("{}", round_sig(v, 6))
}

/// What `lmfuse tune` searches over.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSpace {
    /// Feature sets.
    pub feature_sets: Vec<FeatureSet>,
    /// Heads.
    pub heads: Vec<HeadKind>,
    /// Grid of `C` (logreg, svm) for grid search.
    pub c_grid: Vec<f64>,
    /// Embedding weights of fusion configurations: the grid, and for random search the
    /// log-uniform range from the smallest to the largest.
    pub emb_weights: Vec<f32>,
    /// Seed of the heads' own random choices (bootstrap samples, calibration folds).
    pub head_seed: u64,
}

impl SearchSpace {
    /// The (feature set, head) pairs, in order (every head reads every feature set, the
    /// tree heads sparse TF-IDF included); an error names a head the search does not know or
    /// an empty space.
    pub fn pairs(&self) -> Result<Vec<(FeatureSet, HeadKind, ParamRange)>, TrainError> {
        let mut out = Vec::new();
        for &h in &self.heads {
            let range = param_range(h, &self.c_grid).ok_or_else(|| {
                let name = format!("{h:?}").to_lowercase();
                TrainError::Option(format!("tune cannot search the head {name} yet"))
            })?;
            for &f in &self.feature_sets {
                out.push((f, h, range.clone()));
            }
        }
        if out.is_empty() {
            return Err(TrainError::Option(
                "the search space is empty: give at least one feature set and one head".into(),
            ));
        }
        crate::BlockWeights::check_emb_choices(&self.emb_weights)?;
        Ok(out)
    }

    fn config(&self, f: FeatureSet, h: HeadKind, value: f64, w: Option<f32>) -> Config {
        Config {
            features: f,
            params: head_params(h, value, self.head_seed).expect("a searchable head"),
            emb_weight: (f == FeatureSet::TfidfEmb).then(|| w.unwrap_or(1.0)),
        }
    }

    /// Every combination: pairs × the head's grid × (fusion) the embedding weights.
    pub fn grid(&self) -> Result<Vec<Config>, TrainError> {
        let mut out = Vec::new();
        for (f, h, range) in self.pairs()? {
            for &v in &range.grid {
                if f == FeatureSet::TfidfEmb {
                    for &w in &self.emb_weights {
                        out.push(self.config(f, h, v, Some(w)));
                    }
                } else {
                    out.push(self.config(f, h, v, None));
                }
            }
        }
        Ok(out)
    }

    /// `trials` configurations drawn with `seed`: a (feature set, head) pair uniformly, its
    /// hyperparameter log-uniformly over its range, the fusion weight log-uniformly between
    /// the smallest and largest embedding weight; values rounded to 3 significant digits.
    /// A repeat of an earlier draw is drawn again (up to 100 times). Same seed, same list.
    pub fn random(&self, trials: usize, seed: u64) -> Result<Vec<Config>, TrainError> {
        let pairs = self.pairs()?;
        let mut rng = SeededRng::new(seed);
        let (wlo, whi) = self
            .emb_weights
            .iter()
            .fold((f32::INFINITY, 0.0f32), |(lo, hi), &w| {
                (lo.min(w), hi.max(w))
            });
        let mut out: Vec<Config> = Vec::with_capacity(trials);
        while out.len() < trials {
            let mut c = None;
            for _ in 0..100 {
                let (f, h, range) = &pairs[rng.below(pairs.len())];
                let mut v = round_sig(log_uniform(&mut rng, range.lo, range.hi), 3);
                if range.integer {
                    v = v.round();
                }
                let w = (*f == FeatureSet::TfidfEmb).then(|| {
                    round_sig(log_uniform(&mut rng, f64::from(wlo), f64::from(whi)), 3) as f32
                });
                let cand = self.config(*f, *h, v, w);
                let repeat = out.contains(&cand);
                c = Some(cand);
                if !repeat {
                    break;
                }
            }
            out.push(c.expect("drawn at least once"));
        }
        Ok(out)
    }
}

/// A log-uniform draw from `lo..=hi` (`0 < lo ≤ hi`).
fn log_uniform(rng: &mut SeededRng, lo: f64, hi: f64) -> f64 {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (lo.ln() + u * (hi.ln() - lo.ln())).exp().clamp(lo, hi)
}

/// `v` rounded to `digits` significant digits.
fn round_sig(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(digits - 1 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

/// One rung of successive halving: how many training rows its cross-validation uses and how
/// many configurations it scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rung {
    /// Training rows (a stratified subsample; all of train on the last rung).
    pub rows: usize,
    /// Configurations scored.
    pub configs: usize,
}

/// The successive-halving schedule for `configs` configurations on `n_rows` training rows:
/// `R + 1` rungs, rung `r` cross-validating on `⌈n_rows / etaᴿ⁻ʳ⌉` rows (the last on all of
/// them), each keeping the best `⌊configs / eta⌋` (at least 1) for the next. `R` is the
/// largest number with `etaᴿ ≤ configs` whose first rung still has `min_rows` rows (0: one
/// rung, everything on all rows).
pub fn halving_schedule(n_rows: usize, configs: usize, eta: usize, min_rows: usize) -> Vec<Rung> {
    let eta = eta.max(2);
    let mut r = 0u32;
    while let Some(p) = eta.checked_pow(r + 1) {
        if p > configs || n_rows.div_ceil(p) < min_rows {
            break;
        }
        r += 1;
    }
    let mut out = Vec::with_capacity(r as usize + 1);
    let mut n = configs;
    for i in 0..=r {
        out.push(Rung {
            rows: n_rows.div_ceil(eta.pow(r - i)),
            configs: n,
        });
        n = (n / eta).max(1);
    }
    out
}

/// A seeded order of the rows whose every prefix is a stratified subsample: each class's rows
/// are shuffled and spread evenly over the order, so the first `m` rows hold about
/// `m · n_c / n` rows of class `c`, and a longer prefix contains every shorter one.
pub fn stratified_order(y: &[usize], seed: u64) -> Vec<usize> {
    let classes = y.iter().copied().max().map_or(0, |m| m + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &c) in y.iter().enumerate() {
        by_class[c].push(i);
    }
    let mut rng = SeededRng::new(seed);
    let mut keyed: Vec<(f64, u64, usize)> = Vec::with_capacity(y.len());
    for rows in &mut by_class {
        rng.shuffle(rows);
        let n = rows.len() as f64;
        for (j, &r) in rows.iter().enumerate() {
            // Position (j + ½) / n_c in the order; a random tie-break between classes.
            keyed.push(((j as f64 + 0.5) / n, rng.next_u64(), r));
        }
    }
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().map(|(_, _, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halving_rungs_grow_by_eta_and_end_on_all_rows() {
        let s = halving_schedule(4906, 24, 3, 60);
        assert_eq!(
            s,
            [
                Rung {
                    rows: 546,
                    configs: 24
                },
                Rung {
                    rows: 1636,
                    configs: 8
                },
                Rung {
                    rows: 4906,
                    configs: 2
                },
            ]
        );
        // 27 configurations, eta 3: 27 → 9 → 3 → 1 on n/27, n/9, n/3, n rows.
        let s = halving_schedule(2700, 27, 3, 10);
        let rows: Vec<usize> = s.iter().map(|r| r.rows).collect();
        let configs: Vec<usize> = s.iter().map(|r| r.configs).collect();
        assert_eq!(rows, [100, 300, 900, 2700]);
        assert_eq!(configs, [27, 9, 3, 1]);
        // Survivors are ⌊n / eta⌋ but never 0; the last rung always has every row.
        for (n_rows, configs, eta, min_rows) in [
            (5000, 100, 3, 50),
            (999, 7, 2, 1),
            (10, 50, 3, 1),
            (12345, 81, 4, 100),
        ] {
            let s = halving_schedule(n_rows, configs, eta, min_rows);
            assert_eq!(s.last().unwrap().rows, n_rows);
            assert_eq!(s[0].configs, configs);
            assert!(s[0].rows >= min_rows.min(n_rows), "{s:?}");
            for w in s.windows(2) {
                assert_eq!(w[1].configs, (w[0].configs / eta).max(1));
                assert!(w[1].rows > w[0].rows, "{s:?}");
            }
            assert!(eta.pow(s.len() as u32 - 1) <= configs);
        }
        // Too few rows for a small first rung: fewer rungs.
        assert_eq!(halving_schedule(300, 81, 3, 100).len(), 2);
        // One configuration, or no room: one rung on all rows.
        assert_eq!(
            halving_schedule(1000, 1, 3, 10),
            [Rung {
                rows: 1000,
                configs: 1
            }]
        );
        assert_eq!(halving_schedule(50, 30, 3, 40).len(), 1);
    }

    #[test]
    fn stratified_order_prefixes_are_stratified_nested_and_seeded() {
        // 3 classes: 600, 300 and 100 rows.
        let y: Vec<usize> = (0..1000)
            .map(|i| match i % 10 {
                0 => 2,
                1..=3 => 1,
                _ => 0,
            })
            .collect();
        let order = stratified_order(&y, 7);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        for m in [10, 50, 111, 333, 1000] {
            for (c, share) in [(0, 0.6), (1, 0.3), (2, 0.1)] {
                let got = order[..m].iter().filter(|&&i| y[i] == c).count() as f64;
                assert!(
                    (got - share * m as f64).abs() <= 1.0,
                    "m {m} class {c}: {got}"
                );
            }
        }
        assert_eq!(order, stratified_order(&y, 7));
        assert_ne!(order, stratified_order(&y, 8));
    }

    fn space() -> SearchSpace {
        SearchSpace {
            feature_sets: FeatureSet::ALL.to_vec(),
            heads: vec![
                HeadKind::Logreg,
                HeadKind::Svm,
                HeadKind::Nb,
                HeadKind::Knn,
                HeadKind::Rf,
                HeadKind::Gbdt,
            ],
            c_grid: vec![0.1, 1.0, 10.0],
            emb_weights: vec![0.5, 1.0, 2.0, 4.0],
            head_seed: 13,
        }
    }

    #[test]
    fn same_seed_same_trials_and_draws_stay_in_range() {
        let s = space();
        let a = s.random(200, 1).unwrap();
        assert_eq!(a, s.random(200, 1).unwrap());
        assert_ne!(a, s.random(200, 2).unwrap());
        assert_eq!(a[..20], s.random(20, 1).unwrap()[..]);
        let pairs = s.pairs().unwrap();
        let mut seen = std::collections::HashSet::new();
        for c in &a {
            let (f, h) = (c.features, c.params.name());
            let (_, _, range) = pairs
                .iter()
                .find(|(pf, ph, _)| *pf == f && head_params(*ph, 1.0, 0).unwrap().name() == h)
                .unwrap_or_else(|| panic!("{} is not a pair of the space", c.label()));
            let (name, v) = c.params.tuned();
            assert_eq!(name, range.name);
            assert!(
                v >= range.lo * 0.999 && v <= range.hi * 1.001,
                "{}",
                c.label()
            );
            assert_eq!(c.emb_weight.is_some(), f == FeatureSet::TfidfEmb);
            if let Some(w) = c.emb_weight {
                assert!((0.5..=4.0).contains(&w), "{}", c.label());
            }
            seen.insert((f, h));
        }
        // 200 draws reach every one of the 3·6 pairs.
        assert_eq!(seen.len(), 18);
        // No repeats.
        for (i, c) in a.iter().enumerate() {
            assert!(!a[..i].contains(c), "{} repeats", c.label());
        }
    }

    #[test]
    fn mlp_is_searched_on_every_feature_set_and_shared_is_refused() {
        let s = SearchSpace {
            heads: vec![HeadKind::Mlp],
            ..space()
        };
        let g = s.grid().unwrap();
        // 3 decays × (emb + tfidf + 4 weights).
        assert_eq!(g.len(), 18);
        assert!(g.iter().all(|c| c.params.tuned().0 == "alpha"));
        for c in s.random(30, 4).unwrap() {
            let a = c.params.tuned().1;
            assert!((0.3..=30.0).contains(&a), "{}", c.label());
        }
        let shared = SearchSpace {
            heads: vec![HeadKind::Shared],
            ..space()
        };
        let e = shared.grid().unwrap_err().to_string();
        assert!(e.contains("head shared"), "{e}");
    }

    #[test]
    fn the_grid_is_every_combination() {
        let g = space().grid().unwrap();
        // logreg, svm: 3 C × (emb + tfidf + 4 weights) = 18 each; nb 5 × 6; knn 6 × 6;
        // rf, gbdt: 3 values × 6, sparse TF-IDF included.
        assert_eq!(g.len(), 18 + 18 + 30 + 36 + 18 + 18);
        let fused_logreg: Vec<String> = g
            .iter()
            .filter(|c| c.features == FeatureSet::TfidfEmb && c.params.name() == "logreg")
            .map(Config::label)
            .collect();
        assert_eq!(fused_logreg.len(), 12);
        assert_eq!(fused_logreg[0], "tfidf+emb:logreg c=0.1 emb_weight=0.5");
        let trees_on_tfidf = SearchSpace {
            feature_sets: vec![FeatureSet::Tfidf],
            heads: vec![HeadKind::Rf, HeadKind::Gbdt],
            ..space()
        };
        assert_eq!(trees_on_tfidf.grid().unwrap().len(), 6);
        let empty = SearchSpace {
            heads: vec![],
            ..space()
        };
        assert!(empty.grid().unwrap_err().to_string().contains("empty"));
    }
}
