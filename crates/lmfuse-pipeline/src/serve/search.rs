//! A search index ([`IndexBackend`]) or an answer engine ([`FaqBackend`]) behind
//! `lmfuse-server`'s [`Backend`]: `/search` or `/answer`, and the recorded encoder for
//! `/embed`, `/similarity` and `/rerank` (the cosine of the query's and each text's
//! embeddings, encoded with the index's query and passage prefixes).

use crate::encoders::CacheSpec;
use crate::error::{Context, PipelineError, Result};
use crate::faq::{Faq, FaqMode, FaqSessions};
use crate::retrieval::{mode_named, Reranker, Searcher};
use crate::serve::ServeOptions;
use lmfuse_core::TextEncoder;
use lmfuse_encoder::SentenceEncoder;
use lmfuse_retrieval::{fusion, SearchMode};
use lmfuse_server::{
    cosine, AnswerQuery, Backend, BackendError, Prediction, RerankScores, SearchHit, SearchQuery,
    ServedTask, TokenCount,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

fn failed(e: PipelineError) -> BackendError {
    BackendError::Inference(e.chain_message())
}

/// The encoder of an index, which prefixes queries itself, and the prefix of its passages.
struct SidesEncoder {
    queries: SentenceEncoder,
    passage_prefix: String,
}

impl SidesEncoder {
    /// The encoder `searcher`'s index records; `None` when it has no vectors.
    fn load(searcher: &Searcher) -> Result<Option<Self>> {
        Ok(searcher
            .recorded_model()?
            .map(|(queries, passage_prefix)| SidesEncoder {
                queries,
                passage_prefix,
            }))
    }

    /// Embeddings of `texts` as the index's passages.
    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BackendError> {
        let prefixed: Vec<String> = texts
            .iter()
            .map(|t| format!("{}{t}", self.passage_prefix))
            .collect();
        let prefixed: Vec<&str> = prefixed.iter().map(String::as_str).collect();
        let tokenized = self
            .queries
            .tokenize_unprefixed(&prefixed)
            .map_err(|e| BackendError::Inference(e.to_string()))?;
        let embeddings = self.queries.encode_tokenized(&tokenized);
        Ok((0..texts.len())
            .map(|i| embeddings.row(i).to_vec())
            .collect())
    }

    fn count(&self, texts: &[&str]) -> Result<Vec<TokenCount>, BackendError> {
        let tokenized = self
            .queries
            .tokenize_for_embedding(texts)
            .map_err(|e| BackendError::Inference(e.to_string()))?;
        Ok(super::counts_of(&tokenized))
    }

    fn embed(encoder: &SentenceEncoder, texts: &[&str]) -> Result<Vec<Vec<f32>>, BackendError> {
        let encoded = encoder
            .encode(texts)
            .map_err(|e| BackendError::Inference(e.to_string()))?;
        Ok((0..texts.len())
            .map(|i| encoded.embeddings.row(i).to_vec())
            .collect())
    }

    /// The cosine of each pair's query (encoded as a query, once per distinct query) and text
    /// (encoded as a passage).
    fn rerank(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>, BackendError> {
        let mut distinct: Vec<&str> = Vec::new();
        let mut slot: HashMap<&str, usize> = HashMap::new();
        for (q, _) in pairs {
            slot.entry(q).or_insert_with(|| {
                distinct.push(q);
                distinct.len() - 1
            });
        }
        let queries = Self::embed(&self.queries, &distinct)?;
        let texts: Vec<&str> = pairs.iter().map(|p| p.1).collect();
        let passages = self.embed_passages(&texts)?;
        Ok(pairs
            .iter()
            .zip(&passages)
            .map(|((q, _), v)| cosine(&queries[slot[q]], v))
            .collect())
    }
}

/// What a served index or engine without vectors answers to `/embed`, `/rerank`, ...
fn no_vectors(dir: &Path) -> BackendError {
    BackendError::Unsupported(format!(
        "{} has no vectors (built without an encoder): it answers /search in bm25 mode only",
        dir.display()
    ))
}

/// Token counts: the encoder's, or words (a BM25-only index cuts nothing).
fn count_with(
    encoder: Option<&SidesEncoder>,
    texts: &[&str],
) -> Result<Vec<TokenCount>, BackendError> {
    match encoder {
        Some(e) => e.count(texts),
        None => Ok(super::word_counts(texts)),
    }
}

fn folder_name(dir: &Path) -> String {
    dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A query's mode and, when the mode needs one, its vector.
type ModeAndVector = (SearchMode, Option<Vec<f32>>);

/// A search index, loaded once, answering `/search` (and its encoder's routes).
pub struct IndexBackend {
    dir: PathBuf,
    /// Behind a lock only because its (unused, disabled) embedding cache is not `Sync`.
    searcher: Mutex<Searcher>,
    encoder: Option<SidesEncoder>,
    /// The modes by name, the default first.
    modes: Vec<(&'static str, SearchMode)>,
    /// Logits with a cross-encoder, else cosines.
    rerank_scores: RerankScores,
    info: serde_json::Value,
}

impl IndexBackend {
    /// Opens the index in `dir`, its learned ranker when it has one, its encoder, and the
    /// cross-encoder of `options` when it names one.
    pub fn load(dir: &Path, options: &ServeOptions) -> Result<Self> {
        let mut searcher = Searcher::open(dir, &CacheSpec::disabled())?;
        if let Some(model) = &options.reranker {
            searcher.set_reranker(Some(Reranker::open(model, options.rerank_depth)?));
        }
        let dense = searcher.index().manifest().spec.dense.is_some();
        // The default first: hybrid where there are vectors, as `lmfuse search` does.
        let names: &[&'static str] = match dense {
            true => &["hybrid", "dense", "weighted", "bm25", "learned"],
            false => &["bm25"],
        };
        let mut modes = Vec::new();
        for &name in names {
            let mode = mode_named(name, fusion::RRF_K, 0.5)?;
            if mode == SearchMode::Learned && searcher.check_mode(mode).is_err() {
                continue;
            }
            modes.push((name, mode));
        }
        let encoder = SidesEncoder::load(&searcher)
            .with_context(|| format!("cannot load the encoder of the index {}", dir.display()))?;
        let mut info = serde_json::to_value(searcher.index().manifest())?;
        if let serde_json::Value::Object(m) = &mut info {
            m.insert("index_dir".into(), dir.display().to_string().into());
            m.insert("task".into(), "search".into());
            let names: Vec<&str> = modes.iter().map(|m| m.0).collect();
            m.insert("modes".into(), names.into());
            let reranker = searcher.reranker().map(|r| r.reference().to_string());
            m.insert("reranker".into(), reranker.into());
        }
        let rerank_scores = match searcher.reranker() {
            Some(_) => RerankScores::Logits,
            None => RerankScores::Cosine,
        };
        Ok(IndexBackend {
            rerank_scores,
            dir: dir.to_path_buf(),
            searcher: Mutex::new(searcher),
            encoder,
            modes,
            info,
        })
    }

    fn mode(&self, name: Option<&str>) -> Result<SearchMode, BackendError> {
        match name {
            None => Ok(self.modes[0].1),
            Some(n) => self
                .modes
                .iter()
                .find(|m| m.0 == n)
                .map(|m| m.1)
                .ok_or_else(|| BackendError::Unsupported(format!("unknown mode {n:?}"))),
        }
    }

    /// Each query's mode, and its vector when the mode needs one.
    fn encoded(&self, queries: &[SearchQuery]) -> Result<Vec<ModeAndVector>, BackendError> {
        let modes = queries
            .iter()
            .map(|q| self.mode(q.mode.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        let wanted: Vec<&str> = queries
            .iter()
            .zip(&modes)
            .filter(|(_, m)| m.needs_vector())
            .map(|(q, _)| q.text.as_str())
            .collect();
        let mut encoded = match wanted.is_empty() {
            true => Vec::new().into_iter(),
            false => {
                let encoder = self.encoder.as_ref().ok_or_else(|| no_vectors(&self.dir))?;
                SidesEncoder::embed(&encoder.queries, &wanted)?.into_iter()
            }
        };
        Ok(modes
            .into_iter()
            .map(|m| (m, m.needs_vector().then(|| encoded.next()).flatten()))
            .collect())
    }
}

impl Backend for IndexBackend {
    fn count_tokens(&self, texts: &[&str]) -> Result<Vec<TokenCount>, BackendError> {
        count_with(self.encoder.as_ref(), texts)
    }

    fn predict(&self, _: &[&str]) -> Result<Vec<Prediction>, BackendError> {
        Err(BackendError::Unsupported(
            "the served model is a search index: it has no class labels; POST /search".into(),
        ))
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BackendError> {
        let encoder = self.encoder.as_ref().ok_or_else(|| no_vectors(&self.dir))?;
        SidesEncoder::embed(&encoder.queries, texts)
    }

    fn info(&self) -> serde_json::Value {
        self.info.clone()
    }

    fn model_name(&self) -> String {
        match &self.encoder {
            Some(e) => e.queries.reference().to_string(),
            None => folder_name(&self.dir),
        }
    }

    fn task(&self) -> ServedTask {
        ServedTask::Search
    }

    fn modes(&self) -> Vec<String> {
        self.modes.iter().map(|m| m.0.to_string()).collect()
    }

    fn search(&self, queries: &[SearchQuery]) -> Result<Vec<Vec<SearchHit>>, BackendError> {
        let encoded = self.encoded(queries)?;
        let searcher = self.searcher.lock().unwrap_or_else(|p| p.into_inner());
        let docs = searcher.index().documents();
        queries
            .iter()
            .zip(encoded)
            .map(|(q, (mode, v))| {
                let hits = searcher
                    .search_encoded(&q.text, v.as_deref(), mode, q.k)
                    .map_err(failed)?;
                Ok(hits
                    .into_iter()
                    .map(|h| SearchHit {
                        rank: h.rank,
                        text: q.return_text.then(|| docs[h.doc].text.clone()),
                        id: h.id,
                        score: h.score,
                        title: h.title,
                    })
                    .collect())
            })
            .collect()
    }

    fn rerank(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>, BackendError> {
        let searcher = self.searcher.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reranker) = searcher.reranker() {
            return reranker.score(pairs).map_err(failed);
        }
        let encoder = self.encoder.as_ref().ok_or_else(|| no_vectors(&self.dir))?;
        encoder.rerank(pairs)
    }

    fn rerank_scores(&self) -> RerankScores {
        self.rerank_scores
    }
}

/// An answer engine, loaded once, answering `/answer` with the sessions' last turns (and its
/// encoder's routes).
pub struct FaqBackend {
    /// Behind a lock only because its (unused, disabled) embedding cache is not `Sync`.
    faq: Mutex<Faq>,
    sessions: Mutex<FaqSessions>,
    encoder: SidesEncoder,
    info: serde_json::Value,
}

impl FaqBackend {
    /// Opens the answer engine in `dir` and its encoder.
    pub fn load(dir: &Path) -> Result<Self> {
        let faq = Faq::open(dir, &CacheSpec::disabled())?;
        let encoder = SidesEncoder::load(&faq.answers)
            .with_context(|| format!("cannot load the encoder of {}", dir.display()))?
            .ok_or_else(|| {
                PipelineError::Invalid(format!("{}: the engine has no vectors", dir.display()))
            })?;
        let info = serde_json::json!({
            "faq_dir": dir.display().to_string(),
            "task": "answer",
            "modes": FaqMode::ALL,
            "entries": faq.entries().len(),
            "categories": faq.categories(),
        });
        Ok(FaqBackend {
            faq: Mutex::new(faq),
            sessions: Mutex::new(FaqSessions::default()),
            encoder,
            info,
        })
    }

    fn answer_one(&self, q: &AnswerQuery) -> Result<serde_json::Value, BackendError> {
        let mode = match q.mode.as_deref() {
            None => FaqMode::Fused,
            Some(m) => serde_json::from_value(m.into())
                .map_err(|_| BackendError::Unsupported(format!("unknown mode {m:?}")))?,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let context = q
            .session
            .as_deref()
            .map(|s| sessions.context(s))
            .unwrap_or_default();
        let readings = Faq::readings(&q.question, &context);
        let refs: Vec<&str> = readings.iter().map(String::as_str).collect();
        let vectors = SidesEncoder::embed(&self.encoder.queries, &refs)?;
        let reply = self
            .faq
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .answer_encoded(&q.question, &context, &vectors, mode, q.k)
            .map_err(failed)?;
        if let Some(s) = &q.session {
            sessions.record(s, &q.question, &reply);
        }
        let mut value =
            serde_json::to_value(&reply).map_err(|e| BackendError::Inference(e.to_string()))?;
        if let (Some(s), serde_json::Value::Object(m)) = (&q.session, &mut value) {
            m.insert("session".into(), s.clone().into());
        }
        Ok(value)
    }
}

impl Backend for FaqBackend {
    fn count_tokens(&self, texts: &[&str]) -> Result<Vec<TokenCount>, BackendError> {
        self.encoder.count(texts)
    }

    fn predict(&self, _: &[&str]) -> Result<Vec<Prediction>, BackendError> {
        Err(BackendError::Unsupported(
            "the served model is an answer engine: POST /answer".into(),
        ))
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BackendError> {
        SidesEncoder::embed(&self.encoder.queries, texts)
    }

    fn info(&self) -> serde_json::Value {
        self.info.clone()
    }

    fn model_name(&self) -> String {
        self.encoder.queries.reference().to_string()
    }

    fn task(&self) -> ServedTask {
        ServedTask::Answer
    }

    fn modes(&self) -> Vec<String> {
        FaqMode::ALL
            .iter()
            .filter_map(|m| serde_json::to_value(m).ok()?.as_str().map(String::from))
            .collect()
    }

    /// Questions in order: a session's second question in one batch reads the first.
    fn answer(&self, questions: &[AnswerQuery]) -> Result<Vec<serde_json::Value>, BackendError> {
        questions.iter().map(|q| self.answer_one(q)).collect()
    }

    fn rerank(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>, BackendError> {
        self.encoder.rerank(pairs)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_server_refuses_queries_the_pipeline_would_refuse() {
        assert_eq!(
            crate::retrieval::MAX_QUERY_CHARS,
            lmfuse_server::MAX_QUERY_CHARS
        );
    }
}
