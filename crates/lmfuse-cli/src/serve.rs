//! `lmfuse serve`: a bundle (a classifier or a named-entity tagger), a search index or an
//! answer engine behind HTTP. The routes, batching, limits and metrics are in
//! `lmfuse-server`, the bundle behind them in `lmfuse_pipeline::serve`; this module turns
//! flags (with environment fallbacks) into the server's limits and runs it until a signal.

use anyhow::Context;
use clap::{Args, ValueEnum};
use lmfuse_server::{OverLength, Reloader, ServedTask, Server, ServerConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to do with texts over the token limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OverLengthArg {
    /// Cut them at the limit, as `lmfuse embed` and `predict` do.
    Truncate,
    /// Refuse the request with 413 `too_many_tokens`.
    Reject,
}

/// Arguments of `lmfuse serve`. Every limit has an environment fallback.
#[derive(Args, Debug)]
#[command(group(
    clap::ArgGroup::new("served")
        .required(true)
        .multiple(false)
        .args(["model", "index", "faq"])
))]
pub struct ServeArgs {
    /// Bundle folder written by `lmfuse train`, `lmfuse compare --out` or `lmfuse ner train`
    /// (a tagger: `POST /` and `/predict` answer its entities); an index or answer-engine
    /// folder is recognised too.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Index folder written by `lmfuse index build`: `POST /search`, and its encoder on
    /// `/rerank`, `/similarity`, `/embed`.
    #[arg(long)]
    index: Option<PathBuf>,
    /// Answer-engine folder written by `lmfuse faq build`: `POST /answer` (with sessions),
    /// and its encoder on `/rerank`, `/similarity`, `/embed`.
    #[arg(long)]
    faq: Option<PathBuf>,
    /// Encoder folder or hub id instead of the one recorded in the bundle (same weights).
    #[arg(long)]
    encoder: Option<String>,
    /// Run a classifier bundle's encoders in this precision (f32, bf16 or int8) instead of the
    /// recorded one.
    #[arg(long)]
    precision: Option<lmfuse_core::Precision>,
    /// For an index: a cross-encoder (folder or hub id, e.g.
    /// cross-encoder/ms-marco-MiniLM-L6-v2) that /rerank scores pairs with and that rescores
    /// /search's best documents.
    #[arg(long, value_name = "MODEL")]
    reranker: Option<String>,
    /// Documents the cross-encoder rescores per /search query (at least its k).
    #[arg(long, default_value_t = 100, requires = "reranker")]
    rerank_depth: usize,
    /// Address to bind. Loopback by default: serving other machines is a deliberate choice
    /// (and then an --api-key is advisable).
    #[arg(long, env = "LMFUSE_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to bind (0: any free port; the chosen one is printed).
    #[arg(long, env = "LMFUSE_PORT", default_value_t = 8080)]
    port: u16,
    /// Bearer token required by every route but /, /health and /ready.
    #[arg(long, env = "LMFUSE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Largest request body in bytes (default 2 MB, as text-embeddings-inference).
    #[arg(long, env = "LMFUSE_MAX_BODY_BYTES", default_value_t = lmfuse_server::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Most texts in one request (default 32, as text-embeddings-inference).
    #[arg(long, env = "LMFUSE_MAX_BATCH_SIZE", default_value_t = lmfuse_server::DEFAULT_MAX_BATCH_SIZE)]
    max_batch_size: usize,
    /// Most characters in one text (default 20,000: far beyond what the model reads, so
    /// tokenizing longer texts would only burn CPU).
    #[arg(long, env = "LMFUSE_MAX_INPUT_CHARS", default_value_t = lmfuse_server::DEFAULT_MAX_INPUT_CHARS)]
    max_input_chars: usize,
    /// Most tokens per text, special tokens included (default and maximum: the bundle's
    /// maximum sequence length, 256 for MiniLM). Classifier bundles only: a tagger reads
    /// whole texts.
    #[arg(long, env = "LMFUSE_MAX_INPUT_TOKENS")]
    max_input_tokens: Option<usize>,
    /// Texts over --max-input-tokens: truncate (default) or reject with 413.
    #[arg(
        long,
        env = "LMFUSE_OVER_LENGTH",
        value_enum,
        default_value = "truncate"
    )]
    over_length: OverLengthArg,
    /// Most requests queued or running at once; beyond, 429 at once (default 128).
    #[arg(long, env = "LMFUSE_MAX_QUEUE", default_value_t = lmfuse_server::DEFAULT_MAX_QUEUE)]
    max_queue: usize,
    /// Token budget of one merged batch of concurrent requests (default 16,384).
    #[arg(long, env = "LMFUSE_MAX_BATCH_TOKENS", default_value_t = lmfuse_server::DEFAULT_MAX_BATCH_TOKENS)]
    max_batch_tokens: usize,
    /// Time limit of one request, queue and inference together, in ms (default 30,000);
    /// beyond, 504.
    #[arg(long, env = "LMFUSE_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// Seconds in-flight requests get to finish after SIGTERM (default 30).
    #[arg(long, env = "LMFUSE_SHUTDOWN_GRACE_S", default_value_t = 30)]
    shutdown_grace_s: u64,
}

impl ServeArgs {
    /// The folder to serve, checked to be what its flag says.
    fn folder(&self) -> anyhow::Result<PathBuf> {
        use lmfuse_pipeline::serve::{served_kind, ServedKind};
        if self.encoder.is_some() && self.model.is_none() {
            anyhow::bail!(
                "--encoder applies to --model bundles: an index or an answer engine is served \
                 with the encoder it was built with"
            );
        }
        let (dir, want, what) = match (&self.model, &self.index, &self.faq) {
            (Some(m), _, _) => return Ok(m.clone()),
            (_, Some(i), _) => (i, ServedKind::Index, "an index (no index.json)"),
            (_, _, Some(f)) => (f, ServedKind::Faq, "an answer engine (no faq.json)"),
            _ => anyhow::bail!("give --model, --index or --faq"),
        };
        if served_kind(dir) != want {
            anyhow::bail!("{} is not {what}", dir.display());
        }
        Ok(dir.clone())
    }

    fn config(&self) -> ServerConfig {
        ServerConfig {
            max_body_bytes: self.max_body_bytes,
            max_batch_size: self.max_batch_size,
            max_input_chars: self.max_input_chars,
            over_length: match self.over_length {
                OverLengthArg::Truncate => OverLength::Truncate,
                OverLengthArg::Reject => OverLength::Reject,
            },
            max_queue: self.max_queue,
            max_batch_tokens: self.max_batch_tokens,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_s),
            api_key: self.api_key.clone().filter(|k| !k.is_empty()),
        }
    }
}

/// Runs `lmfuse serve` until SIGTERM or Ctrl-C.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let config = args.config();
    let folder = args.folder()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("lmfuse-http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args, folder, config))
}

async fn serve(args: &ServeArgs, folder: PathBuf, config: ServerConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    let reloader = lmfuse_pipeline::serve::reloader(
        folder.clone(),
        lmfuse_pipeline::serve::ServeOptions {
            encoder: args.encoder.clone(),
            max_tokens: args.max_input_tokens,
            reranker: args.reranker.clone(),
            rerank_depth: args.rerank_depth,
            precision: args.precision,
        },
    );
    // From the effective configuration: an empty --api-key is no key.
    let has_key = config.api_key.is_some();
    let server = Server::new(config, Some(reloader.clone()))?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() && !has_key {
        eprintln!("lmfuse: warning: serving {addr} beyond this machine without --api-key");
    }
    eprintln!(
        "lmfuse: listening on http://{addr} (live); loading {}",
        folder.display()
    );
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let loading = load_beside(&server, reloader, folder, started, failed_tx);
    #[cfg(unix)]
    reload_on_sighup(&server)?;
    let startup_error = Arc::new(std::sync::Mutex::new(None));
    let shutdown = {
        let startup_error = startup_error.clone();
        async move {
            tokio::select! {
                () = lmfuse_server::terminate_signal() => {
                    eprintln!("lmfuse: stopping: finishing in-flight requests");
                }
                Ok(e) = failed_rx => {
                    *startup_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            }
        }
    };
    server.serve(listener, shutdown).await?;
    if let Some(e) = startup_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return Err(e);
    }
    loading.abort();
    eprintln!("lmfuse: stopped");
    Ok(())
}

/// Loads and warms up the bundle beside the listener (`/health` answers at once, `/ready`
/// once warmed); a failure goes to `failed`, which stops the server.
fn load_beside(
    server: &Server,
    reloader: Arc<Reloader>,
    model: PathBuf,
    started: Instant,
    failed: tokio::sync::oneshot::Sender<anyhow::Error>,
) -> tokio::task::JoinHandle<()> {
    let server = server.clone();
    tokio::task::spawn_blocking(move || {
        let result = reloader(None)
            .and_then(|b| b.health().map(|()| b))
            .map_err(|e| {
                anyhow::anyhow!("{e}").context(format!("cannot serve {}", model.display()))
            });
        match result {
            Ok(b) => {
                let what = match b.task() {
                    ServedTask::Classification => format!("with encoder {}", b.model_name()),
                    ServedTask::TokenClassification => "(named-entity tagger)".into(),
                    ServedTask::Search => format!("(search index, encoder {})", b.model_name()),
                    ServedTask::Answer => format!("(answer engine, encoder {})", b.model_name()),
                };
                server.set_backend(b);
                eprintln!(
                    "lmfuse: ready: {} {what} ({:.2} s)",
                    model.display(),
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                let _ = failed.send(e);
            }
        }
    })
}

/// On SIGHUP, reloads the bundle folder (replaced atomically by `lmfuse train --out`).
#[cfg(unix)]
fn reload_on_sighup(server: &Server) -> anyhow::Result<()> {
    let server = server.clone();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match server.reload(None).await {
                Ok(_) => eprintln!("lmfuse: reloaded on SIGHUP"),
                Err(e) => eprintln!("lmfuse: {e}"),
            }
        }
    });
    Ok(())
}
