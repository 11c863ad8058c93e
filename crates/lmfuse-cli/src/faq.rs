//! `lmfuse faq`: build an answer engine from a question/answer table, ask it, score it.

use crate::classify::CacheArgs;
use crate::output::write_lines;
use crate::progress::Bars;
use clap::{Args, Subcommand, ValueEnum};
use lmfuse_data::faq::FaqColumns;
use lmfuse_pipeline::encoders::EncoderChoice;
use lmfuse_pipeline::faq::{
    build_faq, evaluate_faq, Faq, FaqBuildReport, FaqBuildSpec, FaqEvalReport, FaqMode, FaqSessions,
};
use lmfuse_pipeline::retrieval::DenseSpec;
use std::path::PathBuf;

/// `lmfuse faq ...`.
#[derive(Subcommand, Debug)]
pub enum FaqCommand {
    /// Build an answer engine from a question/answer table: search indexes over answers and
    /// questions, an intent classifier, a learned ranker, a calibrated confidence and a
    /// hand-over threshold chosen on --dev for --target-precision.
    Build(Box<FaqBuildArgs>),
    /// Answer questions (one JSON line each): the best entries, the intent, the confidence
    /// and whether to hand over to a person.
    Ask(FaqAskArgs),
    /// Score the engine and its BM25-only and dense-only baselines on judged questions.
    Eval(FaqEvalArgs),
}

/// `lmfuse faq build`.
#[derive(Args, Debug)]
pub struct FaqBuildArgs {
    /// The table: JSONL, CSV, TSV or Parquet rows of id, question, answer (category and
    /// paraphrases optional).
    #[arg(long)]
    table: PathBuf,
    /// The engine folder to write.
    #[arg(long)]
    out: PathBuf,
    /// Id column.
    #[arg(long, default_value = "id")]
    id_col: String,
    /// Question column (a cell may be empty: an answer-only entry).
    #[arg(long, default_value = "question")]
    question_col: String,
    /// Answer column.
    #[arg(long, default_value = "answer")]
    answer_col: String,
    /// Category (intent) column.
    #[arg(long)]
    category_col: Option<String>,
    /// Paraphrases column (`|` between them).
    #[arg(long)]
    paraphrases_col: Option<String>,
    /// Judged questions (text, answer id; an empty id: out of scope) the hand-over
    /// thresholds are chosen on; without it, on the table's own questions held out.
    #[arg(long)]
    dev: Option<PathBuf>,
    /// Text column of --dev.
    #[arg(long, default_value = "text")]
    dev_text_col: String,
    /// Answer-id column of --dev.
    #[arg(long, default_value = "answer_id")]
    dev_answer_col: String,
    /// Share of answered questions that must be right on dev.
    #[arg(long, default_value_t = 0.9)]
    target_precision: f64,
    /// Encoder: a local folder or a Hugging Face id; by default models/all-MiniLM-L6-v2.
    #[arg(long, env = "LMFUSE_MODEL")]
    model: Option<String>,
    /// Put before every question (default: the model's default prompt).
    #[arg(long)]
    query_prefix: Option<String>,
    /// Put before every answer (default: the model's default prompt).
    #[arg(long)]
    passage_prefix: Option<String>,
    /// Candidates per retriever.
    #[arg(long, default_value_t = 20)]
    depth: usize,
    /// Folds (by entry) of the held-out scoring of the table's questions.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Seed of the folds and the trees.
    #[arg(long, default_value_t = 13)]
    seed: u64,
    #[command(flatten)]
    cache: CacheArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

impl FaqBuildArgs {
    fn spec(&self) -> FaqBuildSpec {
        let columns = FaqColumns {
            id: self.id_col.clone(),
            question: self.question_col.clone(),
            answer: self.answer_col.clone(),
            category: self.category_col.clone(),
            paraphrases: self.paraphrases_col.clone(),
        };
        let mut spec = FaqBuildSpec::new(self.table.clone(), columns);
        spec.dev = self.dev.clone();
        spec.dev_columns = (self.dev_text_col.clone(), self.dev_answer_col.clone());
        spec.target_precision = self.target_precision;
        spec.dense = DenseSpec {
            encoder: EncoderChoice {
                model: self.model.clone(),
                ..EncoderChoice::default()
            },
            query_prefix: self.query_prefix.clone(),
            passage_prefix: self.passage_prefix.clone(),
            ..DenseSpec::default()
        };
        spec.cache = self.cache.spec();
        spec.depth = self.depth;
        spec.folds = self.folds;
        spec.seed = self.seed;
        spec.kinds = lmfuse_pipeline::ranker::RankerKind::defaults(self.seed);
        spec
    }
}

/// The engine's modes, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FaqModeArg {
    /// The learned ranker over every signal, calibrated confidence.
    Fused,
    /// BM25 over each entry's questions and answer (baseline).
    Bm25,
    /// Cosine with each entry's questions and answer (baseline).
    Dense,
}

impl FaqModeArg {
    fn mode(self) -> FaqMode {
        match self {
            FaqModeArg::Fused => FaqMode::Fused,
            FaqModeArg::Bm25 => FaqMode::Bm25,
            FaqModeArg::Dense => FaqMode::Dense,
        }
    }
}

/// `lmfuse faq ask`.
#[derive(Args, Debug)]
pub struct FaqAskArgs {
    /// The engine folder.
    #[arg(long)]
    faq: PathBuf,
    /// A question (repeat for several).
    #[arg(short = 'q', long = "question", required = true)]
    questions: Vec<String>,
    /// The questions are successive turns of one conversation: each is also searched with
    /// the turn before it.
    #[arg(long)]
    conversation: bool,
    /// How to answer.
    #[arg(long, value_enum, default_value_t = FaqModeArg::Fused)]
    mode: FaqModeArg,
    /// Answers per question.
    #[arg(short = 'k', long, default_value_t = 3)]
    k: usize,
    /// Output file (JSON Lines), `-` for standard output.
    #[arg(short = 'o', long, default_value = "-")]
    output: PathBuf,
    #[command(flatten)]
    cache: CacheArgs,
}

/// `lmfuse faq eval`.
#[derive(Args, Debug)]
pub struct FaqEvalArgs {
    /// The engine folder.
    #[arg(long)]
    faq: PathBuf,
    /// Judged questions (text, answer id; an empty id: out of scope).
    #[arg(long)]
    questions: PathBuf,
    /// Text column.
    #[arg(long, default_value = "text")]
    text_col: String,
    /// Answer-id column.
    #[arg(long, default_value = "answer_id")]
    answer_col: String,
    /// Modes to score (default: all three).
    #[arg(long, value_enum, value_delimiter = ',')]
    mode: Vec<FaqModeArg>,
    #[command(flatten)]
    cache: CacheArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `lmfuse faq ...`.
pub fn run(command: &FaqCommand, quiet: bool) -> anyhow::Result<()> {
    match command {
        FaqCommand::Build(args) => {
            let report = build_faq(&args.out, &args.spec(), &Bars::new(quiet || args.json))?;
            print_build(&report, args.json)
        }
        FaqCommand::Ask(args) => ask(args),
        FaqCommand::Eval(args) => {
            let mut faq = Faq::open(&args.faq, &args.cache.spec())?;
            let questions = faq.read_judged(&args.questions, (&args.text_col, &args.answer_col))?;
            let modes: Vec<FaqMode> = match args.mode.is_empty() {
                true => FaqMode::ALL.to_vec(),
                false => args.mode.iter().map(|m| m.mode()).collect(),
            };
            let report = evaluate_faq(&mut faq, &questions, &modes)?;
            print_eval(&report, args.json)
        }
    }
}

fn ask(args: &FaqAskArgs) -> anyhow::Result<()> {
    let mut faq = Faq::open(&args.faq, &args.cache.spec())?;
    let mut sessions = FaqSessions::default();
    let mut lines = Vec::with_capacity(args.questions.len());
    for q in &args.questions {
        let context = if args.conversation {
            sessions.context("cli")
        } else {
            Vec::new()
        };
        let answer = faq.answer(q, &context, args.mode.mode(), args.k)?;
        sessions.record("cli", q, &answer);
        let mut line = serde_json::to_value(&answer)?;
        line["question"] = serde_json::json!(q);
        lines.push(line);
    }
    write_lines(&args.output, &lines)
}

fn print_build(r: &FaqBuildReport, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string(r)?)?;
        return Ok(());
    }
    outln!(
        "{}: {} entries, {} questions, {} categories in {:.1} s",
        r.faq.display(),
        r.entries,
        r.questions,
        r.categories,
        r.seconds
    )?;
    if let Some((c, acc)) = r.intent {
        outln!(
            "  intent classifier: C {c}, held-out accuracy {:.2}%",
            acc * 100.0
        )?;
    }
    outln!(
        "  ranker: {:?} (held-out first answer right for {:.2}% of the table's questions)",
        r.ranker_kept,
        r.held_out_top1 * 100.0
    )?;
    outln!(
        "  hand-over thresholds chosen on {}: {:?}",
        r.chosen_on,
        r.thresholds
    )?;
    if let Some(dev) = &r.dev {
        print_eval(dev, false)?;
    }
    Ok(())
}

fn print_eval(r: &FaqEvalReport, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string(r)?)?;
        return Ok(());
    }
    outln!(
        "{} questions ({} in scope, {} out of scope)",
        r.questions,
        r.in_scope,
        r.out_of_scope
    )?;
    outln!(
        "  {:<6} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>7}",
        "mode",
        "top-1",
        "MRR@10",
        "answered",
        "precision",
        "handover P",
        "handover R",
        "p50 ms"
    )?;
    for m in &r.modes {
        outln!(
            "  {:<6} {:>7.2} {:>7.2} {:>8.2} {:>9.2} {:>9.2} {:>9.2} {:>7.2}",
            format!("{:?}", m.mode).to_lowercase(),
            m.top1_accuracy * 100.0,
            m.mrr_at_10 * 100.0,
            m.coverage * 100.0,
            m.answered_precision * 100.0,
            m.hand_over_precision * 100.0,
            m.hand_over_recall * 100.0,
            m.p50_ms
        )?;
    }
    Ok(())
}
