//! `lmfuse tune`: hyperparameter and strategy search (feature set, head, the head's main
//! hyperparameter, the embedding weight of feature fusion), every configuration scored by
//! stratified k-fold cross-validation on train, optionally with successive halving. Dev and
//! test are reported for the winner only, never used to choose.
//!
//! As in `lmfuse compare`, TF-IDF is fit once on all of train and the folds reuse it: the
//! held-out fold's n-grams are in the vocabulary and count in the idf, a small leak that makes
//! CV of TF-IDF configurations slightly optimistic (the same for every configuration of one
//! run, so rankings are barely touched).

use crate::classify::{print_reports, HeadArg};
use crate::compare::ExperimentArgs;
use crate::progress::Bars;
use clap::Args;
use lmfuse_pipeline::tune::{SearchKind, TuneOutcome, TuneSpec};

/// Arguments of `lmfuse tune`.
#[derive(Args, Debug)]
pub struct TuneArgs {
    #[command(flatten)]
    pub(crate) exp: ExperimentArgs,
    /// Feature sets searched, comma-separated: emb, tfidf, tfidf+emb.
    #[arg(long, value_delimiter = ',', default_value = "emb,tfidf,tfidf+emb")]
    feature_sets: Vec<String>,
    /// Heads searched, comma-separated (every head reads every set; `mlp` may be added, `shared`
    /// is not searched). Ranges of their main hyperparameter (random search, log-uniform):
    /// logreg C 0.01-100, svm C 0.01-10, nb alpha 0.01-1, knn k 1-50, rf n_trees 50-300, gbdt
    /// learning_rate 0.02-0.3, mlp weight decay alpha 0.3-30.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "logreg,svm,nb,knn,rf,gbdt"
    )]
    heads: Vec<HeadArg>,
    /// Random draws or the full grid.
    #[arg(long, value_enum, default_value = "random")]
    search: SearchKind,
    /// Configurations drawn by random search.
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Successive halving: the first rung cross-validates every configuration on a seeded
    /// stratified subsample of train, each rung keeps the best 1/eta on an eta times larger
    /// one, the last uses all of train (the first rung has at least 2 × folds × classes and
    /// 50 rows; fewer rungs otherwise).
    #[arg(long)]
    halving: bool,
    /// Halving rate.
    #[arg(long, default_value_t = 3)]
    eta: usize,
    /// Weights of the embedding block of tfidf+emb configurations: the grid, and for random
    /// search the log-uniform range from the smallest to the largest.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,2,4")]
    emb_weights: Vec<f32>,
}

impl TuneArgs {
    fn spec(&self) -> anyhow::Result<TuneSpec> {
        Ok(TuneSpec {
            exp: self.exp.spec("tune")?,
            feature_sets: self.feature_sets.clone(),
            heads: self.heads.iter().map(|h| h.kind()).collect(),
            search: self.search,
            trials: self.trials,
            halving: self.halving,
            eta: self.eta,
            emb_weights: self.emb_weights.clone(),
        })
    }
}

/// Runs `lmfuse tune`.
pub fn run(args: &TuneArgs, quiet: bool) -> anyhow::Result<()> {
    let spec = args.spec()?;
    let outcome = lmfuse_pipeline::tune::tune(&spec, &Bars::new(quiet || args.exp.json))?;
    if args.exp.json {
        outln!("{}", serde_json::to_string(&outcome)?)?;
    } else {
        print_board(&outcome);
        print_best(&outcome);
    }
    Ok(())
}

fn print_board(outcome: &TuneOutcome) {
    eprintln!(
        "{:>4} {:<48} {:>16} {:>6} {:>7} {:>8}",
        "rank", "configuration", "cv acc (± std)", "rung", "rows", "fit s"
    );
    for (i, t) in outcome.trials.iter().enumerate() {
        match &t.error {
            None => eprintln!(
                "{:>4} {:<48} {:>8.2} ± {:<5.2} {:>6} {:>7} {:>8.1}",
                i + 1,
                t.config,
                100.0 * t.cv_accuracy,
                100.0 * t.cv_std,
                format!("{}/{}", t.rung, outcome.rungs.len() - 1),
                t.rows,
                t.fit_seconds
            ),
            Some(e) => eprintln!("{:>4} {:<48} failed: {e}", i + 1, t.config),
        }
    }
}

fn print_best(outcome: &TuneOutcome) {
    let best = &outcome.best;
    eprintln!(
        "best by {}-fold CV on train: {} ({:.2} ± {:.2}); refit on all {} training rows:",
        outcome.folds,
        best.config,
        100.0 * best.cv_accuracy,
        100.0 * best.cv_std,
        outcome.train
    );
    match &best.dev {
        Some(dev) => print_reports(&[("dev", dev), ("test", &best.test)]),
        None => print_reports(&[("test", &best.test)]),
    }
    let (features, search) = (best.seconds["features"], best.seconds["search"]);
    match &best.bundle {
        Some(b) => eprintln!(
            "saved bundle to {b} ({:.1} s: features {features:.1} s, search {search:.1} s)",
            best.seconds["total"]
        ),
        None => eprintln!(
            "{:.1} s: features {features:.1} s, search {search:.1} s (no --out: nothing saved)",
            best.seconds["total"]
        ),
    }
}
