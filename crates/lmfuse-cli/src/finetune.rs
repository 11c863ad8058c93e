//! `lmfuse finetune`: encoder and head trained together; the bundle holds the fine-tuned
//! encoder, so `eval`, `predict`, `compare` and `serve` use it like any other.

use crate::classify::{
    load_splits, now_rfc3339, print_details, print_reports, DataArgs, DataReport, Splits,
};
use crate::ModelArgs;
use anyhow::Context;
use clap::{Args, ValueEnum};
use lmfuse_classic::{Head, HeadParams, LogisticRegression, LogisticRegressionParams, ProbaHead};
use lmfuse_core::{EncoderFingerprint, LabelSet, SeededRng};
use lmfuse_encoder::{LoadOptions, ModelFiles, SentenceEncoder, TokenizedText};
use lmfuse_finetune::{Event, FinetuneParams, LoraParams, LoraTarget, Metric, Network};
use lmfuse_metrics::Report;
use lmfuse_train::{Classifier, EncoderInfo, HeadCard, ModelCard, TextFeaturizer};
use serde::Serialize;
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Projections `--lora-targets` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoraTargetArg {
    /// Query projection.
    Query,
    /// Key projection.
    Key,
    /// Value projection.
    Value,
}

/// Metrics `--metric` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricArg {
    /// Accuracy.
    Accuracy,
    /// Macro-averaged F1.
    MacroF1,
}

/// Arguments of `lmfuse finetune`.
#[derive(Args, Debug)]
pub struct FinetuneArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Training data.
    #[arg(long)]
    train: PathBuf,
    /// Dev data for early stopping (default: a stratified 10% of --train).
    #[arg(long)]
    dev: Option<PathBuf>,
    /// Test data (default: a stratified 10% of --train).
    #[arg(long)]
    test: Option<PathBuf>,
    /// Seed of the splits, the head's initialisation, batch order and dropout.
    #[arg(long, default_value_t = 13)]
    seed: u64,
    /// Bundle folder to write.
    #[arg(long)]
    out: PathBuf,
    /// Folder for checkpoints and the metrics log (default: <out>.run).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Continue the run in --run-dir from its last checkpoint (same options required).
    #[arg(long)]
    resume: bool,
    /// Passes over the training data (at most; early stopping may end sooner).
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Texts per batch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Batches per optimiser step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Peak learning rate of the encoder.
    #[arg(long, default_value_t = 3e-5)]
    lr: f32,
    /// Peak learning rate of the head.
    #[arg(long, default_value_t = 1e-3)]
    head_lr: f32,
    /// Layer-wise learning-rate decay (1: none; 0.9: each layer down gets 0.9× the one above).
    #[arg(long, default_value_t = 1.0)]
    layer_lr_decay: f32,
    /// AdamW's decoupled weight decay (not on biases and LayerNorm).
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f32,
    /// Share of the steps spent warming the learning rate up (then linear decay to 0).
    #[arg(long, default_value_t = 0.1)]
    warmup: f32,
    /// Dropout rate.
    #[arg(long, default_value_t = 0.1)]
    dropout: f32,
    /// Clip the global gradient norm (0: off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f32,
    /// Freeze the embedding tables.
    #[arg(long)]
    freeze_embeddings: bool,
    /// Freeze the lowest N transformer layers.
    #[arg(long, default_value_t = 0)]
    freeze_layers: usize,
    /// Evaluate on dev every N optimiser steps (default: each epoch).
    #[arg(long)]
    eval_every: Option<usize>,
    /// Stop after N evaluations without improvement (0: never).
    #[arg(long, default_value_t = 2)]
    patience: usize,
    /// Dev metric for early stopping and the best weights.
    #[arg(long, value_enum, default_value = "accuracy")]
    metric: MetricArg,
    /// FGM adversarial training with this ε on the word embeddings.
    #[arg(long)]
    fgm: Option<f32>,
    /// PGD adversarial training: ε (radius), with --pgd-alpha and --pgd-steps.
    #[arg(long)]
    pgd: Option<f32>,
    /// PGD step size.
    #[arg(long, default_value_t = 0.3)]
    pgd_alpha: f32,
    /// PGD ascent steps.
    #[arg(long, default_value_t = 3)]
    pgd_steps: usize,
    /// Train LoRA adapters (and the head) instead of the whole encoder.
    #[arg(long)]
    lora: bool,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    lora_rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 16.0)]
    lora_alpha: f32,
    /// LoRA dropout.
    #[arg(long, default_value_t = 0.1)]
    lora_dropout: f32,
    /// Projections with adapters.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "query,value")]
    lora_targets: Vec<LoraTargetArg>,
    /// Few-shot contrastive mode (the SetFit recipe): tune the encoder on same/other-class
    /// pairs with a cosine-similarity loss, then fit logistic regression (C chosen on dev) on
    /// its embeddings (or --contrastive-head).
    #[arg(long)]
    contrastive: bool,
    /// Contrastive: rounds of pair sampling (one same-class and one other-class pair per
    /// example per round).
    #[arg(long, default_value_t = 20)]
    pair_iterations: usize,
    /// Contrastive: at most this many pairs.
    #[arg(long, default_value_t = 20_000)]
    max_pairs: usize,
    /// Contrastive: learning rate of the encoder.
    #[arg(long, default_value_t = 2e-5)]
    contrastive_lr: f32,
    /// Contrastive: passes over the pairs.
    #[arg(long, default_value_t = 1)]
    contrastive_epochs: usize,
    /// Contrastive: the classical head fit on the tuned embeddings (hyperparameter on dev).
    #[arg(long, value_enum, default_value = "logreg")]
    contrastive_head: crate::classify::HeadArg,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl FinetuneArgs {
    fn contrastive_params(&self) -> lmfuse_finetune::ContrastiveParams {
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

    fn params(&self) -> FinetuneParams {
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
            metric: match self.metric {
                MetricArg::Accuracy => Metric::Accuracy,
                MetricArg::MacroF1 => Metric::MacroF1,
            },
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
                targets: self
                    .lora_targets
                    .iter()
                    .map(|t| match t {
                        LoraTargetArg::Query => LoraTarget::Query,
                        LoraTargetArg::Key => LoraTarget::Key,
                        LoraTargetArg::Value => LoraTarget::Value,
                    })
                    .collect(),
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
pub(crate) struct FinetuneBase {
    pub files: ModelFiles,
    pub fingerprint: EncoderFingerprint,
    encoder: SentenceEncoder,
}

impl FinetuneBase {
    /// Loads the encoder `model` names, with at most 128 tokens a text unless
    /// `--max-seq-length` says otherwise.
    pub(crate) fn load(model: &ModelArgs) -> anyhow::Result<Self> {
        let files = model.resolve()?;
        let mut options: LoadOptions = model.load_options();
        options.max_seq_length = Some(
            options
                .max_seq_length
                .unwrap_or(DEFAULT_MAX_LENGTH)
                .min(files.config.max_position_embeddings),
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
    pub(crate) fn tokenize(&self, texts: &[String]) -> anyhow::Result<Vec<TokenizedText>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        Ok(self.encoder.tokenize(&refs)?)
    }

    /// A network with the base encoder's weights and a new head for `n_classes`, drawn with
    /// `seed`.
    pub(crate) fn network(&self, n_classes: usize, seed: u64) -> anyhow::Result<Network> {
        Ok(Network::new(
            &self.files.config,
            self.encoder.model().export(),
            self.fingerprint.pooling,
            n_classes,
            SeededRng::new(seed).next_u64(),
        )?)
    }
}

/// The fine-tuned `net` as a classifier over its own encoder, and that encoder's files for the
/// bundle: the linear head becomes a softmax-linear model over the (unnormalised) pooled
/// vectors.
pub(crate) fn finetuned_classifier(
    net: &Network,
    files: &ModelFiles,
    base_fp: EncoderFingerprint,
    labels: &LabelSet,
    training: serde_json::Value,
    metrics: serde_json::Value,
) -> anyhow::Result<(Classifier, Vec<BundleFile>)> {
    let (weights_sha256, bundle_files) = encoder_bundle_files(net, files)?;
    let (head_w, head_b) = net.head_tensors();
    let hidden = files.config.hidden_size;
    let head =
        LogisticRegression::from_parts(hidden, labels.len(), head_w.to_vec(), head_b.to_vec())?;
    let fingerprint = EncoderFingerprint {
        weights_sha256,
        pooling: base_fp.pooling,
        normalize: false,
        max_seq_length: base_fp.max_seq_length,
    };
    let card = ModelCard::new(
        EncoderInfo {
            reference: lmfuse_bundle::ENCODER_DIR.into(),
            fingerprint,
            dim: hidden,
            in_bundle: true,
        },
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

/// Runs `lmfuse finetune`.
pub fn run(args: &FinetuneArgs, quiet: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let quiet = quiet || args.json;
    anyhow::ensure!(
        args.data.feature_cols.is_empty(),
        "fine-tuning reads texts only: --feature-cols is for `lmfuse train --features ...,tab`"
    );
    let params = args.params();
    params.check()?;
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

    let base = FinetuneBase::load(&args.model)?;
    let (tok_train, tok_dev, tok_test) = (
        base.tokenize(&train.texts)?,
        base.tokenize(&dev.texts)?,
        base.tokenize(&test.texts)?,
    );
    let mut net = base.network(labels.len(), args.seed)?;
    let FinetuneBase {
        files,
        fingerprint: base_fp,
        ..
    } = base;
    // Adapters first, so that --freeze-layers also freezes the adapters of those layers.
    if let Some(l) = &params.lora {
        net.add_lora(l, args.seed)?;
    }
    net.freeze(params.freeze_embeddings, params.freeze_layers);

    if args.contrastive {
        return run_contrastive(
            args,
            net,
            &files,
            base_fp,
            started,
            quiet,
            (train, dev, test),
            (tok_train, tok_dev, tok_test),
            (y_train, y_dev, y_test),
            labels,
            data_report,
        );
    }
    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.run", args.out.display())));
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let bar = crate::progress::bar(0, "fine-tuning", quiet);
    let mut observer = |e: &Event| match e {
        Event::Step { step, total, loss } => {
            bar.set_length(*total as u64);
            bar.set_position(*step as u64);
            bar.set_message(format!("fine-tuning, loss {loss:.4}"));
        }
        Event::Eval(r) => {
            if !quiet {
                bar.suspend(|| {
                    eprintln!(
                        "epoch {} step {}: train loss {:.4}, dev accuracy {:.4}, macro-F1 {:.4}{}",
                        r.epoch,
                        r.step,
                        r.train_loss,
                        r.dev_accuracy,
                        r.dev_macro_f1,
                        if r.best { " (best)" } else { "" }
                    )
                });
            }
        }
        Event::Resumed { step } => {
            if !quiet {
                bar.suspend(|| eprintln!("resumed from {} after step {step}", run_dir.display()));
            }
        }
    };
    let t = Instant::now();
    let summary = lmfuse_finetune::fit(
        &mut net,
        &params,
        &tok_train,
        &y_train,
        &tok_dev,
        &y_dev,
        Some(&run_dir),
        args.resume,
        &mut observer,
    )
    .with_context(|| format!("fine-tuning failed (run folder {})", run_dir.display()))?;
    bar.finish_and_clear();
    let fit_seconds = t.elapsed().as_secs_f64();

    let threads = rayon::current_num_threads();
    let dev_proba = lmfuse_finetune::predict_proba(&net, &tok_dev, threads);
    let test_proba = lmfuse_finetune::predict_proba(&net, &tok_test, threads);
    let dev_report = lmfuse_metrics::evaluate(&y_dev, &dev_proba, labels.names())?;
    let test_report = lmfuse_metrics::evaluate(&y_test, &test_proba, labels.names())?;

    // The bundle: the fine-tuned encoder's model folder inside it, and the linear head.
    let (classifier, bundle_files) = finetuned_classifier(
        &net,
        &files,
        base_fp,
        &labels,
        serde_json::json!({
            "method": "finetune",
            "base_encoder": files.reference,
            "base_weights_sha256": files.weights_sha256,
            "train_sha256": lmfuse_train::data_hash(&train.texts, &train.labels),
            "n_train": train.texts.len(),
            "seed": args.seed,
            "finetune": params,
            "best_step": summary.best.step,
            "dev": data_report.dev_source,
            "test": data_report.test_source,
        }),
        serde_json::json!({
            "dev": {"accuracy": dev_report.accuracy, "macro_f1": dev_report.macro_f1},
            "test": {"accuracy": test_report.accuracy, "macro_f1": test_report.macro_f1},
        }),
    )?;
    let (manifest, tensors, json) = classifier.to_bundle(env!("CARGO_PKG_VERSION"), &now_rfc3339());
    lmfuse_bundle::save_with_files(&args.out, manifest, &tensors, &json, &bundle_files)
        .with_context(|| format!("cannot save the bundle to {}", args.out.display()))?;

    let report = FinetuneReport {
        bundle: args.out.display().to_string(),
        encoder: files.reference.clone(),
        head: if params.lora.is_some() {
            "finetune-lora"
        } else {
            "finetune"
        },
        features: vec!["emb".into()],
        labels: labels.names().to_vec(),
        data: data_report,
        selected: Selected {
            param: "step",
            value: summary.best.step as f64,
        },
        trials: summary.evals.clone(),
        dev: dev_report,
        test: test_report,
        finetune: params,
        trainable_parameters: summary.trainable,
        total_parameters: summary.total,
        steps: summary.steps,
        stopped_early: summary.stopped_early,
        run_dir: run_dir.display().to_string(),
        seconds: BTreeMap::from([
            ("fit", fit_seconds),
            ("total", started.elapsed().as_secs_f64()),
        ]),
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        eprintln!(
            "fine-tuned {} on {} texts ({} classes): {} of {} parameters trained, {} steps{}; best dev at step {}",
            report.encoder,
            report.data.train,
            labels.len(),
            report.trainable_parameters,
            report.total_parameters,
            report.steps,
            if report.stopped_early { " (stopped early)" } else { "" },
            summary.best.step
        );
        print_reports(&[("dev", &report.dev), ("test", &report.test)]);
        print_details("test", &report.test);
        eprintln!(
            "saved bundle to {} ({:.1} s); checkpoints and metrics.jsonl in {}",
            report.bundle, report.seconds["total"], report.run_dir
        );
    }
    Ok(())
}

/// A file of a bundle: path relative to the bundle folder, bytes.
pub(crate) type BundleFile = (String, Vec<u8>);

/// The fine-tuned encoder's model folder as bundle files under
/// [`lmfuse_bundle::ENCODER_DIR`], and the sha256 of its weights (the bundle's fingerprint).
fn encoder_bundle_files(
    net: &Network,
    files: &lmfuse_encoder::ModelFiles,
) -> anyhow::Result<(String, Vec<BundleFile>)> {
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
#[allow(clippy::too_many_arguments)]
fn run_contrastive(
    args: &FinetuneArgs,
    mut net: Network,
    files: &lmfuse_encoder::ModelFiles,
    base_fp: EncoderFingerprint,
    started: Instant,
    quiet: bool,
    (train, _dev, _test): (
        lmfuse_data::LabelledTexts,
        lmfuse_data::LabelledTexts,
        lmfuse_data::LabelledTexts,
    ),
    (tok_train, tok_dev, tok_test): (Vec<TokenizedText>, Vec<TokenizedText>, Vec<TokenizedText>),
    (y_train, y_dev, y_test): (Vec<usize>, Vec<usize>, Vec<usize>),
    labels: lmfuse_core::LabelSet,
    data_report: DataReport,
) -> anyhow::Result<()> {
    anyhow::ensure!(!args.lora && args.fgm.is_none() && args.pgd.is_none() && !args.resume, "--contrastive trains the whole encoder in one short run: it does not combine with --lora, --fgm, --pgd or --resume");
    let cparams = args.contrastive_params();
    let bar = crate::progress::bar(0, "contrastive tuning", quiet);
    let t = Instant::now();
    let losses =
        lmfuse_finetune::fit_contrastive(&mut net, &cparams, &tok_train, &y_train, &mut |e| {
            if let Event::Step { step, total, loss } = e {
                bar.set_length(*total as u64);
                bar.set_position(*step as u64);
                bar.set_message(format!("contrastive tuning, loss {loss:.4}"));
            }
        })?;
    bar.finish_and_clear();
    let tune_seconds = t.elapsed().as_secs_f64();
    let pairs = lmfuse_finetune::contrastive_pairs(&y_train, &cparams).len();

    let t = Instant::now();
    let threads = rayon::current_num_threads();
    let hidden = files.config.hidden_size;
    let features = |tok: &[TokenizedText]| -> anyhow::Result<lmfuse_core::Features> {
        let v = lmfuse_finetune::embed(&net, tok, base_fp.normalize, threads);
        Ok(lmfuse_core::Features::Dense(lmfuse_core::DenseMatrix::new(
            tok.len(),
            hidden,
            v,
        )?))
    };
    let (x_train, x_dev, x_test) = (
        features(&tok_train)?,
        features(&tok_dev)?,
        features(&tok_test)?,
    );
    let options = lmfuse_train::TrainOptions {
        head: args.contrastive_head.kind(),
        seed: args.seed,
        ..lmfuse_train::TrainOptions::default()
    };
    let selection = lmfuse_train::fit_selecting(
        (&x_train, &y_train),
        (&x_dev, &y_dev),
        &labels,
        &options.candidates(),
    )?;
    let test_proba = selection.model.predict_proba(&x_test)?;
    let test_report = lmfuse_metrics::evaluate(&y_test, &test_proba, labels.names())?;
    let head_seconds = t.elapsed().as_secs_f64();

    let (weights_sha256, bundle_files) = encoder_bundle_files(&net, files)?;
    let tuned = selection.params.tuned();
    let card = ModelCard::new(
        EncoderInfo {
            reference: lmfuse_bundle::ENCODER_DIR.into(),
            fingerprint: EncoderFingerprint {
                weights_sha256,
                ..base_fp
            },
            dim: hidden,
            in_bundle: true,
        },
        &labels,
        &TextFeaturizer::default(),
        true,
        HeadCard::new(selection.params, hidden),
        serde_json::json!({
            "method": "contrastive",
            "base_encoder": files.reference,
            "base_weights_sha256": files.weights_sha256,
            "train_sha256": lmfuse_train::data_hash(&train.texts, &train.labels),
            "n_train": train.texts.len(),
            "seed": args.seed,
            "contrastive": cparams,
            "pairs": pairs,
            "dev": data_report.dev_source,
            "test": data_report.test_source,
        }),
        serde_json::json!({
            "dev": {"accuracy": selection.dev.accuracy, "macro_f1": selection.dev.macro_f1},
            "test": {"accuracy": test_report.accuracy, "macro_f1": test_report.macro_f1},
        }),
    );
    let classifier = Classifier {
        card,
        labels: labels.clone(),
        head: selection.model,
        text_features: TextFeaturizer::default(),
        oos: None,
    };
    let (manifest, tensors, json) = classifier.to_bundle(env!("CARGO_PKG_VERSION"), &now_rfc3339());
    lmfuse_bundle::save_with_files(&args.out, manifest, &tensors, &json, &bundle_files)
        .with_context(|| format!("cannot save the bundle to {}", args.out.display()))?;
    let report = serde_json::json!({
        "bundle": args.out.display().to_string(),
        "encoder": files.reference,
        "head": format!("contrastive+{}", selection.params.name()),
        "features": ["emb"],
        "labels": labels.names(),
        "data": data_report,
        "selected": {"param": tuned.0, "value": tuned.1},
        "trials": selection.trials,
        "dev": selection.dev,
        "test": test_report,
        "contrastive": cparams,
        "pairs": pairs,
        "epoch_losses": losses,
        "seconds": {"tune": tune_seconds, "head": head_seconds, "total": started.elapsed().as_secs_f64()},
    });
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        eprintln!(
            "contrastive tuning of {} on {} pairs from {} texts ({:.1} s), then {} with {} = {} chosen on dev",
            files.reference, pairs, train.texts.len(), tune_seconds, selection.params.name(), tuned.0, tuned.1
        );
        print_reports(&[("dev", &selection.dev), ("test", &test_report)]);
        print_details("test", &test_report);
        eprintln!("saved bundle to {}", args.out.display());
    }
    Ok(())
}
