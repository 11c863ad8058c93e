//! Limits and knobs of the server, with their defaults.

use std::time::Duration;

/// Default maximum request body: 2 MB, as text-embeddings-inference's `payload_limit`. A full
/// batch of maximal texts (32 × 20,000 characters of ASCII) fits under it only just; larger
/// bodies are refused before they are read.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2_000_000;
/// Default maximum texts in one request: 32, as text-embeddings-inference's
/// `max_client_batch_size`. Larger client batches gain little and delay everyone queued behind.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 32;
/// Default maximum characters in one text: 20,000. A BERT-family model reads at most a few
/// hundred tokens (MiniLM: 256, about 1,000 characters of English); tokenizing more only burns
/// CPU, so much longer texts are refused rather than tokenized and cut.
pub const DEFAULT_MAX_INPUT_CHARS: usize = 20_000;
/// Default maximum requests waiting for the model: 128. Beyond it, requests get `429` at once
/// instead of waiting longer than any client would.
pub const DEFAULT_MAX_QUEUE: usize = 128;
/// Default token budget of one merged batch: 16,384 tokens (64 texts of MiniLM's 256 tokens,
/// or hundreds of short ones). The encoder splits it into its own forward batches.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 16_384;
/// Default time a request may spend queued and running: 30 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time in-flight requests get to finish after SIGTERM: 30 s.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What to do with a text longer than the model's token limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLength {
    /// Cut it at the limit (as the encoder does offline).
    Truncate,
    /// Refuse the request with `413 too_many_tokens`.
    Reject,
}

/// Server limits and settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Maximum request body in bytes.
    pub max_body_bytes: usize,
    /// Maximum texts in one request.
    pub max_batch_size: usize,
    /// Maximum characters (Unicode scalar values) in one text.
    pub max_input_chars: usize,
    /// Texts over the model's token limit: truncate or reject.
    pub over_length: OverLength,
    /// Maximum requests waiting in the queue.
    pub max_queue: usize,
    /// Token budget of one merged batch.
    pub max_batch_tokens: usize,
    /// Time limit of one request, queue and inference together.
    pub request_timeout: Duration,
    /// Time in-flight requests get after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Bearer token every route but `/`, `/health` and `/ready` requires, when set.
    pub api_key: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_input_chars: DEFAULT_MAX_INPUT_CHARS,
            over_length: OverLength::Truncate,
            max_queue: DEFAULT_MAX_QUEUE,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            api_key: None,
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{name} must be at least 1")]
pub struct ConfigError {
    /// The setting.
    pub name: &'static str,
}

impl ServerConfig {
    /// Checks that every limit lets at least one request through.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (name, v) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_batch_size", self.max_batch_size),
            ("max_input_chars", self.max_input_chars),
            ("max_queue", self.max_queue),
            ("max_batch_tokens", self.max_batch_tokens),
        ] {
            if v == 0 {
                return Err(ConfigError { name });
            }
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError {
                name: "request_timeout",
            });
        }
        Ok(())
    }
}
