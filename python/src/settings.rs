//! Settings every job takes from Python: the encoder, the data's columns, the cache; and
//! parsing named choices with errors that name the parameter.

use lmfuse_pipeline::data::DataSpec;
use lmfuse_pipeline::encoders::{CacheSpec, EncoderChoice};
use lmfuse_pipeline::{PipelineError, Result};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::str::FromStr;

/// `value` parsed as a `T`; an error names the parameter.
pub fn parse<T: FromStr>(param: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| PipelineError::Invalid(format!("{param}={value:?}: {e}")))
}

/// `value` parsed as a `T` when given; an error names the parameter.
pub fn parse_optional<T: FromStr>(param: &str, value: Option<&str>) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    value.map(|v| parse(param, v)).transpose()
}

/// A serde enum (snake_case) from its name; an error names the parameter and the choices.
pub fn choice<T: serde::de::DeserializeOwned>(
    param: &str,
    value: &str,
    choices: &str,
) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_string())).map_err(|_| {
        PipelineError::Invalid(format!("{param}={value:?}: expected one of {choices}"))
    })
}

/// The encoder, as the CLI's `--model`, `--pooling`, `--max-length`, `--normalize`,
/// `--batch-tokens`, `--prefix`, `--long-text` and `--precision` choose it (a dict with every
/// key).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct EncoderSettings {
    model: Option<String>,
    pooling: Option<String>,
    max_length: Option<usize>,
    normalize: Option<bool>,
    batch_tokens: Option<usize>,
    prefix: Option<String>,
    long_text: String,
    precision: Option<String>,
}

impl EncoderSettings {
    /// The pipeline's encoder choice.
    pub fn choice(&self) -> Result<EncoderChoice> {
        Ok(EncoderChoice {
            model: self.model.clone(),
            pooling: parse_optional("pooling", self.pooling.as_deref())?,
            max_length: self.max_length,
            normalize: self.normalize,
            batch_tokens: self.batch_tokens,
            prefix: self.prefix.clone(),
            long_text: parse("long_text", &self.long_text)?,
            precision: parse_optional("precision", self.precision.as_deref())?,
        })
    }
}

/// Data files' format and columns, as the CLI's `--format`, `--text-col` and `--label-col`
/// (a dict with every key).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct DataSettings {
    format: Option<String>,
    text_col: String,
    label_col: String,
}

impl DataSettings {
    /// The pipeline's data spec, with side columns `feature_cols`.
    pub fn spec(&self, feature_cols: Vec<String>) -> Result<DataSpec> {
        Ok(DataSpec {
            format: match &self.format {
                Some(f) => Some(parse("format", f)?),
                None => None,
            },
            text_col: self.text_col.clone(),
            label_col: self.label_col.clone(),
            feature_cols,
        })
    }
}

/// The cache as `cache=` says: off, or on in `dir` (`None`: the default folder).
pub fn cache_spec(use_cache: bool, dir: Option<PathBuf>) -> CacheSpec {
    CacheSpec {
        disabled: !use_cache,
        dir,
    }
}
