//! Fine-tuning flags shared by `ner train --finetune` and `relation train --finetune`.

use clap::Args;
use lmfuse_finetune::FinetuneParams;
use std::path::PathBuf;

/// How the encoder is fine-tuned for tagging or relations.
#[derive(Args, Debug, Clone)]
pub struct TuneFlags {
    /// Fine-tuning: passes over the training data (at most).
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Fine-tuning: sentences or examples per batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Fine-tuning: peak learning rate of the encoder.
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f32,
    /// Fine-tuning: peak learning rate of the layer on top (and the CRF transitions).
    #[arg(long, default_value_t = 1e-3)]
    pub head_lr: f32,
    /// Fine-tuning: dropout rate.
    #[arg(long, default_value_t = 0.1)]
    pub dropout: f32,
    /// Fine-tuning: stop after N epochs without a better dev score (0: never).
    #[arg(long, default_value_t = 2)]
    pub patience: usize,
    /// Seed of fine-tuning (layer initialisation, batch order, dropout) and of a held-out dev
    /// split.
    #[arg(long, default_value_t = 13)]
    pub seed: u64,
    /// Fine-tuning: folder for the metrics log (metrics.jsonl) and the checkpoints.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Fine-tuning: continue a killed run from the checkpoints in --run-dir (same options).
    #[arg(long, requires = "run_dir")]
    pub resume: bool,
}

impl TuneFlags {
    /// The trainer's parameters.
    pub fn params(&self) -> FinetuneParams {
        FinetuneParams {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            head_lr: self.head_lr,
            dropout: self.dropout,
            patience: self.patience,
            seed: self.seed,
            ..FinetuneParams::default()
        }
    }
}
