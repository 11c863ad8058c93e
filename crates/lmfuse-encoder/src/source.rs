//! Finding a model: a local folder, a Hugging Face model id, or the offline default.

use crate::config::{BertConfig, SentenceConfig};
use crate::error::EncoderError;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Folder name of the default model under a models directory.
pub const DEFAULT_MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// Environment variable naming the folder that holds the default model.
pub const MODELS_DIR_ENV: &str = "LMFUSE_MODELS_DIR";

/// What the user asked for with `--model`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// The offline default, `models/all-MiniLM-L6-v2`.
    Default,
    /// A local folder.
    Dir(PathBuf),
    /// A Hugging Face model id such as `sentence-transformers/all-MiniLM-L6-v2`.
    HubId(String),
}

impl ModelSpec {
    /// Interprets a `--model` argument: an existing path is a folder; `owner/name` that is not a
    /// path on disk is a Hugging Face id; anything else is a folder (that will be reported
    /// missing).
    pub fn parse(arg: &str) -> Self {
        let path = Path::new(arg);
        if path.exists() {
            return ModelSpec::Dir(path.to_path_buf());
        }
        if looks_like_hub_id(arg) {
            ModelSpec::HubId(arg.to_string())
        } else {
            ModelSpec::Dir(path.to_path_buf())
        }
    }
}

fn looks_like_hub_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let (Some(owner), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    ok(owner) && ok(name)
}

/// A model folder whose configuration has been read and whose weights have been hashed.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The folder holding the files.
    pub dir: PathBuf,
    /// How the user named the model (path or hub id), for reports and manifests.
    pub reference: String,
    /// `config.json`.
    pub config: BertConfig,
    /// sentence-transformers settings.
    pub sentence: SentenceConfig,
    /// `model.safetensors`.
    pub weights_path: PathBuf,
    /// `tokenizer.json`.
    pub tokenizer_path: PathBuf,
    /// Hex sha256 of `model.safetensors`.
    pub weights_sha256: String,
    /// The precision the weights are stored in: int8 for a converted model, else f32.
    pub stored_precision: lmfuse_core::Precision,
}

/// The folders that hold installed models, in search order: `$LMFUSE_MODELS_DIR`, `./models`,
/// and `models/` beside the workspace that holds the running binary (`target/<profile>/lmfuse`).
pub fn model_roots() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = std::env::var_os(MODELS_DIR_ENV) {
        out.push(PathBuf::from(dir));
    }
    out.push(PathBuf::from("models"));
    if let Ok(exe) = std::env::current_exe() {
        // target/release/lmfuse or target/release/deps/test-binary
        for up in exe.ancestors().skip(1).take(4) {
            if up.file_name().is_some_and(|n| n == "target") {
                if let Some(root) = up.parent() {
                    out.push(root.join("models"));
                }
            }
        }
    }
    out
}

/// The folders searched for the default model, in order (see [`model_roots`]).
pub fn default_model_candidates() -> Vec<PathBuf> {
    model_roots()
        .into_iter()
        .map(|r| r.join(DEFAULT_MODEL_NAME))
        .collect()
}

/// The installed model called `name` (a bare folder name such as `multilingual-e5-small`),
/// looked up in `roots` (the [`model_roots`]).
fn installed_model(name: &Path, roots: &[PathBuf]) -> Option<PathBuf> {
    let mut parts = name.components();
    let (Some(std::path::Component::Normal(_)), None) = (parts.next(), parts.next()) else {
        return None;
    };
    roots
        .iter()
        .map(|r| r.join(name))
        .find(|d| d.join("config.json").is_file())
}

impl ModelFiles {
    /// The precision these weights run in when `asked` (`None`: as stored). Weights stored in
    /// int8 run in int8 only: asking them for another precision is an error naming the file.
    pub fn run_precision(
        &self,
        asked: Option<lmfuse_core::Precision>,
    ) -> Result<lmfuse_core::Precision, EncoderError> {
        crate::weights::WeightFile::run_precision(self.stored_precision, asked, &self.weights_path)
    }

    /// Resolves `spec` to a model folder, reads its configuration and hashes its weights.
    pub fn resolve(spec: &ModelSpec) -> Result<Self, EncoderError> {
        match spec {
            ModelSpec::Default => {
                let candidates = default_model_candidates();
                match candidates.iter().find(|c| c.join("config.json").is_file()) {
                    Some(dir) => Self::from_dir(dir, DEFAULT_MODEL_NAME),
                    None => Err(EncoderError::DefaultModelMissing {
                        path: candidates
                            .into_iter()
                            .next()
                            .unwrap_or_else(|| PathBuf::from("models").join(DEFAULT_MODEL_NAME)),
                    }),
                }
            }
            ModelSpec::Dir(dir) => {
                if dir.is_file() {
                    return Err(EncoderError::NotAFolder { path: dir.clone() });
                }
                if !dir.is_dir() {
                    // A bare name is an installed model (`--model multilingual-e5-small`).
                    return match installed_model(dir, &model_roots()) {
                        Some(found) => Self::from_dir(&found, &dir.display().to_string()),
                        None => Err(EncoderError::ModelNotFound { path: dir.clone() }),
                    };
                }
                Self::from_dir(dir, &dir.display().to_string())
            }
            ModelSpec::HubId(id) => {
                let dir = fetch_from_hub(id)?;
                Self::from_dir(&dir, id)
            }
        }
    }

    /// Reads the configuration of the model in `dir` and hashes its weights.
    pub fn from_dir(dir: &Path, reference: &str) -> Result<Self, EncoderError> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let sentence = SentenceConfig::from_dir(dir)?;
        let weights_path = dir.join("model.safetensors");
        if !weights_path.is_file() {
            let hint = if dir.join("pytorch_model.bin").is_file() {
                " (pytorch_model.bin is present, but lmfuse never loads pickle files: convert it to \
                 safetensors first)"
            } else {
                ""
            };
            return Err(EncoderError::Unsupported {
                path: weights_path,
                message: format!("model.safetensors is missing{hint}"),
            });
        }
        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(EncoderError::MissingFile {
                path: tokenizer_path,
            });
        }
        let weights_sha256 = sha256_file(&weights_path)?;
        let stored_precision =
            crate::weights::WeightFile::open(&weights_path)?.stored_precision()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            reference: reference.to_string(),
            config,
            sentence,
            weights_path,
            tokenizer_path,
            weights_sha256,
            stored_precision,
        })
    }
}

/// Hex sha256 of a file, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<String, EncoderError> {
    let mut file = std::fs::File::open(path).map_err(|e| EncoderError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| EncoderError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Files a model needs, and files read when the repository has them.
const REQUIRED_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];
const OPTIONAL_FILES: [&str; 3] = [
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// Returns the local snapshot folder of hub model `id`, from the Hugging Face cache
/// (`$HF_HOME`, `~/.cache/huggingface`) when complete there, else downloaded into it.
fn fetch_from_hub(id: &str) -> Result<PathBuf, EncoderError> {
    let hub_err = |file: &str, message: String| EncoderError::Hub {
        model_id: id.to_string(),
        file: file.to_string(),
        message,
    };
    let cache = hf_hub::Cache::from_env();
    let cached = cache.model(id.to_string());
    if let Some(config) = cached.get("config.json") {
        if REQUIRED_FILES.iter().all(|f| cached.get(f).is_some()) {
            if let Some(dir) = config.parent() {
                return Ok(dir.to_path_buf());
            }
        }
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .with_retries(1)
        .build()
        .map_err(|e| hub_err("(client)", e.to_string()))?;
    let repo = api.model(id.to_string());
    let info = repo
        .info()
        .map_err(|e| hub_err("repository listing", e.to_string()))?;
    let listed = |f: &str| info.siblings.iter().any(|s| s.rfilename == f);
    let mut config_path = None;
    for file in REQUIRED_FILES {
        if !listed(file) {
            return Err(hub_err(file, "the repository has no such file".into()));
        }
        let path = repo.get(file).map_err(|e| hub_err(file, e.to_string()))?;
        if file == "config.json" {
            config_path = Some(path);
        }
    }
    for file in OPTIONAL_FILES.into_iter().filter(|f| listed(f)) {
        repo.get(file).map_err(|e| hub_err(file, e.to_string()))?;
    }
    config_path
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .ok_or_else(|| hub_err("config.json", "download gave no path".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_model_arguments() {
        assert_eq!(
            ModelSpec::parse("sentence-transformers/all-MiniLM-L6-v2"),
            ModelSpec::HubId("sentence-transformers/all-MiniLM-L6-v2".into())
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(ModelSpec::parse(d), ModelSpec::Dir(dir.path().into()));
        assert_eq!(
            ModelSpec::parse("./no/such/dir"),
            ModelSpec::Dir("./no/such/dir".into())
        );
        assert_eq!(
            ModelSpec::parse("plainname"),
            ModelSpec::Dir("plainname".into())
        );
    }

    #[test]
    fn a_file_is_not_a_folder_and_a_cause_is_not_repeated() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let e = ModelFiles::resolve(&ModelSpec::Dir(file.path().into())).unwrap_err();
        assert!(matches!(e, EncoderError::NotAFolder { .. }), "{e}");
        assert!(
            e.to_string().contains("is a file, not a model folder"),
            "{e}"
        );
        // A broken config.json: the parser's message is the source, kept out of the message.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{").unwrap();
        let e = ModelFiles::resolve(&ModelSpec::Dir(dir.path().into())).unwrap_err();
        let cause = std::error::Error::source(&e).expect("a source").to_string();
        assert!(cause.contains("EOF"), "{cause}");
        assert!(!e.to_string().contains(&cause), "{e}");
    }

    #[test]
    fn a_bare_name_is_an_installed_model_in_the_models_folder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("tiny-model");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        let roots = [PathBuf::from("/no/such/root"), root.path().to_path_buf()];
        assert_eq!(installed_model(Path::new("tiny-model"), &roots), Some(dir));
        assert_eq!(installed_model(Path::new("other-model"), &roots), None);
        assert_eq!(installed_model(Path::new("a/tiny-model"), &roots), None);
        assert_eq!(installed_model(Path::new("/tiny-model"), &roots), None);
    }

    #[test]
    fn missing_folder_is_named() {
        let e = ModelFiles::resolve(&ModelSpec::Dir("/no/such/model".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/no/such/model") && e.contains("does not exist"),
            "{e}"
        );
    }

    #[test]
    fn missing_weights_are_named_and_pickle_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 32}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("pytorch_model.bin"), b"x").unwrap();
        let e = ModelFiles::from_dir(dir.path(), "x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.safetensors") && e.contains("pickle"),
            "{e}"
        );
    }
}
