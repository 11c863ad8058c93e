//! Typed request bodies read straight into strings and token ids, without an intermediate
//! `serde_json::Value` tree. The inputs field takes a text, a list of texts, one text's token
//! ids (a list of integers), a list of such lists (OpenAI), or text-embeddings-inference's
//! `[["text"], ...]`. Only the inputs a request may hold (`max_batch_size`) are kept; everything
//! else is skipped as it is parsed, so a body of a million tiny JSON values costs no more memory
//! than the body itself. Option fields (`normalize`, `dimensions`, ...) keep their scalar value
//! and are checked by the routes through [`Options`]. The visitors accept any JSON, so every
//! deserialization error is a syntax error (`invalid_json`); shapes and types are checked
//! afterwards, with messages that name the field.

use crate::config::ServerConfig;
use crate::error::ApiError;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;

/// The option fields a body may carry; any other field is skipped.
const OPTION_FIELDS: [&str; 8] = [
    "encoding_format",
    "dimensions",
    "normalize",
    "truncate",
    "truncation_direction",
    "raw_scores",
    "prompt_name",
    "model",
];

/// The fields of `parameters` that are read: text-classification's, then token-classification's.
const PARAMETER_FIELDS: [&str; 5] = [
    "top_k",
    "function_to_apply",
    "aggregation_strategy",
    "ignore_labels",
    "stride",
];

/// Most labels `parameters.ignore_labels` may hold (a model has a few entity types).
const MAX_IGNORE_LABELS: usize = 100;

/// Skips a list.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Skips an object.
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// A JSON value whose scalars are kept and whose lists and objects only name their kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Str(String),
    Bool(bool),
    UInt(u64),
    /// A negative integer.
    Int(i64),
    Float(f64),
    Null,
    /// A list of strings (kept only for `parameters.ignore_labels`).
    Strings(Vec<String>),
    /// A list or an object.
    Other(&'static str),
}

impl Scalar {
    /// The value's kind, as messages name it.
    fn kind(&self) -> String {
        match self {
            Scalar::Str(s) => format!("the string {}", serde_json::Value::from(s.as_str())),
            Scalar::Bool(b) => format!("{b}"),
            Scalar::UInt(n) => format!("{n}"),
            Scalar::Int(n) => format!("{n}"),
            Scalar::Float(x) => format!("{x}"),
            Scalar::Null => "null".into(),
            Scalar::Strings(_) => "a list".into(),
            Scalar::Other(k) => (*k).into(),
        }
    }
}

impl<'de> de::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor { strings: false })
    }
}

/// Reads a [`Scalar`]; with `strings`, a list of at most [`MAX_IGNORE_LABELS`] strings is kept
/// as [`Scalar::Strings`] (any other list only names its kind).
struct ScalarVisitor {
    strings: bool,
}

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(u64::try_from(v).map_or(Scalar::Int(v), Scalar::UInt))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::UInt(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        if !self.strings {
            return skip_seq(seq).map(|()| Scalar::Other("a list"));
        }
        let (mut kept, mut bad) = (Vec::new(), None);
        // Items are read as scalars: a nested list or object is skipped, never kept.
        while let Some(item) = seq.next_element::<Scalar>()? {
            match item {
                Scalar::Str(s) if kept.len() < MAX_IGNORE_LABELS => kept.push(s),
                Scalar::Str(_) => {
                    bad = bad.or(Some("a longer list"));
                }
                _ => bad = bad.or(Some("a list holding a non-string")),
            }
        }
        Ok(bad.map_or(Scalar::Strings(kept), Scalar::Other))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar, A::Error> {
        skip_map(map).map(|()| Scalar::Other("an object"))
    }
}

/// `parameters.ignore_labels`, read with [`ScalarVisitor`] keeping strings.
struct StringsSeed;

impl<'de> DeserializeSeed<'de> for StringsSeed {
    type Value = Scalar;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor { strings: true })
    }
}

/// A token id: an integer from 0 to `u32::MAX`, or (as `Err`) what the value was instead.
fn token_id(v: Scalar) -> Result<u32, String> {
    match v {
        Scalar::UInt(n) => u32::try_from(n).map_err(|_| format!("{n}, over {}", u32::MAX)),
        Scalar::Str(_) => Err("a string".into()),
        other => Err(other.kind()),
    }
}

/// One item of an inputs list.
#[derive(Debug)]
enum Element {
    Text(String),
    Id(u32),
    /// A list of token ids (one input).
    Ids(Vec<u32>),
    /// A list of strings (text-embeddings-inference's `["text"]`); at most 3 are kept, `count`
    /// says how many there were.
    Texts {
        texts: Vec<String>,
        count: usize,
    },
    /// Anything else: its kind.
    Bad(String),
}

impl Element {
    /// The item's kind, as messages name it.
    fn kind(&self) -> String {
        match self {
            Element::Text(_) => "a string".into(),
            Element::Id(_) => "a number".into(),
            Element::Ids(_) => "a list of token ids".into(),
            Element::Texts { .. } => "a list of strings".into(),
            Element::Bad(k) => k.clone(),
        }
    }
}

impl<'de> de::Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Element;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Element, E> {
                Ok(Element::Text(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Element, E> {
                Ok(Element::Text(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Element, E> {
                Ok(Element::Bad(Scalar::Bool(v).kind()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Element, E> {
                self.visit_scalar(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Element, E> {
                self.visit_scalar(Scalar::UInt(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Element, E> {
                self.visit_scalar(Scalar::Float(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Element, E> {
                Ok(Element::Bad("null".into()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Element, E> {
                Ok(Element::Bad("null".into()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Element, A::Error> {
                skip_map(map).map(|()| Element::Bad("an object".into()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Element, A::Error> {
                inner_list(seq)
            }
        }
        impl V {
            fn visit_scalar<E: de::Error>(self, v: Scalar) -> Result<Element, E> {
                Ok(token_id(v).map_or_else(Element::Bad, Element::Id))
            }
        }
        d.deserialize_any(V)
    }
}

/// A list inside the inputs list: token ids, or text-embeddings-inference's strings.
fn inner_list<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Element, A::Error> {
    let (mut ids, mut texts, mut count) = (Vec::new(), Vec::new(), 0);
    while let Some(item) = seq.next_element::<Scalar>()? {
        match item {
            Scalar::Str(s) if ids.is_empty() => {
                if texts.len() < 3 {
                    texts.push(s);
                }
            }
            Scalar::Str(_) => return mixed(seq),
            _ if !texts.is_empty() => return mixed(seq),
            other => match token_id(other) {
                Ok(id) => ids.push(id),
                Err(kind) => {
                    skip_seq(seq)?;
                    return Ok(Element::Bad(format!("a list holding {kind}")));
                }
            },
        }
        count += 1;
    }
    Ok(if count == 0 {
        Element::Bad("an empty list".into())
    } else if texts.is_empty() {
        Element::Ids(ids)
    } else {
        Element::Texts { texts, count }
    })
}

/// Skips the rest of a list of strings and numbers.
fn mixed<'de, A: SeqAccess<'de>>(seq: A) -> Result<Element, A::Error> {
    skip_seq(seq)?;
    Ok(Element::Bad("a list of strings and numbers".into()))
}

/// The value of the inputs field, as sent.
#[derive(Debug)]
enum RawInputs {
    Text(String),
    /// A list of integers: one input's token ids, up to the first item that is not one.
    IdList {
        ids: Vec<u32>,
        first_bad: Option<(usize, String)>,
    },
    /// Any other list: its first `max` items, and how many there were.
    List {
        items: Vec<Element>,
        count: usize,
    },
    Other(&'static str),
}

/// Reads the inputs field, keeping at most `max` items of a list of inputs.
struct InputsSeed {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for InputsSeed {
    type Value = RawInputs;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawInputs, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed {
    type Value = RawInputs;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a list")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawInputs, E> {
        Ok(RawInputs::Text(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawInputs, E> {
        Ok(RawInputs::Text(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawInputs, E> {
        Ok(RawInputs::Other("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawInputs, E> {
        Ok(RawInputs::Other("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawInputs, E> {
        Ok(RawInputs::Other("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawInputs, E> {
        Ok(RawInputs::Other("a number"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawInputs, E> {
        Ok(RawInputs::Other("null"))
    }
    fn visit_none<E: de::Error>(self) -> Result<RawInputs, E> {
        Ok(RawInputs::Other("null"))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawInputs, A::Error> {
        skip_map(map).map(|()| RawInputs::Other("an object"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawInputs, A::Error> {
        match seq.next_element::<Element>()? {
            None => Ok(RawInputs::List {
                items: Vec::new(),
                count: 0,
            }),
            Some(Element::Id(first)) => id_list(seq, first),
            Some(first) => {
                let mut items = vec![first];
                let mut count = 1;
                loop {
                    // Past the limit, only count: the count is all the message needs.
                    let more = if count < self.max {
                        seq.next_element::<Element>()?
                            .map(|e| items.push(e))
                            .is_some()
                    } else {
                        seq.next_element::<IgnoredAny>()?.is_some()
                    };
                    if !more {
                        break;
                    }
                    count += 1;
                }
                Ok(RawInputs::List { items, count })
            }
        }
    }
}

/// The rest of a list whose first item is a token id: one input's ids, up to the first item
/// that is not one (the rest is skipped).
fn id_list<'de, A: SeqAccess<'de>>(mut seq: A, first: u32) -> Result<RawInputs, A::Error> {
    let mut ids = vec![first];
    while let Some(item) = seq.next_element::<Scalar>()? {
        match token_id(item) {
            Ok(id) => ids.push(id),
            Err(kind) => {
                let index = ids.len();
                skip_seq(seq)?;
                return Ok(RawInputs::IdList {
                    ids,
                    first_bad: Some((index, kind)),
                });
            }
        }
    }
    Ok(RawInputs::IdList {
        ids,
        first_bad: None,
    })
}

/// text-classification's `parameters`, as sent.
#[derive(Debug, Default)]
enum RawParameters {
    #[default]
    Absent,
    Object(BTreeMap<&'static str, Scalar>),
    Other(String),
}

struct ParametersSeed;

impl<'de> DeserializeSeed<'de> for ParametersSeed {
    type Value = RawParameters;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawParameters, D::Error> {
        match Scalar::deserialize_object(d)? {
            Ok(fields) => Ok(RawParameters::Object(fields)),
            Err(Scalar::Null) => Ok(RawParameters::Absent),
            Err(other) => Ok(RawParameters::Other(other.kind())),
        }
    }
}

impl Scalar {
    /// An object's fields named in [`PARAMETER_FIELDS`], or (as `Err`) the value if it is not
    /// an object.
    fn deserialize_object<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Result<BTreeMap<&'static str, Scalar>, Scalar>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Result<BTreeMap<&'static str, Scalar>, Scalar>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = BTreeMap::new();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match PARAMETER_FIELDS.iter().find(|f| **f == key) {
                        Some(&"ignore_labels") => {
                            fields.insert("ignore_labels", map.next_value_seed(StringsSeed)?);
                        }
                        Some(name) => {
                            fields.insert(*name, map.next_value::<Scalar>()?);
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Ok(fields))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Err(Scalar::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Err(Scalar::Int(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Err(Scalar::UInt(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Err(Scalar::Float(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Err(Scalar::Str(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Err(Scalar::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Err(Scalar::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| Err(Scalar::Other("a list")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A request body: the inputs field and the option fields, or the kind of a non-object body.
#[derive(Debug)]
enum Body {
    Object {
        inputs: Option<RawInputs>,
        options: BTreeMap<&'static str, Scalar>,
        parameters: RawParameters,
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
        skip_seq(seq).map(|()| Body::NotObject("a list"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let (mut inputs, mut options, mut parameters) =
            (None, BTreeMap::new(), RawParameters::Absent);
        // A repeated key: the last one counts, as with a JSON object read whole.
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.field {
                inputs = Some(map.next_value_seed(InputsSeed { max: self.max })?);
            } else if key == "parameters" {
                parameters = map.next_value_seed(ParametersSeed)?;
            } else if let Some(name) = OPTION_FIELDS.iter().find(|f| **f == key) {
                options.insert(*name, map.next_value::<Scalar>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Body::Object {
            inputs,
            options,
            parameters,
        })
    }
}

/// The inputs of a request: texts, or token ids.
#[derive(Debug, PartialEq)]
pub(crate) enum Inputs {
    Texts(Vec<String>),
    Ids(Vec<Vec<u32>>),
}

/// A request body's inputs and option fields.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub inputs: Inputs,
    /// Whether one input was sent bare (a string, or one list of token ids), not in a list.
    pub single: bool,
    pub options: Options,
}

/// The option fields of a request, checked as a route reads them: each accessor fails with a
/// message that names the field when the value has the wrong type.
#[derive(Debug, Default)]
pub(crate) struct Options {
    fields: BTreeMap<&'static str, Scalar>,
    parameters: RawParameters,
}

impl Options {
    fn get(&self, name: &'static str) -> Option<&Scalar> {
        self.fields.get(name).filter(|v| **v != Scalar::Null)
    }

    /// The boolean `name`; `None` when absent or null.
    pub fn bool(&self, name: &'static str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Scalar::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(ApiError::invalid(
                name,
                format!("`{name}` must be true or false, found {}", other.kind()),
            )),
        }
    }

    /// The positive integer `name`; `None` when absent or null.
    pub fn positive(&self, name: &'static str) -> Result<Option<u64>, ApiError> {
        positive(name, name, self.get(name))
    }

    /// The string `name`; `None` when absent or null.
    pub fn str(&self, name: &'static str) -> Result<Option<&str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Scalar::Str(s)) => Ok(Some(s)),
            Some(other) => Err(ApiError::invalid(
                name,
                format!("`{name}` must be a string, found {}", other.kind()),
            )),
        }
    }

    /// The fields of `parameters` (empty when absent or null).
    fn parameters(&self) -> Result<Option<&BTreeMap<&'static str, Scalar>>, ApiError> {
        match &self.parameters {
            RawParameters::Absent => Ok(None),
            RawParameters::Object(fields) => Ok(Some(fields)),
            RawParameters::Other(kind) => Err(ApiError::invalid(
                "parameters",
                format!("`parameters` must be an object, found {kind}"),
            )),
        }
    }

    /// `parameters.top_k`: a positive integer; `None` when absent or null.
    pub fn top_k(&self) -> Result<Option<u64>, ApiError> {
        let v = self.parameters()?.and_then(|p| p.get("top_k"));
        positive(
            "parameters",
            "parameters.top_k",
            v.filter(|v| **v != Scalar::Null),
        )
    }

    /// `parameters.function_to_apply`: a string; `None` when absent or null.
    pub fn function_to_apply(&self) -> Result<Option<&str>, ApiError> {
        self.parameter_str("function_to_apply")
    }

    /// `parameters.aggregation_strategy`: a string; `None` when absent or null.
    pub fn aggregation_strategy(&self) -> Result<Option<&str>, ApiError> {
        self.parameter_str("aggregation_strategy")
    }

    /// The string `parameters.<name>`; `None` when absent or null.
    fn parameter_str(&self, name: &'static str) -> Result<Option<&str>, ApiError> {
        match self.parameters()?.and_then(|p| p.get(name)) {
            None | Some(Scalar::Null) => Ok(None),
            Some(Scalar::Str(s)) => Ok(Some(s)),
            Some(other) => Err(ApiError::invalid(
                "parameters",
                format!(
                    "`parameters.{name}` must be a string, found {}",
                    other.kind()
                ),
            )),
        }
    }

    /// `parameters.ignore_labels`: a list of at most [`MAX_IGNORE_LABELS`] strings; empty
    /// when absent or null.
    pub fn ignore_labels(&self) -> Result<Vec<String>, ApiError> {
        match self.parameters()?.and_then(|p| p.get("ignore_labels")) {
            None | Some(Scalar::Null) => Ok(Vec::new()),
            Some(Scalar::Strings(labels)) => Ok(labels.clone()),
            Some(other) => Err(ApiError::invalid(
                "parameters",
                format!(
                    "`parameters.ignore_labels` must be a list of at most {MAX_IGNORE_LABELS} \
                     strings, found {}",
                    other.kind()
                ),
            )),
        }
    }

    /// `parameters.stride`: an integer ≥ 0; `None` when absent or null.
    pub fn stride(&self) -> Result<Option<u64>, ApiError> {
        match self.parameters()?.and_then(|p| p.get("stride")) {
            None | Some(Scalar::Null) => Ok(None),
            Some(Scalar::UInt(n)) => Ok(Some(*n)),
            Some(other) => Err(ApiError::invalid(
                "parameters",
                format!(
                    "`parameters.stride` must be an integer ≥ 0, found {}",
                    other.kind()
                ),
            )),
        }
    }
}

/// `v` as a positive integer; the message names `shown`, the error's field is `param`.
fn positive(param: &'static str, shown: &str, v: Option<&Scalar>) -> Result<Option<u64>, ApiError> {
    match v {
        None => Ok(None),
        Some(Scalar::UInt(n)) if *n > 0 => Ok(Some(*n)),
        Some(other) => Err(ApiError::invalid(
            param,
            format!(
                "`{shown}` must be a positive integer, found {}",
                other.kind()
            ),
        )),
    }
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
        .map_err(|e| ApiError::InvalidJson(explain_json_error(e)))?;
    Ok(value)
}

/// serde_json's message, with the likely cause where its own words hide it: a `\uD800`–
/// `\uDFFF` escape without its pair (a lone UTF-16 surrogate, which no text can hold) reads
/// "unexpected end of hex escape" or "lone leading surrogate".
fn explain_json_error(e: serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.contains("hex escape") {
        format!(
            "{msg} (an unpaired UTF-16 surrogate escape such as \\ud800? texts must be valid \
             Unicode: send the pair, or the character itself)"
        )
    } else {
        msg
    }
}

/// The inputs of `field` (see the module documentation) and the option fields, checked against
/// the limits.
pub(crate) fn parse(
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
    let (inputs, fields, parameters) = match body {
        Body::NotObject(kind) => {
            return Err(ApiError::invalid(
                field,
                format!(
                    "the body must be a JSON object like {{\"{field}\": \"text\"}}, found {kind}"
                ),
            ))
        }
        Body::Object { inputs: None, .. } => {
            return Err(ApiError::invalid(
                field,
                format!(
                    "field `{field}` is missing: send {{\"{field}\": \"text\"}} or \
                     {{\"{field}\": [\"text\", ...]}}"
                ),
            ))
        }
        Body::Object {
            inputs: Some(inputs),
            options,
            parameters,
        } => (inputs, options, parameters),
    };
    let (inputs, single) = inputs_of(inputs, field, config)?;
    if let Inputs::Texts(texts) = &inputs {
        check_chars(texts, field, config.max_input_chars)?;
    }
    Ok(Parsed {
        inputs,
        single,
        options: Options { fields, parameters },
    })
}

/// Refuses a text over `max_chars` characters.
pub(crate) fn check_chars(
    texts: &[String],
    field: &'static str,
    max_chars: usize,
) -> Result<(), ApiError> {
    for (index, t) in texts.iter().enumerate() {
        // Bytes bound characters from above: count only when it can matter.
        if t.len() > max_chars {
            let chars = t.chars().count();
            if chars > max_chars {
                return Err(ApiError::TextTooLong {
                    field,
                    index,
                    chars,
                    limit: max_chars,
                });
            }
        }
    }
    Ok(())
}

/// The inputs of a parsed field, and whether one input was sent bare.
fn inputs_of(
    raw: RawInputs,
    field: &'static str,
    config: &ServerConfig,
) -> Result<(Inputs, bool), ApiError> {
    match raw {
        RawInputs::Text(s) => Ok((Inputs::Texts(vec![s]), true)),
        RawInputs::IdList {
            first_bad: Some((i, kind)),
            ..
        } => Err(ApiError::invalid(
            field,
            format!(
                "`{field}[{i}]` must be a token id (an integer from 0) like `{field}[0]`, \
                 found {kind}"
            ),
        )),
        RawInputs::IdList { ids, .. } => Ok((Inputs::Ids(vec![ids]), true)),
        RawInputs::List { count: 0, .. } => Err(ApiError::EmptyBatch { field }),
        RawInputs::List { count, .. } if count > config.max_batch_size => {
            Err(ApiError::BatchTooLarge {
                field,
                count,
                limit: config.max_batch_size,
            })
        }
        RawInputs::List { items, .. } => list_inputs(items, field).map(|i| (i, false)),
        RawInputs::Other(kind) => Err(ApiError::invalid(
            field,
            format!(
                "`{field}` must be a string, a list of strings, a list of token ids or a list \
                 of such lists, found {kind}"
            ),
        )),
    }
}

/// A list of inputs whose items must all be of the first one's kind.
fn list_inputs(items: Vec<Element>, field: &'static str) -> Result<Inputs, ApiError> {
    let mismatch = |i: usize, expected: &str, found: &Element| {
        ApiError::invalid(
            field,
            format!(
                "`{field}[{i}]` must be {expected} like `{field}[0]`, found {}",
                found.kind()
            ),
        )
    };
    match &items[0] {
        Element::Text(_) | Element::Texts { .. } => {
            let mut texts = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Element::Text(s) => texts.push(s),
                    Element::Texts {
                        texts: mut one,
                        count: 1,
                    } => texts.push(one.remove(0)),
                    Element::Texts { count, .. } => {
                        return Err(ApiError::invalid(
                            field,
                            format!(
                                "`{field}[{i}]` holds {count} texts: lmfuse classifies and \
                                 embeds single texts, not pairs; send one text per item"
                            ),
                        ))
                    }
                    other => return Err(mismatch(i, "a string", &other)),
                }
            }
            Ok(Inputs::Texts(texts))
        }
        Element::Ids(_) => {
            let mut lists = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Element::Ids(ids) => lists.push(ids),
                    other => return Err(mismatch(i, "a list of token ids", &other)),
                }
            }
            Ok(Inputs::Ids(lists))
        }
        first => Err(ApiError::invalid(
            field,
            format!(
                "`{field}[0]` must be a string or a list of token ids, found {}",
                first.kind()
            ),
        )),
    }
}

/// The option fields (see [`OPTION_FIELDS`]) of a body already read as a JSON object, for the
/// routes whose small bodies are read whole (`/search`, `/answer`, `/rerank`, `/similarity`).
pub(crate) fn options_of(object: &serde_json::Map<String, serde_json::Value>) -> Options {
    use serde_json::Value;
    let scalar = |v: &Value| match v {
        Value::String(s) => Scalar::Str(s.clone()),
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Scalar::UInt(u),
            (None, Some(i)) => Scalar::Int(i),
            _ => Scalar::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::Null => Scalar::Null,
        Value::Array(_) => Scalar::Other("a list"),
        Value::Object(_) => Scalar::Other("an object"),
    };
    let fields = OPTION_FIELDS
        .iter()
        .filter_map(|&name| Some((name, scalar(object.get(name)?))))
        .collect();
    Options {
        fields,
        parameters: RawParameters::default(),
    }
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
    let found = match body {
        Body::NotObject(kind) => {
            return Err(ApiError::invalid(
                "model",
                format!(
                    "the body must be a JSON object like {{\"model\": \"DIR\"}} (or empty), \
                     found {kind}"
                ),
            ))
        }
        Body::Object {
            inputs: None | Some(RawInputs::Other("null")),
            ..
        } => return Ok(None),
        Body::Object {
            inputs: Some(RawInputs::Text(s)),
            ..
        } => return Ok(Some(s)),
        Body::Object {
            inputs: Some(RawInputs::Other(kind)),
            ..
        } => kind,
        Body::Object {
            inputs: Some(RawInputs::List { .. } | RawInputs::IdList { .. }),
            ..
        } => "a list",
    };
    Err(ApiError::invalid(
        "model",
        format!("`model` must be a bundle folder (a string), found {found}"),
    ))
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

    fn ok(body: &str) -> Parsed {
        parse(body.as_bytes(), "inputs", &config()).unwrap()
    }

    fn err(body: &str) -> ApiError {
        parse(body.as_bytes(), "inputs", &config()).unwrap_err()
    }

    #[test]
    fn strings_and_lists_are_read_and_other_fields_skipped() {
        let p = ok(r#"{"x": [1, {"a": []}], "inputs": "hi"}"#);
        assert_eq!(
            (p.inputs, p.single),
            (Inputs::Texts(vec!["hi".to_string()]), true)
        );
        let p = ok(r#"{"inputs": ["a", "b\n"]}"#);
        assert_eq!(
            (p.inputs, p.single),
            (Inputs::Texts(vec!["a".into(), "b\n".into()]), false)
        );
        let p = parse(
            br#"{"input": "a", "encoding_format": "float"}"#,
            "input",
            &config(),
        )
        .unwrap();
        assert_eq!(p.options.str("encoding_format").unwrap(), Some("float"));
    }

    #[test]
    fn token_ids_are_one_input_or_a_list_of_inputs() {
        let p = ok(r#"{"inputs": [7, 0, 4294967295]}"#);
        assert_eq!(
            (p.inputs, p.single),
            (Inputs::Ids(vec![vec![7, 0, u32::MAX]]), true)
        );
        let p = ok(r#"{"inputs": [[1, 2], [3]]}"#);
        assert_eq!(
            (p.inputs, p.single),
            (Inputs::Ids(vec![vec![1, 2], vec![3]]), false)
        );
        // A list of ids is one input: the batch limit (3) counts inputs, not ids.
        let many = format!("{{\"inputs\": [{}1]}}", "5,".repeat(1000));
        assert_eq!(
            ok(&many).inputs,
            Inputs::Ids(vec![[5; 1000].into_iter().chain([1]).collect()])
        );
        // text-embeddings-inference's batch form.
        let p = ok(r#"{"inputs": [["a"], ["b"]]}"#);
        assert_eq!(p.inputs, Inputs::Texts(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn bad_token_ids_and_mixed_lists_name_the_item() {
        for (body, needle) in [
            (r#"{"inputs": [1, "a"]}"#, "`inputs[1]` must be a token id"),
            (r#"{"inputs": [1, -2]}"#, "found -2"),
            (r#"{"inputs": [1, 2.5]}"#, "found 2.5"),
            (r#"{"inputs": [1, 4294967296]}"#, "over 4294967295"),
            (
                r#"{"inputs": [[1], "a"]}"#,
                "`inputs[1]` must be a list of token ids like `inputs[0]`, found a string",
            ),
            (
                r#"{"inputs": ["a", [1]]}"#,
                "`inputs[1]` must be a string like `inputs[0]`, found a list of token ids",
            ),
            (r#"{"inputs": [[1], []]}"#, "found an empty list"),
            (r#"{"inputs": [[1, "a"]]}"#, "a list of strings and numbers"),
            (r#"{"inputs": [[true]]}"#, "a list holding true"),
            (r#"{"inputs": [["a", "b"]]}"#, "holds 2 texts"),
            (
                r#"{"inputs": [null]}"#,
                "`inputs[0]` must be a string or a list of token ids, found null",
            ),
        ] {
            let e = err(body);
            assert_eq!(e.kind(), "invalid_input", "{body}");
            assert_eq!(e.param(), Some("inputs"), "{body}");
            assert!(e.to_string().contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn errors_keep_their_types_and_messages() {
        let e = err(r#"{"inputs": 5}"#);
        assert_eq!(e.kind(), "invalid_input");
        assert!(e.to_string().contains("found a number"), "{e}");
        let e = err(r#"["a"]"#);
        assert!(e.to_string().contains("JSON object") && e.to_string().contains("a list"));
        let e = err(r#"{"inputs": ["a", 1]}"#);
        assert!(
            e.to_string()
                .contains("`inputs[1]` must be a string like `inputs[0]`, found a number"),
            "{e}"
        );
        assert!(err(r#"{"text": "a"}"#).to_string().contains("missing"));
        assert_eq!(err(r#"{"inputs": []}"#).kind(), "empty_batch");
        assert_eq!(
            err(r#"{"inputs": ["a", 1, 2, 3]}"#).kind(),
            "batch_too_large"
        );
        assert_eq!(err(r#"{"inputs": "01234567890"}"#).kind(), "text_too_long");
        assert_eq!(err(r#"{"inputs": "a"} x"#).kind(), "invalid_json");
        assert_eq!(err(r#"{"inputs": "#).kind(), "invalid_json");
        let e = parse(b"{\"inputs\": \"caf\xe9\"}", "inputs", &config()).unwrap_err();
        assert_eq!(e.kind(), "invalid_utf8");
    }

    #[test]
    fn options_are_checked_as_read_and_name_their_field() {
        let p = ok(
            r#"{"inputs": "a", "normalize": false, "dimensions": 384, "truncate": null,
                       "parameters": {"top_k": 2, "function_to_apply": "softmax", "x": [1]}}"#,
        );
        let o = &p.options;
        assert_eq!(o.bool("normalize").unwrap(), Some(false));
        assert_eq!(o.bool("truncate").unwrap(), None);
        assert_eq!(o.positive("dimensions").unwrap(), Some(384));
        assert_eq!(o.top_k().unwrap(), Some(2));
        assert_eq!(o.function_to_apply().unwrap(), Some("softmax"));
        let p = ok(r#"{"inputs": "a", "normalize": "yes", "dimensions": 0,
                       "encoding_format": 3, "parameters": {"top_k": -1}}"#);
        let o = &p.options;
        for (e, field, needle) in [
            (
                o.bool("normalize").unwrap_err(),
                "normalize",
                "must be true or false, found the string \"yes\"",
            ),
            (
                o.positive("dimensions").unwrap_err(),
                "dimensions",
                "must be a positive integer, found 0",
            ),
            (
                o.str("encoding_format").unwrap_err(),
                "encoding_format",
                "must be a string, found 3",
            ),
            (
                o.top_k().unwrap_err(),
                "parameters",
                "`parameters.top_k` must be a positive integer, found -1",
            ),
        ] {
            assert_eq!(e.param(), Some(field), "{e}");
            assert!(e.to_string().contains(needle), "{e}");
        }
        let p = ok(r#"{"inputs": "a", "parameters": [1]}"#);
        assert!(p
            .options
            .top_k()
            .unwrap_err()
            .to_string()
            .contains("must be an object, found a list"));
        assert_eq!(
            ok(r#"{"inputs": "a", "parameters": null}"#)
                .options
                .top_k()
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_huge_list_of_tiny_values_keeps_only_what_the_limit_allows() {
        // 400,000 strings: counted for the message, only the first three stored.
        let body = format!("{{\"inputs\": [{}\"a\"]}}", "\"a\",".repeat(400_000));
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
        assert!(reload_model(br#"{"model": ["a"]}"#)
            .unwrap_err()
            .to_string()
            .contains("found a list"));
        assert_eq!(reload_model(b"{{").unwrap_err().kind(), "invalid_json");
    }
}
