//! Model configuration: Hugging Face `config.json` and sentence-transformers' module files.

use crate::error::EncoderError;
use lmfuse_core::Pooling;
use serde::Deserialize;
use std::path::Path;

/// Activation of the feed-forward layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Activation {
    /// Exact GELU, `x·Φ(x)` (BERT's `gelu`).
    #[serde(rename = "gelu")]
    Gelu,
    /// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    /// `max(0, x)`.
    #[serde(rename = "relu")]
    Relu,
}

fn default_eps() -> f64 {
    1e-12
}
fn default_type_vocab() -> usize {
    2
}
fn default_position_type() -> String {
    "absolute".into()
}
fn default_activation() -> Activation {
    Activation::Gelu
}

/// The part of a BERT-family `config.json` the encoder uses.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// `model_type` (`bert`, ...).
    #[serde(default)]
    pub model_type: Option<String>,
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Feed-forward activation.
    #[serde(default = "default_activation")]
    pub hidden_act: Activation,
    /// Number of learnt positions.
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Only `absolute` is supported.
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    /// Id of the padding token; RoBERTa-family position ids start after it.
    #[serde(default)]
    pub pad_token_id: Option<usize>,
}

/// The `model_type`s whose checkpoints this encoder runs: BERT's architecture, and after it
/// RoBERTa's (the same layers, with positions numbered from `pad_token_id + 1`).
const SUPPORTED_TYPES: [&str; 4] = ["bert", "roberta", "xlm-roberta", "camembert"];

/// The RoBERTa family within [`SUPPORTED_TYPES`].
const ROBERTA_TYPES: &[&str] = SUPPORTED_TYPES.split_at(1).1;

impl BertConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, EncoderError> {
        let config: BertConfig = read_json(path)?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), EncoderError> {
        let unsupported = |message: String| EncoderError::Unsupported {
            path: path.to_path_buf(),
            message,
        };
        if let Some(t) = &self.model_type {
            if !SUPPORTED_TYPES.contains(&t.as_str()) {
                return Err(unsupported(format!(
                    "model_type {t:?} (supported: {})",
                    SUPPORTED_TYPES.join(", ")
                )));
            }
        }
        if self.position_embedding_type != "absolute" {
            return Err(unsupported(format!(
                "position_embedding_type {:?} (supported: absolute)",
                self.position_embedding_type
            )));
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if v == 0 {
                return Err(unsupported(format!("{name} is 0")));
            }
        }
        if self.position_offset() >= self.max_position_embeddings {
            return Err(unsupported(format!(
                "pad_token_id {:?} leaves no positions of max_position_embeddings {}",
                self.pad_token_id, self.max_position_embeddings
            )));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(unsupported(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(unsupported(format!(
                "layer_norm_eps {} is not a positive number",
                self.layer_norm_eps
            )));
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Row of the position table used by a sequence's first token: 0 for BERT; for the
    /// RoBERTa family `pad_token_id + 1`, as `create_position_ids_from_input_ids` numbers them.
    pub fn position_offset(&self) -> usize {
        match self.model_type.as_deref() {
            Some(t) if ROBERTA_TYPES.contains(&t) => self.pad_token_id.unwrap_or(1) + 1,
            _ => 0,
        }
    }

    /// The most tokens one sequence may have: the positions after the offset.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings - self.position_offset()
    }
}

/// How sentence vectors are made from token vectors, read from sentence-transformers' files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentenceConfig {
    /// Pooling over tokens.
    pub pooling: Pooling,
    /// Whether a `Normalize` module follows pooling.
    pub normalize: bool,
    /// `max_seq_length` of `sentence_bert_config.json`, if present.
    pub max_seq_length: Option<usize>,
    /// The prompt named by `default_prompt_name` in `config_sentence_transformers.json`.
    pub default_prefix: Option<String>,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingFile {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

#[derive(Deserialize)]
struct PromptsFile {
    #[serde(default)]
    prompts: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    default_prompt_name: Option<String>,
}

#[derive(Deserialize)]
struct SentenceBertFile {
    #[serde(default)]
    max_seq_length: Option<usize>,
}

impl SentenceConfig {
    /// Reads `modules.json`, the pooling module's `config.json` and `sentence_bert_config.json`
    /// from `dir`. A folder without `modules.json` (a plain Hugging Face model) gets mean pooling,
    /// no normalisation and no length limit of its own.
    pub fn from_dir(dir: &Path) -> Result<Self, EncoderError> {
        let mut config = SentenceConfig {
            pooling: Pooling::Mean,
            normalize: false,
            max_seq_length: None,
            default_prefix: None,
        };
        let modules_path = dir.join("modules.json");
        if modules_path.is_file() {
            let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
            for m in &modules {
                if m.kind.ends_with(".Normalize") {
                    config.normalize = true;
                } else if m.kind.ends_with(".Pooling") {
                    let path = dir.join(&m.path).join("config.json");
                    let file: PoolingFile = read_json(&path)?;
                    config.pooling = pooling_from_file(&file, &path)?;
                } else if !m.kind.ends_with(".Transformer") {
                    return Err(EncoderError::Unsupported {
                        path: modules_path.clone(),
                        message: format!(
                            "module type {:?} (supported: Transformer, Pooling, Normalize)",
                            m.kind
                        ),
                    });
                }
            }
        }
        let prompts_path = dir.join("config_sentence_transformers.json");
        if prompts_path.is_file() {
            let file: PromptsFile = read_json(&prompts_path)?;
            if let Some(name) = file.default_prompt_name {
                let prompt = file
                    .prompts
                    .get(&name)
                    .ok_or_else(|| EncoderError::Unsupported {
                        path: prompts_path.clone(),
                        message: format!("default_prompt_name {name:?} is not among the prompts"),
                    })?;
                config.default_prefix = Some(prompt.clone());
            }
        }
        let sbert_path = dir.join("sentence_bert_config.json");
        if sbert_path.is_file() {
            let file: SentenceBertFile = read_json(&sbert_path)?;
            config.max_seq_length = file.max_seq_length;
        }
        Ok(config)
    }
}

fn pooling_from_file(file: &PoolingFile, path: &Path) -> Result<Pooling, EncoderError> {
    let modes = [
        (file.pooling_mode_mean_tokens, Pooling::Mean),
        (file.pooling_mode_cls_token, Pooling::Cls),
        (file.pooling_mode_max_tokens, Pooling::Max),
        (file.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
        (file.pooling_mode_lasttoken, Pooling::Last),
    ];
    let on: Vec<Pooling> = modes.iter().filter(|m| m.0).map(|m| m.1).collect();
    match on.as_slice() {
        [one] => Ok(*one),
        [] => Err(EncoderError::Unsupported {
            path: path.to_path_buf(),
            message: "no pooling mode is enabled".into(),
        }),
        many => Err(EncoderError::Unsupported {
            path: path.to_path_buf(),
            message: format!(
                "several pooling modes at once ({}); lmfuse supports exactly one",
                many.iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Reads a JSON file into `T`, with errors that name the file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EncoderError> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            EncoderError::MissingFile {
                path: path.to_path_buf(),
            }
        } else {
            EncoderError::io(path, e)
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|source| EncoderError::Json {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const MINI: &str = r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 32,
        "hidden_act": "gelu", "model_type": "bert"}"#;

    #[test]
    fn reads_sentence_transformers_modules() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "modules.json",
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
                {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
        );
        write(
            dir.path(),
            "1_Pooling/config.json",
            r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
        );
        write(
            dir.path(),
            "sentence_bert_config.json",
            r#"{"max_seq_length": 128}"#,
        );
        let c = SentenceConfig::from_dir(dir.path()).unwrap();
        assert_eq!(c.pooling, Pooling::Cls);
        assert!(c.normalize);
        assert_eq!(c.max_seq_length, Some(128));
    }

    #[test]
    fn plain_model_gets_mean_pooling() {
        let dir = tempfile::tempdir().unwrap();
        let c = SentenceConfig::from_dir(dir.path()).unwrap();
        assert_eq!(c.pooling, Pooling::Mean);
        assert!(!c.normalize);
        assert_eq!(c.max_seq_length, None);
    }

    #[test]
    fn two_pooling_modes_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "modules.json",
            r#"[{"path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
        );
        write(
            dir.path(),
            "1_Pooling/config.json",
            r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}"#,
        );
        let e = SentenceConfig::from_dir(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("several pooling modes"), "{e}");
    }

    #[test]
    fn config_validation_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "config.json", MINI);
        let c = BertConfig::from_file(&dir.path().join("config.json")).unwrap();
        assert_eq!(c.head_dim(), 4);
        write(
            dir.path(),
            "config.json",
            &MINI.replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 3"),
        );
        let e = BertConfig::from_file(&dir.path().join("config.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a multiple"), "{e}");
        write(dir.path(), "config.json", "{not json");
        let e = BertConfig::from_file(&dir.path().join("config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("invalid JSON") && e.contains("config.json"),
            "{e}"
        );
    }
}
