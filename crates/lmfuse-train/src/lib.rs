//! Training, evaluating and storing lmfuse classifiers.
//!
//! The caller turns texts into [`Features`] (embeddings through the cache); this crate maps
//! labels to classes, selects the head's regularisation on a dev set, fits, evaluates and
//! converts the fitted classifier to and from a bundle.

mod oos;
pub mod search;

pub use oos::{
    OosCard, OosDetector, OosDev, OosMethod, OosMetrics, OosObjective, OosSelection, OosTrial,
};

use lmfuse_bundle::{Bundle, Manifest, Tensor};
use lmfuse_classic::{
    Bag, ClassWeight, ClassicError, GbdtParams, Head, HeadParams, KnnParams, LinearSvmParams,
    LogisticRegressionParams, MlpParams, NaiveBayesParams, ProbaHead, RandomForestParams,
};
use lmfuse_core::{CsrMatrix, DenseMatrix, EncoderFingerprint, Features, LabelSet};
use lmfuse_features::{Cell, StopWords, Tabular, TabularSpec, Tfidf, TfidfParams};
use lmfuse_metrics::{MetricsError, Report};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Why training, evaluation or loading failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A head could not be fit or applied.
    #[error(transparent)]
    Classic(#[from] ClassicError),
    /// Metrics could not be computed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A label of an evaluation set does not occur in the training data.
    #[error(
        "{file}:{line}: label {label:?} does not occur in the training data (classes: {classes})"
    )]
    UnknownLabel {
        /// The file.
        file: String,
        /// Its line.
        line: usize,
        /// The label.
        label: String,
        /// Known classes.
        classes: String,
    },
    /// An option is out of range.
    #[error("invalid option: {0}")]
    Option(String),
    /// The bundle's model description does not fit this lmfuse.
    #[error("bundle {what}: {message}")]
    Bundle {
        /// What part.
        what: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The classical head `lmfuse train --head` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// Multinomial logistic regression; `C` chosen on dev.
    Logreg,
    /// Linear SVM with calibrated probabilities; `C` chosen on dev.
    Svm,
    /// Naive Bayes (multinomial or Gaussian); smoothing chosen on dev.
    Nb,
    /// Cosine k-nearest neighbours; `k` chosen on dev.
    Knn,
    /// Random forest (defaults; nothing to choose on dev).
    Rf,
    /// Gradient-boosted trees (rounds by early stopping on an internal holdout).
    Gbdt,
    /// MLP over all columns, one hidden layer (deep fusion); weight decay chosen on dev.
    Mlp,
    /// MLP whose classical block and trailing dense block ([`TrainOptions::dense_tail`]
    /// columns, the embedding) are projected apart into a shared hidden layer; weight decay
    /// chosen on dev.
    Shared,
}

/// Units each block is projected to by the `shared` head.
pub const SHARED_PROJECTION: usize = 128;

/// Naive Bayes' grid: multinomial smoothing `alpha` paired with the Gaussian variance
/// smoothing (which one counts is chosen from the features at fit time).
const NB_GRID: [(f64, f64); 5] = [
    (0.01, 1e-9),
    (0.03, 1e-6),
    (0.1, 1e-3),
    (0.3, 1e-2),
    (1.0, 1e-1),
];

/// The Gaussian variance smoothing paired with multinomial `alpha`: [`NB_GRID`]'s pairs
/// (exactly, at its points), interpolated log-linearly between them and clamped at its ends.
pub fn nb_var_smoothing(alpha: f64) -> f64 {
    if let Some(&(_, v)) = NB_GRID.iter().find(|&&(a, _)| a == alpha) {
        return v;
    }
    let a = alpha.log10();
    let (first, last) = (NB_GRID[0], NB_GRID[NB_GRID.len() - 1]);
    if a <= first.0.log10() {
        return first.1;
    }
    for w in NB_GRID.windows(2) {
        let ((a0, v0), (a1, v1)) = (w[0], w[1]);
        if a <= a1.log10() {
            let t = (a - a0.log10()) / (a1.log10() - a0.log10());
            return 10f64.powf(v0.log10() + t * (v1.log10() - v0.log10()));
        }
    }
    last.1
}

/// Training options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// The head.
    pub head: HeadKind,
    /// Values of the inverse regularisation `C` tried on the dev set (logreg, svm).
    pub c_grid: Vec<f64>,
    /// Class weighting (logreg, svm).
    pub class_weight: ClassWeight,
    /// Seed of every random choice of the head (folds, bootstrap samples).
    pub seed: u64,
    /// Trailing dense columns (the embedding, then any side columns) that the `shared` head
    /// projects apart from the leading classical block; unused by the other heads.
    #[serde(default)]
    pub dense_tail: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            head: HeadKind::Logreg,
            c_grid: vec![0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0],
            class_weight: ClassWeight::Uniform,
            seed: 13,
            dense_tail: 0,
        }
    }
}

impl TrainOptions {
    /// The hyperparameter settings tried on the dev set, in order.
    pub fn candidates(&self) -> Vec<HeadParams> {
        let values: Vec<f64> = match self.head {
            HeadKind::Logreg | HeadKind::Svm => {
                let mut grid = self.c_grid.clone();
                grid.sort_by(f64::total_cmp);
                grid
            }
            HeadKind::Nb => NB_GRID.iter().map(|&(alpha, _)| alpha).collect(),
            HeadKind::Knn => vec![1.0, 3.0, 5.0, 10.0, 20.0, 50.0],
            HeadKind::Rf => vec![RandomForestParams::default().n_trees as f64],
            HeadKind::Gbdt => vec![GbdtParams::default().learning_rate],
            // Strongest decay first, as the C grids run from most regularised. The shared
            // head's extra layer lets its TF-IDF projection memorise faster: it needs
            // stronger decay (both grids chosen on the dev sets of sst2 and trec).
            HeadKind::Mlp => vec![10.0, 3.0, 1.0],
            HeadKind::Shared => vec![30.0, 10.0, 3.0],
        };
        values.into_iter().map(|v| self.params_with(v)).collect()
    }

    /// The head's hyperparameters with its main one (logreg and svm `C`, nb `alpha`, knn `k`,
    /// rf `n_trees`, gbdt `learning_rate`, the MLP's weight decay `alpha`) at `value`, the
    /// others from these options (class weight, seed, the shared head's dense tail) or their
    /// defaults.
    pub fn params_with(&self, value: f64) -> HeadParams {
        let seed = self.seed;
        match self.head {
            HeadKind::Logreg => HeadParams::Logreg(LogisticRegressionParams {
                c: value,
                class_weight: self.class_weight,
                ..Default::default()
            }),
            HeadKind::Svm => HeadParams::Svm(LinearSvmParams {
                c: value,
                class_weight: self.class_weight,
                seed,
                ..Default::default()
            }),
            // Multinomial smoothing and Gaussian variance smoothing move together; the variant
            // is chosen from the features at fit time.
            HeadKind::Nb => HeadParams::Nb(NaiveBayesParams {
                alpha: value,
                var_smoothing: nb_var_smoothing(value),
                ..Default::default()
            }),
            HeadKind::Knn => HeadParams::Knn(KnnParams {
                k: value.round().max(1.0) as usize,
                ..Default::default()
            }),
            HeadKind::Rf => HeadParams::Rf(RandomForestParams {
                n_trees: value.round().max(1.0) as usize,
                seed,
                ..Default::default()
            }),
            HeadKind::Gbdt => HeadParams::Gbdt(GbdtParams {
                learning_rate: value,
                seed,
                ..Default::default()
            }),
            HeadKind::Mlp => HeadParams::Mlp(MlpParams {
                alpha: value,
                seed,
                ..Default::default()
            }),
            HeadKind::Shared => HeadParams::Mlp(MlpParams {
                alpha: value,
                projection: SHARED_PROJECTION,
                dense_tail: self.dense_tail,
                seed,
                ..Default::default()
            }),
        }
    }
}

/// Class indices of `labels` under `set`; an unknown label is an error naming file and line.
pub fn encode_labels(
    set: &LabelSet,
    labels: &[String],
    file: &str,
    lines: &[usize],
) -> Result<Vec<usize>, TrainError> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            set.index(l).ok_or_else(|| TrainError::UnknownLabel {
                file: file.to_string(),
                line: lines.get(i).copied().unwrap_or(0),
                label: l.clone(),
                classes: set.names().join(", "),
            })
        })
        .collect()
}

/// One hyperparameter setting tried during selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// The hyperparameter varied (`c`, `alpha`, `k`, ...).
    pub param: String,
    /// Its value.
    pub value: f64,
    /// Dev accuracy.
    pub dev_accuracy: f64,
    /// Seconds the fit took.
    pub fit_seconds: f64,
}

/// Outcome of [`fit_selecting`].
#[derive(Debug, Clone)]
pub struct Selection {
    /// The model fit with the chosen setting.
    pub model: Head,
    /// The chosen setting.
    pub params: HeadParams,
    /// Every setting tried, in order.
    pub trials: Vec<Trial>,
    /// Dev metrics of the chosen model.
    pub dev: Report,
}

/// Fits one model per candidate on the training rows and keeps the one with the best dev
/// accuracy (the earlier candidate on ties: candidates run from most to least regularised).
/// Candidates are fit in their cheaper [`HeadParams::for_selection`] form; when that differs,
/// the winner is refit as given and its dev report recomputed.
pub fn fit_selecting(
    train: (&Features, &[usize]),
    dev_rows: (&Features, &[usize]),
    labels: &LabelSet,
    candidates: &[HeadParams],
) -> Result<Selection, TrainError> {
    fit_selecting_until(train, dev_rows, labels, candidates, None)
}

/// [`fit_selecting`], trying no further candidate once `deadline` has passed (the first is
/// always tried): the selection's `trials` then hold fewer entries than `candidates`, and a
/// winner fit in a cheaper selection form keeps that form (and its `params` say so) instead
/// of being refit.
pub fn fit_selecting_until(
    train: (&Features, &[usize]),
    dev_rows: (&Features, &[usize]),
    labels: &LabelSet,
    candidates: &[HeadParams],
    deadline: Option<std::time::Instant>,
) -> Result<Selection, TrainError> {
    if candidates.is_empty() {
        return Err(TrainError::Option(
            "no hyperparameter setting to try".into(),
        ));
    }
    for c in candidates {
        c.check()?;
    }
    let mut best: Option<(Head, HeadParams, Report)> = None;
    let mut trials = Vec::new();
    // Each fit starts from the previous one's solution where the head allows (logistic
    // regression along its C grid), which cuts the optimiser's steps several-fold.
    let mut previous: Option<Head> = None;
    for params in candidates {
        if !trials.is_empty() && deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            break;
        }
        let t = std::time::Instant::now();
        let model =
            params
                .for_selection()
                .fit_from(train.0, train.1, labels.len(), previous.as_ref())?;
        let fit_seconds = t.elapsed().as_secs_f64();
        let proba = model.predict_proba(dev_rows.0)?;
        let report = lmfuse_metrics::evaluate(dev_rows.1, &proba, labels.names())?;
        let (param, value) = params.tuned();
        trials.push(Trial {
            param: param.to_string(),
            value,
            dev_accuracy: report.accuracy,
            fit_seconds,
        });
        if best.as_ref().is_none_or(|b| report.accuracy > b.2.accuracy) {
            best = Some((model.clone(), *params, report));
        }
        previous = Some(model);
    }
    drop(previous);
    let (mut model, mut params, mut dev) = best.expect("candidates are not empty");
    let late = deadline.is_some_and(|d| std::time::Instant::now() >= d);
    if late {
        // No time for the full form: the winner stays in the form it was fit in.
        params = params.for_selection();
    } else if params.for_selection() != params {
        model = params.fit_from(train.0, train.1, labels.len(), Some(&model))?;
        let proba = model.predict_proba(dev_rows.0)?;
        dev = lmfuse_metrics::evaluate(dev_rows.1, &proba, labels.names())?;
    }
    Ok(Selection {
        model,
        params,
        trials,
        dev,
    })
}

/// Hex sha256 identifying a training set: every (text, label) pair in order.
pub fn data_hash(texts: &[String], labels: &[String]) -> String {
    let mut h = Sha256::new();
    for (t, l) in texts.iter().zip(labels) {
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
        h.update((l.len() as u64).to_le_bytes());
        h.update(l.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The encoder a classifier was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderInfo {
    /// How the model was named (path, hub id or the default's name).
    pub reference: String,
    /// Everything that fixes its output.
    pub fingerprint: EncoderFingerprint,
    /// Vector dimension.
    pub dim: usize,
    /// Whether the encoder's model files are inside the bundle (a fine-tuned encoder, under
    /// `lmfuse_bundle::ENCODER_DIR`) rather than found through `reference`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_bundle: bool,
}

/// The model description stored in a bundle's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Task kind.
    pub task: String,
    /// The encoder.
    pub encoder: EncoderInfo,
    /// Class names in index order.
    pub labels: Vec<String>,
    /// Feature blocks, in concatenation order: `tfidf_word`, `tfidf_char`, `emb`, `tab`.
    pub features: Vec<String>,
    /// TF-IDF settings, by block name.
    #[serde(default)]
    pub tfidf: BTreeMap<String, TfidfParams>,
    /// The weight multiplying each block's columns before they are put side by side (the
    /// classifier's [`TextFeaturizer::weights`]); 1 for every block in bundles saved before
    /// weights existed.
    #[serde(default)]
    pub block_weights: BlockWeights,
    /// The head and its hyperparameters.
    pub head: HeadCard,
    /// Where the model came from.
    pub training: serde_json::Value,
    /// Dev and test metrics at training time.
    pub metrics: serde_json::Value,
    /// Temperature the class probabilities are scaled by
    /// ([`lmfuse_fusion::apply_temperature`]), fit on out-of-fold probabilities; none: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
}

/// The head part of a [`ModelCard`]: `{"kind": ..., "params": {...}, "n_features": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadCard {
    /// The head and its hyperparameters.
    #[serde(flatten)]
    pub params: HeadParams,
    /// Input width.
    pub n_features: usize,
    /// When set, the head is a [`Bag`] of this many fold models of `params` (tensors under
    /// `fold{j}.`), whose probabilities it averages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bagged: Option<usize>,
}

impl HeadCard {
    /// The card of one head of `params` over `n_features` columns.
    pub fn new(params: HeadParams, n_features: usize) -> Self {
        Self {
            params,
            n_features,
            bagged: None,
        }
    }
}

impl ModelCard {
    /// The card of a text classifier over `text`'s blocks (TF-IDF, then the embedding when
    /// `emb`, then side columns when fit): block names, TF-IDF settings and block weights are
    /// read from `text`.
    pub fn new(
        encoder: EncoderInfo,
        labels: &LabelSet,
        text: &TextFeaturizer,
        emb: bool,
        head: HeadCard,
        training: serde_json::Value,
        metrics: serde_json::Value,
    ) -> Self {
        let mut features: Vec<String> = text.blocks().map(|(n, _)| n.to_string()).collect();
        if emb {
            features.push("emb".into());
        }
        if text.tabular.is_some() {
            features.push("tab".into());
        }
        Self {
            task: "text-classification".into(),
            encoder,
            labels: labels.names().to_vec(),
            features,
            tfidf: text
                .blocks()
                .map(|(n, t)| (n.to_string(), *t.params()))
                .collect(),
            block_weights: text.weights,
            head,
            training,
            metrics,
            temperature: None,
        }
    }
}

/// The weight multiplying the columns of each feature block before the blocks are put side by
/// side. TF-IDF rows and (most) sentence embeddings have unit length, so a weight sets how much
/// a block counts against the others: for an L2-regularised linear head, weight `w` on a block
/// is the same as multiplying its regularisation strength by `1 / w²`; for cosine kNN it sets
/// the block's share of the similarity. Trees do not see it (they split on order).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BlockWeights {
    /// Word n-gram TF-IDF.
    #[serde(default = "one")]
    pub tfidf_word: f32,
    /// Character n-gram TF-IDF.
    #[serde(default = "one")]
    pub tfidf_char: f32,
    /// Encoder embeddings.
    #[serde(default = "one")]
    pub emb: f32,
}

fn one() -> f32 {
    1.0
}

impl Default for BlockWeights {
    fn default() -> Self {
        Self {
            tfidf_word: 1.0,
            tfidf_char: 1.0,
            emb: 1.0,
        }
    }
}

impl BlockWeights {
    /// Weight 1 for every block but the embeddings, which get `emb`.
    pub fn with_emb(emb: f32) -> Self {
        Self {
            emb,
            ..Self::default()
        }
    }

    /// Checks the embedding weights to try (`compare`, `tune`): at least one, each one a
    /// weight [`BlockWeights::check`] accepts.
    pub fn check_emb_choices(weights: &[f32]) -> Result<(), TrainError> {
        if weights.is_empty() {
            return Err(TrainError::Option("no embedding weight to try".into()));
        }
        weights.iter().try_for_each(|&w| Self::with_emb(w).check())
    }

    /// Every weight must be finite and positive.
    pub fn check(&self) -> Result<(), TrainError> {
        for (name, w) in [
            ("tfidf_word", self.tfidf_word),
            ("tfidf_char", self.tfidf_char),
            ("emb", self.emb),
        ] {
            if !(w.is_finite() && w > 0.0) {
                return Err(TrainError::Option(format!(
                    "the weight of feature block {name} must be a positive number, not {w}"
                )));
            }
        }
        Ok(())
    }
}

/// The feature blocks fit on a classifier's training rows: TF-IDF of the texts and the
/// standardised / one-hot side columns, and the weight of every block.
#[derive(Debug, Clone, Default)]
pub struct TextFeaturizer {
    /// Word n-grams.
    pub word: Option<Tfidf>,
    /// Character n-grams.
    pub char: Option<Tfidf>,
    /// Side columns (`--feature-cols`).
    pub tabular: Option<Tabular>,
    /// The weight of each block; a classifier's card records the same
    /// ([`ModelCard::block_weights`]), and loading a bundle sets them from it.
    pub weights: BlockWeights,
}

/// The blocks of some rows, transformed but neither weighted nor put side by side
/// ([`TextFeaturizer::transform`], [`Blocks::fuse`]): callers that try several weights on the
/// same rows transform once.
#[derive(Debug, Clone, Default)]
pub struct Blocks {
    /// Word n-gram TF-IDF.
    pub word: Option<CsrMatrix>,
    /// Character n-gram TF-IDF.
    pub char: Option<CsrMatrix>,
    /// Encoder embeddings.
    pub emb: Option<DenseMatrix>,
    /// Side columns.
    pub tab: Option<DenseMatrix>,
}

impl Blocks {
    /// Keeps the rows listed in `idx`, in that order, in every block.
    pub fn select_rows(&self, idx: &[usize]) -> Self {
        Self {
            word: self.word.as_ref().map(|m| m.select_rows(idx)),
            char: self.char.as_ref().map(|m| m.select_rows(idx)),
            emb: self.emb.as_ref().map(|m| m.select_rows(idx)),
            tab: self.tab.as_ref().map(|m| m.select_rows(idx)),
        }
    }

    /// The feature rows: TF-IDF blocks (word, then character), then `emb`, then the side
    /// columns, each multiplied by its weight, side by side; dense when there is no TF-IDF
    /// block. A weight of 1 leaves its block's values exactly as they are.
    pub fn fuse(&self, weights: &BlockWeights) -> Result<Features, TrainError> {
        weights.check()?;
        if self.word.is_none() && self.char.is_none() {
            let emb = self.emb.as_ref().map(|e| scale_dense(e, weights.emb));
            return match (emb, self.tab.clone()) {
                (Some(e), Some(t)) => Ok(Features::Dense(dense_hstack(&e, &t))),
                (Some(m), None) | (None, Some(m)) => Ok(Features::Dense(m)),
                (None, None) => Err(TrainError::Option("no feature block".into())),
            };
        }
        let emb = self.emb.as_ref().map(CsrMatrix::from_dense);
        let tab = self.tab.as_ref().map(CsrMatrix::from_dense);
        let blocks: Vec<(&CsrMatrix, f32)> = [
            (self.word.as_ref(), weights.tfidf_word),
            (self.char.as_ref(), weights.tfidf_char),
            (emb.as_ref(), weights.emb),
            (tab.as_ref(), 1.0),
        ]
        .into_iter()
        .filter_map(|(m, w)| m.map(|m| (m, w)))
        .collect();
        Ok(Features::Sparse(lmfuse_features::hstack(&blocks)))
    }
}

/// `m` with every value multiplied by `w` (a copy of `m` when `w` is 1).
fn scale_dense(m: &DenseMatrix, w: f32) -> DenseMatrix {
    if w == 1.0 {
        return m.clone();
    }
    let data = m.as_slice().iter().map(|v| v * w).collect();
    DenseMatrix::new(m.rows(), m.cols(), data).expect("same shape")
}

impl TextFeaturizer {
    /// Fits word 1-2-gram and character 2-5-gram TF-IDF (sublinear tf) on `texts`.
    pub fn fit(texts: &[&str]) -> Result<Self, TrainError> {
        Self::fit_with(texts, StopWords::None)
    }

    /// As [`TextFeaturizer::fit`], the word n-grams formed after dropping `stop_words`.
    pub fn fit_with(texts: &[&str], stop_words: StopWords) -> Result<Self, TrainError> {
        let fit = |p: TfidfParams| p.fit(texts).map_err(|e| TrainError::Option(e.to_string()));
        let words = TfidfParams {
            stop_words,
            ..TfidfParams::words()
        };
        Ok(Self {
            word: Some(fit(words)?),
            char: Some(fit(TfidfParams::chars())?),
            tabular: None,
            weights: BlockWeights::default(),
        })
    }

    /// Whether there is any TF-IDF block.
    pub fn is_empty(&self) -> bool {
        self.word.is_none() && self.char.is_none()
    }

    /// Fits the side-column block (standardised numbers, one-hot categories) on `columns`.
    pub fn fit_tabular(&mut self, columns: &[(String, Vec<Cell>)]) -> Result<(), TrainError> {
        let t = lmfuse_features::TabularParams::default()
            .fit(columns)
            .map_err(|e| TrainError::Option(e.to_string()))?;
        self.tabular = Some(t);
        Ok(())
    }

    /// The blocks present, with their names, in column order.
    pub fn blocks(&self) -> impl Iterator<Item = (&'static str, &Tfidf)> {
        [
            ("tfidf_word", self.word.as_ref()),
            ("tfidf_char", self.char.as_ref()),
        ]
        .into_iter()
        .filter_map(|(n, t)| t.map(|t| (n, t)))
    }

    /// The blocks of `texts`, unweighted: TF-IDF, `emb` (when given) and the side columns
    /// (when fit; read from `columns`).
    pub fn transform(
        &self,
        texts: &[&str],
        emb: Option<DenseMatrix>,
        columns: &[(String, Vec<Cell>)],
    ) -> Result<Blocks, TrainError> {
        let tab = match &self.tabular {
            Some(t) => Some(
                t.transform(columns)
                    .map_err(|e| TrainError::Option(e.to_string()))?,
            ),
            None => None,
        };
        Ok(Blocks {
            word: self.word.as_ref().map(|t| t.transform(texts)),
            char: self.char.as_ref().map(|t| t.transform(texts)),
            emb,
            tab,
        })
    }

    /// The feature rows of `texts`: TF-IDF blocks, then `emb` (when given), then the side
    /// columns (when fit; read from `columns`), each multiplied by its weight in
    /// [`Self::weights`], side by side; dense when there is no TF-IDF block.
    pub fn features(
        &self,
        texts: &[&str],
        emb: Option<DenseMatrix>,
        columns: &[(String, Vec<Cell>)],
    ) -> Result<Features, TrainError> {
        self.transform(texts, emb, columns)?.fuse(&self.weights)
    }
}

fn dense_hstack(a: &DenseMatrix, b: &DenseMatrix) -> DenseMatrix {
    let mut data = Vec::with_capacity(a.rows() * (a.cols() + b.cols()));
    for r in 0..a.rows() {
        data.extend_from_slice(a.row(r));
        data.extend_from_slice(b.row(r));
    }
    DenseMatrix::new(a.rows(), a.cols() + b.cols(), data).expect("built to shape")
}

/// A trained text classifier: encoder reference, labels and head.
#[derive(Debug, Clone)]
pub struct Classifier {
    /// Description (stored as the manifest's `model`).
    pub card: ModelCard,
    /// Classes.
    pub labels: LabelSet,
    /// The head.
    pub head: Head,
    /// TF-IDF blocks.
    pub text_features: TextFeaturizer,
    /// Out-of-scope detection on top of the head, if trained with it.
    pub oos: Option<OosDetector>,
}

/// Prefix of the out-of-scope detector's tensors in the bundle.
const OOS_PREFIX: &str = "oos.";
/// The out-of-scope detector's description in the bundle.
const OOS_CARD: &str = "oos.json";

/// Prefix of the side-column block's tensors in the bundle.
const TAB_PREFIX: &str = "tab.";
/// The side-column block's description in the bundle.
const TAB_SPEC: &str = "tab.spec.json";

/// Prefix of the head's tensors in the bundle.
const HEAD_PREFIX: &str = "head.";

/// The bundle format version of a model: the oldest that holds it, so that an older lmfuse
/// reads every bundle it can.
/// The oldest bundle version that can hold what is written: a bag of fold models as a head
/// (`bagged`), an ensemble member with an encoder fine-tuned inside the bundle (`mixed`).
fn format_version(bagged: bool, mixed: bool, calibrated: bool) -> u32 {
    if calibrated {
        lmfuse_bundle::CALIBRATED_VERSION
    } else if mixed {
        lmfuse_bundle::MIXED_ENCODERS_VERSION
    } else if bagged {
        lmfuse_bundle::BAGGED_HEADS_VERSION
    } else {
        lmfuse_bundle::PLAIN_VERSION
    }
}

impl Classifier {
    /// Class probabilities for feature rows, `rows × classes`.
    pub fn predict_proba(&self, x: &Features) -> Result<Vec<f32>, TrainError> {
        let mut proba = self.head.predict_proba(x)?;
        if let Some(t) = self.card.temperature {
            lmfuse_fusion::apply_temperature(&mut proba, self.labels.len(), t);
        }
        Ok(proba)
    }

    /// The manifest and tensors of this classifier's bundle; `created_at` is the only field
    /// that depends on the clock.
    pub fn to_bundle(
        &self,
        lmfuse_version: &str,
        created_at: &str,
    ) -> (
        Manifest,
        BTreeMap<String, Tensor>,
        BTreeMap<String, serde_json::Value>,
    ) {
        let manifest = Manifest {
            format_version: format_version(
                self.card.head.bagged.is_some(),
                false,
                self.card.temperature.is_some(),
            ),
            lmfuse_version: lmfuse_version.to_string(),
            created_at: created_at.to_string(),
            model: serde_json::to_value(&self.card).expect("card serialises"),
            files: BTreeMap::new(),
        };
        let mut tensors: BTreeMap<String, Tensor> = self
            .head
            .to_tensors()
            .into_iter()
            .map(|(name, t)| (format!("{HEAD_PREFIX}{name}"), t))
            .collect();
        let mut json = BTreeMap::new();
        for (name, t) in self.text_features.blocks() {
            tensors.insert(
                format!("{name}.idf"),
                Tensor::f32(vec![t.dim()], t.idf().to_vec()),
            );
            json.insert(format!("{name}.vocab.json"), serde_json::json!(t.vocab()));
        }
        if let Some(tab) = &self.text_features.tabular {
            for (name, t) in tab.to_tensors() {
                tensors.insert(format!("{TAB_PREFIX}{name}"), t);
            }
            json.insert(
                TAB_SPEC.to_string(),
                serde_json::to_value(tab.spec()).expect("spec serialises"),
            );
        }
        if let Some(oos) = &self.oos {
            for (name, t) in oos.to_tensors() {
                tensors.insert(format!("{OOS_PREFIX}{name}"), t);
            }
            json.insert(
                OOS_CARD.to_string(),
                serde_json::to_value(&oos.card).expect("card serialises"),
            );
        }
        (manifest, tensors, json)
    }

    /// Rebuilds a classifier from a loaded bundle, checking that its parts agree.
    pub fn from_bundle(bundle: &Bundle) -> Result<Self, TrainError> {
        let card: ModelCard =
            serde_json::from_value(bundle.manifest.model.clone()).map_err(|e| {
                TrainError::Bundle {
                    what: "manifest model",
                    message: e.to_string(),
                }
            })?;
        let labels = LabelSet::from_names(card.labels.clone());
        if labels.len() < 2 {
            return Err(TrainError::Bundle {
                what: "labels",
                message: format!("{} classes; at least 2 are needed", labels.len()),
            });
        }
        let tensor = |name: &str, shape: Vec<usize>| -> Result<Vec<f32>, TrainError> {
            lmfuse_classic::stored_f32(&bundle.tensors, name, Some(&shape))
                .map(<[f32]>::to_vec)
                .map_err(|e| TrainError::Bundle {
                    what: "weights",
                    message: e.to_string(),
                })
        };
        let mut text_features = TextFeaturizer::default();
        let mut width = 0;
        let bad = |message: String| TrainError::Bundle {
            what: "features",
            message,
        };
        card.block_weights
            .check()
            .map_err(|e| bad(format!("block_weights: {e}")))?;
        text_features.weights = card.block_weights;
        for name in &card.features {
            match name.as_str() {
                "emb" => width += card.encoder.dim,
                "tab" => {
                    let value = bundle
                        .json
                        .get(TAB_SPEC)
                        .cloned()
                        .ok_or_else(|| bad(format!("{TAB_SPEC} is missing")))?;
                    let spec: TabularSpec = serde_json::from_value(value)
                        .map_err(|e| bad(format!("{TAB_SPEC}: {e}")))?;
                    let tensors: BTreeMap<String, Tensor> = bundle
                        .tensors
                        .iter()
                        .filter_map(|(n, t)| {
                            n.strip_prefix(TAB_PREFIX)
                                .map(|l| (l.to_string(), t.clone()))
                        })
                        .collect();
                    let t = Tabular::from_parts(spec, &tensors)
                        .map_err(|e| bad(format!("tab: {e}")))?;
                    width += t.dim();
                    text_features.tabular = Some(t);
                }
                "tfidf_word" | "tfidf_char" => {
                    let params = *card
                        .tfidf
                        .get(name)
                        .ok_or_else(|| bad(format!("no settings for feature block {name:?}")))?;
                    let file = format!("{name}.vocab.json");
                    let value = bundle
                        .json
                        .get(&file)
                        .cloned()
                        .ok_or_else(|| bad(format!("{file} is missing")))?;
                    let vocab: Vec<String> =
                        serde_json::from_value(value).map_err(|e| bad(format!("{file}: {e}")))?;
                    let idf = tensor(&format!("{name}.idf"), vec![vocab.len()])?;
                    let t =
                        Tfidf::from_parts(params, vocab, idf).map_err(|e| bad(e.to_string()))?;
                    width += t.dim();
                    if name == "tfidf_word" {
                        text_features.word = Some(t);
                    } else {
                        text_features.char = Some(t);
                    }
                }
                other => return Err(bad(format!("unknown feature block {other:?}"))),
            }
        }
        let (d, k) = (card.head.n_features, labels.len());
        if d != width {
            return Err(bad(format!(
                "the head takes {d} features but the blocks {:?} give {width}",
                card.features
            )));
        }
        let head_tensors: BTreeMap<String, Tensor> = bundle
            .tensors
            .iter()
            .filter_map(|(name, t)| {
                name.strip_prefix(HEAD_PREFIX)
                    .map(|local| (local.to_string(), t.clone()))
            })
            .collect();
        let params = &card.head.params;
        let head = match card.head.bagged {
            None => params.restore(d, k, &head_tensors),
            Some(folds) => Bag::restore(params, folds, d, k, &head_tensors).map(Head::Bag),
        }
        .map_err(|e| TrainError::Bundle {
            what: "head",
            message: format!("{} head: {e}", params.name()),
        })?;
        let oos = match bundle.json.get(OOS_CARD) {
            None => None,
            Some(value) => {
                let oos_card: OosCard =
                    serde_json::from_value(value.clone()).map_err(|e| TrainError::Bundle {
                        what: "out-of-scope detector",
                        message: format!("{OOS_CARD}: {e}"),
                    })?;
                if oos_card.dim != card.encoder.dim {
                    return Err(TrainError::Bundle {
                        what: "out-of-scope detector",
                        message: format!(
                            "fit on {}-dimensional embeddings, the encoder gives {}",
                            oos_card.dim, card.encoder.dim
                        ),
                    });
                }
                let tensors: BTreeMap<String, Tensor> = bundle
                    .tensors
                    .iter()
                    .filter_map(|(n, t)| {
                        n.strip_prefix(OOS_PREFIX)
                            .map(|l| (l.to_string(), t.clone()))
                    })
                    .collect();
                Some(OosDetector::restore(oos_card, labels.names(), &tensors)?)
            }
        };
        Ok(Self {
            card,
            labels,
            head,
            text_features,
            oos,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nb_var_smoothing_meets_the_train_grid_at_its_points() {
        for (alpha, v) in NB_GRID {
            let got = nb_var_smoothing(alpha);
            assert_eq!(got, v, "{alpha}");
        }
        let mid = nb_var_smoothing(0.05);
        assert!(mid > 1e-6 && mid < 1e-3, "{mid}");
        assert_eq!(nb_var_smoothing(1e-4), 1e-9);
        assert_eq!(nb_var_smoothing(5.0), 1e-1);
    }

    use super::*;
    use lmfuse_core::{DenseMatrix, Pooling};

    fn toy() -> (Features, Vec<usize>, LabelSet) {
        let mut data = Vec::new();
        let mut y = Vec::new();
        for i in 0..60 {
            let c = i % 2;
            let j = ((i as f32 * 12.9898).sin() * 43758.545).fract() - 0.5;
            data.extend_from_slice(&[c as f32 + j, 1.0 - c as f32 + 0.5 * j]);
            y.push(c);
        }
        (
            Features::Dense(DenseMatrix::new(60, 2, data).unwrap()),
            y,
            LabelSet::from_labels(["neg", "pos"]),
        )
    }

    #[test]
    fn selection_picks_the_best_dev_accuracy_and_round_trips_through_a_bundle() {
        for head in ALL_HEADS {
            selects_and_round_trips(head);
        }
    }

    #[test]
    fn a_passed_deadline_stops_the_grid_after_its_first_value() {
        let (x, y, labels) = toy();
        let candidates = TrainOptions::default().candidates();
        assert!(candidates.len() > 1);
        let past = std::time::Instant::now();
        let sel =
            fit_selecting_until((&x, &y), (&x, &y), &labels, &candidates, Some(past)).unwrap();
        assert_eq!(sel.trials.len(), 1);
        assert_eq!(sel.params, candidates[0].for_selection());
        let svm = TrainOptions {
            head: HeadKind::Svm,
            ..Default::default()
        }
        .candidates();
        let late = fit_selecting_until((&x, &y), (&x, &y), &labels, &svm, Some(past)).unwrap();
        assert_eq!(
            late.params,
            svm[0].for_selection(),
            "not refit with calibration"
        );
        assert_ne!(late.params, svm[0]);
        let later = past + std::time::Duration::from_secs(3600);
        let all =
            fit_selecting_until((&x, &y), (&x, &y), &labels, &candidates, Some(later)).unwrap();
        assert_eq!(all.trials.len(), candidates.len());
    }

    const ALL_HEADS: [HeadKind; 8] = [
        HeadKind::Logreg,
        HeadKind::Svm,
        HeadKind::Nb,
        HeadKind::Knn,
        HeadKind::Rf,
        HeadKind::Gbdt,
        HeadKind::Mlp,
        HeadKind::Shared,
    ];

    fn selects_and_round_trips(head: HeadKind) {
        let (x, y, labels) = toy();
        let options = TrainOptions {
            head,
            // The toy's second column stands for the embedding.
            dense_tail: usize::from(head == HeadKind::Shared),
            ..Default::default()
        };
        let candidates = options.candidates();
        let sel = fit_selecting((&x, &y), (&x, &y), &labels, &candidates).unwrap();
        assert_eq!(sel.trials.len(), candidates.len());
        let best = sel
            .trials
            .iter()
            .map(|t| t.dev_accuracy)
            .fold(0.0, f64::max);
        assert_eq!(sel.dev.accuracy, best);
        let card = ModelCard::new(
            toy_encoder(),
            &labels,
            &TextFeaturizer::default(),
            true,
            HeadCard::new(sel.params, 2),
            serde_json::json!({}),
            serde_json::json!({}),
        );
        let clf = Classifier {
            card,
            labels,
            head: sel.model,
            text_features: TextFeaturizer::default(),
            oos: None,
        };
        let (m, t, j) = clf.to_bundle("0.1.0", "now");
        let dir = tempfile::tempdir().unwrap();
        lmfuse_bundle::save(&dir.path().join("b"), m, &t, &j).unwrap();
        let back =
            Classifier::from_bundle(&lmfuse_bundle::load(&dir.path().join("b")).unwrap()).unwrap();
        assert_eq!(
            back.predict_proba(&x).unwrap(),
            clf.predict_proba(&x).unwrap(),
            "{head:?}"
        );
        assert_eq!(back.card, clf.card);
    }

    /// Texts whose words and two-column "embeddings" both carry the label.
    fn fused_toy() -> (Vec<String>, DenseMatrix, Vec<usize>, LabelSet) {
        let (x, y, labels) = toy();
        let Features::Dense(emb) = x else {
            unreachable!()
        };
        let texts = y
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let w = if c == 1 { "good" } else { "bad" };
                // Every fifth text has the other class's word: the blocks disagree there.
                let w = if i % 5 == 0 { ["good", "bad"][c] } else { w };
                format!("a {w} thing number {}", i % 7)
            })
            .collect();
        (texts, emb, y, labels)
    }

    fn toy_encoder() -> EncoderInfo {
        EncoderInfo {
            reference: "toy".into(),
            fingerprint: EncoderFingerprint {
                weights_sha256: "ab".into(),
                pooling: Pooling::Mean,
                normalize: true,
                max_seq_length: 8,
                prefix: String::new(),
                long_text: Default::default(),
                precision: Default::default(),
            },
            dim: 2,
            in_bundle: false,
        }
    }

    #[test]
    fn block_weights_multiply_their_columns_only() {
        let (texts, emb, _, _) = fused_toy();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut f = TextFeaturizer::fit(&refs).unwrap();
        let base = f.features(&refs, Some(emb.clone()), &[]).unwrap();
        f.weights = BlockWeights {
            tfidf_word: 0.5,
            tfidf_char: 1.0,
            emb: 3.0,
        };
        let scaled = f.features(&refs, Some(emb.clone()), &[]).unwrap();
        let (Features::Sparse(a), Features::Sparse(b)) = (&base, &scaled) else {
            panic!("fused features are sparse")
        };
        let (word, char) = (
            f.word.as_ref().unwrap().dim(),
            f.char.as_ref().unwrap().dim(),
        );
        assert_eq!(a.cols(), word + char + 2);
        for r in 0..a.rows() {
            let (ca, va) = a.row(r);
            let (cb, vb) = b.row(r);
            assert_eq!(ca, cb);
            for ((&c, &x), &z) in ca.iter().zip(va).zip(vb) {
                let w = match c as usize {
                    c if c < word => 0.5,
                    c if c < word + char => 1.0,
                    _ => 3.0,
                };
                assert_eq!(z, x * w, "row {r} column {c}");
            }
        }
        // Embeddings alone (dense) are weighted too; weight 1 is the identity.
        let alone = TextFeaturizer {
            weights: BlockWeights::with_emb(2.0),
            ..Default::default()
        };
        let Features::Dense(d) = alone.features(&refs, Some(emb.clone()), &[]).unwrap() else {
            panic!("embeddings alone are dense")
        };
        let doubled: Vec<f32> = emb.as_slice().iter().map(|v| 2.0 * v).collect();
        assert_eq!(d.as_slice(), doubled.as_slice());
        let Features::Dense(d) = TextFeaturizer::default()
            .features(&refs, Some(emb.clone()), &[])
            .unwrap()
        else {
            panic!("embeddings alone are dense")
        };
        assert_eq!(d, emb);
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let f = TextFeaturizer {
                weights: BlockWeights::with_emb(bad),
                ..Default::default()
            };
            let e = f.features(&refs, Some(emb.clone()), &[]).unwrap_err();
            assert!(e.to_string().contains("emb"), "{e}");
        }
    }

    #[test]
    fn block_weights_round_trip_through_a_bundle_and_default_to_one() {
        let (texts, emb, y, labels) = fused_toy();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut f = TextFeaturizer::fit(&refs).unwrap();
        f.weights = BlockWeights::with_emb(4.0);
        let x = f.features(&refs, Some(emb.clone()), &[]).unwrap();
        let params = HeadParams::Logreg(LogisticRegressionParams {
            c: 0.3,
            ..Default::default()
        });
        let head = params.fit(&x, &y, 2).unwrap();
        let clf = Classifier {
            card: ModelCard::new(
                toy_encoder(),
                &labels,
                &f,
                true,
                HeadCard::new(params, x.cols()),
                serde_json::json!({}),
                serde_json::json!({}),
            ),
            labels,
            head,
            text_features: f,
            oos: None,
        };
        assert_eq!(clf.card.features, ["tfidf_word", "tfidf_char", "emb"]);
        let (m, t, j) = clf.to_bundle("0.1.0", "now");
        assert_eq!(m.model["block_weights"]["emb"], 4.0);
        let dir = tempfile::tempdir().unwrap();
        lmfuse_bundle::save(&dir.path().join("b"), m.clone(), &t, &j).unwrap();
        let back =
            Classifier::from_bundle(&lmfuse_bundle::load(&dir.path().join("b")).unwrap()).unwrap();
        assert_eq!(back.card, clf.card);
        assert_eq!(back.text_features.weights, BlockWeights::with_emb(4.0));
        let predict = |c: &Classifier| {
            let x = c
                .text_features
                .features(&refs, Some(emb.clone()), &[])
                .unwrap();
            c.predict_proba(&x).unwrap()
        };
        let p = predict(&clf);
        assert_eq!(predict(&back), p);

        // A card written before block weights existed (no `block_weights` key) loads with
        // weight 1 for every block, which here predicts differently.
        let mut old = m;
        old.model.as_object_mut().unwrap().remove("block_weights");
        lmfuse_bundle::save(&dir.path().join("old"), old, &t, &j).unwrap();
        let back = Classifier::from_bundle(&lmfuse_bundle::load(&dir.path().join("old")).unwrap())
            .unwrap();
        assert_eq!(back.card.block_weights, BlockWeights::default());
        assert_eq!(back.text_features.weights, BlockWeights::default());
        assert_ne!(predict(&back), p);
        // A partial object fills in the blocks it leaves out with 1.
        let w: BlockWeights = serde_json::from_value(serde_json::json!({"emb": 2.0})).unwrap();
        assert_eq!(w, BlockWeights::with_emb(2.0));
    }

    #[test]
    fn bagged_members_round_trip_through_an_ensemble_bundle_at_format_3() {
        let (texts, emb, y, labels) = fused_toy();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let f = TextFeaturizer::fit(&refs).unwrap();
        let x = f.features(&refs, Some(emb.clone()), &[]).unwrap();
        let params = HeadParams::Logreg(LogisticRegressionParams::default());
        let folds = lmfuse_fusion::stratified_folds(&y, 3, 1);
        let (_, models) = lmfuse_fusion::out_of_fold_models(&x, &y, 2, &params, &folds).unwrap();
        let card = |bagged: Option<usize>| {
            let mut head = HeadCard::new(params, x.cols());
            head.bagged = bagged;
            ModelCard::new(
                toy_encoder(),
                &labels,
                &f,
                true,
                head,
                serde_json::json!({}),
                serde_json::json!({}),
            )
        };
        let bagged = Classifier {
            card: card(Some(3)),
            labels: labels.clone(),
            head: Head::Bag(Bag::new(models).unwrap()),
            text_features: f.clone(),
            oos: None,
        };
        let refit = Classifier {
            card: card(None),
            labels: labels.clone(),
            head: params.fit(&x, &y, 2).unwrap(),
            text_features: f.clone(),
            oos: None,
        };
        let (p_bag, p_refit) = (
            bagged.predict_proba(&x).unwrap(),
            refit.predict_proba(&x).unwrap(),
        );
        assert_ne!(p_bag, p_refit);
        let dir = tempfile::tempdir().unwrap();
        let save_load = |name: &str, (m, t, j): (Manifest, _, _)| {
            lmfuse_bundle::save(&dir.path().join(name), m, &t, &j).unwrap();
            let bundle = lmfuse_bundle::load(&dir.path().join(name)).unwrap();
            (
                bundle.manifest.format_version,
                Predictor::from_bundle(&bundle).unwrap(),
            )
        };
        // A single bagged classifier: format 3; a refit one stays at 2.
        let (v, back) = save_load("bag", bagged.to_bundle("0.1.0", "now"));
        assert_eq!(v, lmfuse_bundle::BAGGED_HEADS_VERSION);
        assert_eq!(back.classifiers()[0].predict_proba(&x).unwrap(), p_bag);
        let (v, _) = save_load("refit", refit.to_bundle("0.1.0", "now"));
        assert_eq!(v, lmfuse_bundle::PLAIN_VERSION);

        // An ensemble of a bagged and a refit member, as compare saves a stacking winner.
        let members = [&p_bag[..], &p_refit[..]];
        let lengths: Vec<f32> = texts.iter().map(|t| t.chars().count() as f32).collect();
        let cparams = lmfuse_fusion::CombinerParams {
            strategy: lmfuse_fusion::Strategy::Stacking,
            ..Default::default()
        };
        let combiner = cparams.fit(&members, &y, 2, &lengths).unwrap();
        let ensemble = Ensemble {
            card: EnsembleCard {
                task: ENSEMBLE_TASK.into(),
                encoder: toy_encoder(),
                labels: labels.names().to_vec(),
                members: vec![bagged.card.clone(), refit.card.clone()],
                combiner: cparams,
                training: serde_json::json!({}),
                metrics: serde_json::json!({}),
                temperature: None,
            },
            labels: labels.clone(),
            members: vec![bagged, refit],
            combiner,
        };
        let want = ensemble.combine(&members, &lengths).unwrap();
        let (v, back) = save_load("ensemble", ensemble.to_bundle("0.1.0", "now"));
        assert_eq!(v, lmfuse_bundle::BAGGED_HEADS_VERSION);
        let Predictor::Ensemble(back) = back else {
            panic!("an ensemble")
        };
        let p: Vec<Vec<f32>> = back
            .members
            .iter()
            .map(|m| m.predict_proba(&x).unwrap())
            .collect();
        assert_eq!(p, vec![p_bag, p_refit]);
        let refs: Vec<&[f32]> = p.iter().map(Vec::as_slice).collect();
        assert_eq!(back.combine(&refs, &lengths).unwrap(), want);

        // A member may read an encoder fine-tuned inside the bundle, not any other one; and
        // the bundle holds one fine-tuned encoder, so two members cannot name two.
        let with_encoder = |e: &Ensemble, i: usize, encoder: EncoderInfo| {
            let mut e = e.clone();
            e.members[i].card.encoder = encoder.clone();
            e.card.members[i].encoder = encoder;
            e
        };
        let tuned = |sha: &str| EncoderInfo {
            reference: lmfuse_bundle::ENCODER_DIR.into(),
            fingerprint: EncoderFingerprint {
                weights_sha256: sha.into(),
                ..toy_encoder().fingerprint
            },
            in_bundle: true,
            ..toy_encoder()
        };
        let mixed = with_encoder(&ensemble, 1, tuned("cd"));
        let (v, back) = save_load("mixed", mixed.to_bundle("0.1.0", "now"));
        assert_eq!(v, lmfuse_bundle::MIXED_ENCODERS_VERSION);
        let encoders: Vec<&str> = back
            .encoders()
            .iter()
            .map(|e| e.fingerprint.weights_sha256.as_str())
            .collect();
        assert_eq!(encoders, ["ab", "cd"]);
        let load_err = |name: &str, e: Ensemble| {
            let (m, t, j) = e.to_bundle("0.1.0", "now");
            lmfuse_bundle::save(&dir.path().join(name), m, &t, &j).unwrap();
            let bundle = lmfuse_bundle::load(&dir.path().join(name)).unwrap();
            Predictor::from_bundle(&bundle).unwrap_err().to_string()
        };
        let other = EncoderInfo {
            in_bundle: false,
            ..tuned("cd")
        };
        let e = load_err("other", with_encoder(&ensemble, 1, other));
        assert!(e.contains("member 1") && e.contains("encoder"), "{e}");
        let two = with_encoder(&with_encoder(&ensemble, 0, tuned("cd")), 1, tuned("ef"));
        let e = load_err("two", two);
        assert!(e.contains("member 1") && e.contains("encoder"), "{e}");
    }

    #[test]
    fn unknown_labels_name_file_and_line() {
        let set = LabelSet::from_labels(["a", "b"]);
        let e = encode_labels(&set, &["a".into(), "c".into()], "dev.jsonl", &[1, 7])
            .unwrap_err()
            .to_string();
        assert!(e.contains("dev.jsonl:7") && e.contains("\"c\""), "{e}");
    }

    #[test]
    fn data_hash_depends_on_every_pair() {
        let a = data_hash(&["x".into(), "y".into()], &["1".into(), "2".into()]);
        assert_ne!(
            a,
            data_hash(&["x".into(), "y".into()], &["2".into(), "1".into()])
        );
        assert_ne!(a, data_hash(&["xy".into()], &["12".into()]));
    }
}

/// The model description of an ensemble bundle: every member's own card, and the combiner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleCard {
    /// Task kind: [`ENSEMBLE_TASK`].
    pub task: String,
    /// The encoder the members share.
    pub encoder: EncoderInfo,
    /// Class names in index order.
    pub labels: Vec<String>,
    /// The members, in the combiner's order.
    pub members: Vec<ModelCard>,
    /// How their probabilities are fused.
    pub combiner: lmfuse_fusion::CombinerParams,
    /// Where the model came from.
    pub training: serde_json::Value,
    /// Metrics at training time.
    pub metrics: serde_json::Value,
    /// Temperature the fused probabilities are scaled by (see [`ModelCard::temperature`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
}

/// The `task` of an ensemble bundle's card.
pub const ENSEMBLE_TASK: &str = "text-classification-ensemble";

/// Several classifiers and the combiner that fuses their probabilities.
#[derive(Debug, Clone)]
pub struct Ensemble {
    /// Description (stored as the manifest's `model`).
    pub card: EnsembleCard,
    /// Classes.
    pub labels: LabelSet,
    /// The members.
    pub members: Vec<Classifier>,
    /// The fitted combiner.
    pub combiner: lmfuse_fusion::Combiner,
}

/// A classifier or an ensemble, as a bundle holds it.
#[derive(Debug, Clone)]
pub enum Predictor {
    /// One head.
    Single(Box<Classifier>),
    /// Several heads fused.
    Ensemble(Box<Ensemble>),
}

fn member_prefix(i: usize) -> String {
    format!("member{i}.")
}

const COMBINER_PREFIX: &str = "combiner.";

impl Ensemble {
    /// The manifest, tensors and JSON files of this ensemble's bundle: each member's parts
    /// under `member{i}.`, the combiner's under `combiner.`.
    pub fn to_bundle(
        &self,
        lmfuse_version: &str,
        created_at: &str,
    ) -> (
        Manifest,
        BTreeMap<String, Tensor>,
        BTreeMap<String, serde_json::Value>,
    ) {
        let (mut tensors, mut json) = (BTreeMap::new(), BTreeMap::new());
        for (i, m) in self.members.iter().enumerate() {
            let (_, t, j) = m.to_bundle(lmfuse_version, created_at);
            let p = member_prefix(i);
            tensors.extend(t.into_iter().map(|(n, v)| (format!("{p}{n}"), v)));
            json.extend(j.into_iter().map(|(n, v)| (format!("{p}{n}"), v)));
        }
        tensors.extend(
            self.combiner
                .to_tensors()
                .into_iter()
                .map(|(n, v)| (format!("{COMBINER_PREFIX}{n}"), v)),
        );
        let manifest = Manifest {
            format_version: format_version(
                self.card.members.iter().any(|m| m.head.bagged.is_some()),
                self.card
                    .members
                    .iter()
                    .any(|m| m.encoder != self.card.encoder),
                self.card.temperature.is_some(),
            ),
            lmfuse_version: lmfuse_version.to_string(),
            created_at: created_at.to_string(),
            model: serde_json::to_value(&self.card).expect("card serialises"),
            files: BTreeMap::new(),
        };
        (manifest, tensors, json)
    }

    /// Fused class probabilities from each member's probabilities for the same rows (in member
    /// order) and the texts' lengths in characters.
    pub fn combine(&self, members: &[&[f32]], lengths: &[f32]) -> Result<Vec<f32>, TrainError> {
        let mut proba = self
            .combiner
            .combine(members, self.labels.len(), lengths)
            .map_err(|e| TrainError::Option(e.to_string()))?;
        if let Some(t) = self.card.temperature {
            lmfuse_fusion::apply_temperature(&mut proba, self.labels.len(), t);
        }
        Ok(proba)
    }
}

impl Predictor {
    /// Rebuilds a classifier or an ensemble from a loaded bundle, by the card's `task`.
    pub fn from_bundle(bundle: &Bundle) -> Result<Self, TrainError> {
        let task = bundle.manifest.model.get("task").and_then(|t| t.as_str());
        if task != Some(ENSEMBLE_TASK) {
            return Ok(Predictor::Single(Box::new(Classifier::from_bundle(
                bundle,
            )?)));
        }
        let card: EnsembleCard =
            serde_json::from_value(bundle.manifest.model.clone()).map_err(|e| {
                TrainError::Bundle {
                    what: "manifest model",
                    message: e.to_string(),
                }
            })?;
        let labels = LabelSet::from_names(card.labels.clone());
        let mut members = Vec::with_capacity(card.members.len());
        for (i, member) in card.members.iter().enumerate() {
            let p = member_prefix(i);
            let strip = |name: &String| name.strip_prefix(&p).map(str::to_string);
            let sub = Bundle {
                manifest: Manifest {
                    model: serde_json::to_value(member).expect("card serialises"),
                    ..bundle.manifest.clone()
                },
                tensors: bundle
                    .tensors
                    .iter()
                    .filter_map(|(n, t)| strip(n).map(|n| (n, t.clone())))
                    .collect(),
                json: bundle
                    .json
                    .iter()
                    .filter_map(|(n, v)| strip(n).map(|n| (n, v.clone())))
                    .collect(),
                files: bundle.files.clone(),
            };
            let m = Classifier::from_bundle(&sub).map_err(|e| TrainError::Bundle {
                what: "ensemble member",
                message: format!("member {i}: {e}"),
            })?;
            // A member reads the encoder the members share, or one fine-tuned for it that
            // travels in the bundle (its folder holds one: every such member must name it).
            let in_bundle = members
                .iter()
                .map(|m: &Classifier| &m.card.encoder)
                .find(|e| e.in_bundle);
            let encoder_ok = m.card.encoder == card.encoder
                || (m.card.encoder.in_bundle && in_bundle.is_none_or(|e| *e == m.card.encoder));
            if m.labels.names() != labels.names() || !encoder_ok {
                return Err(TrainError::Bundle {
                    what: "ensemble member",
                    message: format!(
                        "member {i} has other labels or another encoder than the members' \
                         shared one (or the one fine-tuned in the bundle)"
                    ),
                });
            }
            members.push(m);
        }
        let combiner_tensors: BTreeMap<String, Tensor> = bundle
            .tensors
            .iter()
            .filter_map(|(n, t)| {
                n.strip_prefix(COMBINER_PREFIX)
                    .map(|l| (l.to_string(), t.clone()))
            })
            .collect();
        let combiner = lmfuse_fusion::Combiner::restore(
            &card.combiner,
            members.len(),
            labels.len(),
            &combiner_tensors,
        )
        .map_err(|e| TrainError::Bundle {
            what: "combiner",
            message: e.to_string(),
        })?;
        Ok(Predictor::Ensemble(Box::new(Ensemble {
            card,
            labels,
            members,
            combiner,
        })))
    }

    /// Classes.
    pub fn labels(&self) -> &LabelSet {
        match self {
            Predictor::Single(c) => &c.labels,
            Predictor::Ensemble(e) => &e.labels,
        }
    }

    /// The classifiers whose features must be computed, in order.
    pub fn classifiers(&self) -> Vec<&Classifier> {
        match self {
            Predictor::Single(c) => vec![c.as_ref()],
            Predictor::Ensemble(e) => e.members.iter().collect(),
        }
    }

    /// The encoder (of an ensemble: the one its members share).
    pub fn encoder(&self) -> &EncoderInfo {
        match self {
            Predictor::Single(c) => &c.card.encoder,
            Predictor::Ensemble(e) => &e.card.encoder,
        }
    }

    /// Every encoder the classifiers read, [`Predictor::encoder`] first: an ensemble may
    /// also hold a member whose encoder was fine-tuned (inside the bundle).
    pub fn encoders(&self) -> Vec<&EncoderInfo> {
        let mut all = vec![self.encoder()];
        for c in self.classifiers() {
            if !all.contains(&&c.card.encoder) {
                all.push(&c.card.encoder);
            }
        }
        all
    }
}
