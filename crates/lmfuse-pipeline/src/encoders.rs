//! Choosing an encoder, the embedding cache, and encoding texts through it.

use crate::error::{Context, Result};
use crate::observe::Observer;
use lmfuse_cache::EmbeddingCache;
use lmfuse_core::{Embeddings, LongText, Pooling, Precision, TextEncoder, TextStats};
use lmfuse_encoder::{LoadOptions, ModelFiles, ModelSpec, SentenceEncoder};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// Which encoder, and how it pools, normalises and batches. `Default` is the default model
/// with its own settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncoderChoice {
    /// A local folder or a Hugging Face id; `None`: the default model.
    pub model: Option<String>,
    /// Pooling instead of the model's own.
    pub pooling: Option<Pooling>,
    /// Maximum tokens per text instead of the model's `max_seq_length`.
    pub max_length: Option<usize>,
    /// L2-normalise (`Some(true)`) or not (`Some(false)`); `None`: as the model says.
    pub normalize: Option<bool>,
    /// Tokens per forward batch; `None`: [`lmfuse_encoder::DEFAULT_BATCH_TOKENS`].
    pub batch_tokens: Option<usize>,
    /// Text put before every input (e5's `query: `); `None`: the model's default prompt.
    pub prefix: Option<String>,
    /// Texts longer than the maximum length: truncated (default) or encoded in windows.
    pub long_text: LongText,
    /// Number format of the matrix products; `None`: as the weights are stored (f32, or
    /// int8 for a converted model).
    pub precision: Option<Precision>,
}

impl EncoderChoice {
    /// The choice of model `model` (a folder or hub id) with its own settings.
    pub fn named(model: impl Into<String>) -> Self {
        EncoderChoice {
            model: Some(model.into()),
            ..EncoderChoice::default()
        }
    }

    /// Where the model comes from.
    pub fn spec(&self) -> ModelSpec {
        match &self.model {
            None => ModelSpec::Default,
            Some(m) => ModelSpec::parse(m),
        }
    }

    /// Pooling, normalisation, length and batching for loading it.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            pooling: self.pooling,
            normalize: self.normalize,
            max_seq_length: self.max_length,
            batch_tokens: Some(
                self.batch_tokens
                    .unwrap_or(lmfuse_encoder::DEFAULT_BATCH_TOKENS),
            ),
            prefix: self.prefix.clone(),
            long_text: self.long_text,
            precision: self.precision,
        }
    }

    /// Resolves the model and hashes its weights.
    pub fn resolve(&self) -> Result<ModelFiles> {
        ModelFiles::resolve(&self.spec()).context("cannot open the model")
    }
}

/// Whether and where the embedding cache lives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheSpec {
    /// Neither read nor write the cache.
    pub disabled: bool,
    /// Cache folder; `None`: `$LMFUSE_CACHE_DIR`, else `~/.cache/lmfuse`.
    pub dir: Option<PathBuf>,
}

impl CacheSpec {
    /// No cache.
    pub fn disabled() -> Self {
        CacheSpec {
            disabled: true,
            dir: None,
        }
    }

    /// Opens the cache, or `None` when it is disabled.
    pub fn open(&self) -> Result<Option<EmbeddingCache>> {
        if self.disabled {
            return Ok(None);
        }
        let dir = self.dir.clone().unwrap_or_else(lmfuse_cache::default_dir);
        Ok(Some(EmbeddingCache::open(&dir)?))
    }
}

/// What one embedding run did.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedSummary {
    /// The model as named by the user.
    pub model: String,
    /// Vector dimension.
    pub dim: usize,
    /// Texts in the input.
    pub count: usize,
    /// Distinct texts.
    pub unique: usize,
    /// Distinct texts found in the cache.
    pub cache_hits: usize,
    /// Distinct texts run through the model.
    pub encoded: usize,
    /// Tokens over all input texts (special tokens included, after truncation).
    pub tokens: usize,
    /// Input texts cut at the maximum length.
    pub truncated: usize,
    /// Maximum tokens per text.
    pub max_seq_length: usize,
    /// Wall time of the run.
    pub seconds: f64,
    /// Input texts per second.
    pub sentences_per_s: f64,
    /// Input tokens per second.
    pub tokens_per_s: f64,
}

impl EmbedSummary {
    /// Sets the wall time to `seconds` and the rates with it.
    pub fn set_seconds(&mut self, seconds: f64) {
        self.seconds = seconds;
        self.sentences_per_s = self.count as f64 / seconds.max(1e-9);
        self.tokens_per_s = self.tokens as f64 / seconds.max(1e-9);
    }
}

/// Unique texts encoded per step: each step's results are committed to the cache, so an
/// interrupted run keeps what it finished.
const CHUNK: usize = 1024;

/// The distinct texts of `texts` in first-seen order, and each text's index among them.
pub fn dedup<S: AsRef<str>>(texts: &[S]) -> (Vec<&str>, Vec<usize>) {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(texts.len());
    let mut unique: Vec<&str> = Vec::new();
    let slot = texts
        .iter()
        .map(|t| {
            *index.entry(t.as_ref()).or_insert_with(|| {
                unique.push(t.as_ref());
                unique.len() - 1
            })
        })
        .collect();
    (unique, slot)
}

type Cached = Option<(Vec<f32>, TextStats)>;

/// The cached vector of each of `unique` (`None` where absent).
fn cached(
    cache: Option<&EmbeddingCache>,
    key: &str,
    unique: &[&str],
    dim: usize,
) -> Result<Vec<Cached>> {
    let Some(c) = cache else {
        return Ok(vec![None; unique.len()]);
    };
    let mut out = Vec::with_capacity(unique.len());
    for hit in c.get_many(key, unique)? {
        out.push(match hit {
            Some(h) => {
                crate::ensure!(
                    h.vector.len() == dim,
                    "embedding cache {} holds a {}-dimensional vector for a {dim}-dimensional model",
                    c.path().display(),
                    h.vector.len()
                );
                Some((h.vector, h.stats))
            }
            None => None,
        });
    }
    Ok(out)
}

/// Encodes `texts`, reading and filling `cache` when given. Identical texts are encoded once;
/// the encoder is loaded only when some text is not cached.
pub fn embed_texts(
    texts: &[String],
    files: &ModelFiles,
    options: &LoadOptions,
    cache: Option<&mut EmbeddingCache>,
    on: &dyn Observer,
) -> Result<(Embeddings, EmbedSummary)> {
    embed_with(texts, (files, options), cache, &mut None, on)
}

/// [`embed_texts`] with the model loaded into `loaded` (when some text is not cached) and
/// kept there for the next call.
fn embed_with(
    texts: &[String],
    (files, options): (&ModelFiles, &LoadOptions),
    mut cache: Option<&mut EmbeddingCache>,
    loaded: &mut Option<SentenceEncoder>,
    on: &dyn Observer,
) -> Result<(Embeddings, EmbedSummary)> {
    let started = Instant::now();
    let fingerprint = options.fingerprint(files)?;
    let key = fingerprint.cache_key();
    let dim = files.config.hidden_size;
    let (unique, slot) = dedup(texts);
    let mut vectors = cached(cache.as_deref(), &key, &unique, dim)?;
    let misses: Vec<usize> = (0..unique.len())
        .filter(|&i| vectors[i].is_none())
        .collect();
    let cache_hits = unique.len() - misses.len();

    if !misses.is_empty() {
        let encoder = load_once(loaded, files, options)?;
        debug_assert_eq!(encoder.fingerprint(), &fingerprint);
        let task = on.task("embedding", misses.len() as u64);
        for chunk in misses.chunks(CHUNK) {
            let chunk_texts: Vec<&str> = chunk.iter().map(|&i| unique[i]).collect();
            let encoded = encoder.encode(&chunk_texts)?;
            if let Some(c) = cache.as_deref_mut() {
                let items: Vec<(&str, &[f32], TextStats)> = chunk_texts
                    .iter()
                    .enumerate()
                    .map(|(k, t)| (*t, encoded.embeddings.row(k), encoded.stats[k]))
                    .collect();
                c.put_many(&key, &items)?;
            }
            for (k, &i) in chunk.iter().enumerate() {
                vectors[i] = Some((encoded.embeddings.row(k).to_vec(), encoded.stats[k]));
            }
            task.inc(chunk.len() as u64);
        }
        task.finish();
    }

    let mut data = Vec::with_capacity(texts.len() * dim);
    let (mut tokens, mut truncated) = (0, 0);
    for &s in &slot {
        let (v, stats) = vectors[s].as_ref().expect("every unique text is filled");
        data.extend_from_slice(v);
        tokens += stats.tokens;
        truncated += usize::from(stats.truncated);
    }
    let mut summary = EmbedSummary {
        model: files.reference.clone(),
        dim,
        count: texts.len(),
        unique: unique.len(),
        cache_hits,
        encoded: misses.len(),
        tokens,
        truncated,
        max_seq_length: fingerprint.max_seq_length,
        seconds: 0.0,
        sentences_per_s: 0.0,
        tokens_per_s: 0.0,
    };
    summary.set_seconds(started.elapsed().as_secs_f64());
    Ok((Embeddings::from_vec(dim, data)?, summary))
}

/// The model in `loaded`, loading it first when it is not there yet.
fn load_once<'a>(
    loaded: &'a mut Option<SentenceEncoder>,
    files: &ModelFiles,
    options: &LoadOptions,
) -> Result<&'a SentenceEncoder> {
    if loaded.is_none() {
        *loaded = Some(SentenceEncoder::load(files, options).context("cannot load the model")?);
    }
    Ok(loaded.as_ref().expect("loaded above"))
}

/// An encoder chosen once, with the cache: embeds any number of text lists, resolving the
/// model's files once and loading the model at most once (on the first text not cached).
pub struct Encoders {
    files: ModelFiles,
    options: LoadOptions,
    cache: Option<EmbeddingCache>,
    loaded: Option<SentenceEncoder>,
}

impl Encoders {
    /// Resolves `choice` and opens `cache`.
    pub fn open(choice: &EncoderChoice, cache: &CacheSpec) -> Result<Self> {
        Ok(Encoders {
            files: choice.resolve()?,
            options: choice.load_options(),
            cache: cache.open()?,
            loaded: None,
        })
    }

    /// The model itself (loaded now if no text needed it yet), for a caller that keeps it.
    pub fn take_model(&mut self) -> Result<SentenceEncoder> {
        load_once(&mut self.loaded, &self.files, &self.options)?;
        Ok(self.loaded.take().expect("loaded above"))
    }

    /// The model's files.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// Pooling, normalisation, length and batching.
    pub fn options(&self) -> &LoadOptions {
        &self.options
    }

    /// Embeds `texts` through the cache.
    pub fn embed(
        &mut self,
        texts: &[String],
        on: &dyn Observer,
    ) -> Result<(Embeddings, EmbedSummary)> {
        embed_with(
            texts,
            (&self.files, &self.options),
            self.cache.as_mut(),
            &mut self.loaded,
            on,
        )
    }
}
