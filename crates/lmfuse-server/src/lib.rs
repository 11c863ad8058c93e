//! HTTP serving for lmfuse: axum routes over a [`Backend`], with dynamic batching, admission
//! control, input limits, health and readiness, Prometheus metrics, an API key, reloads and
//! graceful shutdown.
//!
//! The HTTP layer knows nothing of encoders or heads: the binary implements [`Backend`] with a
//! bundle and its encoder, tests with a fake. Every failure is an [`ApiError`], mapped to a
//! status and a JSON body in one place ([`ApiError::response`]): lmfuse's `{error, type}`, or
//! OpenAI's `{error: {message, type, param, code}}` on the `/v1/` routes.
//!
//! Routes speak three APIs: lmfuse's own (`/classify`, `/info`, `/admin/reload`, ...),
//! text-embeddings-inference's (`POST /`, `/predict`, `/embed`, so that `huggingface_hub`'s
//! `InferenceClient` works unchanged) and OpenAI's (`/v1/embeddings`, `/v1/models`). A
//! named-entity tagger ([`ServedTask::TokenClassification`]) answers Hugging Face's
//! token-classification shape on `POST /` and `/predict` instead.

mod backend;
mod batcher;
mod body;
pub mod client;
mod config;
mod error;
mod metrics;
mod openai;
mod search;
mod tei;

pub use backend::{
    AnswerQuery, Backend, BackendError, Oos, Prediction, Reloader, RerankScores, SearchHit,
    SearchQuery, ServedTask, TokenCount, TokenEntity, MAX_RESULTS,
};
pub use config::{
    ConfigError, OverLength, ServerConfig, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_INPUT_CHARS, DEFAULT_MAX_QUEUE, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SHUTDOWN_GRACE,
};
pub use error::{ApiError, Dialect};
pub use metrics::Metrics;
pub use search::{cosine, MAX_QUERY_CHARS};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use batcher::{BackendSlot, Job, JobOutput, Work};
use serde_json::{json, Value};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, OwnedMutexGuard, Semaphore, SemaphorePermit};

/// What can stop the server from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A limit is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Socket or thread failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The failure.
        source: std::io::Error,
    },
    /// The shutdown grace period ran out while requests were still open (they were cut).
    #[error("the shutdown grace period ({grace_s} s) expired with {open_requests} request(s) still open")]
    GraceExpired {
        /// Requests that had not finished.
        open_requests: usize,
        /// The grace period in seconds.
        grace_s: f64,
    },
}

/// Shared state of the routes.
struct AppState {
    config: ServerConfig,
    slot: Arc<BackendSlot>,
    queue: mpsc::UnboundedSender<Job>,
    admission: Semaphore,
    metrics: Arc<Metrics>,
    reloader: Option<Arc<Reloader>>,
    /// Held by the task that runs a reload (not by the request that asked for it), so that
    /// a client going away cannot let a second load start beside the first.
    reload_lock: Arc<tokio::sync::Mutex<()>>,
    stopping: AtomicBool,
    /// Requests inside the router (headers read, response not yet produced).
    open_requests: AtomicUsize,
    /// When the serving model was installed, in seconds since the Unix epoch (`/v1/models`).
    installed_at: AtomicU64,
}

/// A server: state, batching worker and routes. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    /// Checks `config` and starts the batching worker. The server is not ready until
    /// [`Server::set_backend`] is called.
    pub fn new(config: ServerConfig, reloader: Option<Arc<Reloader>>) -> Result<Self, ServerError> {
        config.check()?;
        // The semaphore bounds the requests in the queue, so the channel itself needs no bound.
        let (tx, rx) = mpsc::unbounded_channel();
        let slot = Arc::new(BackendSlot::default());
        let metrics = Arc::new(Metrics::default());
        batcher::spawn_worker(rx, slot.clone(), metrics.clone(), config.max_batch_tokens).map_err(
            |source| ServerError::Io {
                context: "cannot start the batching thread",
                source,
            },
        )?;
        Ok(Self {
            state: Arc::new(AppState {
                admission: Semaphore::new(config.max_queue),
                config,
                slot,
                queue: tx,
                metrics,
                reloader,
                reload_lock: Arc::new(tokio::sync::Mutex::new(())),
                stopping: AtomicBool::new(false),
                open_requests: AtomicUsize::new(0),
                installed_at: AtomicU64::new(0),
            }),
        })
    }

    /// Installs the serving model (already loaded and warmed): `/ready` turns 200.
    pub fn set_backend(&self, backend: Arc<dyn Backend>) {
        self.state.slot.set(backend);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.state.installed_at.store(now, Ordering::Relaxed);
        self.state.metrics.ready.store(1, Ordering::Relaxed);
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// Requests being handled now (headers read, response not yet produced).
    pub fn open_requests(&self) -> usize {
        self.state.open_requests.load(Ordering::SeqCst)
    }

    /// Loads a model beside the serving one (the one the server started with, or the bundle
    /// folder `model`), checks it with a forward pass, and swaps it in. Requests keep being
    /// served throughout; on failure the previous model stays. One reload at a time: another
    /// one meanwhile fails at once with [`ApiError::ReloadInProgress`]. The load runs in its
    /// own task, so dropping this future (a client going away) neither stops it nor lets
    /// another load start beside it.
    pub async fn reload(&self, model: Option<String>) -> Result<Value, ApiError> {
        let guard = self.try_lock_reload()?;
        self.reload_locked(guard, model).await
    }

    fn try_lock_reload(&self) -> Result<OwnedMutexGuard<()>, ApiError> {
        self.state
            .reload_lock
            .clone()
            .try_lock_owned()
            .map_err(|_| ApiError::ReloadInProgress)
    }

    async fn reload_locked(
        &self,
        guard: OwnedMutexGuard<()>,
        model: Option<String>,
    ) -> Result<Value, ApiError> {
        let server = self.clone();
        tokio::spawn(async move {
            let result = server.load_and_swap(model).await;
            drop(guard);
            result
        })
        .await
        .map_err(|e| ApiError::ReloadFailed(format!("the reload task failed: {e}")))?
    }

    async fn load_and_swap(&self, model: Option<String>) -> Result<Value, ApiError> {
        let state = &self.state;
        let Some(reloader) = state.reloader.clone() else {
            return Err(ApiError::ReloadFailed(
                "this server was started without a reloadable model".into(),
            ));
        };
        let started = Instant::now();
        let loaded = tokio::task::spawn_blocking(move || {
            let backend = reloader(model.as_deref())?;
            backend.health()?;
            Ok::<_, BackendError>(backend)
        })
        .await
        .map_err(|e| ApiError::ReloadFailed(format!("the loader panicked: {e}")))
        .and_then(|r| r.map_err(|e| ApiError::ReloadFailed(e.to_string())));
        match loaded {
            Ok(backend) => {
                let info = backend.info();
                self.set_backend(backend);
                state.metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
                Ok(json!({
                    "reloaded": true,
                    "seconds": started.elapsed().as_secs_f64(),
                    "model": info,
                }))
            }
            Err(e) => {
                state.metrics.reloads_failed.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// The routes.
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        let protected = Router::new()
            .route("/", post(tei::root))
            .route("/predict", post(tei::predict))
            .route("/classify", post(tei::classify))
            .route("/embed", post(tei::embed))
            .route("/similarity", post(search::similarity))
            .route("/rerank", post(search::rerank))
            .route("/search", post(search::search))
            .route("/answer", post(search::answer))
            .route("/v1/embeddings", post(openai::embeddings))
            .route("/v1/models", get(openai::models))
            .route("/info", get(info))
            .route("/metrics", get(metrics_text))
            .route("/admin/reload", post(reload))
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                require_key,
            ));
        Router::new()
            .route("/", get(playground))
            .route("/health", get(health))
            .route("/ready", get(ready))
            .merge(protected)
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::middleware::from_fn(speak_the_dialect))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                count_requests,
            ))
            .with_state(state)
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting, lets in-flight
    /// requests finish (for at most the configured grace period) and returns. When the grace
    /// period runs out with requests still open, returns [`ServerError::GraceExpired`].
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let (signalled_tx, signalled_rx) = tokio::sync::watch::channel(false);
        let state = self.state.clone();
        let graceful = async move {
            shutdown.await;
            state.stopping.store(true, Ordering::Relaxed);
            let _ = signalled_tx.send(true);
        };
        let server = axum::serve(listener, self.router()).with_graceful_shutdown(graceful);
        let grace = self.state.config.shutdown_grace;
        let deadline = async move {
            let mut rx = signalled_rx;
            while !*rx.borrow() {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            tokio::time::sleep(grace).await;
        };
        let state = self.state.clone();
        tokio::select! {
            r = server => r.map_err(|source| ServerError::Io { context: "the server failed", source }),
            () = deadline => match state.open_requests.load(Ordering::SeqCst) {
                // Only connections that never sent a whole request head are left.
                0 => Ok(()),
                open_requests => Err(ServerError::GraceExpired {
                    open_requests,
                    grace_s: grace.as_secs_f64(),
                }),
            },
        }
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn terminate_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The fixed route labels of the request counter (unknown paths count as `other`).
fn route_label(path: &str) -> &'static str {
    match path {
        "/" => "/",
        "/health" => "/health",
        "/ready" => "/ready",
        "/predict" => "/predict",
        "/classify" => "/classify",
        "/embed" => "/embed",
        "/similarity" => "/similarity",
        "/rerank" => "/rerank",
        "/search" => "/search",
        "/answer" => "/answer",
        "/v1/embeddings" => "/v1/embeddings",
        "/v1/models" => "/v1/models",
        "/info" => "/info",
        "/metrics" => "/metrics",
        "/admin/reload" => "/admin/reload",
        _ => "other",
    }
}

/// Counts a request as open while it lives (also when its future is dropped).
struct OpenRequest<'a>(&'a AtomicUsize);

impl<'a> OpenRequest<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for OpenRequest<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = route_label(req.uri().path());
    let open = OpenRequest::new(&state.open_requests);
    let response = next.run(req).await;
    drop(open);
    state.metrics.request(route, response.status().as_u16());
    if let Some(kind) = response.extensions().get::<error::FailureKind>() {
        state.metrics.failure(kind.0);
    }
    response
}

/// Answers failures on the `/v1/` routes in OpenAI's error shape (the handlers answer in
/// lmfuse's).
async fn speak_the_dialect(req: Request, next: Next) -> Response {
    let dialect = Dialect::of_path(req.uri().path());
    let response = next.run(req).await;
    match (dialect, response.extensions().get::<error::Failed>()) {
        (Dialect::OpenAi, Some(error::Failed(e))) => e.clone().response(Dialect::OpenAi),
        _ => response,
    }
}

async fn require_key(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(key) = &state.config.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if !constant_time_eq(given, key.as_bytes()) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(req).await)
}

/// Compares without stopping at the first difference (the key's length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

async fn playground() -> Html<&'static str> {
    Html(include_str!("playground.html"))
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    if state.stopping.load(Ordering::Relaxed) {
        return Err(ApiError::NotReady("the server is shutting down".into()));
    }
    match state.slot.get() {
        Some(backend) => Ok(Json(
            json!({ "status": "ready", "model": backend.model_name() }),
        )),
        None => Err(ApiError::NotReady(
            "the model is not loaded and warmed up yet".into(),
        )),
    }
}

async fn info(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let backend = state.slot.get().ok_or_else(not_ready)?;
    let c = &state.config;
    Ok(Json(json!({
        "model": backend.info(),
        "server": {
            "version": env!("CARGO_PKG_VERSION"),
            "limits": {
                "max_body_bytes": c.max_body_bytes,
                "max_batch_size": c.max_batch_size,
                "max_input_chars": c.max_input_chars,
                "over_length": match c.over_length { OverLength::Truncate => "truncate", OverLength::Reject => "reject" },
                "max_queue": c.max_queue,
                "max_batch_tokens": c.max_batch_tokens,
                "request_timeout_ms": c.request_timeout.as_millis(),
            },
            "api_key": c.api_key.is_some(),
        },
    })))
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
}

/// Whether the request says its body is JSON (`application/json`, parameters allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// `/admin/reload`. A web page can POST a form or `text/plain` to any address without asking,
/// so the route wants `Content-Type: application/json` (which a browser only sends cross-site
/// after a CORS preflight this server never grants), and loads another folder than the one it
/// started with only when an API key guards it.
async fn reload(State(state): State<Arc<AppState>>, req: Request) -> Result<Json<Value>, ApiError> {
    let (parts, body) = req.into_parts();
    if !is_json(&parts.headers) {
        return Err(ApiError::UnsupportedMediaType {
            route: "/admin/reload",
            expected: "application/json",
        });
    }
    let server = Server {
        state: state.clone(),
    };
    // Locked before reading the body: one reload body in memory at a time.
    let guard = server.try_lock_reload()?;
    let deadline = tokio::time::Instant::now() + state.config.request_timeout;
    let bytes = read_body(&state, &parts.headers, body, deadline).await?;
    let model = body::reload_model(&bytes)?;
    if model.is_some() && state.config.api_key.is_none() {
        return Err(ApiError::Forbidden(
            "`model` is accepted only when the server has an API key (--api-key): without one, \
             /admin/reload only reloads the bundle the server started with (send `{}`)"
                .into(),
        ));
    }
    server.reload_locked(guard, model).await.map(Json)
}

fn not_ready() -> ApiError {
    ApiError::NotReady("the model is not loaded and warmed up yet".into())
}

/// What the serving model does; `None` before one is installed.
fn served_task(state: &AppState) -> Option<ServedTask> {
    state.slot.get().map(|b| b.task())
}

/// Refuses `route` (a classifier's or an encoder's) when a named-entity tagger is served.
fn refuse_on_tagger(state: &AppState, route: &str) -> Result<(), ApiError> {
    if served_task(state) == Some(ServedTask::TokenClassification) {
        return Err(ApiError::InvalidInput {
            param: None,
            message: format!(
                "{route} is not available: the served model is a named-entity tagger (token \
                 classification); POST / or /predict answer its entities"
            ),
        });
    }
    Ok(())
}

/// Whether the request's `Content-Length` declares a body over `limit` bytes.
pub fn declared_over(headers: &HeaderMap, limit: usize) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

/// Whether a body read by `axum::body::to_bytes` failed for being over its limit (rather than
/// for a broken connection).
pub fn is_over_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Refuses a body declared over the limit before anything else.
fn check_declared_length(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    if declared_over(headers, limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(())
}

/// Reads the body (at most `max_body_bytes`) before `deadline`: a client that stops sending
/// gets `408` instead of holding the request forever.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    deadline: tokio::time::Instant,
) -> Result<Bytes, ApiError> {
    let limit = state.config.max_body_bytes;
    check_declared_length(headers, limit)?;
    let read = tokio::time::timeout_at(deadline, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::BodyTimeout {
            ms: state.config.request_timeout.as_millis(),
        })?;
    read.map_err(|e| match is_over_limit(&e) {
        true => ApiError::PayloadTooLarge { limit },
        false => ApiError::InvalidBody(e.to_string()),
    })
}

/// A request admitted to the queue: it holds a place (of `max_queue`) from before its body is
/// read until its answer, so bodies in memory are bounded by `max_queue × max_body_bytes`.
struct Admitted<'a> {
    _permit: SemaphorePermit<'a>,
    started: Instant,
    deadline: tokio::time::Instant,
}

/// Checks readiness, takes a place in the queue (or `429`), then reads the body.
async fn admit<'a>(state: &'a AppState, req: Request) -> Result<(Admitted<'a>, Bytes), ApiError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + state.config.request_timeout;
    let (parts, body) = req.into_parts();
    check_declared_length(&parts.headers, state.config.max_body_bytes)?;
    if state.slot.get().is_none() {
        return Err(not_ready());
    }
    let permit = state
        .admission
        .try_acquire()
        .map_err(|_| ApiError::Overloaded {
            limit: state.config.max_queue,
        })?;
    let bytes = read_body(state, &parts.headers, body, deadline).await?;
    Ok((
        Admitted {
            _permit: permit,
            started,
            deadline,
        },
        bytes,
    ))
}

/// Token counts of `work`'s inputs, off the async threads (tokenizing costs CPU).
async fn count_tokens(
    state: &AppState,
    deadline: tokio::time::Instant,
    work: Work,
) -> Result<(Work, Vec<TokenCount>), ApiError> {
    let backend = state.slot.get().ok_or_else(not_ready)?;
    let counted = tokio::task::spawn_blocking(move || {
        let counts = work_tokens(backend.as_ref(), &work);
        (work, counts)
    });
    let (work, counts) = tokio::time::timeout_at(deadline, counted)
        .await
        .map_err(|_| ApiError::Timeout {
            ms: state.config.request_timeout.as_millis(),
        })?
        .map_err(|e| ApiError::Backend(format!("tokenizer task failed: {e}")))?;
    Ok((work, counts?))
}

/// Token counts of `work`'s inputs: of each text; of each query or question; of each text
/// to rerank together with its query (as a cross-encoder reads the pair).
fn work_tokens(backend: &dyn Backend, work: &Work) -> Result<Vec<TokenCount>, BackendError> {
    let count = |texts: Vec<&str>| backend.count_tokens(&texts);
    match work {
        Work::Predict(texts) | Work::Embed(texts) | Work::Tag(texts) => {
            count(texts.iter().map(String::as_str).collect())
        }
        Work::EmbedIds(ids) => {
            let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
            backend.count_token_ids(&refs)
        }
        Work::Search(queries) => count(queries.iter().map(|q| q.text.as_str()).collect()),
        Work::Answer(questions) => count(questions.iter().map(|q| q.question.as_str()).collect()),
        Work::Rerank { query, texts } => {
            let counts = count(
                std::iter::once(query.as_str())
                    .chain(texts.iter().map(String::as_str))
                    .collect(),
            )?;
            let (q, rest) = counts.split_first().expect("the query's count comes first");
            Ok(rest
                .iter()
                .map(|t| TokenCount {
                    tokens: q.tokens + t.tokens,
                    truncated: q.truncated || t.truncated,
                })
                .collect())
        }
    }
}

/// Tokenizes, queues and awaits one admitted request's inputs; texts over the token limit are
/// cut or refused as `over_length` says. Returns the model output and the token count.
async fn infer(
    state: &AppState,
    admitted: Admitted<'_>,
    work: Work,
    over_length: OverLength,
) -> Result<(JobOutput, usize), ApiError> {
    let deadline = admitted.deadline;
    let timeout = || ApiError::Timeout {
        ms: state.config.request_timeout.as_millis(),
    };
    // No `stopping` check here: after SIGTERM, requests already accepted are served.
    let (work, counts) = count_tokens(state, deadline, work).await?;
    if over_length == OverLength::Reject {
        if let Some(index) = counts.iter().position(|c| c.truncated) {
            return Err(ApiError::TooManyTokens {
                index,
                limit: counts[index].tokens,
            });
        }
    }
    let tokens: usize = counts.iter().map(|c| c.tokens).sum();
    // The batcher never splits a request: one over the budget would run as a batch over it.
    if tokens > state.config.max_batch_tokens {
        return Err(ApiError::TooManyBatchTokens {
            tokens,
            limit: state.config.max_batch_tokens,
        });
    }
    let (reply, response) = oneshot::channel();
    state.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
    if state
        .queue
        .send(Job {
            work,
            tokens,
            admitted: Instant::now(),
            reply,
        })
        .is_err()
    {
        state.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::NotReady("the batching worker has stopped".into()));
    }
    let out = tokio::time::timeout_at(deadline, response)
        .await
        .map_err(|_| timeout())?
        .map_err(|_| ApiError::Backend("the batching worker dropped the request".into()))??;
    state
        .metrics
        .request_seconds
        .observe(admitted.started.elapsed().as_secs_f64());
    Ok((out, tokens))
}

/// How an embedding route treats its inputs.
#[derive(Debug, Clone, Copy)]
struct EmbedSettings {
    /// Whether to answer unit-length vectors.
    normalize: bool,
    /// Texts over the token limit: cut or refused.
    over_length: OverLength,
    /// The dimension the client asked for, when it did.
    dimensions: Option<u64>,
}

/// Embeds an admitted request's inputs (texts or token ids) as `settings` say. Returns the
/// vectors and the tokens they took.
async fn embed_inputs(
    state: &AppState,
    admitted: Admitted<'_>,
    inputs: body::Inputs,
    settings: EmbedSettings,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let work = match inputs {
        body::Inputs::Texts(texts) => Work::Embed(texts),
        body::Inputs::Ids(ids) => Work::EmbedIds(ids),
    };
    let (out, tokens) = infer(state, admitted, work, settings.over_length).await?;
    let JobOutput::Embeddings(mut vectors) = out else {
        return Err(ApiError::Backend(
            "the model returned predictions for an embedding request".into(),
        ));
    };
    if let (Some(asked), Some(v)) = (settings.dimensions, vectors.first()) {
        let dim = v.len();
        if asked != dim as u64 {
            let model = state.slot.get().map(|b| b.model_name()).unwrap_or_default();
            return Err(ApiError::invalid(
                "dimensions",
                format!(
                    "`dimensions` {asked} is not supported: {model} gives {dim}-dimensional \
                     embeddings and cannot shorten them; leave `dimensions` out or send {dim}"
                ),
            ));
        }
    }
    if settings.normalize {
        vectors.iter_mut().for_each(|v| l2_normalize(v));
    }
    Ok((vectors, tokens))
}

/// Divides `v` by its L2 norm, unless it is zero or already 1 within f32 rounding: a model
/// that normalises its own output (MiniLM) answers exactly what `lmfuse embed` writes.
fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if norm > 0.0 && (norm - 1.0).abs() > 1e-6 {
        for x in v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalising_makes_unit_vectors_and_keeps_unit_ones_bit_for_bit() {
        let mut v = vec![3.0f32, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let unit = vec![0.6f32, 0.8];
        let mut w = unit.clone();
        l2_normalize(&mut w);
        assert_eq!(w, unit);
        let mut zero = vec![0.0f32; 3];
        l2_normalize(&mut zero);
        assert_eq!(zero, [0.0; 3]);
    }
}
