//! Reading and writing lmfuse's data files.
//!
//! [`read`] reads texts from JSON Lines, CSV, TSV, Parquet and plain text, with errors that name the
//! file, line and field; [`tagged`] reads token-tagged sentences (CoNLL, JSON Lines spans) for
//! sequence labelling; [`relation`] reads entity pairs for relation extraction; [`retrieval`] reads corpora, queries and judgements in the BEIR layout. [`write`](mod@write) writes embeddings as `.npy` or JSON Lines, always atomically.

pub mod faq;
pub mod read;
pub mod relation;
pub mod retrieval;
pub mod split;
pub mod tagged;
pub mod write;

pub use read::{
    parse_labelled, parse_texts_with_columns, read_labelled, read_texts, read_texts_from, Cell,
    DataError, Format, LabelledTexts, SideColumns,
};
pub use split::stratified_split;
pub use write::{atomic_write, sha256_file, write_embeddings, OutputFormat};
