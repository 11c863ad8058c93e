//! Every way a request can fail, and the one place where failures become HTTP statuses and
//! bodies: lmfuse's `{"error", "type"}` on its own routes, OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` on the `/v1/` routes ([`Dialect`]).
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
//!
//! On the `/v1/` routes the same failures answer as OpenAI does: `code` is the lmfuse `type`
//! above (`invalid_api_key` for 401), `param` the request field at fault (or null), and
//!
//! | lmfuse status | OpenAI status | OpenAI `type` |
//! |---|---|---|
//! | 400 | 400 | `invalid_request_error` |
//! | 401 | 401 | `invalid_request_error` |
//! | 403 | 403 | `invalid_request_error` |
//! | 404 | 404 | `invalid_request_error` |
//! | 405 | 405 | `invalid_request_error` |
//! | 408 | 408 | `invalid_request_error` |
//! | 409 | 409 | `invalid_request_error` |
//! | 413 | 400 | `invalid_request_error` |
//! | 415 | 400 | `invalid_request_error` |
//! | 422 | 400 | `invalid_request_error` |
//! | 429 | 429 | `rate_limit_error` |
//! | 500 | 500 | `server_error` |
//! | 503 | 503 | `server_error` |
//! | 504 | 504 | `server_error` |
//!
//! (OpenAI answers every malformed request with 400, which its client raises as
//! `BadRequestError`.)

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
    /// The request holds no input.
    #[error("`{field}` is an empty list: send at least one text")]
    EmptyBatch {
        /// The JSON field.
        field: &'static str,
    },
    /// Missing or wrong API key.
    #[error("missing or wrong API key: send `Authorization: Bearer <key>`")]
    Unauthorized,
    /// No such route.
    #[error("no route {method} {path}; routes: GET / /health /ready /metrics /info /v1/models, POST / /predict /classify /embed /v1/embeddings /admin/reload")]
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
        /// The JSON field.
        field: &'static str,
        /// Texts sent.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A text over the character limit.
    #[error("text {index} has {chars} characters, over the limit of {limit} (max_input_chars)")]
    TextTooLong {
        /// The JSON field.
        field: &'static str,
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
    /// Well-formed JSON of the wrong shape, or a request the model cannot serve.
    #[error("{message}")]
    InvalidInput {
        /// The request field at fault, when one is.
        param: Option<&'static str>,
        /// What is wrong and what to send instead.
        message: String,
    },
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
            ApiError::InvalidInput { .. } => "invalid_input",
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
            ApiError::InvalidInput { .. } | ApiError::ReloadFailed(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// Which API's error body a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// lmfuse's own routes (and the text-embeddings-inference ones): `{"error", "type"}`.
    Lmfuse,
    /// The `/v1/` routes: `{"error": {"message", "type", "param", "code"}}`.
    OpenAi,
}

impl Dialect {
    /// The dialect of the route at `path`.
    pub fn of_path(path: &str) -> Self {
        if path == "/v1" || path.starts_with("/v1/") {
            Dialect::OpenAi
        } else {
            Dialect::Lmfuse
        }
    }
}

impl ApiError {
    /// A request of the wrong shape; `param` names the field at fault.
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        ApiError::InvalidInput {
            param: Some(param),
            message: message.into(),
        }
    }

    /// The request field at fault, when the error concerns one.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            ApiError::EmptyBatch { field }
            | ApiError::BatchTooLarge { field, .. }
            | ApiError::TextTooLong { field, .. } => Some(field),
            ApiError::InvalidInput { param, .. } => *param,
            _ => None,
        }
    }

    /// The HTTP status on the `/v1/` routes: OpenAI answers every malformed request with 400.
    pub fn openai_status(&self) -> StatusCode {
        match self.status() {
            StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNSUPPORTED_MEDIA_TYPE
            | StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            s => s,
        }
    }

    /// OpenAI's error `type` on the `/v1/` routes.
    pub fn openai_type(&self) -> &'static str {
        let status = self.openai_status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            "rate_limit_error"
        } else if status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        }
    }

    /// OpenAI's error `code` on the `/v1/` routes: the lmfuse `type`, as OpenAI names a wrong key.
    pub fn openai_code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "invalid_api_key",
            e => e.kind(),
        }
    }

    /// The response in `dialect`: status, JSON body, and (for the failure counter and the
    /// dialect layer) the error itself as a response extension.
    pub fn response(self, dialect: Dialect) -> Response {
        let (status, body) = match dialect {
            Dialect::Lmfuse => (
                self.status(),
                serde_json::json!({ "error": self.to_string(), "type": self.kind() }),
            ),
            Dialect::OpenAi => (
                self.openai_status(),
                serde_json::json!({ "error": {
                    "message": self.to_string(),
                    "type": self.openai_type(),
                    "param": self.param(),
                    "code": self.openai_code(),
                }}),
            ),
        };
        let mut response = (status, axum::Json(body)).into_response();
        response.extensions_mut().insert(FailureKind(self.kind()));
        if let ApiError::Unauthorized = self {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response.extensions_mut().insert(Failed(self));
        response
    }
}

/// A model's failure as the request sees it: asking what the model cannot do is the client's
/// to change (422, or 400 on `/v1/`); anything else is the server's (500).
impl From<crate::BackendError> for ApiError {
    fn from(e: crate::BackendError) -> Self {
        match e {
            crate::BackendError::Unsupported(message) => ApiError::InvalidInput {
                param: None,
                message,
            },
            e => ApiError::Backend(e.to_string()),
        }
    }
}

/// Marks a response as a failure of the given kind, for the failure counter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FailureKind(pub &'static str);

/// The error a failed response was made from, so that a layer can answer it in another
/// [`Dialect`].
#[derive(Debug, Clone)]
pub(crate) struct Failed(pub ApiError);

/// Every route answers in lmfuse's dialect; the layer of [`crate::Server::router`] re-answers
/// failures on the `/v1/` routes in OpenAI's.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.response(Dialect::Lmfuse)
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
            ApiError::BatchTooLarge {
                field: "inputs",
                count: 2,
                limit: 1,
            },
            ApiError::TextTooLong {
                field: "inputs",
                index: 0,
                chars: 2,
                limit: 1,
            },
            ApiError::TooManyTokens { index: 0, limit: 1 },
            ApiError::TooManyBatchTokens {
                tokens: 2,
                limit: 1,
            },
            ApiError::invalid("input", s()),
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
                    field: "inputs",
                    count: 40,
                    limit: 32,
                },
                "max_batch_size",
                413,
            ),
            (
                ApiError::TextTooLong {
                    field: "inputs",
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

    #[test]
    fn the_openai_map_matches_its_documented_table() {
        let table = include_str!("error.rs");
        for e in every_error() {
            let row = format!(
                "| {} | {} | `{}` |",
                e.status().as_u16(),
                e.openai_status().as_u16(),
                e.openai_type()
            );
            assert!(
                table.contains(&row),
                "{row} is not in the table of error.rs"
            );
            // The openai client raises BadRequestError for every fault of the request itself.
            if e.status().is_client_error()
                && !matches!(e.status().as_u16(), 401 | 403 | 404 | 405 | 408 | 409 | 429)
            {
                assert_eq!(e.openai_status().as_u16(), 400, "{e:?}");
            }
        }
    }

    fn body(e: ApiError, dialect: Dialect) -> (u16, serde_json::Value) {
        let r = e.response(dialect);
        let status = r.status().as_u16();
        let bytes = futures_body(r);
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn futures_body(r: Response) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(axum::body::to_bytes(r.into_body(), usize::MAX))
            .unwrap()
            .to_vec()
    }

    #[test]
    fn both_dialects_carry_the_message_type_and_field() {
        let e = || ApiError::invalid("dimensions", "`dimensions` 8 is not supported");
        let (status, j) = body(e(), Dialect::Lmfuse);
        assert_eq!(status, 422);
        assert_eq!(
            j,
            serde_json::json!({"error": "`dimensions` 8 is not supported", "type": "invalid_input"})
        );
        let (status, j) = body(e(), Dialect::OpenAi);
        assert_eq!(status, 400);
        assert_eq!(
            j,
            serde_json::json!({"error": {
                "message": "`dimensions` 8 is not supported",
                "type": "invalid_request_error",
                "param": "dimensions",
                "code": "invalid_input",
            }})
        );
        let (status, j) = body(ApiError::Unauthorized, Dialect::OpenAi);
        assert_eq!(
            (status, &j["error"]["code"]),
            (401, &serde_json::json!("invalid_api_key"))
        );
        assert!(j["error"]["param"].is_null(), "{j}");
        let (status, j) = body(ApiError::Overloaded { limit: 2 }, Dialect::OpenAi);
        assert_eq!(
            (status, &j["error"]["type"]),
            (429, &serde_json::json!("rate_limit_error"))
        );
        assert_eq!(Dialect::of_path("/v1/embeddings"), Dialect::OpenAi);
        assert_eq!(Dialect::of_path("/v1"), Dialect::OpenAi);
        assert_eq!(Dialect::of_path("/v10/x"), Dialect::Lmfuse);
        assert_eq!(Dialect::of_path("/predict"), Dialect::Lmfuse);
    }
}
