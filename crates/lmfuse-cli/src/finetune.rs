//! `lmfuse finetune`: encoder and head trained together; the bundle holds the fine-tuned
//! encoder, so `eval`, `predict`, `compare` and `serve` use it like any other.

use crate::classify::{load_splits, print_details, print_reports, DataArgs};
use crate::progress::Bars;
use crate::ModelArgs;
use clap::{Args, ValueEnum};
use lmfuse_finetune::{LoraTarget, Metric};
use lmfuse_pipeline::finetune::FinetuneSpec;
use std::path::PathBuf;

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
    /// End to end with the `shared` head of `lmfuse train --head shared --features tfidf,emb`:
    /// the TF-IDF block (word and character n-grams, fit on --train) and the pooled encoder
    /// output (unnormalised) are each projected to 128 units into one shared ReLU hidden layer
    /// of 256 units, then the classes; the encoder and that head train together (the head with AdamW at --head-lr,
    /// decay --shared-head-alpha). The bundle is a `shared`-head classifier over tfidf and
    /// emb whose encoder, inside it, is the fine-tuned one. Not with --contrastive, --resume,
    /// --grad-accum > 1, --fgm or --pgd.
    #[arg(long)]
    shared_head: bool,
    /// --shared-head: decoupled weight decay of the head's weight matrices (each step
    /// multiplies them by 1 - head_lr · alpha; `lmfuse train --head shared`'s `alpha`). The
    /// default, 3 at --head-lr 1e-3, decays as much a step as `train`'s middle grid value (10
    /// at its rate 3e-4).
    #[arg(long, default_value_t = 3.0, requires = "shared_head")]
    shared_head_alpha: f64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl LoraTargetArg {
    fn target(self) -> LoraTarget {
        match self {
            LoraTargetArg::Query => LoraTarget::Query,
            LoraTargetArg::Key => LoraTarget::Key,
            LoraTargetArg::Value => LoraTarget::Value,
        }
    }
}

impl FinetuneArgs {
    /// The pipeline's spec.
    fn spec(&self) -> FinetuneSpec {
        FinetuneSpec {
            seed: self.seed,
            run_dir: self.run_dir.clone(),
            resume: self.resume,
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
            fgm: self.fgm,
            pgd: self.pgd,
            pgd_alpha: self.pgd_alpha,
            pgd_steps: self.pgd_steps,
            lora: self.lora,
            lora_rank: self.lora_rank,
            lora_alpha: self.lora_alpha,
            lora_dropout: self.lora_dropout,
            lora_targets: self.lora_targets.iter().map(|t| t.target()).collect(),
            contrastive: self.contrastive,
            pair_iterations: self.pair_iterations,
            max_pairs: self.max_pairs,
            contrastive_lr: self.contrastive_lr,
            contrastive_epochs: self.contrastive_epochs,
            contrastive_head: self.contrastive_head.kind(),
            shared_head: self.shared_head,
            shared_head_alpha: self.shared_head_alpha,
        }
    }
}

/// Runs `lmfuse finetune`.
pub fn run(args: &FinetuneArgs, quiet: bool) -> anyhow::Result<()> {
    let spec = args.spec();
    spec.check()?;
    let splits = load_splits(
        &args.train,
        args.dev.as_deref(),
        args.test.as_deref(),
        &args.data,
        args.seed,
    )?;
    let bars = Bars::new(quiet || args.json);
    let outcome =
        lmfuse_pipeline::finetune::finetune(splits, &spec, &args.model.choice(), &args.out, &bars)?;
    if args.json {
        outln!("{}", serde_json::to_string(&outcome.report)?)?;
    } else {
        eprintln!("{}", outcome.headline);
        print_reports(&[("dev", &outcome.dev), ("test", &outcome.test)]);
        print_details("test", &outcome.test);
        eprintln!("{}", outcome.saved);
    }
    Ok(())
}
