//! Relation extraction: a classifier of the relation between two marked entities of a text.
//!
//! The encoder reads the text with marker tokens around the two entities; the states of its
//! first token and of the two opening markers (3 × dim) are the example's features. Two
//! models: logistic regression on a frozen encoder's states (markers read as punctuation,
//! `C` chosen on dev), and the encoder fine-tuned end to end with four marker tokens added
//! to its vocabulary ([`lmfuse_finetune::fit_relation`], the epoch chosen on dev). Both are
//! kept as a linear layer over the states of the encoder the bundle records (the tuned one
//! travels inside it), so that prediction is one path. Scores: the official SemEval-2010
//! Task 8 macro-F1 (direction counted, `Other` excluded) beside accuracy.

use crate::encoders::EncoderChoice;
use crate::finetune::{load_tuned, named_progress, BundleFile, FinetuneBase};
use crate::{now_rfc3339, Context, Observer, PipelineError, Result, VERSION};
use lmfuse_classic::{LogisticRegression, LogisticRegressionParams};
use lmfuse_core::{DenseMatrix, Features, SeededRng};
use lmfuse_data::relation::read_relations;
use lmfuse_encoder::{MarkedPair, MarkerIds, NamedTensor, SentenceEncoder};
use lmfuse_finetune::{add_marker_tokens, fit_relation, Network, PairSet};
use lmfuse_metrics::relation::{relation_scores, RelationReport};
use lmfuse_train::EncoderInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use lmfuse_data::relation::{parse_relations, PairSpan, RelationExample};
pub use lmfuse_finetune::FinetuneParams;

/// The bundle's `task` value for relation models.
pub const TASK: &str = "relation";
const WEIGHT: &str = "relation.coef";
const BIAS: &str = "relation.intercept";

/// How the encoder is fine-tuned for relations.
#[derive(Debug, Clone)]
pub struct RelationFinetune {
    /// Epochs, rates, dropout, seed, ... (gradient accumulation, FGM, PGD and LoRA refused).
    pub params: FinetuneParams,
    /// Where the metrics log and the checkpoints of the run go (none: not written).
    pub run_dir: Option<PathBuf>,
    /// Continue a killed run from the checkpoint in `run_dir`.
    pub resume: bool,
}

/// What [`train`] does.
#[derive(Debug, Clone)]
pub struct RelationTrainSpec {
    /// Training examples (JSON Lines: markers in the text or `e1`/`e2` spans).
    pub train: PathBuf,
    /// Dev examples; without them `dev_fraction` of the training file is held out (stratified
    /// by relation, with `seed`).
    pub dev: Option<PathBuf>,
    /// Share held out for dev when no dev file is given.
    pub dev_fraction: f64,
    /// The encoder.
    pub encoder: EncoderChoice,
    /// The label meaning "no relation" (left out of the official score).
    pub other: String,
    /// Regularisation values `C` of the logistic regression, chosen by dev macro-F1.
    pub c_grid: Vec<f64>,
    /// Fine-tune the encoder instead of fitting a logistic regression on frozen states.
    pub finetune: Option<RelationFinetune>,
    /// Seed of the held-out split (and of fine-tuning through its params).
    pub seed: u64,
}

impl RelationTrainSpec {
    /// Checks the spec once, before any data is read.
    pub fn check(&self) -> Result<()> {
        if self.dev.is_none() && !(self.dev_fraction > 0.0 && self.dev_fraction < 1.0) {
            return Err(PipelineError::Invalid(format!(
                "the dev share {} is not between 0 and 1 (or give --dev)",
                self.dev_fraction
            )));
        }
        if self.c_grid.is_empty() {
            return Err(PipelineError::Invalid("give at least one C value".into()));
        }
        if let Some(bad) = self.c_grid.iter().find(|c| !(c.is_finite() && **c > 0.0)) {
            return Err(PipelineError::Invalid(format!(
                "C value {bad} is not a finite number > 0"
            )));
        }
        if self.other.trim().is_empty() {
            return Err(PipelineError::Invalid(
                "the no-relation label is empty".into(),
            ));
        }
        if let Some(ft) = &self.finetune {
            ft.params.check()?;
            if ft.resume && ft.run_dir.is_none() {
                return Err(PipelineError::Invalid("resuming needs --run-dir".into()));
            }
        }
        Ok(())
    }
}

/// Scores of a relation model on a labelled set.
pub type RelationScores = RelationReport;

/// What training did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelationTrainReport {
    /// `frozen-logreg` or `finetuned`.
    pub kind: String,
    /// Training examples.
    pub train_examples: usize,
    /// Dev examples.
    pub dev_examples: usize,
    /// Whether dev was held out of the training file.
    pub dev_held_out: bool,
    /// Relation labels, in class order.
    pub labels: Vec<String>,
    /// Dev official macro-F1 for each `C` tried (frozen model).
    pub dev_f1_by_c: Vec<(f64, f64)>,
    /// The `C` kept (frozen model).
    pub c: Option<f64>,
    /// Examples cut to fit the encoder's length (entities kept), training and dev.
    pub truncated: usize,
    /// The kept model on dev.
    pub dev: RelationReport,
    /// Seconds for the whole job.
    pub total_seconds: f64,
    /// The fine-tuning's evaluations and best epoch, when the encoder was tuned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<serde_json::Value>,
}

/// One example's predicted relation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelationPrediction {
    /// The relation.
    pub label: String,
    /// Its probability.
    pub score: f32,
}

/// A trained relation classifier.
pub struct RelationModel {
    kind: String,
    labels: Vec<String>,
    other: String,
    markers: MarkerIds,
    info: EncoderInfo,
    encoder: SentenceEncoder,
    /// The tuned encoder's model folder, saved inside the bundle (empty for a frozen one).
    encoder_files: Vec<BundleFile>,
    head: LogisticRegression,
}

impl std::fmt::Debug for RelationModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelationModel")
            .field("kind", &self.kind)
            .field("labels", &self.labels)
            .field("encoder", &self.info.reference)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct RelationCard {
    task: String,
    kind: String,
    labels: Vec<String>,
    other: String,
    markers: MarkerIds,
    encoder: EncoderInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    report: Option<serde_json::Value>,
}

/// Reads relation examples (`labelled`: every line needs a label).
pub fn read_set(path: &Path, labelled: bool) -> Result<Vec<RelationExample>> {
    Ok(read_relations(path, labelled)?)
}

/// Each example's label as an index of `labels`; an unknown one is an error naming the line.
fn label_indices(
    examples: &[RelationExample],
    labels: &[String],
    path: &Path,
) -> Result<Vec<usize>> {
    examples
        .iter()
        .map(|e| {
            let label = e.label.as_deref().unwrap_or_default();
            labels.iter().position(|l| l == label).ok_or_else(|| {
                PipelineError::Invalid(format!(
                    "{}:{}: label {label:?} is not among the training labels",
                    path.display(),
                    e.line
                ))
            })
        })
        .collect()
}

/// The examples' texts and character ranges as the encoder takes them.
fn pair_inputs(examples: &[RelationExample]) -> Vec<lmfuse_encoder::PairInput<'_>> {
    examples
        .iter()
        .map(|e| (e.text.as_str(), e.e1.start..e.e1.end, e.e2.start..e.e2.end))
        .collect()
}

/// The training and dev examples (dev held out of training when no file is given).
struct Sets {
    train: Vec<RelationExample>,
    dev: Vec<RelationExample>,
    held_out: bool,
    labels: Vec<String>,
}

fn load_sets(spec: &RelationTrainSpec) -> Result<Sets> {
    let all = read_set(&spec.train, true)?;
    let dev = spec.dev.as_deref().map(|p| read_set(p, true)).transpose()?;
    sets_of(all, dev, spec)
}

/// The sets from examples in memory (`spec.train` and `spec.dev` name them in errors).
fn sets_of(
    all: Vec<RelationExample>,
    dev: Option<Vec<RelationExample>>,
    spec: &RelationTrainSpec,
) -> Result<Sets> {
    let mut labels: Vec<String> = all.iter().filter_map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    if labels.len() < 2 {
        return Err(PipelineError::Invalid(format!(
            "{}: a relation classifier needs at least 2 labels, found {}",
            spec.train.display(),
            labels.len()
        )));
    }
    let dev_path = spec.dev.clone().unwrap_or_else(|| PathBuf::from("dev"));
    let (train, dev, held_out) = match dev {
        Some(dev) => {
            label_indices(&dev, &labels, &dev_path)?;
            (all, dev, false)
        }
        None => {
            let y = label_indices(&all, &labels, &spec.train)?;
            let (keep, held) = lmfuse_data::stratified_split(&y, spec.dev_fraction, spec.seed);
            let pick = |idx: &[usize]| idx.iter().map(|&i| all[i].clone()).collect::<Vec<_>>();
            (pick(&keep), pick(&held), true)
        }
    };
    Ok(Sets {
        train,
        dev,
        held_out,
        labels,
    })
}

/// [`train`] on examples in memory (from Python): `dev` as `spec.dev` would give them, else
/// held out of `train`; `spec.train`/`spec.dev` only name the sets in errors.
pub fn train_examples(
    train: Vec<RelationExample>,
    dev: Option<Vec<RelationExample>>,
    spec: &RelationTrainSpec,
    observer: &dyn Observer,
) -> Result<(RelationModel, RelationTrainReport)> {
    spec.check()?;
    let started = Instant::now();
    let sets = sets_of(train, dev, spec)?;
    fit_sets(spec, &sets, started, observer)
}

fn fit_sets(
    spec: &RelationTrainSpec,
    sets: &Sets,
    started: Instant,
    observer: &dyn Observer,
) -> Result<(RelationModel, RelationTrainReport)> {
    let (model, mut report) = match &spec.finetune {
        Some(ft) => train_tuned(spec, ft, sets, observer)?,
        None => train_frozen(spec, sets, observer)?,
    };
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok((model, report))
}

/// Trains a relation classifier as `spec` says.
pub fn train(
    spec: &RelationTrainSpec,
    observer: &dyn Observer,
) -> Result<(RelationModel, RelationTrainReport)> {
    spec.check()?;
    let started = Instant::now();
    let sets = load_sets(spec)?;
    fit_sets(spec, &sets, started, observer)
}

/// Column means and standard deviations of `x` (`rows × d`); a constant column gets 1.
fn moments(x: &[f32], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = (x.len() / d).max(1) as f64;
    let mut mean = vec![0.0f64; d];
    for row in x.chunks_exact(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v) / n;
        }
    }
    let mut var = vec![0.0f64; d];
    for row in x.chunks_exact(d) {
        for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (f64::from(*v) - m).powi(2) / n;
        }
    }
    let std = var
        .into_iter()
        .map(|v| if v > 1e-12 { v.sqrt() } else { 1.0 })
        .collect();
    (mean, std)
}

fn standardised(x: &[f32], (mean, std): (&[f64], &[f64])) -> Result<Features> {
    let d = mean.len();
    let data = x
        .chunks_exact(d)
        .flat_map(|row| {
            row.iter()
                .zip(mean.iter().zip(std))
                .map(|(v, (m, s))| ((f64::from(*v) - m) / s) as f32)
        })
        .collect();
    let m = DenseMatrix::new(x.len() / d, d, data)
        .map_err(|e| PipelineError::Invalid(e.to_string()))?;
    Ok(Features::Dense(m))
}

/// A regression on standardised columns as one on the raw columns.
fn unstandardise(
    lr: &LogisticRegression,
    (mean, std): (&[f64], &[f64]),
) -> Result<LogisticRegression> {
    let (d, k) = (lr.n_features(), lr.n_classes());
    let mut coef = lr.coef().to_vec();
    let mut intercept: Vec<f64> = lr.intercept().iter().map(|&b| f64::from(b)).collect();
    for f in 0..d {
        for c in 0..k {
            let w = f64::from(coef[f * k + c]) / std[f];
            coef[f * k + c] = w as f32;
            intercept[c] -= w * mean[f];
        }
    }
    let intercept = intercept.into_iter().map(|b| b as f32).collect();
    LogisticRegression::from_parts(d, k, coef, intercept)
        .map_err(|e| PipelineError::Invalid(e.to_string()))
}

/// The frozen encoder's states of `examples`, with how many were cut.
fn states_of(
    encoder: &SentenceEncoder,
    markers: MarkerIds,
    examples: &[RelationExample],
    observer: &dyn Observer,
) -> Result<(Vec<f32>, usize)> {
    let started = Instant::now();
    let pairs = encoder
        .mark_pairs(&pair_inputs(examples), markers)
        .context("cannot mark the entity pairs")?;
    let cut = pairs.iter().filter(|p| p.truncated).count();
    let states = encoder.pair_states(&pairs);
    observer.note(&format!(
        "encoded {} pairs in {:.1} s",
        pairs.len(),
        started.elapsed().as_secs_f64()
    ));
    Ok((states, cut))
}

fn official(
    labels: &[String],
    other: &str,
    truth: &[RelationExample],
    predicted: &[usize],
) -> Result<RelationReport> {
    let t: Vec<&str> = truth
        .iter()
        .map(|e| e.label.as_deref().unwrap_or_default())
        .collect();
    let p: Vec<&str> = predicted.iter().map(|&i| labels[i].as_str()).collect();
    relation_scores(&t, &p, other).map_err(|e| PipelineError::Invalid(e.to_string()))
}

fn train_frozen(
    spec: &RelationTrainSpec,
    sets: &Sets,
    observer: &dyn Observer,
) -> Result<(RelationModel, RelationTrainReport)> {
    let files = spec.encoder.resolve()?;
    let options = spec.encoder.load_options();
    let info = crate::classify::encoder_info(&files, &options)?;
    let encoder = SentenceEncoder::load(&files, &options).context("cannot load the encoder")?;
    let markers = encoder
        .punctuation_markers()
        .context("cannot choose the entity markers")?;
    let (train_x, cut_train) = states_of(&encoder, markers, &sets.train, observer)?;
    let (dev_x, cut_dev) = states_of(&encoder, markers, &sets.dev, observer)?;
    let d = 3 * encoder.model().config().hidden_size;
    let (mean, std) = moments(&train_x, d);
    let y = label_indices(&sets.train, &sets.labels, &spec.train)?;
    let xs = standardised(&train_x, (&mean, &std))?;
    let dev_raw = DenseMatrix::new(dev_x.len() / d, d, dev_x)
        .map_err(|e| PipelineError::Invalid(e.to_string()))?;
    let dev_x = Features::Dense(dev_raw);
    let mut best: Option<(f64, LogisticRegression, RelationReport)> = None;
    let mut by_c = Vec::new();
    for &c in &spec.c_grid {
        let params = LogisticRegressionParams {
            c,
            ..LogisticRegressionParams::default()
        };
        let lr = params
            .fit(&xs, &y, sets.labels.len())
            .map_err(|e| PipelineError::Invalid(e.to_string()))?;
        let lr = unstandardise(&lr, (&mean, &std))?;
        let predicted = predict_classes(&lr, &dev_x)?;
        let report = official(&sets.labels, &spec.other, &sets.dev, &predicted)?;
        observer.note(&format!(
            "C {c}: dev macro-F1 {:.4}",
            report.official_macro_f1
        ));
        by_c.push((c, report.official_macro_f1));
        if best
            .as_ref()
            .is_none_or(|b| report.official_macro_f1 > b.2.official_macro_f1 + 1e-12)
        {
            best = Some((c, lr, report));
        }
    }
    let (c, head, dev) = best.expect("a nonempty grid");
    let report = RelationTrainReport {
        kind: "frozen-logreg".into(),
        train_examples: sets.train.len(),
        dev_examples: sets.dev.len(),
        dev_held_out: sets.held_out,
        labels: sets.labels.clone(),
        dev_f1_by_c: by_c,
        c: Some(c),
        truncated: cut_train + cut_dev,
        dev,
        total_seconds: 0.0,
        finetune: None,
    };
    let model = RelationModel {
        kind: report.kind.clone(),
        labels: sets.labels.clone(),
        other: spec.other.clone(),
        markers,
        info,
        encoder,
        encoder_files: Vec::new(),
        head,
    };
    Ok((model, report))
}

fn predict_classes(lr: &LogisticRegression, x: &Features) -> Result<Vec<usize>> {
    let k = lr.n_classes();
    let proba = lr
        .predict_proba(x)
        .map_err(|e| PipelineError::Invalid(e.to_string()))?;
    Ok(proba.chunks_exact(k).map(lmfuse_metrics::argmax).collect())
}

/// The base encoder with four marker tokens added, as a network for `classes` relations.
fn marked_network(base: &FinetuneBase, classes: usize, seed: u64) -> Result<(Network, MarkerIds)> {
    let start_from = base
        .encoder
        .punctuation_markers()
        .context("cannot choose the entity markers")?;
    let mut config = base.files.config.clone();
    let mut tensors: Vec<NamedTensor> = base.encoder.model().export();
    let markers = add_marker_tokens(&mut config, &mut tensors, start_from)?;
    let net = Network::new(
        &config,
        tensors,
        base.fingerprint.pooling,
        3 * classes,
        SeededRng::new(seed).next_u64(),
    )?;
    Ok((net, markers))
}

fn train_tuned(
    spec: &RelationTrainSpec,
    ft: &RelationFinetune,
    sets: &Sets,
    observer: &dyn Observer,
) -> Result<(RelationModel, RelationTrainReport)> {
    let base = FinetuneBase::load(&spec.encoder)?;
    let classes = sets.labels.len();
    let (mut net, markers) = marked_network(&base, classes, ft.params.seed)?;
    let mark = |examples: &[RelationExample]| -> Result<Vec<MarkedPair>> {
        base.encoder
            .mark_pairs(&pair_inputs(examples), markers)
            .context("cannot mark the entity pairs")
    };
    let (train_pairs, dev_pairs) = (mark(&sets.train)?, mark(&sets.dev)?);
    let truncated = train_pairs
        .iter()
        .chain(&dev_pairs)
        .filter(|p| p.truncated)
        .count();
    let y = label_indices(&sets.train, &sets.labels, &spec.train)?;
    let dev_path = spec.dev.clone().unwrap_or_else(|| spec.train.clone());
    let dev_path = dev_path.as_path();
    let y_dev = label_indices(&sets.dev, &sets.labels, dev_path)?;
    let mut dev_score = |predicted: &[usize]| {
        official(&sets.labels, &spec.other, &sets.dev, predicted)
            .map_or(0.0, |r| r.official_macro_f1)
    };
    let sets_of_pairs = (
        PairSet {
            pairs: &train_pairs,
            labels: &y,
        },
        PairSet {
            pairs: &dev_pairs,
            labels: &y_dev,
        },
    );
    let fit = run_relation(
        &mut net,
        (ft, classes),
        sets_of_pairs,
        &mut dev_score,
        observer,
    )?;
    let (info, encoder, files) = load_tuned(&net, &base)?;
    let d = 3 * net.config().hidden_size;
    let head = LogisticRegression::from_parts(d, classes, fit.coef, fit.intercept)
        .map_err(|e| PipelineError::Invalid(e.to_string()))?;
    let model = RelationModel {
        kind: "finetuned".into(),
        labels: sets.labels.clone(),
        other: spec.other.clone(),
        markers,
        info,
        encoder,
        encoder_files: files,
        head,
    };
    let dev = model.evaluate(&sets.dev, dev_path)?;
    let report = RelationTrainReport {
        kind: model.kind.clone(),
        train_examples: sets.train.len(),
        dev_examples: sets.dev.len(),
        dev_held_out: sets.held_out,
        labels: sets.labels.clone(),
        dev_f1_by_c: Vec::new(),
        c: None,
        truncated,
        dev,
        total_seconds: 0.0,
        finetune: Some(serde_json::to_value(&fit.summary)?),
    };
    Ok((model, report))
}

/// [`fit_relation`] with its steps shown on a bar and its evaluations as notes.
fn run_relation(
    net: &mut Network,
    (ft, classes): (&RelationFinetune, usize),
    sets: (PairSet<'_>, PairSet<'_>),
    dev_score: &mut dyn FnMut(&[usize]) -> f64,
    observer: &dyn Observer,
) -> Result<lmfuse_finetune::RelationFit> {
    let task = observer.task("fine-tuning", 0);
    let names = ("dev accuracy", "dev macro-F1");
    let mut events = named_progress(task.as_ref(), "fine-tuning", observer, Path::new(""), names);
    let fit = fit_relation(
        net,
        classes,
        &ft.params,
        sets,
        dev_score,
        (ft.run_dir.as_deref(), ft.resume),
        &mut events,
    )?;
    task.finish();
    Ok(fit)
}

impl RelationModel {
    /// Relation labels, in class order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// `frozen-logreg` or `finetuned`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The encoder the model reads.
    pub fn encoder(&self) -> &EncoderInfo {
        &self.info
    }

    /// Class probabilities of each example (`examples × labels`).
    pub fn predict_proba(&self, examples: &[RelationExample]) -> Result<Vec<f32>> {
        if examples.is_empty() {
            return Ok(Vec::new());
        }
        let pairs = self
            .encoder
            .mark_pairs(&pair_inputs(examples), self.markers)
            .context("cannot mark the entity pairs")?;
        let states = self.encoder.pair_states(&pairs);
        let d = self.head.n_features();
        let x = DenseMatrix::new(states.len() / d, d, states)
            .map_err(|e| PipelineError::Invalid(e.to_string()))?;
        self.head
            .predict_proba(&Features::Dense(x))
            .map_err(|e| PipelineError::Invalid(e.to_string()))
    }

    /// The most probable relation of each example.
    pub fn predict(&self, examples: &[RelationExample]) -> Result<Vec<RelationPrediction>> {
        let k = self.labels.len();
        let proba = self.predict_proba(examples)?;
        Ok(proba
            .chunks_exact(k)
            .map(|row| {
                let best = lmfuse_metrics::argmax(row);
                RelationPrediction {
                    label: self.labels[best].clone(),
                    score: row[best],
                }
            })
            .collect())
    }

    /// Scores on labelled `examples` (read from `path`, named in errors): the official
    /// SemEval-2010 Task 8 macro-F1, micro scores, accuracy, per relation. A label the model
    /// does not know is an error naming its line.
    pub fn evaluate(&self, examples: &[RelationExample], path: &Path) -> Result<RelationReport> {
        label_indices(examples, &self.labels, path)?;
        let k = self.labels.len();
        let predicted: Vec<usize> = self
            .predict_proba(examples)?
            .chunks_exact(k)
            .map(lmfuse_metrics::argmax)
            .collect();
        official(&self.labels, &self.other, examples, &predicted)
    }

    /// Writes the model as a bundle in `dir` (atomically), with the training report.
    pub fn save(&self, dir: &Path, report: Option<&RelationTrainReport>) -> Result<()> {
        let card = RelationCard {
            task: TASK.into(),
            kind: self.kind.clone(),
            labels: self.labels.clone(),
            other: self.other.clone(),
            markers: self.markers,
            encoder: self.info.clone(),
            report: report.map(serde_json::to_value).transpose()?,
        };
        let manifest = lmfuse_bundle::Manifest {
            format_version: lmfuse_bundle::PLAIN_VERSION,
            lmfuse_version: VERSION.into(),
            created_at: now_rfc3339(),
            model: serde_json::to_value(card)?,
            files: BTreeMap::new(),
        };
        let (d, k) = (self.head.n_features(), self.head.n_classes());
        let tensors = BTreeMap::from([
            (
                WEIGHT.to_string(),
                lmfuse_core::Tensor::f32(vec![d, k], self.head.coef().to_vec()),
            ),
            (
                BIAS.to_string(),
                lmfuse_core::Tensor::f32(vec![k], self.head.intercept().to_vec()),
            ),
        ]);
        lmfuse_bundle::save_with_files(
            dir,
            manifest,
            &tensors,
            &BTreeMap::new(),
            &self.encoder_files,
        )
        .with_context(|| format!("cannot save the bundle {}", dir.display()))
    }

    /// Loads a relation bundle, refusing another task's with a hint.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with_encoder(dir, None)
    }

    /// [`load`](Self::load) with `encoder` (a folder or hub id, same weights) in place of the
    /// encoder the bundle records.
    pub fn load_with_encoder(dir: &Path, encoder: Option<&str>) -> Result<Self> {
        let bundle = lmfuse_bundle::load(dir)
            .with_context(|| format!("cannot load the bundle {}", dir.display()))?;
        let task = bundle.manifest.model.get("task").and_then(|t| t.as_str());
        if task != Some(TASK) {
            return Err(PipelineError::Invalid(format!(
                "{} is not a relation bundle (its task is {})",
                dir.display(),
                task.unwrap_or("classification")
            )));
        }
        let card: RelationCard = serde_json::from_value(bundle.manifest.model.clone())
            .with_context(|| format!("cannot read the relation card of {}", dir.display()))?;
        let tensor = |name: &str| {
            bundle
                .tensors
                .get(name)
                .and_then(|t| t.as_f32())
                .map(<[f32]>::to_vec)
                .ok_or_else(|| {
                    PipelineError::Invalid(format!("{}: tensor {name} is missing", dir.display()))
                })
        };
        let (coef, intercept) = (tensor(WEIGHT)?, tensor(BIAS)?);
        let k = card.labels.len();
        let d = coef.len() / k.max(1);
        let head = LogisticRegression::from_parts(d, k, coef, intercept)
            .map_err(|e| PipelineError::Invalid(format!("{}: {e}", dir.display())))?;
        let files = crate::model::resolve_encoder(Some(dir), &card.encoder, encoder)?;
        let options = crate::model::recorded_options(&card.encoder);
        let loaded = SentenceEncoder::load(&files, &options).context("cannot load the encoder")?;
        let vocab = loaded.model().config().vocab_size;
        if let Some(bad) = card.markers.iter().find(|&&m| m as usize >= vocab) {
            return Err(PipelineError::Invalid(format!(
                "{}: marker token {bad} is outside the encoder's vocabulary ({vocab})",
                dir.display()
            )));
        }
        if 3 * loaded.model().config().hidden_size != d {
            return Err(PipelineError::Invalid(format!(
                "{}: the head reads {d} values, the encoder gives 3 × {}",
                dir.display(),
                loaded.model().config().hidden_size
            )));
        }
        let encoder_files = crate::finetune::read_bundle_files(dir, &bundle.files)?;
        Ok(Self {
            kind: card.kind,
            labels: card.labels,
            other: card.other,
            markers: card.markers,
            info: card.encoder,
            encoder: loaded,
            encoder_files,
            head,
        })
    }
}

/// A relation found between two entities of a text by [`extract`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoundRelation {
    /// Index of the first entity (`e1`, the earlier in the text) in the text's entities.
    pub e1: usize,
    /// Index of the second (`e2`).
    pub e2: usize,
    /// The relation (direction in its suffix where the labels carry one).
    pub label: String,
    /// Its probability.
    pub score: f32,
}

/// What [`extract`] finds in one text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extraction {
    /// The text.
    pub text: String,
    /// Its entities (character spans).
    pub entities: Vec<crate::ner::FoundEntity>,
    /// The relations between pairs of them; pairs classified as the no-relation label are
    /// left out.
    pub relations: Vec<FoundRelation>,
}

/// Entities and relations of raw texts: `tagger` finds the entities, then `relations`
/// classifies every pair of them (the earlier as `e1`, within `max_entities` entities of a
/// text: the first ones).
pub fn extract(
    tagger: &crate::ner::NerModel,
    relations: &RelationModel,
    texts: &[String],
    max_entities: usize,
) -> Result<Vec<Extraction>> {
    let found = tagger.find(texts)?;
    let mut examples = Vec::new();
    let mut owners = Vec::new();
    for (t, (text, entities)) in texts.iter().zip(&found).enumerate() {
        let n = entities.len().min(max_entities);
        for i in 0..n {
            for j in i + 1..n {
                let span = |e: &crate::ner::FoundEntity| lmfuse_data::relation::PairSpan {
                    start: e.start,
                    end: e.end,
                    kind: Some(e.label.clone()),
                };
                examples.push(RelationExample {
                    text: text.clone(),
                    e1: span(&entities[i]),
                    e2: span(&entities[j]),
                    label: None,
                    line: t + 1,
                });
                owners.push((t, i, j));
            }
        }
    }
    let predicted = relations.predict(&examples)?;
    let mut out: Vec<Extraction> = texts
        .iter()
        .zip(found)
        .map(|(text, entities)| Extraction {
            text: text.clone(),
            entities,
            relations: Vec::new(),
        })
        .collect();
    for ((t, e1, e2), p) in owners.into_iter().zip(predicted) {
        if p.label != relations.other {
            out[t].relations.push(FoundRelation {
                e1,
                e2,
                label: p.label,
                score: p.score,
            });
        }
    }
    Ok(out)
}
