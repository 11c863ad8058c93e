//! lmfuse's search indexes: BM25 over documents (tantivy, with jieba for Chinese) and dense
//! vectors of their passages (memory-mapped; exact search, or an HNSW graph for large
//! collections), fused by reciprocal rank or by
//! a weighted sum of normalised scores.
//!
//! An index is a folder ([`store`]): a versioned manifest and one generation of files, replaced
//! as a whole and atomically by every change ([`write_index`]), so a killed writer never
//! damages what readers see. Encoding is the caller's: [`Change::passages_to_encode`] gives
//! the texts whose vectors a change needs, and queries come with their vector.

pub mod analyzer;
pub mod ann;
mod dense;
mod error;
pub mod features;
pub mod fusion;
mod lexical;
pub mod passages;
pub mod store;

pub use analyzer::AnalyzerParams;
pub use ann::{AnnParams, AnnPolicy};
pub use dense::{dot, normalize, top_k};
pub use error::{Result, RetrievalError};
pub use features::{Candidate, FEATURE_NAMES};
pub use passages::{split_passages, PassageParams};
pub use store::{
    read_manifest, write_index, Change, DenseRecord, Index, IndexManifest, IndexSpec, StoredDoc,
    MANIFEST,
};

use serde::{Deserialize, Serialize};

/// How a query is answered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum SearchMode {
    /// BM25 only.
    Bm25,
    /// Dense vectors only.
    Dense,
    /// Both, fused by reciprocal rank (constant `k`).
    Rrf {
        /// RRF's constant ([`fusion::RRF_K`] by default).
        k: f32,
    },
    /// Both, min-max normalised and summed with weight `dense_weight` on the dense scores and
    /// `1 − dense_weight` on BM25's.
    Weighted {
        /// The dense side's weight, 0..=1.
        dense_weight: f32,
    },
    /// A learned ranker over [`Index::candidates`]: the ranker is the caller's (lmfuse's
    /// pipeline keeps it beside the index); [`Index::search`] refuses this mode.
    Learned,
}

impl SearchMode {
    /// Whether the mode needs the query's vector.
    pub fn needs_vector(&self) -> bool {
        !matches!(self, SearchMode::Bm25)
    }
}

/// How many candidates each side gives a fused ranking, at least.
pub const FUSION_DEPTH: usize = 100;

impl Index {
    /// The `k` best documents for a query, best first: `vector` is the query's embedding
    /// (needed by every mode but BM25).
    pub fn search(
        &self,
        query: &str,
        vector: Option<&[f32]>,
        mode: SearchMode,
        k: usize,
    ) -> Result<Vec<(usize, f32)>> {
        let vector = || vector.ok_or(RetrievalError::NoDense);
        let depth = k.max(FUSION_DEPTH);
        match mode {
            SearchMode::Bm25 => self.bm25(query, k),
            SearchMode::Dense => self.dense(vector()?, k),
            SearchMode::Rrf { k: rrf_k } => {
                let (lex, den) = (self.bm25(query, depth)?, self.dense(vector()?, depth)?);
                Ok(truncate(fusion::reciprocal_rank(&[&lex, &den], rrf_k), k))
            }
            SearchMode::Weighted { dense_weight } => {
                let (lex, den) = (self.bm25(query, depth)?, self.dense(vector()?, depth)?);
                let lists = [(&lex[..], 1.0 - dense_weight), (&den[..], dense_weight)];
                Ok(truncate(fusion::weighted(&lists), k))
            }
            SearchMode::Learned => Err(RetrievalError::BadQuery {
                index: 0,
                reason: "a learned ranking needs its ranker (search through lmfuse's pipeline)"
                    .into(),
            }),
        }
    }
}

fn truncate(mut hits: Vec<(usize, f32)>, k: usize) -> Vec<(usize, f32)> {
    hits.truncate(k);
    hits
}
