//! `lmfuse ner`: train, evaluate and apply named-entity taggers (the pipeline's [`ner`]).

use crate::output::write_lines;
use crate::progress::Bars;
use crate::tune_flags::TuneFlags;
use clap::{Args, Subcommand};
use lmfuse_pipeline::encoders::EncoderChoice;
use lmfuse_pipeline::ner::{
    self, CrfParams, EntityReport, FeatureParams, NerFinetune, NerModel, NerTrainReport,
    NerTrainSpec, TagHead, TagOptions, TagScheme,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `lmfuse ner` subcommands.
#[derive(Subcommand, Debug)]
pub enum NerCommand {
    /// Train a CRF tagger on tagged sentences (CoNLL or JSONL spans), choose its L2 on dev,
    /// save a bundle.
    Train(NerTrainArgs),
    /// Train the hand, emb and hand+emb CRFs on the same data (word vectors computed once),
    /// with --finetune also the tuned tagger and the fusion over its vectors; rank them on
    /// dev, save the best.
    Compare(NerCompareArgs),
    /// Score a tagger on tagged sentences: strict entity precision/recall/F1 (seqeval).
    Eval(NerEvalArgs),
    /// Tag texts (one a line, or JSONL "text"), or the sentences of a CoNLL file; writes
    /// {"text", "entities": [{"start", "end", "label", "text", "score"}]} lines.
    Predict(NerPredictArgs),
    /// Write the CRF's attribute strings per token as JSON Lines (for other CRF toolkits).
    Features(NerFeaturesArgs),
}

/// How tags are read.
#[derive(Args, Debug, Clone)]
pub struct TagArgs {
    /// Tag scheme of CoNLL files (io, bio, bioes) instead of telling it from the prefixes.
    #[arg(long)]
    tag_scheme: Option<TagScheme>,
    /// Read tags that break their scheme (an I-X without B-X) by conlleval's rules instead of
    /// refusing the file.
    #[arg(long)]
    repair_bio: bool,
}

impl TagArgs {
    fn options(&self) -> TagOptions {
        TagOptions {
            scheme: self.tag_scheme,
            repair: self.repair_bio,
        }
    }
}

/// Which token features the CRF sees.
#[derive(Args, Debug, Clone)]
pub struct FeatureArgs {
    /// Neighbours on each side whose word is a feature.
    #[arg(long, default_value_t = 2)]
    window: usize,
    /// Prefixes and suffixes up to this many characters.
    #[arg(long, default_value_t = 3)]
    affixes: usize,
    /// No bigrams of neighbouring words.
    #[arg(long)]
    no_bigrams: bool,
    /// Gazetteer: TYPE=FILE, one phrase a line (repeatable).
    #[arg(long, value_parser = parse_gazetteer)]
    gazetteer: Vec<(String, PathBuf)>,
}

fn parse_gazetteer(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((label, path)) if !label.is_empty() && !path.is_empty() => {
            Ok((label.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!("expected TYPE=FILE, got {s:?}")),
    }
}

impl FeatureArgs {
    fn params(&self) -> FeatureParams {
        FeatureParams {
            window: self.window,
            affixes: self.affixes,
            bigrams: !self.no_bigrams,
        }
    }
}

/// `lmfuse ner train`.
#[derive(Args, Debug)]
pub struct NerTrainArgs {
    #[command(flatten)]
    fit: NerFitArgs,
    /// What the CRF reads: hand (hand-made features), emb (the encoder's word vectors), or
    /// hand,emb (both: the fusion).
    #[arg(long, value_delimiter = ',', default_value = "hand")]
    features: Vec<NerFeature>,
}

/// `lmfuse ner compare`.
#[derive(Args, Debug)]
pub struct NerCompareArgs {
    #[command(flatten)]
    fit: NerFitArgs,
}

/// Data, CRF and encoder settings shared by `ner train` and `ner compare`.
#[derive(Args, Debug)]
pub struct NerFitArgs {
    /// Training sentences: CoNLL columns, or .jsonl with {"text", "entities"}.
    #[arg(long)]
    train: PathBuf,
    /// Dev sentences: choose c2 on them and report the kept model's scores.
    #[arg(long)]
    dev: Option<PathBuf>,
    /// Test sentences, scored once with the kept model.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Bundle folder to write.
    #[arg(long)]
    out: PathBuf,
    /// L2 coefficients (crfsuite's c2) to try; comma-separated, several need --dev.
    #[arg(long, value_delimiter = ',', default_value = "0.1")]
    c2: Vec<f64>,
    /// L-BFGS iterations at most.
    #[arg(long, default_value_t = 100)]
    max_iter: usize,
    /// Attributes seen fewer times in training are dropped.
    #[arg(long, default_value_t = 1)]
    min_freq: usize,
    /// Encoder for emb: a local folder or a Hugging Face id; by default
    /// models/all-MiniLM-L6-v2.
    #[arg(long, env = "LMFUSE_MODEL")]
    model: Option<String>,
    /// Maximum tokens per pass of the encoder (longer sentences are read in overlapping
    /// windows); by default the model's own.
    #[arg(long)]
    max_length: Option<usize>,
    #[command(flatten)]
    hand: FeatureArgs,
    #[command(flatten)]
    tags: TagArgs,
    #[command(flatten)]
    tune: TuneArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Fine-tuning the encoder for tagging.
#[derive(Args, Debug, Clone)]
pub struct TuneArgs {
    /// Fine-tune the encoder end to end with a softmax or CRF layer over each word's first
    /// subword (epoch chosen on --dev). With --features emb the tuned tagger is the model;
    /// with hand,emb the CRF reads the hand-made features and the tuned tagger's
    /// cross-fitted per-tag scores.
    #[arg(long)]
    finetune: Option<TagHead>,
    #[command(flatten)]
    flags: TuneFlags,
    /// The fusion's cross-fitting: folds of the training sentences, each scored by a tagger
    /// tuned on the others (at least 2).
    #[arg(long, default_value_t = 3)]
    fusion_folds: usize,
}

impl TuneArgs {
    fn spec(&self) -> Option<NerFinetune> {
        self.finetune.map(|head| NerFinetune {
            head,
            params: self.flags.params(),
            run_dir: self.flags.run_dir.clone(),
            resume: self.flags.resume,
            folds: self.fusion_folds,
        })
    }
}

/// A feature block of the CRF.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NerFeature {
    /// Hand-made features (word, shape, affixes, neighbours, gazetteers).
    Hand,
    /// The encoder's contextual word vectors (first subword).
    Emb,
}
#[derive(Args, Debug)]
pub struct NerEvalArgs {
    /// Bundle folder written by `lmfuse ner train`.
    #[arg(long)]
    model: PathBuf,
    /// Tagged sentences (CoNLL or JSONL spans).
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    tags: TagArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// `lmfuse ner predict`.
#[derive(Args, Debug)]
pub struct NerPredictArgs {
    /// Bundle folder written by `lmfuse ner train`.
    #[arg(long)]
    model: PathBuf,
    /// Texts (plain, one a line; JSONL/CSV/TSV with --text-col), a CoNLL file with --conll,
    /// `-` for standard input.
    #[arg(long, short)]
    input: PathBuf,
    /// The input is a CoNLL file: tag its tokens (the last column is ignored).
    #[arg(long)]
    conll: bool,
    /// Field or column holding the text.
    #[arg(long, default_value = "text")]
    text_col: String,
    /// Output JSON Lines; `-` for standard output.
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
}

/// `lmfuse ner features`.
#[derive(Args, Debug)]
pub struct NerFeaturesArgs {
    /// Tagged sentences (CoNLL or JSONL spans).
    #[arg(long, short)]
    input: PathBuf,
    /// Output JSON Lines {"tokens", "tags", "features"}; `-` for standard output.
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
    #[command(flatten)]
    features: FeatureArgs,
    #[command(flatten)]
    tags: TagArgs,
}

/// Runs `lmfuse ner ...`.
pub fn run(command: &NerCommand, quiet: bool) -> anyhow::Result<()> {
    match command {
        NerCommand::Train(args) => train(args, quiet),
        NerCommand::Compare(args) => compare(args, quiet),
        NerCommand::Eval(args) => eval(args),
        NerCommand::Predict(args) => predict(args),
        NerCommand::Features(args) => features(args),
    }
}

impl NerFitArgs {
    /// The pipeline's spec, with the encoder when `emb` is read and hand-made features when
    /// `hand` is.
    fn spec(&self, hand: bool, emb: bool) -> NerTrainSpec {
        let encoder = emb.then(|| EncoderChoice {
            model: self.model.clone(),
            max_length: self.max_length,
            ..EncoderChoice::default()
        });
        NerTrainSpec {
            train: self.train.clone(),
            dev: self.dev.clone(),
            tags: self.tags.options(),
            crf: CrfParams {
                c2: self.c2.first().copied().unwrap_or(0.1),
                max_iter: self.max_iter,
                min_freq: self.min_freq,
                hand_features: hand,
                features: self.hand.params(),
                ..CrfParams::default()
            },
            c2_grid: self.c2.clone(),
            gazetteers: self.hand.gazetteer.clone(),
            encoder,
            finetune: self.tune.spec(),
        }
    }

    /// Scores the kept model on --test (with the seconds tagging took), then saves it.
    fn finish(
        &self,
        model: &NerModel,
        report: &NerTrainReport,
    ) -> anyhow::Result<Option<(EntityReport, f64)>> {
        let test = self
            .test
            .as_deref()
            .map(|path| score(model, path, self.tags.options()))
            .transpose()?;
        model.save(&self.out, Some(report))?;
        Ok(test)
    }
}

fn train(args: &NerTrainArgs, quiet: bool) -> anyhow::Result<()> {
    let fit = &args.fit;
    let hand = args.features.contains(&NerFeature::Hand);
    let spec = fit.spec(hand, args.features.contains(&NerFeature::Emb));
    let (model, report) = ner::train(&spec, &Bars::new(quiet || fit.json))?;
    let test = fit.finish(&model, &report)?;
    if fit.json {
        let json = serde_json::json!({
            "train": report,
            "test": test.as_ref().map(|t| &t.0),
            "test_tag_seconds": test.as_ref().map(|t| t.1),
        });
        outln!("{json}")?;
        return Ok(());
    }
    print_train(&report);
    print_test(test.as_ref())?;
    outln!("saved {}", fit.out.display())?;
    Ok(())
}

fn print_test(test: Option<&(EntityReport, f64)>) -> std::io::Result<()> {
    if let Some((test, seconds)) = test {
        outln!("test ({seconds:.2} s to tag):")?;
        print_report(test)?;
    }
    Ok(())
}

fn compare(args: &NerCompareArgs, quiet: bool) -> anyhow::Result<()> {
    let fit = &args.fit;
    let spec = fit.spec(true, true);
    let (model, reports) = ner::compare(&spec, &Bars::new(quiet || fit.json))?;
    let test = fit.finish(&model, &reports[0])?;
    if fit.json {
        let json = serde_json::json!({
            "leaderboard": reports,
            "best": reports[0].features,
            "test": test.as_ref().map(|t| &t.0),
            "test_tag_seconds": test.as_ref().map(|t| t.1),
        });
        outln!("{json}")?;
        return Ok(());
    }
    outln!("{:<15} {:>8} {:>6} {:>8}", "model", "dev F1", "c2", "fit s")?;
    for r in &reports {
        let f1 = r.dev.as_ref().map_or(0.0, |d| d.micro.f1);
        outln!(
            "{:<15} {:>8.2} {:>6} {:>8.1}",
            r.features,
            100.0 * f1,
            r.c2,
            r.fit_seconds
        )?;
    }
    outln!("best: {}", reports[0].features)?;
    print_test(test.as_ref())?;
    outln!("saved {}", fit.out.display())?;
    Ok(())
}

fn print_train(report: &NerTrainReport) {
    if let Some(best) = report.finetune.as_ref().and_then(|f| f.get("best")) {
        eprintln!(
            "fine-tuned the encoder for tagging: best dev F1 {:.2} at epoch {} (step {})",
            100.0 * best["dev_macro_f1"].as_f64().unwrap_or(0.0),
            best["epoch"],
            best["step"]
        );
    }
    if report.features.starts_with("ft-") {
        eprintln!(
            "trained on {} sentences ({} tags, types {}) in {:.1} s",
            report.train_sentences,
            report.scheme,
            report.types.join(", "),
            report.fit_seconds
        );
    } else {
        print_crf_fit(report);
    }
    if let Some(dev) = &report.dev {
        eprintln!("dev:");
        let _ = print_report(dev);
    }
}

fn print_crf_fit(report: &NerTrainReport) {
    eprintln!(
        "trained on {} sentences ({} tags, types {}): c2 {} after {} iterations, {} attributes, \
         {} weights, fit {:.1} s",
        report.train_sentences,
        report.scheme,
        report.types.join(", "),
        report.c2,
        report.fit.iterations,
        report.fit.attributes,
        report.fit.weights,
        report.fit_seconds
    );
}

/// Scores `model` on `path`; also returns the seconds tagging took.
fn score(model: &NerModel, path: &Path, tags: TagOptions) -> anyhow::Result<(EntityReport, f64)> {
    let set = ner::read_set(path, tags)?;
    let started = Instant::now();
    let report = model.evaluate(&set)?;
    Ok((report, started.elapsed().as_secs_f64()))
}

fn print_report(r: &EntityReport) -> std::io::Result<()> {
    outln!(
        "  {:<16} {:>9} {:>9} {:>9} {:>8}",
        "type",
        "precision",
        "recall",
        "f1",
        "support"
    )?;
    let rows = r.per_type.iter().map(|(t, s)| (t.as_str(), s));
    let averages = [
        ("micro", &r.micro),
        ("macro", &r.macro_avg),
        ("weighted", &r.weighted),
    ];
    for (name, s) in rows.chain(averages) {
        outln!(
            "  {name:<16} {:>9.2} {:>9.2} {:>9.2} {:>8}",
            100.0 * s.precision,
            100.0 * s.recall,
            100.0 * s.f1,
            s.support
        )?;
    }
    Ok(())
}

fn eval(args: &NerEvalArgs) -> anyhow::Result<()> {
    let model = NerModel::load(&args.model)?;
    let (report, seconds) = score(&model, &args.data, args.tags.options())?;
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        json["tag_seconds"] = seconds.into();
        outln!("{json}")?;
    } else {
        outln!(
            "{} sentences, tagged in {seconds:.2} s (strict entity scores, %):",
            report.sentences
        )?;
        print_report(&report)?;
    }
    Ok(())
}

fn predict(args: &NerPredictArgs) -> anyhow::Result<()> {
    let model = NerModel::load(&args.model)?;
    let lines: Vec<serde_json::Value> = if args.conll {
        let options = TagOptions {
            scheme: None,
            repair: true,
        };
        let set = ner::read_set(&args.input, options)?;
        let tokens: Vec<Vec<String>> = set.sentences.into_iter().map(|s| s.tokens).collect();
        model
            .find_in_tokens(&tokens)?
            .into_iter()
            .map(|(text, entities)| serde_json::json!({"text": text, "entities": entities}))
            .collect()
    } else {
        let (texts, _) =
            lmfuse_pipeline::data::read_unlabelled(&args.input, None, &args.text_col, &[])?;
        let found = model.find(&texts)?;
        texts
            .iter()
            .zip(found)
            .map(|(text, entities)| serde_json::json!({"text": text, "entities": entities}))
            .collect()
    };
    write_lines(&args.output, &lines)
}

fn features(args: &NerFeaturesArgs) -> anyhow::Result<()> {
    let set = ner::read_set(&args.input, args.tags.options())?;
    let rows = ner::feature_rows(&set, &args.features.params(), &args.features.gazetteer)?;
    write_lines(&args.output, &rows)
}
