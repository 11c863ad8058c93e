//! The inference backend the server drives: a small synchronous trait, so that the HTTP layer
//! can be tested with a fake backend and the real one (encoder + classical head) lives in the
//! binary.

use serde::Serialize;
use std::collections::BTreeMap;

/// What a backend can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The model could not run (tokenizer or forward-pass failure).
    #[error("inference failed: {0}")]
    Inference(String),
    /// The backend cannot do this at all (for example `/predict` on an embedding-only model).
    #[error("{0}")]
    Unsupported(String),
    /// A model could not be loaded (startup or reload).
    #[error("cannot load the model: {0}")]
    Load(String),
}

/// Token count of one text, as the model would see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCount {
    /// Tokens (special tokens included) after the model's own truncation.
    pub tokens: usize,
    /// Whether the text is longer than the model's maximum and was cut.
    pub truncated: bool,
}

/// The prediction for one text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The most probable label.
    pub label: String,
    /// Probability of every label.
    pub probabilities: BTreeMap<String, f32>,
    /// Out-of-scope detection, when the bundle has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oos: Option<Oos>,
}

/// Out-of-scope verdict of a bundle that detects inputs unlike its training data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Oos {
    /// Whether the text is out of scope.
    pub is_oos: bool,
    /// The detector's score (higher: more out of scope).
    pub score: f32,
}

/// One entity found in a text, in the shape of Hugging Face's token-classification pipeline
/// with `aggregation_strategy="simple"` (what `InferenceClient.token_classification` reads).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenEntity {
    /// The entity type.
    pub entity_group: String,
    /// The tagger's confidence in the entity.
    pub score: f32,
    /// The covered text: `text[start..end]` in characters.
    pub word: String,
    /// First character (Unicode scalar values: a Python `str` index).
    pub start: usize,
    /// One past the last character.
    pub end: usize,
}

/// What a backend's model does, which decides what `POST /` and `/predict` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServedTask {
    /// Labels and probabilities of whole texts ([`Backend::predict`]).
    #[default]
    Classification,
    /// Entities in texts ([`Backend::tag`]); [`Backend::predict`] and [`Backend::embed`]
    /// answer [`BackendError::Unsupported`].
    TokenClassification,
}

/// A model the server can run. Calls come from the batching worker thread (and, for
/// [`Backend::count_tokens`], from blocking tasks), never from the async runtime's threads, so
/// implementations may use all cores.
pub trait Backend: Send + Sync + 'static {
    /// Token counts of `texts` (for the token budget of a batch and the per-text token limit).
    fn count_tokens(&self, texts: &[&str]) -> Result<Vec<TokenCount>, BackendError>;

    /// Labels and probabilities of `texts`, in input order.
    fn predict(&self, texts: &[&str]) -> Result<Vec<Prediction>, BackendError>;

    /// Sentence embeddings of `texts`, in input order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BackendError>;

    /// What `/info` shows: the bundle manifest and model facts.
    fn info(&self) -> serde_json::Value;

    /// The model name reported by `/v1/embeddings`.
    fn model_name(&self) -> String;

    /// Token counts of inputs given as token ids (`/v1/embeddings` and `/embed` take them), as
    /// [`Backend::embed_token_ids`] will read them. Fails with [`BackendError::Unsupported`]
    /// when an id is outside the vocabulary. Added for OpenAI's token-id inputs; the default
    /// says the model takes none.
    fn count_token_ids(&self, ids: &[&[u32]]) -> Result<Vec<TokenCount>, BackendError> {
        let _ = ids;
        Err(BackendError::Unsupported(
            "this model does not take token ids: send texts".into(),
        ))
    }

    /// Sentence embeddings of inputs given as token ids, in input order. Each list is one
    /// text's tokens as the model's tokenizer gives them; the model's special tokens are
    /// added unless the list already starts and ends with them, and it is cut at the token
    /// limit as texts are. The default says the model takes none.
    fn embed_token_ids(&self, ids: &[&[u32]]) -> Result<Vec<Vec<f32>>, BackendError> {
        let _ = ids;
        Err(BackendError::Unsupported(
            "this model does not take token ids: send texts".into(),
        ))
    }

    /// What the model does; classification unless the backend says otherwise.
    fn task(&self) -> ServedTask {
        ServedTask::Classification
    }

    /// The entities of `texts`, in input order, each text's in text order. Only a
    /// [`ServedTask::TokenClassification`] backend has them; the default says so.
    fn tag(&self, texts: &[&str]) -> Result<Vec<Vec<TokenEntity>>, BackendError> {
        let _ = texts;
        Err(BackendError::Unsupported(
            "this model is a classifier: it labels whole texts and finds no entities; POST / \
             or /predict for its labels"
                .into(),
        ))
    }

    /// Checks that the model runs, with a real forward pass (used before `/ready` turns 200):
    /// [`Backend::predict`] or [`Backend::tag`] as [`Backend::task`] says.
    fn health(&self) -> Result<(), BackendError> {
        match self.task() {
            ServedTask::Classification => self.predict(&["health check"]).map(|_| ()),
            ServedTask::TokenClassification => self.tag(&["health check"]).map(|_| ()),
        }
    }
}

/// Loads a new backend for a reload: `None` reloads the model the server started with, `Some`
/// loads another bundle folder. Runs on a blocking thread, beside the serving backend.
pub type Reloader =
    dyn Fn(Option<&str>) -> Result<std::sync::Arc<dyn Backend>, BackendError> + Send + Sync;
