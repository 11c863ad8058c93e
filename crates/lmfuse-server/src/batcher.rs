//! Dynamic batching: requests wait in a bounded queue; one worker thread, off the async
//! runtime, merges consecutive requests of the same kind up to a token budget and runs them
//! through the model as one batch.

use crate::backend::{
    AnswerQuery, Backend, BackendError, Prediction, SearchHit, SearchQuery, TokenEntity,
};
use crate::error::ApiError;
use crate::metrics::Metrics;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// What a job asks of the model; jobs of one kind merge into a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobKind {
    Predict,
    Embed,
    EmbedIds,
    Tag,
    Search,
    Answer,
    Rerank,
}

/// A job's inputs: texts, or token ids (only to embed).
#[derive(Debug)]
pub(crate) enum Work {
    Predict(Vec<String>),
    Embed(Vec<String>),
    EmbedIds(Vec<Vec<u32>>),
    /// Texts whose entities to find.
    Tag(Vec<String>),
    /// Queries to an index.
    Search(Vec<SearchQuery>),
    /// Questions to an answer engine.
    Answer(Vec<AnswerQuery>),
    /// Texts to score against one query.
    Rerank {
        query: String,
        texts: Vec<String>,
    },
}

impl Work {
    pub fn kind(&self) -> JobKind {
        match self {
            Work::Predict(_) => JobKind::Predict,
            Work::Embed(_) => JobKind::Embed,
            Work::EmbedIds(_) => JobKind::EmbedIds,
            Work::Tag(_) => JobKind::Tag,
            Work::Search(_) => JobKind::Search,
            Work::Answer(_) => JobKind::Answer,
            Work::Rerank { .. } => JobKind::Rerank,
        }
    }

    fn len(&self) -> usize {
        match self {
            Work::Predict(t) | Work::Embed(t) | Work::Tag(t) => t.len(),
            Work::EmbedIds(ids) => ids.len(),
            Work::Search(q) => q.len(),
            Work::Answer(q) => q.len(),
            Work::Rerank { texts, .. } => texts.len(),
        }
    }

    /// The texts of a job that holds plain texts (none for the others).
    fn texts(&self) -> &[String] {
        match self {
            Work::Predict(t) | Work::Embed(t) | Work::Tag(t) => t,
            _ => &[],
        }
    }
}

/// What the model returned for one job.
#[derive(Debug)]
pub(crate) enum JobOutput {
    Predictions(Vec<Prediction>),
    Embeddings(Vec<Vec<f32>>),
    /// Each text's entities.
    Entities(Vec<Vec<TokenEntity>>),
    /// Each query's documents.
    Hits(Vec<Vec<SearchHit>>),
    /// Each question's reply.
    Answers(Vec<serde_json::Value>),
    /// Each text's relevance to its query.
    Scores(Vec<f32>),
}

/// One request's inputs, waiting for the model.
pub(crate) struct Job {
    pub work: Work,
    pub tokens: usize,
    pub admitted: Instant,
    pub reply: oneshot::Sender<Result<JobOutput, ApiError>>,
}

/// The serving backend, swapped atomically by a reload: a batch clones the `Arc` when it
/// starts, so batches in flight finish on the model they started with.
#[derive(Default)]
pub(crate) struct BackendSlot(RwLock<Option<Arc<dyn Backend>>>);

impl BackendSlot {
    pub fn get(&self) -> Option<Arc<dyn Backend>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, backend: Arc<dyn Backend>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(backend);
    }
}

/// Starts the worker thread; it stops when every sender of `rx` is gone and the queue is empty.
pub(crate) fn spawn_worker(
    mut rx: mpsc::UnboundedReceiver<Job>,
    slot: Arc<BackendSlot>,
    metrics: Arc<Metrics>,
    max_batch_tokens: usize,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("lmfuse-batcher".into())
        .spawn(move || {
            let mut pending: Option<Job> = None;
            loop {
                let first = match pending.take() {
                    Some(job) => job,
                    None => match rx.blocking_recv() {
                        Some(job) => {
                            metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                            job
                        }
                        None => break,
                    },
                };
                if first.reply.is_closed() {
                    metrics.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let kind = first.work.kind();
                let mut tokens = first.tokens;
                let mut batch = vec![first];
                while tokens < max_batch_tokens {
                    let Ok(job) = rx.try_recv() else { break };
                    metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                    if job.reply.is_closed() {
                        metrics.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if job.work.kind() != kind || tokens + job.tokens > max_batch_tokens {
                        pending = Some(job);
                        break;
                    }
                    tokens += job.tokens;
                    batch.push(job);
                }
                run_batch(batch, tokens, &slot, &metrics);
            }
        })
}

/// Runs the merged inputs of `batch` (jobs of one kind) through the model.
fn run(backend: &dyn Backend, batch: &[Job]) -> Result<JobOutput, BackendError> {
    let texts = || -> Vec<&str> {
        batch
            .iter()
            .flat_map(|j| j.work.texts())
            .map(String::as_str)
            .collect()
    };
    match batch[0].work.kind() {
        JobKind::Predict => backend.predict(&texts()).map(JobOutput::Predictions),
        JobKind::Embed => backend.embed(&texts()).map(JobOutput::Embeddings),
        JobKind::Tag => backend.tag(&texts()).map(JobOutput::Entities),
        JobKind::EmbedIds => {
            let ids: Vec<&[u32]> = batch
                .iter()
                .flat_map(|j| match &j.work {
                    Work::EmbedIds(ids) => ids.as_slice(),
                    _ => &[],
                })
                .map(Vec::as_slice)
                .collect();
            backend.embed_token_ids(&ids).map(JobOutput::Embeddings)
        }
        JobKind::Search => {
            let queries: Vec<SearchQuery> = batch
                .iter()
                .flat_map(|j| match &j.work {
                    Work::Search(q) => q.clone(),
                    _ => Vec::new(),
                })
                .collect();
            backend.search(&queries).map(JobOutput::Hits)
        }
        JobKind::Answer => {
            let questions: Vec<AnswerQuery> = batch
                .iter()
                .flat_map(|j| match &j.work {
                    Work::Answer(q) => q.clone(),
                    _ => Vec::new(),
                })
                .collect();
            backend.answer(&questions).map(JobOutput::Answers)
        }
        JobKind::Rerank => {
            let pairs: Vec<(&str, &str)> = batch
                .iter()
                .flat_map(|j| match &j.work {
                    Work::Rerank { query, texts } => {
                        texts.iter().map(|t| (query.as_str(), t.as_str())).collect()
                    }
                    _ => Vec::new(),
                })
                .collect();
            backend.rerank(&pairs).map(JobOutput::Scores)
        }
    }
}

fn run_batch(batch: Vec<Job>, tokens: usize, slot: &BackendSlot, metrics: &Metrics) {
    let started = Instant::now();
    for job in &batch {
        metrics
            .queue_seconds
            .observe(started.duration_since(job.admitted).as_secs_f64());
    }
    let Some(backend) = slot.get() else {
        for job in batch {
            let _ = job.reply.send(Err(ApiError::NotReady(
                "the model is not loaded yet".into(),
            )));
        }
        return;
    };
    let n: usize = batch.iter().map(|j| j.work.len()).sum();
    // A panic in the model fails this batch, not the server.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(backend.as_ref(), &batch)
    }));
    metrics
        .inference_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.batch_size.observe(n as f64);
    metrics.batch_tokens.observe(tokens as f64);
    metrics.texts.fetch_add(n as u64, Ordering::Relaxed);
    let failure = match result {
        Ok(Ok(out)) if out.len() == n => {
            let sizes: Vec<usize> = batch.iter().map(|j| j.work.len()).collect();
            for (job, part) in batch.into_iter().zip(out.split(&sizes)) {
                let _ = job.reply.send(Ok(part));
            }
            return;
        }
        Ok(Ok(out)) => ApiError::Backend(format!(
            "the model returned {} results for {n} inputs",
            out.len()
        )),
        Ok(Err(e)) => ApiError::from(e),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            ApiError::Backend(format!("the model panicked: {msg}"))
        }
    };
    for job in batch {
        let _ = job.reply.send(Err(failure.clone()));
    }
}

impl JobOutput {
    fn len(&self) -> usize {
        match self {
            JobOutput::Predictions(p) => p.len(),
            JobOutput::Embeddings(e) => e.len(),
            JobOutput::Entities(e) => e.len(),
            JobOutput::Hits(h) => h.len(),
            JobOutput::Answers(a) => a.len(),
            JobOutput::Scores(s) => s.len(),
        }
    }

    /// Cuts the merged output into consecutive parts of `sizes`.
    fn split(self, sizes: &[usize]) -> Vec<JobOutput> {
        fn cut<T>(v: Vec<T>, sizes: &[usize], wrap: fn(Vec<T>) -> JobOutput) -> Vec<JobOutput> {
            let mut it = v.into_iter();
            sizes
                .iter()
                .map(|&k| wrap(it.by_ref().take(k).collect()))
                .collect()
        }
        match self {
            JobOutput::Predictions(p) => cut(p, sizes, JobOutput::Predictions),
            JobOutput::Embeddings(e) => cut(e, sizes, JobOutput::Embeddings),
            JobOutput::Entities(e) => cut(e, sizes, JobOutput::Entities),
            JobOutput::Hits(h) => cut(h, sizes, JobOutput::Hits),
            JobOutput::Answers(a) => cut(a, sizes, JobOutput::Answers),
            JobOutput::Scores(s) => cut(s, sizes, JobOutput::Scores),
        }
    }
}
