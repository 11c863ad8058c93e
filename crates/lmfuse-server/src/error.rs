//! Every way a request can fail, and the one place where failures become HTTP statuses.
//!
//! | status | `type` | when |
//! |---|---|---|
//! | 400 | `invalid_json` | the body is not JSON |
//! | 400 | `invalid_utf8` | the body is not UTF-8 |
//! | 400 | `invalid_body` | the body could not be read (broken chunked encoding) |
//! | 400 | `empty_batch` | `inputs: []` |
//! | 401 | `unauthorized` | API key missing or wrong |
//! | 403 | `forbidden` | `/admin/reload` with a `model` folder on a server without an API key |
//! | 404 | `not_found` | unknown route |
//! | 405 | `method_not_allowed` | known route, wrong method |
//! | 408 | `body_timeout` | the body did not arrive within `--request-timeout-ms` |
//! | 409 | `reload_in_progress` | `/admin/reload` (or SIGHUP) while another reload runs |
//! | 413 | `payload_too_large` | body over `--max-body-bytes` |
//! | 413 | `batch_too_large` | more texts than `--max-batch-size` |
//! | 413 | `text_too_long` | a text over `--max-input-chars` |
//! | 413 | `too_many_tokens` | a text over the model's token limit with `--over-length reject` |
//! | 413 | `too_many_batch_tokens` | one request's tokens over `--max-batch-tokens` |
//! | 415 | `unsupported_media_type` | `/admin/reload` without `Content-Type: application/json` |
//! | 422 | `invalid_input` | well-formed JSON of the wrong shape or type |
//! | 422 | `reload_failed` | `/admin/reload` could not load the bundle (the old one keeps serving) |
//! | 429 | `overloaded` | the queue is full |
//! | 500 | `backend_error` | the model failed on this input |
//! | 503 | `not_ready` | the model is not loaded and warmed yet, or the server is stopping |
//! | 504 | `timeout` | the request waited and ran longer than `--request-timeout-ms` |

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A failed request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON.
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body is not UTF-8.
    #[error("the body is not valid UTF-8: {0}")]
    InvalidUtf8(String),
    /// The body could not be read.
    #[error("cannot read the body: {0}")]
    InvalidBody(String),
    /// The request holds no text.
    #[error("`{field}` is an empty list: send at least one text")]
    EmptyBatch {
        /// The JSON field.
        field: &'static str,
    },
    /// Missing or wrong API key.
    #[error("missing or wrong API key: send `Authorization: Bearer <key>`")]
    Unauthorized,
    /// No such route.
    #[error("no route {method} {path}; routes: GET / /health /ready /metrics /info, POST /predict /embed /v1/embeddings /admin/reload")]
    NotFound {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// The route exists, the method does not.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// The body is over the limit.
    #[error("the body is over the limit of {limit} bytes (max_body_bytes)")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Too many texts in one request.
    #[error("{count} texts in one request, over the limit of {limit} (max_batch_size)")]
    BatchTooLarge {
        /// Texts sent.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A text over the character limit.
    #[error("text {index} has {chars} characters, over the limit of {limit} (max_input_chars)")]
    TextTooLong {
        /// Position of the text in the request.
        index: usize,
        /// Its characters.
        chars: usize,
        /// The limit.
        limit: usize,
    },
    /// A text over the token limit while over-length texts are rejected.
    #[error("text {index} has more than {limit} tokens, the model's limit (max_input_tokens; over_length=reject)")]
    TooManyTokens {
        /// Position of the text in the request.
        index: usize,
        /// The limit.
        limit: usize,
    },
    /// One request's tokens are over the token budget of a batch.
    #[error("the request has {tokens} tokens, over the token budget of one batch, {limit} (max_batch_tokens)")]
    TooManyBatchTokens {
        /// Tokens of the request (after truncation).
        tokens: usize,
        /// The budget.
        limit: usize,
    },
    /// Well-formed JSON of the wrong shape.
    #[error("{0}")]
    InvalidInput(String),
    /// The body did not arrive in time.
    #[error("the body did not arrive within {ms} ms (request_timeout_ms)")]
    BodyTimeout {
        /// The limit in milliseconds.
        ms: u128,
    },
    /// The route wants another `Content-Type`.
    #[error("{route} wants `Content-Type: {expected}`")]
    UnsupportedMediaType {
        /// The route.
        route: &'static str,
        /// The content type it takes.
        expected: &'static str,
    },
    /// Allowed only with more trust (an API key).
    #[error("{0}")]
    Forbidden(String),
    /// Another reload is running.
    #[error("a reload is already in progress; retry when it has finished")]
    ReloadInProgress,
    /// A reload failed; the previous model keeps serving.
    #[error("reload failed, still serving the previous model: {0}")]
    ReloadFailed(String),
    /// The queue is full.
    #[error(
        "the server is overloaded: {limit} requests are already queued (max_queue); retry later"
    )]
    Overloaded {
        /// The queue limit.
        limit: usize,
    },
    /// The model failed.
    #[error("{0}")]
    Backend(String),
    /// The model is not ready, or the server is stopping.
    #[error("{0}")]
    NotReady(String),
    /// The request took too long.
    #[error("the request took longer than {ms} ms (request_timeout_ms)")]
    Timeout {
        /// The limit in milliseconds.
        ms: u128,
    },
}

impl ApiError {
    /// The machine-readable `type` of the error (also the `reason` label of the failure metric).
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidUtf8(_) => "invalid_utf8",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::EmptyBatch { .. } => "empty_batch",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BatchTooLarge { .. } => "batch_too_large",
            ApiError::TextTooLong { .. } => "text_too_long",
            ApiError::TooManyTokens { .. } => "too_many_tokens",
            ApiError::TooManyBatchTokens { .. } => "too_many_batch_tokens",
            ApiError::InvalidInput(_) => "invalid_input",
            ApiError::BodyTimeout { .. } => "body_timeout",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::ReloadInProgress => "reload_in_progress",
            ApiError::ReloadFailed(_) => "reload_failed",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::Backend(_) => "backend_error",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Timeout { .. } => "timeout",
        }
    }

    /// The HTTP status: the one place where errors map to statuses.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_)
            | ApiError::InvalidUtf8(_)
            | ApiError::InvalidBody(_)
            | ApiError::EmptyBatch { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. }
            | ApiError::BatchTooLarge { .. }
            | ApiError::TextTooLong { .. }
            | ApiError::TooManyTokens { .. }
            | ApiError::TooManyBatchTokens { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::ReloadInProgress => StatusCode::CONFLICT,
            ApiError::InvalidInput(_) | ApiError::ReloadFailed(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// Marks a response as a failure of the given kind, for the failure counter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FailureKind(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string(), "type": self.kind() });
        let mut response = (self.status(), axum::Json(body)).into_response();
        response.extensions_mut().insert(FailureKind(self.kind()));
        if let ApiError::Unauthorized = self {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_error() -> Vec<ApiError> {
        let s = || String::from("x");
        vec![
            ApiError::InvalidJson(s()),
            ApiError::InvalidUtf8(s()),
            ApiError::InvalidBody(s()),
            ApiError::EmptyBatch { field: "inputs" },
            ApiError::Unauthorized,
            ApiError::NotFound {
                method: s(),
                path: s(),
            },
            ApiError::MethodNotAllowed {
                method: s(),
                path: s(),
            },
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::BatchTooLarge { count: 2, limit: 1 },
            ApiError::TextTooLong {
                index: 0,
                chars: 2,
                limit: 1,
            },
            ApiError::TooManyTokens { index: 0, limit: 1 },
            ApiError::TooManyBatchTokens {
                tokens: 2,
                limit: 1,
            },
            ApiError::InvalidInput(s()),
            ApiError::BodyTimeout { ms: 1 },
            ApiError::UnsupportedMediaType {
                route: "/admin/reload",
                expected: "application/json",
            },
            ApiError::Forbidden(s()),
            ApiError::ReloadInProgress,
            ApiError::ReloadFailed(s()),
            ApiError::Overloaded { limit: 1 },
            ApiError::Backend(s()),
            ApiError::NotReady(s()),
            ApiError::Timeout { ms: 1 },
        ]
    }

    #[test]
    fn the_map_matches_the_documented_table() {
        let table = include_str!("error.rs");
        for e in every_error() {
            let row = format!("| {} | `{}` |", e.status().as_u16(), e.kind());
            assert!(
                table.contains(&row),
                "{row} is not in the table of error.rs"
            );
        }
        let mut kinds: Vec<_> = every_error().iter().map(ApiError::kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(
            kinds.len(),
            every_error().len(),
            "each error has its own type"
        );
    }

    #[test]
    fn limits_are_named_in_the_messages_with_their_status() {
        for (e, name, status) in [
            (
                ApiError::PayloadTooLarge { limit: 9 },
                "max_body_bytes",
                413,
            ),
            (
                ApiError::BatchTooLarge {
                    count: 40,
                    limit: 32,
                },
                "max_batch_size",
                413,
            ),
            (
                ApiError::TextTooLong {
                    index: 3,
                    chars: 10,
                    limit: 5,
                },
                "max_input_chars",
                413,
            ),
            (
                ApiError::TooManyTokens {
                    index: 1,
                    limit: 256,
                },
                "max_input_tokens",
                413,
            ),
            (
                ApiError::TooManyBatchTokens {
                    tokens: 20_000,
                    limit: 16_384,
                },
                "max_batch_tokens",
                413,
            ),
            (ApiError::Overloaded { limit: 4 }, "max_queue", 429),
            (ApiError::Timeout { ms: 100 }, "request_timeout_ms", 504),
            (ApiError::BodyTimeout { ms: 100 }, "request_timeout_ms", 408),
        ] {
            assert!(e.to_string().contains(name), "{e}");
            assert_eq!(e.status().as_u16(), status, "{e}");
        }
    }

    #[test]
    fn client_faults_are_4xx_and_server_faults_5xx() {
        for e in every_error() {
            let server_side = matches!(
                e,
                ApiError::Backend(_) | ApiError::NotReady(_) | ApiError::Timeout { .. }
            );
            assert_eq!(e.status().is_server_error(), server_side, "{e:?}");
            assert_eq!(e.status().is_client_error(), !server_side, "{e:?}");
        }
    }
}
