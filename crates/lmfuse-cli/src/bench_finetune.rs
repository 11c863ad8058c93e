//! `lmfuse bench train-step`: the time of one fine-tuning step (forward, backward, AdamW) on a
//! fixed synthetic batch, for the side-by-side comparison with PyTorch in
//! `bench/train_step.sh`.

use crate::ModelArgs;
use anyhow::Context;
use clap::Args;
use lmfuse_core::SeededRng;
use lmfuse_encoder::{ModelFiles, SentenceEncoder, Span};
use lmfuse_finetune::{AdamW, Batch, Dropout, Network};
use serde::Serialize;
use std::time::Instant;

/// Arguments of `lmfuse bench train-step`.
#[derive(Args, Debug)]
pub struct BenchTrainStepArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Texts per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Tokens per text (special tokens included).
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    /// Timed steps (after 2 untimed warm-up steps); the median is reported.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Classes of the head.
    #[arg(long, default_value_t = 2)]
    classes: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct StepReport {
    engine: &'static str,
    model: String,
    threads: usize,
    batch: usize,
    tokens: usize,
    steps: usize,
    /// Median seconds of each phase and of the whole step.
    forward: f64,
    backward: f64,
    optimizer: f64,
    step: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds of each timed step, by phase and for the whole step.
#[derive(Default)]
struct PhaseTimes {
    forward: Vec<f64>,
    backward: Vec<f64>,
    optimizer: Vec<f64>,
    step: Vec<f64>,
}

/// Runs `lmfuse bench train-step`.
pub fn run(args: &BenchTrainStepArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.batch > 0 && args.tokens >= 2 && args.steps > 0,
        "batch, tokens and steps must be positive"
    );
    let files = args.model.resolve()?;
    let mut net = load_network(args, &files)?;
    let mut rng = SeededRng::new(7);
    let batch = synthetic_batch(args.batch, args.tokens, files.config.vocab_size, &mut rng);
    let threads = rayon::current_num_threads();
    let mut times = time_steps(args, &mut net, &batch, &mut rng, threads);
    let report = StepReport {
        engine: "lmfuse",
        model: files.reference.clone(),
        threads,
        batch: args.batch,
        tokens: args.tokens,
        steps: args.steps,
        forward: median(&mut times.forward),
        backward: median(&mut times.backward),
        optimizer: median(&mut times.optimizer),
        step: median(&mut times.step),
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        eprintln!(
            "{}: batch {} × {} tokens, {} threads: step {:.3} s (forward {:.3}, backward {:.3}, AdamW {:.3}), median of {}",
            report.model, report.batch, report.tokens, report.threads, report.step, report.forward, report.backward, report.optimizer, report.steps
        );
    }
    Ok(())
}

/// Loads the encoder of `files` and builds a mean-pooled network with a `--classes` head
/// on its weights; fails when `--tokens` exceeds the model's positions.
fn load_network(args: &BenchTrainStepArgs, files: &ModelFiles) -> anyhow::Result<Network> {
    let encoder = SentenceEncoder::load(files, &args.model.load_options())
        .context("cannot load the encoder")?;
    let config = &files.config;
    anyhow::ensure!(
        args.tokens <= config.max_tokens(),
        "--tokens exceeds the model's positions"
    );
    let net = Network::new(
        config,
        encoder.model().export(),
        lmfuse_core::Pooling::Mean,
        args.classes,
        1,
    )?;
    Ok(net)
}

/// A batch of `texts` texts of `tokens` tokens each: ids drawn from `rng` within the
/// vocabulary, between [CLS] and [SEP] as BERT's tokenizer writes them.
fn synthetic_batch(texts: usize, tokens: usize, vocab_size: usize, rng: &mut SeededRng) -> Batch {
    let mut batch = Batch::default();
    for _ in 0..texts {
        batch.spans.push(Span {
            start: batch.tokens.len(),
            len: tokens,
        });
        batch.tokens.push(101);
        for _ in 0..tokens - 2 {
            batch
                .tokens
                .push(1000 + rng.below(vocab_size - 1000) as u32);
        }
        batch.tokens.push(102);
    }
    batch.types = vec![0; batch.tokens.len()];
    batch
}

/// Runs 2 untimed warm-up steps and `--steps` timed ones (forward with dropout, backward,
/// AdamW) on `batch`, and returns the seconds of each timed phase.
fn time_steps(
    args: &BenchTrainStepArgs,
    net: &mut Network,
    batch: &Batch,
    rng: &mut SeededRng,
    threads: usize,
) -> PhaseTimes {
    let labels: Vec<usize> = (0..args.batch).map(|i| i % args.classes).collect();
    let mut opt = AdamW::new(net.params.values.len());
    let mut grads = vec![0.0f32; net.params.values.len()];
    let mut times = PhaseTimes::default();
    for i in 0..args.steps + 2 {
        let t0 = Instant::now();
        let fwd = net.forward(batch, Some(Dropout { rate: 0.1, rng }), threads);
        let t1 = Instant::now();
        let dlogits = loss_gradient(&fwd.logits, &labels, args.classes);
        grads.iter_mut().for_each(|g| *g = 0.0);
        net.backward(batch, &fwd, &dlogits, &mut grads, threads);
        drop(fwd);
        let t2 = Instant::now();
        opt.step(&mut net.params, &grads, |_| 2e-5, 0.01);
        let t3 = Instant::now();
        if i >= 2 {
            times.forward.push((t1 - t0).as_secs_f64());
            times.backward.push((t2 - t1).as_secs_f64());
            times.optimizer.push((t3 - t2).as_secs_f64());
            times.step.push((t3 - t0).as_secs_f64());
        }
    }
    times
}

/// Gradient of the mean cross-entropy loss over the rows of `logits` (`classes` a row)
/// with respect to the logits, given each row's label.
fn loss_gradient(logits: &[f32], labels: &[usize], classes: usize) -> Vec<f32> {
    let mut dlogits = vec![0.0f32; logits.len()];
    for ((row, g), &y) in logits
        .chunks_exact(classes)
        .zip(dlogits.chunks_exact_mut(classes))
        .zip(labels)
    {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
        let s: f32 = e.iter().sum();
        for (j, (gj, ej)) in g.iter_mut().zip(&e).enumerate() {
            *gj = (ej / s - if j == y { 1.0 } else { 0.0 }) / labels.len() as f32;
        }
    }
    dlogits
}
