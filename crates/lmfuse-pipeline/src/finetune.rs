//! `lmfuse finetune`: encoder and head trained together; the bundle holds the fine-tuned
//! encoder, so `eval`, `predict`, `compare` and `serve` use it like any other.

use crate::data::{DataReport, Splits};
use crate::encoders::EncoderChoice;
use crate::ensure;
use crate::error::{Context, PipelineError, Result};
use crate::observe::{Observer, Task};
use lmfuse_classic::{
    Head, HeadParams, LogisticRegression, LogisticRegressionParams, Mlp, MlpParams, MlpTrainer,
    ProbaHead,
};
use lmfuse_core::{EncoderFingerprint, LabelSet, LongText, Precision, SeededRng};
use lmfuse_encoder::{LoadOptions, ModelFiles, SentenceEncoder, TokenizedText};
use lmfuse_finetune::{
    Event, FinetuneParams, FitSummary, HeadError, LoraParams, LoraTarget, Metric, Network,
    PooledHead,
};
use lmfuse_metrics::Report;
use lmfuse_train::{
    BlockWeights, Blocks, Classifier, EncoderInfo, HeadCard, HeadKind, ModelCard, TextFeaturizer,
    TrainOptions,
};
use serde::Serialize;
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How `finetune` trains: the run (seed, checkpoints), the optimiser, adversarial training,
/// LoRA, the contrastive and shared-head modes. `Default` holds the CLI's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneSpec {
    /// Seed of the splits, the head's initialisation, batch order and dropout.
    pub seed: u64,
    /// Folder for checkpoints and the metrics log (default: <out>.run).
    pub run_dir: Option<PathBuf>,
    /// Continue the run in --run-dir from its last checkpoint (same options required).
    pub resume: bool,
    /// Passes over the training data (at most; early stopping may end sooner).
    pub epochs: usize,
    /// Texts per batch.
    pub batch_size: usize,
    /// Batches per optimiser step.
    pub grad_accum: usize,
    /// Peak learning rate of the encoder.
    pub lr: f32,
    /// Peak learning rate of the head.
    pub head_lr: f32,
    /// Layer-wise learning-rate decay (1: none; 0.9: each layer down gets 0.9× the one above).
    pub layer_lr_decay: f32,
    /// AdamW's decoupled weight decay (not on biases and LayerNorm).
    pub weight_decay: f32,
    /// Share of the steps spent warming the learning rate up (then linear decay to 0).
    pub warmup: f32,
    /// Dropout rate.
    pub dropout: f32,
    /// Clip the global gradient norm (0: off).
    pub max_grad_norm: f32,
    /// Freeze the embedding tables.
    pub freeze_embeddings: bool,
    /// Freeze the lowest N transformer layers.
    pub freeze_layers: usize,
    /// Evaluate on dev every N optimiser steps (default: each epoch).
    pub eval_every: Option<usize>,
    /// Stop after N evaluations without improvement (0: never).
    pub patience: usize,
    /// Dev metric for early stopping and the best weights.
    pub metric: Metric,
    /// FGM adversarial training with this ε on the word embeddings.
    pub fgm: Option<f32>,
    /// PGD adversarial training: ε (radius), with --pgd-alpha and --pgd-steps.
    pub pgd: Option<f32>,
    /// PGD step size.
    pub pgd_alpha: f32,
    /// PGD ascent steps.
    pub pgd_steps: usize,
    /// Train LoRA adapters (and the head) instead of the whole encoder.
    pub lora: bool,
    /// LoRA rank.
    pub lora_rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank).
    pub lora_alpha: f32,
    /// LoRA dropout.
    pub lora_dropout: f32,
    /// Projections with adapters.
    pub lora_targets: Vec<LoraTarget>,
    /// Few-shot contrastive mode (the SetFit recipe): tune the encoder on same/other-class
    /// pairs with a cosine-similarity loss, then fit logistic regression (C chosen on dev) on
    /// its embeddings (or --contrastive-head).
    pub contrastive: bool,
    /// Contrastive: rounds of pair sampling (one same-class and one other-class pair per
    /// example per round).
    pub pair_iterations: usize,
    /// Contrastive: at most this many pairs.
    pub max_pairs: usize,
    /// Contrastive: learning rate of the encoder.
    pub contrastive_lr: f32,
    /// Contrastive: passes over the pairs.
    pub contrastive_epochs: usize,
    /// Contrastive: the classical head fit on the tuned embeddings (hyperparameter on dev).
    pub contrastive_head: HeadKind,
    /// End to end with the `shared` head of `lmfuse train --head shared --features tfidf,emb`:
    /// the TF-IDF block (word and character n-grams, fit on --train) and the pooled encoder
    /// output (unnormalised) are each projected to 128 units into one shared ReLU hidden layer
    /// of 256 units, then the classes; the encoder and that head train together (the head with AdamW at --head-lr,
    /// decay --shared-head-alpha). The bundle is a `shared`-head classifier over tfidf and
    /// emb whose encoder, inside it, is the fine-tuned one. Not with --contrastive, --resume,
    /// --grad-accum > 1, --fgm or --pgd.
    pub shared_head: bool,
    /// --shared-head: decoupled weight decay of the head's weight matrices (each step
    /// multiplies them by 1 - head_lr · alpha; `lmfuse train --head shared`'s `alpha`). The
    /// default, 3 at --head-lr 1e-3, decays as much a step as `train`'s middle grid value (10
    /// at its rate 3e-4).
    pub shared_head_alpha: f64,
}

impl Default for FinetuneSpec {
    fn default() -> Self {
        FinetuneSpec {
            seed: 13,
            run_dir: None,
            resume: false,
            epochs: 3,
            batch_size: 16,
            grad_accum: 1,
            lr: 3e-5,
            head_lr: 1e-3,
            layer_lr_decay: 1.0,
            weight_decay: 0.01,
            warmup: 0.1,
            dropout: 0.1,
            max_grad_norm: 1.0,
            freeze_embeddings: false,
            freeze_layers: 0,
            eval_every: None,
            patience: 2,
            metric: Metric::Accuracy,
            fgm: None,
            pgd: None,
            pgd_alpha: 0.3,
            pgd_steps: 3,
            lora: false,
            lora_rank: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.1,
            lora_targets: vec![LoraTarget::Query, LoraTarget::Value],
            contrastive: false,
            pair_iterations: 20,
            max_pairs: 20_000,
            contrastive_lr: 2e-5,
            contrastive_epochs: 1,
            contrastive_head: HeadKind::Logreg,
            shared_head: false,
            shared_head_alpha: 3.0,
        }
    }
}

impl FinetuneSpec {
    /// Checks the settings against each other (before anything is loaded).
    pub fn check(&self) -> Result<()> {
        self.params().check()?;
        if self.contrastive {
            ensure!(
                !self.lora && self.fgm.is_none() && self.pgd.is_none() && !self.resume,
                "--contrastive trains the whole encoder in one short run: it does not combine \
                 with --lora, --fgm, --pgd or --resume"
            );
        }
        if self.shared_head {
            ensure!(
                !self.contrastive
                    && !self.resume
                    && self.grad_accum == 1
                    && self.fgm.is_none()
                    && self.pgd.is_none(),
                "--shared-head trains the encoder and its head one batch a step, without \
                 checkpoints: it does not combine with --contrastive, --resume, --grad-accum > 1, \
                 --fgm or --pgd"
            );
            shared_head_params(&self.params(), self.shared_head_alpha, 1)
                .check()
                .context("--shared-head-alpha with --head-lr")?;
        }
        Ok(())
    }

    /// The contrastive mode's settings.
    pub fn contrastive_params(&self) -> lmfuse_finetune::ContrastiveParams {
        lmfuse_finetune::ContrastiveParams {
            iterations: self.pair_iterations,
            max_pairs: self.max_pairs,
            epochs: self.contrastive_epochs,
            batch_size: self.batch_size,
            lr: self.contrastive_lr,
            weight_decay: self.weight_decay,
            warmup: self.warmup,
            dropout: self.dropout,
            max_grad_norm: self.max_grad_norm,
            seed: self.seed,
        }
    }

    /// The fine-tuning settings.
    pub fn params(&self) -> FinetuneParams {
        FinetuneParams {
            epochs: self.epochs,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            lr: self.lr,
            head_lr: self.head_lr,
            layer_lr_decay: self.layer_lr_decay,
            weight_decay: self.weight_decay,
            warmup: self.warmup,
            dropout: self.dropout,
            max_grad_norm: self.max_grad_norm,
            freeze_embeddings: self.freeze_embeddings,
            freeze_layers: self.freeze_layers,
            eval_every: self.eval_every,
            patience: self.patience,
            metric: self.metric,
            seed: self.seed,
            fgm: self.fgm,
            pgd: self.pgd.map(|epsilon| lmfuse_finetune::Pgd {
                epsilon,
                alpha: self.pgd_alpha,
                steps: self.pgd_steps,
            }),
            lora: self.lora.then(|| LoraParams {
                rank: self.lora_rank,
                alpha: self.lora_alpha,
                dropout: self.lora_dropout,
                targets: self.lora_targets.clone(),
            }),
        }
    }
}

/// Default maximum tokens a text when fine-tuning (the model's own can be 512: costly).
const DEFAULT_MAX_LENGTH: usize = 128;

/// The JSON report of `lmfuse finetune`: `lmfuse train`'s keys plus the run.
#[derive(Debug, Serialize)]
struct FinetuneReport {
    bundle: String,
    encoder: String,
    head: &'static str,
    features: Vec<String>,
    labels: Vec<String>,
    data: DataReport,
    selected: Selected,
    trials: Vec<lmfuse_finetune::EvalRecord>,
    dev: Report,
    test: Report,
    finetune: FinetuneParams,
    /// `--shared-head`: the head's hyperparameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    shared_head: Option<MlpParams>,
    trainable_parameters: usize,
    total_parameters: usize,
    steps: usize,
    stopped_early: bool,
    run_dir: String,
    seconds: BTreeMap<&'static str, f64>,
}

#[derive(Debug, Serialize)]
struct Selected {
    param: &'static str,
    value: f64,
}

/// The encoder fine-tuning starts from: its files, its fingerprint (pooling, and the token
/// limit fine-tuning uses) and the loaded model (the weights to copy, the tokenizer).
pub struct FinetuneBase {
    pub files: ModelFiles,
    pub fingerprint: EncoderFingerprint,
    pub(crate) encoder: SentenceEncoder,
}

impl FinetuneBase {
    /// Loads the encoder `model` names, with at most 128 tokens a text unless
    /// `--max-seq-length` says otherwise.
    pub fn load(model: &EncoderChoice) -> Result<Self> {
        let files = model.resolve()?;
        let mut options: LoadOptions = model.load_options();
        options.max_seq_length = Some(
            options
                .max_seq_length
                .unwrap_or(DEFAULT_MAX_LENGTH)
                .min(files.config.max_tokens()),
        );
        let fingerprint = options.fingerprint(&files)?;
        let encoder = SentenceEncoder::load(&files, &options).context("cannot load the encoder")?;
        Ok(Self {
            files,
            fingerprint,
            encoder,
        })
    }

    /// `texts` as token ids.
    pub fn tokenize(&self, texts: &[String]) -> Result<Vec<TokenizedText>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        Ok(self.encoder.tokenize(&refs)?)
    }

    /// A network with the base encoder's weights and a new head for `n_classes`, drawn with
    /// `seed`.
    pub fn network(&self, n_classes: usize, seed: u64) -> Result<Network> {
        Ok(Network::new(
            &self.files.config,
            self.encoder.model().export(),
            self.fingerprint.pooling,
            n_classes,
            SeededRng::new(seed).next_u64(),
        )?)
    }
}

/// The fingerprint of an encoder fine-tuned from `base` with weights `weights_sha256`: the
/// base's pooling, length and prefix; one truncated pass per text, of the f32 network (int8
/// comes after, when a bundle is loaded in it).
fn tuned_fingerprint(
    weights_sha256: String,
    base: &EncoderFingerprint,
    normalize: bool,
) -> EncoderFingerprint {
    EncoderFingerprint {
        weights_sha256,
        pooling: base.pooling,
        normalize,
        max_seq_length: base.max_seq_length,
        prefix: base.prefix.clone(),
        long_text: LongText::Truncate,
        precision: Precision::F32,
    }
}

/// The fine-tuned encoder of `net` as a classifier's encoder (inside the bundle; its pooled
/// vectors unnormalised, as the network's heads read them) and its bundle files.
pub(crate) fn finetuned_encoder(
    net: &Network,
    files: &ModelFiles,
    base_fp: EncoderFingerprint,
) -> Result<(EncoderInfo, Vec<BundleFile>)> {
    let (weights_sha256, bundle_files) = encoder_bundle_files(net, files)?;
    let info = EncoderInfo {
        reference: lmfuse_bundle::ENCODER_DIR.into(),
        fingerprint: tuned_fingerprint(weights_sha256, &base_fp, false),
        dim: files.config.hidden_size,
        in_bundle: true,
    };
    Ok((info, bundle_files))
}

/// The fine-tuned `net` as a classifier over its own encoder, and that encoder's files for the
/// bundle: the linear head becomes a softmax-linear model over the (unnormalised) pooled
/// vectors.
pub fn finetuned_classifier(
    net: &Network,
    files: &ModelFiles,
    base_fp: EncoderFingerprint,
    labels: &LabelSet,
    training: serde_json::Value,
    metrics: serde_json::Value,
) -> Result<(Classifier, Vec<BundleFile>)> {
    let (encoder, bundle_files) = finetuned_encoder(net, files, base_fp)?;
    let (head_w, head_b) = net.head_tensors();
    let hidden = files.config.hidden_size;
    let head =
        LogisticRegression::from_parts(hidden, labels.len(), head_w.to_vec(), head_b.to_vec())?;
    let card = ModelCard::new(
        encoder,
        labels,
        &TextFeaturizer::default(),
        true,
        HeadCard::new(
            HeadParams::Logreg(LogisticRegressionParams::default()),
            hidden,
        ),
        training,
        metrics,
    );
    let classifier = Classifier {
        card,
        labels: labels.clone(),
        head: Head::Logreg(head),
        text_features: TextFeaturizer::default(),
        oos: None,
    };
    Ok((classifier, bundle_files))
}

/// What a fine-tuning run did: the JSON report (`lmfuse finetune --json`), a line saying
/// what was trained, dev and test figures, and where things were saved.
#[derive(Debug, Clone)]
pub struct FinetuneOutcome {
    /// The full report.
    pub report: serde_json::Value,
    /// What was trained, in one line.
    pub headline: String,
    /// Dev figures of the saved model.
    pub dev: Report,
    /// Test figures of the saved model.
    pub test: Report,
    /// Where the bundle (and checkpoints) went, in one line.
    pub saved: String,
}

/// Token ids of train, dev and test.
type SplitTokens = (Vec<TokenizedText>, Vec<TokenizedText>, Vec<TokenizedText>);

/// The fine-tuning input: the splits with their token ids, the network to train, the base
/// encoder's files and fingerprint.
struct Prepared {
    splits: Splits,
    tok: SplitTokens,
    net: Network,
    files: ModelFiles,
    base_fp: EncoderFingerprint,
}

/// Loads the base encoder, tokenizes the splits and builds the network (LoRA adapters,
/// frozen parts) for `spec`.
fn prepare(splits: Splits, spec: &FinetuneSpec, encoder: &EncoderChoice) -> Result<Prepared> {
    ensure!(
        splits.train.columns.is_empty(),
        "fine-tuning reads texts only: --feature-cols is for `lmfuse train --features ...,tab`"
    );
    let params = spec.params();
    let base = FinetuneBase::load(encoder)?;
    let tok = (
        base.tokenize(&splits.train.texts)?,
        base.tokenize(&splits.dev.texts)?,
        base.tokenize(&splits.test.texts)?,
    );
    let mut net = base.network(splits.labels.len(), spec.seed)?;
    // Adapters first, so that --freeze-layers also freezes the adapters of those layers.
    if let Some(l) = &params.lora {
        net.add_lora(l, spec.seed)?;
    }
    net.freeze(params.freeze_embeddings, params.freeze_layers);
    Ok(Prepared {
        splits,
        tok,
        net,
        files: base.files,
        base_fp: base.fingerprint,
    })
}

/// Fine-tunes the encoder `encoder` with a head on `splits` as `spec` says (linear head,
/// `shared_head`, or `contrastive`), with early stopping on dev, and saves the bundle (which
/// holds the fine-tuned encoder) to `out`; checkpoints go to `spec.run_dir` (default
/// `<out>.run`).
pub fn finetune(
    splits: Splits,
    spec: &FinetuneSpec,
    encoder: &EncoderChoice,
    out: &Path,
    on: &dyn Observer,
) -> Result<FinetuneOutcome> {
    let started = Instant::now();
    spec.check()?;
    let prepared = prepare(splits, spec, encoder)?;
    if spec.contrastive {
        return run_contrastive(spec, prepared, out, started, on);
    }
    let run_dir = spec
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.run", out.display())));
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    if spec.shared_head {
        return run_shared(spec, prepared, (out, &run_dir), started, on);
    }
    run_linear(spec, prepared, (out, &run_dir), started, on)
}

/// Fine-tuning with a linear head over the pooled output.
fn run_linear(
    spec: &FinetuneSpec,
    p: Prepared,
    (out, run_dir): (&Path, &Path),
    started: Instant,
    on: &dyn Observer,
) -> Result<FinetuneOutcome> {
    let Prepared {
        splits,
        tok,
        mut net,
        files,
        base_fp,
    } = p;
    let params = spec.params();
    let task = on.task("fine-tuning", 0);
    let mut observer = progress_observer(task.as_ref(), "fine-tuning", on, run_dir);
    let t = Instant::now();
    let summary = lmfuse_finetune::fit(
        &mut net,
        &params,
        &tok.0,
        &splits.y_train,
        &tok.1,
        &splits.y_dev,
        Some(run_dir),
        spec.resume,
        &mut observer,
    )
    .with_context(|| format!("fine-tuning failed (run folder {})", run_dir.display()))?;
    task.finish();
    let fit_seconds = t.elapsed().as_secs_f64();
    let labels = &splits.labels;
    let (dev_report, test_report) = evaluate_linear(&net, &tok, &splits)?;
    // The bundle: the fine-tuned encoder's model folder inside it, and the linear head.
    let training = card_training(
        "finetune",
        (spec, &params, &files),
        &splits,
        summary.best.step,
    );
    let (classifier, bundle_files) = finetuned_classifier(
        &net,
        &files,
        base_fp,
        labels,
        training,
        card_metrics(&dev_report, &test_report),
    )?;
    save_bundle(&classifier, &bundle_files, out)?;
    let lora = params.lora.is_some();
    let mut report = FinetuneReport::of_run(
        (out, run_dir),
        (&files, params),
        &splits,
        &summary,
        (dev_report, test_report),
    );
    report.head = if lora { "finetune-lora" } else { "finetune" };
    report.seconds = BTreeMap::from([
        ("fit", fit_seconds),
        ("total", started.elapsed().as_secs_f64()),
    ]);
    let headline = format!(
        "fine-tuned {} on {} texts ({} classes): {} of {} parameters trained, {} steps{}; best \
         dev at step {}",
        report.encoder,
        report.data.train,
        labels.len(),
        report.trainable_parameters,
        report.total_parameters,
        report.steps,
        report.early(),
        summary.best.step
    );
    let saved = report.saved_line("checkpoints and metrics.jsonl");
    report.outcome(headline, saved)
}

/// Dev and test reports of the network `net` with its linear head.
fn evaluate_linear(net: &Network, tok: &SplitTokens, splits: &Splits) -> Result<(Report, Report)> {
    let threads = rayon::current_num_threads();
    let names = splits.labels.names();
    let dev_proba = lmfuse_finetune::predict_proba(net, &tok.1, threads);
    let test_proba = lmfuse_finetune::predict_proba(net, &tok.2, threads);
    Ok((
        lmfuse_metrics::evaluate(&splits.y_dev, &dev_proba, names)?,
        lmfuse_metrics::evaluate(&splits.y_test, &test_proba, names)?,
    ))
}

/// Saves a fine-tuned classifier and its encoder's files to `out`.
fn save_bundle(classifier: &Classifier, files: &[BundleFile], out: &Path) -> Result<()> {
    let (manifest, tensors, json) = classifier.to_bundle(crate::VERSION, &crate::now_rfc3339());
    lmfuse_bundle::save_with_files(out, manifest, &tensors, &json, files)
        .with_context(|| format!("cannot save the bundle to {}", out.display()))
}

impl FinetuneReport {
    /// The report of a run saved to `out` (checkpoints in `run_dir`) that fine-tuned `files`
    /// with `params` and ended with `summary`, scoring `dev` and `test`: a linear head, the
    /// encoder's parameters, no seconds yet.
    fn of_run(
        (out, run_dir): (&Path, &Path),
        (files, params): (&ModelFiles, FinetuneParams),
        splits: &Splits,
        summary: &FitSummary,
        (dev, test): (Report, Report),
    ) -> Self {
        FinetuneReport {
            bundle: out.display().to_string(),
            encoder: files.reference.clone(),
            head: "finetune",
            features: vec!["emb".into()],
            labels: splits.labels.names().to_vec(),
            data: splits.report.clone(),
            selected: Selected {
                param: "step",
                value: summary.best.step as f64,
            },
            trials: summary.evals.clone(),
            dev,
            test,
            finetune: params,
            shared_head: None,
            trainable_parameters: summary.trainable,
            total_parameters: summary.total,
            steps: summary.steps,
            stopped_early: summary.stopped_early,
            run_dir: run_dir.display().to_string(),
            seconds: BTreeMap::new(),
        }
    }

    /// Makes this the report of a shared-head run: the head's name, the features it reads,
    /// its hyperparameters, and parameter counts with the head's values (the unused linear
    /// head counts neither as trainable nor at all).
    fn set_shared(&mut self, features: Vec<String>, mlp: MlpParams, values: &SharedValues) {
        let lora = self.finetune.lora.is_some();
        self.head = if lora {
            "finetune-shared-lora"
        } else {
            "finetune-shared"
        };
        self.features = features;
        self.shared_head = Some(mlp);
        self.trainable_parameters += values.head;
        self.total_parameters = self.total_parameters - values.linear + values.head;
    }

    /// What a shared-head run did, in one line (`best_step`: the step of the best dev score).
    fn shared_headline(&self, tfidf_columns: usize, best_step: usize) -> String {
        format!(
            "fine-tuned {} end to end with the shared head over {tfidf_columns} TF-IDF columns \
             on {} texts ({} classes): {} steps{}; best dev at step {best_step}",
            self.encoder,
            self.data.train,
            self.labels.len(),
            self.steps,
            self.early(),
        )
    }

    /// Where the bundle went, in how long, and where the run folder keeps `kept`.
    fn saved_line(&self, kept: &str) -> String {
        format!(
            "saved bundle to {} ({:.1} s); {kept} in {}",
            self.bundle, self.seconds["total"], self.run_dir
        )
    }

    /// `" (stopped early)"` when early stopping ended the run, else nothing.
    fn early(&self) -> &'static str {
        if self.stopped_early {
            " (stopped early)"
        } else {
            ""
        }
    }

    fn outcome(self, headline: String, saved: String) -> Result<FinetuneOutcome> {
        Ok(FinetuneOutcome {
            report: serde_json::to_value(&self)?,
            headline,
            dev: self.dev,
            test: self.test,
            saved,
        })
    }
}

/// Reports fine-tuning's steps to `task` (as `what`) and its evaluations and resumes as
/// notes.
pub fn progress_observer<'a>(
    task: &'a dyn Task,
    what: &'a str,
    on: &'a dyn Observer,
    run_dir: &'a Path,
) -> impl FnMut(&Event) + 'a {
    named_progress(task, what, on, run_dir, ("dev accuracy", "macro-F1"))
}

/// The tuned encoder of `net` as the bundle will record it: its description, the encoder
/// loaded back from its files (written to a temporary folder) and the files.
pub(crate) fn load_tuned(
    net: &Network,
    base: &FinetuneBase,
) -> Result<(EncoderInfo, SentenceEncoder, Vec<BundleFile>)> {
    let (info, files) = finetuned_encoder(net, &base.files, base.fingerprint.clone())?;
    let dir = tempfile::tempdir().context("cannot make a temporary folder")?;
    let prefix = format!("{}/", lmfuse_bundle::ENCODER_DIR);
    for (name, bytes) in &files {
        let path = dir.path().join(name.strip_prefix(&prefix).unwrap_or(name));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).context("cannot write the tuned encoder")?;
        }
        std::fs::write(&path, bytes).context("cannot write the tuned encoder")?;
    }
    let model_files =
        lmfuse_encoder::ModelFiles::resolve(&lmfuse_encoder::ModelSpec::Dir(dir.path().into()))
            .context("cannot open the tuned encoder")?;
    let options = crate::model::recorded_options(&info);
    let encoder =
        SentenceEncoder::load(&model_files, &options).context("cannot load the tuned encoder")?;
    Ok((info, encoder, files))
}

/// [`progress_observer`] with the names of the two dev scores an evaluation records (its
/// accuracy and F1 slots).
pub(crate) fn named_progress<'a>(
    task: &'a dyn Task,
    what: &'a str,
    on: &'a dyn Observer,
    run_dir: &'a Path,
    (accuracy, f1): (&'a str, &'a str),
) -> impl FnMut(&Event) + 'a {
    move |e: &Event| match e {
        Event::Step { step, total, loss } => task.step(what, *step, *total, *loss),
        Event::Eval(r) => on.note(&format!(
            "epoch {} step {}: train loss {:.4}, {accuracy} {:.4}, {f1} {:.4}{}",
            r.epoch,
            r.step,
            r.train_loss,
            r.dev_accuracy,
            r.dev_macro_f1,
            if r.best { " (best)" } else { "" }
        )),
        Event::Resumed { step } => on.note(&format!(
            "resumed from {} after step {step}",
            run_dir.display()
        )),
    }
}

/// The card's `training` of a fine-tuned bundle (`method`: `finetune`, `finetune-shared`).
fn card_training(
    method: &str,
    (spec, params, files): (&FinetuneSpec, &FinetuneParams, &ModelFiles),
    splits: &Splits,
    best_step: usize,
) -> serde_json::Value {
    let (train, data) = (&splits.train, &splits.report);
    serde_json::json!({
        "method": method,
        "base_encoder": files.reference,
        "base_weights_sha256": files.weights_sha256,
        "train_sha256": lmfuse_train::data_hash(&train.texts, &train.labels),
        "n_train": train.texts.len(),
        "seed": spec.seed,
        "finetune": params,
        "best_step": best_step,
        "dev": data.dev_source,
        "test": data.test_source,
    })
}

/// The card's `metrics`: dev and test accuracy and macro-F1.
fn card_metrics(dev: &Report, test: &Report) -> serde_json::Value {
    serde_json::json!({
        "dev": {"accuracy": dev.accuracy, "macro_f1": dev.macro_f1},
        "test": {"accuracy": test.accuracy, "macro_f1": test.macro_f1},
    })
}

/// A file of a bundle: path relative to the bundle folder, bytes.
pub type BundleFile = (String, Vec<u8>);

/// The files a bundle holds beside its weights (a tuned encoder under
/// [`lmfuse_bundle::ENCODER_DIR`]), read so that saving the model again keeps them.
pub(crate) fn read_bundle_files(dir: &Path, names: &[String]) -> Result<Vec<BundleFile>> {
    names
        .iter()
        .map(|name| {
            std::fs::read(dir.join(name))
                .map(|bytes| (name.clone(), bytes))
                .with_context(|| format!("cannot read {name} of {}", dir.display()))
        })
        .collect()
}

/// The fine-tuned encoder's model folder as bundle files under
/// [`lmfuse_bundle::ENCODER_DIR`], and the sha256 of its weights (the bundle's fingerprint).
fn encoder_bundle_files(
    net: &Network,
    files: &lmfuse_encoder::ModelFiles,
) -> Result<(String, Vec<BundleFile>)> {
    let encoder_files = lmfuse_finetune::encoder_files(net, &files.dir)?;
    let weights_sha256 = hex::encode(sha2::Sha256::digest(&encoder_files[0].1));
    let bundle_files = encoder_files
        .into_iter()
        .map(|(name, bytes)| (format!("{}/{name}", lmfuse_bundle::ENCODER_DIR), bytes))
        .collect();
    Ok((weights_sha256, bundle_files))
}

/// `lmfuse finetune --contrastive`: contrastive encoder tuning, then logistic regression with
/// C chosen on dev, saved with the tuned encoder inside the bundle.
fn run_contrastive(
    spec: &FinetuneSpec,
    p: Prepared,
    out: &Path,
    started: Instant,
    on: &dyn Observer,
) -> Result<FinetuneOutcome> {
    let Prepared {
        splits,
        tok,
        mut net,
        files,
        base_fp,
    } = p;
    let cparams = spec.contrastive_params();
    let t = Instant::now();
    let losses = tune_contrastive(&mut net, &cparams, (&tok.0, &splits.y_train), on)?;
    let tune_seconds = t.elapsed().as_secs_f64();
    let pairs = lmfuse_finetune::contrastive_pairs(&splits.y_train, &cparams).len();
    let t = Instant::now();
    let hidden = files.config.hidden_size;
    let (selection, test_report) =
        contrastive_head(spec, &net, &tok, (base_fp.normalize, hidden), &splits)?;
    let head_seconds = t.elapsed().as_secs_f64();
    let (weights_sha256, bundle_files) = encoder_bundle_files(&net, &files)?;
    let fingerprint = tuned_fingerprint(weights_sha256, &base_fp, base_fp.normalize);
    let training = serde_json::json!({
        "method": "contrastive",
        "base_encoder": files.reference,
        "base_weights_sha256": files.weights_sha256,
        "train_sha256": lmfuse_train::data_hash(&splits.train.texts, &splits.train.labels),
        "n_train": splits.train.texts.len(),
        "seed": spec.seed,
        "contrastive": cparams,
        "pairs": pairs,
        "dev": splits.report.dev_source,
        "test": splits.report.test_source,
    });
    let classifier = tuned_encoder_classifier(
        (fingerprint, hidden),
        &splits.labels,
        &selection,
        training,
        card_metrics(&selection.dev, &test_report),
    );
    save_bundle(&classifier, &bundle_files, out)?;
    let tuned = selection.params.tuned();
    let seconds = serde_json::json!({
        "tune": tune_seconds,
        "head": head_seconds,
        "total": started.elapsed().as_secs_f64(),
    });
    let mut report = contrastive_report(out, &files, &splits, &selection, &test_report);
    report["contrastive"] = serde_json::to_value(&cparams)?;
    report["pairs"] = pairs.into();
    report["epoch_losses"] = serde_json::to_value(&losses)?;
    report["seconds"] = seconds;
    Ok(FinetuneOutcome {
        report,
        headline: format!(
            "contrastive tuning of {} on {} pairs from {} texts ({:.1} s), then {} with {} = {} \
             chosen on dev",
            files.reference,
            pairs,
            splits.train.texts.len(),
            tune_seconds,
            selection.params.name(),
            tuned.0,
            tuned.1
        ),
        dev: selection.dev,
        test: test_report,
        saved: format!("saved bundle to {}", out.display()),
    })
}

/// Contrastive tuning of `net` on the training texts `tok` of classes `y`, its steps shown
/// to `on`; the loss of each epoch.
fn tune_contrastive(
    net: &mut Network,
    cparams: &lmfuse_finetune::ContrastiveParams,
    (tok, y): (&[TokenizedText], &[usize]),
    on: &dyn Observer,
) -> Result<Vec<f32>> {
    let task = on.task("contrastive tuning", 0);
    let losses = lmfuse_finetune::fit_contrastive(net, cparams, tok, y, &mut |e| {
        if let Event::Step { step, total, loss } = e {
            task.step("contrastive tuning", *step, *total, *loss);
        }
    })?;
    task.finish();
    Ok(losses)
}

/// The report of a contrastive run saved to `out` (the caller adds the tuning's numbers).
fn contrastive_report(
    out: &Path,
    files: &ModelFiles,
    splits: &Splits,
    selection: &lmfuse_train::Selection,
    test: &Report,
) -> serde_json::Value {
    let tuned = selection.params.tuned();
    serde_json::json!({
        "bundle": out.display().to_string(),
        "encoder": files.reference,
        "head": format!("contrastive+{}", selection.params.name()),
        "features": ["emb"],
        "labels": splits.labels.names(),
        "data": splits.report,
        "selected": {"param": tuned.0, "value": tuned.1},
        "trials": selection.trials,
        "dev": selection.dev,
        "test": test,
    })
}

/// The head of a contrastive run: `spec.contrastive_head` fit on the tuned encoder's vectors
/// (`hidden` wide) of train (normalised when `normalize`), its setting chosen on dev; and its
/// test report.
fn contrastive_head(
    spec: &FinetuneSpec,
    net: &Network,
    tok: &SplitTokens,
    (normalize, hidden): (bool, usize),
    splits: &Splits,
) -> Result<(lmfuse_train::Selection, Report)> {
    let threads = rayon::current_num_threads();
    let features = |tok: &[TokenizedText]| -> Result<lmfuse_core::Features> {
        let v = lmfuse_finetune::embed(net, tok, normalize, threads);
        let m = lmfuse_core::DenseMatrix::new(tok.len(), hidden, v)?;
        Ok(lmfuse_core::Features::Dense(m))
    };
    let (x_train, x_dev, x_test) = (features(&tok.0)?, features(&tok.1)?, features(&tok.2)?);
    let options = lmfuse_train::TrainOptions {
        head: spec.contrastive_head,
        seed: spec.seed,
        ..lmfuse_train::TrainOptions::default()
    };
    let selection = lmfuse_train::fit_selecting(
        (&x_train, &splits.y_train),
        (&x_dev, &splits.y_dev),
        &splits.labels,
        &options.candidates(),
    )?;
    let test_proba = selection.model.predict_proba(&x_test)?;
    let test = lmfuse_metrics::evaluate(&splits.y_test, &test_proba, splits.labels.names())?;
    Ok((selection, test))
}

/// A classifier over the embeddings of an encoder tuned and saved inside its bundle (with
/// `fingerprint`, `dim` wide): the selected head, `training` and `metrics` on its card.
fn tuned_encoder_classifier(
    (fingerprint, dim): (EncoderFingerprint, usize),
    labels: &LabelSet,
    selection: &lmfuse_train::Selection,
    training: serde_json::Value,
    metrics: serde_json::Value,
) -> Classifier {
    let encoder = EncoderInfo {
        reference: lmfuse_bundle::ENCODER_DIR.into(),
        fingerprint,
        dim,
        in_bundle: true,
    };
    let text = TextFeaturizer::default();
    let head = HeadCard::new(selection.params, dim);
    Classifier {
        card: ModelCard::new(encoder, labels, &text, true, head, training, metrics),
        labels: labels.clone(),
        head: selection.model.clone(),
        text_features: text,
        oos: None,
    }
}

/// The shared head's hyperparameters for a run with `params` over an encoder whose pooled
/// vector (the head's dense tail) has `hidden` columns: `lmfuse train --head shared`'s
/// topology and dropout, weight decay `alpha`, the rate `params.head_lr`. Its epochs, batch
/// size and patience are fine-tuning's (the head sees the same batches; patience, which
/// `MlpParams` wants ≥ 1, counts dev evaluations there); no share of train is held out, as
/// dev stops the run.
pub fn shared_head_params(params: &FinetuneParams, alpha: f64, hidden: usize) -> MlpParams {
    let options = TrainOptions {
        head: HeadKind::Shared,
        seed: params.seed,
        dense_tail: hidden,
        ..TrainOptions::default()
    };
    let HeadParams::Mlp(p) = options.params_with(alpha) else {
        unreachable!("the shared head is an MLP")
    };
    MlpParams {
        // The f32 rate's shortest decimal (1e-3, not 0.0010000000474974513), which turns
        // back into the same f32 the head steps with.
        lr: params
            .head_lr
            .to_string()
            .parse()
            .unwrap_or(params.head_lr as f64),
        epochs: params.epochs,
        batch_size: params.batch_size,
        patience: params.patience.max(1),
        validation_fraction: 0.0,
        ..p
    }
}

/// The `shared` MLP head trained end to end with the encoder: the feature rows are the
/// TF-IDF blocks of the texts (fit on train) and the pooled vectors, put side by side by
/// [`Blocks::fuse`] exactly as `lmfuse eval` will put them for the saved classifier.
///
/// The head keeps the MLP's own optimiser (lazy AdamW over the TF-IDF projection, which has
/// 10⁵+ rows of which a batch touches a few hundred) rather than joining the encoder's
/// `ParamStore`: a dense AdamW pass over that projection every step would cost more than the
/// encoder's. Its topology, initialisation and update rule are `lmfuse train --head shared`'s;
/// its settings are not all the same: the rate is --head-lr and the batch fine-tuning's, alpha
/// is given (not chosen on dev), dev evaluations stop it, and the pooled vectors are not
/// L2-normalised (train's embeddings are, for models with a Normalize module).
struct SharedHead {
    trainer: MlpTrainer,
    train: Blocks,
    dev: Blocks,
    weights: BlockWeights,
    hidden: usize,
    best: Option<Mlp>,
}

impl SharedHead {
    /// The feature rows of `blocks` (TF-IDF only) with the pooled vectors `pooled` as `emb`.
    fn rows(
        blocks: Blocks,
        pooled: &[f32],
        hidden: usize,
        weights: &BlockWeights,
    ) -> Result<lmfuse_core::Features, HeadError> {
        let n = pooled.len() / hidden;
        let emb = lmfuse_core::DenseMatrix::new(n, hidden, pooled.to_vec())?;
        Ok(Blocks {
            emb: Some(emb),
            ..blocks
        }
        .fuse(weights)?)
    }
}

impl PooledHead for SharedHead {
    fn train_step(
        &mut self,
        rows: &[usize],
        pooled: &[f32],
        labels: &[usize],
    ) -> Result<(f32, Vec<f32>), HeadError> {
        let x = Self::rows(
            self.train.select_rows(rows),
            pooled,
            self.hidden,
            &self.weights,
        )?;
        let (loss, mut dpooled) = self.trainer.step(&x, labels)?;
        // The trainer's gradient is with respect to the fused columns, `emb weight × pooled`.
        let w = self.weights.emb;
        if w != 1.0 {
            dpooled.iter_mut().for_each(|g| *g *= w);
        }
        Ok((loss as f32, dpooled))
    }

    fn predict_dev(&mut self, pooled: &[f32]) -> Result<Vec<f32>, HeadError> {
        let x = Self::rows(self.dev.clone(), pooled, self.hidden, &self.weights)?;
        Ok(self.trainer.predict_proba(&x)?)
    }

    fn keep_best(&mut self) -> Result<(), HeadError> {
        self.best = Some(self.trainer.model()?);
        Ok(())
    }
}

/// Columns of the shared head's rows: the TF-IDF blocks of `text_features`, then `hidden`
/// pooled values.
fn shared_columns(text_features: &TextFeaturizer, hidden: usize) -> usize {
    text_features.blocks().map(|(_, t)| t.dim()).sum::<usize>() + hidden
}

/// The shared head (hyperparameters `mlp_params`) trained end to end with `net` (`params`)
/// on `train`'s rows: their TF-IDF blocks of `text_features` (fit on train), token ids and
/// classes. Dev evaluations stop the run and pick the best step; `net` ends holding that
/// step's encoder, and the head of that step is returned with the run's summary.
pub fn fit_shared(
    net: &mut Network,
    (params, mlp_params): (&FinetuneParams, &MlpParams),
    text_features: &TextFeaturizer,
    (b_train, tok_train, y_train): (Blocks, &[TokenizedText], &[usize]),
    (b_dev, tok_dev, y_dev): (Blocks, &[TokenizedText], &[usize]),
    run_dir: Option<&std::path::Path>,
    observer: &mut dyn FnMut(&Event),
) -> Result<(Mlp, FitSummary)> {
    let hidden = net.config().hidden_size;
    let mut head = SharedHead {
        // TF-IDF blocks make the rows sparse (`Blocks::fuse`).
        trainer: mlp_params.trainer(
            shared_columns(text_features, hidden),
            net.n_classes(),
            true,
        )?,
        train: b_train,
        dev: b_dev,
        weights: text_features.weights,
        hidden,
        best: None,
    };
    let summary = lmfuse_finetune::fit_with_head(
        net, &mut head, params, tok_train, y_train, tok_dev, y_dev, run_dir, observer,
    )?;
    let mlp = head
        .best
        .take()
        .context("fine-tuning kept no head (no dev evaluation improved)")?;
    Ok((mlp, summary))
}

/// Class probabilities of the shared head `mlp` for the texts `tok` whose TF-IDF blocks (of
/// `text_features`) are `blocks`: the rows `lmfuse eval` builds for the saved classifier.
pub fn shared_proba(
    net: &Network,
    mlp: &Mlp,
    tok: &[TokenizedText],
    blocks: Blocks,
    text_features: &TextFeaturizer,
) -> Result<Vec<f32>> {
    let hidden = net.config().hidden_size;
    let pooled = lmfuse_finetune::embed(net, tok, false, rayon::current_num_threads());
    let x = SharedHead::rows(blocks, &pooled, hidden, &text_features.weights)
        .map_err(|e| PipelineError::Invalid(e.to_string()))?;
    Ok(mlp.predict_proba(&x)?)
}

/// The fine-tuned `net` with its shared head `mlp` as a `shared`-head classifier over tfidf
/// and emb whose encoder is `net`'s (inside the bundle), and that encoder's bundle files.
pub fn shared_classifier(
    net: &Network,
    (files, base_fp): (&ModelFiles, EncoderFingerprint),
    labels: &LabelSet,
    (text_features, mlp, mlp_params): (TextFeaturizer, Mlp, MlpParams),
    training: serde_json::Value,
    metrics: serde_json::Value,
) -> Result<(Classifier, Vec<BundleFile>)> {
    let (encoder, bundle_files) = finetuned_encoder(net, files, base_fp)?;
    let card = ModelCard::new(
        encoder,
        labels,
        &text_features,
        true,
        HeadCard::new(
            HeadParams::Mlp(mlp_params),
            shared_columns(&text_features, files.config.hidden_size),
        ),
        training,
        metrics,
    );
    let classifier = Classifier {
        card,
        labels: labels.clone(),
        head: Head::Mlp(mlp),
        text_features,
        oos: None,
    };
    Ok((classifier, bundle_files))
}

/// The texts `t` as string slices.
pub fn text_refs(t: &[String]) -> Vec<&str> {
    t.iter().map(String::as_str).collect()
}

/// The shared head's TF-IDF, fit on `train`, and its blocks of train, dev and test.
pub(crate) fn shared_tfidf(
    (train, dev, test): (&[String], &[String], &[String]),
) -> Result<(TextFeaturizer, (Blocks, Blocks, Blocks))> {
    let text_features = TextFeaturizer::fit(&text_refs(train))?;
    let blocks = |t: &[String]| text_features.transform(&text_refs(t), None, &[]);
    let b = (blocks(train)?, blocks(dev)?, blocks(test)?);
    Ok((text_features, b))
}

/// `lmfuse finetune --shared-head`: the encoder trained end to end with the `shared` MLP
/// head over TF-IDF and its pooled output, saved as a `shared`-head classifier whose encoder
/// is the fine-tuned one inside the bundle.
fn run_shared(
    spec: &FinetuneSpec,
    p: Prepared,
    (out, run_dir): (&Path, &Path),
    started: Instant,
    on: &dyn Observer,
) -> Result<FinetuneOutcome> {
    let Prepared {
        splits,
        tok,
        mut net,
        files,
        base_fp,
    } = p;
    let params = spec.params();
    let t = Instant::now();
    let texts = (&splits.train.texts, &splits.dev.texts, &splits.test.texts);
    let (text_features, (b_train, b_dev, b_test)) = shared_tfidf((texts.0, texts.1, texts.2))?;
    let tfidf_seconds = t.elapsed().as_secs_f64();
    let hidden = files.config.hidden_size;
    let mlp_params = shared_head_params(&params, spec.shared_head_alpha, hidden);
    let task = on.task("fine-tuning", 0);
    let mut observer = progress_observer(task.as_ref(), "fine-tuning", on, run_dir);
    let t = Instant::now();
    let (mlp, summary) = fit_shared(
        &mut net,
        (&params, &mlp_params),
        &text_features,
        (b_train, &tok.0, &splits.y_train),
        (b_dev.clone(), &tok.1, &splits.y_dev),
        Some(run_dir),
        &mut observer,
    )
    .with_context(|| format!("fine-tuning failed (run folder {})", run_dir.display()))?;
    task.finish();
    let fit_seconds = t.elapsed().as_secs_f64();
    // Dev and test as `eval` will see them: TF-IDF and the fine-tuned encoder's vectors.
    let proba = |tok: &[TokenizedText], b| shared_proba(&net, &mlp, tok, b, &text_features);
    let names = splits.labels.names();
    let dev_report = lmfuse_metrics::evaluate(&splits.y_dev, &proba(&tok.1, b_dev)?, names)?;
    let test_report = lmfuse_metrics::evaluate(&splits.y_test, &proba(&tok.2, b_test)?, names)?;
    let values = SharedValues::of(&net, &mlp, &text_features);
    let training = card_training(
        "finetune-shared",
        (spec, &params, &files),
        &splits,
        summary.best.step,
    );
    let (classifier, bundle_files) = shared_classifier(
        &net,
        (&files, base_fp),
        &splits.labels,
        (text_features, mlp, mlp_params),
        training,
        card_metrics(&dev_report, &test_report),
    )?;
    save_bundle(&classifier, &bundle_files, out)?;
    let run = (&files, params);
    let mut report = FinetuneReport::of_run(
        (out, run_dir),
        run,
        &splits,
        &summary,
        (dev_report, test_report),
    );
    report.set_shared(classifier.card.features.clone(), mlp_params, &values);
    report.seconds = BTreeMap::from([
        ("tfidf", tfidf_seconds),
        ("fit", fit_seconds),
        ("total", started.elapsed().as_secs_f64()),
    ]);
    let headline = report.shared_headline(values.tfidf_columns, summary.best.step);
    let saved = report.saved_line("metrics.jsonl");
    report.outcome(headline, saved)
}

/// Sizes of a shared-head run: the head's values, the unused linear head's, and the TF-IDF
/// columns the head reads.
struct SharedValues {
    head: usize,
    linear: usize,
    tfidf_columns: usize,
}

impl SharedValues {
    fn of(net: &Network, mlp: &Mlp, text_features: &TextFeaturizer) -> Self {
        let (w, b) = net.head_tensors();
        SharedValues {
            head: mlp.to_tensors().values().map(|t| t.len()).sum(),
            linear: w.len() + b.len(),
            tfidf_columns: shared_columns(text_features, 0),
        }
    }
}
