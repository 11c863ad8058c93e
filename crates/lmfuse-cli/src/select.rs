//! `lmfuse select`: the texts of a pool to label next, or (`--simulate`) the learning curves
//! of the strategies on a labelled set whose labels stay hidden until bought.

use crate::classify::{CacheArgs, DataArgs};
use crate::output::{write_lines, write_to};
use crate::progress::Bars;
use crate::ModelArgs;
use clap::Args;
use lmfuse_pipeline::active::{
    curves_svg, learning_curves, select_next, CurvesReport, CurvesSpec, SimulateSpec, Strategy,
};
use lmfuse_pipeline::model::Model;
use std::path::{Path, PathBuf};

/// `lmfuse select`.
#[derive(Args, Debug)]
pub struct SelectArgs {
    /// Texts to choose from (JSONL/CSV/TSV/Parquet with --text-col, or plain text).
    #[arg(long, required_unless_present = "simulate")]
    pool: Option<PathBuf>,
    /// The current classifier (a bundle): its probabilities rank by uncertainty, its encoder
    /// embeds for diversity.
    #[arg(long, required_unless_present = "simulate")]
    bundle: Option<PathBuf>,
    /// Texts labelled already (same format as the pool): diversity keeps away from them.
    #[arg(long)]
    labelled: Option<PathBuf>,
    /// How many texts to choose (with --simulate: labels bought in all).
    #[arg(long)]
    budget: usize,
    /// random, least-confidence, margin, entropy, kcenter (diversity) or hybrid (the most
    /// diverse of the 10 × budget least sure by margin).
    #[arg(long, default_value = "margin")]
    strategy: Strategy,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The chosen texts as JSON Lines ({rank, row, text, uncertainty}); `-` for standard
    /// output. With --simulate: the curves as JSON.
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
    /// Run the whole loop on labelled data instead (--train is the pool, its labels hidden
    /// until bought; --test scores the model after each round) and write learning curves.
    #[arg(long)]
    simulate: bool,
    /// Labelled pool of the simulation.
    #[arg(long, requires = "simulate")]
    train: Option<PathBuf>,
    /// Test set of the simulation.
    #[arg(long, requires = "simulate")]
    test: Option<PathBuf>,
    /// Simulation: labels bought at random first.
    #[arg(long, default_value_t = 20)]
    initial: usize,
    /// Simulation: labels bought per round.
    #[arg(long, default_value_t = 50)]
    step: usize,
    /// Simulation: the strategies compared, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "random,margin,entropy,kcenter,hybrid"
    )]
    strategies: Vec<Strategy>,
    /// Simulation: runs per strategy (seeds 0, 1, ...).
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// Simulation: inverse regularisation of the logistic regression on the embeddings (10:
    /// chosen on subj's dev set, see bench/results/active.md).
    #[arg(long, default_value_t = 10.0)]
    c: f64,
    /// Simulation: also draw the curves as an SVG file.
    #[arg(long)]
    svg: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    encoder: ModelArgs,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Runs `lmfuse select`.
pub fn run(args: &SelectArgs, quiet: bool) -> anyhow::Result<()> {
    match args.simulate {
        true => simulate(args, quiet),
        false => select(args, quiet),
    }
}

fn select(args: &SelectArgs, quiet: bool) -> anyhow::Result<()> {
    let (pool, bundle) = (
        args.pool.as_deref().expect("required by clap"),
        args.bundle.as_deref().expect("required by clap"),
    );
    let model = Model::load(bundle, None)?;
    let data = args.data.spec();
    let read = |path: &Path| lmfuse_pipeline::data::read_input(path, data.format, &data.text_col);
    let texts = read(pool)?;
    let labelled = match &args.labelled {
        Some(path) => read(path)?,
        None => Vec::new(),
    };
    let bars = Bars::new(quiet);
    let chosen = select_next(
        &model,
        &texts,
        &labelled,
        (args.strategy, args.budget, args.seed),
        &args.cache.spec(),
        &bars,
    )?;
    write_lines(&args.output, &chosen)
}

fn simulate(args: &SelectArgs, quiet: bool) -> anyhow::Result<()> {
    let (Some(train), Some(test)) = (&args.train, &args.test) else {
        anyhow::bail!("--simulate needs --train (the pool, labelled) and --test");
    };
    let spec = CurvesSpec {
        strategies: args.strategies.clone(),
        seeds: (0..args.seeds).collect(),
        run: SimulateSpec {
            strategy: Strategy::Random,
            initial: args.initial,
            step: args.step,
            budget: args.budget,
            c: args.c,
            seed: 0,
        },
    };
    let bars = Bars::new(quiet);
    let report = learning_curves(
        train,
        test,
        &args.data.spec(),
        (&args.encoder.choice(), &args.cache.spec()),
        &spec,
        &bars,
    )?;
    print_table(&report);
    if let Some(svg) = &args.svg {
        let title = format!(
            "{} (pool {}, test {})",
            train.display(),
            report.pool,
            report.test
        );
        write_to(svg, |w| w.write_all(curves_svg(&report, &title).as_bytes()))?;
    }
    write_to(&args.output, |w| {
        serde_json::to_writer_pretty(&mut *w, &report)?;
        w.write_all(b"\n")
    })
}

/// The mean accuracy (± std) of each strategy at each number of labels, on stderr.
fn print_table(report: &CurvesReport) {
    let names: Vec<&str> = report.curves.iter().map(|c| c.strategy.name()).collect();
    eprintln!("| labels | {} |", names.join(" | "));
    eprintln!("|---|{}", "---|".repeat(names.len()));
    for i in 0..report.curves[0].points.len() {
        let cells: Vec<String> = report
            .curves
            .iter()
            .map(|c| {
                format!(
                    "{:.4} ± {:.4}",
                    c.points[i].accuracy, c.points[i].accuracy_std
                )
            })
            .collect();
        eprintln!(
            "| {} | {} |",
            report.curves[0].points[i].labels,
            cells.join(" | ")
        );
    }
    for c in &report.curves {
        match c.labels_to_match_random {
            Some(n) => eprintln!(
                "{}: random's final accuracy reached with {n} labels",
                c.strategy.name()
            ),
            None => eprintln!("{}: random's final accuracy not reached", c.strategy.name()),
        }
    }
}
