//! `lmfuse bench embed`: encoding throughput and cache speed-up, measured in one run.

use crate::ModelArgs;
use anyhow::Context;
use clap::Args;
use lmfuse_cache::EmbeddingCache;
use lmfuse_core::{TextEncoder, TextStats};
use lmfuse_data::Format;
use lmfuse_encoder::{LoadOptions, ModelFiles, SentenceEncoder};
use lmfuse_pipeline::data::read_input;
use lmfuse_pipeline::encoders::embed_texts;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `lmfuse bench embed`.
#[derive(Args, Debug)]
pub struct BenchEmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Texts to encode, one a line (or .jsonl/.csv/.tsv).
    #[arg(long, short)]
    input: PathBuf,
    /// Field or column holding the text.
    #[arg(long, default_value = "text")]
    text_col: String,
    /// Input format instead of guessing from the extension.
    #[arg(long)]
    format: Option<Format>,
    /// Use only the first N texts.
    #[arg(long)]
    limit: Option<usize>,
    /// Timed passes over the texts; the best is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Nominal fp32 peak of the threads used, in GFLOP/s, for the "% of peak" figure
    /// (default: 75 per thread, the figure given for the two-core machines lmfuse is measured on).
    #[arg(long)]
    peak_gflops: Option<f64>,
    /// Skip the cache cold/warm measurement.
    #[arg(long)]
    no_cache_bench: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct CacheReport {
    cold_seconds: f64,
    warm_seconds: f64,
    speedup: f64,
    warm_cache_hits: usize,
}

#[derive(Serialize)]
struct Report {
    engine: &'static str,
    model: String,
    /// f32, bf16 or int8.
    precision: lmfuse_core::Precision,
    /// The int8 or bf16 micro-kernel (none in f32).
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel: Option<&'static str>,
    threads: usize,
    batch_tokens: usize,
    sentences: usize,
    tokens: usize,
    mean_tokens: f64,
    truncated: usize,
    load_seconds: f64,
    runs_seconds: Vec<f64>,
    best_seconds: f64,
    sentences_per_s: f64,
    tokens_per_s: f64,
    gflop: f64,
    gflops_per_s: f64,
    peak_gflops: f64,
    peak_percent: f64,
    gemm_ceiling_gflops: f64,
    ceiling_percent: f64,
    cache: Option<CacheReport>,
}

/// Runs `lmfuse bench embed`.
pub fn run(args: &BenchEmbedArgs, quiet: bool) -> anyhow::Result<()> {
    anyhow::ensure!(args.repeat >= 1, "--repeat must be at least 1");
    let texts = read_texts(args)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let threads = rayon::current_num_threads();

    let t = Instant::now();
    let files = args.model.resolve()?;
    let options = args.model.load_options();
    let encoder = SentenceEncoder::load(&files, &options).context("cannot load the model")?;
    let load_seconds = t.elapsed().as_secs_f64();

    let (runs, stats) = time_passes(&encoder, &refs, args.repeat)?;
    let best = runs.iter().copied().fold(f64::INFINITY, f64::min);
    let tokens: usize = stats.iter().map(|s| s.tokens).sum();
    let gflop = encoder.model().flops(stats.iter().map(|s| s.tokens)) / 1e9;
    let peak = args.peak_gflops.unwrap_or(75.0 * threads as f64);
    let ceiling = lmfuse_encoder::gemm_ceiling_gflops(threads, 1.0);

    let cache = if args.no_cache_bench {
        None
    } else {
        Some(bench_cache(args, &texts, &files, &options, quiet)?)
    };

    let report = Report {
        engine: "lmfuse",
        model: files.reference.clone(),
        precision: encoder.model().precision(),
        kernel: encoder.model().kernel_name(),
        threads,
        batch_tokens: args.model.batch_tokens,
        sentences: texts.len(),
        tokens,
        mean_tokens: tokens as f64 / texts.len() as f64,
        truncated: stats.iter().filter(|s| s.truncated).count(),
        load_seconds,
        runs_seconds: runs,
        best_seconds: best,
        sentences_per_s: texts.len() as f64 / best,
        tokens_per_s: tokens as f64 / best,
        gflop,
        gflops_per_s: gflop / best,
        peak_gflops: peak,
        peak_percent: 100.0 * gflop / best / peak,
        gemm_ceiling_gflops: ceiling,
        ceiling_percent: 100.0 * gflop / best / ceiling,
        cache,
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        print_text_report(&report)?;
    }
    Ok(())
}

/// Reads the texts of `--input`, keeps the first `--limit`, and fails when none are left.
fn read_texts(args: &BenchEmbedArgs) -> anyhow::Result<Vec<String>> {
    let mut texts = read_input(&args.input, args.format, &args.text_col)?;
    if let Some(n) = args.limit {
        texts.truncate(n);
    }
    anyhow::ensure!(!texts.is_empty(), "{} holds no texts", args.input.display());
    Ok(texts)
}

/// Encodes a warm-up slice, then all `refs` `repeat` times: the seconds of each timed pass
/// and the per-text statistics of the last.
fn time_passes(
    encoder: &SentenceEncoder,
    refs: &[&str],
    repeat: usize,
) -> anyhow::Result<(Vec<f64>, Vec<TextStats>)> {
    // Warm-up: page in the weights, size the allocator's pools.
    encoder.encode(&refs[..refs.len().min(64)])?;
    let mut runs = Vec::with_capacity(repeat);
    let mut stats = Vec::new();
    for _ in 0..repeat {
        let t = Instant::now();
        let out = encoder.encode(refs)?;
        runs.push(t.elapsed().as_secs_f64());
        stats = out.stats;
    }
    Ok((runs, stats))
}

/// Embeds `texts` through a fresh temporary cache twice (cold, then warm with the model
/// resolved again, as `embed` does) and reports both times.
fn bench_cache(
    args: &BenchEmbedArgs,
    texts: &[String],
    files: &ModelFiles,
    options: &LoadOptions,
    quiet: bool,
) -> anyhow::Result<CacheReport> {
    let dir = tempfile::tempdir().context("cannot create a temporary cache folder")?;
    let mut cache = EmbeddingCache::open(dir.path())?;
    let bars = crate::progress::Bars::new(quiet);
    let (_, cold) = embed_texts(texts, files, options, Some(&mut cache), &bars)?;
    // The warm pass includes resolving the model (hashing its weights), as `embed` does.
    let t = Instant::now();
    let files = args.model.resolve()?;
    let (_, warm) = embed_texts(texts, &files, options, Some(&mut cache), &bars)?;
    let warm_seconds = t.elapsed().as_secs_f64();
    Ok(CacheReport {
        cold_seconds: cold.seconds,
        warm_seconds,
        speedup: cold.seconds / warm_seconds.max(1e-9),
        warm_cache_hits: warm.cache_hits,
    })
}

/// Prints `report` as readable lines on stdout.
fn print_text_report(report: &Report) -> anyhow::Result<()> {
    outln!(
        "lmfuse embed bench: {} ({} threads, {} tokens/batch)",
        report.model,
        report.threads,
        report.batch_tokens
    )?;
    outln!(
        "  {} sentences, {} tokens (mean {:.1}), {} truncated; model load {:.2} s",
        report.sentences,
        report.tokens,
        report.mean_tokens,
        report.truncated,
        report.load_seconds
    )?;
    outln!(
        "  best of {}: {:.3} s  {:.1} sentences/s  {:.0} tokens/s  {:.1} GFLOP/s = {:.0}% of {:.0} GFLOP/s peak",
        report.runs_seconds.len(),
        report.best_seconds,
        report.sentences_per_s,
        report.tokens_per_s,
        report.gflops_per_s,
        report.peak_percent,
        report.peak_gflops
    )?;
    outln!(
        "  matrix-product ceiling measured here: {:.1} GFLOP/s; the forward pass reaches {:.0}% of it",
        report.gemm_ceiling_gflops, report.ceiling_percent
    )?;
    if let Some(c) = &report.cache {
        outln!(
            "  cache: cold {:.3} s, warm {:.3} s ({} hits): {:.1}x faster",
            c.cold_seconds,
            c.warm_seconds,
            c.warm_cache_hits,
            c.speedup
        )?;
    }
    Ok(())
}
