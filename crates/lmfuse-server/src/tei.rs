//! The routes of text-embeddings-inference (TEI) that `huggingface_hub`'s `InferenceClient`
//! calls, and lmfuse's richer `/classify`:
//!
//! - `POST /predict`: `[{"label", "score"}, ...]` highest first for a text, a list of such
//!   lists for a list of texts (TEI's shapes). A flat list of strings is a batch of texts (TEI
//!   would read two strings as a pair; lmfuse classifies single texts); TEI's `[["text"], ...]`
//!   is accepted too.
//! - `POST /`: TEI answers by model type, and lmfuse bundles are classifiers, so `/` classifies
//!   like `/predict`, but always with one list per input (also for a bare text): the shape of
//!   the Hugging Face Inference API, which `InferenceClient.text_classification` reads (it takes
//!   the first list of the answer).
//! - `POST /embed`: `[[f32, ...], ...]`, with `normalize` (default true) and `truncate`.
//! - `POST /classify`: lmfuse's answer, as `lmfuse predict` prints it: `{"label",
//!   "probabilities", "oos"}` for a text, a list of them for a list.
//!
//! A named-entity tagger ([`ServedTask::TokenClassification`]) answers on `POST /` and
//! `/predict` the shape of Hugging Face's token-classification pipeline with
//! `aggregation_strategy="simple"`, which `InferenceClient.token_classification` reads:
//! `[{"entity_group", "score", "word", "start", "end"}, ...]` for a text, a list of such lists
//! for a list of texts; `start` and `end` count characters (Python `str` indices).
//! `parameters.aggregation_strategy` may be "simple", "first", "average" or "max" (the tagger
//! labels whole words, so all four give the same entities), `parameters.ignore_labels` drops
//! entity types, and `parameters.stride` is accepted and has no effect (texts are tagged whole).
//! `/classify` and `/embed` refuse a tagger.

use crate::batcher::{JobOutput, Work};
use crate::body::{self, Inputs, Options};
use crate::{
    admit, embed_inputs, infer, refuse_on_tagger, served_task, Admitted, ApiError, AppState,
    EmbedSettings, OverLength, Prediction, ServedTask, TokenEntity,
};
use axum::extract::{Request, State};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

/// One label and its score, as TEI's `/predict` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Scored {
    pub label: String,
    pub score: f32,
}

/// The labels of `p` with their probabilities, highest first (the predicted label first among
/// equal scores, then by name); at most `top_k`.
pub(crate) fn ranked(p: Prediction, top_k: Option<usize>) -> Vec<Scored> {
    let top = p.label;
    let mut scored: Vec<Scored> = p
        .probabilities
        .into_iter()
        .map(|(label, score)| Scored { label, score })
        .collect();
    scored.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| (a.label != top).cmp(&(b.label != top)))
            .then_with(|| a.label.cmp(&b.label))
    });
    if let Some(k) = top_k {
        scored.truncate(k);
    }
    scored
}

/// How this request treats texts over the token limit: TEI's `truncate` overrides the server's
/// `--over-length` (true cuts, false refuses); only the end of a text is ever cut.
pub(crate) fn over_length(state: &AppState, options: &Options) -> Result<OverLength, ApiError> {
    match options.str("truncation_direction")? {
        None => {}
        Some(d) if d.eq_ignore_ascii_case("right") => {}
        Some(d) if d.eq_ignore_ascii_case("left") => {
            return Err(ApiError::invalid(
                "truncation_direction",
                "`truncation_direction` \"left\" is not supported: lmfuse cuts long texts at \
                 the end (\"right\")",
            ))
        }
        Some(d) => {
            return Err(ApiError::invalid(
                "truncation_direction",
                format!("`truncation_direction` must be \"right\" or \"left\", found {d:?}"),
            ))
        }
    }
    Ok(match options.bool("truncate")? {
        Some(true) => OverLength::Truncate,
        Some(false) => OverLength::Reject,
        None => state.config.over_length,
    })
}

/// Checks the text-classification options (`raw_scores`, `parameters`); returns `top_k`.
fn classification_options(options: &Options) -> Result<Option<usize>, ApiError> {
    if options.bool("raw_scores")? == Some(true) {
        return Err(ApiError::invalid(
            "raw_scores",
            "`raw_scores` is not available: lmfuse bundles give class probabilities, not logits",
        ));
    }
    match options.function_to_apply()? {
        None => {}
        Some(f) if f.eq_ignore_ascii_case("softmax") => {}
        Some(f) => {
            return Err(ApiError::invalid(
                "parameters",
                format!(
                    "`parameters.function_to_apply` {f:?} is not available: lmfuse bundles give \
                     class probabilities (what \"softmax\" gives); send \"softmax\" or leave it out"
                ),
            ))
        }
    }
    Ok(options
        .top_k()?
        .map(|k| usize::try_from(k).unwrap_or(usize::MAX)))
}

/// The predictions of a request's texts, whether one text was sent bare, and `top_k`.
struct Predicted {
    predictions: Vec<Prediction>,
    single: bool,
    top_k: Option<usize>,
}

/// Reads, checks and classifies a request to `/`, `/predict` or `/classify` (`tei`: the TEI
/// options are checked too).
async fn predictions(state: &AppState, req: Request, tei: bool) -> Result<Predicted, ApiError> {
    let (admitted, bytes) = admit(state, req).await?;
    let parsed = body::parse(&bytes, "inputs", &state.config)?;
    drop(bytes);
    let over = over_length(state, &parsed.options)?;
    let top_k = if tei {
        classification_options(&parsed.options)?
    } else {
        None
    };
    let Inputs::Texts(texts) = parsed.inputs else {
        return Err(ApiError::invalid(
            "inputs",
            "token ids are taken by /embed and /v1/embeddings only: send texts to classify",
        ));
    };
    let (out, _) = infer(state, admitted, Work::Predict(texts), over).await?;
    match out {
        JobOutput::Predictions(predictions) => Ok(Predicted {
            predictions,
            single: parsed.single,
            top_k,
        }),
        _ => Err(ApiError::Backend(
            "the model returned no predictions for a prediction request".into(),
        )),
    }
}

/// The aggregation strategies answered: the tagger labels whole words, so the word-level
/// ones group entities as "simple" does.
const AGGREGATIONS: [&str; 4] = ["simple", "first", "average", "max"];

/// Checks the token-classification options (`parameters.aggregation_strategy`, `stride`);
/// returns the entity types to drop (`parameters.ignore_labels`).
fn token_options(options: &Options) -> Result<Vec<String>, ApiError> {
    match options.aggregation_strategy()? {
        None => {}
        Some(a) if AGGREGATIONS.iter().any(|k| a.eq_ignore_ascii_case(k)) => {}
        Some(a) if a.eq_ignore_ascii_case("none") => {
            return Err(ApiError::invalid(
                "parameters",
                "`parameters.aggregation_strategy` \"none\" is not available: lmfuse answers \
                 whole entities (\"simple\"), not one tag per token",
            ))
        }
        Some(a) => {
            return Err(ApiError::invalid(
                "parameters",
                format!(
                    "`parameters.aggregation_strategy` must be \"simple\", \"first\", \
                     \"average\" or \"max\", found {a:?}"
                ),
            ))
        }
    }
    // Texts are tagged whole (long ones in overlapping windows of the encoder): no chunks.
    options.stride()?;
    options.ignore_labels()
}

/// Reads, checks and tags a request to `/` or `/predict` served by a tagger: each text's
/// entities, and whether one text was sent bare.
async fn entities(
    state: &AppState,
    req: Request,
) -> Result<(Vec<Vec<TokenEntity>>, bool), ApiError> {
    let (admitted, bytes) = admit(state, req).await?;
    let parsed = body::parse(&bytes, "inputs", &state.config)?;
    drop(bytes);
    let over = over_length(state, &parsed.options)?;
    let ignore = token_options(&parsed.options)?;
    let Inputs::Texts(texts) = parsed.inputs else {
        return Err(ApiError::invalid(
            "inputs",
            "token ids are not taken by a named-entity tagger: send texts",
        ));
    };
    let (out, _) = infer(state, admitted, Work::Tag(texts), over).await?;
    let JobOutput::Entities(mut lists) = out else {
        return Err(ApiError::Backend(
            "the model returned no entities for a tagging request".into(),
        ));
    };
    if !ignore.is_empty() {
        for list in &mut lists {
            list.retain(|e| !ignore.contains(&e.entity_group));
        }
    }
    Ok((lists, parsed.single))
}

/// `POST /` and `/predict` on a tagger: a bare text's entities, a list of them for a list.
async fn tagged(state: &AppState, req: Request) -> Result<Json<Value>, ApiError> {
    let (mut lists, single) = entities(state, req).await?;
    match (single, lists.pop()) {
        (true, Some(one)) => to_json(one),
        (_, last) => {
            lists.extend(last);
            to_json(lists)
        }
    }
}

fn to_json<T: Serialize>(value: T) -> Result<Json<Value>, ApiError> {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| ApiError::Backend(e.to_string()))
}

/// `POST /`: one ranked list per input, also for a bare text; a tagger's entities.
pub(crate) async fn root(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    match served_task(&state) {
        Some(ServedTask::TokenClassification) => return tagged(&state, req).await,
        Some(ServedTask::Search | ServedTask::Answer) => {
            return crate::search::root(&state, req).await
        }
        Some(ServedTask::Classification) | None => {}
    }
    let p = predictions(&state, req, true).await?;
    let lists: Vec<Vec<Scored>> = p
        .predictions
        .into_iter()
        .map(|x| ranked(x, p.top_k))
        .collect();
    to_json(lists)
}

/// `POST /predict`: TEI's shapes, a ranked list for a bare text, a list of them for a list;
/// a tagger's entities.
pub(crate) async fn predict(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    if served_task(&state) == Some(ServedTask::TokenClassification) {
        return tagged(&state, req).await;
    }
    let p = predictions(&state, req, true).await?;
    let mut lists: Vec<Vec<Scored>> = p
        .predictions
        .into_iter()
        .map(|x| ranked(x, p.top_k))
        .collect();
    match (p.single, lists.pop()) {
        (true, Some(one)) => to_json(one),
        (_, last) => {
            lists.extend(last);
            to_json(lists)
        }
    }
}

/// `POST /classify`: lmfuse's answer (label, every probability, out-of-scope verdict).
pub(crate) async fn classify(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    refuse_on_tagger(&state, "/classify")?;
    let mut p = predictions(&state, req, false).await?;
    if p.single {
        to_json(p.predictions.pop())
    } else {
        to_json(p.predictions)
    }
}

/// `POST /embed`: TEI's embeddings, `[[f32, ...], ...]` (one list per input, also for a bare
/// text), unit length unless `normalize` is false.
pub(crate) async fn embed(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    refuse_on_tagger(&state, "/embed")?;
    let (admitted, bytes) = admit(&state, req).await?;
    embed_body(&state, admitted, bytes).await
}

/// Refuses a `prompt_name` (TEI's named instruction prompts): lmfuse models have none.
pub(crate) fn refuse_prompt_name(o: &body::Options) -> Result<(), ApiError> {
    match o.str("prompt_name")? {
        Some(p) => Err(ApiError::invalid(
            "prompt_name",
            format!("`prompt_name` {p:?} is not available: lmfuse models have no prompts"),
        )),
        None => Ok(()),
    }
}

/// Embeds the texts or token ids of an admitted `/embed`-shaped body.
pub(crate) async fn embed_body(
    state: &AppState,
    admitted: Admitted<'_>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let parsed = body::parse(&bytes, "inputs", &state.config)?;
    drop(bytes);
    let o = &parsed.options;
    refuse_prompt_name(o)?;
    match o.str("encoding_format")? {
        None | Some("float") => {}
        Some(f) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!(
                    "`encoding_format` {f:?} is not available on /embed, which answers floats; \
                     /v1/embeddings also answers \"base64\""
                ),
            ))
        }
    }
    let settings = EmbedSettings {
        normalize: o.bool("normalize")?.unwrap_or(true),
        over_length: over_length(state, o)?,
        dimensions: o.positive("dimensions")?,
    };
    let (vectors, _) = embed_inputs(state, admitted, parsed.inputs, settings).await?;
    to_json(vectors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn prediction(label: &str, probs: &[(&str, f32)]) -> Prediction {
        Prediction {
            label: label.into(),
            probabilities: probs
                .iter()
                .map(|(l, p)| (l.to_string(), *p))
                .collect::<BTreeMap<_, _>>(),
            oos: None,
        }
    }

    fn labels(v: &[Scored]) -> Vec<&str> {
        v.iter().map(|s| s.label.as_str()).collect()
    }

    #[test]
    fn labels_are_ranked_by_score_then_the_predicted_one_then_name() {
        let p = prediction("b", &[("a", 0.2), ("b", 0.5), ("c", 0.3)]);
        let r = ranked(p.clone(), None);
        assert_eq!(labels(&r), ["b", "c", "a"]);
        assert_eq!(r[0].score, 0.5);
        assert_eq!(labels(&ranked(p, Some(2))), ["b", "c"]);
        // A tie: the predicted label (argmax's choice) leads, the others by name.
        let tie = prediction("z", &[("y", 0.4), ("z", 0.4), ("x", 0.2), ("w", 0.2)]);
        assert_eq!(labels(&ranked(tie, Some(10))), ["z", "y", "w", "x"]);
    }
}
