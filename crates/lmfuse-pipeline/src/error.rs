//! The pipelines' error: the libraries' errors, a message for bad specs and data, and the
//! context each step adds (which file, which member), printed as a chain by the front ends.

use std::fmt::Display;

/// Why a pipeline failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A spec or the data does not allow the job (a bad option, an empty split, a missing
    /// column): the caller's input, told in words.
    #[error("{0}")]
    Invalid(String),
    /// `source`, while doing what `context` says.
    #[error("{context}")]
    Context {
        /// What the pipeline was doing.
        context: String,
        /// Why it failed.
        #[source]
        source: Box<PipelineError>,
    },
    /// Reading or writing a file.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Reading data files.
    #[error(transparent)]
    Data(#[from] lmfuse_data::DataError),
    /// Resolving, loading or running the encoder.
    #[error(transparent)]
    Encoder(#[from] lmfuse_encoder::EncoderError),
    /// The embedding cache.
    #[error(transparent)]
    Cache(#[from] lmfuse_cache::CacheError),
    /// A classical head.
    #[error(transparent)]
    Classic(#[from] lmfuse_classic::ClassicError),
    /// Training, selection, out-of-scope detection, a classifier's bundle.
    #[error(transparent)]
    Train(#[from] lmfuse_train::TrainError),
    /// Metrics.
    #[error(transparent)]
    Metrics(#[from] lmfuse_metrics::MetricsError),
    /// The bundle format.
    #[error(transparent)]
    Bundle(#[from] lmfuse_bundle::BundleError),
    /// Text and tabular features.
    #[error(transparent)]
    Features(#[from] lmfuse_features::FeatureError),
    /// Tabular side columns.
    #[error(transparent)]
    Tabular(#[from] lmfuse_features::TabularError),
    /// Folds, out-of-fold predictions and combiners.
    #[error(transparent)]
    Fusion(#[from] lmfuse_fusion::FusionError),
    /// Fine-tuning.
    #[error(transparent)]
    Finetune(#[from] lmfuse_finetune::FinetuneError),
    /// A matrix of the wrong shape.
    #[error(transparent)]
    Shape(#[from] lmfuse_core::ShapeError),
    /// A matrix of the wrong shape.
    #[error(transparent)]
    MatrixShape(#[from] lmfuse_core::MatrixShapeError),
    /// JSON (a report, a card).
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// An index could not be written, opened or searched.
    #[error(transparent)]
    Retrieval(#[from] lmfuse_retrieval::RetrievalError),
    /// Augmentation settings or a thesaurus file are invalid, or the file cannot be read.
    #[error(transparent)]
    Augment(#[from] lmfuse_augment::AugmentError),
}

impl PipelineError {
    /// The innermost error of the chain (what went wrong, beneath every context).
    pub fn root(&self) -> &PipelineError {
        match self {
            PipelineError::Context { source, .. } => source.root(),
            other => other,
        }
    }

    /// Whether the caller's input caused it (a bad option or bad data) rather than the
    /// machine or the model: front ends map it to `ValueError` / exit status / HTTP 4xx.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self.root(),
            PipelineError::Invalid(_)
                | PipelineError::Data(_)
                | PipelineError::Augment(
                    lmfuse_augment::AugmentError::Spec(_)
                        | lmfuse_augment::AugmentError::Thesaurus { .. }
                )
                | PipelineError::Train(lmfuse_train::TrainError::UnknownLabel { .. })
                | PipelineError::Train(lmfuse_train::TrainError::Option(_))
                | PipelineError::Retrieval(
                    lmfuse_retrieval::RetrievalError::DuplicateId { .. }
                        | lmfuse_retrieval::RetrievalError::UnknownId { .. }
                        | lmfuse_retrieval::RetrievalError::BadQuery { .. }
                        | lmfuse_retrieval::RetrievalError::Empty
                )
        )
    }

    /// Whether a file, folder or model the caller named does not exist.
    pub fn is_not_found(&self) -> bool {
        if let PipelineError::Io(io) = self.root() {
            return io.kind() == std::io::ErrorKind::NotFound;
        }
        if matches!(
            self.root(),
            PipelineError::Data(lmfuse_data::DataError::NotFound { .. })
                | PipelineError::Retrieval(lmfuse_retrieval::RetrievalError::NotAnIndex { .. })
                | PipelineError::Augment(lmfuse_augment::AugmentError::Io { .. })
                | PipelineError::Encoder(
                    lmfuse_encoder::EncoderError::ModelNotFound { .. }
                        | lmfuse_encoder::EncoderError::DefaultModelMissing { .. }
                )
        ) {
            return true;
        }
        let mut cur: &(dyn std::error::Error + 'static) = self;
        loop {
            if let Some(io) = cur.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::NotFound {
                    return true;
                }
            }
            match cur.source() {
                Some(next) => cur = next,
                None => return false,
            }
        }
    }

    /// The whole chain on one line: `context: cause: cause`.
    pub fn chain_message(&self) -> String {
        let mut out = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            let s = e.to_string();
            if !out.ends_with(&s) {
                out.push_str(": ");
                out.push_str(&s);
            }
            cur = e.source();
        }
        out
    }
}

/// A pipeline result.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Adds what the pipeline was doing to an error.
pub trait Context<T> {
    /// Wraps the error with `context`.
    fn context(self, context: impl Display) -> Result<T>;
    /// Wraps the error with the context `f` makes (only on failure).
    fn with_context<D: Display>(self, f: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Into<PipelineError>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Display) -> Result<T> {
        self.map_err(|e| PipelineError::Context {
            context: context.to_string(),
            source: Box::new(e.into()),
        })
    }

    fn with_context<D: Display>(self, f: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| PipelineError::Context {
            context: f().to_string(),
            source: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl Display) -> Result<T> {
        self.ok_or_else(|| PipelineError::Invalid(context.to_string()))
    }

    fn with_context<D: Display>(self, f: impl FnOnce() -> D) -> Result<T> {
        self.ok_or_else(|| PipelineError::Invalid(f().to_string()))
    }
}

/// Returns [`PipelineError::Invalid`] with a formatted message.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::PipelineError::Invalid(format!($($arg)*)))
    };
}

/// Returns [`PipelineError::Invalid`] with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::bail!($($arg)*);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_chains_and_the_root_tells_the_kind() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = Err::<(), _>(io).context("cannot read a.jsonl").unwrap_err();
        assert_eq!(err.chain_message(), "cannot read a.jsonl: no such file");
        assert!(err.is_not_found());
        assert!(!err.is_invalid_input());
        let model = lmfuse_encoder::EncoderError::ModelNotFound { path: "m".into() };
        let missing = Err::<(), _>(PipelineError::from(model))
            .context("loading")
            .unwrap_err();
        assert!(missing.is_not_found());
        let bad: Result<()> = (|| {
            ensure!(1 + 1 == 3, "two is not {}", 3);
            Ok(())
        })();
        let bad = bad.context("checking").unwrap_err();
        assert!(bad.is_invalid_input());
        assert_eq!(bad.chain_message(), "checking: two is not 3");
    }
}
