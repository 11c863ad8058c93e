//! Retrieval: building and updating search indexes over a corpus, searching them, and scoring
//! them on BEIR-style judgements. Passages and queries are encoded through the shared encoder
//! and cache ([`crate::encoders`]); the index itself is `lmfuse-retrieval`'s.

use crate::encoders::{CacheSpec, EmbedSummary, EncoderChoice, Encoders};
use crate::error::{Context, PipelineError, Result};
use crate::observe::Observer;
use crate::ranker::{train_ranker, Ranker, RankerReport, RankerSpec, RANKER_DIR};
use lmfuse_core::Pooling;
use lmfuse_data::retrieval::{read_corpus, read_qrels, read_queries, CorpusColumns, Document};
use lmfuse_data::Format;
use lmfuse_encoder::{CrossEncoder, SentenceEncoder};
use lmfuse_metrics::ranking::{evaluate_run, Judgements, RankingReport, Run};
use lmfuse_retrieval::{
    write_index, AnalyzerParams, AnnPolicy, Change, DenseRecord, Index, IndexManifest, IndexSpec,
    PassageParams, SearchMode,
};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The longest query searched, in characters (`lmfuse-server` refuses longer ones with the
/// same limit before they reach a batch).
pub const MAX_QUERY_CHARS: usize = 4096;

/// The dense side of an index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DenseSpec {
    /// The encoder (its `prefix` is ignored: see the two prefixes).
    pub encoder: EncoderChoice,
    /// Put before every query; `None`: the model's default prompt.
    pub query_prefix: Option<String>,
    /// Put before every passage; `None`: the model's default prompt.
    pub passage_prefix: Option<String>,
    /// Passage cutting; `None`: [`PassageParams::for_window`] of the encoder's window.
    pub passages: Option<PassageParams>,
    /// When to keep an HNSW graph over the vectors; `None`: exact search only.
    pub ann: Option<AnnPolicy>,
}

/// What `index build` does.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexBuildSpec {
    /// The corpus file.
    pub corpus: PathBuf,
    /// Its format; `None`: from the extension.
    pub format: Option<Format>,
    /// Its columns.
    pub columns: CorpusColumns,
    /// BM25's analysis.
    pub analyzer: AnalyzerParams,
    /// Vectors; `None`: BM25 only.
    pub dense: Option<DenseSpec>,
    /// The embedding cache.
    pub cache: CacheSpec,
}

impl IndexBuildSpec {
    /// Refuses settings that cannot work.
    pub fn check(&self) -> Result<()> {
        if let Some(policy) = self.dense.as_ref().and_then(|d| d.ann) {
            policy.params.check()?;
        }
        if let Some(p) = self.dense.as_ref().and_then(|d| d.passages) {
            if p.words == 0 || p.overlap >= p.words {
                return Err(PipelineError::Invalid(format!(
                    "passage overlap ({}) must be below the passage length ({}), which must be positive",
                    p.overlap, p.words
                )));
            }
        }
        Ok(())
    }
}

/// The encoder settings an index records, so that queries and later passages are encoded the
/// same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RecordedEncoder {
    pooling: Option<Pooling>,
    max_length: Option<usize>,
    normalize: Option<bool>,
    query_prefix: String,
    passage_prefix: String,
}

/// What a build or update did.
#[derive(Debug, Clone, Serialize)]
pub struct IndexSummary {
    /// The index folder.
    pub index: PathBuf,
    /// Its generation after the change.
    pub generation: u64,
    /// Documents in it.
    pub documents: usize,
    /// Passages with vectors.
    pub passages: usize,
    /// Whether dense search goes through an HNSW graph (approximate).
    pub approximate: bool,
    /// Documents added.
    pub added: usize,
    /// Documents deleted.
    pub deleted: usize,
    /// The passages' encoding, when vectors were made.
    pub embedding: Option<EmbedSummary>,
    /// Wall time.
    pub seconds: f64,
}

/// Builds the index in `dir` from nothing (an index already there stays readable until the
/// new one replaces it whole).
pub fn build_index(dir: &Path, spec: &IndexBuildSpec, on: &dyn Observer) -> Result<IndexSummary> {
    spec.check()?;
    let docs = read_corpus(&spec.corpus, spec.format, &spec.columns)?;
    build_index_from(dir, docs, spec, on)
}

/// [`build_index`] over documents already read (`spec.corpus` is not read).
pub fn build_index_from(
    dir: &Path,
    docs: Vec<Document>,
    spec: &IndexBuildSpec,
    on: &dyn Observer,
) -> Result<IndexSummary> {
    spec.check()?;
    let started = Instant::now();
    let (index_spec, mut encoders) = match &spec.dense {
        Some(d) => {
            let (record, encoders) = dense_record(d, &spec.cache)?;
            let window = encoders
                .options()
                .fingerprint(encoders.files())?
                .max_seq_length;
            let passages = d
                .passages
                .unwrap_or_else(|| PassageParams::for_window(window));
            (
                make_spec(spec.analyzer, passages, Some(record), d.ann),
                Some(encoders),
            )
        }
        None => (
            make_spec(spec.analyzer, PassageParams::for_window(256), None, None),
            None,
        ),
    };
    let added = docs.len();
    let (change, embedding) = encode_change(&index_spec, encoders.as_mut(), docs, Vec::new(), on)?;
    let manifest = write_index(dir, &index_spec, None, change)
        .with_context(|| format!("cannot write the index {}", dir.display()))?;
    Ok(summary(dir, &manifest, added, 0, embedding, started))
}

fn make_spec(
    analyzer: AnalyzerParams,
    passages: PassageParams,
    dense: Option<DenseRecord>,
    ann: Option<AnnPolicy>,
) -> IndexSpec {
    IndexSpec {
        analyzer,
        passages,
        dense,
        ann,
    }
}

fn summary(
    dir: &Path,
    m: &IndexManifest,
    added: usize,
    deleted: usize,
    embedding: Option<EmbedSummary>,
    started: Instant,
) -> IndexSummary {
    IndexSummary {
        index: dir.to_path_buf(),
        generation: m.generation,
        documents: m.documents,
        passages: m.passages,
        approximate: m.ann.is_some(),
        added,
        deleted,
        embedding,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Resolves the encoder of a new index and what the index records of it.
fn dense_record(d: &DenseSpec, cache: &CacheSpec) -> Result<(DenseRecord, Encoders)> {
    let files = d.encoder.resolve()?;
    let default_prefix = files.sentence.default_prefix.clone().unwrap_or_default();
    let recorded = RecordedEncoder {
        pooling: d.encoder.pooling,
        max_length: d.encoder.max_length,
        normalize: d.encoder.normalize,
        query_prefix: d
            .query_prefix
            .clone()
            .unwrap_or_else(|| default_prefix.clone()),
        passage_prefix: d.passage_prefix.clone().unwrap_or(default_prefix),
    };
    let record = DenseRecord {
        model: files.reference.clone(),
        weights_sha256: files.weights_sha256.clone(),
        dim: files.config.hidden_size,
        settings: serde_json::to_value(&recorded)?,
    };
    let encoders = recorded_encoders(&record, Side::Passages, cache)?;
    Ok((record, encoders))
}

/// Which texts an encoder is for: each side has its own prefix.
#[derive(Debug, Clone, Copy)]
enum Side {
    Queries,
    Passages,
}

impl RecordedEncoder {
    /// The settings `record` holds.
    fn of(record: &DenseRecord) -> Result<Self> {
        serde_json::from_value(record.settings.clone())
            .context("the index's encoder settings are damaged")
    }
}

/// The encoder an index recorded, with `side`'s prefix, checked against the recorded weights.
fn recorded_encoders(record: &DenseRecord, side: Side, cache: &CacheSpec) -> Result<Encoders> {
    let recorded = RecordedEncoder::of(record)?;
    let prefix = match side {
        Side::Queries => recorded.query_prefix,
        Side::Passages => recorded.passage_prefix,
    };
    let choice = EncoderChoice {
        model: Some(record.model.clone()),
        pooling: recorded.pooling,
        max_length: recorded.max_length,
        normalize: recorded.normalize,
        prefix: Some(prefix),
        ..EncoderChoice::default()
    };
    let encoders = Encoders::open(&choice, cache)?;
    if encoders.files().weights_sha256 != record.weights_sha256 {
        return Err(PipelineError::Invalid(format!(
            "the index was built with {} (weights sha256 {}), but that model now has weights {}: rebuild the index",
            record.model,
            record.weights_sha256,
            encoders.files().weights_sha256
        )));
    }
    Ok(encoders)
}

/// A change with the vectors of its added documents' passages.
fn encode_change(
    spec: &IndexSpec,
    encoders: Option<&mut Encoders>,
    add: Vec<Document>,
    delete: Vec<String>,
    on: &dyn Observer,
) -> Result<(Change, Option<EmbedSummary>)> {
    let mut change = Change {
        delete,
        add,
        vectors: Vec::new(),
    };
    let Some(encoders) = encoders else {
        return Ok((change, None));
    };
    let passages = change.passages_to_encode(spec);
    if passages.is_empty() {
        return Ok((change, None));
    }
    let (embeddings, summary) = encoders
        .embed(&passages, on)
        .context("cannot encode the passages")?;
    change.vectors = embeddings.into_vec();
    Ok((change, Some(summary)))
}

/// Adds the documents of `add` (a corpus file) to the index in `dir` and deletes the ids in
/// `delete`, as one new generation.
pub fn update_index(
    dir: &Path,
    add: Option<(&Path, Option<Format>, &CorpusColumns)>,
    delete: Vec<String>,
    cache: &CacheSpec,
    on: &dyn Observer,
) -> Result<IndexSummary> {
    let started = Instant::now();
    let base = open_index(dir)?;
    let spec = base.manifest().spec.clone();
    let docs = match add {
        Some((path, format, columns)) => read_corpus(path, format, columns)?,
        None => Vec::new(),
    };
    let mut encoders = match &spec.dense {
        Some(record) if !docs.is_empty() => Some(recorded_encoders(record, Side::Passages, cache)?),
        _ => None,
    };
    let (added, deleted) = (docs.len(), delete.len());
    let (change, embedding) = encode_change(&spec, encoders.as_mut(), docs, delete, on)?;
    let manifest = write_index(dir, &spec, Some(&base), change)
        .with_context(|| format!("cannot update the index {}", dir.display()))?;
    Ok(summary(dir, &manifest, added, deleted, embedding, started))
}

fn open_index(dir: &Path) -> Result<Index> {
    Index::open(dir).with_context(|| format!("cannot open the index {}", dir.display()))
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// 1 for the best.
    pub rank: usize,
    /// The document's id.
    pub id: String,
    /// Its score under the mode used.
    pub score: f32,
    /// Its title.
    pub title: String,
    /// Its position in [`Index::documents`].
    #[serde(skip)]
    pub doc: usize,
}

/// The search modes by name, as the CLI, the server and Python call them.
pub const MODE_NAMES: [&str; 5] = ["bm25", "dense", "hybrid", "weighted", "learned"];

/// The mode called `name` (one of [`MODE_NAMES`]): `hybrid` is reciprocal-rank fusion with
/// constant `rrf_k`, `weighted` gives `dense_weight` (0..=1) to the dense side.
pub fn mode_named(name: &str, rrf_k: f32, dense_weight: f32) -> Result<SearchMode> {
    if !(0.0..=1.0).contains(&dense_weight) || rrf_k.is_nan() || rrf_k <= 0.0 {
        return Err(PipelineError::Invalid(format!(
            "the dense weight must be within 0..=1 (found {dense_weight}) and the RRF constant \
             positive (found {rrf_k})"
        )));
    }
    Ok(match name {
        "bm25" => SearchMode::Bm25,
        "dense" => SearchMode::Dense,
        "hybrid" => SearchMode::Rrf { k: rrf_k },
        "weighted" => SearchMode::Weighted { dense_weight },
        "learned" => SearchMode::Learned,
        other => {
            return Err(PipelineError::Invalid(format!(
                "unknown search mode {other:?}: one of {}",
                MODE_NAMES.join(", ")
            )))
        }
    })
}

/// A cross-encoder that rescores the best documents of a search (any mode) and re-sorts them.
pub struct Reranker {
    model: CrossEncoder,
    depth: usize,
}

impl Reranker {
    /// Loads the cross-encoder `model` (a folder or a Hugging Face id such as
    /// `cross-encoder/ms-marco-MiniLM-L6-v2`); each search rescores its best
    /// `max(depth, k)` documents.
    pub fn open(model: &str, depth: usize) -> Result<Self> {
        if depth == 0 {
            return Err(PipelineError::Invalid(
                "the rerank depth must be at least 1".into(),
            ));
        }
        let files = EncoderChoice::named(model).resolve()?;
        let model = CrossEncoder::load(&files, None)
            .with_context(|| format!("cannot load the cross-encoder {model}"))?;
        Ok(Reranker { model, depth })
    }

    /// The model as the user named it.
    pub fn reference(&self) -> &str {
        self.model.reference()
    }

    /// The cross-encoder's logit of each (query, text) pair.
    pub fn score(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>> {
        self.model.score(pairs).context("the cross-encoder failed")
    }

    /// Documents to fetch before reranking for `k` results.
    fn fetch(&self, k: usize) -> usize {
        self.depth.max(k)
    }

    /// `found` rescored by the cross-encoder (each document read as its title and text, as
    /// BEIR's cross-encoder runs do), best first; ties keep document order.
    fn rerank(
        &self,
        index: &Index,
        query: &str,
        found: &[(usize, f32)],
    ) -> Result<Vec<(usize, f32)>> {
        let docs = index.documents();
        let texts: Vec<String> = found
            .iter()
            .map(|&(d, _)| match docs[d].title.is_empty() {
                true => docs[d].text.clone(),
                false => format!("{} {}", docs[d].title, docs[d].text),
            })
            .collect();
        let pairs: Vec<(&str, &str)> = texts.iter().map(|t| (query, t.as_str())).collect();
        let scores = self.score(&pairs)?;
        let mut out: Vec<(usize, f32)> = found.iter().map(|f| f.0).zip(scores).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(out)
    }
}

/// An open index with the encoder for its queries (loaded on the first query that needs it).
pub struct Searcher {
    dir: PathBuf,
    index: Index,
    cache: CacheSpec,
    encoders: Option<Encoders>,
    ranker: Option<Ranker>,
    reranker: Option<Reranker>,
}

impl Searcher {
    /// Opens the index in `dir`; queries are encoded through `cache`.
    pub fn open(dir: &Path, cache: &CacheSpec) -> Result<Self> {
        Ok(Searcher {
            dir: dir.to_path_buf(),
            index: open_index(dir)?,
            cache: cache.clone(),
            encoders: None,
            ranker: None,
            reranker: None,
        })
    }

    /// Reranks every search's best documents with `reranker` from now on (`None`: stop).
    pub fn set_reranker(&mut self, reranker: Option<Reranker>) {
        self.reranker = reranker;
    }

    /// The cross-encoder searches are reranked with, when there is one.
    pub fn reranker(&self) -> Option<&Reranker> {
        self.reranker.as_ref()
    }

    /// The index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Refuses modes the index cannot answer (dense without vectors, learned without a
    /// ranker), loading the ranker when the mode needs it.
    pub fn check_mode(&mut self, mode: SearchMode) -> Result<()> {
        if mode.needs_vector() && self.index.manifest().spec.dense.is_none() {
            return Err(PipelineError::Invalid(format!(
                "{}: this index has no vectors (built without an encoder); use --mode bm25",
                self.dir.display()
            )));
        }
        if mode == SearchMode::Learned && self.ranker.is_none() {
            let dir = self.dir.join(RANKER_DIR);
            if !dir.join(lmfuse_bundle::MANIFEST).is_file() {
                return Err(PipelineError::Invalid(format!(
                    "{}: this index has no learned ranker; train one with `lmfuse search train-ranker`",
                    self.dir.display()
                )));
            }
            self.ranker = Some(Ranker::load(&dir)?);
        }
        Ok(())
    }

    /// The `k` best documents for one query in `mode` (checked by [`Searcher::check_mode`]),
    /// reranked by the cross-encoder when there is one.
    fn rank(
        &self,
        query: &str,
        vector: Option<&[f32]>,
        mode: SearchMode,
        k: usize,
    ) -> Result<Vec<(usize, f32)>> {
        let fetch = self.reranker.as_ref().map_or(k, |r| r.fetch(k));
        let found = match (mode, &self.ranker, vector) {
            (SearchMode::Learned, Some(ranker), Some(v)) => {
                ranker.rank(&self.index, query, v, fetch)?
            }
            _ => self.index.search(query, vector, mode, fetch)?,
        };
        let Some(reranker) = &self.reranker else {
            return Ok(found);
        };
        let mut reranked = reranker.rerank(&self.index, query, &found)?;
        reranked.truncate(k);
        Ok(reranked)
    }

    /// The vectors of `queries` (checked), when `mode` needs them.
    pub fn query_vectors(
        &mut self,
        queries: &[String],
        mode: SearchMode,
        on: &dyn Observer,
    ) -> Result<Option<Vec<Vec<f32>>>> {
        check_queries(queries)?;
        self.check_mode(mode)?;
        let Some(record) = self
            .index
            .manifest()
            .spec
            .dense
            .clone()
            .filter(|_| mode.needs_vector())
        else {
            return Ok(None);
        };
        if self.encoders.is_none() {
            self.encoders = Some(recorded_encoders(&record, Side::Queries, &self.cache)?);
        }
        let encoders = self.encoders.as_mut().expect("set above");
        let (embeddings, _) = encoders
            .embed(queries, on)
            .context("cannot encode the queries")?;
        Ok(Some(
            embeddings
                .as_slice()
                .chunks_exact(record.dim)
                .map(<[f32]>::to_vec)
                .collect(),
        ))
    }

    /// The `k` best documents for one query in `mode` (checked by [`Searcher::check_mode`]),
    /// whose vector `vector` the caller encoded (`None` for BM25).
    pub fn search_encoded(
        &self,
        query: &str,
        vector: Option<&[f32]>,
        mode: SearchMode,
        k: usize,
    ) -> Result<Vec<Hit>> {
        if mode.needs_vector() && vector.is_none() {
            return Err(PipelineError::Invalid(format!(
                "{mode:?} search needs the query's vector"
            )));
        }
        Ok(self.hits(&self.rank(query, vector, mode, k)?))
    }

    /// The encoder the index records, with the prefix of its queries, loaded once for a
    /// caller that keeps it (a server), and the prefix of its passages; `None` without
    /// vectors. Passages are tokenized with their prefix by the same model
    /// ([`SentenceEncoder::tokenize_unprefixed`] after the prefix): one copy of the weights.
    pub fn recorded_model(&self) -> Result<Option<(SentenceEncoder, String)>> {
        let Some(record) = &self.index.manifest().spec.dense else {
            return Ok(None);
        };
        let passage_prefix = RecordedEncoder::of(record)?.passage_prefix;
        let mut encoders = recorded_encoders(record, Side::Queries, &CacheSpec::disabled())?;
        Ok(Some((encoders.take_model()?, passage_prefix)))
    }

    /// The `k` best documents for each query.
    pub fn search(
        &mut self,
        queries: &[String],
        mode: SearchMode,
        k: usize,
        on: &dyn Observer,
    ) -> Result<Vec<Vec<Hit>>> {
        let vectors = self.query_vectors(queries, mode, on)?;
        queries
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let v = vectors.as_ref().map(|v| v[i].as_slice());
                Ok(self.hits(&self.rank(q, v, mode, k)?))
            })
            .collect()
    }

    fn hits(&self, found: &[(usize, f32)]) -> Vec<Hit> {
        let docs = self.index.documents();
        found
            .iter()
            .enumerate()
            .map(|(r, &(d, score))| Hit {
                rank: r + 1,
                id: docs[d].id.clone(),
                score,
                title: docs[d].title.clone(),
                doc: d,
            })
            .collect()
    }
}

/// Refuses empty queries and queries over [`MAX_QUERY_CHARS`], naming the query.
pub fn check_queries(queries: &[String]) -> Result<()> {
    for (i, q) in queries.iter().enumerate() {
        let chars = q.chars().count();
        let reason = if q.trim().is_empty() {
            "is empty".to_string()
        } else if chars > MAX_QUERY_CHARS {
            format!("has {chars} characters, over the limit of {MAX_QUERY_CHARS}")
        } else {
            continue;
        };
        return Err(PipelineError::Invalid(format!("query {} {reason}", i + 1)));
    }
    Ok(())
}

/// What `search eval` scores.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchEvalSpec {
    /// Queries file (id and text).
    pub queries: PathBuf,
    /// Judgements (BEIR TSV or TREC).
    pub qrels: PathBuf,
    /// The modes to compare.
    pub modes: Vec<SearchMode>,
    /// Documents retrieved per query (MAP's depth).
    pub depth: usize,
    /// nDCG's and MRR's cut.
    pub cut: usize,
    /// Recall's depth.
    pub recall_depth: usize,
}

/// One mode's scores and speed.
#[derive(Debug, Clone, Serialize)]
pub struct ModeScores {
    /// The mode.
    pub mode: SearchMode,
    /// Ranking scores.
    pub scores: RankingReport,
    /// Median time of one query's search, milliseconds (its encoding excluded).
    pub p50_ms: f64,
    /// 95th percentile of the same.
    pub p95_ms: f64,
}

/// `search eval`'s report.
#[derive(Debug, Clone, Serialize)]
pub struct SearchEvalReport {
    /// The index.
    pub index: PathBuf,
    /// Judged queries searched.
    pub queries: usize,
    /// Mean time to encode one query, milliseconds (batched, cache bypassed); `None` without
    /// vectors.
    pub encode_ms_per_query: Option<f64>,
    /// The cross-encoder every mode's results were reranked with (its time is in the
    /// modes' times), when there was one.
    pub reranker: Option<String>,
    /// One row per mode.
    pub modes: Vec<ModeScores>,
}

/// Searches every judged query in every mode and scores the rankings.
pub fn evaluate(
    searcher: &mut Searcher,
    spec: &SearchEvalSpec,
    on: &dyn Observer,
) -> Result<SearchEvalReport> {
    let (ids, texts, qrels) = judged_queries(searcher, &spec.queries, &spec.qrels)?;
    let needs_vectors = spec.modes.iter().any(SearchMode::needs_vector);
    for &m in &spec.modes {
        searcher.check_mode(m)?;
    }
    // Queries are encoded past the cache, so the time below is the encoder's own.
    if searcher.encoders.is_none() {
        searcher.cache.disabled = true;
    }
    let started = Instant::now();
    let vectors = if needs_vectors {
        searcher.query_vectors(&texts, SearchMode::Dense, on)?
    } else {
        check_queries(&texts)?;
        None
    };
    let encode_ms = vectors
        .as_ref()
        .map(|_| started.elapsed().as_secs_f64() * 1e3 / texts.len() as f64);
    let mut modes = Vec::new();
    for &mode in &spec.modes {
        let mut run = Run::new();
        let mut times = Vec::with_capacity(texts.len());
        for (i, q) in texts.iter().enumerate() {
            let v = vectors
                .as_ref()
                .filter(|_| mode.needs_vector())
                .map(|v| v[i].as_slice());
            let t = Instant::now();
            let found = searcher.rank(q, v, mode, spec.depth)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            let docs = searcher.index.documents();
            run.insert(
                ids[i].clone(),
                found
                    .iter()
                    .map(|&(d, s)| (docs[d].id.clone(), f64::from(s)))
                    .collect(),
            );
        }
        let (scores, _) = evaluate_run(&qrels, &run, spec.cut, spec.recall_depth);
        modes.push(ModeScores {
            mode,
            scores,
            p50_ms: percentile(&mut times, 0.5),
            p95_ms: percentile(&mut times, 0.95),
        });
    }
    Ok(SearchEvalReport {
        index: searcher.dir.clone(),
        queries: texts.len(),
        encode_ms_per_query: encode_ms,
        reranker: searcher.reranker().map(|r| r.reference().to_string()),
        modes,
    })
}

/// The judged queries (ids and texts, in the judgements' order) and the judgements, every id
/// checked against the queries file and the index.
fn judged_queries(
    searcher: &Searcher,
    queries: &Path,
    qrels: &Path,
) -> Result<(Vec<String>, Vec<String>, Judgements)> {
    let queries = read_queries(queries, None, None, "text")?;
    let query_ids: HashSet<&str> = queries.iter().map(|q| q.id.as_str()).collect();
    let doc_ids: HashSet<&str> = searcher
        .index
        .documents()
        .iter()
        .map(|d| d.id.as_str())
        .collect();
    let qrels = read_qrels(qrels, Some(&query_ids), Some(&doc_ids))?;
    let (mut ids, mut texts) = (Vec::new(), Vec::new());
    for q in &queries {
        if qrels.contains_key(&q.id) {
            ids.push(q.id.clone());
            texts.push(q.text.clone());
        }
    }
    Ok((ids, texts, qrels))
}

/// The `p` quantile (nearest rank) of `values`.
fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Trains a learned ranker on the judged queries of `spec` and saves it in the index folder
/// (`ranker/`, replacing any), where `--mode learned` finds it.
pub fn train_index_ranker(
    searcher: &mut Searcher,
    spec: &RankerSpec,
    on: &dyn Observer,
) -> Result<RankerReport> {
    let (ids, texts, qrels) = judged_queries(searcher, &spec.queries, &spec.qrels)?;
    let vectors = searcher
        .query_vectors(&texts, SearchMode::Dense, on)?
        .expect("dense mode has vectors");
    let ranker = train_ranker(&searcher.index, &ids, &texts, &vectors, &qrels, spec, on)?;
    ranker.save(&searcher.dir.join(RANKER_DIR))?;
    let report = ranker.report().clone();
    searcher.ranker = Some(ranker);
    Ok(report)
}
