//! Choosing the texts to label next from a pool, with a trained bundle.

use super::{choose, uncertainty_of, PoolView, Strategy};
use crate::encoders::{embed_texts, CacheSpec};
use crate::ensure;
use crate::error::Result;
use crate::model::Model;
use crate::observe::Observer;
use lmfuse_core::DenseMatrix;
use serde::Serialize;

/// One text chosen for labelling.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chosen {
    /// 1 for the first chosen.
    pub rank: usize,
    /// Its row in the pool (0-based).
    pub row: usize,
    /// The text.
    pub text: String,
    /// How unsure the bundle is of it (the strategy's measure; margin for the hybrid), where
    /// the strategy reads probabilities.
    pub uncertainty: Option<f64>,
}

/// Chooses `n` texts of `pool` to label next by `strategy`, with `model`'s probabilities and
/// its encoder's embeddings (`labelled`: texts labelled already, kept away from by diversity).
pub fn select_next(
    model: &Model,
    pool: &[String],
    labelled: &[String],
    (strategy, n, seed): (Strategy, usize, u64),
    cache: &CacheSpec,
    on: &dyn Observer,
) -> Result<Vec<Chosen>> {
    ensure!(!pool.is_empty(), "the pool is empty");
    ensure!(
        n <= pool.len(),
        "--budget {n} is larger than the pool ({} texts)",
        pool.len()
    );
    ensure!(
        model.feature_cols().is_empty(),
        "the bundle reads side columns ({}); choosing with them is not supported",
        model.feature_cols().join(", ")
    );
    let mut cache = cache.open()?;
    let proba = match strategy.needs_probabilities() {
        true => Some(model.predict_proba(pool, &[], cache.as_mut(), on)?.0),
        false => None,
    };
    let embeddings = match strategy.needs_embeddings() {
        false => None,
        true => {
            let encoder = model.main_encoder();
            let Some(files) = &encoder.files else {
                crate::bail!(
                    "strategy {}: the bundle has no encoder (TF-IDF only) to embed the texts",
                    strategy.name()
                );
            };
            let all: Vec<String> = pool.iter().chain(labelled).cloned().collect();
            let (emb, _) = embed_texts(&all, files, &encoder.options, cache.as_mut(), on)?;
            Some(DenseMatrix::from(emb))
        }
    };
    let k = model.labels().len();
    let view = PoolView {
        proba: proba.as_deref(),
        n_classes: k,
        embeddings: embeddings.as_ref(),
    };
    let labelled_rows: Vec<usize> = (pool.len()..pool.len() + labelled.len()).collect();
    let candidates: Vec<usize> = (0..pool.len()).collect();
    let picked = choose(strategy, view, &labelled_rows, &candidates, n, seed)?;
    Ok(picked
        .into_iter()
        .enumerate()
        .map(|(rank, row)| Chosen {
            rank: rank + 1,
            row,
            text: pool[row].clone(),
            uncertainty: proba
                .as_deref()
                .map(|p| uncertainty_of(strategy, &p[row * k..(row + 1) * k])),
        })
        .collect())
}
