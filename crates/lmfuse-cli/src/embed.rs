//! `lmfuse embed` and the encode-through-the-cache pipeline it shares with `bench embed`.

use crate::ModelArgs;
use anyhow::Context;
use clap::Args;
use lmfuse_cache::EmbeddingCache;
use lmfuse_core::{Embeddings, TextEncoder, TextStats};
use lmfuse_data::{Format, OutputFormat};
use lmfuse_encoder::{LoadOptions, ModelFiles, SentenceEncoder};
use serde::Serialize;
use std::collections::HashMap;
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

/// What one embedding run did.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedSummary {
    /// The model as named by the user.
    pub model: String,
    /// Vector dimension.
    pub dim: usize,
    /// Texts in the input.
    pub count: usize,
    /// Distinct texts.
    pub unique: usize,
    /// Distinct texts found in the cache.
    pub cache_hits: usize,
    /// Distinct texts run through the model.
    pub encoded: usize,
    /// Tokens over all input texts (special tokens included, after truncation).
    pub tokens: usize,
    /// Input texts cut at the maximum length.
    pub truncated: usize,
    /// Maximum tokens per text.
    pub max_seq_length: usize,
    /// Wall time of the run.
    pub seconds: f64,
    /// Input texts per second.
    pub sentences_per_s: f64,
    /// Input tokens per second.
    pub tokens_per_s: f64,
}

/// Unique texts encoded per step: each step's results are committed to the cache, so an
/// interrupted run keeps what it finished.
const CHUNK: usize = 1024;

/// Encodes `texts`, reading and filling `cache` when given. Identical texts are encoded once;
/// the encoder is loaded only when some text is not cached.
pub fn embed_texts(
    texts: &[String],
    files: &ModelFiles,
    options: &LoadOptions,
    mut cache: Option<&mut EmbeddingCache>,
    quiet: bool,
) -> anyhow::Result<(Embeddings, EmbedSummary)> {
    let started = Instant::now();
    let fingerprint = options.fingerprint(files)?;
    let key = fingerprint.cache_key();
    let dim = files.config.hidden_size;

    let mut index: HashMap<&str, usize> = HashMap::with_capacity(texts.len());
    let mut unique: Vec<&str> = Vec::new();
    let slot: Vec<usize> = texts
        .iter()
        .map(|t| {
            *index.entry(t.as_str()).or_insert_with(|| {
                unique.push(t.as_str());
                unique.len() - 1
            })
        })
        .collect();

    let mut vectors: Vec<Option<(Vec<f32>, TextStats)>> = match cache.as_deref() {
        Some(c) => c
            .get_many(&key, &unique)?
            .into_iter()
            .map(|hit| {
                hit.map(|h| {
                    anyhow::ensure!(
                        h.vector.len() == dim,
                        "embedding cache {} holds a {}-dimensional vector for a {dim}-dimensional model",
                        c.path().display(),
                        h.vector.len()
                    );
                    Ok((h.vector, h.stats))
                })
                .transpose()
            })
            .collect::<anyhow::Result<_>>()?,
        None => vec![None; unique.len()],
    };
    let misses: Vec<usize> = (0..unique.len())
        .filter(|&i| vectors[i].is_none())
        .collect();
    let cache_hits = unique.len() - misses.len();

    if !misses.is_empty() {
        let encoder = SentenceEncoder::load(files, options).context("cannot load the model")?;
        debug_assert_eq!(encoder.fingerprint(), &fingerprint);
        let bar = crate::progress::bar(misses.len() as u64, "embedding", quiet);
        for chunk in misses.chunks(CHUNK) {
            let chunk_texts: Vec<&str> = chunk.iter().map(|&i| unique[i]).collect();
            let encoded = encoder.encode(&chunk_texts)?;
            if let Some(c) = cache.as_deref_mut() {
                let items: Vec<(&str, &[f32], TextStats)> = chunk_texts
                    .iter()
                    .enumerate()
                    .map(|(k, t)| (*t, encoded.embeddings.row(k), encoded.stats[k]))
                    .collect();
                c.put_many(&key, &items)?;
            }
            for (k, &i) in chunk.iter().enumerate() {
                vectors[i] = Some((encoded.embeddings.row(k).to_vec(), encoded.stats[k]));
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
    }

    let mut data = Vec::with_capacity(texts.len() * dim);
    let (mut tokens, mut truncated) = (0, 0);
    for &s in &slot {
        let (v, stats) = vectors[s].as_ref().expect("every unique text is filled");
        data.extend_from_slice(v);
        tokens += stats.tokens;
        truncated += usize::from(stats.truncated);
    }
    let seconds = started.elapsed().as_secs_f64();
    let summary = EmbedSummary {
        model: files.reference.clone(),
        dim,
        count: texts.len(),
        unique: unique.len(),
        cache_hits,
        encoded: misses.len(),
        tokens,
        truncated,
        max_seq_length: fingerprint.max_seq_length,
        seconds,
        sentences_per_s: texts.len() as f64 / seconds.max(1e-9),
        tokens_per_s: tokens as f64 / seconds.max(1e-9),
    };
    Ok((Embeddings::from_vec(dim, data)?, summary))
}

/// Reads the texts of `input` (`-` is standard input).
pub fn read_input(
    input: &Path,
    format: Option<Format>,
    text_col: &str,
) -> anyhow::Result<Vec<String>> {
    let texts = if input == Path::new("-") {
        lmfuse_data::read_texts_from(
            std::io::stdin().lock(),
            Path::new("<stdin>"),
            format.unwrap_or(Format::Text),
            text_col,
        )?
    } else {
        lmfuse_data::read_texts(input, format, text_col)?
    };
    Ok(texts)
}

/// Runs `lmfuse embed`.
pub fn run(args: &EmbedArgs, quiet: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let to_stdout = args.output == Path::new("-");
    anyhow::ensure!(
        !(to_stdout && args.json),
        "--json prints the summary on standard output, so --output cannot be `-` as well"
    );
    let texts = read_input(&args.input, args.format, &args.text_col)?;
    let files = args.model.resolve()?;
    let mut cache = if args.no_cache {
        None
    } else {
        let dir = args
            .cache_dir
            .clone()
            .unwrap_or_else(lmfuse_cache::default_dir);
        Some(EmbeddingCache::open(&dir)?)
    };
    let (embeddings, mut summary) = embed_texts(
        &texts,
        &files,
        &args.model.load_options(),
        cache.as_mut(),
        quiet || args.json,
    )?;
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
    summary.seconds = started.elapsed().as_secs_f64();
    summary.sentences_per_s = summary.count as f64 / summary.seconds.max(1e-9);
    summary.tokens_per_s = summary.tokens as f64 / summary.seconds.max(1e-9);
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
