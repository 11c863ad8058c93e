//! Training a classifier (feature blocks + a classical head chosen on dev), evaluating a
//! bundle on labelled data.

use crate::data::{concat_columns, read_labelled, DataReport, DataSpec, Splits};
use crate::encoders::{embed_texts, CacheSpec, EncoderChoice};
use crate::ensure;
use crate::error::{Context, Result};
use crate::model::Model;
use crate::observe::Observer;
use lmfuse_cache::EmbeddingCache;
use lmfuse_classic::{ClassWeight, ProbaHead};
use lmfuse_core::{DenseMatrix, Features, LabelSet};
use lmfuse_data::Cell;
use lmfuse_encoder::{LoadOptions, ModelFiles};
pub use lmfuse_features::StopWords;
use lmfuse_metrics::Report;
use lmfuse_train::{
    BlockWeights, Classifier, EncoderInfo, HeadCard, HeadKind, ModelCard, OosDetector, OosMethod,
    OosMetrics, OosObjective, OosTrial, Selection, TextFeaturizer, TrainOptions,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// The feature blocks a classifier reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureSet {
    /// Sentence embeddings of the encoder.
    pub emb: bool,
    /// TF-IDF of word 1-2-grams and character 2-5-grams, fit on train.
    pub tfidf: bool,
    /// Side columns (standardised numbers, one-hot categories).
    pub tab: bool,
}

impl Default for FeatureSet {
    fn default() -> Self {
        FeatureSet {
            emb: true,
            tfidf: false,
            tab: false,
        }
    }
}

impl std::str::FromStr for FeatureSet {
    type Err = String;
    /// Comma-separated block names: `emb`, `tfidf`, `tab` (e.g. `tfidf,emb`).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut set = FeatureSet {
            emb: false,
            tfidf: false,
            tab: false,
        };
        for part in s.split(',').map(str::trim) {
            match part {
                "emb" => set.emb = true,
                "tfidf" => set.tfidf = true,
                "tab" => set.tab = true,
                other => {
                    return Err(format!(
                        "unknown feature block {other:?}: expected emb, tfidf or tab"
                    ))
                }
            }
        }
        if !(set.emb || set.tfidf || set.tab) {
            return Err("no feature block: name emb, tfidf or tab".to_string());
        }
        Ok(set)
    }
}

/// Out-of-scope detection on top of the head.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OosChoice {
    /// One detector, its threshold tuned on dev.
    Method(OosMethod),
    /// Each detector, and the one that best meets the objective on dev.
    Auto,
}

impl std::str::FromStr for OosChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(OosChoice::Auto),
            _ => s.parse().map(OosChoice::Method).map_err(|e: String| {
                format!("{e}; or auto, the one that best meets --oos-objective on dev")
            }),
        }
    }
}

/// Out-of-scope settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OosSpec {
    /// Which detector(s).
    pub choice: OosChoice,
    /// The label of out-of-scope examples in the data.
    pub label: String,
    /// Neighbours of the `knn` detector.
    pub k: usize,
    /// What the threshold is tuned for on dev.
    pub objective: OosObjective,
}

/// What `train` fits: features, head, its grid, weighting, seed, out-of-scope detection.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSpec {
    /// The classical head.
    pub head: HeadKind,
    /// Feature blocks.
    pub features: FeatureSet,
    /// Values of C tried on dev by logreg and svm.
    pub c_grid: Vec<f64>,
    /// Class weighting.
    pub class_weight: ClassWeight,
    /// Weight multiplying the embedding columns (> 0).
    pub emb_weight: f32,
    /// Seed of the head's random choices.
    pub seed: u64,
    /// Out-of-scope detection.
    pub oos: Option<OosSpec>,
    /// Words the TF-IDF word n-grams leave out.
    pub stop_words: StopWords,
    /// Augmented copies of the training rows (never of dev or test).
    pub augment: Option<crate::augment::AugmentPlan>,
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            head: HeadKind::Logreg,
            features: FeatureSet::default(),
            c_grid: TrainOptions::default().c_grid,
            class_weight: ClassWeight::Uniform,
            emb_weight: 1.0,
            seed: 13,
            oos: None,
            stop_words: StopWords::None,
            augment: None,
        }
    }
}

impl TrainSpec {
    /// Checks the settings against each other and against the side columns of `data`.
    pub fn check(&self, data: &DataSpec) -> Result<()> {
        if let Some(plan) = &self.augment {
            plan.check()?;
        }
        BlockWeights::with_emb(self.emb_weight)
            .check()
            .context("--emb-weight")?;
        ensure!(
            self.emb_weight == 1.0 || self.features.emb,
            "--emb-weight weighs the embedding columns: it needs --features with emb"
        );
        check_head_features(self.head, self.features.tfidf, self.features.emb)?;
        ensure!(
            self.features.tab != data.feature_cols.is_empty(),
            "--features tab and --feature-cols go together: name the side columns with \
             --feature-cols and add `tab` to --features"
        );
        ensure!(!self.c_grid.is_empty(), "the C grid is empty");
        Ok(())
    }
}

/// Whether `head` can read these feature blocks: `shared` projects the TF-IDF block and the
/// embedding apart, so it needs both.
pub fn check_head_features(head: HeadKind, tfidf: bool, emb: bool) -> Result<()> {
    ensure!(
        head != HeadKind::Shared || (tfidf && emb),
        "--head shared projects the TF-IDF block and the embedding apart: it needs \
         --features tfidf,emb (use --head mlp for other feature sets)"
    );
    Ok(())
}

/// The trailing dense columns the `shared` head projects apart from the classical block:
/// every column after the TF-IDF blocks (the embedding, then any side columns).
pub fn shared_dense_tail(text_features: &TextFeaturizer, n_features: usize) -> usize {
    let classical: usize = text_features.blocks().map(|(_, t)| t.dim()).sum();
    n_features - classical
}

/// The hyperparameter setting model selection kept.
#[derive(Debug, Clone, Serialize)]
pub struct Selected {
    /// Its name (`C`, `k`, ...).
    pub param: &'static str,
    /// Its value.
    pub value: f64,
}

/// What `train` did and measured.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// Where the bundle was saved (empty until [`Trained::save`]).
    pub bundle: String,
    /// The encoder.
    pub encoder: String,
    /// The head.
    pub head: &'static str,
    /// The feature blocks.
    pub features: Vec<String>,
    /// The embedding block's weight.
    pub emb_weight: f32,
    /// The classes.
    pub labels: Vec<String>,
    /// What the data looked like.
    pub data: DataReport,
    /// The setting chosen on dev.
    pub selected: Selected,
    /// Every setting tried.
    pub trials: Vec<lmfuse_train::Trial>,
    /// Dev figures of the chosen setting (absent when there is no dev split).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<Report>,
    /// Test figures (absent when there is no test split).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<Report>,
    /// Out-of-scope figures on dev and test.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oos: Option<BTreeMap<&'static str, OosMetrics>>,
    /// With `auto`: every detector on dev (`oos` holds the chosen one's figures).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub oos_tried: Vec<OosTrial>,
    /// With `--augment`: the copies added to the training rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augmentation: Option<crate::augment::AugmentReport>,
    /// With unlabelled texts: the rounds of self-training (see [`crate::selftrain`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_training: Option<crate::selftrain::SelfTrainReport>,
    /// Seconds of features, fit and the whole run.
    pub seconds: BTreeMap<&'static str, f64>,
}

/// A fitted classifier and its report.
pub struct Trained {
    /// The classifier (saved as a bundle by [`Trained::save`]).
    pub classifier: Classifier,
    /// What training did and measured.
    pub report: TrainReport,
}

impl Trained {
    /// Saves the bundle to `dir` atomically and records the folder in the report.
    pub fn save(&mut self, dir: &Path) -> Result<()> {
        save_classifier(&self.classifier, dir)?;
        self.report.bundle = dir.display().to_string();
        Ok(())
    }
}

/// Saves `classifier` as a bundle in `dir` (atomically).
pub fn save_classifier(classifier: &Classifier, dir: &Path) -> Result<()> {
    let (manifest, tensors, json) = classifier.to_bundle(crate::VERSION, &crate::now_rfc3339());
    lmfuse_bundle::save(dir, manifest, &tensors, &json)
        .with_context(|| format!("cannot save the bundle to {}", dir.display()))
}

/// Every split's features, computed in one pass (the encoder loads at most once).
struct SplitRows {
    x_train: Features,
    x_dev: Features,
    x_test: Features,
    all_texts: Vec<String>,
    text_features: TextFeaturizer,
}

/// The feature rows of `texts`: the TF-IDF blocks of `text_features`, then the encoder's
/// embeddings (through the cache) when `emb` is set, then the side columns.
pub fn featurize(
    texts: &[String],
    columns: &[(String, Vec<Cell>)],
    text_features: &TextFeaturizer,
    emb: Option<(&ModelFiles, &LoadOptions)>,
    cache: Option<&mut EmbeddingCache>,
    on: &dyn Observer,
) -> Result<Features> {
    let dense = match emb {
        Some((files, options)) => Some(DenseMatrix::from(
            embed_texts(texts, files, options, cache, on)?.0,
        )),
        None => None,
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    Ok(text_features.features(&refs, dense, columns)?)
}

/// Fits the TF-IDF and tabular featurisers of `spec` on train.
fn fit_text_features(splits: &Splits, spec: &TrainSpec) -> Result<TextFeaturizer> {
    let train = &splits.train;
    let mut text_features = if spec.features.tfidf {
        let refs: Vec<&str> = train.texts.iter().map(String::as_str).collect();
        TextFeaturizer::fit_with(&refs, spec.stop_words)?
    } else {
        TextFeaturizer::default()
    };
    if spec.features.tab {
        text_features
            .fit_tabular(&train.columns)
            .with_context(|| format!("cannot use --feature-cols of {}", splits.train_name))?;
    }
    text_features.weights = BlockWeights::with_emb(spec.emb_weight);
    Ok(text_features)
}

fn split_rows(
    splits: &Splits,
    spec: &TrainSpec,
    enc: (&ModelFiles, &LoadOptions),
    cache: Option<&mut EmbeddingCache>,
    on: &dyn Observer,
) -> Result<SplitRows> {
    let text_features = fit_text_features(splits, spec)?;
    let (train, dev, test) = (&splits.train, &splits.dev, &splits.test);
    let all_texts: Vec<String> = [&train.texts, &dev.texts, &test.texts]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let all_columns = concat_columns(&[train, dev, test]);
    let emb = spec.features.emb.then_some(enc);
    let x_all = featurize(&all_texts, &all_columns, &text_features, emb, cache, on)?;
    let (n_train, n_dev) = (train.texts.len(), dev.texts.len());
    let rows = |range: std::ops::Range<usize>| x_all.select_rows(&range.collect::<Vec<_>>());
    Ok(SplitRows {
        x_train: rows(0..n_train),
        x_dev: rows(n_train..n_train + n_dev),
        x_test: rows(n_train + n_dev..all_texts.len()),
        all_texts,
        text_features,
    })
}

/// Out-of-scope results: the detector, its dev/test figures, every detector tried.
type OosOutcome = (
    Option<OosDetector>,
    Option<BTreeMap<&'static str, OosMetrics>>,
    Vec<OosTrial>,
);

/// Fits the out-of-scope detector(s) of `oos` on the in-scope training embeddings and tunes
/// the threshold on dev; with `auto`, the best on dev for the objective (ties: the earlier).
#[allow(clippy::too_many_arguments)]
fn fit_oos(
    oos: &OosSpec,
    splits: &Splits,
    rows: &SplitRows,
    selection: &Chosen,
    test_proba: &[f32],
    enc: (&ModelFiles, &LoadOptions),
    cache: Option<&mut EmbeddingCache>,
    on: &dyn Observer,
) -> Result<OosOutcome> {
    ensure!(
        !splits.dev.texts.is_empty(),
        "out-of-scope detection tunes its threshold on dev: give dev data"
    );
    let methods = match oos.choice {
        OosChoice::Auto => OosMethod::ALL.to_vec(),
        OosChoice::Method(m) => vec![m],
    };
    let emb = DenseMatrix::from(embed_texts(&rows.all_texts, enc.0, enc.1, cache, on)?.0);
    let (n_train, n_dev) = (splits.train.texts.len(), splits.dev.texts.len());
    let emb_rows = |range: std::ops::Range<usize>| emb.select_rows(&range.collect::<Vec<_>>());
    let e_train = emb_rows(0..n_train);
    let e_dev = emb_rows(n_train..n_train + n_dev);
    let e_test = emb_rows(n_train + n_dev..rows.all_texts.len());
    let labels = &splits.labels;
    let oos_class = labels.index(&oos.label).map(|i| (i, oos.label.clone()));
    let k = labels.len();
    let dev_proba = selection.model.predict_proba(&rows.x_dev)?;
    let is_oos = |set: &lmfuse_data::LabelledTexts| -> Vec<bool> {
        set.labels.iter().map(|l| *l == oos.label).collect()
    };
    let dev_oos = is_oos(&splits.dev);
    let detected = OosDetector::fit_best(
        &methods,
        (&e_train, &splits.y_train),
        k,
        oos_class,
        oos.k,
        lmfuse_train::OosDev {
            emb: &e_dev,
            proba: &dev_proba,
            y: &splits.y_dev,
            is_oos: &dev_oos,
        },
        oos.objective,
    )?;
    // Dev was scored while choosing: its figures are the chosen trial's.
    let dev_metrics = detected.trials[detected.chosen].dev;
    let det = detected.detector;
    let mut metrics = BTreeMap::from([("dev", dev_metrics)]);
    if !splits.test.texts.is_empty() {
        let test_scores = det.score(&e_test, test_proba, k);
        let test = det.metrics(
            &test_scores,
            test_proba,
            k,
            &splits.y_test,
            &is_oos(&splits.test),
        );
        metrics.insert("test", test);
    }
    let tried = match oos.choice {
        OosChoice::Auto => detected.trials,
        OosChoice::Method(_) => Vec::new(),
    };
    Ok((Some(det), Some(metrics), tried))
}

/// The encoder's description for a classifier's card.
pub fn encoder_info(files: &ModelFiles, options: &LoadOptions) -> Result<EncoderInfo> {
    Ok(EncoderInfo {
        reference: files.reference.clone(),
        fingerprint: options.fingerprint(files)?,
        dim: files.config.hidden_size,
        in_bundle: false,
    })
}

/// `splits` with the augmented copies `plan` makes; with a filter, the classifier of the rows
/// alone is trained first and drops the copies it labels otherwise with confidence.
fn augment(
    splits: &Splits,
    spec: &TrainSpec,
    plan: &crate::augment::AugmentPlan,
    (encoder, cache): (&EncoderChoice, &CacheSpec),
    on: &dyn Observer,
) -> Result<(Splits, crate::augment::AugmentReport)> {
    let copies = plan.copies(splits, spec.seed)?;
    let (copies, filtered) = match plan.filter {
        None => (copies, None),
        Some(threshold) => {
            let plain = TrainSpec {
                augment: None,
                ..spec.clone()
            };
            let teacher = train(splits, &plain, encoder, cache, on)?;
            let teacher = Model::from_classifier(teacher.classifier, None)?;
            let (kept, dropped) =
                crate::augment::consistent(copies, splits, (&teacher, threshold), (cache, on))?;
            (kept, Some(dropped))
        }
    };
    Ok(crate::augment::with_copies(splits, copies, plan, filtered))
}

/// Trains a classifier on `splits` as `spec` says: features (through the cache), the head's
/// setting chosen on dev, test evaluated, out-of-scope detection when asked.
pub fn train(
    splits: &Splits,
    spec: &TrainSpec,
    encoder: &EncoderChoice,
    cache: &CacheSpec,
    on: &dyn Observer,
) -> Result<Trained> {
    let started = Instant::now();
    let augmented;
    let (splits, augmentation) = match &spec.augment {
        None => (splits, None),
        Some(plan) => {
            let (copies, report) = augment(splits, spec, plan, (encoder, cache), on)?;
            augmented = copies;
            (&augmented, Some(report))
        }
    };
    let files = encoder.resolve()?;
    let options = encoder.load_options();
    let mut cache = cache.open()?;
    let t = Instant::now();
    let rows = split_rows(splits, spec, (&files, &options), cache.as_mut(), on)?;
    let embed_seconds = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let selection = select_head(splits, spec, &rows)?;
    let fit_seconds = t.elapsed().as_secs_f64();
    let (test_proba, test_report) = evaluate_split(&selection, &rows.x_test, splits)?;
    let (detector, oos_metrics, oos_tried) = match &spec.oos {
        None => (None, None, Vec::new()),
        Some(oos) => fit_oos(
            oos,
            splits,
            &rows,
            &selection,
            &test_proba,
            (&files, &options),
            cache.as_mut(),
            on,
        )?,
    };
    let info = encoder_info(&files, &options)?;
    let card = train_card(info, splits, spec, &rows, &selection, test_report.as_ref());
    let tuned = selection.params.tuned();
    let report = TrainReport {
        bundle: String::new(),
        encoder: files.reference.clone(),
        head: selection.params.name(),
        features: card.features.clone(),
        emb_weight: spec.emb_weight,
        labels: splits.labels.names().to_vec(),
        data: splits.report.clone(),
        selected: Selected {
            param: tuned.0,
            value: tuned.1,
        },
        trials: selection.trials,
        dev: selection.dev,
        test: test_report,
        oos: oos_metrics,
        oos_tried,
        augmentation,
        self_training: None,
        seconds: BTreeMap::from([
            ("features", embed_seconds),
            ("fit", fit_seconds),
            ("total", started.elapsed().as_secs_f64()),
        ]),
    };
    let classifier = Classifier {
        card,
        labels: splits.labels.clone(),
        head: selection.model,
        text_features: rows.text_features,
        oos: detector,
    };
    Ok(Trained { classifier, report })
}

/// The head kept: fit with the setting chosen on dev, or with the only setting on every
/// training row when there is no dev split.
struct Chosen {
    model: lmfuse_classic::Head,
    params: lmfuse_classic::HeadParams,
    trials: Vec<lmfuse_train::Trial>,
    dev: Option<Report>,
}

/// Fits one head per setting of the grid and keeps the best on dev; without dev rows, the
/// grid must hold a single setting, which is fit on train.
fn select_head(splits: &Splits, spec: &TrainSpec, rows: &SplitRows) -> Result<Chosen> {
    let options = TrainOptions {
        head: spec.head,
        c_grid: spec.c_grid.clone(),
        class_weight: spec.class_weight,
        seed: spec.seed,
        dense_tail: match spec.head {
            HeadKind::Shared => shared_dense_tail(&rows.text_features, rows.x_train.cols()),
            _ => 0,
        },
    };
    let candidates = options.candidates();
    if splits.dev.texts.is_empty() {
        let [params] = candidates.as_slice() else {
            crate::bail!(
                "with no dev rows nothing can choose among {} settings of the {} head: give \
                 one value (e.g. a single C) or dev data",
                candidates.len(),
                candidates[0].name()
            );
        };
        params.check()?;
        let model = params.fit(&rows.x_train, &splits.y_train, splits.labels.len())?;
        return Ok(Chosen {
            model,
            params: *params,
            trials: Vec::new(),
            dev: None,
        });
    }
    let s: Selection = lmfuse_train::fit_selecting(
        (&rows.x_train, &splits.y_train),
        (&rows.x_dev, &splits.y_dev),
        &splits.labels,
        &candidates,
    )?;
    Ok(Chosen {
        model: s.model,
        params: s.params,
        trials: s.trials,
        dev: Some(s.dev),
    })
}

/// Test probabilities and report (none without test rows).
fn evaluate_split(
    selection: &Chosen,
    x_test: &Features,
    splits: &Splits,
) -> Result<(Vec<f32>, Option<Report>)> {
    if splits.test.texts.is_empty() {
        return Ok((Vec::new(), None));
    }
    let proba = selection.model.predict_proba(x_test)?;
    let report = lmfuse_metrics::evaluate(&splits.y_test, &proba, splits.labels.names())?;
    Ok((proba, Some(report)))
}

/// The card of a trained classifier.
fn train_card(
    encoder: EncoderInfo,
    splits: &Splits,
    spec: &TrainSpec,
    rows: &SplitRows,
    selection: &Chosen,
    test: Option<&Report>,
) -> ModelCard {
    let train = &splits.train;
    let figures = |r: &Report| serde_json::json!({"accuracy": r.accuracy, "macro_f1": r.macro_f1});
    ModelCard::new(
        encoder,
        &splits.labels,
        &rows.text_features,
        spec.features.emb,
        HeadCard::new(selection.params, rows.x_train.cols()),
        serde_json::json!({
            "train_sha256": lmfuse_train::data_hash(&train.texts, &train.labels),
            "n_train": train.texts.len(),
            "seed": spec.seed,
            "candidates": selection.trials.iter().map(|t| t.value).collect::<Vec<_>>(),
            "dev": splits.report.dev_source,
            "test": splits.report.test_source,
        }),
        serde_json::json!({
            "dev": selection.dev.as_ref().map(figures),
            "test": test.map(figures),
        }),
    )
}

/// What `eval` measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The data's name.
    pub data: String,
    /// The figures.
    pub test: Report,
    /// In-scope accuracy and out-of-scope recall, for a bundle with a detector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oos: Option<OosMetrics>,
}

/// Evaluates `model` on the labelled file `path`.
pub fn evaluate(
    model: &Model,
    path: &Path,
    data: &DataSpec,
    cache: &CacheSpec,
    on: &dyn Observer,
) -> Result<EvalReport> {
    let rows = read_labelled(path, data, &model.feature_cols())?;
    ensure!(
        !rows.texts.is_empty(),
        "{} holds no examples",
        path.display()
    );
    let name = path.display().to_string();
    evaluate_rows(model, &rows, &name, cache, on)
}

/// Evaluates `model` on labelled rows already read (`name` names them in messages).
pub fn evaluate_rows(
    model: &Model,
    rows: &lmfuse_data::LabelledTexts,
    name: &str,
    cache: &CacheSpec,
    on: &dyn Observer,
) -> Result<EvalReport> {
    let labels: &LabelSet = model.labels();
    let y = lmfuse_train::encode_labels(labels, &rows.labels, name, &rows.lines)?;
    let mut cache = cache.open()?;
    let (proba, oos) = model.predict_proba(&rows.texts, &rows.columns, cache.as_mut(), on)?;
    let report = lmfuse_metrics::evaluate(&y, &proba, labels.names())?;
    // With a detector: in-scope accuracy and out-of-scope recall (rows labelled with the
    // detector's out-of-scope label are the out-of-scope ones).
    let oos = match (model.detector(), &oos) {
        (Some(det), Some(decisions)) => {
            let is_oos: Vec<bool> = rows
                .labels
                .iter()
                .map(|l| det.card.label.as_deref() == Some(l.as_str()))
                .collect();
            let scores: Vec<f32> = decisions.iter().map(|d| d.score).collect();
            Some(det.metrics(&scores, &proba, labels.len(), &y, &is_oos))
        }
        _ => None,
    };
    Ok(EvalReport {
        data: name.to_string(),
        test: report,
        oos,
    })
}
