//! `lmfuse tune`: hyperparameter and strategy search (feature set, head, the head's main
//! hyperparameter, the embedding weight of feature fusion), every configuration scored by
//! stratified k-fold cross-validation on train, optionally with successive halving. Dev and
//! test are reported for the winner only, never used to choose.
//!
//! As in `lmfuse compare`, TF-IDF is fit once on all of train and the folds reuse it: the
//! held-out fold's n-grams are in the vocabulary and count in the idf, a small leak that makes
//! CV of TF-IDF configurations slightly optimistic (the same for every configuration of one
//! run, so rankings are barely touched).

use crate::compare::{blocks_of, fold_accuracies, mean_std, ExperimentSpec, SplitFeatures};
use crate::data::{DataReport, Splits};
use crate::ensure;
use crate::error::{Context, Result};
use crate::observe::Observer;
use lmfuse_classic::ProbaHead;
use lmfuse_core::Features;
use lmfuse_metrics::Report;
use lmfuse_train::search::{self, Config, FeatureSet, Rung, SearchSpace};
use lmfuse_train::{
    BlockWeights, Blocks, Classifier, HeadCard, HeadKind, ModelCard, TextFeaturizer,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// How configurations are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SearchKind {
    /// `--trials` draws: a (feature set, head) pair uniformly, its hyperparameter and the
    /// fusion weight log-uniformly over their ranges.
    Random,
    /// Every combination of feature set, head, the head's grid and the fusion weights.
    Grid,
}

/// What `tune` searches: feature sets, heads, their hyperparameters and the fusion weight,
/// drawn at random or on a grid, optionally with successive halving.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneSpec {
    /// The data, encoder, folds and output.
    pub exp: ExperimentSpec,
    /// Feature sets searched, comma-separated: emb, tfidf, tfidf+emb.
    pub feature_sets: Vec<String>,
    /// Heads searched, comma-separated (every head reads every set; `mlp` may be added, `shared`
    /// is not searched). Ranges of their main hyperparameter (random search, log-uniform):
    /// logreg C 0.01-100, svm C 0.01-10, nb alpha 0.01-1, knn k 1-50, rf n_trees 50-300, gbdt
    /// learning_rate 0.02-0.3, mlp weight decay alpha 0.3-30.
    pub heads: Vec<HeadKind>,
    /// Random draws or the full grid.
    pub search: SearchKind,
    /// Configurations drawn by random search.
    pub trials: usize,
    /// Successive halving: the first rung cross-validates every configuration on a seeded
    /// stratified subsample of train, each rung keeps the best 1/eta on an eta times larger
    /// one, the last uses all of train (the first rung has at least 2 × folds × classes and
    /// 50 rows; fewer rungs otherwise).
    pub halving: bool,
    /// Halving rate.
    pub eta: usize,
    /// Weights of the embedding block of tfidf+emb configurations: the grid, and for random
    /// search the log-uniform range from the smallest to the largest.
    pub emb_weights: Vec<f32>,
}

/// One configuration's cross-validated score on one rung.
#[derive(Debug, Clone, Serialize)]
pub struct RungScore {
    pub rung: usize,
    pub rows: usize,
    pub cv_accuracy: f64,
    pub cv_std: f64,
    pub seconds: f64,
}

/// One configuration tried.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub id: usize,
    pub config: String,
    pub features: &'static str,
    pub head: &'static str,
    pub param: &'static str,
    pub value: f64,
    pub emb_weight: Option<f32>,
    pub params: lmfuse_classic::HeadParams,
    /// The last rung it was scored on, and its score there.
    pub rung: usize,
    pub rows: usize,
    pub cv_accuracy: f64,
    pub cv_std: f64,
    /// Seconds of all its cross-validation fits.
    pub fit_seconds: f64,
    pub scores: Vec<RungScore>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The winner, refit on all of train (keys as `lmfuse train --json`, plus the CV score).
#[derive(Debug, Clone, Serialize)]
pub struct Best {
    pub bundle: Option<String>,
    pub encoder: String,
    pub config: String,
    pub head: &'static str,
    pub features: Vec<String>,
    /// The f32 weight stored in the bundle, widened exactly (as the manifest reads back).
    pub emb_weight: f64,
    pub labels: Vec<String>,
    pub data: DataReport,
    pub selected: BTreeMap<&'static str, serde_json::Value>,
    pub cv_accuracy: f64,
    pub cv_std: f64,
    /// `null` without a dev file: tune carves none.
    pub dev: Option<Report>,
    pub test: Report,
    pub seconds: BTreeMap<&'static str, f64>,
}

fn weights_of(c: &Config) -> BlockWeights {
    BlockWeights::with_emb(c.emb_weight.unwrap_or(1.0))
}

/// Cross-validated accuracy (mean, std over folds) of `config` on the rows of `blocks`. The
/// head is fit in its cheaper [`lmfuse_classic::HeadParams::for_selection`] form (the SVM
/// without its probability calibration folds), as `lmfuse train` selects on dev; the winner is
/// refit as configured.
fn cross_validate(
    config: &Config,
    blocks: &Blocks,
    y: &[usize],
    k: usize,
    folds: &[usize],
    n_folds: usize,
) -> Result<(f64, f64)> {
    let x = blocks_of(blocks, config.features.tfidf(), config.features.emb())
        .fuse(&weights_of(config))?;
    let params = config.params.for_selection();
    let oof = lmfuse_fusion::out_of_fold(&x, y, k, &params, folds)?;
    Ok(mean_std(&fold_accuracies(&oof, y, folds, n_folds, k)))
}

/// Searches configurations by k-fold cross-validation on train (never dev or test), refits the
/// best on all of train, reports dev and test for it, and saves it to `exp.out`.
pub fn tune(args: &TuneSpec, on: &dyn Observer) -> Result<TuneOutcome> {
    let started = Instant::now();
    let configs = configurations(args)?;
    // Data, embeddings (through the cache) and TF-IDF (fit on train), once for every trial.
    // No --dev: no dev rows; the search never reads dev, so a slice would only cost train rows.
    let splits = args.exp.splits(false)?;
    let n_train = splits.train.texts.len();
    let needs_emb = configs.iter().any(|c| c.features.emb());
    let needs_tfidf = configs.iter().any(|c| c.features.tfidf());
    let t = Instant::now();
    let features = args.exp.features(&splits, needs_emb, needs_tfidf, on)?;
    let train_rows: Vec<usize> = (0..n_train).collect();
    let blocks_train = features.blocks.select_rows(&train_rows);
    let features_seconds = t.elapsed().as_secs_f64();
    let schedule = schedule_of(args, n_train, configs.len(), splits.labels.len());
    let t = Instant::now();
    let mut trials: Vec<Trial> = configs.iter().enumerate().map(new_trial).collect();
    let mut alive: Vec<usize> = (0..configs.len()).collect();
    let order = search::stratified_order(&splits.y_train, args.exp.seed);
    for (r, rung) in schedule.iter().enumerate() {
        let (y, sub) = rung_rows(&order[..rung.rows], &splits.y_train, &blocks_train);
        on.note(&format!(
            "tune: rung {r}/{}: {} configurations, {}-fold CV on {} of {} training rows",
            schedule.len() - 1,
            alive.len(),
            args.exp.folds,
            rung.rows,
            n_train
        ));
        let data = RungData {
            rung: r,
            blocks: &sub,
            y: &y,
            folds: lmfuse_fusion::stratified_folds(&y, args.exp.folds, args.exp.seed),
            k: splits.labels.len(),
        };
        for &i in &alive {
            score_trial(args, &configs[i], &mut trials[i], &data, on);
        }
        survivors(&mut alive, &trials, schedule.get(r + 1))?;
    }
    let search_seconds = t.elapsed().as_secs_f64();
    let best_id = alive[0];
    let t = Instant::now();
    let winner = (&configs[best_id], &trials[best_id]);
    let refit = refit_best(args, &splits, &features, winner, configs.len())?;
    let fit_seconds = t.elapsed().as_secs_f64();
    let seconds = BTreeMap::from([
        ("features", features_seconds),
        ("search", search_seconds),
        ("fit", fit_seconds),
        ("total", started.elapsed().as_secs_f64()),
    ]);
    let best = best_of(
        args,
        splits.report.clone(),
        refit,
        &trials[best_id],
        seconds,
    );
    Ok(TuneOutcome {
        labels: splits.labels.names().to_vec(),
        train: n_train,
        dev: splits.dev.texts.len(),
        test: splits.test.texts.len(),
        search: format!("{:?}", args.search).to_lowercase(),
        folds: args.exp.folds,
        seed: args.exp.seed,
        halving: args.halving,
        eta: args.eta,
        rungs: schedule,
        trials: leaderboard(trials),
        best,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The configurations `args` asks for (feature sets and heads deduplicated, in order), after
/// checking its settings.
fn configurations(args: &TuneSpec) -> Result<Vec<Config>> {
    args.exp.check("tune")?;
    ensure!(args.eta >= 2, "--eta must be at least 2");
    ensure!(args.trials >= 1, "--trials must be at least 1");
    let mut feature_sets: Vec<FeatureSet> = Vec::new();
    for s in &args.feature_sets {
        let f = FeatureSet::parse(s.trim())?;
        if !feature_sets.contains(&f) {
            feature_sets.push(f);
        }
    }
    let mut heads = Vec::new();
    for h in &args.heads {
        if !heads.contains(h) {
            heads.push(*h);
        }
    }
    let space = SearchSpace {
        feature_sets,
        heads,
        c_grid: args.exp.c_grid.clone(),
        emb_weights: args.emb_weights.clone(),
        head_seed: args.exp.seed,
    };
    Ok(match args.search {
        SearchKind::Random => space.random(args.trials, args.exp.seed)?,
        SearchKind::Grid => space.grid()?,
    })
}

/// The rungs: one on all of train, or successive halving down from `n_configs`
/// configurations on the fewest rows that still give every class of `k` rows in every fold.
fn schedule_of(args: &TuneSpec, n_train: usize, n_configs: usize, k: usize) -> Vec<Rung> {
    if args.halving {
        let min_rows = (2 * args.exp.folds * k).max(50);
        search::halving_schedule(n_train, n_configs, args.eta, min_rows)
    } else {
        vec![Rung {
            rows: n_train,
            configs: n_configs,
        }]
    }
}

/// The classes and feature blocks of the training rows `rows` (in file order).
fn rung_rows(rows: &[usize], y_train: &[usize], blocks_train: &Blocks) -> (Vec<usize>, Blocks) {
    let mut rows = rows.to_vec();
    rows.sort_unstable();
    let y = rows.iter().map(|&i| y_train[i]).collect();
    let sub = match rows.len() == y_train.len() {
        true => blocks_train.clone(),
        false => blocks_train.select_rows(&rows),
    };
    (y, sub)
}

/// Trial `id` of configuration `c`, not yet scored.
fn new_trial((id, c): (usize, &Config)) -> Trial {
    let (param, value) = c.params.tuned();
    Trial {
        id,
        config: c.label(),
        features: c.features.name(),
        head: c.params.name(),
        param,
        value,
        emb_weight: c.emb_weight,
        params: c.params,
        rung: 0,
        rows: 0,
        cv_accuracy: f64::NAN,
        cv_std: f64::NAN,
        fit_seconds: 0.0,
        scores: Vec::new(),
        error: None,
    }
}

/// The rows of one rung: its index, their feature blocks, classes and folds, the number of
/// classes.
struct RungData<'a> {
    rung: usize,
    blocks: &'a Blocks,
    y: &'a [usize],
    folds: Vec<usize>,
    k: usize,
}

/// Scores `config` on the rung's rows by cross-validation into `trial` (its score, or the
/// error that stopped it).
fn score_trial(
    args: &TuneSpec,
    config: &Config,
    trial: &mut Trial,
    data: &RungData<'_>,
    on: &dyn Observer,
) {
    let t = Instant::now();
    let n_folds = args.exp.folds;
    let result = cross_validate(config, data.blocks, data.y, data.k, &data.folds, n_folds);
    let seconds = t.elapsed().as_secs_f64();
    trial.rung = data.rung;
    trial.rows = data.y.len();
    trial.fit_seconds += seconds;
    match result {
        Ok((mean, std)) => {
            trial.cv_accuracy = mean;
            trial.cv_std = std;
            trial.scores.push(RungScore {
                rung: data.rung,
                rows: data.y.len(),
                cv_accuracy: mean,
                cv_std: std,
                seconds,
            });
            on.note(&format!(
                "  {:<48} {:>7.2} ± {:<5.2} {:>7.1} s",
                trial.config,
                100.0 * mean,
                100.0 * std,
                seconds
            ));
        }
        Err(e) => {
            trial.cv_accuracy = f64::NAN;
            trial.error = Some(e.chain_message());
            on.note(&format!(
                "  {:<48} failed: {}",
                trial.config,
                e.chain_message()
            ));
        }
    }
}

/// Keeps the trials in `alive` that did not fail, best first (the earlier trial on ties), as
/// many as the `next` rung takes; an error when every one failed.
fn survivors(alive: &mut Vec<usize>, trials: &[Trial], next: Option<&Rung>) -> Result<()> {
    alive.retain(|&i| trials[i].error.is_none());
    ensure!(
        !alive.is_empty(),
        "every configuration failed; the first: {}",
        trials
            .iter()
            .find_map(|t| t.error.clone())
            .unwrap_or_default()
    );
    alive.sort_by(|&a, &b| {
        trials[b]
            .cv_accuracy
            .total_cmp(&trials[a].cv_accuracy)
            .then(a.cmp(&b))
    });
    if let Some(next) = next {
        alive.truncate(next.configs);
    }
    Ok(())
}

/// The winner refit on all of train: its card (saved as a bundle to `exp.out` when given),
/// its dev (without dev rows: none) and test reports.
struct Refit {
    card: ModelCard,
    weights: BlockWeights,
    dev: Option<Report>,
    test: Report,
}

/// Refits `config` (the search's winner, `trial`, of `n_configs`) on all of train, evaluates it on dev and
/// test (reported only) and saves it to `exp.out` when given.
fn refit_best(
    args: &TuneSpec,
    splits: &Splits,
    features: &SplitFeatures,
    (config, trial): (&Config, &Trial),
    n_configs: usize,
) -> Result<Refit> {
    let labels = &splits.labels;
    let weights = weights_of(config);
    let x = blocks_of(
        &features.blocks,
        config.features.tfidf(),
        config.features.emb(),
    )
    .fuse(&weights)?;
    let (n_train, n_dev) = (splits.y_train.len(), splits.y_dev.len());
    let rows = |r: std::ops::Range<usize>| x.select_rows(&r.collect::<Vec<_>>());
    let (xt, xd, xs): (Features, Features, Features) = (
        rows(0..n_train),
        rows(n_train..n_train + n_dev),
        rows(n_train + n_dev..x.rows()),
    );
    let model = config.params.fit(&xt, &splits.y_train, labels.len())?;
    let dev = match n_dev {
        0 => None,
        _ => Some(lmfuse_metrics::evaluate(
            &splits.y_dev,
            &model.predict_proba(&xd)?,
            labels.names(),
        )?),
    };
    let test =
        lmfuse_metrics::evaluate(&splits.y_test, &model.predict_proba(&xs)?, labels.names())?;
    let mut text = match config.features.tfidf() {
        true => features.tfidf.clone(),
        false => TextFeaturizer::default(),
    };
    text.weights = weights;
    let card = ModelCard::new(
        features.encoder.clone(),
        labels,
        &text,
        config.features.emb(),
        HeadCard::new(config.params, xt.cols()),
        serde_json::json!({
            "train_sha256": lmfuse_train::data_hash(&splits.train.texts, &splits.train.labels),
            "n_train": n_train,
            "seed": args.exp.seed,
            "selected_by": format!("{}-fold cross-validated accuracy on train", args.exp.folds),
            "search": format!("{:?}", args.search).to_lowercase(),
            "trials": n_configs,
            "halving": args.halving.then_some(args.eta),
            "dev": splits.report.dev_source,
            "test": splits.report.test_source,
        }),
        serde_json::json!({
            "cv_accuracy": trial.cv_accuracy,
            "dev": dev.as_ref().map(|d| serde_json::json!({"accuracy": d.accuracy, "macro_f1": d.macro_f1})),
            "test": {"accuracy": test.accuracy, "macro_f1": test.macro_f1},
        }),
    );
    if let Some(out) = &args.exp.out {
        let classifier = Classifier {
            card: card.clone(),
            labels: labels.clone(),
            head: model,
            text_features: text,
            oos: None,
        };
        let (manifest, tensors, json) = classifier.to_bundle(crate::VERSION, &crate::now_rfc3339());
        lmfuse_bundle::save(out, manifest, &tensors, &json)
            .with_context(|| format!("cannot save the bundle to {}", out.display()))?;
    }
    Ok(Refit {
        card,
        weights,
        dev,
        test,
    })
}

/// The report of the winner `trial`, refit as `refit`.
fn best_of(
    args: &TuneSpec,
    data: DataReport,
    refit: Refit,
    trial: &Trial,
    seconds: BTreeMap<&'static str, f64>,
) -> Best {
    Best {
        bundle: args.exp.out.as_ref().map(|p| p.display().to_string()),
        encoder: refit.card.encoder.reference.clone(),
        config: trial.config.clone(),
        head: trial.params.name(),
        features: refit.card.features.clone(),
        emb_weight: f64::from(refit.weights.emb),
        labels: refit.card.labels.clone(),
        data,
        selected: BTreeMap::from([
            ("param", serde_json::json!(trial.param)),
            ("value", serde_json::json!(trial.value)),
        ]),
        cv_accuracy: trial.cv_accuracy,
        cv_std: trial.cv_std,
        dev: refit.dev,
        test: refit.test,
        seconds,
    }
}

/// The trials, furthest rung first, then by their score there, then by trial id (failed
/// trials last).
fn leaderboard(mut trials: Vec<Trial>) -> Vec<Trial> {
    trials.sort_by(|a, b| {
        (a.error.is_some())
            .cmp(&b.error.is_some())
            .then(b.rung.cmp(&a.rung))
            .then(b.cv_accuracy.total_cmp(&a.cv_accuracy))
            .then(a.id.cmp(&b.id))
    });
    trials
}

/// What a `tune` run found.
#[derive(Debug, Clone, Serialize)]
pub struct TuneOutcome {
    /// The classes.
    pub labels: Vec<String>,
    /// Training rows.
    pub train: usize,
    /// Dev rows (0 without a dev file).
    pub dev: usize,
    /// Test rows.
    pub test: usize,
    /// `random` or `grid`.
    pub search: String,
    /// Folds.
    pub folds: usize,
    /// The seed.
    pub seed: u64,
    /// Whether successive halving ran.
    pub halving: bool,
    /// The halving rate.
    pub eta: usize,
    /// The schedule.
    pub rungs: Vec<Rung>,
    /// Every configuration: furthest rung first, then by its score there, then by id.
    pub trials: Vec<Trial>,
    /// The winner refit on all of train.
    pub best: Best,
    /// Wall time.
    pub seconds: f64,
}
