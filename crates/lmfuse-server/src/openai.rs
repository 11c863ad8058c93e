//! OpenAI's routes: `POST /v1/embeddings` and `GET /v1/models`, in the shapes the official
//! `openai` package reads. Failures on these routes answer in OpenAI's error shape (see
//! [`crate::Dialect`]).
//!
//! `input` is a text, a list of texts, one text's token ids (a list of integers) or a list of
//! such lists. Token ids are embedded exactly as given (see
//! [`crate::Backend::embed_token_ids`]): decoding them to text and tokenizing again would not
//! always give the same ids back (casing, accents and spacing are lost by an uncased
//! WordPiece decode, and a text may tokenize differently from the ids a client built). They
//! must be ids of the served model's tokenizer; OpenAI's own (tiktoken) ids mean other words.
//! `model` is not checked (as text-embeddings-inference, one model is served; the answer names
//! it). `dimensions` must equal the model's dimension: no served model can shorten its vectors.

use crate::body;
use crate::{admit, embed_inputs, refuse_on_tagger, ApiError, AppState, EmbedSettings};
use axum::extract::{Request, State};
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// How `/v1/embeddings` writes each vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// A JSON list of numbers.
    Float,
    /// Base64 of the little-endian `f32` bytes (what the `openai` package asks for by default).
    Base64,
}

fn encoding_format(options: &body::Options) -> Result<Format, ApiError> {
    match options.str("encoding_format")? {
        None | Some("float") => Ok(Format::Float),
        Some("base64") => Ok(Format::Base64),
        Some(other) => Err(ApiError::invalid(
            "encoding_format",
            format!("`encoding_format` must be \"float\" or \"base64\", found {other:?}"),
        )),
    }
}

/// `POST /v1/embeddings`: `{"object": "list", "data": [{"object": "embedding", "index",
/// "embedding"}], "model", "usage"}`; vectors are unit length, as OpenAI's are.
pub(crate) async fn embeddings(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    refuse_on_tagger(&state, "/v1/embeddings")?;
    let (admitted, bytes) = admit(&state, req).await?;
    let parsed = body::parse(&bytes, "input", &state.config)?;
    drop(bytes);
    let o = &parsed.options;
    let encoding = encoding_format(o)?;
    // Named for the client's sake only; it must still be a string when sent.
    o.str("model")?;
    let settings = EmbedSettings {
        normalize: true,
        over_length: state.config.over_length,
        dimensions: o.positive("dimensions")?,
    };
    let (vectors, tokens) = embed_inputs(&state, admitted, parsed.inputs, settings).await?;
    let model = state.slot.get().map(|b| b.model_name()).unwrap_or_default();
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = match encoding {
                Format::Float => json!(v),
                Format::Base64 => json!(base64_f32_le(v)),
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

/// `GET /v1/models`: the one served model, in OpenAI's list shape.
pub(crate) async fn models(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let backend = state.slot.get().ok_or_else(crate::not_ready)?;
    Ok(Json(json!({
        "object": "list",
        "data": [{
            "id": backend.model_name(),
            "object": "model",
            "created": state.installed_at.load(Ordering::Relaxed),
            "owned_by": "lmfuse",
        }],
    })))
}

/// Base64 (RFC 4648, with padding) of `v`'s little-endian `f32` bytes.
fn base64_f32_le(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64(&bytes)
}

/// Base64 (RFC 4648 standard alphabet, with padding) of `bytes`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn vectors_are_little_endian_f32() {
        // 1.0f32 is 00 00 80 3f; -2.0f32 is 00 00 00 c0.
        assert_eq!(
            base64_f32_le(&[1.0, -2.0]),
            base64(&[0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0])
        );
        assert_eq!(base64_f32_le(&[1.0]), "AACAPw==");
    }
}
