//! The retrieval routes, for a served index ([`ServedTask::Search`]) or answer engine
//! ([`ServedTask::Answer`]):
//!
//! - `POST /search` (lmfuse): `{"query": "text" | ["text", ...], "mode", "k", "return_text"}`
//!   → the hits of a bare query, a list of hit lists for a list. Each hit is `{"rank", "id",
//!   "score", "title"}` (and `"text"` when asked for).
//! - `POST /answer` (lmfuse): `{"question", "session", "mode", "k"}` → the engine's reply
//!   (answers, intent, confidence, hand-over). A question with a `session` is read with that
//!   session's earlier turns and becomes its latest.
//! - `POST /rerank` (text-embeddings-inference): `{"query", "texts", "return_text",
//!   "raw_scores", "truncate", "truncation_direction"}` → `[{"index", "score"}, ...]`, most
//!   relevant first.
//! - `POST /similarity` (text-embeddings-inference), and `POST /` with the same body (what
//!   `huggingface_hub`'s `InferenceClient.sentence_similarity` sends): `{"inputs":
//!   {"source_sentence", "sentences"}}` → the cosine of each sentence with the source. Any
//!   served model with an encoder answers it.
//!
//! These bodies are small and read whole as JSON; each field is checked with a message that
//! names it, and every query and text against the server's limits, before anything is queued
//! (a bad request never fails the batch it would have joined).

use crate::backend::{AnswerQuery, Backend, RerankScores, SearchHit, SearchQuery, MAX_RESULTS};
use crate::batcher::{JobOutput, Work};
use crate::body::{self, options_of};
use crate::{admit, infer, tei, Admitted, ApiError, AppState, OverLength, ServedTask};
use axum::extract::{Request, State};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Longest query or question, in characters (also the pipeline's limit).
pub const MAX_QUERY_CHARS: usize = 4096;

/// Longest session id, in characters.
const MAX_SESSION_CHARS: usize = 256;

/// Results a query gets when `k` is not given.
const DEFAULT_K: usize = 10;

type Object = Map<String, Value>;

/// `bytes` as a JSON object, or a message naming `example`'s shape.
fn object_of(bytes: &[u8], example: &str) -> Result<Object, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ApiError::InvalidUtf8(e.to_string()))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err(ApiError::InvalidInput {
            param: None,
            message: format!(
                "the body must be a JSON object like {example}, found {}",
                kind(&other)
            ),
        }),
        Err(e) => Err(ApiError::InvalidJson(e.to_string())),
    }
}

/// A JSON value's kind, as messages name it.
fn kind(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string {}", Value::from(s.as_str())),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
        other => other.to_string(),
    }
}

/// Refuses fields outside `allowed` (a misspelt option must not be ignored).
fn only_fields(object: &Object, allowed: &[&str]) -> Result<(), ApiError> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(unknown) => Err(ApiError::InvalidInput {
            param: None,
            message: format!(
                "unknown field `{unknown}`: this route takes {}",
                allowed
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// The string `field` (`None` when absent or null).
fn string(object: &Object, field: &'static str) -> Result<Option<String>, ApiError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::invalid(
            field,
            format!("`{field}` must be a string, found {}", kind(other)),
        )),
    }
}

/// The string `field`, which must be there (`hint` ends the message of a wrong type).
fn required(object: &Object, field: &'static str, hint: &str) -> Result<String, ApiError> {
    match object.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(ApiError::invalid(
            field,
            format!("field `{field}` is missing"),
        )),
        Some(other) => Err(ApiError::invalid(
            field,
            format!("`{field}` must be a string{hint}, found {}", kind(other)),
        )),
    }
}

/// The boolean `field`, `false` when absent or null.
fn flag(object: &Object, field: &'static str) -> Result<bool, ApiError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::invalid(
            field,
            format!("`{field}` must be true or false, found {}", kind(other)),
        )),
    }
}

/// `k`: 1..=[`MAX_RESULTS`], [`DEFAULT_K`] when absent.
fn result_count(object: &Object) -> Result<usize, ApiError> {
    match object.get("k") {
        None | Some(Value::Null) => Ok(DEFAULT_K),
        Some(Value::Number(n))
            if n.as_u64()
                .is_some_and(|k| (1..=MAX_RESULTS as u64).contains(&k)) =>
        {
            Ok(n.as_u64().map_or(DEFAULT_K, |k| k as usize))
        }
        Some(other) => Err(ApiError::invalid(
            "k",
            format!(
                "`k` must be an integer from 1 to {MAX_RESULTS}, found {}",
                kind(other)
            ),
        )),
    }
}

/// Refuses an empty query and one over the limits.
fn check_query(
    field: &'static str,
    index: usize,
    text: &str,
    state: &AppState,
) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` {index} is empty"),
        ));
    }
    let limit = MAX_QUERY_CHARS.min(state.config.max_input_chars);
    let chars = text.chars().count();
    if chars > limit {
        return Err(ApiError::TextTooLong {
            field,
            index,
            chars,
            limit,
        });
    }
    Ok(())
}

/// The texts of `field`: a string or a list of strings (at most `max_batch_size`), each within
/// `max_input_chars`; and whether one was sent bare.
fn texts(
    object: &Object,
    field: &'static str,
    state: &AppState,
) -> Result<(Vec<String>, bool), ApiError> {
    let (texts, single) = match object.get(field) {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                field,
                format!("field `{field}` is missing"),
            ))
        }
        Some(Value::String(s)) => (vec![s.clone()], true),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(ApiError::EmptyBatch { field });
            }
            if items.len() > state.config.max_batch_size {
                return Err(ApiError::BatchTooLarge {
                    field,
                    count: items.len(),
                    limit: state.config.max_batch_size,
                });
            }
            let texts = items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(ApiError::invalid(
                        field,
                        format!("`{field}[{i}]` must be a string, found {}", kind(other)),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            (texts, false)
        }
        Some(other) => {
            return Err(ApiError::invalid(
                field,
                format!(
                    "`{field}` must be a string or a list of strings, found {}",
                    kind(other)
                ),
            ))
        }
    };
    body::check_chars(&texts, field, state.config.max_input_chars)?;
    Ok((texts, single))
}

/// The backend, refusing `route` unless it does `task`.
fn served(state: &AppState, task: ServedTask, route: &str) -> Result<Arc<dyn Backend>, ApiError> {
    let backend = state.slot.get().ok_or_else(crate::not_ready)?;
    if backend.task() == task {
        return Ok(backend);
    }
    let (what, how) = match task {
        ServedTask::Search => ("an index", "`lmfuse serve --index DIR`"),
        _ => ("an answer engine", "`lmfuse serve --faq DIR`"),
    };
    Err(ApiError::InvalidInput {
        param: None,
        message: format!(
            "{route} needs {what} ({how}); the served model is {}",
            describe(backend.task())
        ),
    })
}

fn describe(task: ServedTask) -> &'static str {
    match task {
        ServedTask::Classification => "a classifier (POST /predict)",
        ServedTask::TokenClassification => "a named-entity tagger (POST /predict)",
        ServedTask::Search => "an index (POST /search)",
        ServedTask::Answer => "an answer engine (POST /answer)",
    }
}

/// The `mode` field, checked against the backend's modes.
fn mode(object: &Object, backend: &dyn Backend) -> Result<Option<String>, ApiError> {
    let Some(mode) = string(object, "mode")? else {
        return Ok(None);
    };
    let modes = backend.modes();
    if modes.contains(&mode) {
        return Ok(Some(mode));
    }
    Err(ApiError::invalid(
        "mode",
        format!(
            "`mode` {mode:?} is not one of this model's modes: {}",
            modes.join(", ")
        ),
    ))
}

fn to_json<T: Serialize>(value: T) -> Result<Json<Value>, ApiError> {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| ApiError::Backend(e.to_string()))
}

fn unexpected(route: &str) -> ApiError {
    ApiError::Backend(format!(
        "the model returned the wrong kind of output for {route}"
    ))
}

/// `POST /search`.
pub(crate) async fn search(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let (admitted, bytes) = admit(&state, req).await?;
    let object = object_of(&bytes, r#"{"query": "text", "k": 10}"#)?;
    drop(bytes);
    let backend = served(&state, ServedTask::Search, "/search")?;
    only_fields(&object, &["query", "mode", "k", "return_text"])?;
    let (queries, single) = texts(&object, "query", &state)?;
    for (i, q) in queries.iter().enumerate() {
        check_query("query", i, q, &state)?;
    }
    let mode = mode(&object, backend.as_ref())?;
    let (k, return_text) = (result_count(&object)?, flag(&object, "return_text")?);
    let work = queries
        .into_iter()
        .map(|text| SearchQuery {
            text,
            mode: mode.clone(),
            k,
            return_text,
        })
        .collect();
    let (out, _) = infer(&state, admitted, Work::Search(work), OverLength::Truncate).await?;
    let JobOutput::Hits(mut hits) = out else {
        return Err(unexpected("/search"));
    };
    match (single, hits.pop()) {
        (true, Some(one)) => to_json(one),
        (_, last) => {
            hits.extend(last);
            to_json::<Vec<Vec<SearchHit>>>(hits)
        }
    }
}

/// `POST /answer`.
pub(crate) async fn answer(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let (admitted, bytes) = admit(&state, req).await?;
    let object = object_of(&bytes, r#"{"question": "text", "session": "id"}"#)?;
    drop(bytes);
    let backend = served(&state, ServedTask::Answer, "/answer")?;
    only_fields(&object, &["question", "session", "mode", "k"])?;
    let question = required(&object, "question", " (one question per request)")?;
    check_query("question", 0, &question, &state)?;
    let session = string(&object, "session")?;
    if let Some(s) = &session {
        if s.is_empty() || s.chars().count() > MAX_SESSION_CHARS {
            return Err(ApiError::invalid(
                "session",
                format!("`session` must hold 1 to {MAX_SESSION_CHARS} characters"),
            ));
        }
    }
    let query = AnswerQuery {
        question,
        session,
        mode: mode(&object, backend.as_ref())?,
        k: result_count(&object)?,
    };
    let (out, _) = infer(
        &state,
        admitted,
        Work::Answer(vec![query]),
        OverLength::Truncate,
    )
    .await?;
    match out {
        JobOutput::Answers(mut a) if a.len() == 1 => Ok(Json(a.remove(0))),
        _ => Err(unexpected("/answer")),
    }
}

/// One reranked text, as text-embeddings-inference answers it.
#[derive(Debug, Serialize)]
struct Ranked {
    index: usize,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// `POST /rerank`.
pub(crate) async fn rerank(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let (admitted, bytes) = admit(&state, req).await?;
    let object = object_of(&bytes, r#"{"query": "text", "texts": ["text", ...]}"#)?;
    drop(bytes);
    only_fields(
        &object,
        &[
            "query",
            "texts",
            "return_text",
            "raw_scores",
            "truncate",
            "truncation_direction",
        ],
    )?;
    let query = required(&object, "query", "")?;
    check_query("query", 0, &query, &state)?;
    let (texts, _) = texts(&object, "texts", &state)?;
    let backend = state.slot.get().ok_or_else(crate::not_ready)?;
    let logits = backend.rerank_scores() == RerankScores::Logits;
    let raw = flag(&object, "raw_scores")?;
    if raw && !logits {
        return Err(ApiError::invalid(
            "raw_scores",
            "`raw_scores` is not available: the scores are cosine similarities of the served \
             encoder's embeddings, not a cross-encoder's logits (serve one with --reranker)",
        ));
    }
    let return_text = flag(&object, "return_text")?;
    let over = tei::over_length(&state, &options_of(&object))?;
    // The texts go to the batch; a copy stays only when the answer shows them.
    let shown = if return_text {
        texts.clone()
    } else {
        Vec::new()
    };
    let work = Work::Rerank { query, texts };
    let (out, _) = infer(&state, admitted, work, over).await?;
    let JobOutput::Scores(mut scores) = out else {
        return Err(unexpected("/rerank"));
    };
    if logits && !raw {
        scores
            .iter_mut()
            .for_each(|s| *s = 1.0 / (1.0 + (-*s).exp()));
    }
    let mut shown = shown.into_iter();
    let mut ranked: Vec<Ranked> = scores
        .into_iter()
        .enumerate()
        .map(|(index, score)| Ranked {
            index,
            score,
            text: shown.next(),
        })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    to_json(ranked)
}

/// `POST /similarity`.
pub(crate) async fn similarity(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let (admitted, bytes) = admit(&state, req).await?;
    let object = object_of(&bytes, SIMILARITY_EXAMPLE)?;
    drop(bytes);
    similarity_of(&state, admitted, object).await
}

/// `POST /` on an index or an answer engine: sentence similarity for `{"inputs":
/// {"source_sentence", "sentences"}}`, embeddings (as `/embed`) for texts.
pub(crate) async fn root(state: &AppState, req: Request) -> Result<Json<Value>, ApiError> {
    let (admitted, bytes) = admit(state, req).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(object)) if object.get("inputs").is_some_and(Value::is_object) => {
            drop(bytes);
            similarity_of(state, admitted, object).await
        }
        _ => tei::embed_body(state, admitted, bytes).await,
    }
}

const SIMILARITY_EXAMPLE: &str =
    r#"{"inputs": {"source_sentence": "text", "sentences": ["text", ...]}}"#;

/// The cosine of each of the body's sentences with its source sentence.
async fn similarity_of(
    state: &AppState,
    admitted: Admitted<'_>,
    object: Object,
) -> Result<Json<Value>, ApiError> {
    only_fields(
        &object,
        &[
            "inputs",
            "truncate",
            "truncation_direction",
            "prompt_name",
            "parameters",
        ],
    )?;
    let inputs = match object.get("inputs") {
        Some(Value::Object(o)) => o,
        _ => {
            return Err(ApiError::invalid(
                "inputs",
                format!("`inputs` must be an object like {SIMILARITY_EXAMPLE}"),
            ))
        }
    };
    only_fields(inputs, &["source_sentence", "sentences"])?;
    if object
        .get("parameters")
        .is_some_and(|p| !p.is_null() && p.as_object().is_none_or(|o| !o.is_empty()))
    {
        return Err(ApiError::invalid(
            "parameters",
            "sentence similarity takes no `parameters`",
        ));
    }
    let Some(source) = string(inputs, "source_sentence")? else {
        return Err(ApiError::invalid(
            "inputs",
            "field `inputs.source_sentence` is missing",
        ));
    };
    let (sentences, _) = texts(inputs, "sentences", state)?;
    body::check_chars(
        std::slice::from_ref(&source),
        "source_sentence",
        state.config.max_input_chars,
    )?;
    let options = options_of(&object);
    tei::refuse_prompt_name(&options)?;
    let over = tei::over_length(state, &options)?;
    let mut all = Vec::with_capacity(sentences.len() + 1);
    all.push(source);
    all.extend(sentences);
    let (out, _) = infer(state, admitted, Work::Embed(all), over).await?;
    let JobOutput::Embeddings(vectors) = out else {
        return Err(unexpected("/similarity"));
    };
    let (source, rest) = vectors
        .split_first()
        .ok_or_else(|| unexpected("/similarity"))?;
    to_json(rest.iter().map(|v| cosine(source, v)).collect::<Vec<f32>>())
}

/// The cosine of `a` and `b` (0 when either is zero), in f64 then rounded: what `/similarity`
/// answers, and what backends that rerank by embeddings use, so that the two routes agree.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na * nb)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_is_one_for_parallel_vectors_and_zero_for_a_zero_one() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert!((cosine(&[1.0, 0.0], &[0.0, 3.0])).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }
}
