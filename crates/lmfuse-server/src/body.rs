//! Typed request bodies: `{"inputs": "text"}` or `{"inputs": ["t1", ...]}` read straight into
//! strings, without an intermediate `serde_json::Value` tree. Only the texts a request may hold
//! (`max_batch_size`) are kept; everything else is skipped as it is parsed, so a body of a
//! million tiny JSON values costs no more memory than the body itself. The visitors accept any
//! JSON, so every deserialization error is a syntax error (`invalid_json`); shapes and types are
//! checked afterwards, with the same messages as before.

use crate::config::ServerConfig;
use crate::error::ApiError;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Skips a list; its kind, as messages name it.
fn seq_kind<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<&'static str, A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok("a list")
}

/// Skips an object; its kind, as messages name it.
fn map_kind<'de, A: MapAccess<'de>>(mut map: A) -> Result<&'static str, A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok("an object")
}

/// A JSON value that is a string (kept) or something else (only its kind is kept).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    Text(String),
    Other(&'static str),
}

impl<'de> de::Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Item;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Item, E> {
                Ok(Item::Text(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Item, E> {
                Ok(Item::Text(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Item, E> {
                Ok(Item::Other("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Item, E> {
                Ok(Item::Other("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Item, E> {
                Ok(Item::Other("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Item, E> {
                Ok(Item::Other("a number"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Item, E> {
                Ok(Item::Other("null"))
            }
            fn visit_none<E: de::Error>(self) -> Result<Item, E> {
                Ok(Item::Other("null"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Item, A::Error> {
                seq_kind(seq).map(Item::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Item, A::Error> {
                map_kind(map).map(Item::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// The value of the texts field.
#[derive(Debug)]
enum Texts {
    One(String),
    Many {
        /// The strings among the first `max` items, up to the first non-string.
        texts: Vec<String>,
        /// Items in the list.
        count: usize,
        /// The first item (within the first `max`) that is not a string: index and kind.
        first_bad: Option<(usize, &'static str)>,
    },
    Other(&'static str),
}

/// Reads the texts field, keeping at most `max` strings.
struct TextsSeed {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for TextsSeed {
    type Value = Texts;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Texts, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextsSeed {
    type Value = Texts;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a list of strings")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Texts, E> {
        Ok(Texts::One(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Texts, E> {
        Ok(Texts::One(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Texts, E> {
        Ok(Texts::Other("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Texts, E> {
        Ok(Texts::Other("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Texts, E> {
        Ok(Texts::Other("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Texts, E> {
        Ok(Texts::Other("a number"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Texts, E> {
        Ok(Texts::Other("null"))
    }
    fn visit_none<E: de::Error>(self) -> Result<Texts, E> {
        Ok(Texts::Other("null"))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Texts, A::Error> {
        map_kind(map).map(Texts::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Texts, A::Error> {
        let mut texts = Vec::new();
        let mut count = 0;
        let mut first_bad = None;
        loop {
            // Past the limit, or after a bad item, only count (the first failure is the one
            // reported, and over the limit the count is all the message needs).
            let keep = count < self.max && first_bad.is_none();
            let more = if keep {
                match seq.next_element::<Item>()? {
                    Some(Item::Text(s)) => {
                        texts.push(s);
                        true
                    }
                    Some(Item::Other(kind)) => {
                        first_bad = Some((count, kind));
                        true
                    }
                    None => false,
                }
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                break;
            }
            count += 1;
        }
        Ok(Texts::Many {
            texts,
            count,
            first_bad,
        })
    }
}

/// A request body: the texts field and `encoding_format`, or the kind of a non-object body.
#[derive(Debug)]
enum Body {
    Object {
        texts: Option<Texts>,
        encoding_format: Option<Item>,
    },
    NotObject(&'static str),
}

struct BodySeed {
    field: &'static str,
    max: usize,
}

impl<'de> DeserializeSeed<'de> for BodySeed {
    type Value = Body;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Body, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BodySeed {
    type Value = Body;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Body, E> {
        Ok(Body::NotObject("a string"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Body, E> {
        Ok(Body::NotObject("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Body, E> {
        Ok(Body::NotObject("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Body, E> {
        Ok(Body::NotObject("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Body, E> {
        Ok(Body::NotObject("a number"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Body, E> {
        Ok(Body::NotObject("null"))
    }
    fn visit_none<E: de::Error>(self) -> Result<Body, E> {
        Ok(Body::NotObject("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Body, A::Error> {
        seq_kind(seq).map(Body::NotObject)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let (mut texts, mut encoding_format) = (None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.field {
                // A repeated key: the last one counts, as with a JSON object read whole.
                texts = Some(map.next_value_seed(TextsSeed { max: self.max })?);
            } else if key == "encoding_format" {
                encoding_format = Some(map.next_value::<Item>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Body::Object {
            texts,
            encoding_format,
        })
    }
}

/// The texts of a request body.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub texts: Vec<String>,
    /// Whether a single string was sent.
    pub single: bool,
    /// `encoding_format`, when sent (and not null).
    pub encoding_format: Option<Item>,
}

/// Checks that `bytes` is UTF-8 JSON.
fn utf8(bytes: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(bytes).map_err(|e| ApiError::InvalidUtf8(e.to_string()))
}

/// Parses a body with `seed`; any error is a syntax error (the visitors accept every value).
fn parse_seed<'de, S: DeserializeSeed<'de>>(text: &'de str, seed: S) -> Result<S::Value, ApiError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = seed
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    Ok(value)
}

/// The texts of `field` (a string or a list of strings), checked against the limits.
pub(crate) fn texts(
    bytes: &[u8],
    field: &'static str,
    config: &ServerConfig,
) -> Result<Parsed, ApiError> {
    let text = utf8(bytes)?;
    let body = parse_seed(
        text,
        BodySeed {
            field,
            max: config.max_batch_size,
        },
    )?;
    let (texts, encoding_format) = match body {
        Body::NotObject(kind) => {
            return Err(ApiError::InvalidInput(format!(
                "the body must be a JSON object like {{\"{field}\": \"text\"}}, found {kind}"
            )))
        }
        Body::Object {
            texts,
            encoding_format,
        } => (texts, encoding_format),
    };
    let encoding_format = encoding_format.filter(|e| *e != Item::Other("null"));
    let (texts, single) = match texts {
        None => {
            return Err(ApiError::InvalidInput(format!(
                "field `{field}` is missing: send {{\"{field}\": \"text\"}} or {{\"{field}\": [\"text\", ...]}}"
            )))
        }
        Some(Texts::One(s)) => (vec![s], true),
        Some(Texts::Many {
            texts,
            count,
            first_bad,
        }) => {
            if count == 0 {
                return Err(ApiError::EmptyBatch { field });
            }
            if count > config.max_batch_size {
                return Err(ApiError::BatchTooLarge {
                    count,
                    limit: config.max_batch_size,
                });
            }
            if let Some((i, kind)) = first_bad {
                return Err(ApiError::InvalidInput(format!(
                    "`{field}[{i}]` must be a string, found {kind}"
                )));
            }
            (texts, false)
        }
        Some(Texts::Other(kind)) => {
            return Err(ApiError::InvalidInput(format!(
                "`{field}` must be a string or a list of strings, found {kind}"
            )))
        }
    };
    for (index, t) in texts.iter().enumerate() {
        // Bytes bound characters from above: count only when it can matter.
        if t.len() > config.max_input_chars {
            let chars = t.chars().count();
            if chars > config.max_input_chars {
                return Err(ApiError::TextTooLong {
                    index,
                    chars,
                    limit: config.max_input_chars,
                });
            }
        }
    }
    Ok(Parsed {
        texts,
        single,
        encoding_format,
    })
}

/// The `model` of an `/admin/reload` body: empty body, `{}` or `{"model": null}` is `None`.
pub(crate) fn reload_model(bytes: &[u8]) -> Result<Option<String>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text = utf8(bytes)?;
    let body = parse_seed(
        text,
        BodySeed {
            field: "model",
            max: 1,
        },
    )?;
    match body {
        Body::NotObject(kind) => Err(ApiError::InvalidInput(format!(
            "the body must be a JSON object like {{\"model\": \"DIR\"}} (or empty), found {kind}"
        ))),
        Body::Object { texts: None, .. }
        | Body::Object {
            texts: Some(Texts::Other("null")),
            ..
        } => Ok(None),
        Body::Object {
            texts: Some(Texts::One(s)),
            ..
        } => Ok(Some(s)),
        Body::Object {
            texts: Some(Texts::Many { .. }),
            ..
        } => Err(ApiError::InvalidInput(
            "`model` must be a bundle folder (a string), found a list".into(),
        )),
        Body::Object {
            texts: Some(Texts::Other(kind)),
            ..
        } => Err(ApiError::InvalidInput(format!(
            "`model` must be a bundle folder (a string), found {kind}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServerConfig {
        ServerConfig {
            max_batch_size: 3,
            max_input_chars: 10,
            ..ServerConfig::default()
        }
    }

    fn err(body: &str) -> ApiError {
        texts(body.as_bytes(), "inputs", &config()).unwrap_err()
    }

    #[test]
    fn strings_and_lists_are_read_and_other_fields_skipped() {
        let p = texts(
            br#"{"x": [1, {"a": []}], "inputs": "hi"}"#,
            "inputs",
            &config(),
        )
        .unwrap();
        assert_eq!((p.texts, p.single), (vec!["hi".to_string()], true));
        let p = texts(br#"{"inputs": ["a", "b\n"]}"#, "inputs", &config()).unwrap();
        assert_eq!((p.texts, p.single), (vec!["a".into(), "b\n".into()], false));
        let p = texts(
            br#"{"input": "a", "encoding_format": "float"}"#,
            "input",
            &config(),
        )
        .unwrap();
        assert_eq!(p.encoding_format, Some(Item::Text("float".into())));
    }

    #[test]
    fn errors_keep_their_types_and_messages() {
        let e = err(r#"{"inputs": 5}"#);
        assert_eq!(e.kind(), "invalid_input");
        assert!(e.to_string().contains("found a number"), "{e}");
        let e = err(r#"["a"]"#);
        assert!(e.to_string().contains("JSON object") && e.to_string().contains("a list"));
        let e = err(r#"{"inputs": ["a", 1]}"#);
        assert!(e
            .to_string()
            .contains("`inputs[1]` must be a string, found a number"));
        assert!(err(r#"{"text": "a"}"#).to_string().contains("missing"));
        assert_eq!(err(r#"{"inputs": []}"#).kind(), "empty_batch");
        assert_eq!(
            err(r#"{"inputs": ["a", 1, 2, 3]}"#).kind(),
            "batch_too_large"
        );
        assert_eq!(err(r#"{"inputs": "01234567890"}"#).kind(), "text_too_long");
        assert_eq!(err(r#"{"inputs": "a"} x"#).kind(), "invalid_json");
        assert_eq!(err(r#"{"inputs": "#).kind(), "invalid_json");
        let e = texts(b"{\"inputs\": \"caf\xe9\"}", "inputs", &config()).unwrap_err();
        assert_eq!(e.kind(), "invalid_utf8");
    }

    #[test]
    fn a_huge_list_of_tiny_values_keeps_only_what_the_limit_allows() {
        // 400,000 numbers: counted for the message, none of them stored.
        let body = format!("{{\"inputs\": [{}1]}}", "1,".repeat(400_000));
        let e = err(&body);
        assert_eq!(e.kind(), "batch_too_large");
        assert!(e.to_string().contains("400001 texts"), "{e}");
    }

    #[test]
    fn reload_bodies() {
        assert_eq!(reload_model(b"").unwrap(), None);
        assert_eq!(reload_model(b"{}").unwrap(), None);
        assert_eq!(reload_model(br#"{"model": null}"#).unwrap(), None);
        assert_eq!(
            reload_model(br#"{"model": "/m"}"#).unwrap(),
            Some("/m".into())
        );
        assert_eq!(
            reload_model(br#"{"model": 3}"#).unwrap_err().kind(),
            "invalid_input"
        );
        assert_eq!(reload_model(b"{{").unwrap_err().kind(), "invalid_json");
    }
}
