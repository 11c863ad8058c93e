//! The monitor's HTTP interface: `POST /events`, `GET /alerts`, `POST /alerts/{id}/acknowledge`
//! and `/resolve`, `POST /feedback`, `GET /drift`, `GET /models`, `GET /health`. Errors become
//! statuses in one place ([`status_of`]).

use crate::error::MonitorError;
use crate::monitor::{AlertState, Monitor};
use crate::store::ALL;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

/// Most alerts one `GET /alerts` returns.
pub const MAX_ALERTS: usize = 10_000;

/// The routes over `monitor`.
pub fn router(monitor: Arc<Monitor>) -> Router {
    Router::new()
        .route("/events", post(events).get(latest_events))
        .route("/alerts", get(alerts))
        .route("/alerts/{id}/acknowledge", post(acknowledge))
        .route("/alerts/{id}/resolve", post(resolve))
        .route("/feedback", post(feedback))
        .route("/drift", get(drift))
        .route("/models", get(models))
        .route("/series", get(series))
        .route("/entities", get(entities))
        .route("/", get(dashboard))
        .route("/health", get(health))
        .with_state(monitor)
}

/// Serves the routes over `monitor` on `listener` until `shutdown` completes, then lets the
/// requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    monitor: Arc<Monitor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(monitor))
        .with_graceful_shutdown(shutdown)
        .await
}

/// An error answer: `{"error": message, "error_type": kind}` with its status.
pub struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.2, "error_type": self.1}))).into_response()
    }
}

impl From<MonitorError> for ApiError {
    fn from(e: MonitorError) -> ApiError {
        let (status, kind) = status_of(&e);
        ApiError(status, kind, e.to_string())
    }
}

/// The status and kind each error is answered with.
pub fn status_of(e: &MonitorError) -> (StatusCode, &'static str) {
    match e {
        MonitorError::Event { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_event"),
        MonitorError::Body(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
        MonitorError::Conflict { .. } => (StatusCode::CONFLICT, "conflicting_id"),
        MonitorError::UnknownAlert(_) => (StatusCode::NOT_FOUND, "unknown_alert"),
        MonitorError::UnknownEvent(_) => (StatusCode::NOT_FOUND, "unknown_event"),
        MonitorError::Feedback { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_feedback"),
        MonitorError::Config { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
        MonitorError::Io { .. }
        | MonitorError::Store { .. }
        | MonitorError::Classify { .. }
        | MonitorError::Retrain { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, MonitorError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(out) => out.map_err(ApiError::from),
        Err(e) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the request's task failed: {e}"),
        )),
    }
}

/// The body of `req`, refused (413) over `monitor.max_body_bytes`.
async fn body_of(monitor: &Monitor, req: Request<Body>) -> Result<axum::body::Bytes, ApiError> {
    let limit = monitor.config().max_body_bytes;
    let too_large = || {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is over the limit of {limit} bytes (`monitor.max_body_bytes`)"),
        )
    };
    if lmfuse_server::declared_over(req.headers(), limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| match lmfuse_server::is_over_limit(&e) {
            true => too_large(),
            false => ApiError(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("cannot read the body: {e}"),
            ),
        })
}

async fn events(
    State(monitor): State<Arc<Monitor>>,
    req: Request<Body>,
) -> Result<Json<Value>, ApiError> {
    let bytes = body_of(&monitor, req).await?;
    let inserted = blocking(move || monitor.ingest(&bytes)).await?;
    Ok(Json(serde_json::to_value(inserted).expect("counts")))
}

async fn feedback(
    State(monitor): State<Arc<Monitor>>,
    req: Request<Body>,
) -> Result<Json<Value>, ApiError> {
    let bytes = body_of(&monitor, req).await?;
    let report = blocking(move || monitor.feedback(&bytes)).await?;
    Ok(Json(serde_json::to_value(report).expect("counts")))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<usize>,
}

/// A query string as axum parses it.
type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;
type Limit = QueryOf<LimitQuery>;

/// 422 for a request's bad input.
fn invalid(message: String) -> ApiError {
    ApiError(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
}

/// The parsed query string, or 422 naming what is wrong with it.
fn query_of<T>(query: QueryOf<T>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| invalid(format!("query string: {e}")))
}

/// `value` of the query field `name`, `default` when absent, checked to be 1 to
/// [`MAX_ALERTS`].
fn bounded(name: &str, value: Option<usize>, default: usize) -> Result<usize, ApiError> {
    let value = value.unwrap_or(default);
    if !(1..=MAX_ALERTS).contains(&value) {
        return Err(invalid(format!("`{name}` must be 1 to {MAX_ALERTS}")));
    }
    Ok(value)
}

/// `?limit=`, 1 to [`MAX_ALERTS`] (`default` when absent).
fn limit_of(query: Limit, default: usize) -> Result<usize, ApiError> {
    bounded("limit", query_of(query)?.limit, default)
}

async fn latest_events(
    State(monitor): State<Arc<Monitor>>,
    query: Limit,
) -> Result<Json<Value>, ApiError> {
    let limit = limit_of(query, 50)?;
    let list = blocking(move || monitor.latest_events(limit)).await?;
    Ok(Json(Value::Array(list)))
}

async fn drift(State(monitor): State<Arc<Monitor>>, query: Limit) -> Result<Json<Value>, ApiError> {
    let limit = limit_of(query, 30)?;
    Ok(Json(blocking(move || monitor.drift(limit)).await?))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesQuery {
    entity: Option<String>,
    topic: Option<String>,
    windows: Option<usize>,
}

async fn series(
    State(monitor): State<Arc<Monitor>>,
    query: QueryOf<SeriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let q = query_of(query)?;
    let windows = bounded("windows", q.windows, 168)? as i64;
    let entity = q.entity.unwrap_or_else(|| ALL.into());
    let topic = q.topic.unwrap_or_else(|| ALL.into());
    Ok(Json(
        blocking(move || monitor.series(&entity, &topic, windows)).await?,
    ))
}

async fn entities(
    State(monitor): State<Arc<Monitor>>,
    query: Limit,
) -> Result<Json<Value>, ApiError> {
    let limit = limit_of(query, 100)?;
    let list = blocking(move || monitor.entities(limit)).await?;
    Ok(Json(
        list.into_iter()
            .map(|(entity, events)| json!({"entity": entity, "events": events}))
            .collect(),
    ))
}

/// The dashboard: one page, its script and styles inside (no external requests).
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("dashboard.html"))
}

async fn models(State(monitor): State<Arc<Monitor>>) -> Result<Json<Value>, ApiError> {
    let list = blocking(move || monitor.models()).await?;
    Ok(Json(serde_json::to_value(list).expect("versions")))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertQuery {
    state: Option<String>,
    limit: Option<usize>,
}

async fn alerts(
    State(monitor): State<Arc<Monitor>>,
    query: QueryOf<AlertQuery>,
) -> Result<Json<Value>, ApiError> {
    let q = query_of(query)?;
    if let Some(s) = &q.state {
        if !["open", "acknowledged", "resolved"].contains(&s.as_str()) {
            return Err(invalid(format!(
                "`state` {s:?} is not open, acknowledged or resolved"
            )));
        }
    }
    let limit = bounded("limit", q.limit, 1_000)?;
    let list = blocking(move || monitor.alerts(q.state.as_deref(), limit)).await?;
    Ok(Json(Value::Array(list)))
}

async fn acknowledge(
    State(monitor): State<Arc<Monitor>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        blocking(move || monitor.set_alert_state(&id, AlertState::Acknowledged)).await?,
    ))
}

async fn resolve(
    State(monitor): State<Arc<Monitor>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        blocking(move || monitor.set_alert_state(&id, AlertState::Resolved)).await?,
    ))
}

async fn health(State(monitor): State<Arc<Monitor>>) -> Result<Json<Value>, ApiError> {
    let status = blocking(move || monitor.status()).await?;
    Ok(Json(json!({"status": "ok", "monitor": status})))
}
