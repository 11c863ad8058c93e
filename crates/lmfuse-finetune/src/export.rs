//! A fine-tuned encoder as a model folder: the same files a pretrained one has, so the
//! inference encoder (and any tool that reads sentence-transformers folders) loads it as is.

use crate::network::Network;
use crate::FinetuneError;
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

/// The files of the fine-tuned encoder's model folder, as (relative path, bytes):
/// `model.safetensors` with the network's encoder weights (LoRA merged) under their Hugging
/// Face names, and the tokenizer and configuration files of `base_dir` (`config.json`'s
/// `vocab_size` set to the network's).
pub fn encoder_files(
    net: &Network,
    base_dir: &Path,
) -> Result<Vec<(String, Vec<u8>)>, FinetuneError> {
    let tensors = net.export_encoder();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|t| {
            let mut b = Vec::with_capacity(t.data.len() * 4);
            for v in &t.data {
                b.extend_from_slice(&v.to_le_bytes());
            }
            (t.name, t.shape, b)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, shape, b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| FinetuneError::Invalid(format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let weights =
        safetensors::serialize(views, None).map_err(|e| FinetuneError::Invalid(e.to_string()))?;
    let mut files = vec![("model.safetensors".to_string(), weights)];
    // The tokenizer and configuration files; weights are never copied, they are written anew.
    for name in lmfuse_encoder::MODEL_FOLDER_FILES {
        let path = base_dir.join(name);
        if path.is_file() {
            let data = std::fs::read(&path).map_err(|source| FinetuneError::Io {
                path: path.clone(),
                source,
            })?;
            let data = if *name == "config.json" {
                with_vocab_size(data, net.config().vocab_size, &path)?
            } else {
                data
            };
            files.push((name.to_string(), data));
        }
    }
    Ok(files)
}

/// `config.json` with its `vocab_size` set to `vocab` (tokens added while fine-tuning, such
/// as entity markers); the bytes unchanged when it already says so.
fn with_vocab_size(data: Vec<u8>, vocab: usize, path: &Path) -> Result<Vec<u8>, FinetuneError> {
    let invalid = |e: serde_json::Error| FinetuneError::Invalid(format!("{}: {e}", path.display()));
    let mut config: serde_json::Value = serde_json::from_slice(&data).map_err(invalid)?;
    if config.get("vocab_size").and_then(serde_json::Value::as_u64) == Some(vocab as u64) {
        return Ok(data);
    }
    let Some(object) = config.as_object_mut() else {
        return Err(FinetuneError::Invalid(format!(
            "{}: not a JSON object",
            path.display()
        )));
    };
    object.insert("vocab_size".into(), vocab.into());
    serde_json::to_vec_pretty(&config).map_err(invalid)
}

/// Writes [`encoder_files`] into `dir` (created if needed), each file atomically.
pub fn save_encoder(net: &Network, base_dir: &Path, dir: &Path) -> Result<(), FinetuneError> {
    for (name, data) in encoder_files(net, base_dir)? {
        let path = dir.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| FinetuneError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        lmfuse_data::atomic_write(&path, |w| w.write_all(&data)).map_err(|source| {
            FinetuneError::Io {
                path: path.clone(),
                source,
            }
        })?;
    }
    Ok(())
}
