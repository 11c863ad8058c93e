//! `lmfuse compare`: a leaderboard of single heads, feature fusion and ensembles on one data
//! set, ranked by k-fold cross-validation on train (never by test).

use crate::classify::check_head_features;
use crate::data::{load_splits, DataSpec, SplitPlan, Splits};
use crate::encoders::{embed_texts, CacheSpec, EncoderChoice};
use crate::error::{Context, PipelineError, Result};
use crate::finetune::{
    finetuned_classifier, fit_shared, shared_classifier, shared_head_params, shared_proba,
    shared_tfidf, BundleFile, FinetuneBase,
};
use crate::observe::Observer;
use crate::preset::{Preset, Scored, SelectRule};
use crate::{bail, ensure};
use lmfuse_classic::{Mlp, MlpParams, ProbaHead};
use lmfuse_core::LabelSet;
use lmfuse_core::{DenseMatrix, Features};
use lmfuse_encoder::TokenizedText;
use lmfuse_features::StopWords;
use lmfuse_finetune::{EvalRecord, Event, FinetuneParams, Network};
use lmfuse_fusion::{CombinerParams, MemberRows, Strategy};
use lmfuse_metrics::Report;
use lmfuse_train::{
    BlockWeights, Blocks, Classifier, EncoderInfo, Ensemble, EnsembleCard, HeadCard, HeadKind,
    ModelCard, TextFeaturizer, TrainOptions,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Flags `lmfuse compare` and `lmfuse tune` share: the encoder, the data and its splits, the
/// cross-validation, the output.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSpec {
    pub model: EncoderChoice,
    pub data: DataSpec,
    pub cache: CacheSpec,
    /// Training data: every candidate is scored by k-fold cross-validation on it.
    pub train: PathBuf,
    /// Dev data: compare chooses each model's hyperparameter on it, tune only reports it
    /// (default: a stratified 10% of --train).
    pub dev: Option<PathBuf>,
    /// Test data, reported only, never used to choose (default: a stratified 10% of --train).
    pub test: Option<PathBuf>,
    /// Cross-validation folds on train.
    pub folds: usize,
    /// Seed of the splits, folds, draws and heads: same seed, same leaderboard.
    pub seed: u64,
    /// Values of C of logreg and svm (compare: tried on dev by those members and by the
    /// stacking meta-learner and the adaptive gate; tune: the grid of grid search).
    pub c_grid: Vec<f64>,
    /// Save the winner's bundle here (an ensemble holds all its members; tune refits the
    /// winner on all of train, as `lmfuse train` does).
    pub out: Option<PathBuf>,
    /// Words the TF-IDF word n-grams leave out.
    pub stop_words: StopWords,
}

/// The texts of the three splits (train, dev, test, in that order) and every feature block
/// of them, computed once for all candidates.
pub struct SplitFeatures {
    /// Train, dev and test texts.
    pub all_texts: Vec<String>,
    /// The encoder that made the embeddings.
    pub encoder: EncoderInfo,
    /// TF-IDF fit on train (empty when no candidate reads TF-IDF).
    pub tfidf: TextFeaturizer,
    /// Every block of every text.
    pub blocks: Blocks,
}

impl ExperimentSpec {
    /// Checks what the types cannot for `command` (`compare`, `tune`).
    pub fn check(&self, command: &str) -> Result<()> {
        ensure!(self.folds >= 2, "--folds must be at least 2");
        ensure!(
            self.data.feature_cols.is_empty(),
            "{command} does not take --feature-cols yet; use lmfuse train --features tab"
        );
        ensure!(!self.c_grid.is_empty(), "the C grid is empty");
        Ok(())
    }

    /// Reads train and the dev and test files, or carves them from train; dev only when
    /// `carve_dev` (tune chooses by cross-validation alone, so a dev slice would only take
    /// rows from it).
    pub fn splits(&self, carve_dev: bool) -> Result<Splits> {
        let plan = SplitPlan {
            train: self.train.clone(),
            dev: self.dev.clone(),
            test: self.test.clone(),
            seed: self.seed,
            carve_dev,
            carve_test: true,
        };
        load_splits(&plan, &self.data)
    }

    /// Embeds the texts of `splits` (through the cache) when `needs_emb`, fits TF-IDF on
    /// train when `needs_tfidf`, and transforms every text once.
    pub fn features(
        &self,
        splits: &Splits,
        needs_emb: bool,
        needs_tfidf: bool,
        on: &dyn Observer,
    ) -> Result<SplitFeatures> {
        let all_texts: Vec<String> = [&splits.train.texts, &splits.dev.texts, &splits.test.texts]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let files = self.model.resolve()?;
        let options = self.model.load_options();
        let encoder = EncoderInfo {
            reference: files.reference.clone(),
            fingerprint: options.fingerprint(&files)?,
            dim: files.config.hidden_size,
            in_bundle: false,
        };
        let emb = if needs_emb {
            let mut cache = self.cache.open()?;
            Some(DenseMatrix::from(
                embed_texts(&all_texts, &files, &options, cache.as_mut(), on)?.0,
            ))
        } else {
            None
        };
        let tfidf = if needs_tfidf {
            let refs: Vec<&str> = splits.train.texts.iter().map(String::as_str).collect();
            TextFeaturizer::fit_with(&refs, self.stop_words)?
        } else {
            TextFeaturizer::default()
        };
        let refs: Vec<&str> = all_texts.iter().map(String::as_str).collect();
        let blocks = tfidf.transform(&refs, emb, &[])?;
        Ok(SplitFeatures {
            all_texts,
            encoder,
            tfidf,
            blocks,
        })
    }
}

/// The TF-IDF blocks and/or the embedding block of `all`.
pub fn blocks_of(all: &Blocks, tfidf: bool, emb: bool) -> Blocks {
    Blocks {
        word: if tfidf { all.word.clone() } else { None },
        char: if tfidf { all.char.clone() } else { None },
        emb: if emb { all.emb.clone() } else { None },
        tab: None,
    }
}

/// What `compare` ranks: single models, ensembles over members, fine-tuned candidates;
/// which one is saved.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareSpec {
    pub exp: ExperimentSpec,
    /// Single models as FEATURES:HEAD (features joined by `+`, e.g. `tfidf+emb:logreg` is
    /// feature fusion), comma-separated; empty for none.
    pub singles: Vec<String>,
    /// The members the ensembles fuse, FEATURES:HEAD, comma-separated.
    pub members: Vec<String>,
    /// Ensemble strategies, comma-separated (hard_vote, soft_vote, weighted, stacking,
    /// adaptive); empty for none.
    pub ensembles: Vec<String>,
    /// Weights of the embedding block tried by feature-fusion models (tfidf+emb): like every
    /// member hyperparameter, chosen on dev (together with the head's C, k, ...; ties go to
    /// the weight nearest 1), then cross-validated on train. Off by default (`1`): chosen on
    /// dev it did not help (bench/results/compare.md); `lmfuse tune` chooses it by CV.
    pub emb_weights: Vec<f32>,
    /// What the members of the combiners that learn from out-of-fold probabilities
    /// (weighted, stacking, adaptive) predict with: `bagged` averages the k fold models that
    /// made those probabilities, so the combiner sees at prediction time the kind of input it
    /// learnt from (the bundle holds k models per member); `refit` uses each member refit on
    /// all of train, as the votes always do.
    pub oof_members: OofMembers,
    /// Also fine-tune the encoder with a linear head as a candidate, `finetuned` (the recipe of
    /// `lmfuse finetune`: AdamW, warm-up, dropout, early stopping on dev): once per fold for
    /// its CV score and once on all of train, so k + 1 runs, minutes to hours on a CPU. Its
    /// bundle holds the fine-tuned encoder.
    pub finetune: bool,
    /// Also train the shared hidden layer end to end with the encoder as a candidate,
    /// `finetuned_shared`: the fusion strategy of a shared layer over TF-IDF (fit on train)
    /// and the encoder's pooled output, trained jointly (the recipe of `lmfuse finetune
    /// --shared-head`). k + 1 runs, as with --finetune; its bundle holds the fine-tuned
    /// encoder.
    pub finetune_shared: bool,
    /// --finetune-shared: the head's decoupled weight decay (`lmfuse finetune
    /// --shared-head-alpha`). With several, comma-separated, each is trained on all of train
    /// and the best dev accuracy chooses (ties: the earlier), as it chooses the members' C;
    /// the folds then run with that one only (n + k runs for n values).
    pub finetune_shared_alpha: Vec<f64>,
    /// Also run every ensemble with each fine-tuned candidate (--finetune, --finetune-shared)
    /// as one more member: its out-of-fold probabilities come from its fold runs, and it
    /// predicts with its run on all of train (whose dev rows stopped it early: the combiner's
    /// C is chosen on them too). The bundle of such an ensemble holds the fine-tuned encoder
    /// beside the members' shared one.
    pub finetuned_members: bool,
    /// Save this candidate's bundle to --out instead of the winner's (its leaderboard name,
    /// e.g. `stacking(emb:logreg,tfidf:logreg)`): a faster or smaller model than the winner.
    pub save_candidate: Option<String>,
    /// Fine-tuning (--finetune, --finetune-shared): passes over the training rows (at most;
    /// early stopping may end sooner).
    pub finetune_epochs: usize,
    /// Fine-tuning (--finetune, --finetune-shared): peak learning rate of the encoder.
    pub finetune_lr: f32,
    /// The preset the candidates came from (reported; [`CompareSpec::new`] applies it).
    pub preset: Preset,
    /// How the winner is picked from the cross-validated scores.
    pub select: SelectRule,
    /// Wall-clock budget in seconds: no candidate starts once it is spent, a fine-tuned one
    /// only when its measured or estimated cost fits what is left, and the run returns the
    /// best of what it fit (saving the winner comes on top).
    pub time_limit: Option<f64>,
    /// Whether the candidates are the preset's, to be fitted to the data's size
    /// ([`Preset::candidates_for`]); `false` once the caller names its own.
    pub preset_candidates: bool,
    /// Scale the saved model's probabilities by a temperature fit on its out-of-fold
    /// probabilities (never changes a prediction, only its confidence).
    pub calibrate: bool,
}

impl CompareSpec {
    /// The candidates of `preset` on the data and cross-validation of `exp`, with the other
    /// settings at their defaults (as `lmfuse compare` has them).
    pub fn new(exp: ExperimentSpec, preset: Preset) -> CompareSpec {
        let c = preset.candidates();
        CompareSpec {
            exp,
            singles: c.singles,
            members: c.members,
            ensembles: c.ensembles,
            emb_weights: vec![1.0],
            oof_members: OofMembers::Bagged,
            finetune: c.finetune,
            finetune_shared: c.finetune_shared,
            finetune_shared_alpha: vec![3.0],
            finetuned_members: c.finetuned_members,
            save_candidate: None,
            finetune_epochs: 3,
            finetune_lr: 3e-5,
            preset,
            select: SelectRule::default(),
            time_limit: None,
            preset_candidates: true,
            calibrate: true,
        }
    }

    /// The settings of `--finetune`'s runs, checked (before anything is fit); `None` without
    /// it.
    fn finetune_params(&self) -> Result<Option<FinetuneParams>> {
        if !self.finetune && !self.finetune_shared {
            return Ok(None);
        }
        ensure!(
            self.finetune_epochs >= 1,
            "--finetune-epochs must be at least 1"
        );
        ensure!(
            self.finetune_lr.is_finite() && self.finetune_lr > 0.0,
            "--finetune-lr must be a positive number, not {}",
            self.finetune_lr
        );
        let params = FinetuneParams {
            epochs: self.finetune_epochs,
            lr: self.finetune_lr,
            seed: self.exp.seed,
            ..Default::default()
        };
        params.check()?;
        if self.finetune_shared {
            for &alpha in &self.finetune_shared_alpha {
                shared_head_params(&params, alpha, 1)
                    .check()
                    .with_context(|| format!("--finetune-shared-alpha {alpha}"))?;
            }
        }
        Ok(Some(params))
    }

    /// The heads fine-tuned with the encoder, one candidate each.
    fn tuned_heads(&self) -> Vec<TunedHead> {
        let mut heads = Vec::new();
        if self.finetune {
            heads.push(TunedHead::Linear);
        }
        if self.finetune_shared {
            heads.push(TunedHead::Shared {
                alphas: self.finetune_shared_alpha.clone(),
            });
        }
        heads
    }
}

/// The head a fine-tuned candidate trains together with the encoder.
#[derive(Debug, Clone)]
enum TunedHead {
    /// A linear head over the pooled output (`finetuned`).
    Linear,
    /// The shared hidden layer over TF-IDF and the pooled output (`finetuned_shared`), with
    /// the weight decay chosen on dev among `alphas`.
    Shared { alphas: Vec<f64> },
}

impl TunedHead {
    /// The candidate's name.
    fn name(&self) -> &'static str {
        match self {
            TunedHead::Linear => FINETUNED,
            TunedHead::Shared { .. } => FINETUNED_SHARED,
        }
    }

    /// The candidate's kind in the leaderboard.
    fn kind(&self) -> &'static str {
        match self {
            TunedHead::Linear => FINETUNED,
            TunedHead::Shared { .. } => "shared_hidden_layer",
        }
    }
}

/// What the members of the combiners that learn from out-of-fold probabilities predict
/// with (see [`CompareSpec::oof_members`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum OofMembers {
    /// The mean of the fold models.
    Bagged,
    /// One model refit on all of train.
    Refit,
}

impl OofMembers {
    /// The name in reports and cards.
    fn name(self) -> &'static str {
        match self {
            OofMembers::Bagged => "bagged",
            OofMembers::Refit => "refit",
        }
    }
}

/// A single model: which feature blocks and which head.
#[derive(Debug, Clone, PartialEq)]
struct ModelSpec {
    name: String,
    emb: bool,
    tfidf: bool,
    head: HeadKind,
}

fn parse_model(s: &str) -> Result<ModelSpec> {
    ensure!(
        s != FINETUNED && s != FINETUNED_SHARED,
        "model {s:?}: a fine-tuned encoder is a candidate of its own (--finetune, \
         --finetune-shared), not a single or one of --members; --finetuned-members adds it to \
         every ensemble"
    );
    let (features, head) = s
        .split_once(':')
        .with_context(|| format!("model {s:?}: expected FEATURES:HEAD, e.g. emb:logreg"))?;
    let head = parse_head(head).with_context(|| format!("model {s:?}: unknown head {head:?}"))?;
    let (mut emb, mut tfidf) = (false, false);
    for f in features.split('+') {
        match f {
            "emb" => emb = true,
            "tfidf" => tfidf = true,
            other => bail!("model {s:?}: unknown feature block {other:?} (emb, tfidf)"),
        }
    }
    check_head_features(head, tfidf, emb).with_context(|| format!("model {s:?}"))?;
    Ok(ModelSpec {
        name: s.to_string(),
        emb,
        tfidf,
        head,
    })
}

/// The head named `name` (`--head`'s names).
fn parse_head(name: &str) -> Option<HeadKind> {
    Some(match name.to_ascii_lowercase().as_str() {
        "logreg" => HeadKind::Logreg,
        "svm" => HeadKind::Svm,
        "nb" => HeadKind::Nb,
        "knn" => HeadKind::Knn,
        "rf" => HeadKind::Rf,
        "gbdt" => HeadKind::Gbdt,
        "mlp" => HeadKind::Mlp,
        "shared" => HeadKind::Shared,
        _ => return None,
    })
}

fn parse_strategy(s: &str) -> Result<Strategy> {
    Strategy::ALL
        .into_iter()
        .find(|st| st.name() == s)
        .with_context(|| {
            format!(
                "unknown ensemble {s:?}: expected one of hard_vote, soft_vote, weighted, \
                 stacking, adaptive"
            )
        })
}

/// One leaderboard row.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The candidate's name (`tfidf+emb:logreg`, `stacking(...)`, `finetuned`).
    pub name: String,
    /// `single`, `feature_fusion`, `ensemble`, `finetuned`, `shared_hidden_layer`.
    pub kind: &'static str,
    /// Mean of the per-fold accuracies on train.
    pub cv_accuracy: f64,
    /// Their standard deviation.
    pub cv_std: f64,
    /// What was chosen on dev: the head's hyperparameter (`c`, `k`, ...) and, for feature
    /// fusion, `emb_weight`.
    pub selected: Option<BTreeMap<String, f64>>,
    /// Ensembles: whether the members predict as one model refit on all of train (`refit`)
    /// or as the mean of their fold models (`bagged`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_models: Option<&'static str>,
    /// A fine-tuned candidate with several settings: each one's dev accuracy on all of train
    /// (`selected` holds the one chosen).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<Tried>,
    /// A fine-tuned candidate: its fine-tuning settings (epochs, learning rates, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finetune: Option<FinetuneParams>,
    /// Dev figures.
    pub dev: Report,
    /// Test figures (reported only).
    pub test: Report,
    /// Seconds to fit (members and fold models included).
    pub fit_seconds: f64,
    /// Seconds to predict test.
    pub predict_seconds: f64,
}

/// The ranked candidates of a `compare` run.
#[derive(Debug, Clone, Serialize)]
pub struct Leaderboard {
    /// The classes.
    pub labels: Vec<String>,
    /// Training rows.
    pub train: usize,
    /// Dev rows.
    pub dev: usize,
    /// Test rows.
    pub test: usize,
    /// Folds of the cross-validation.
    pub folds: usize,
    /// The seed.
    pub seed: u64,
    /// Every candidate, in the order they ran.
    pub candidates: Vec<Entry>,
    /// The candidate [`Leaderboard::rule`] picked.
    pub winner: Entry,
    /// Why it won, in words.
    pub reason: String,
    /// The candidate with the best mean CV accuracy (the earlier on ties).
    pub best_cv: String,
    /// The preset of the run.
    pub preset: Preset,
    /// The selection rule.
    pub rule: SelectRule,
    /// The time budget in seconds, if any.
    pub time_limit: Option<f64>,
    /// The saved model's temperature and what it did (with an output folder and
    /// calibration on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Candidates not fit, and why (the time budget).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
    /// Its index in `candidates`.
    #[serde(skip)]
    pub winner_index: usize,
    /// The candidate whose bundle was saved (`None` without an output folder).
    pub saved: Option<String>,
    /// Wall time.
    pub seconds: f64,
}

/// The temperature of the saved model, fit on its out-of-fold probabilities on train
/// (`lmfuse_fusion::fit_temperature`), and its scores before and after.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    /// The candidate calibrated.
    pub candidate: String,
    /// Its temperature (1: left as it was).
    pub temperature: f32,
    /// Log loss of its out-of-fold probabilities, before and after.
    pub oof_log_loss: f64,
    pub oof_log_loss_calibrated: f64,
    /// Dev and test figures of the calibrated model (the saved bundle's).
    pub dev: Report,
    pub test: Report,
    /// Expected calibration error on test of the model before calibration.
    pub test_ece_uncalibrated: f64,
}

/// A candidate a run did not fit.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Its name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// The wall-clock budget of a run.
struct Budget {
    started: Instant,
    limit: Option<f64>,
}

impl Budget {
    /// Seconds left (infinite without a limit).
    fn left(&self) -> f64 {
        match self.limit {
            Some(l) => l - self.started.elapsed().as_secs_f64(),
            None => f64::INFINITY,
        }
    }

    /// When the limit runs out (`None` without one).
    fn deadline(&self) -> Option<Instant> {
        let limit = std::time::Duration::try_from_secs_f64(self.limit?).ok()?;
        self.started.checked_add(limit)
    }

    /// Why a candidate expected to take `cost` seconds may not start, or `None` when it may.
    fn refuses(&self, cost: f64) -> Option<String> {
        let left = self.left();
        (cost > left).then(|| match self.limit {
            Some(l) if left <= 0.0 => format!("the time limit ({l:.0} s) was spent"),
            Some(l) => format!(
                "expected to take {cost:.0} s, more than the {left:.0} s left of the time \
                 limit ({l:.0} s)"
            ),
            None => unreachable!("without a limit nothing is refused"),
        })
    }
}

/// The name of the fine-tuned candidate with a linear head.
const FINETUNED: &str = "finetuned";
/// The name of the candidate whose shared hidden layer is trained with the encoder.
const FINETUNED_SHARED: &str = "finetuned_shared";

/// What a leaderboard entry deploys as.
enum Deployable {
    /// The classifier at this index of the fitted ones.
    Single(usize),
    /// The fine-tuned encoder and head at this index of the fine-tuned candidates.
    Finetuned(usize),
    /// A combiner over the members, which predict bagged or refit, and, with `tuned`, the
    /// fine-tuned candidate at that index as one more (last) member.
    Ensemble {
        params: CombinerParams,
        combiner: lmfuse_fusion::Combiner,
        how: OofMembers,
        tuned: Option<usize>,
        /// Its out-of-fold probabilities on train (combiners fit on the other folds).
        oof: Vec<f32>,
        /// Its dev and test probabilities.
        predicted: Predicted,
    },
}

/// A fitted single model: the classifier refit on all of train and, for a member that
/// predicts bagged, the bag of its fold models; their probabilities (out-of-fold on train, on
/// dev and on test).
struct Fitted {
    name: String,
    classifier: Classifier,
    oof: Vec<f32>,
    refit: Predicted,
    bagged: Option<(Classifier, Predicted)>,
    /// Seconds to choose the hyperparameter and refit.
    fit_seconds: f64,
    /// Seconds to fit the out-of-fold models.
    oof_seconds: f64,
}

impl Fitted {
    /// This model as a member that predicts with `how`, of a combiner that learns from
    /// out-of-fold probabilities (`learnt`: its fit time counts the fold models) or not.
    fn view(&self, how: OofMembers, learnt: bool) -> MemberView<'_> {
        MemberView {
            name: &self.name,
            oof: &self.oof,
            predicted: self.predicting(how).1,
            fit_seconds: self.fit_seconds + if learnt { self.oof_seconds } else { 0.0 },
        }
    }

    /// The classifier and its probabilities as a member predicts with `how`.
    fn predicting(&self, how: OofMembers) -> (&Classifier, &Predicted) {
        match (how, &self.bagged) {
            (OofMembers::Refit, _) => (&self.classifier, &self.refit),
            (OofMembers::Bagged, Some((c, p))) => (c, p),
            (OofMembers::Bagged, None) => unreachable!("every member is bagged when asked"),
        }
    }
}

/// A member as a combiner sees it: its out-of-fold probabilities on train, and the dev and
/// test probabilities of the model it predicts with.
struct MemberView<'a> {
    name: &'a str,
    oof: &'a [f32],
    predicted: &'a Predicted,
    /// Seconds to fit what the combiner needs of it.
    fit_seconds: f64,
}

/// What every ensemble candidate is fit and scored on: classes of train, dev and test; the
/// texts' lengths in characters (train, dev, test in a row); the folds and their number; the
/// grid of C for the meta-learner and the gate.
struct EnsembleContext<'a> {
    y: (&'a [usize], &'a [usize], &'a [usize]),
    lengths: &'a [f32],
    labels: &'a LabelSet,
    folds: (&'a [usize], usize),
    c_grid: &'a [f64],
}

/// The ensemble candidate of `strategy` over `members` (predicting with `how`): the
/// meta-learner's and the gate's C fit on the members' out-of-fold probabilities of train and
/// chosen on dev (as each member's own hyperparameter is); cross-validated with the combiner
/// of fold f learning from the out-of-fold probabilities of the other folds' rows only.
/// Returns the leaderboard entry and what it deploys as: the combiner's settings, the
/// combiner fit on all of train, and its probabilities (without a fine-tuned member: the
/// caller sets `tuned`).
fn ensemble_entry(
    ctx: &EnsembleContext<'_>,
    strategy: Strategy,
    how: OofMembers,
    members: &[MemberView<'_>],
) -> Result<(Entry, Deployable)> {
    let (y_train, y_dev, y_test) = ctx.y;
    let (folds, n_folds) = ctx.folds;
    let k = ctx.labels.len();
    let (n_train, n_dev) = (y_train.len(), y_dev.len());
    let len_train = &ctx.lengths[..n_train];
    let len_dev = &ctx.lengths[n_train..n_train + n_dev];
    let oof: Vec<&[f32]> = members.iter().map(|m| m.oof).collect();
    let dev_p: Vec<&[f32]> = members.iter().map(|m| m.predicted.dev.as_slice()).collect();
    let test_p: Vec<&[f32]> = members
        .iter()
        .map(|m| m.predicted.test.as_slice())
        .collect();
    let members_predict_seconds: f64 = members.iter().map(|m| m.predicted.test_seconds).sum();
    let member_seconds: f64 = members.iter().map(|m| m.fit_seconds).sum();
    let t = Instant::now();
    let selection = CombinerParams {
        strategy,
        ..Default::default()
    }
    .fit_selecting_c(
        MemberRows {
            members: &oof,
            y: y_train,
            lengths: len_train,
        },
        MemberRows {
            members: &dev_p,
            y: y_dev,
            lengths: len_dev,
        },
        k,
        ctx.c_grid,
    )?;
    let fit_seconds = t.elapsed().as_secs_f64();
    let params = selection.params;
    let cv_p = combiner_out_of_fold(&params, &oof, (y_train, len_train), folds, k)?;
    let (cv, cv_std) = mean_std(&fold_accuracies(&cv_p, y_train, folds, n_folds, k));
    let combiner = selection.combiner;
    let dev_f = combiner.combine(&dev_p, k, len_dev)?;
    let t = Instant::now();
    let test_f = combiner.combine(&test_p, k, &ctx.lengths[n_train + n_dev..])?;
    let predict_seconds = t.elapsed().as_secs_f64() + members_predict_seconds;
    let names: Vec<&str> = members.iter().map(|m| m.name).collect();
    let entry = Entry {
        name: ensemble_name(strategy, &names),
        kind: "ensemble",
        cv_accuracy: cv,
        cv_std,
        selected: strategy
            .uses_c()
            .then(|| BTreeMap::from([("c".to_string(), params.c)])),
        member_models: Some(how.name()),
        tried: Vec::new(),
        finetune: None,
        dev: lmfuse_metrics::evaluate(y_dev, &dev_f, ctx.labels.names())?,
        test: lmfuse_metrics::evaluate(y_test, &test_f, ctx.labels.names())?,
        fit_seconds: fit_seconds + member_seconds,
        predict_seconds,
    };
    let model = Deployable::Ensemble {
        params,
        combiner,
        how,
        tuned: None,
        oof: cv_p,
        predicted: Predicted {
            dev: dev_f,
            test: test_f,
            test_seconds: predict_seconds,
        },
    };
    Ok((entry, model))
}

/// The leaderboard name of the ensemble of `strategy` over the members named `members`.
fn ensemble_name(strategy: Strategy, members: &[&str]) -> String {
    format!("{}({})", strategy.name(), members.join(","))
}

/// Dev and test probabilities of one way a member predicts.
struct Predicted {
    dev: Vec<f32>,
    test: Vec<f32>,
    /// Seconds to predict test.
    test_seconds: f64,
}

pub fn fold_accuracies(
    proba: &[f32],
    y: &[usize],
    folds: &[usize],
    n_folds: usize,
    k: usize,
) -> Vec<f64> {
    (0..n_folds)
        .map(|f| {
            let rows: Vec<usize> = (0..y.len()).filter(|&i| folds[i] == f).collect();
            let hits = rows
                .iter()
                .filter(|&&i| lmfuse_metrics::argmax(&proba[i * k..(i + 1) * k]) == y[i])
                .count();
            hits as f64 / rows.len().max(1) as f64
        })
        .collect()
}

pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// What a compare run fits, parsed from its spec and checked before any data is read.
struct Plan {
    /// Embedding weights feature fusion tries: 1 first, then by distance from 1 on a log
    /// scale (ties on dev keep the earlier).
    emb_weights: Vec<f32>,
    singles: Vec<ModelSpec>,
    strategies: Vec<Strategy>,
    /// The ensembles' members (none without ensembles: they are fit only for them).
    members: Vec<ModelSpec>,
    /// Whether members predict with their fold models (only for a combiner that learns from
    /// them).
    bag_members: bool,
    finetune: Option<FinetuneParams>,
}

impl Plan {
    /// Parses and checks `job`'s candidates; `--save-candidate` must name one of them.
    fn of(job: &CompareSpec) -> Result<Plan> {
        job.exp.check("compare")?;
        BlockWeights::check_emb_choices(&job.emb_weights).context("--emb-weights")?;
        let mut emb_weights = job.emb_weights.clone();
        emb_weights.sort_by(|a, b| a.ln().abs().total_cmp(&b.ln().abs()).then(a.total_cmp(b)));
        emb_weights.dedup();
        let non_empty =
            |v: &[String]| -> Vec<String> { v.iter().filter(|s| !s.is_empty()).cloned().collect() };
        let singles: Vec<ModelSpec> = non_empty(&job.singles)
            .iter()
            .map(|s| parse_model(s))
            .collect::<Result<_>>()?;
        let strategies: Vec<Strategy> = non_empty(&job.ensembles)
            .iter()
            .map(|s| parse_strategy(s))
            .collect::<Result<_>>()?;
        let mut members: Vec<ModelSpec> = job
            .members
            .iter()
            .map(|s| parse_model(s))
            .collect::<Result<_>>()?;
        ensure!(
            strategies.is_empty() || members.len() >= 2,
            "an ensemble needs at least two --members"
        );
        ensure!(
            !job.finetuned_members || !strategies.is_empty(),
            "--finetuned-members adds the fine-tuned candidates to the ensembles, but \
             --ensembles is empty"
        );
        if strategies.is_empty() {
            members.clear();
        }
        let bag_members = job.oof_members == OofMembers::Bagged
            && strategies.iter().any(|s| s.learns_from_out_of_fold());
        let mut plan = Plan {
            emb_weights,
            singles,
            strategies,
            members,
            bag_members,
            finetune: None,
        };
        if let Some(name) = &job.save_candidate {
            let names = plan.candidate_names(job);
            ensure!(
                names.contains(name),
                "--save-candidate {name:?} is not a candidate of this run ({})",
                names.join("; ")
            );
        }
        plan.finetune = job.finetune_params()?;
        Ok(plan)
    }

    /// Every candidate's name, known before anything is fit.
    fn candidate_names(&self, job: &CompareSpec) -> Vec<String> {
        let member_names: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
        let mut names: Vec<String> = self.singles.iter().map(|m| m.name.clone()).collect();
        let ensembles = |with: &[&str]| {
            self.strategies
                .iter()
                .map(|&st| ensemble_name(st, with))
                .collect::<Vec<_>>()
        };
        names.extend(ensembles(&member_names));
        let tuned = job.tuned_heads();
        names.extend(tuned.iter().map(|h| h.name().to_string()));
        if job.finetuned_members {
            for h in &tuned {
                let mut with = member_names.clone();
                with.push(h.name());
                names.extend(ensembles(&with));
            }
        }
        names
    }

    /// Keeps the models the preset fits on data with `classes` classes
    /// ([`Preset::candidates_for`]).
    fn fit_to(&mut self, preset: Preset, classes: usize) {
        let kept = preset.candidates_for(classes);
        self.singles.retain(|m| kept.singles.contains(&m.name));
        self.members.retain(|m| kept.members.contains(&m.name));
    }

    /// Records every ensemble of the run (those with fine-tuned members too) as skipped.
    fn skip_ensembles(&self, job: &CompareSpec, skipped: &mut Vec<Skipped>, reason: &str) {
        // Ensemble names are the only ones with parentheses.
        for name in self
            .candidate_names(job)
            .into_iter()
            .filter(|n| n.contains('('))
        {
            skipped.push(Skipped {
                name,
                reason: reason.to_string(),
            });
        }
    }

    /// The classical models to fit: the singles, then the members that are not singles.
    fn classical(&self) -> Vec<&ModelSpec> {
        let mut specs: Vec<&ModelSpec> = self.singles.iter().collect();
        specs.extend(self.members.iter().filter(|m| !self.singles.contains(m)));
        specs
    }

    /// Whether any classical model reads the embeddings, and whether any reads TF-IDF.
    fn needs(&self) -> (bool, bool) {
        let all = || self.singles.iter().chain(&self.members);
        (all().any(|m| m.emb), all().any(|m| m.tfidf))
    }
}

/// How the members of a combiner of `strategy` predict: as `--oof-members` says for a
/// combiner that learns from out-of-fold probabilities, refit otherwise.
fn members_predict(job: &CompareSpec, strategy: Strategy) -> OofMembers {
    if strategy.learns_from_out_of_fold() {
        job.oof_members
    } else {
        OofMembers::Refit
    }
}

/// The data every candidate is fit and scored on, computed once: the splits, every feature
/// block of their texts, the folds on train and the texts' lengths in characters.
struct Prepared {
    splits: Splits,
    features: SplitFeatures,
    folds: Vec<usize>,
    lengths: Vec<f32>,
}

impl Prepared {
    /// Reads the splits and computes the features `plan`'s models read.
    fn load(job: &CompareSpec, plan: &Plan, on: &dyn Observer) -> Result<Prepared> {
        let splits = job.exp.splits(true)?;
        let (needs_emb, needs_tfidf) = plan.needs();
        let features = job.exp.features(&splits, needs_emb, needs_tfidf, on)?;
        let lengths = features
            .all_texts
            .iter()
            .map(|t| t.chars().count() as f32)
            .collect();
        let folds = lmfuse_fusion::stratified_folds(&splits.y_train, job.exp.folds, job.exp.seed);
        Ok(Prepared {
            splits,
            features,
            folds,
            lengths,
        })
    }

    /// Classes of train, dev and test.
    fn y(&self) -> (&[usize], &[usize], &[usize]) {
        let s = &self.splits;
        (&s.y_train, &s.y_dev, &s.y_test)
    }

    /// Rows of train, dev and test in [`SplitFeatures::all_texts`].
    fn rows(&self) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
        let (n_train, n_dev) = (self.splits.y_train.len(), self.splits.y_dev.len());
        let n = self.features.all_texts.len();
        (
            (0..n_train).collect(),
            (n_train..n_train + n_dev).collect(),
            (n_train + n_dev..n).collect(),
        )
    }

    /// Texts of train, dev and test.
    fn texts(&self) -> SplitTexts<'_> {
        let (n_train, n_dev) = (self.splits.y_train.len(), self.splits.y_dev.len());
        let all = &self.features.all_texts;
        (
            &all[..n_train],
            &all[n_train..n_train + n_dev],
            &all[n_train + n_dev..],
        )
    }

    /// What every ensemble candidate is fit and scored on.
    fn ensemble_context<'a>(&'a self, job: &'a CompareSpec) -> EnsembleContext<'a> {
        EnsembleContext {
            y: self.y(),
            lengths: &self.lengths,
            labels: &self.splits.labels,
            folds: (&self.folds, job.exp.folds),
            c_grid: &job.exp.c_grid,
        }
    }
}

/// The entries of the leaderboard so far and what each deploys as.
#[derive(Default)]
struct Board {
    entries: Vec<Entry>,
    models: Vec<Deployable>,
}

impl Board {
    /// Entry `i`'s out-of-fold probabilities on train and its dev and test ones.
    fn probabilities<'a>(&'a self, fits: &'a Fits, i: usize) -> (&'a [f32], &'a Predicted) {
        match &self.models[i] {
            Deployable::Single(c) => (&fits.classical[*c].oof, &fits.classical[*c].refit),
            Deployable::Finetuned(t) => (&fits.tuned[*t].oof, &fits.tuned[*t].predicted),
            Deployable::Ensemble { oof, predicted, .. } => (oof, predicted),
        }
    }

    fn push(&mut self, entry: Entry, model: Deployable) {
        self.entries.push(entry);
        self.models.push(model);
    }

    /// The best CV candidate, the winner `job.select` picks (with the reason), and the entry
    /// whose bundle is saved (the winner unless `save_candidate` names another).
    fn pick(&self, job: &CompareSpec) -> Result<(usize, usize, String, usize)> {
        let entries = &self.entries;
        let scored: Vec<Scored<'_>> = entries
            .iter()
            .map(|e| Scored {
                kind: e.kind,
                cv: e.cv_accuracy,
                std: e.cv_std,
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let (best, winner, reason) =
            crate::preset::pick(job.select, &scored, &names, job.exp.folds)
                .context("no candidate to compare")?;
        let saved = match &job.save_candidate {
            None => winner,
            Some(name) => match entries.iter().position(|e| &e.name == name) {
                Some(i) => i,
                None => bail!(
                    "--save-candidate {name:?} was not fit in this run (the time limit, or the \
                     preset's rule for many classes, left it out)"
                ),
            },
        };
        Ok((best, winner, reason, saved))
    }
}

/// Every model fit: the classical ones (in [`Plan::classical`]'s order), which of them are
/// the ensembles' members, and the fine-tuned candidates.
struct Fits {
    classical: Vec<Fitted>,
    members: Vec<usize>,
    tuned: Vec<FinetunedModel>,
}

impl Fits {
    /// The ensembles' members, in `--members` order.
    fn members(&self) -> Vec<&Fitted> {
        self.members.iter().map(|&i| &self.classical[i]).collect()
    }
}

/// Ranks single models, feature fusion, ensembles and fine-tuned candidates by k-fold
/// cross-validation on train (never by test), reports dev and test, and saves the winner (or
/// `save_candidate`) to `exp.out`.
pub fn compare(job: &CompareSpec, on: &dyn Observer) -> Result<Leaderboard> {
    let budget = Budget {
        started: Instant::now(),
        limit: job.time_limit,
    };
    let mut plan = Plan::of(job)?;
    let data = Prepared::load(job, &plan, on)?;
    if job.preset_candidates {
        plan.fit_to(job.preset, data.splits.labels.len());
    }
    let mut run = CompareRun {
        job,
        plan: &plan,
        data: &data,
        budget,
        on,
        board: Board::default(),
        fits: Fits {
            classical: Vec::new(),
            members: Vec::new(),
            tuned: Vec::new(),
        },
        skipped: Vec::new(),
    };
    run.classical()?;
    if !run.fits.members.is_empty() || plan.members.is_empty() {
        add_ensembles(&mut run.board, job, &plan, &data, &run.fits, None)?;
    }
    run.finetuned()?;
    // Each fine-tuned candidate as one more member of every ensemble: its out-of-fold
    // probabilities come from its fold runs, and it predicts with its run on all of train.
    if job.finetuned_members && !run.fits.members.is_empty() {
        for t in 0..run.fits.tuned.len() {
            add_ensembles(&mut run.board, job, &plan, &data, &run.fits, Some(t))?;
        }
    }
    run.finish()
}

/// A compare run under way: what it fits from, and what it has fit so far.
struct CompareRun<'a> {
    job: &'a CompareSpec,
    plan: &'a Plan,
    data: &'a Prepared,
    budget: Budget,
    on: &'a dyn Observer,
    board: Board,
    fits: Fits,
    skipped: Vec<Skipped>,
}

impl CompareRun<'_> {
    /// Fits the classical models while the budget lasts (the first always), then finds the
    /// ensembles' members among them; a member not fit rules the ensembles out.
    fn classical(&mut self) -> Result<()> {
        for spec in self.plan.classical() {
            // The first candidate always runs: a run cut short returns the best so far.
            let first = self.fits.classical.is_empty();
            if let Some(reason) = self.budget.refuses(0.0).filter(|_| !first) {
                self.skipped.push(Skipped {
                    name: spec.name.clone(),
                    reason,
                });
                continue;
            }
            let budget = (!first).then_some(&self.budget);
            let (fitted, entry) =
                match fit_classical(self.job, self.plan, self.data, spec, budget, self.on)? {
                    Classical::Fitted(fit) => *fit,
                    Classical::OverBudget(reason) => {
                        self.skipped.push(Skipped {
                            name: spec.name.clone(),
                            reason,
                        });
                        continue;
                    }
                };
            if let Some(entry) = entry {
                let model = Deployable::Single(self.fits.classical.len());
                self.board.push(entry, model);
            }
            self.fits.classical.push(fitted);
        }
        let classical = &self.fits.classical;
        let members: Option<Vec<usize>> = (self.plan.members.iter())
            .map(|m| classical.iter().position(|f| f.name == m.name))
            .collect();
        match members {
            Some(members) => self.fits.members = members,
            None => {
                let why = "a member was not fit in time";
                self.plan.skip_ensembles(self.job, &mut self.skipped, why);
            }
        }
        Ok(())
    }

    /// Fits the fine-tuned candidates the budget allows (with no other candidate, the
    /// first regardless of it).
    fn finetuned(&mut self) -> Result<()> {
        for head in self.job.tuned_heads() {
            let params = self.plan.finetune.as_ref().expect("checked with the heads");
            let unlimited = Budget {
                started: Instant::now(),
                limit: None,
            };
            let budget = match self.board.entries.is_empty() {
                true => &unlimited,
                false => &self.budget,
            };
            let tuned =
                finetuned_candidate(self.job, (params, &head), (self.data, budget), self.on)?;
            match tuned {
                Ok((entry, model)) => {
                    let deployed = Deployable::Finetuned(self.fits.tuned.len());
                    self.board.push(entry, deployed);
                    self.fits.tuned.push(model);
                }
                Err(skip) => self.skipped.push(skip),
            }
        }
        Ok(())
    }

    /// Picks the winner, calibrates and saves what is saved, and builds the leaderboard.
    fn finish(self) -> Result<Leaderboard> {
        let (job, data) = (self.job, self.data);
        let (best, winner, reason, saved) = self.board.pick(job)?;
        let name = &self.board.entries[winner].name;
        self.on.note(&format!("compare: winner {name}: {reason}"));
        let calibration = match job.calibrate && job.exp.out.is_some() {
            true => Some(calibrate(&self.board, &self.fits, saved, data)?),
            false => None,
        };
        if let Some(out) = &job.exp.out {
            let temperature = calibration.as_ref().map(|c| c.temperature);
            save_entry(
                out,
                job,
                (data, &self.fits),
                &self.board,
                saved,
                temperature,
            )?;
        }
        let entries = self.board.entries;
        Ok(Leaderboard {
            labels: data.splits.labels.names().to_vec(),
            train: data.splits.y_train.len(),
            dev: data.splits.y_dev.len(),
            test: data.splits.y_test.len(),
            folds: job.exp.folds,
            seed: job.exp.seed,
            winner: entries[winner].clone(),
            winner_index: winner,
            reason,
            best_cv: entries[best].name.clone(),
            preset: job.preset,
            rule: job.select,
            calibration,
            time_limit: job.time_limit,
            skipped: self.skipped,
            saved: job.exp.out.as_ref().map(|_| entries[saved].name.clone()),
            candidates: entries,
            seconds: self.budget.started.elapsed().as_secs_f64(),
        })
    }
}

/// What became of a classical candidate.
enum Classical {
    /// Fit, with its leaderboard entry when it is one of the singles.
    Fitted(Box<(Fitted, Option<Entry>)>),
    /// Left out after its dev fits: its out-of-fold fits would pass the time limit (why).
    OverBudget(String),
}

/// Fits the classical model `spec` on train (its hyperparameter, and for feature fusion the
/// embedding weight, chosen on dev), its out-of-fold probabilities (keeping the fold models,
/// bagged, when it is a member that predicts bagged); with its leaderboard entry when it is
/// one of the singles. Under a `budget`, the dev search tries no further value once the
/// limit has passed, and the out-of-fold fits (timed by the dev fits) must fit in what is left.
fn fit_classical(
    job: &CompareSpec,
    plan: &Plan,
    data: &Prepared,
    spec: &ModelSpec,
    budget: Option<&Budget>,
    on: &dyn Observer,
) -> Result<Classical> {
    on.note(&format!("compare: {}", spec.name));
    let t = Instant::now();
    let (weights, x, selection) =
        select_on_dev(job, plan, data, spec, budget.and_then(Budget::deadline))?;
    if let Some(reason) = over_budget(job, spec, &selection, budget, on) {
        return Ok(Classical::OverBudget(reason));
    }
    let (train_rows, dev_rows, test_rows) = data.rows();
    let (xt, xd, xs) = (
        x.select_rows(&train_rows),
        x.select_rows(&dev_rows),
        x.select_rows(&test_rows),
    );
    let fit_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (y_train, y_dev, y_test) = data.y();
    let labels = &data.splits.labels;
    let k = labels.len();
    let bag_this = plan.bag_members && plan.members.contains(spec);
    let (oof, fold_models) = if bag_this {
        lmfuse_fusion::out_of_fold_models(&xt, y_train, k, &selection.params, &data.folds)?
    } else {
        let p = lmfuse_fusion::out_of_fold(&xt, y_train, k, &selection.params, &data.folds)?;
        (p, Vec::new())
    };
    let oof_seconds = t.elapsed().as_secs_f64();
    let refit = predicted(&selection.model, &xd, &xs)?;
    let accuracies = fold_accuracies(&oof, y_train, &data.folds, job.exp.folds, k);
    let (cv, cv_std) = mean_std(&accuracies);
    let classifier = classical_classifier(job, data, spec, (weights, x.cols()), &selection, cv);
    let entry = if plan.singles.contains(spec) {
        let fusion = spec.emb && spec.tfidf;
        let (param, value) = selection.params.tuned();
        let mut selected = BTreeMap::from([(param.to_string(), value)]);
        if fusion {
            selected.insert("emb_weight".into(), f64::from(weights.emb));
        }
        Some(Entry {
            name: spec.name.clone(),
            kind: if fusion { "feature_fusion" } else { "single" },
            cv_accuracy: cv,
            cv_std,
            selected: Some(selected),
            member_models: None,
            tried: Vec::new(),
            finetune: None,
            dev: lmfuse_metrics::evaluate(y_dev, &refit.dev, labels.names())?,
            test: lmfuse_metrics::evaluate(y_test, &refit.test, labels.names())?,
            fit_seconds,
            predict_seconds: refit.test_seconds,
        })
    } else {
        None
    };
    let bagged = bag_this
        .then(|| bagged_member(&classifier, fold_models, (&xd, &xs)))
        .transpose()?;
    let fitted = Fitted {
        name: spec.name.clone(),
        classifier,
        oof,
        refit,
        bagged,
        fit_seconds,
        oof_seconds,
    };
    Ok(Classical::Fitted(Box::new((fitted, entry))))
}

/// Why `spec` stops after its dev search (its out-of-fold fits would pass the `budget`), or
/// `None`; notes a dev search the time limit cut short.
fn over_budget(
    job: &CompareSpec,
    spec: &ModelSpec,
    selection: &lmfuse_train::Selection,
    budget: Option<&Budget>,
    on: &dyn Observer,
) -> Option<String> {
    let grid = plan_grid_len(job, spec);
    if selection.trials.len() < grid {
        on.note(&format!(
            "compare: {}: {} of {grid} hyperparameter values tried before the time limit",
            spec.name,
            selection.trials.len()
        ));
    }
    let reason = budget?.refuses(oof_estimate(job, selection))?;
    Some(format!(
        "{reason} (its {} out-of-fold fits, timed by its dev fits)",
        job.exp.folds
    ))
}

/// How many hyperparameter values the dev search of `spec` tries without a time limit.
fn plan_grid_len(job: &CompareSpec, spec: &ModelSpec) -> usize {
    candidate_options(job, spec, 0).candidates().len()
}

/// Seconds the k out-of-fold fits of a selection are expected to take: each fits (k-1)/k of
/// the rows its dev fits saw, so k of them take k - 1 times their mean.
fn oof_estimate(job: &CompareSpec, selection: &lmfuse_train::Selection) -> f64 {
    let fits = &selection.trials;
    let mean = fits.iter().map(|t| t.fit_seconds).sum::<f64>() / fits.len().max(1) as f64;
    mean * (job.exp.folds as f64 - 1.0)
}

/// The training options of `spec`'s head (`dense_tail`: the embedding's width).
fn candidate_options(job: &CompareSpec, spec: &ModelSpec, dense_tail: usize) -> TrainOptions {
    TrainOptions {
        head: spec.head,
        c_grid: job.exp.c_grid.clone(),
        seed: job.exp.seed,
        dense_tail,
        ..Default::default()
    }
}

/// The head of `spec` fit on train with its hyperparameter chosen on dev, for each weight
/// of the embedding block feature fusion tries (a strictly better dev accuracy replaces an
/// earlier weight): the weights chosen, the features of every text, and the selection.
fn select_on_dev(
    job: &CompareSpec,
    plan: &Plan,
    data: &Prepared,
    spec: &ModelSpec,
    deadline: Option<Instant>,
) -> Result<(BlockWeights, Features, lmfuse_train::Selection)> {
    let blocks = &data.features.blocks;
    // The shared head's dense block: the embedding, last after the TF-IDF blocks.
    let options = candidate_options(job, spec, blocks.emb.as_ref().map_or(0, |e| e.cols()));
    let weights: &[f32] = if spec.emb && spec.tfidf {
        &plan.emb_weights
    } else {
        &[1.0]
    };
    let (train_rows, dev_rows, _) = data.rows();
    let (y_train, y_dev, _) = data.y();
    let mut best: Option<(BlockWeights, Features, lmfuse_train::Selection)> = None;
    for &w in weights {
        if best.is_some() && deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let weights = BlockWeights::with_emb(w);
        let x = blocks_of(blocks, spec.tfidf, spec.emb).fuse(&weights)?;
        let (xt, xd) = (x.select_rows(&train_rows), x.select_rows(&dev_rows));
        let selection = lmfuse_train::fit_selecting_until(
            (&xt, y_train),
            (&xd, y_dev),
            &data.splits.labels,
            &options.candidates(),
            deadline,
        )?;
        if best
            .as_ref()
            .is_none_or(|(_, _, s)| selection.dev.accuracy > s.dev.accuracy)
        {
            best = Some((weights, x, selection));
        }
    }
    Ok(best.expect("at least one weight"))
}

/// Dev and test probabilities of `head` on the rows `xd` and `xs`, timing test.
fn predicted(head: &dyn ProbaHead, xd: &Features, xs: &Features) -> Result<Predicted> {
    let t = Instant::now();
    let test = head.predict_proba(xs)?;
    let test_seconds = t.elapsed().as_secs_f64();
    Ok(Predicted {
        dev: head.predict_proba(xd)?,
        test,
        test_seconds,
    })
}

/// The deployable classifier of the classical model `spec`, refit on all of train, with
/// its cross-validated accuracy `cv` on its card; `cols` is its number of features.
fn classical_classifier(
    job: &CompareSpec,
    data: &Prepared,
    spec: &ModelSpec,
    (weights, cols): (BlockWeights, usize),
    selection: &lmfuse_train::Selection,
    cv: f64,
) -> Classifier {
    let (train, labels) = (&data.splits.train, &data.splits.labels);
    let mut text = if spec.tfidf {
        data.features.tfidf.clone()
    } else {
        TextFeaturizer::default()
    };
    text.weights = weights;
    Classifier {
        card: ModelCard::new(
            data.features.encoder.clone(),
            labels,
            &text,
            spec.emb,
            HeadCard::new(selection.params, cols),
            serde_json::json!({
                "train_sha256": lmfuse_train::data_hash(&train.texts, &train.labels),
                "n_train": train.texts.len(),
                "seed": job.exp.seed,
                "selected_by": "dev accuracy",
            }),
            serde_json::json!({
                "cv_accuracy": cv,
                "dev": {"accuracy": selection.dev.accuracy, "macro_f1": selection.dev.macro_f1},
            }),
        ),
        labels: labels.clone(),
        head: selection.model.clone(),
        text_features: text,
        oos: None,
    }
}

/// A member that predicts bagged: `classifier` with the bag of its fold models as head, and
/// the bag's probabilities on the dev and test rows `xd`, `xs`.
fn bagged_member(
    classifier: &Classifier,
    fold_models: Vec<lmfuse_classic::Head>,
    (xd, xs): (&Features, &Features),
) -> Result<(Classifier, Predicted)> {
    let bag = lmfuse_classic::Bag::new(fold_models)?;
    let n_models = bag.heads().len();
    let p = predicted(&bag, xd, xs)?;
    let mut card = classifier.card.clone();
    card.head.bagged = Some(n_models);
    card.training["bagged_from"] =
        format!("{n_models} out-of-fold models, each fit on the other folds").into();
    let c = Classifier {
        card,
        labels: classifier.labels.clone(),
        head: lmfuse_classic::Head::Bag(bag),
        text_features: classifier.text_features.clone(),
        oos: None,
    };
    Ok((c, p))
}

/// One ensemble entry per strategy over the members, and, with `tuned`, the fine-tuned
/// candidate at that index as one more (last) member.
fn add_ensembles(
    board: &mut Board,
    job: &CompareSpec,
    plan: &Plan,
    data: &Prepared,
    fits: &Fits,
    tuned: Option<usize>,
) -> Result<()> {
    let ctx = data.ensemble_context(job);
    for &strategy in &plan.strategies {
        let how = members_predict(job, strategy);
        let learnt = strategy.learns_from_out_of_fold();
        let mut views: Vec<MemberView<'_>> =
            fits.members().iter().map(|f| f.view(how, learnt)).collect();
        if let Some(t) = tuned {
            views.push(fits.tuned[t].view(learnt));
        }
        let (entry, mut model) = ensemble_entry(&ctx, strategy, how, &views)?;
        if let Deployable::Ensemble { tuned: t, .. } = &mut model {
            *t = tuned;
        }
        board.push(entry, model);
    }
    Ok(())
}

/// A bundle's parts: manifest, tensors, JSON files, and extra files (a fine-tuned encoder).
type BundleParts = (
    lmfuse_bundle::Manifest,
    BTreeMap<String, lmfuse_bundle::Tensor>,
    BTreeMap<String, serde_json::Value>,
    Vec<BundleFile>,
);

/// Saves the bundle of the board's entry `saved`, its scores on its card, to `out`.
fn save_entry(
    out: &std::path::Path,
    job: &CompareSpec,
    (data, fits): (&Prepared, &Fits),
    board: &Board,
    saved: usize,
    temperature: Option<f32>,
) -> Result<()> {
    let temperature = temperature.filter(|&t| t != 1.0);
    let w = &board.entries[saved];
    let metrics = serde_json::json!({
        "cv_accuracy": w.cv_accuracy,
        "dev": {"accuracy": w.dev.accuracy, "macro_f1": w.dev.macro_f1},
        "test": {"accuracy": w.test.accuracy, "macro_f1": w.test.macro_f1},
    });
    let labels = &data.splits.labels;
    let (manifest, tensors, json, files): BundleParts = match &board.models[saved] {
        Deployable::Single(i) => {
            let mut c = fits.classical[*i].classifier.clone();
            c.card.metrics = metrics;
            c.card.temperature = temperature;
            let (m, t, j) = c.to_bundle(crate::VERSION, &crate::now_rfc3339());
            (m, t, j, Vec::new())
        }
        Deployable::Finetuned(t) => {
            let (mut c, encoder_files) = fits.tuned[*t].classifier(labels, metrics)?;
            c.card.temperature = temperature;
            let (m, t, j) = c.to_bundle(crate::VERSION, &crate::now_rfc3339());
            (m, t, j, encoder_files)
        }
        Deployable::Ensemble {
            params,
            combiner,
            how,
            tuned,
            ..
        } => {
            let deployed = (params, combiner, *how, *tuned);
            ensemble_bundle(job, (data, fits), deployed, (metrics, temperature))?
        }
    };
    lmfuse_bundle::save_with_files(out, manifest, &tensors, &json, &files)
        .with_context(|| format!("cannot save the bundle to {}", out.display()))
}

/// The temperature fit on entry `i`'s out-of-fold probabilities, and its dev and test
/// figures once its probabilities are scaled by it.
fn calibrate(board: &Board, fits: &Fits, i: usize, data: &Prepared) -> Result<Calibration> {
    let (oof, predicted) = board.probabilities(fits, i);
    let (y_train, y_dev, y_test) = data.y();
    let names = data.splits.labels.names();
    let k = names.len();
    let (temperature, oof_log_loss_calibrated) = lmfuse_fusion::fit_temperature(oof, y_train, k);
    let scaled = |p: &[f32]| {
        let mut p = p.to_vec();
        lmfuse_fusion::apply_temperature(&mut p, k, temperature);
        p
    };
    Ok(Calibration {
        candidate: board.entries[i].name.clone(),
        temperature,
        oof_log_loss: lmfuse_metrics::evaluate(y_train, oof, names)?.log_loss,
        oof_log_loss_calibrated,
        dev: lmfuse_metrics::evaluate(y_dev, &scaled(&predicted.dev), names)?,
        test: lmfuse_metrics::evaluate(y_test, &scaled(&predicted.test), names)?,
        test_ece_uncalibrated: board.entries[i].test.ece,
    })
}

/// The bundle of the ensemble of `params` and `combiner` over the members (predicting with
/// `how`) and, with `tuned`, the fine-tuned candidate at that index; `metrics` and the
/// `temperature` go on its card.
fn ensemble_bundle(
    job: &CompareSpec,
    (data, fits): (&Prepared, &Fits),
    (params, combiner, how, tuned): (
        &CombinerParams,
        &lmfuse_fusion::Combiner,
        OofMembers,
        Option<usize>,
    ),
    (metrics, temperature): (serde_json::Value, Option<f32>),
) -> Result<BundleParts> {
    let (train, labels) = (&data.splits.train, &data.splits.labels);
    let mut members: Vec<Classifier> = fits
        .members()
        .iter()
        .map(|f| f.predicting(how).0.clone())
        .collect();
    let mut files = Vec::new();
    if let Some(t) = tuned {
        let (c, encoder_files) = fits.tuned[t].classifier(labels, serde_json::json!({}))?;
        members.push(c);
        files = encoder_files;
    }
    let ensemble = Ensemble {
        card: EnsembleCard {
            task: lmfuse_train::ENSEMBLE_TASK.into(),
            encoder: data.features.encoder.clone(),
            labels: labels.names().to_vec(),
            members: members.iter().map(|c| c.card.clone()).collect(),
            combiner: *params,
            training: serde_json::json!({
                "train_sha256": lmfuse_train::data_hash(&train.texts, &train.labels),
                "n_train": train.texts.len(),
                "seed": job.exp.seed,
                "folds": job.exp.folds,
                "combiner_fit_on": "out-of-fold member probabilities",
                "member_models": how.name(),
                "finetuned_member_model": tuned.map(|_| "refit"),
            }),
            metrics,
            temperature,
        },
        labels: labels.clone(),
        members,
        combiner: combiner.clone(),
    };
    let (m, t, j) = ensemble.to_bundle(crate::VERSION, &crate::now_rfc3339());
    Ok((m, t, j, files))
}

/// Out-of-fold probabilities of the combiner of `params` over members with out-of-fold
/// probabilities `oof` on train (classes and lengths `y`, `lengths`): the combiner of fold f
/// learns from the other folds' rows only.
fn combiner_out_of_fold(
    params: &CombinerParams,
    oof: &[&[f32]],
    (y, lengths): (&[usize], &[f32]),
    folds: &[usize],
    k: usize,
) -> Result<Vec<f32>> {
    let pick = |p: &[f32], rows: &[usize]| -> Vec<f32> {
        rows.iter()
            .flat_map(|&i| p[i * k..(i + 1) * k].iter().copied())
            .collect()
    };
    let (cv_p, _) = lmfuse_fusion::out_of_fold_by(folds, k, |fit_rows, held| {
        let fit_m: Vec<Vec<f32>> = oof.iter().map(|p| pick(p, fit_rows)).collect();
        let held_m: Vec<Vec<f32>> = oof.iter().map(|p| pick(p, held)).collect();
        let fit_refs: Vec<&[f32]> = fit_m.iter().map(Vec::as_slice).collect();
        let held_refs: Vec<&[f32]> = held_m.iter().map(Vec::as_slice).collect();
        let fit_y: Vec<usize> = fit_rows.iter().map(|&i| y[i]).collect();
        let fit_len: Vec<f32> = fit_rows.iter().map(|&i| lengths[i]).collect();
        let held_len: Vec<f32> = held.iter().map(|&i| lengths[i]).collect();
        let c = params.fit(&fit_refs, &fit_y, k, &fit_len)?;
        Ok::<_, PipelineError>((c.combine(&held_refs, k, &held_len)?, ()))
    })?;
    Ok(cv_p)
}

/// Texts of train, dev and test.
type SplitTexts<'a> = (&'a [String], &'a [String], &'a [String]);

/// TF-IDF blocks of train, dev and test.
type SplitBlocks = (Blocks, Blocks, Blocks);

/// One setting of a fine-tuned candidate tried on all of train, and its dev accuracy.
#[derive(Debug, Clone, Serialize)]
pub struct Tried {
    alpha: f64,
    dev_accuracy: f64,
    best_step: usize,
}

/// A fine-tuned candidate's deployable parts: the network, its shared head if it has one,
/// the encoder it started from and its card's `training`; the bundle (which holds the
/// encoder's files) is built only to save.
struct FinetunedModel {
    name: &'static str,
    net: Network,
    shared: Option<SharedModel>,
    base: FinetuneBase,
    training: serde_json::Value,
    /// Out-of-fold probabilities on train (from the fold runs).
    oof: Vec<f32>,
    /// Dev and test probabilities of the run on all of train.
    predicted: Predicted,
    /// Seconds of the runs on all of train, and of the fold runs.
    fit_seconds: f64,
    oof_seconds: f64,
}

impl FinetunedModel {
    /// This candidate as an ensemble member (it predicts with its run on all of train), of a
    /// combiner that learns from out-of-fold probabilities (`learnt`) or not.
    fn view(&self, learnt: bool) -> MemberView<'_> {
        MemberView {
            name: self.name,
            oof: &self.oof,
            predicted: &self.predicted,
            fit_seconds: self.fit_seconds + if learnt { self.oof_seconds } else { 0.0 },
        }
    }

    /// The deployable classifier (its fine-tuned encoder inside the bundle, with `metrics`
    /// on its card) and the encoder's bundle files.
    fn classifier(
        &self,
        labels: &LabelSet,
        metrics: serde_json::Value,
    ) -> Result<(Classifier, Vec<BundleFile>)> {
        match &self.shared {
            None => finetuned_classifier(
                &self.net,
                &self.base.files,
                self.base.fingerprint.clone(),
                labels,
                self.training.clone(),
                metrics,
            ),
            Some(shared) => shared_classifier(
                &self.net,
                (&self.base.files, self.base.fingerprint.clone()),
                labels,
                (
                    shared.text_features.clone(),
                    shared.mlp.clone(),
                    shared.params,
                ),
                self.training.clone(),
                metrics,
            ),
        }
    }
}

/// The shared head of a `finetuned_shared` candidate and what its rows are built from.
struct SharedModel {
    mlp: Mlp,
    params: MlpParams,
    text_features: TextFeaturizer,
}

/// A fine-tuned candidate's runs: the encoder it starts from, the tokenized splits, and (for
/// the shared head) the TF-IDF and its blocks of every split, made once for every run.
struct TunedRuns<'a> {
    job: &'a CompareSpec,
    params: &'a FinetuneParams,
    name: &'static str,
    base: FinetuneBase,
    tok: (Vec<TokenizedText>, Vec<TokenizedText>, Vec<TokenizedText>),
    y_train: &'a [usize],
    y_dev: &'a [usize],
    k: usize,
    /// The shared head's TF-IDF (fit on all of train) and its blocks of train, dev and test.
    shared_inputs: Option<(TextFeaturizer, SplitBlocks)>,
    task: Box<dyn crate::Task + 'a>,
    on: &'a dyn Observer,
}

/// A fine-tuned candidate: its entry and model, or why it was skipped.
type TunedOutcome = std::result::Result<(Entry, FinetunedModel), Skipped>;

/// One fine-tuning run: the network, the shared head if any, its best dev evaluation.
type Run = (Network, Option<Mlp>, EvalRecord);

impl<'a> TunedRuns<'a> {
    /// Loads the encoder and tokenizes the splits; with the shared head, fits its TF-IDF on
    /// train and returns the settings to try (one per alpha; `None` for the linear head).
    #[allow(clippy::type_complexity)]
    fn new(
        job: &'a CompareSpec,
        (params, head): (&'a FinetuneParams, &TunedHead),
        (train, dev, test): SplitTexts<'_>,
        (y_train, y_dev): (&'a [usize], &'a [usize]),
        k: usize,
        on: &'a dyn Observer,
    ) -> Result<(Self, Vec<Option<MlpParams>>)> {
        let base = FinetuneBase::load(&job.exp.model)?;
        let tok = (
            base.tokenize(train)?,
            base.tokenize(dev)?,
            base.tokenize(test)?,
        );
        let (shared_inputs, settings) = match head {
            TunedHead::Linear => (None, vec![None]),
            TunedHead::Shared { alphas } => {
                let (text_features, b) = shared_tfidf((train, dev, test))?;
                let hidden = base.files.config.hidden_size;
                let settings = alphas
                    .iter()
                    .map(|&a| Some(shared_head_params(params, a, hidden)))
                    .collect();
                (Some((text_features, b)), settings)
            }
        };
        let runs = TunedRuns {
            job,
            params,
            name: head.name(),
            base,
            tok,
            y_train,
            y_dev,
            k,
            shared_inputs,
            task: on.task("fine-tuning", 0),
            on,
        };
        Ok((runs, settings))
    }

    /// Expected seconds of one run on all of train: a forward pass over up to 32 training
    /// texts, timed, scaled to the epochs (a training step costs about three forward
    /// passes) and to the evaluations on dev after each epoch.
    fn estimate_run_seconds(&self) -> Result<f64> {
        let probe = &self.tok.0[..self.tok.0.len().min(32)];
        let net = self.base.network(self.k, self.job.exp.seed)?;
        let t = Instant::now();
        lmfuse_finetune::predict_proba(&net, probe, rayon::current_num_threads());
        let per_text = t.elapsed().as_secs_f64() / probe.len().max(1) as f64;
        let per_epoch = per_text * (3 * self.tok.0.len() + self.tok.1.len()) as f64;
        Ok(per_epoch * self.params.epochs as f64)
    }

    fn shared(&self) -> &(TextFeaturizer, SplitBlocks) {
        self.shared_inputs
            .as_ref()
            .expect("the shared head's settings come with its inputs")
    }

    /// Fine-tunes on the train rows `rows` with `setting` (`what` names the run).
    fn fit(&self, rows: &[usize], what: &str, setting: Option<&MlpParams>) -> Result<Run> {
        self.on.note(&format!("compare: {}, {what}", self.name));
        let mut net = self.base.network(self.k, self.job.exp.seed)?;
        let tok: Vec<TokenizedText> = rows.iter().map(|&i| self.tok.0[i].clone()).collect();
        let y: Vec<usize> = rows.iter().map(|&i| self.y_train[i]).collect();
        let mut observer = |e: &Event| {
            if let Event::Step { step, total, loss } = e {
                let what = format!("fine-tuning ({what})");
                self.task.step(&what, *step, *total, *loss);
            }
        };
        let failed = || format!("fine-tuning ({what}) failed");
        let (mlp, best) = match setting {
            None => {
                let dev = (&self.tok.1, self.y_dev);
                let summary = lmfuse_finetune::fit(
                    &mut net,
                    self.params,
                    &tok,
                    &y,
                    dev.0,
                    dev.1,
                    None,
                    false,
                    &mut observer,
                )
                .with_context(failed)?;
                (None, summary.best)
            }
            Some(mlp_params) => {
                let (text_features, (b_train, b_dev, _)) = self.shared();
                let (mlp, summary) = fit_shared(
                    &mut net,
                    (self.params, mlp_params),
                    text_features,
                    (b_train.select_rows(rows), &tok, &y),
                    (b_dev.clone(), &self.tok.1, self.y_dev),
                    None,
                    &mut observer,
                )
                .with_context(failed)?;
                (Some(mlp), summary.best)
            }
        };
        Ok((net, mlp, best))
    }

    /// Probabilities of the texts `tok` by the run `net` with `setting`'s head `mlp`; for the
    /// shared head, `blocks` picks the texts' TF-IDF blocks.
    fn proba(
        &self,
        (net, setting, mlp): (&Network, Option<&MlpParams>, &Option<Mlp>),
        tok: &[TokenizedText],
        blocks: &dyn Fn(&SplitBlocks) -> Blocks,
    ) -> Result<Vec<f32>> {
        match (setting, mlp) {
            (Some(_), Some(mlp)) => {
                let (text_features, b) = self.shared();
                shared_proba(net, mlp, tok, blocks(b), text_features)
            }
            (None, None) => Ok(lmfuse_finetune::predict_proba(
                net,
                tok,
                rayon::current_num_threads(),
            )),
            _ => unreachable!("a shared head comes with its setting"),
        }
    }

    /// Each setting fine-tuned on all of train; the best dev accuracy chooses (ties: the
    /// earlier). Returns the chosen setting and run, and what was tried (empty when there
    /// was nothing to choose).
    fn choose(
        &self,
        settings: &[Option<MlpParams>],
    ) -> Result<(Option<MlpParams>, Run, Vec<Tried>)> {
        let all: Vec<usize> = (0..self.y_train.len()).collect();
        let mut tried = Vec::new();
        let mut chosen: Option<(Option<MlpParams>, Run)> = None;
        for setting in settings {
            let what = match setting {
                Some(p) if settings.len() > 1 => format!("all of train, alpha {}", p.alpha),
                _ => "all of train".to_string(),
            };
            let run = self.fit(&all, &what, setting.as_ref())?;
            if let Some(p) = setting {
                tried.push(Tried {
                    alpha: p.alpha,
                    dev_accuracy: run.2.dev_accuracy,
                    best_step: run.2.step,
                });
            }
            if chosen
                .as_ref()
                .is_none_or(|c| run.2.dev_accuracy > c.1 .2.dev_accuracy)
            {
                chosen = Some((*setting, run));
            }
        }
        if settings.len() == 1 {
            tried.clear();
        }
        let (setting, run) = chosen.expect("at least one setting");
        Ok((setting, run, tried))
    }

    /// Out-of-fold probabilities on train: `setting` fine-tuned on every fold but one, for
    /// the held fold.
    fn out_of_fold(&self, folds: &[usize], setting: Option<&MlpParams>) -> Result<Vec<f32>> {
        let n_folds = self.job.exp.folds;
        let (oof, _) = lmfuse_fusion::out_of_fold_by(folds, self.k, |fit_rows, held| {
            let fold = folds[held[0]] + 1;
            let (net, mlp, _) = self.fit(fit_rows, &format!("fold {fold}/{n_folds}"), setting)?;
            let held_tok: Vec<TokenizedText> =
                held.iter().map(|&i| self.tok.0[i].clone()).collect();
            let p = self.proba((&net, setting, &mlp), &held_tok, &|b| b.0.select_rows(held))?;
            Ok::<_, PipelineError>((p, ()))
        })?;
        Ok(oof)
    }

    /// The card's `training` of the run chosen with `best`, for `head`.
    fn training(
        &self,
        head: &TunedHead,
        train: &[String],
        labels: &LabelSet,
        best: &EvalRecord,
    ) -> serde_json::Value {
        serde_json::json!({
            "method": match head {
                TunedHead::Linear => "finetune",
                TunedHead::Shared { .. } => "finetune-shared",
            },
            "base_encoder": self.base.files.reference,
            "base_weights_sha256": self.base.files.weights_sha256,
            "train_sha256": lmfuse_train::data_hash(train, &labels_of(self.y_train, labels)),
            "n_train": train.len(),
            "seed": self.job.exp.seed,
            "folds": self.job.exp.folds,
            "finetune": self.params,
            "best_step": best.step,
            "selected_by": "dev accuracy (early stopping)",
        })
    }
}

/// A fine-tuned candidate (`finetuned`, `finetuned_shared`): the encoder and `head`
/// fine-tuned on all of train (early stopping on dev) for the model that is scored on dev and
/// test and deployed, then on every fold but one for the held fold's out-of-fold
/// probabilities. With several values of the shared head's alpha, each is fine-tuned on all of
/// train and the best dev accuracy chooses (ties: the earlier); the folds run with that one.
/// The shared head's TF-IDF is fit on all of train, as for the other candidates'
/// cross-validation.
fn finetuned_candidate(
    job: &CompareSpec,
    (params, head): (&FinetuneParams, &TunedHead),
    (data, budget): (&Prepared, &Budget),
    on: &dyn Observer,
) -> Result<TunedOutcome> {
    let skip = |reason| {
        Ok(Err(Skipped {
            name: head.name().into(),
            reason,
        }))
    };
    if let Some(reason) = budget.refuses(0.0) {
        return skip(reason);
    }
    let (labels, folds, texts) = (&data.splits.labels, &data.folds, data.texts());
    let (y_train, y_dev, y_test) = data.y();
    let k = labels.len();
    let (runs, settings) = TunedRuns::new(job, (params, head), texts, (y_train, y_dev), k, on)?;
    let runs_left = settings.len() + job.exp.folds - 1;
    if let Some(reason) = budget.refuses(runs_left as f64 * runs.estimate_run_seconds()?) {
        return skip(format!("{reason} (estimated from a timed forward pass)"));
    }
    let t = Instant::now();
    let (setting, (net, mlp, best), tried) = runs.choose(&settings)?;
    let fit_seconds = t.elapsed().as_secs_f64();
    let fold_cost = (job.exp.folds - 1) as f64 * fit_seconds / settings.len() as f64;
    if let Some(reason) = budget.refuses(fold_cost) {
        return skip(format!(
            "its fold runs are {reason} (measured on the run on all of train)"
        ));
    }
    let t = Instant::now();
    let oof = runs.out_of_fold(folds, setting.as_ref())?;
    let oof_seconds = t.elapsed().as_secs_f64();
    runs.task.finish();
    let (cv, cv_std) = mean_std(&fold_accuracies(&oof, y_train, folds, job.exp.folds, k));
    let run = (&net, setting.as_ref(), &mlp);
    let dev_p = runs.proba(run, &runs.tok.1, &|b| b.1.clone())?;
    let t = Instant::now();
    let test_p = runs.proba(run, &runs.tok.2, &|b| b.2.clone())?;
    let predict_seconds = t.elapsed().as_secs_f64();
    let training = runs.training(head, texts.0, labels, &best);
    let (training, selected, shared) = chosen_parts(
        training,
        (&tried, &best),
        runs.shared_inputs,
        (setting, mlp),
    )?;
    let entry = Entry {
        name: runs.name.into(),
        kind: head.kind(),
        cv_accuracy: cv,
        cv_std,
        selected: Some(selected),
        tried,
        finetune: Some(params.clone()),
        member_models: None,
        dev: lmfuse_metrics::evaluate(y_dev, &dev_p, labels.names())?,
        test: lmfuse_metrics::evaluate(y_test, &test_p, labels.names())?,
        fit_seconds,
        predict_seconds,
    };
    let model = FinetunedModel {
        name: runs.name,
        net,
        shared,
        base: runs.base,
        training,
        oof,
        predicted: Predicted {
            dev: dev_p,
            test: test_p,
            test_seconds: predict_seconds,
        },
        fit_seconds,
        oof_seconds,
    };
    Ok(Ok((entry, model)))
}

/// What a fine-tuned candidate's chosen run adds: to the card's `training`, the settings
/// `tried` and the shared head's; the entry's `selected` (the best step, and alpha); and its
/// shared head, when it has one.
fn chosen_parts(
    mut training: serde_json::Value,
    (tried, best): (&[Tried], &EvalRecord),
    shared_inputs: Option<(TextFeaturizer, SplitBlocks)>,
    (setting, mlp): (Option<MlpParams>, Option<Mlp>),
) -> Result<(
    serde_json::Value,
    BTreeMap<String, f64>,
    Option<SharedModel>,
)> {
    if !tried.is_empty() {
        training["alpha_tried"] = serde_json::to_value(tried)?;
        training["alpha_selected_by"] = "dev accuracy".into();
    }
    let mut selected = BTreeMap::from([("best_step".to_string(), best.step as f64)]);
    let shared = match (shared_inputs, setting, mlp) {
        (Some((text_features, _)), Some(mlp_params), Some(mlp)) => {
            training["shared_head"] = serde_json::to_value(mlp_params)?;
            selected.insert("alpha".into(), mlp_params.alpha);
            Some(SharedModel {
                mlp,
                params: mlp_params,
                text_features,
            })
        }
        _ => None,
    };
    Ok((training, selected, shared))
}

/// The class names of class indices `y`.
fn labels_of(y: &[usize], labels: &LabelSet) -> Vec<String> {
    y.iter().map(|&c| labels.names()[c].clone()).collect()
}
