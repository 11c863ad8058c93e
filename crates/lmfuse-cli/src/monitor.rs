//! `lmfuse monitor`: run the stream monitor (HTTP ingest, a followed file or stdin), feed it
//! a file, list its alerts, and make a seeded stream for replays.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use lmfuse_monitor::retrain::RetrainSpec;
use lmfuse_monitor::simulate::{simulate, StreamSpec};
use lmfuse_monitor::store::{Database, Store};
use lmfuse_monitor::{Feed, Monitor, MonitorConfig, MonitorError, Workers};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `lmfuse monitor ...`.
#[derive(Subcommand, Debug)]
pub enum MonitorCommand {
    /// Run the monitor: `POST /events`, `GET /alerts`, `POST /alerts/{id}/acknowledge|resolve`,
    /// `POST /feedback`, `GET /drift`, `GET /models`, `GET /health`, and the dashboard at `/`;
    /// events are classified, counted and watched by the rules in the background, and alerts
    /// delivered to the sinks.
    Run(RunArgs),
    /// Store the events of an NDJSON file (or `-` for stdin), process them, deliver the
    /// alerts they raise, and print a JSON report.
    Ingest(IngestArgs),
    /// List the alerts of a monitor database (one JSON object per line).
    Alerts(AlertsArgs),
    /// Train a challenger for a model on its training data plus the corrected labels sent to
    /// `POST /feedback`, compare it with the serving version on held-out feedback and the
    /// test set, and promote it only when it is better (a running monitor loads it before its
    /// next batch). Prints the comparison.
    Retrain(RetrainArgs),
    /// Write a seeded stream (NDJSON events) drawn from a labelled data set, with injected
    /// negative bursts, and the bursts' times (JSON).
    Simulate(SimulateArgs),
}

/// The configuration and database every monitor command opens.
#[derive(Args, Debug)]
pub struct Setup {
    /// The configuration file (TOML: models, rules, sinks; see docs/monitor.md).
    #[arg(long)]
    config: PathBuf,
    /// The database: a SQLite file (created when absent) or a PostgreSQL URL
    /// (`postgres://user:password@host/name`).
    #[arg(long)]
    db: Database,
}

/// `lmfuse monitor run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    setup: Setup,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free one, printed on stderr).
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// Also follow this NDJSON file as it grows (ids make a re-read harmless).
    #[arg(long)]
    follow: Option<PathBuf>,
}

/// `lmfuse monitor ingest`.
#[derive(Args, Debug)]
pub struct IngestArgs {
    #[command(flatten)]
    setup: Setup,
    /// NDJSON events (`-`: stdin).
    #[arg(long)]
    input: PathBuf,
}

/// `lmfuse monitor alerts`.
#[derive(Args, Debug)]
pub struct AlertsArgs {
    /// The database: a SQLite file or a PostgreSQL URL.
    #[arg(long)]
    db: Database,
    /// Only alerts in this state (open, acknowledged, resolved).
    #[arg(long)]
    state: Option<String>,
    /// At most this many, newest window first.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
}

/// `lmfuse monitor retrain`.
#[derive(Args, Debug)]
pub struct RetrainArgs {
    #[command(flatten)]
    setup: Setup,
    /// The configured model to retrain.
    #[arg(long)]
    model: String,
    /// Training data instead of the model's `train` (labelled file).
    #[arg(long)]
    train: Option<PathBuf>,
    /// Test set instead of the model's `test` (labelled file).
    #[arg(long)]
    test: Option<PathBuf>,
    /// The challenger's head (default: the serving version's).
    #[arg(long, value_enum)]
    head: Option<crate::classify::HeadArg>,
    /// The challenger's feature blocks (default: the serving version's).
    #[arg(long, value_enum, value_delimiter = ',')]
    features: Option<Vec<crate::classify::FeatureArg>>,
    /// Share of the corrected labels held out for the comparison.
    #[arg(long, default_value_t = 1.0 / 3.0)]
    holdout: f64,
    /// Seed of the hold-out, the dev slice and the head.
    #[arg(long, default_value_t = 13)]
    seed: u64,
    /// Accuracy the challenger must gain (hold-out and test together) to be promoted.
    #[arg(long, default_value_t = 0.0)]
    min_gain: f64,
    /// Most accuracy the challenger may lose on the test set alone.
    #[arg(long, default_value_t = 0.01)]
    max_test_drop: f64,
    #[command(flatten)]
    cache: crate::classify::CacheArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

/// `lmfuse monitor simulate`.
#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Labelled texts (JSONL, CSV, TSV, Parquet).
    #[arg(long)]
    data: PathBuf,
    /// Text column.
    #[arg(long, default_value = "text")]
    text_col: String,
    /// Label column.
    #[arg(long, default_value = "label")]
    label_col: String,
    /// The label of negative texts (the others are drawn in steady periods too).
    #[arg(long, default_value = "negative")]
    negative_label: String,
    /// Simulated days.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Entities.
    #[arg(long, default_value_t = 20)]
    entities: usize,
    /// Mean events per hour of each entity.
    #[arg(long, default_value_t = 3.0)]
    events_per_hour: f64,
    /// Share of negative texts in steady periods.
    #[arg(long, default_value_t = 0.2)]
    negative_share: f64,
    /// Injected negative bursts.
    #[arg(long, default_value_t = 3)]
    bursts: usize,
    /// Hours of a burst.
    #[arg(long, default_value_t = 3)]
    burst_hours: u32,
    /// Extra events per hour in a burst.
    #[arg(long, default_value_t = 20.0)]
    burst_events_per_hour: f64,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where to write the events (NDJSON).
    #[arg(long)]
    out: PathBuf,
    /// Where to write the bursts (JSON).
    #[arg(long)]
    truth: PathBuf,
}

/// Runs a `lmfuse monitor` command.
pub fn run(command: &MonitorCommand) -> anyhow::Result<()> {
    match command {
        MonitorCommand::Run(args) => serve(args),
        MonitorCommand::Ingest(args) => ingest(args),
        MonitorCommand::Alerts(args) => alerts(args),
        MonitorCommand::Retrain(args) => retrain(args),
        MonitorCommand::Simulate(args) => write_stream(args),
    }
}

/// The monitor of `setup`, its classifiers loaded.
fn open(setup: &Setup) -> anyhow::Result<Arc<Monitor>> {
    let config = MonitorConfig::load(&setup.config)?;
    let loader = lmfuse_monitor::bundle_loader();
    Ok(Arc::new(Monitor::open(config, setup.db.clone(), loader)?))
}

fn report_error(e: &MonitorError) {
    eprintln!("lmfuse: monitor: {e}");
}

fn report_retrain(r: &lmfuse_monitor::retrain::RetrainReport) {
    let verdict = if r.promoted { "promoted" } else { "refused" };
    eprintln!(
        "lmfuse: monitor: scheduled retrain of {}: v{} {verdict} ({})",
        r.model, r.challenger_version, r.reason
    );
}

fn serve(args: &RunArgs) -> anyhow::Result<()> {
    let monitor = open(&args.setup)?;
    let workers = Workers::spawn(
        monitor.clone(),
        Arc::new(report_error),
        Arc::new(report_retrain),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let follower = args
        .follow
        .clone()
        .map(|path| follow(monitor.clone(), path, stop.clone()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        eprintln!("lmfuse: monitor listening on http://{addr}");
        lmfuse_monitor::http::serve(listener, monitor.clone(), lmfuse_server::terminate_signal())
            .await
            .context("the monitor's server failed")
    });
    stop.store(true, Ordering::SeqCst);
    if let Some(f) = follower {
        let _ = f.join();
    }
    workers.stop();
    eprintln!("lmfuse: monitor stopped");
    served
}

fn follow(
    monitor: Arc<Monitor>,
    path: PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let source = path.display().to_string();
        let result = std::fs::File::open(&path)
            .map_err(|e| MonitorError::Io {
                path: path.clone(),
                source: e,
            })
            .and_then(|f| {
                Feed {
                    source: &source,
                    batch: monitor.config().batch,
                    follow_until: Some(&stop),
                }
                .run(&monitor, std::io::BufReader::new(f), &report_error)
            });
        if let Err(e) = result {
            eprintln!("lmfuse: monitor: stopped following {source}: {e}");
        }
    })
}

fn ingest(args: &IngestArgs) -> anyhow::Result<()> {
    let monitor = open(&args.setup)?;
    let stdin = args.input == Path::new("-");
    let source = if stdin {
        "stdin".to_string()
    } else {
        args.input.display().to_string()
    };
    let reader: Box<dyn std::io::BufRead> = if stdin {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(&args.input)
            .with_context(|| format!("cannot open {}", args.input.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let feed = Feed {
        source: &source,
        batch: monitor.config().batch,
        follow_until: None,
    };
    let report = feed.run(&monitor, reader, &report_error)?;
    let processed = monitor.process_all()?;
    let delivered = monitor.deliver_due()?;
    let status = monitor.status()?;
    let out = serde_json::json!({
        "feed": report, "processed": processed, "delivered": delivered, "monitor": status,
    });
    println!("{out}");
    if report.refused > 0 {
        bail!(
            "{} of {} lines were refused (see above)",
            report.refused,
            report.lines
        );
    }
    Ok(())
}

fn alerts(args: &AlertsArgs) -> anyhow::Result<()> {
    if let Database::Sqlite(path) = &args.db {
        if !path.is_file() {
            bail!("no monitor database at {}", path.display());
        }
    }
    let mut store = Store::open(args.db.clone())?;
    let list = store.read(|tx| tx.alerts(args.state.as_deref(), args.limit))?;
    let mut out = std::io::stdout().lock();
    for a in list {
        writeln!(out, "{a}")?;
    }
    Ok(())
}

fn retrain(args: &RetrainArgs) -> anyhow::Result<()> {
    let config = MonitorConfig::load(&args.setup.config)?;
    let spec = RetrainSpec {
        train: args.train.clone(),
        test: args.test.clone(),
        head: args.head.map(|h| h.kind()),
        features: args.features.as_deref().map(crate::classify::feature_set),
        holdout: args.holdout,
        seed: args.seed,
        min_gain: args.min_gain,
        max_test_drop: args.max_test_drop,
        cache: args.cache.spec(),
        ..RetrainSpec::new(&args.model)
    };
    let bars = crate::progress::Bars::new(args.quiet || args.json);
    let report = lmfuse_monitor::retrain::retrain(&config, &args.setup.db, &spec, &bars)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let verdict = if report.promoted {
        "promoted"
    } else {
        "refused"
    };
    let fmt = |s: &lmfuse_monitor::retrain::Scores| {
        let fb = s.feedback.map_or("-".into(), |f| format!("{f:.4}"));
        format!(
            "feedback {fb}  test {:.4}  combined {:.4}",
            s.test, s.combined
        )
    };
    println!(
        "{}: challenger v{} {verdict} over v{} ({})",
        report.model, report.challenger_version, report.champion_version, report.reason
    );
    println!("  champion   {}", fmt(&report.champion));
    println!("  challenger {}", fmt(&report.challenger));
    println!(
        "  feedback: {} trained on, {} held out; bundle {}",
        report.feedback_train, report.feedback_holdout, report.challenger_bundle
    );
    Ok(())
}

fn write_stream(args: &SimulateArgs) -> anyhow::Result<()> {
    let data = lmfuse_data::read_labelled(&args.data, None, &args.text_col, &args.label_col, &[])?;
    let (mut negative, mut other) = (Vec::new(), Vec::new());
    for (text, label) in data.texts.iter().zip(&data.labels) {
        if *label == args.negative_label {
            negative.push(text.clone());
        } else {
            other.push(text.clone());
        }
    }
    if negative.is_empty() || other.is_empty() {
        bail!(
            "{}: needs texts labelled {:?} and texts with other labels",
            args.data.display(),
            args.negative_label
        );
    }
    let spec = StreamSpec {
        days: args.days,
        entities: args.entities,
        events_per_hour: args.events_per_hour,
        negative_share: args.negative_share,
        bursts: args.bursts,
        burst_hours: args.burst_hours,
        burst_events_per_hour: args.burst_events_per_hour,
        seed: args.seed,
        ..StreamSpec::default()
    };
    let (events, bursts) = simulate(&spec, &negative, &other);
    let mut lines = String::new();
    for e in &events {
        lines.push_str(&lmfuse_monitor::event::to_json(e).to_string());
        lines.push('\n');
    }
    let truth = serde_json::to_string_pretty(&bursts)?;
    for (path, bytes) in [
        (&args.out, lines.as_bytes()),
        (&args.truth, truth.as_bytes()),
    ] {
        lmfuse_data::atomic_write(path, |w| w.write_all(bytes))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "lmfuse: {} events, {} bursts -> {}, {}",
        events.len(),
        bursts.len(),
        args.out.display(),
        args.truth.display()
    );
    Ok(())
}
