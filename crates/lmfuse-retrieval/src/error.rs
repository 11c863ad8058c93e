//! What can go wrong with an index.

use std::path::{Path, PathBuf};

/// Why an index could not be written, opened or searched.
#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    /// Reading or writing a file failed.
    #[error("cannot access {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The folder holds no index.
    #[error("{path}: no lmfuse index here (no index.json)")]
    NotAnIndex {
        /// The folder.
        path: PathBuf,
    },
    /// An index file is damaged or does not fit the rest of the index.
    #[error("{path}: damaged index file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The index was written in a format this lmfuse does not read.
    #[error("{path}: index format {found}, this lmfuse reads {format} version {expected}")]
    Version {
        /// The manifest.
        path: PathBuf,
        /// Format and version found.
        found: String,
        /// The format read.
        format: &'static str,
        /// The version read.
        expected: u32,
    },
    /// The BM25 engine (tantivy) failed.
    #[error("{path}: BM25 index: {message}")]
    Lexical {
        /// The lexical index folder.
        path: PathBuf,
        /// tantivy's message.
        message: String,
    },
    /// A change adds an id the index (or the change) already holds.
    #[error("document id {id:?} is already in the index (delete it first)")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// A change deletes an id the index lacks.
    #[error("document id {id:?} is not in the index")]
    UnknownId {
        /// The id.
        id: String,
    },
    /// Passage vectors do not fit the passages or the index's dimension.
    #[error("{found} vector values given, expected {expected} ({what})")]
    Vectors {
        /// Values given.
        found: usize,
        /// Values expected.
        expected: usize,
        /// Where the count comes from.
        what: String,
    },
    /// Dense search asked of an index built without vectors.
    #[error("this index has no dense vectors (built with BM25 only)")]
    NoDense,
    /// A query is empty or over the length limit.
    #[error("query {index}: {reason}")]
    BadQuery {
        /// The query's number (0-based) in its batch.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A change would leave the index empty, or a new index gets no document.
    #[error("an index needs at least one document")]
    Empty,
}

impl RetrievalError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        RetrievalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn lexical(path: &Path, e: tantivy::TantivyError) -> Self {
        RetrievalError::Lexical {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, RetrievalError>;
