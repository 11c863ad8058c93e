//! `lmfuse relation`: train, evaluate and apply relation classifiers (the pipeline's
//! [`relation`]).

use crate::output::write_lines;
use crate::progress::Bars;
use crate::tune_flags::TuneFlags;
use clap::{Args, Subcommand};
use lmfuse_pipeline::encoders::EncoderChoice;
use lmfuse_pipeline::relation::{
    self, RelationFinetune, RelationModel, RelationScores, RelationTrainReport, RelationTrainSpec,
};
use std::path::PathBuf;
use std::time::Instant;

/// `lmfuse relation` subcommands.
#[derive(Subcommand, Debug)]
pub enum RelationCommand {
    /// Train a relation classifier on texts with two marked entities (logistic regression on
    /// the frozen encoder's states, or the encoder fine-tuned with --finetune); save a bundle.
    Train(RelationTrainArgs),
    /// Score a relation classifier: the official SemEval-2010 Task 8 macro-F1 (direction
    /// counted, Other excluded), micro-F1, accuracy, per relation.
    Eval(RelationEvalArgs),
    /// Classify the relation of each example; writes {"text", "e1", "e2", "label", "score"}
    /// lines in input order (markers removed, entities as character spans).
    Predict(RelationPredictArgs),
}

/// `lmfuse relation train`.
#[derive(Args, Debug)]
pub struct RelationTrainArgs {
    /// Training examples: JSONL {"text" with <e1>…</e1> and <e2>…</e2>, "label"}, or {"text",
    /// "e1": {"start", "end"}, "e2": {...}, "label"} with character offsets.
    #[arg(long)]
    train: PathBuf,
    /// Dev examples (choose C or the epoch on them); without, --dev-fraction of train is
    /// held out.
    #[arg(long)]
    dev: Option<PathBuf>,
    /// Share of train held out as dev when --dev is not given (stratified, --seed).
    #[arg(long, default_value_t = 0.1)]
    dev_fraction: f64,
    /// Test examples, scored once with the kept model.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Bundle folder to write.
    #[arg(long)]
    out: PathBuf,
    /// Encoder: a local folder or a Hugging Face id; by default models/all-MiniLM-L6-v2.
    #[arg(long, env = "LMFUSE_MODEL")]
    model: Option<String>,
    /// Maximum tokens per example (entities and markers are always kept); by default the
    /// model's own (128 when fine-tuning).
    #[arg(long)]
    max_length: Option<usize>,
    /// The label meaning "no relation", left out of the official score.
    #[arg(long, default_value = "Other")]
    other: String,
    /// Logistic regression's C values to try on dev (frozen model); comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.001,0.003,0.01,0.03,0.1"
    )]
    c: Vec<f64>,
    /// Fine-tune the encoder end to end (marker tokens added to its vocabulary) instead of a
    /// logistic regression on its frozen states.
    #[arg(long)]
    finetune: bool,
    #[command(flatten)]
    tune: TuneFlags,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// `lmfuse relation eval`.
#[derive(Args, Debug)]
pub struct RelationEvalArgs {
    /// Bundle folder written by `lmfuse relation train`.
    #[arg(long)]
    model: PathBuf,
    /// Labelled examples (JSONL, markers or spans).
    #[arg(long)]
    data: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// `lmfuse relation predict`.
#[derive(Args, Debug)]
pub struct RelationPredictArgs {
    /// Bundle folder written by `lmfuse relation train`.
    #[arg(long)]
    model: PathBuf,
    /// Examples (JSONL, markers or spans; labels not needed); `-` not accepted.
    #[arg(long, short)]
    input: PathBuf,
    /// Output JSON Lines; `-` for standard output.
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
}

/// Runs `lmfuse relation ...`.
pub fn run(command: &RelationCommand, quiet: bool) -> anyhow::Result<()> {
    match command {
        RelationCommand::Train(args) => train(args, quiet),
        RelationCommand::Eval(args) => eval(args),
        RelationCommand::Predict(args) => predict(args),
    }
}

impl RelationTrainArgs {
    fn spec(&self) -> RelationTrainSpec {
        RelationTrainSpec {
            train: self.train.clone(),
            dev: self.dev.clone(),
            dev_fraction: self.dev_fraction,
            encoder: EncoderChoice {
                model: self.model.clone(),
                max_length: self.max_length,
                ..EncoderChoice::default()
            },
            other: self.other.clone(),
            c_grid: self.c.clone(),
            finetune: self.finetune.then(|| RelationFinetune {
                params: self.tune.params(),
                run_dir: self.tune.run_dir.clone(),
                resume: self.tune.resume,
            }),
            seed: self.tune.seed,
        }
    }
}

/// Scores `model` on `path`; also returns the seconds it took.
fn score(model: &RelationModel, path: &std::path::Path) -> anyhow::Result<(RelationScores, f64)> {
    let examples = relation::read_set(path, true)?;
    let started = Instant::now();
    let report = model.evaluate(&examples, path)?;
    Ok((report, started.elapsed().as_secs_f64()))
}

fn train(args: &RelationTrainArgs, quiet: bool) -> anyhow::Result<()> {
    let (model, report) = relation::train(&args.spec(), &Bars::new(quiet || args.json))?;
    let test = args
        .test
        .as_deref()
        .map(|path| score(&model, path))
        .transpose()?;
    model.save(&args.out, Some(&report))?;
    if args.json {
        let json = serde_json::json!({
            "train": report,
            "test": test.as_ref().map(|t| &t.0),
            "test_seconds": test.as_ref().map(|t| t.1),
        });
        outln!("{json}")?;
        return Ok(());
    }
    print_train(&report);
    if let Some((test, seconds)) = &test {
        outln!("test ({seconds:.2} s):")?;
        print_scores(test)?;
    }
    outln!("saved {}", args.out.display())?;
    Ok(())
}

fn print_train(report: &RelationTrainReport) {
    if let Some(best) = report.finetune.as_ref().and_then(|f| f.get("best")) {
        eprintln!(
            "fine-tuned the encoder: best dev macro-F1 {:.2} at epoch {} (step {})",
            100.0 * best["dev_macro_f1"].as_f64().unwrap_or(0.0),
            best["epoch"],
            best["step"]
        );
    }
    eprintln!(
        "{}: {} training examples, {} dev ({}), {} labels, {} cut to fit, {:.1} s",
        report.kind,
        report.train_examples,
        report.dev_examples,
        if report.dev_held_out {
            "held out of train"
        } else {
            "--dev"
        },
        report.labels.len(),
        report.truncated,
        report.total_seconds
    );
    eprintln!("dev:");
    let _ = print_scores(&report.dev);
}

fn print_scores(r: &RelationScores) -> std::io::Result<()> {
    outln!(
        "  {:<24} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "relation",
        "precision",
        "recall",
        "f1",
        "support",
        "xdir"
    )?;
    for (name, s) in &r.per_relation {
        outln!(
            "  {name:<24} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>8}",
            100.0 * s.prf.precision,
            100.0 * s.prf.recall,
            100.0 * s.prf.f1,
            s.support,
            s.wrong_direction
        )?;
    }
    outln!(
        "  official macro-F1 {:.2}  micro-F1 {:.2}  accuracy {:.2}  ({} examples)",
        100.0 * r.official_macro_f1,
        100.0 * r.micro.f1,
        100.0 * r.accuracy,
        r.n
    )
}

fn eval(args: &RelationEvalArgs) -> anyhow::Result<()> {
    let model = RelationModel::load(&args.model)?;
    let (report, seconds) = score(&model, &args.data)?;
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        json["seconds"] = seconds.into();
        outln!("{json}")?;
    } else {
        outln!("{} examples, classified in {seconds:.2} s (%):", report.n)?;
        print_scores(&report)?;
    }
    Ok(())
}

fn predict(args: &RelationPredictArgs) -> anyhow::Result<()> {
    let model = RelationModel::load(&args.model)?;
    let examples = relation::read_set(&args.input, false)?;
    let predictions = model.predict(&examples)?;
    let lines: Vec<serde_json::Value> = examples
        .iter()
        .zip(predictions)
        .map(|(e, p)| {
            serde_json::json!({"text": e.text, "e1": e.e1, "e2": e.e2, "label": p.label,
                "score": p.score})
        })
        .collect();
    write_lines(&args.output, &lines)
}

/// `lmfuse extract`.
#[derive(Args, Debug)]
pub struct ExtractArgs {
    /// NER bundle (`lmfuse ner train`): finds the entities.
    #[arg(long)]
    ner: PathBuf,
    /// Relation bundle (`lmfuse relation train`): classifies every pair of entities of a
    /// text (the earlier as e1).
    #[arg(long)]
    relation: PathBuf,
    /// Texts (plain, one a line; JSONL/CSV/TSV with --text-col), `-` for standard input.
    #[arg(long, short)]
    input: PathBuf,
    /// Field or column holding the text.
    #[arg(long, default_value = "text")]
    text_col: String,
    /// Entities of a text paired at most (the first ones).
    #[arg(long, default_value_t = 20)]
    max_entities: usize,
    /// Output JSON Lines {"text", "entities", "relations": [{"e1", "e2", "label", "score"}]};
    /// `-` for standard output.
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
}

/// Runs `lmfuse extract`: NER then relation classification on raw texts.
pub fn extract(args: &ExtractArgs) -> anyhow::Result<()> {
    let tagger = lmfuse_pipeline::ner::NerModel::load(&args.ner)?;
    let relations = RelationModel::load(&args.relation)?;
    let (texts, _) =
        lmfuse_pipeline::data::read_unlabelled(&args.input, None, &args.text_col, &[])?;
    let found = relation::extract(&tagger, &relations, &texts, args.max_entities)?;
    write_lines(&args.output, &found)
}
