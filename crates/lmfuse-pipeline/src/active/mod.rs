//! Active learning: which texts of an unlabelled pool to label next (by the model's
//! uncertainty, by diversity of their embeddings, or both), and a simulation of the whole loop
//! on a labelled set whose labels stay hidden until bought, which gives the learning curve.

mod curves;
mod select;
pub use curves::{
    curves_svg, learning_curves, CurvesReport, CurvesSpec, StrategyCurve, SummaryPoint,
};
pub use select::{select_next, Chosen};

use crate::ensure;
use crate::error::Result;
use lmfuse_classic::{ClassWeight, LogisticRegressionParams};
use lmfuse_core::{DenseMatrix, Features, SeededRng};
use serde::Serialize;
use std::str::FromStr;

/// How the next texts to label are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Uniformly at random (the baseline).
    Random,
    /// Lowest top probability.
    LeastConfidence,
    /// Smallest gap between the two most probable classes.
    Margin,
    /// Highest entropy of the class probabilities.
    Entropy,
    /// Diversity: k-center greedy on the embeddings (each pick the text farthest from every
    /// labelled or picked one).
    #[serde(rename = "kcenter")]
    KCenter,
    /// Uncertainty within diversity: k-center greedy among the [`HYBRID_SHORTLIST`] × n texts
    /// of smallest margin.
    Hybrid,
}

/// How many times the number to pick the hybrid strategy shortlists by margin.
pub const HYBRID_SHORTLIST: usize = 10;

impl Strategy {
    /// Every strategy, baseline first.
    pub const ALL: [Strategy; 6] = [
        Strategy::Random,
        Strategy::LeastConfidence,
        Strategy::Margin,
        Strategy::Entropy,
        Strategy::KCenter,
        Strategy::Hybrid,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Random => "random",
            Strategy::LeastConfidence => "least-confidence",
            Strategy::Margin => "margin",
            Strategy::Entropy => "entropy",
            Strategy::KCenter => "kcenter",
            Strategy::Hybrid => "hybrid",
        }
    }

    /// Whether it reads the model's probabilities.
    pub fn needs_probabilities(self) -> bool {
        !matches!(self, Strategy::Random | Strategy::KCenter)
    }

    /// Whether it reads embeddings.
    pub fn needs_embeddings(self) -> bool {
        matches!(self, Strategy::KCenter | Strategy::Hybrid)
    }
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Strategy, String> {
        Strategy::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Strategy::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown strategy {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// What a strategy may read about the pool: class probabilities (`rows × n_classes`) and
/// embeddings (one row per text).
#[derive(Debug, Clone, Copy)]
pub struct PoolView<'a> {
    /// Class probabilities of every text, row-major.
    pub proba: Option<&'a [f32]>,
    /// Classes per row of `proba`.
    pub n_classes: usize,
    /// Embeddings of every text.
    pub embeddings: Option<&'a DenseMatrix>,
}

/// How unsure the model is of each row of `proba` (`n_classes` per row), by `strategy`'s
/// measure (see [`uncertainty_of`]): higher is less sure.
pub fn uncertainty(strategy: Strategy, proba: &[f32], n_classes: usize) -> Vec<f64> {
    proba
        .chunks(n_classes)
        .map(|row| uncertainty_of(strategy, row))
        .collect()
}

/// How unsure the model is of one row of class probabilities, by `strategy`'s measure (margin
/// for the strategies that have none of their own): higher is less sure.
pub fn uncertainty_of(strategy: Strategy, row: &[f32]) -> f64 {
    let (first, second) = top_two(row);
    match strategy {
        Strategy::LeastConfidence => 1.0 - first,
        Strategy::Entropy => row
            .iter()
            .map(|&p| f64::from(p))
            .filter(|&p| p > 0.0)
            .map(|p| -p * p.ln())
            .sum(),
        _ => 1.0 - (first - second),
    }
}

fn top_two(row: &[f32]) -> (f64, f64) {
    let (mut first, mut second) = (0.0f64, 0.0f64);
    for &p in row {
        let p = f64::from(p);
        if p > first {
            second = first;
            first = p;
        } else if p > second {
            second = p;
        }
    }
    (first, second)
}

/// Chooses `n` of `candidates` (rows of the pool) to label next; `labelled` are the rows
/// labelled already (diversity keeps away from them). The order is the order of choice.
pub fn choose(
    strategy: Strategy,
    pool: PoolView<'_>,
    labelled: &[usize],
    candidates: &[usize],
    n: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    let n = n.min(candidates.len());
    ensure!(
        !strategy.needs_probabilities() || pool.proba.is_some(),
        "strategy {}: needs the model's probabilities",
        strategy.name()
    );
    ensure!(
        !strategy.needs_embeddings() || pool.embeddings.is_some(),
        "strategy {}: needs embeddings (a bundle with an encoder, or --encoder)",
        strategy.name()
    );
    Ok(match strategy {
        Strategy::Random => {
            let mut order = candidates.to_vec();
            SeededRng::new(seed).shuffle(&mut order);
            order.truncate(n);
            order
        }
        Strategy::KCenter => k_center(pool.embeddings.expect("checked"), labelled, candidates, n),
        Strategy::Hybrid => {
            let shortlist =
                most_uncertain(Strategy::Margin, pool, candidates, n * HYBRID_SHORTLIST);
            k_center(pool.embeddings.expect("checked"), labelled, &shortlist, n)
        }
        _ => most_uncertain(strategy, pool, candidates, n),
    })
}

/// The `n` candidates the model is least sure of, least sure first (ties: lower row first).
fn most_uncertain(
    strategy: Strategy,
    pool: PoolView<'_>,
    candidates: &[usize],
    n: usize,
) -> Vec<usize> {
    let proba = pool.proba.expect("checked");
    let k = pool.n_classes;
    let mut scored: Vec<(f64, usize)> = candidates
        .iter()
        .map(|&i| (uncertainty_of(strategy, &proba[i * k..(i + 1) * k]), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(n).map(|(_, i)| i).collect()
}

/// k-center greedy (Sener & Savarese 2018): each pick is the candidate farthest (Euclidean)
/// from every labelled row and every earlier pick; with nothing labelled the first pick is the
/// first candidate.
pub fn k_center(x: &DenseMatrix, labelled: &[usize], candidates: &[usize], n: usize) -> Vec<usize> {
    let mut nearest = vec![f32::INFINITY; candidates.len()];
    let update = |center: usize, nearest: &mut [f32]| {
        let c = x.row(center);
        for (d, &i) in nearest.iter_mut().zip(candidates) {
            let dist: f32 = x.row(i).iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum();
            *d = d.min(dist);
        }
    };
    for &l in labelled {
        update(l, &mut nearest);
    }
    let mut picked = Vec::with_capacity(n);
    let mut taken = vec![false; candidates.len()];
    while picked.len() < n.min(candidates.len()) {
        let best = (0..candidates.len())
            .filter(|&j| !taken[j])
            .max_by(|&a, &b| nearest[a].total_cmp(&nearest[b]).then(b.cmp(&a)))
            .expect("a candidate is left");
        taken[best] = true;
        picked.push(candidates[best]);
        update(candidates[best], &mut nearest);
    }
    picked
}

/// The loop of [`simulate`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SimulateSpec {
    /// How each round chooses.
    pub strategy: Strategy,
    /// Labels bought at random before the first round.
    pub initial: usize,
    /// Labels bought per round.
    pub step: usize,
    /// Labels bought in all (the curve's last point).
    pub budget: usize,
    /// Inverse regularisation of the logistic regression trained after each round.
    pub c: f64,
    /// Seed of the initial draw (and of the random strategy).
    pub seed: u64,
}

impl SimulateSpec {
    /// Checks the numbers against a pool of `pool` texts.
    pub fn check(&self, pool: usize) -> Result<()> {
        ensure!(pool > 0, "the pool is empty");
        ensure!(
            self.initial > 0 && self.step > 0,
            "--initial and --step must be positive"
        );
        ensure!(
            self.budget >= self.initial,
            "--budget {} is below --initial {}",
            self.budget,
            self.initial
        );
        ensure!(
            self.budget <= pool,
            "--budget {} is larger than the pool ({pool} texts)",
            self.budget
        );
        ensure!(
            self.c.is_finite() && self.c > 0.0,
            "C must be a positive number"
        );
        Ok(())
    }
}

/// One point of a learning curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurvePoint {
    /// Labels bought so far.
    pub labels: usize,
    /// Accuracy on the test set of the model trained on them.
    pub accuracy: f64,
    /// Its macro F1.
    pub macro_f1: f64,
}

/// Labelled embeddings: rows of `x` with class indices `y` (`< n_classes`).
#[derive(Debug, Clone, Copy)]
pub struct Labelled<'a> {
    /// One row per text.
    pub x: &'a DenseMatrix,
    /// Class index per row.
    pub y: &'a [usize],
    /// Number of classes.
    pub n_classes: usize,
}

/// Runs active learning on `pool` whose labels are hidden until bought: `spec.initial` at
/// random, then rounds of `spec.step` chosen by `spec.strategy` from the probabilities of a
/// logistic regression on the labels bought so far, up to `spec.budget`; after each round the
/// model is scored on `test`.
pub fn simulate(
    pool: Labelled<'_>,
    test: Labelled<'_>,
    spec: &SimulateSpec,
) -> Result<Vec<CurvePoint>> {
    spec.check(pool.x.rows())?;
    let all: Vec<usize> = (0..pool.x.rows()).collect();
    let mut bought = choose(
        Strategy::Random,
        view(None, 0, pool.x),
        &[],
        &all,
        spec.initial,
        spec.seed,
    )?;
    // Wrapped once: every round predicts the whole pool and the test set.
    let pool_features = Features::Dense(pool.x.clone());
    let test_features = Features::Dense(test.x.clone());
    let mut curve = Vec::new();
    loop {
        let model = fit(pool, &bought, spec.c)?;
        curve.push(model.score((&test_features, test.y), bought.len())?);
        if bought.len() >= spec.budget {
            return Ok(curve);
        }
        let mut is_bought = vec![false; all.len()];
        bought.iter().for_each(|&i| is_bought[i] = true);
        let candidates: Vec<usize> = all.iter().copied().filter(|&i| !is_bought[i]).collect();
        let proba = match spec.strategy.needs_probabilities() {
            true => Some(model.proba(&pool_features)?),
            false => None,
        };
        let n = spec.step.min(spec.budget - bought.len());
        let seed = spec.seed ^ (bought.len() as u64).wrapping_mul(0x9E37_79B9);
        let pick = choose(
            spec.strategy,
            view(proba.as_deref(), model.classes.len(), pool.x),
            &bought,
            &candidates,
            n,
            seed,
        )?;
        bought.extend(pick);
    }
}

fn view<'a>(proba: Option<&'a [f32]>, n_classes: usize, x: &'a DenseMatrix) -> PoolView<'a> {
    PoolView {
        proba,
        n_classes,
        embeddings: Some(x),
    }
}

/// A logistic regression over the classes seen among the labels bought.
struct Fitted {
    head: Option<lmfuse_classic::LogisticRegression>,
    /// The pool's class of each of the head's classes.
    classes: Vec<usize>,
    n_classes: usize,
}

fn fit(pool: Labelled<'_>, bought: &[usize], c: f64) -> Result<Fitted> {
    let mut classes: Vec<usize> = bought.iter().map(|&i| pool.y[i]).collect();
    classes.sort_unstable();
    classes.dedup();
    let head = match classes.len() {
        // One class seen: every text gets it.
        1 => None,
        _ => {
            let y: Vec<usize> = bought
                .iter()
                .map(|&i| classes.binary_search(&pool.y[i]).expect("seen"))
                .collect();
            let x = Features::Dense(pool.x.select_rows(bought));
            let params = LogisticRegressionParams {
                c,
                class_weight: ClassWeight::Uniform,
                ..Default::default()
            };
            Some(params.fit(&x, &y, classes.len())?)
        }
    };
    Ok(Fitted {
        head,
        classes,
        n_classes: pool.n_classes,
    })
}

impl Fitted {
    /// Probabilities over the classes seen, row-major.
    fn proba(&self, x: &Features) -> Result<Vec<f32>> {
        Ok(match &self.head {
            Some(head) => head.predict_proba(x)?,
            None => vec![1.0; x.rows()],
        })
    }

    /// Accuracy and macro F1 on the test rows `x` with classes `y`, over all the pool's
    /// classes.
    fn score(&self, (x, y): (&Features, &[usize]), labels: usize) -> Result<CurvePoint> {
        let k = self.classes.len();
        let seen = self.proba(x)?;
        let mut proba = vec![0.0f32; x.rows() * self.n_classes];
        for (row, out) in seen.chunks(k).zip(proba.chunks_mut(self.n_classes)) {
            for (&p, &class) in row.iter().zip(&self.classes) {
                out[class] = p;
            }
        }
        let names: Vec<String> = (0..self.n_classes).map(|c| c.to_string()).collect();
        let report = lmfuse_metrics::evaluate(y, &proba, &names)?;
        Ok(CurvePoint {
            labels,
            accuracy: report.accuracy,
            macro_f1: report.macro_f1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncertainty_measures_match_their_definitions() {
        let proba = [0.7, 0.2, 0.1, 0.4, 0.35, 0.25];
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(close(
            &uncertainty(Strategy::LeastConfidence, &proba, 3),
            &[0.3, 0.6]
        ));
        assert!(close(
            &uncertainty(Strategy::Margin, &proba, 3),
            &[0.5, 0.95]
        ));
        let h = |p: &[f64]| -p.iter().map(|&q| q * q.ln()).sum::<f64>();
        let expected = [h(&[0.7, 0.2, 0.1]), h(&[0.4, 0.35, 0.25])];
        assert!(close(&uncertainty(Strategy::Entropy, &proba, 3), &expected));
    }

    #[test]
    fn k_center_picks_the_farthest_point_each_time() {
        let x = DenseMatrix::new(5, 1, vec![0.0, 1.0, 2.0, 10.0, 4.0]).unwrap();
        assert_eq!(k_center(&x, &[0], &[1, 2, 3, 4], 2), vec![3, 4]);
        assert_eq!(k_center(&x, &[], &[0, 1, 2, 3], 2), vec![0, 3]);
    }

    #[test]
    fn the_hybrid_keeps_to_uncertain_texts_and_spreads_over_them() {
        // Rows 0-3 unsure (two far apart pairs), rows 4-5 sure.
        let proba = [
            0.5, 0.5, 0.5, 0.5, 0.55, 0.45, 0.55, 0.45, 0.99, 0.01, 0.99, 0.01,
        ];
        let x = DenseMatrix::new(6, 1, vec![0.0, 0.1, 5.0, 5.1, 9.0, 20.0]).unwrap();
        let pool = PoolView {
            proba: Some(&proba),
            n_classes: 2,
            embeddings: Some(&x),
        };
        let all: Vec<usize> = (0..6).collect();
        assert_eq!(
            choose(Strategy::Margin, pool, &[], &all, 2, 0).unwrap(),
            vec![0, 1]
        );
        let hybrid = choose(Strategy::Hybrid, pool, &[], &[0, 1, 2, 3], 2, 0).unwrap();
        assert_eq!(hybrid, vec![0, 3], "one of each pair");
        let blind = PoolView {
            proba: None,
            ..pool
        };
        let e = choose(Strategy::Entropy, blind, &[], &all, 2, 0).unwrap_err();
        assert!(e.to_string().contains("probabilities"), "{e}");
    }

    /// Two Gaussian-ish blobs per class on a line, seeded.
    fn blobs(n: usize, seed: u64) -> (DenseMatrix, Vec<usize>) {
        let mut rng = SeededRng::new(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let class = i % 3;
            let noise = (rng.below(1000) as f32 / 1000.0 - 0.5) * 1.5;
            x.extend([class as f32 + noise, (class as f32 * 2.0).sin() + noise]);
            y.push(class);
        }
        (DenseMatrix::new(n, 2, x).unwrap(), y)
    }

    #[test]
    fn a_simulation_is_seeded_and_buys_up_to_its_budget() {
        let (px, py) = blobs(300, 1);
        let (tx, ty) = blobs(150, 2);
        let pool = Labelled {
            x: &px,
            y: &py,
            n_classes: 3,
        };
        let test = Labelled {
            x: &tx,
            y: &ty,
            n_classes: 3,
        };
        let spec = SimulateSpec {
            strategy: Strategy::Margin,
            initial: 6,
            step: 10,
            budget: 50,
            c: 1.0,
            seed: 4,
        };
        let curve = simulate(pool, test, &spec).unwrap();
        let labels: Vec<usize> = curve.iter().map(|p| p.labels).collect();
        assert_eq!(labels, vec![6, 16, 26, 36, 46, 50]);
        assert_eq!(
            curve,
            simulate(pool, test, &spec).unwrap(),
            "same seed, same curve"
        );
        assert!(curve.last().unwrap().accuracy > 0.5, "{curve:?}");
        for (budget, named) in [(301, "larger than the pool"), (3, "below --initial")] {
            let e = simulate(pool, test, &SimulateSpec { budget, ..spec }).unwrap_err();
            assert!(e.to_string().contains(named), "{e}");
        }
    }
}
