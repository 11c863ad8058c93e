//! Search indexes from Python, through `lmfuse_pipeline::retrieval` as `lmfuse index` and
//! `lmfuse search` call it: build over a corpus file, add and delete documents, search in every
//! mode (optionally reranked by a cross-encoder), and score on judged queries. Reports and hits
//! cross as JSON text, which `python/lmfuse/__init__.py` parses.

use crate::{py_err, value_error};
use lmfuse_data::retrieval::CorpusColumns;
use lmfuse_pipeline::encoders::{CacheSpec, EncoderChoice};
use lmfuse_pipeline::retrieval::{
    self, mode_named, DenseSpec, IndexBuildSpec, Reranker, SearchEvalSpec, Searcher,
};
use lmfuse_pipeline::Silent;
use lmfuse_retrieval::{AnalyzerParams, AnnParams, AnnPolicy};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::Mutex;

/// The embedding cache in `dir` (`None`: the default folder).
fn cache_in(dir: Option<PathBuf>) -> CacheSpec {
    CacheSpec {
        disabled: false,
        dir,
    }
}

fn json<T: serde::Serialize>(value: &T) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| value_error(e.to_string()))
}

/// When to keep an HNSW graph: `auto` (from 100,000 passages), `on` or `off`.
fn ann_policy(ann: &str) -> PyResult<Option<AnnPolicy>> {
    let min_passages = match ann {
        "off" => return Ok(None),
        "on" => 0,
        "auto" => AnnPolicy::AUTO_MIN_PASSAGES,
        other => {
            return Err(value_error(format!(
                "ann must be \"auto\", \"on\" or \"off\", not {other:?}"
            )))
        }
    };
    Ok(Some(AnnPolicy {
        params: AnnParams::default(),
        min_passages,
    }))
}

/// Builds the index `dir` over the corpus file `corpus` (JSONL, CSV, TSV or Parquet with id,
/// title and text), with vectors of `model` unless `bm25_only`; the summary as JSON.
#[pyfunction]
#[pyo3(signature = (dir, corpus, model, bm25_only, ann, cache_dir))]
pub fn index_build(
    py: Python<'_>,
    dir: PathBuf,
    corpus: PathBuf,
    model: Option<String>,
    bm25_only: bool,
    ann: &str,
    cache_dir: Option<PathBuf>,
) -> PyResult<String> {
    let cache = cache_in(cache_dir);
    let spec = IndexBuildSpec {
        corpus,
        format: None,
        columns: CorpusColumns::default(),
        analyzer: AnalyzerParams {
            stop_words: true,
            stem: true,
        },
        dense: (!bm25_only)
            .then(|| -> PyResult<DenseSpec> {
                Ok(DenseSpec {
                    encoder: EncoderChoice {
                        model,
                        ..EncoderChoice::default()
                    },
                    ann: ann_policy(ann)?,
                    ..DenseSpec::default()
                })
            })
            .transpose()?,
        cache: cache.clone(),
    };
    let summary = py
        .detach(|| retrieval::build_index(&dir, &spec, &Silent))
        .map_err(py_err)?;
    json(&summary)
}

/// Adds the documents of the corpus file `add` (replacing those with the same ids) and deletes
/// the ids `delete`, as one new generation of the index `dir`; the summary as JSON.
#[pyfunction]
pub fn index_update(
    py: Python<'_>,
    dir: PathBuf,
    add: Option<PathBuf>,
    delete: Vec<String>,
    cache_dir: Option<PathBuf>,
) -> PyResult<String> {
    let cache = cache_in(cache_dir);
    let columns = CorpusColumns::default();
    let summary = py
        .detach(|| {
            let add = add.as_deref().map(|p| (p, None, &columns));
            retrieval::update_index(&dir, add, delete, &cache, &Silent)
        })
        .map_err(py_err)?;
    json(&summary)
}

/// Opens the index `dir` for searching.
#[pyfunction]
pub fn index_open(py: Python<'_>, dir: PathBuf, cache_dir: Option<PathBuf>) -> PyResult<Index> {
    let cache = cache_in(cache_dir);
    let searcher = py.detach(|| Searcher::open(&dir, &cache)).map_err(py_err)?;
    Ok(Index {
        searcher: Mutex::new(searcher),
    })
}

/// An open index. The searcher sits behind a lock: searching loads the encoder on first use
/// and its embedding cache is not shared between threads.
#[pyclass(module = "lmfuse._native", frozen)]
pub struct Index {
    searcher: Mutex<Searcher>,
}

impl Index {
    fn searcher(&self) -> std::sync::MutexGuard<'_, Searcher> {
        self.searcher.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl Index {
    /// The index's manifest, as JSON.
    fn info(&self) -> PyResult<String> {
        json(self.searcher().index().manifest())
    }

    /// Reranks every search's best `depth` documents with the cross-encoder `model` from now
    /// on (`None`: no more).
    fn set_reranker(&self, py: Python<'_>, model: Option<String>, depth: usize) -> PyResult<()> {
        let reranker = py
            .detach(|| model.map(|m| Reranker::open(&m, depth)).transpose())
            .map_err(py_err)?;
        self.searcher().set_reranker(reranker);
        Ok(())
    }

    /// The `k` best documents of each query in mode `mode` (`fusion`: hybrid's RRF constant
    /// and weighted's dense weight), as JSON: one list of hits (`rank`, `id`, `score`,
    /// `title`) per query.
    fn search(
        &self,
        py: Python<'_>,
        queries: Vec<String>,
        mode: &str,
        k: usize,
        fusion: (f32, f32),
    ) -> PyResult<String> {
        let mode = mode_named(mode, fusion.0, fusion.1).map_err(py_err)?;
        let hits = py
            .detach(|| self.searcher().search(&queries, mode, k, &Silent))
            .map_err(py_err)?;
        json(&hits)
    }

    /// Scores the index on `judged` queries (BEIR layout: queries and qrels files) in each of
    /// `modes`, as JSON.
    fn evaluate(
        &self,
        py: Python<'_>,
        judged: (PathBuf, PathBuf),
        modes: Vec<String>,
        depth: usize,
        fusion: (f32, f32),
    ) -> PyResult<String> {
        let (queries, qrels) = judged;
        let modes = modes
            .iter()
            .map(|m| mode_named(m, fusion.0, fusion.1))
            .collect::<Result<Vec<_>, _>>()
            .map_err(py_err)?;
        let spec = SearchEvalSpec {
            queries,
            qrels,
            modes,
            depth,
            cut: 10,
            recall_depth: 100,
        };
        let report = py
            .detach(|| retrieval::evaluate(&mut self.searcher(), &spec, &Silent))
            .map_err(py_err)?;
        json(&report)
    }
}
