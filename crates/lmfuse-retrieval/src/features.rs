//! Features of (query, document) pairs for a learned ranker: the candidates are the union of
//! BM25's and the dense side's top documents, each described by both retrievers' scores and
//! ranks, their fusion, and how much of the query the title and the text hold.

use crate::analyzer::terms;
use crate::error::{Result, RetrievalError};
use crate::fusion::RRF_K;
use crate::store::Index;
use std::collections::{BTreeMap, HashSet};

/// The features, in order.
pub const FEATURE_NAMES: [&str; 12] = [
    "bm25",
    "bm25_over_best",
    "in_bm25_top",
    "log_bm25_rank",
    "dense",
    "dense_minus_best",
    "log_dense_rank",
    "rrf",
    "title_share",
    "text_share",
    "log_doc_words",
    "log_query_terms",
];

/// A candidate document and its features ([`FEATURE_NAMES`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The document's position in the index.
    pub doc: usize,
    /// Its features.
    pub features: Vec<f32>,
}

impl Index {
    /// The union of BM25's and the dense side's top `depth` documents for a query, with
    /// their features, in document order.
    pub fn candidates(&self, query: &str, vector: &[f32], depth: usize) -> Result<Vec<Candidate>> {
        let lexical = self.bm25(query, depth)?;
        let dense_top = self.dense(vector, depth)?;
        let mut slots: BTreeMap<usize, (Option<usize>, Option<usize>)> = BTreeMap::new();
        for (rank, &(doc, _)) in lexical.iter().enumerate() {
            slots.entry(doc).or_default().0 = Some(rank);
        }
        for (rank, &(doc, _)) in dense_top.iter().enumerate() {
            slots.entry(doc).or_default().1 = Some(rank);
        }
        let params = self.manifest().spec.analyzer;
        let query_terms: HashSet<String> = terms(query, params).into_iter().collect();
        let best_bm25 = lexical.first().map_or(1.0, |h| h.1.max(f32::MIN_POSITIVE));
        let best_dense = dense_top.first().map_or(0.0, |h| h.1);
        let absent = (depth + 1) as f32;
        let docs: Vec<usize> = slots.keys().copied().collect();
        let dense_of: BTreeMap<usize, f32> = docs
            .iter()
            .copied()
            .zip(self.dense_scores_of(vector, &docs)?)
            .collect();
        Ok(slots
            .into_iter()
            .map(|(doc, (lex_rank, dense_rank))| {
                let bm25 = lex_rank.map_or(0.0, |r| lexical[r].1);
                let stored = &self.documents()[doc];
                let doc_terms = self.doc_terms(doc);
                let share = |found: &HashSet<String>| {
                    if query_terms.is_empty() {
                        return 0.0;
                    }
                    query_terms.intersection(found).count() as f32 / query_terms.len() as f32
                };
                let rank_of = |r: Option<usize>| r.map_or(absent, |r| (r + 1) as f32);
                let rrf = |r: Option<usize>| r.map_or(0.0, |r| 1.0 / (RRF_K + r as f32 + 1.0));
                let dense = dense_of[&doc].max(-1.0);
                let words = stored.text.split_whitespace().count() as f32;
                let features = vec![
                    bm25,
                    bm25 / best_bm25,
                    f32::from(u8::from(lex_rank.is_some())),
                    rank_of(lex_rank).ln(),
                    dense,
                    dense - best_dense,
                    rank_of(dense_rank).ln(),
                    rrf(lex_rank) + rrf(dense_rank),
                    share(&doc_terms.title),
                    share(&doc_terms.all),
                    (1.0 + words).ln(),
                    (1.0 + query_terms.len() as f32).ln(),
                ];
                Candidate { doc, features }
            })
            .collect())
    }

    /// Every document's best passage cosine with `query` (exact, over every passage).
    pub fn dense_scores(&self, query: &[f32]) -> Result<Vec<f32>> {
        let q = self.unit_query(query)?;
        let dense = self.dense_store().ok_or(RetrievalError::NoDense)?;
        Ok(dense.doc_scores(&q, self.documents().len()))
    }

    /// The best passage cosine with `query` of each of `docs` (exact; `-inf` for a document
    /// without passages).
    pub fn dense_scores_of(&self, query: &[f32], docs: &[usize]) -> Result<Vec<f32>> {
        let q = self.unit_query(query)?;
        let dense = self.dense_store().ok_or(RetrievalError::NoDense)?;
        Ok(docs.iter().map(|&d| dense.doc_score(&q, d)).collect())
    }

    /// `query` checked against the vectors' dimension and scaled to unit length.
    pub(crate) fn unit_query(&self, query: &[f32]) -> Result<Vec<f32>> {
        let dense = self.dense_store().ok_or(RetrievalError::NoDense)?;
        if query.len() != dense.dim() {
            return Err(RetrievalError::Vectors {
                found: query.len(),
                expected: dense.dim(),
                what: "the query vector".into(),
            });
        }
        let mut q = query.to_vec();
        crate::dense::normalize(&mut q);
        Ok(q)
    }
}
