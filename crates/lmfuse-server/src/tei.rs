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

use crate::batcher::{JobOutput, Work};
use crate::body::{self, Inputs, Options};
use crate::{
    admit, embed_inputs, infer, ApiError, AppState, EmbedSettings, OverLength, Prediction,
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
        JobOutput::Embeddings(_) => Err(ApiError::Backend(
            "the model returned embeddings for a prediction".into(),
        )),
    }
}

fn to_json<T: Serialize>(value: T) -> Result<Json<Value>, ApiError> {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| ApiError::Backend(e.to_string()))
}

/// `POST /`: one ranked list per input, also for a bare text.
pub(crate) async fn root(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let p = predictions(&state, req, true).await?;
    let lists: Vec<Vec<Scored>> = p
        .predictions
        .into_iter()
        .map(|x| ranked(x, p.top_k))
        .collect();
    to_json(lists)
}

/// `POST /predict`: TEI's shapes, a ranked list for a bare text, a list of them for a list.
pub(crate) async fn predict(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
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
    let (admitted, bytes) = admit(&state, req).await?;
    let parsed = body::parse(&bytes, "inputs", &state.config)?;
    drop(bytes);
    let o = &parsed.options;
    if let Some(p) = o.str("prompt_name")? {
        return Err(ApiError::invalid(
            "prompt_name",
            format!("`prompt_name` {p:?} is not available: lmfuse models have no prompts"),
        ));
    }
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
        over_length: over_length(&state, o)?,
        dimensions: o.positive("dimensions")?,
    };
    let (vectors, _) = embed_inputs(&state, admitted, parsed.inputs, settings).await?;
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
