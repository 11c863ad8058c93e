//! HTTP serving for lmfuse: axum routes over a [`Backend`], with dynamic batching, admission
//! control, input limits, health and readiness, Prometheus metrics, an API key, reloads and
//! graceful shutdown.
//!
//! The HTTP layer knows nothing of encoders or heads: the binary implements [`Backend`] with a
//! bundle and its encoder, tests with a fake. Every failure is an [`ApiError`], mapped to a
//! status and a JSON `{error, type}` body in one place ([`ApiError::status`]).

mod backend;
mod batcher;
pub mod client;
mod config;
mod error;
mod metrics;

pub use backend::{Backend, BackendError, Oos, Prediction, Reloader, TokenCount};
pub use config::{
    ConfigError, OverLength, ServerConfig, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_INPUT_CHARS, DEFAULT_MAX_QUEUE, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SHUTDOWN_GRACE,
};
pub use error::ApiError;
pub use metrics::Metrics;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use batcher::{BackendSlot, Job, JobKind, JobOutput};
use serde_json::{json, Value};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, Semaphore};

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
}

/// Shared state of the routes.
struct AppState {
    config: ServerConfig,
    slot: Arc<BackendSlot>,
    queue: mpsc::UnboundedSender<Job>,
    admission: Semaphore,
    metrics: Arc<Metrics>,
    reloader: Option<Arc<Reloader>>,
    reload_lock: tokio::sync::Mutex<()>,
    stopping: AtomicBool,
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
                reload_lock: tokio::sync::Mutex::new(()),
                stopping: AtomicBool::new(false),
            }),
        })
    }

    /// Installs the serving model (already loaded and warmed): `/ready` turns 200.
    pub fn set_backend(&self, backend: Arc<dyn Backend>) {
        self.state.slot.set(backend);
        self.state.metrics.ready.store(1, Ordering::Relaxed);
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// Loads a model beside the serving one (the one the server started with, or the bundle
    /// folder `model`), checks it with a forward pass, and swaps it in. Requests keep being
    /// served throughout; on failure the previous model stays.
    pub async fn reload(&self, model: Option<String>) -> Result<Value, ApiError> {
        let state = &self.state;
        let Some(reloader) = state.reloader.clone() else {
            return Err(ApiError::ReloadFailed(
                "this server was started without a reloadable model".into(),
            ));
        };
        let _guard = state.reload_lock.lock().await;
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
            .route("/predict", post(predict))
            .route("/embed", post(embed))
            .route("/v1/embeddings", post(openai_embeddings))
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
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                count_requests,
            ))
            .with_state(state)
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting, lets in-flight
    /// requests finish (for at most the configured grace period) and returns.
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
        tokio::select! {
            r = server => r.map_err(|source| ServerError::Io { context: "the server failed", source }),
            () = deadline => Ok(()),
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
        "/embed" => "/embed",
        "/v1/embeddings" => "/v1/embeddings",
        "/info" => "/info",
        "/metrics" => "/metrics",
        "/admin/reload" => "/admin/reload",
        _ => "other",
    }
}

async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = route_label(req.uri().path());
    let response = next.run(req).await;
    state.metrics.request(route, response.status().as_u16());
    if let Some(kind) = response.extensions().get::<error::FailureKind>() {
        state.metrics.failure(kind.0);
    }
    response
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

async fn reload(State(state): State<Arc<AppState>>, req: Request) -> Result<Json<Value>, ApiError> {
    let (parts, body) = req.into_parts();
    let value = read_json(&parts.headers, body, state.config.max_body_bytes, true).await?;
    let model = match value.as_ref().and_then(|v| v.get("model")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(ApiError::InvalidInput(format!(
                "`model` must be a bundle folder (a string), found {}",
                type_name(other)
            )))
        }
    };
    let server = Server { state };
    server.reload(model).await.map(Json)
}

fn not_ready() -> ApiError {
    ApiError::NotReady("the model is not loaded and warmed up yet".into())
}

/// Reads the body (at most `limit` bytes) and parses it as JSON; with `optional`, an empty
/// body is `None`.
async fn read_json(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    optional: bool,
) -> Result<Option<Value>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ApiError::PayloadTooLarge { limit };
            }
            source = s.source();
        }
        ApiError::InvalidBody(e.to_string())
    })?;
    if optional && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| ApiError::InvalidUtf8(e.to_string()))?;
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| ApiError::InvalidJson(e.to_string()))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The texts of `field` (a string or a list of strings), checked against the limits. The flag
/// says whether a single string was sent.
fn texts_of(
    value: &Value,
    field: &'static str,
    config: &ServerConfig,
) -> Result<(Vec<String>, bool), ApiError> {
    let Value::Object(map) = value else {
        return Err(ApiError::InvalidInput(format!(
            "the body must be a JSON object like {{\"{field}\": \"text\"}}, found {}",
            type_name(value)
        )));
    };
    let (texts, single) = match map.get(field) {
        None => {
            return Err(ApiError::InvalidInput(format!(
                "field `{field}` is missing: send {{\"{field}\": \"text\"}} or {{\"{field}\": [\"text\", ...]}}"
            )))
        }
        Some(Value::String(s)) => (vec![s.clone()], true),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(ApiError::EmptyBatch { field });
            }
            if items.len() > config.max_batch_size {
                return Err(ApiError::BatchTooLarge {
                    count: items.len(),
                    limit: config.max_batch_size,
                });
            }
            let texts = items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(ApiError::InvalidInput(format!(
                        "`{field}[{i}]` must be a string, found {}",
                        type_name(other)
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            (texts, false)
        }
        Some(other) => {
            return Err(ApiError::InvalidInput(format!(
                "`{field}` must be a string or a list of strings, found {}",
                type_name(other)
            )))
        }
    };
    for (index, t) in texts.iter().enumerate() {
        // Bytes bound characters from above: count only when it can matter.
        if t.len() > config.max_input_chars {
            let chars = t.chars().count();
            if chars > config.max_input_chars {
                return Err(ApiError::TextTooLong {
                    index,
                    chars,
                    limit: config.max_input_chars,
                });
            }
        }
    }
    Ok((texts, single))
}

/// Admits, tokenizes, queues and awaits one request's texts. Returns the model output and the
/// token count.
async fn infer(
    state: &AppState,
    kind: JobKind,
    texts: Vec<String>,
) -> Result<(JobOutput, usize), ApiError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + state.config.request_timeout;
    let timeout = || ApiError::Timeout {
        ms: state.config.request_timeout.as_millis(),
    };
    if state.stopping.load(Ordering::Relaxed) {
        return Err(ApiError::NotReady("the server is shutting down".into()));
    }
    let backend = state.slot.get().ok_or_else(not_ready)?;
    let _permit = state
        .admission
        .try_acquire()
        .map_err(|_| ApiError::Overloaded {
            limit: state.config.max_queue,
        })?;
    // Tokenizing costs CPU: off the async threads.
    let counted = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let counts = backend.count_tokens(&refs);
        (texts, counts)
    });
    let (texts, counts) = tokio::time::timeout_at(deadline, counted)
        .await
        .map_err(|_| timeout())?
        .map_err(|e| ApiError::Backend(format!("tokenizer task failed: {e}")))?;
    let counts = counts.map_err(|e| ApiError::Backend(e.to_string()))?;
    if state.config.over_length == OverLength::Reject {
        if let Some(index) = counts.iter().position(|c| c.truncated) {
            return Err(ApiError::TooManyTokens {
                index,
                limit: counts[index].tokens,
            });
        }
    }
    let tokens: usize = counts.iter().map(|c| c.tokens).sum();
    let (reply, response) = oneshot::channel();
    state.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
    if state
        .queue
        .send(Job {
            kind,
            texts,
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
        .observe(started.elapsed().as_secs_f64());
    Ok((out, tokens))
}

async fn predict(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let (parts, body) = req.into_parts();
    let value = read_json(&parts.headers, body, state.config.max_body_bytes, false)
        .await?
        .unwrap_or(Value::Null);
    let (texts, single) = texts_of(&value, "inputs", &state.config)?;
    let (out, _) = infer(&state, JobKind::Predict, texts).await?;
    let JobOutput::Predictions(mut p) = out else {
        return Err(ApiError::Backend(
            "the model returned embeddings for /predict".into(),
        ));
    };
    Ok(Json(
        if single {
            serde_json::to_value(p.pop())
        } else {
            serde_json::to_value(p)
        }
        .map_err(|e| ApiError::Backend(e.to_string()))?,
    ))
}

async fn embeddings(
    state: &AppState,
    req: Request,
    field: &'static str,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let (parts, body) = req.into_parts();
    let value = read_json(&parts.headers, body, state.config.max_body_bytes, false)
        .await?
        .unwrap_or(Value::Null);
    if field == "input" {
        match value.get("encoding_format") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "float" => {}
            Some(other) => {
                return Err(ApiError::InvalidInput(format!(
                    "`encoding_format` {other} is not supported: only \"float\""
                )))
            }
        }
    }
    let (texts, _) = texts_of(&value, field, &state.config)?;
    let (out, tokens) = infer(state, JobKind::Embed, texts).await?;
    match out {
        JobOutput::Embeddings(e) => Ok((e, tokens)),
        JobOutput::Predictions(_) => Err(ApiError::Backend(
            "the model returned predictions for an embedding request".into(),
        )),
    }
}

async fn embed(State(state): State<Arc<AppState>>, req: Request) -> Result<Json<Value>, ApiError> {
    let (vectors, _) = embeddings(&state, req, "inputs").await?;
    Ok(Json(json!(vectors)))
}

async fn openai_embeddings(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let (vectors, tokens) = embeddings(&state, req, "input").await?;
    let model = state.slot.get().map(|b| b.model_name()).unwrap_or_default();
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| json!({"object": "embedding", "index": index, "embedding": embedding}))
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}
