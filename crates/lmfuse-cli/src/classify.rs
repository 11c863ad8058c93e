//! `lmfuse train`, `lmfuse eval` and `lmfuse predict`: classifiers over encoder embeddings.

use crate::progress::Bars;
use crate::ModelArgs;
use clap::{Args, ValueEnum};
use lmfuse_classic::ClassWeight;
use lmfuse_data::Format;
use lmfuse_metrics::Report;
use lmfuse_pipeline::augment::AugmentPlan;
use lmfuse_pipeline::classify::{FeatureSet, OosChoice, OosSpec, TrainReport, TrainSpec};
use lmfuse_pipeline::data::{DataSpec, SplitPlan};
use lmfuse_pipeline::encoders::CacheSpec;
use lmfuse_pipeline::model::Model;
use lmfuse_pipeline::selftrain::{self_train, SelfTrainReport, SelfTrainSpec};
use lmfuse_train::HeadKind;
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
    /// The pipeline's cache spec.
    pub(crate) fn spec(&self) -> CacheSpec {
        CacheSpec {
            disabled: self.no_cache,
            dir: self.cache_dir.clone(),
        }
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
    /// Random forest: 100 Gini trees, √d features a split, bootstrap (dense or sparse rows).
    Rf,
    /// Histogram gradient-boosted trees, early stopping on a 10% holdout (dense or sparse rows).
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
    /// Unlabelled texts (same format, no labels) for self-training: the classifier labels
    /// those it is sure of, class-balanced, and is trained again, round after round, while
    /// dev accuracy improves.
    #[arg(long)]
    unlabeled: Option<PathBuf>,
    /// Augmented copies of each training text (never of dev or test), seeded by --seed:
    /// `copies=4,sr=0.1,ri=0.1,rs=0.1,rd=0.1` (synonym replacement, random insertion, swap,
    /// deletion rates; the operations take turns over the copies).
    #[arg(long)]
    augment: Option<lmfuse_augment::AugmentSpec>,
    /// Synonyms for --augment's sr and ri: a MyThes (English) or Cilin (Chinese) file
    /// (scripts/fetch-thesauri.sh puts both in models/thesauri/).
    #[arg(long, requires = "augment")]
    thesaurus: Option<PathBuf>,
    /// A command that paraphrases texts (e.g. back-translation): the training texts go to
    /// its standard input, one a line; it answers one paraphrase a line (empty for none),
    /// each added as a copy of its text.
    #[arg(long)]
    augment_cmd: Option<String>,
    /// Drop an augmented copy that the classifier of the rows alone gives another label with
    /// at least this probability (it is trained first); the count is reported.
    #[arg(long)]
    augment_filter: Option<f32>,
    /// Self-training: most rounds.
    #[arg(long, default_value_t = 3)]
    self_train_rounds: usize,
    /// Self-training: lowest probability of a pseudo-label (0: none; each class takes its
    /// most confident texts up to its quota).
    #[arg(long, default_value_t = 0.0)]
    pseudo_threshold: f32,
    /// Self-training: pseudo-labels added per round, as a multiple of the labelled rows.
    #[arg(long, default_value_t = 1.0)]
    pseudo_growth: f64,
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
    /// Words left out of the TF-IDF word n-grams: none, or zh (Chinese function words;
    /// negations, degree adverbs and contrast kept). Recorded in the bundle.
    #[arg(long, default_value = "none")]
    stop_words: lmfuse_pipeline::classify::StopWords,
    /// Seed of the dev/test splits and of the head's random choices.
    #[arg(long, default_value_t = 13)]
    seed: u64,
    /// Out-of-scope detection on top of the head: max_prob, mahalanobis or knn (on the
    /// encoder embeddings), threshold tuned on dev; or auto: each of the three, and the one
    /// that best meets --oos-objective on dev.
    #[arg(long)]
    oos: Option<OosChoice>,
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

impl DataArgs {
    /// The pipeline's data spec.
    pub(crate) fn spec(&self) -> DataSpec {
        DataSpec {
            format: self.format,
            text_col: self.text_col.clone(),
            label_col: self.label_col.clone(),
            feature_cols: self.feature_cols.clone(),
        }
    }
}

impl ClassWeightArg {
    fn weight(self) -> ClassWeight {
        match self {
            ClassWeightArg::Uniform => ClassWeight::Uniform,
            ClassWeightArg::Balanced => ClassWeight::Balanced,
        }
    }
}

/// The feature blocks of `--features`.
pub(crate) fn feature_set(features: &[FeatureArg]) -> FeatureSet {
    FeatureSet {
        emb: features.contains(&FeatureArg::Emb),
        tfidf: features.contains(&FeatureArg::Tfidf),
        tab: features.contains(&FeatureArg::Tab),
    }
}

impl TrainArgs {
    fn spec(&self) -> TrainSpec {
        TrainSpec {
            head: self.head.kind(),
            features: feature_set(&self.features),
            c_grid: self.c_grid.clone(),
            class_weight: self.class_weight.weight(),
            emb_weight: self.emb_weight,
            seed: self.seed,
            oos: self.oos.map(|choice| OosSpec {
                choice,
                label: self.oos_label.clone(),
                k: self.oos_k,
                objective: self.oos_objective,
            }),
            stop_words: self.stop_words,
            augment: (self.augment.is_some()
                || self.augment_cmd.is_some()
                || self.augment_filter.is_some())
            .then(|| AugmentPlan {
                spec: self.augment,
                thesaurus: self.thesaurus.clone(),
                command: self.augment_cmd.clone(),
                filter: self.augment_filter,
            }),
        }
    }

    fn plan(&self) -> SplitPlan {
        SplitPlan {
            train: self.train.clone(),
            dev: self.dev.clone(),
            test: self.test.clone(),
            seed: self.seed,
            carve_dev: true,
            carve_test: true,
        }
    }
}

/// Runs `lmfuse train`.
pub fn train(args: &TrainArgs, quiet: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let (spec, data) = (args.spec(), args.data.spec());
    spec.check(&data)?;
    let splits = lmfuse_pipeline::data::load_splits(&args.plan(), &data)?;
    let bars = Bars::new(quiet || args.json);
    let (encoder, cache) = (args.model.choice(), args.cache.spec());
    let mut trained = match &args.unlabeled {
        None => lmfuse_pipeline::classify::train(&splits, &spec, &encoder, &cache, &bars)?,
        Some(path) => {
            let texts = read_unlabeled(path, &data)?;
            let st = SelfTrainSpec {
                rounds: args.self_train_rounds,
                threshold: args.pseudo_threshold,
                growth: args.pseudo_growth,
            };
            self_train(&splits, &texts, (&spec, &st), &encoder, &cache, &bars)?
        }
    };
    trained.save(&args.out)?;
    let report = &mut trained.report;
    report
        .seconds
        .insert("total", started.elapsed().as_secs_f64());
    if args.json {
        outln!("{}", serde_json::to_string(report)?)?;
    } else {
        print_train_report(report, splits.labels.len());
    }
    Ok(())
}

/// The texts of an unlabelled file; a file whose every record has a label is refused (it is
/// training data).
fn read_unlabeled(path: &Path, data: &DataSpec) -> anyhow::Result<Vec<String>> {
    if let Ok(rows) = lmfuse_pipeline::data::read_labelled(path, data, &[]) {
        if !rows.texts.is_empty() {
            anyhow::bail!(
                "{}: every record has a label (`{}`): --unlabeled takes texts without labels \
                 (give labelled data as --train)",
                path.display(),
                data.label_col
            );
        }
    }
    let texts = lmfuse_pipeline::data::read_input(path, data.format, &data.text_col)?;
    if texts.is_empty() {
        anyhow::bail!("{}: no text to self-train on", path.display());
    }
    Ok(texts)
}

fn print_self_training(st: &SelfTrainReport) {
    for r in &st.rounds {
        let dev = r.dev_accuracy.map_or("-".into(), |a| format!("{a:.4}"));
        eprintln!(
            "  self-training round {}: {} pseudo-labelled texts (+{}), dev accuracy {dev}",
            r.round,
            r.pseudo_labelled,
            r.added.values().sum::<usize>()
        );
    }
    eprintln!(
        "  kept round {} of {} unlabelled texts offered; {}",
        st.kept, st.unlabelled, st.stopped
    );
}

fn print_train_report(report: &TrainReport, classes: usize) {
    eprintln!(
        "trained {} on {} texts ({} classes), features {} ({}); {} = {} chosen on dev ({})",
        report.head,
        report.data.train,
        classes,
        report.features.join("+"),
        report.encoder,
        report.selected.param,
        report.selected.value,
        report.data.dev_source
    );
    if let Some(a) = &report.augmentation {
        let ops: Vec<String> = a
            .by_op
            .iter()
            .map(|(op, n)| format!("{op:?} {n}"))
            .collect();
        eprintln!(
            "  augmented: +{} copies of {} training texts ({}){}",
            a.added,
            a.texts,
            ops.join(", ").to_lowercase(),
            a.filtered
                .map_or(String::new(), |n| format!("; {n} dropped by the filter"))
        );
    }
    if let Some(st) = &report.self_training {
        print_self_training(st);
    }
    let test = report.test.as_ref().expect("train always has a test split");
    let dev = report.dev.as_ref().expect("train always has a dev split");
    print_reports(&[("dev", dev), ("test", test)]);
    print_details("test", test);
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
        report.bundle, report.seconds["total"], report.seconds["features"], report.seconds["fit"]
    );
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
    /// Run the bundle's encoders in this precision (f32, bf16 or int8) instead of the recorded one.
    #[arg(long)]
    precision: Option<lmfuse_core::Precision>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `lmfuse eval`.
pub fn eval(args: &EvalArgs, quiet: bool) -> anyhow::Result<()> {
    let model = Model::load_in(&args.model, args.encoder.as_deref(), args.precision)?;
    let bars = Bars::new(quiet || args.json);
    let report = lmfuse_pipeline::classify::evaluate(
        &model,
        &args.data,
        &args.columns.spec(),
        &args.cache.spec(),
        &bars,
    )?;
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        print_reports(&[("eval", &report.test)]);
        print_details("eval", &report.test);
        if let Some(m) = &report.oos {
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
    /// Run the bundle's encoders in this precision (f32, bf16 or int8) instead of the recorded one.
    #[arg(long)]
    precision: Option<lmfuse_core::Precision>,
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

/// Runs `lmfuse predict`.
pub fn predict(args: &PredictArgs, quiet: bool) -> anyhow::Result<()> {
    let model = Model::load_in(&args.model, args.encoder.as_deref(), args.precision)?;
    let (texts, columns) = lmfuse_pipeline::data::read_unlabelled(
        &args.input,
        args.format,
        &args.text_col,
        &model.feature_cols(),
    )?;
    let mut cache = args.cache.spec().open()?;
    let to_stdout = args.output == Path::new("-");
    let bars = Bars::new(quiet || to_stdout);
    let predictions = model.predict(&texts, &columns, cache.as_mut(), &bars)?;
    crate::output::write_lines(&args.output, &predictions)
}

pub(crate) use lmfuse_pipeline::data::Splits;

/// Reads train, dev and test (see [`lmfuse_pipeline::data::load_splits`]).
pub(crate) fn load_splits(
    train: &Path,
    dev: Option<&Path>,
    test: Option<&Path>,
    data: &DataArgs,
    seed: u64,
) -> anyhow::Result<Splits> {
    load_splits_with(train, dev, test, data, seed, true)
}

/// [`load_splits`]; without `carve_dev`, no dev file means no dev rows.
pub(crate) fn load_splits_with(
    train: &Path,
    dev: Option<&Path>,
    test: Option<&Path>,
    data: &DataArgs,
    seed: u64,
    carve_dev: bool,
) -> anyhow::Result<Splits> {
    let plan = SplitPlan {
        train: train.to_path_buf(),
        dev: dev.map(Path::to_path_buf),
        test: test.map(Path::to_path_buf),
        seed,
        carve_dev,
        carve_test: true,
    };
    Ok(lmfuse_pipeline::data::load_splits(&plan, &data.spec())?)
}
