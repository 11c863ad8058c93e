//! Converting a model folder to int8: the linear layers' weights quantised once, per output
//! channel, and written with their scales (`lmfuse models convert`), so that loading the
//! converted folder needs no f32 weights and its file is about a quarter of the f32 one's.

use crate::bert::BertModel;
use crate::e5s1::write_folder_atomically;
use crate::error::EncoderError;
use crate::source::ModelFiles;
use lmfuse_core::Precision;
use std::path::{Path, PathBuf};

/// The files of a model folder besides its weights (tokenizer, configuration,
/// sentence-transformers settings), copied when present into a folder made from it: an int8
/// conversion, a fine-tuned encoder.
pub const MODEL_FOLDER_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "1_Pooling/config.json",
];

/// The record of where a converted model came from (`lmfuse models import-e5s1`), which an
/// int8 conversion keeps.
const SOURCE_RECORD: &str = "lmfuse_source.json";

/// What [`convert_to_int8`] wrote.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The new model folder.
    pub dir: PathBuf,
    /// Bytes of the f32 `model.safetensors` it was made from.
    pub source_weights_bytes: u64,
    /// Bytes of the int8 `model.safetensors` written.
    pub weights_bytes: u64,
}

/// The files of the model folder of `files` with its linear layers in int8, as (name, bytes):
/// its configuration and tokenizer files as they are, and last the int8 `model.safetensors`.
pub fn int8_folder_contents(files: &ModelFiles) -> Result<Vec<(String, Vec<u8>)>, EncoderError> {
    let model = BertModel::load_in(&files.config, &files.weights_path, Some(Precision::Int8))?;
    let weights = model.int8_checkpoint()?;
    let mut contents: Vec<(String, Vec<u8>)> = Vec::new();
    for name in MODEL_FOLDER_FILES.iter().chain(&[SOURCE_RECORD]) {
        let path = files.dir.join(name);
        if path.is_file() {
            let bytes = std::fs::read(&path).map_err(|e| EncoderError::io(&path, e))?;
            contents.push((name.to_string(), bytes));
        }
    }
    contents.push(("model.safetensors".into(), weights));
    Ok(contents)
}

/// Writes the model of `files` to the folder `out` with its linear layers in int8 (the
/// folder is replaced only once the new one is complete). The embeddings, LayerNorms and
/// biases stay f32.
pub fn convert_to_int8(files: &ModelFiles, out: &Path) -> Result<Converted, EncoderError> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(&files.dir, out) {
        return Err(EncoderError::Unsupported {
            path: out.to_path_buf(),
            message: "the converted model must go to a new folder, not over its source".into(),
        });
    }
    let contents = int8_folder_contents(files)?;
    let source_weights_bytes = std::fs::metadata(&files.weights_path)
        .map_err(|e| EncoderError::io(&files.weights_path, e))?
        .len();
    let weights_bytes = contents.last().map_or(0, |(_, w)| w.len() as u64);
    let refs: Vec<(&str, &[u8])> = contents
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    write_folder_atomically(out, &refs)?;
    Ok(Converted {
        dir: out.to_path_buf(),
        source_weights_bytes,
        weights_bytes,
    })
}
