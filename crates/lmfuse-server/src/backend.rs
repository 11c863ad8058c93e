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
    /// Documents of an index for queries ([`Backend::search`]), and the index's encoder for
    /// embeddings, similarity and reranking.
    Search,
    /// Answers of a customer-service answer engine ([`Backend::answer`]), and its encoder for
    /// embeddings, similarity and reranking.
    Answer,
}

/// What a backend's rerank scores are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RerankScores {
    /// Cosines of the query's and the text's embeddings (a bi-encoder): answered as they are.
    Cosine,
    /// A cross-encoder's logits: `/rerank` answers their sigmoid, or the logits themselves
    /// with `raw_scores` (text-embeddings-inference's convention).
    Logits,
}

/// Most results one query may ask for (`k` of `/search` and `/answer`).
pub const MAX_RESULTS: usize = 1000;

/// One query to a served index (`POST /search`).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// The query.
    pub text: String,
    /// The mode, one of [`Backend::modes`] (`None`: the first, the backend's default).
    pub mode: Option<String>,
    /// How many documents to return (1..=[`MAX_RESULTS`]).
    pub k: usize,
    /// Whether each hit carries its document's text.
    pub return_text: bool,
}

/// One document found for a query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    /// 1 for the best.
    pub rank: usize,
    /// The document's id.
    pub id: String,
    /// Its score under the mode used (higher is better; scales differ between modes).
    pub score: f32,
    /// Its title (may be empty).
    pub title: String,
    /// Its text, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// One question to a served answer engine (`POST /answer`).
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerQuery {
    /// The question.
    pub question: String,
    /// The conversation it belongs to: the engine reads it with the session's earlier turns
    /// and records it as the session's latest (`None`: a question on its own).
    pub session: Option<String>,
    /// The mode, one of [`Backend::modes`] (`None`: the first, the backend's default).
    pub mode: Option<String>,
    /// How many answers to return (1..=[`MAX_RESULTS`]).
    pub k: usize,
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

    /// The modes of [`Backend::search`] or [`Backend::answer`], the default first; empty for
    /// the other tasks.
    fn modes(&self) -> Vec<String> {
        Vec::new()
    }

    /// The `k` best documents of each query, in input order. Only a [`ServedTask::Search`]
    /// backend has them; the route has checked each mode against [`Backend::modes`].
    fn search(&self, queries: &[SearchQuery]) -> Result<Vec<Vec<SearchHit>>, BackendError> {
        let _ = queries;
        Err(BackendError::Unsupported(
            "the served model is not an index: serve one with `lmfuse serve --index DIR` for \
             /search"
                .into(),
        ))
    }

    /// The engine's reply to each question (its JSON), in input order, each read with its
    /// session's earlier turns and then recorded in the session. Only a
    /// [`ServedTask::Answer`] backend has them; the route has checked each mode.
    fn answer(&self, questions: &[AnswerQuery]) -> Result<Vec<serde_json::Value>, BackendError> {
        let _ = questions;
        Err(BackendError::Unsupported(
            "the served model is not an answer engine: serve one with `lmfuse serve --faq DIR` \
             for /answer"
                .into(),
        ))
    }

    /// What [`Backend::rerank`]'s scores are; cosines unless the backend says otherwise.
    fn rerank_scores(&self) -> RerankScores {
        RerankScores::Cosine
    }

    /// The relevance of each (query, text) pair, higher is more relevant, in input order
    /// (`/rerank`), as [`Backend::rerank_scores`] says. The default says the model cannot
    /// rerank.
    fn rerank(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>, BackendError> {
        let _ = pairs;
        Err(BackendError::Unsupported(
            "the served model does not rerank: serve an index (`--index`) or an answer engine \
             (`--faq`)"
                .into(),
        ))
    }

    /// Checks that the model runs, with a real forward pass (used before `/ready` turns 200):
    /// the call [`Backend::task`] says the model answers.
    fn health(&self) -> Result<(), BackendError> {
        match self.task() {
            ServedTask::Classification => self.predict(&["health check"]).map(|_| ()),
            ServedTask::TokenClassification => self.tag(&["health check"]).map(|_| ()),
            ServedTask::Search => self
                .search(&[SearchQuery {
                    text: "health check".into(),
                    mode: None,
                    k: 1,
                    return_text: false,
                }])
                .map(|_| ()),
            ServedTask::Answer => self
                .answer(&[AnswerQuery {
                    question: "health check".into(),
                    session: None,
                    mode: None,
                    k: 1,
                }])
                .map(|_| ()),
        }
    }
}

/// Loads a new backend for a reload: `None` reloads the model the server started with, `Some`
/// loads another bundle folder. Runs on a blocking thread, beside the serving backend.
pub type Reloader =
    dyn Fn(Option<&str>) -> Result<std::sync::Arc<dyn Backend>, BackendError> + Send + Sync;
