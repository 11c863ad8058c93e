//! `lmfuse train`, `lmfuse eval` and `lmfuse predict`: classifiers over encoder embeddings.

use crate::embed::{embed_texts, read_input};
use crate::loaded::load_bundle;
use crate::ModelArgs;
use anyhow::Context;
use clap::{Args, ValueEnum};
use lmfuse_cache::EmbeddingCache;
use lmfuse_classic::{ClassWeight, ProbaHead};
use lmfuse_core::{DenseMatrix, Features, LabelSet};
use lmfuse_data::{Cell, Format, LabelledTexts};
use lmfuse_encoder::{LoadOptions, ModelFiles};
use lmfuse_metrics::Report;
use lmfuse_train::{
    BlockWeights, Classifier, EncoderInfo, HeadCard, HeadKind, ModelCard, TextFeaturizer,
    TrainOptions,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where data comes from and which columns hold text and label.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Input format instead of guessing from the extension: jsonl, csv, tsv, parquet.
    #[arg(long)]
    format: Option<Format>,
    /// Field (JSONL) or column (CSV/TSV) holding the text.
    #[arg(long, default_value = "text")]
    pub(crate) text_col: String,
    /// Field or column holding the label.
    #[arg(long, default_value = "label")]
    label_col: String,
    /// Side columns for the `tab` feature block, comma-separated: numeric ones are
    /// standardised, the others one-hot encoded (fit on train).
    #[arg(long, value_delimiter = ',')]
    pub(crate) feature_cols: Vec<String>,
}

/// Embedding cache options.
#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// Neither read nor write the embedding cache.
    #[arg(long)]
    no_cache: bool,
    /// Cache folder (default: $LMFUSE_CACHE_DIR, else ~/.cache/lmfuse).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

impl CacheArgs {
    pub(crate) fn open(&self) -> anyhow::Result<Option<EmbeddingCache>> {
        if self.no_cache {
            return Ok(None);
        }
        let dir = self
            .cache_dir
            .clone()
            .unwrap_or_else(lmfuse_cache::default_dir);
        Ok(Some(EmbeddingCache::open(&dir)?))
    }
}

/// Heads `--head` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HeadArg {
    /// Multinomial logistic regression (L2, C chosen on dev).
    Logreg,
    /// Linear SVM, probabilities calibrated by Platt scaling on 3 folds (C chosen on dev).
    Svm,
    /// Naive Bayes: multinomial on non-negative features, else Gaussian (smoothing on dev).
    Nb,
    /// Cosine k-nearest neighbours (k chosen on dev).
    Knn,
    /// Random forest: 100 Gini trees, √d features a split, bootstrap (dense features).
    Rf,
    /// Histogram gradient-boosted trees, early stopping on a 10% holdout (dense features).
    Gbdt,
    /// Small MLP, deep fusion: every feature column into one ReLU hidden layer of 256 units
    /// (AdamW, dropout, early stopping on a 10% holdout; weight decay chosen on dev).
    Mlp,
    /// MLP with a shared hidden layer: the TF-IDF block and the embedding are each projected
    /// to 128 units, then share the hidden layer. Needs `tfidf` and `emb` features; side
    /// columns (`tab`), which come after the embedding, join the embedding's projection.
    Shared,
}

impl HeadArg {
    pub(crate) fn kind(self) -> HeadKind {
        match self {
            HeadArg::Logreg => HeadKind::Logreg,
            HeadArg::Svm => HeadKind::Svm,
            HeadArg::Nb => HeadKind::Nb,
            HeadArg::Knn => HeadKind::Knn,
            HeadArg::Rf => HeadKind::Rf,
            HeadArg::Gbdt => HeadKind::Gbdt,
            HeadArg::Mlp => HeadKind::Mlp,
            HeadArg::Shared => HeadKind::Shared,
        }
    }

    /// Whether the head can read these feature blocks: `shared` projects the TF-IDF block and
    /// the embedding apart, so it needs both.
    pub(crate) fn check_features(self, tfidf: bool, emb: bool) -> anyhow::Result<()> {
        anyhow::ensure!(
            self != HeadArg::Shared || (tfidf && emb),
            "--head shared projects the TF-IDF block and the embedding apart: it needs \
             --features tfidf,emb (use --head mlp for other feature sets)"
        );
        Ok(())
    }
}

/// The trailing dense columns the `shared` head projects apart from the classical block:
/// every column after the TF-IDF blocks (the embedding, then any side columns).
fn shared_dense_tail(text_features: &TextFeaturizer, n_features: usize) -> usize {
    let classical: usize = text_features.blocks().map(|(_, t)| t.dim()).sum();
    n_features - classical
}

/// Feature blocks `--features` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FeatureArg {
    /// Sentence embeddings of the encoder.
    Emb,
    /// TF-IDF of word 1-2-grams and of character 2-5-grams (sublinear tf), fit on train.
    Tfidf,
    /// The --feature-cols side columns (standardised numbers, one-hot categories).
    Tab,
}

/// Class weighting `--class-weight` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClassWeightArg {
    /// Every example weighs 1.
    Uniform,
    /// Weights inversely proportional to class frequency.
    Balanced,
}

/// Arguments of `lmfuse train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    cache: CacheArgs,
    /// Training data (JSONL, CSV or TSV with a text and a label column).
    #[arg(long)]
    train: PathBuf,
    /// Dev data for model selection (default: a stratified 10% of --train).
    #[arg(long)]
    dev: Option<PathBuf>,
    /// Test data (default: a stratified 10% of --train).
    #[arg(long)]
    test: Option<PathBuf>,
    /// The classical head.
    #[arg(long, value_enum, default_value = "logreg")]
    head: HeadArg,
    /// Feature blocks, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "emb")]
    features: Vec<FeatureArg>,
    /// Values of C (inverse regularisation) tried on dev by logreg and svm, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.01,0.03,0.1,0.3,1,3,10,30,100"
    )]
    c_grid: Vec<f64>,
    /// Class weighting.
    #[arg(long, value_enum, default_value = "uniform")]
    class_weight: ClassWeightArg,
    /// Weight multiplying the embedding columns (> 0): with `--features tfidf,emb`, how much
    /// the embeddings count against the TF-IDF blocks (`lmfuse compare` and `lmfuse tune`
    /// choose it). Stored in the bundle; predict and serve apply it.
    #[arg(long, default_value_t = 1.0)]
    emb_weight: f32,
    /// Seed of the dev/test splits and of the head's random choices.
    #[arg(long, default_value_t = 13)]
    seed: u64,
    /// Out-of-scope detection on top of the head: max_prob, mahalanobis or knn (on the
    /// encoder embeddings), threshold tuned on dev; or auto: each of the three, and the one
    /// that best meets --oos-objective on dev.
    #[arg(long)]
    oos: Option<OosArg>,
    /// The label of out-of-scope examples in the data (a class of its own when train has it).
    #[arg(long, default_value = "oos")]
    oos_label: String,
    /// Neighbours for `--oos knn`.
    #[arg(long, default_value_t = 10)]
    oos_k: usize,
    /// What the out-of-scope threshold is tuned for on dev: `accuracy` (every dev row, out of
    /// scope counted as a class), `balanced` (mean of in-scope accuracy and out-of-scope
    /// recall) or `recall:R` (the loosest threshold rejecting a share R of dev's
    /// out-of-scope texts).
    #[arg(long, default_value = "accuracy")]
    oos_objective: lmfuse_train::OosObjective,
    /// Bundle folder to write.
    #[arg(long)]
    out: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `train --oos`: one detector, or every one with the best on dev.
#[derive(Debug, Clone, Copy)]
enum OosArg {
    Auto,
    Method(lmfuse_train::OosMethod),
}

impl std::str::FromStr for OosArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(OosArg::Auto),
            _ => s.parse().map(OosArg::Method).map_err(|e: String| {
                format!("{e}; or auto, the one that best meets --oos-objective on dev")
            }),
        }
    }
}

/// What the data looked like.
#[derive(Debug, Serialize)]
pub(crate) struct DataReport {
    pub(crate) train: usize,
    dev: usize,
    test: usize,
    pub(crate) dev_source: String,
    pub(crate) test_source: String,
    label_counts: BTreeMap<String, usize>,
    empty_texts: usize,
    duplicate_texts: usize,
    train_test_overlap: usize,
}

/// The hyperparameter setting model selection kept.
#[derive(Debug, Serialize)]
struct Selected {
    param: &'static str,
    value: f64,
}

/// The JSON report of `lmfuse train`.
#[derive(Debug, Serialize)]
struct TrainReport {
    bundle: String,
    encoder: String,
    head: &'static str,
    features: Vec<String>,
    /// The embedding block's weight (`--emb-weight`).
    emb_weight: f32,
    labels: Vec<String>,
    data: DataReport,
    selected: Selected,
    trials: Vec<lmfuse_train::Trial>,
    dev: Report,
    test: Report,
    #[serde(skip_serializing_if = "Option::is_none")]
    oos: Option<BTreeMap<&'static str, lmfuse_train::OosMetrics>>,
    /// `--oos auto`: every detector on dev (`oos` holds the chosen one's figures).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    oos_tried: Vec<lmfuse_train::OosTrial>,
    seconds: BTreeMap<&'static str, f64>,
}

fn read_labelled(
    path: &Path,
    data: &DataArgs,
    feature_cols: &[String],
) -> anyhow::Result<LabelledTexts> {
    Ok(lmfuse_data::read_labelled(
        path,
        data.format,
        &data.text_col,
        &data.label_col,
        feature_cols,
    )?)
}

/// The side columns of several row sets, concatenated in order.
fn concat_columns(parts: &[&LabelledTexts]) -> Vec<(String, Vec<Cell>)> {
    let Some(first) = parts.first() else {
        return Vec::new();
    };
    first
        .columns
        .iter()
        .enumerate()
        .map(|(c, (name, _))| {
            let cells = parts
                .iter()
                .flat_map(|p| p.columns[c].1.iter().cloned())
                .collect();
            (name.clone(), cells)
        })
        .collect()
}

/// The feature rows of `texts`: the TF-IDF blocks of `text_features`, then the encoder's
/// embeddings (through the cache) when `emb` is set, then the side columns.
fn featurize(
    texts: &[String],
    columns: &[(String, Vec<Cell>)],
    text_features: &TextFeaturizer,
    emb: Option<(&ModelFiles, &LoadOptions)>,
    cache: Option<&mut EmbeddingCache>,
    quiet: bool,
) -> anyhow::Result<Features> {
    let dense = match emb {
        Some((files, options)) => Some(DenseMatrix::from(
            embed_texts(texts, files, options, cache, quiet)?.0,
        )),
        None => None,
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    Ok(text_features.features(&refs, dense, columns)?)
}

/// Train, dev and test rows with their class indices, and what they looked like.
pub(crate) struct Splits {
    pub train: LabelledTexts,
    pub dev: LabelledTexts,
    pub test: LabelledTexts,
    pub labels: LabelSet,
    pub y_train: Vec<usize>,
    pub y_dev: Vec<usize>,
    pub y_test: Vec<usize>,
    pub report: DataReport,
}

/// Reads the training file and the dev/test files, or carves stratified 10% slices of train
/// for the ones not given (test first, then dev; seeded).
pub(crate) fn load_splits(
    train_path: &Path,
    dev_path: Option<&Path>,
    test_path: Option<&Path>,
    data: &DataArgs,
    seed: u64,
) -> anyhow::Result<Splits> {
    load_splits_with(train_path, dev_path, test_path, data, seed, true)
}

/// [`load_splits`]; without `carve_dev`, no dev file means no dev rows (for a command that
/// chooses by cross-validation on train and would only report dev).
pub(crate) fn load_splits_with(
    train_path: &Path,
    dev_path: Option<&Path>,
    test_path: Option<&Path>,
    data: &DataArgs,
    seed: u64,
    carve_dev: bool,
) -> anyhow::Result<Splits> {
    let mut train = read_labelled(train_path, data, &data.feature_cols)?;
    anyhow::ensure!(
        !train.texts.is_empty(),
        "{} holds no examples",
        train_path.display()
    );
    let labels = LabelSet::from_labels(train.labels.iter().map(String::as_str));
    anyhow::ensure!(
        labels.len() >= 2,
        "{}: every example has the label {:?}; a classifier needs at least two classes",
        train_path.display(),
        labels.names()[0]
    );
    let train_name = train_path.display().to_string();
    let y_all = lmfuse_train::encode_labels(&labels, &train.labels, &train_name, &train.lines)?;

    // Held-out parts: given files, else stratified slices of train (test first, then dev).
    let mut remaining: Vec<usize> = (0..train.texts.len()).collect();
    let mut carve = |seed: u64| -> LabelledTexts {
        let y: Vec<usize> = remaining.iter().map(|&i| y_all[i]).collect();
        let (keep, held) = lmfuse_data::stratified_split(&y, 0.1, seed);
        let held_rows: Vec<usize> = held.iter().map(|&k| remaining[k]).collect();
        remaining = keep.iter().map(|&k| remaining[k]).collect();
        train.select(&held_rows)
    };
    let (test, test_source) = match test_path {
        Some(p) => (
            read_labelled(p, data, &data.feature_cols)?,
            p.display().to_string(),
        ),
        None => (carve(seed), format!("10% of {train_name} (seed {})", seed)),
    };
    let (dev, dev_source) = match dev_path {
        Some(p) => (
            read_labelled(p, data, &data.feature_cols)?,
            p.display().to_string(),
        ),
        None if carve_dev => (
            carve(seed.wrapping_add(1)),
            format!("10% of {train_name} (seed {})", seed.wrapping_add(1)),
        ),
        None => (LabelledTexts::default(), "none".to_string()),
    };
    if remaining.len() != train.texts.len() {
        train = train.select(&remaining);
    }
    anyhow::ensure!(
        !dev.texts.is_empty() || (!carve_dev && dev_path.is_none()),
        "the dev set is empty"
    );
    anyhow::ensure!(!test.texts.is_empty(), "the test set is empty");
    let y_train = lmfuse_train::encode_labels(&labels, &train.labels, &train_name, &train.lines)?;
    let y_dev = lmfuse_train::encode_labels(&labels, &dev.labels, &dev_source, &dev.lines)?;
    let y_test = lmfuse_train::encode_labels(&labels, &test.labels, &test_source, &test.lines)?;

    let mut label_counts = BTreeMap::new();
    for l in &train.labels {
        *label_counts.entry(l.clone()).or_insert(0) += 1;
    }
    let train_set: HashSet<&str> = train.texts.iter().map(String::as_str).collect();
    let data_report = DataReport {
        train: train.texts.len(),
        dev: dev.texts.len(),
        test: test.texts.len(),
        dev_source,
        test_source,
        label_counts,
        empty_texts: train
            .texts
            .iter()
            .chain(&dev.texts)
            .chain(&test.texts)
            .filter(|t| t.trim().is_empty())
            .count(),
        duplicate_texts: train.texts.len() - train_set.len(),
        train_test_overlap: test
            .texts
            .iter()
            .filter(|t| train_set.contains(t.as_str()))
            .count(),
    };

    Ok(Splits {
        train,
        dev,
        test,
        labels,
        y_train,
        y_dev,
        y_test,
        report: data_report,
    })
}

/// Runs `lmfuse train`.
pub fn train(args: &TrainArgs, quiet: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let quiet = quiet || args.json;
    let use_tab = args.features.contains(&FeatureArg::Tab);
    let block_weights = BlockWeights::with_emb(args.emb_weight);
    block_weights.check().context("--emb-weight")?;
    anyhow::ensure!(
        args.emb_weight == 1.0 || args.features.contains(&FeatureArg::Emb),
        "--emb-weight weighs the embedding columns: it needs --features with emb"
    );
    args.head.check_features(
        args.features.contains(&FeatureArg::Tfidf),
        args.features.contains(&FeatureArg::Emb),
    )?;
    anyhow::ensure!(
        use_tab != args.data.feature_cols.is_empty(),
        "--features tab and --feature-cols go together: name the side columns with \
         --feature-cols and add `tab` to --features"
    );
    let Splits {
        train,
        dev,
        test,
        labels,
        y_train,
        y_dev,
        y_test,
        report: data_report,
    } = load_splits(
        &args.train,
        args.dev.as_deref(),
        args.test.as_deref(),
        &args.data,
        args.seed,
    )?;
    let train_name = args.train.display().to_string();

    let files = args.model.resolve()?;
    let options = args.model.load_options();
    let fingerprint = options.fingerprint(&files)?;
    let mut cache = args.cache.open()?;
    let t = Instant::now();
    let use_emb = args.features.contains(&FeatureArg::Emb);
    let mut text_features = if args.features.contains(&FeatureArg::Tfidf) {
        let refs: Vec<&str> = train.texts.iter().map(String::as_str).collect();
        TextFeaturizer::fit(&refs)?
    } else {
        TextFeaturizer::default()
    };
    if use_tab {
        text_features
            .fit_tabular(&train.columns)
            .with_context(|| format!("cannot use --feature-cols of {train_name}"))?;
    }
    text_features.weights = block_weights;
    let emb = use_emb.then_some((&files, &options));
    // One pass over all three splits: the encoder is loaded at most once.
    let all_texts: Vec<String> = [&train.texts, &dev.texts, &test.texts]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let all_columns = concat_columns(&[&train, &dev, &test]);
    let x_all = featurize(
        &all_texts,
        &all_columns,
        &text_features,
        emb,
        cache.as_mut(),
        quiet,
    )?;
    let (n_train, n_dev) = (train.texts.len(), dev.texts.len());
    let rows = |range: std::ops::Range<usize>| x_all.select_rows(&range.collect::<Vec<_>>());
    let x_train = rows(0..n_train);
    let x_dev = rows(n_train..n_train + n_dev);
    let x_test = rows(n_train + n_dev..all_texts.len());
    let embed_seconds = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let train_options = TrainOptions {
        head: args.head.kind(),
        c_grid: args.c_grid.clone(),
        class_weight: match args.class_weight {
            ClassWeightArg::Uniform => ClassWeight::Uniform,
            ClassWeightArg::Balanced => ClassWeight::Balanced,
        },
        seed: args.seed,
        dense_tail: match args.head {
            HeadArg::Shared => shared_dense_tail(&text_features, x_train.cols()),
            _ => 0,
        },
    };
    let selection = lmfuse_train::fit_selecting(
        (&x_train, &y_train),
        (&x_dev, &y_dev),
        &labels,
        &train_options.candidates(),
    )?;
    let fit_seconds = t.elapsed().as_secs_f64();
    let test_proba = selection.model.predict_proba(&x_test)?;
    let test_report = lmfuse_metrics::evaluate(&y_test, &test_proba, labels.names())?;

    // Out-of-scope detection: fit on the in-scope training embeddings, threshold on dev;
    // with `auto`, each method so, and the best on dev for the objective (ties: the earlier).
    let mut oos_tried = Vec::new();
    let (detector, oos_metrics) = match args.oos {
        None => (None, None),
        Some(choice) => {
            let methods = match choice {
                OosArg::Auto => lmfuse_train::OosMethod::ALL.to_vec(),
                OosArg::Method(m) => vec![m],
            };
            let emb = DenseMatrix::from(
                embed_texts(&all_texts, &files, &options, cache.as_mut(), quiet)?.0,
            );
            let emb_rows =
                |range: std::ops::Range<usize>| emb.select_rows(&range.collect::<Vec<_>>());
            let (e_train, e_dev, e_test) = (
                emb_rows(0..n_train),
                emb_rows(n_train..n_train + n_dev),
                emb_rows(n_train + n_dev..all_texts.len()),
            );
            let oos_class = labels
                .index(&args.oos_label)
                .map(|i| (i, args.oos_label.clone()));
            let k = labels.len();
            let dev_proba = selection.model.predict_proba(&x_dev)?;
            let is_oos = |set: &LabelledTexts| -> Vec<bool> {
                set.labels.iter().map(|l| *l == args.oos_label).collect()
            };
            let dev_oos = is_oos(&dev);
            let detected = lmfuse_train::OosDetector::fit_best(
                &methods,
                (&e_train, &y_train),
                k,
                oos_class,
                args.oos_k,
                lmfuse_train::OosDev {
                    emb: &e_dev,
                    proba: &dev_proba,
                    y: &y_dev,
                    is_oos: &dev_oos,
                },
                args.oos_objective,
            )?;
            // Dev was scored while choosing: its figures are the chosen trial's.
            let dev_metrics = detected.trials[detected.chosen].dev;
            if matches!(choice, OosArg::Auto) {
                oos_tried = detected.trials;
            }
            let det = detected.detector;
            let test_scores = det.score(&e_test, &test_proba, k);
            let metrics = BTreeMap::from([
                ("dev", dev_metrics),
                (
                    "test",
                    det.metrics(&test_scores, &test_proba, k, &y_test, &is_oos(&test)),
                ),
            ]);
            (Some(det), Some(metrics))
        }
    };

    let card = ModelCard::new(
        EncoderInfo {
            reference: files.reference.clone(),
            fingerprint,
            dim: files.config.hidden_size,
            in_bundle: false,
        },
        &labels,
        &text_features,
        use_emb,
        HeadCard::new(selection.params, x_train.cols()),
        serde_json::json!({
            "train_sha256": lmfuse_train::data_hash(&train.texts, &train.labels),
            "n_train": train.texts.len(),
            "seed": args.seed,
            "candidates": selection.trials.iter().map(|t| t.value).collect::<Vec<_>>(),
            "dev": data_report.dev_source,
            "test": data_report.test_source,
        }),
        serde_json::json!({
            "dev": {"accuracy": selection.dev.accuracy, "macro_f1": selection.dev.macro_f1},
            "test": {"accuracy": test_report.accuracy, "macro_f1": test_report.macro_f1},
        }),
    );
    let feature_names = card.features.clone();
    let classifier = Classifier {
        card,
        labels: labels.clone(),
        head: selection.model,
        text_features,
        oos: detector,
    };
    let (manifest, tensors, json) = classifier.to_bundle(env!("CARGO_PKG_VERSION"), &now_rfc3339());
    lmfuse_bundle::save(&args.out, manifest, &tensors, &json)
        .with_context(|| format!("cannot save the bundle to {}", args.out.display()))?;

    let tuned = selection.params.tuned();
    let report = TrainReport {
        bundle: args.out.display().to_string(),
        encoder: files.reference.clone(),
        head: selection.params.name(),
        features: feature_names,
        emb_weight: args.emb_weight,
        labels: labels.names().to_vec(),
        data: data_report,
        selected: Selected {
            param: tuned.0,
            value: tuned.1,
        },
        trials: selection.trials,
        dev: selection.dev,
        test: test_report,
        oos: oos_metrics,
        oos_tried,
        seconds: BTreeMap::from([
            ("features", embed_seconds),
            ("fit", fit_seconds),
            ("total", started.elapsed().as_secs_f64()),
        ]),
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        eprintln!(
            "trained {} on {} texts ({} classes), features {} ({}); {} = {} chosen on dev ({})",
            report.head,
            report.data.train,
            labels.len(),
            report.features.join("+"),
            report.encoder,
            report.selected.param,
            report.selected.value,
            report.data.dev_source
        );
        print_reports(&[("dev", &report.dev), ("test", &report.test)]);
        print_details("test", &report.test);
        for tried in &report.oos_tried {
            print_oos(
                &format!("dev, tried, objective {:.4}", tried.objective_value),
                &tried.dev,
            );
        }
        if let Some(m) = &report.oos {
            for (split, metrics) in m {
                print_oos(split, metrics);
            }
        }
        eprintln!(
            "saved bundle to {} ({:.1} s: features {:.1} s, fit {:.1} s)",
            report.bundle, report.seconds["total"], embed_seconds, fit_seconds
        );
    }
    Ok(())
}

/// Seconds since the epoch as an RFC 3339 UTC timestamp.
pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub(crate) fn print_reports(rows: &[(&str, &Report)]) {
    eprintln!(
        "  {:<8} {:>6} {:>9} {:>9} {:>12} {:>9} {:>7} {:>7}",
        "split", "n", "accuracy", "macro-F1", "weighted-F1", "log-loss", "MCC", "ECE"
    );
    for (name, r) in rows {
        eprintln!(
            "  {:<8} {:>6} {:>8.2}% {:>9.4} {:>12.4} {:>9.4} {:>7.4} {:>7.4}",
            name,
            r.n,
            100.0 * r.accuracy,
            r.macro_f1,
            r.weighted_avg.f1,
            r.log_loss,
            r.mcc,
            r.ece
        );
    }
}

pub(crate) fn print_details(name: &str, r: &Report) {
    if r.per_class.len() > 20 {
        return;
    }
    eprintln!("  per class ({name}):");
    eprintln!(
        "    {:<20} {:>9} {:>9} {:>9} {:>8}",
        "label", "precision", "recall", "F1", "support"
    );
    for c in &r.per_class {
        eprintln!(
            "    {:<20} {:>9.4} {:>9.4} {:>9.4} {:>8}",
            c.label, c.precision, c.recall, c.f1, c.support
        );
    }
    if let Some(auc) = r.roc_auc {
        eprintln!("  ROC-AUC ({name}): {auc:.4}");
    }
    eprintln!("  confusion ({name}; rows true, columns predicted):");
    for (label, row) in r.per_class.iter().zip(&r.confusion) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:>6}")).collect();
        eprintln!("    {:<20} {}", label.label, cells.join(""));
    }
}

/// Arguments of `lmfuse eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Bundle folder written by `lmfuse train`.
    #[arg(long)]
    model: PathBuf,
    /// Labelled data to evaluate on.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    columns: DataArgs,
    #[command(flatten)]
    cache: CacheArgs,
    /// Encoder folder or hub id instead of the one recorded in the bundle (same weights).
    #[arg(long)]
    encoder: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `lmfuse eval`.
pub fn eval(args: &EvalArgs, quiet: bool) -> anyhow::Result<()> {
    let loaded = load_bundle(&args.model, args.encoder.as_deref())?;
    let data = read_labelled(&args.data, &args.columns, &loaded.feature_cols())?;
    anyhow::ensure!(
        !data.texts.is_empty(),
        "{} holds no examples",
        args.data.display()
    );
    let name = args.data.display().to_string();
    let y =
        lmfuse_train::encode_labels(loaded.predictor.labels(), &data.labels, &name, &data.lines)?;
    let mut cache = args.cache.open()?;
    let (proba, oos) = loaded.predict_proba(
        &data.texts,
        &data.columns,
        cache.as_mut(),
        quiet || args.json,
    )?;
    let report = lmfuse_metrics::evaluate(&y, &proba, loaded.predictor.labels().names())?;
    // With a detector: in-scope accuracy and out-of-scope recall (rows labelled with the
    // detector's out-of-scope label are the out-of-scope ones).
    let oos_metrics = match (loaded.detector(), &oos) {
        (Some(det), Some(decisions)) => {
            let is_oos: Vec<bool> = data
                .labels
                .iter()
                .map(|l| det.card.label.as_deref() == Some(l.as_str()))
                .collect();
            let scores: Vec<f32> = decisions.iter().map(|d| d.score).collect();
            Some(det.metrics(
                &scores,
                &proba,
                loaded.predictor.labels().len(),
                &y,
                &is_oos,
            ))
        }
        _ => None,
    };
    if args.json {
        let mut out = serde_json::json!({ "data": name, "test": report });
        if let Some(m) = &oos_metrics {
            out["oos"] = serde_json::to_value(m)?;
        }
        outln!("{out}")?;
    } else {
        print_reports(&[("eval", &report)]);
        print_details("eval", &report);
        if let Some(m) = &oos_metrics {
            print_oos("eval", m);
        }
    }
    Ok(())
}

/// Arguments of `lmfuse predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Bundle folder written by `lmfuse train`.
    #[arg(long)]
    model: PathBuf,
    /// Texts: JSONL/CSV/TSV (--text-col) or plain text, one a line; `-` for standard input.
    #[arg(long, short)]
    input: PathBuf,
    /// Output JSON Lines, one {"label", "probabilities"} object per input, in input order;
    /// `-` for standard output.
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
    /// Input format instead of guessing from the extension.
    #[arg(long)]
    format: Option<Format>,
    /// Field or column holding the text.
    #[arg(long, default_value = "text")]
    text_col: String,
    #[command(flatten)]
    cache: CacheArgs,
    /// Encoder folder or hub id instead of the one recorded in the bundle (same weights).
    #[arg(long)]
    encoder: Option<String>,
}

#[derive(Serialize)]
struct Prediction<'a> {
    label: &'a str,
    probabilities: BTreeMap<&'a str, f32>,
    /// Out-of-scope decision and score, for bundles with a detector.
    #[serde(skip_serializing_if = "Option::is_none")]
    oos: Option<crate::loaded::OosDecision>,
}

/// Prints out-of-scope detection figures.
pub(crate) fn print_oos(name: &str, m: &lmfuse_train::OosMetrics) {
    eprintln!(
        "  out-of-scope ({name}, {:?}, threshold {:.4}): in-scope accuracy {:.4} ({} texts), \
         out-of-scope recall {:.4} ({} texts), precision {:.4}",
        m.method,
        m.threshold,
        m.in_scope_accuracy,
        m.in_scope,
        m.oos_recall,
        m.out_of_scope,
        m.oos_precision
    );
}

/// Texts and side columns of a file or of standard input (`-`, JSONL unless `format`).
fn read_input_with_columns(
    input: &Path,
    format: Option<Format>,
    text_col: &str,
    feature_cols: &[String],
) -> anyhow::Result<(Vec<String>, lmfuse_data::SideColumns)> {
    let (bytes, name, format) = if input == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)?;
        (
            bytes,
            PathBuf::from("<stdin>"),
            format.unwrap_or(Format::Jsonl),
        )
    } else {
        let bytes =
            std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
        let format = format.unwrap_or_else(|| Format::from_path(input));
        (bytes, input.to_path_buf(), format)
    };
    Ok(lmfuse_data::parse_texts_with_columns(
        &bytes,
        &name,
        format,
        text_col,
        feature_cols,
    )?)
}

/// Runs `lmfuse predict`.
pub fn predict(args: &PredictArgs, quiet: bool) -> anyhow::Result<()> {
    let loaded = load_bundle(&args.model, args.encoder.as_deref())?;
    let feature_cols = loaded.feature_cols();
    let (texts, columns) = if feature_cols.is_empty() {
        (
            read_input(&args.input, args.format, &args.text_col)?,
            Vec::new(),
        )
    } else {
        read_input_with_columns(&args.input, args.format, &args.text_col, &feature_cols)?
    };
    let mut cache = args.cache.open()?;
    let to_stdout = args.output == Path::new("-");
    let (proba, oos) =
        loaded.predict_proba(&texts, &columns, cache.as_mut(), quiet || to_stdout)?;
    let labels = loaded.predictor.labels();
    let k = labels.len();
    let write = |w: &mut dyn std::io::Write| -> std::io::Result<()> {
        for (i, row) in proba.chunks_exact(k).enumerate() {
            let best = lmfuse_metrics::argmax(row);
            let p = Prediction {
                label: labels.name(best),
                probabilities: labels
                    .names()
                    .iter()
                    .map(String::as_str)
                    .zip(row.iter().copied())
                    .collect(),
                oos: oos.as_ref().map(|d| d[i]),
            };
            serde_json::to_writer(&mut *w, &p)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    };
    if to_stdout {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        write(&mut out)?;
        std::io::Write::flush(&mut out)?;
    } else {
        lmfuse_data::atomic_write(&args.output, write)
            .with_context(|| format!("cannot write {}", args.output.display()))?;
    }
    Ok(())
}
