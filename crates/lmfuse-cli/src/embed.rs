//! `lmfuse embed`: texts to vectors through the pipeline's cached encoder.

use crate::progress::Bars;
use crate::ModelArgs;
use anyhow::Context;
use clap::Args;
use lmfuse_data::{Format, OutputFormat};
use lmfuse_pipeline::encoders::{CacheSpec, Encoders};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `lmfuse embed`.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Input: .jsonl, .csv, .tsv or plain text (one text a line); `-` for standard input.
    #[arg(long, short)]
    input: PathBuf,
    /// Input format instead of guessing from the extension: jsonl, csv, tsv, text.
    #[arg(long)]
    format: Option<Format>,
    /// Field (JSONL) or column (CSV/TSV) holding the text.
    #[arg(long, default_value = "text")]
    text_col: String,
    /// Output: .npy (float32 rows × dim) or .jsonl ({"embedding": [...]} a line); `-` for
    /// JSON Lines on standard output.
    #[arg(long, short)]
    output: PathBuf,
    /// Neither read nor write the embedding cache.
    #[arg(long)]
    no_cache: bool,
    /// Cache folder (default: $LMFUSE_CACHE_DIR, else ~/.cache/lmfuse).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    json: bool,
}

/// Runs `lmfuse embed`.
pub fn run(args: &EmbedArgs, quiet: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let to_stdout = args.output == Path::new("-");
    anyhow::ensure!(
        !(to_stdout && args.json),
        "--json prints the summary on standard output, so --output cannot be `-` as well"
    );
    let texts = lmfuse_pipeline::data::read_input(&args.input, args.format, &args.text_col)?;
    let cache = CacheSpec {
        disabled: args.no_cache,
        dir: args.cache_dir.clone(),
    };
    let mut encoders = Encoders::open(&args.model.choice(), &cache)?;
    let (embeddings, mut summary) = encoders.embed(&texts, &Bars::new(quiet || args.json))?;
    if to_stdout {
        let mut out = std::io::stdout().lock();
        lmfuse_data::write_embeddings(
            &mut out,
            OutputFormat::Jsonl,
            embeddings.dim(),
            embeddings.as_slice(),
        )?;
    } else {
        let format = OutputFormat::from_path(&args.output);
        lmfuse_data::atomic_write(&args.output, |w| {
            lmfuse_data::write_embeddings(w, format, embeddings.dim(), embeddings.as_slice())
        })
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    }
    summary.set_seconds(started.elapsed().as_secs_f64());
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?)?;
    } else {
        eprintln!(
            "embedded {} texts ({} unique, {} from cache, {} encoded) with {}: {} tokens, {} \
             truncated at {} tokens, {:.2} s, {:.1} sentences/s",
            summary.count,
            summary.unique,
            summary.cache_hits,
            summary.encoded,
            summary.model,
            summary.tokens,
            summary.truncated,
            summary.max_seq_length,
            summary.seconds,
            summary.sentences_per_s
        );
    }
    Ok(())
}
