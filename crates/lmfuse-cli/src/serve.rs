//! `lmfuse serve`: a bundle behind HTTP. The routes, batching, limits and metrics are in
//! `lmfuse-server`; this module implements its [`Backend`] with the bundle's classifier(s) and
//! an encoder loaded once, and turns flags (with environment fallbacks) into the server's
//! limits.

use crate::loaded::{load_bundle, Loaded};
use anyhow::Context;
use clap::{Args, ValueEnum};
use lmfuse_core::{DenseMatrix, TextEncoder};
use lmfuse_encoder::{SentenceEncoder, TokenizedText};
use lmfuse_server::{
    Backend, BackendError, Oos, OverLength, Prediction, Reloader, Server, ServerConfig, TokenCount,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to do with texts over the token limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OverLengthArg {
    /// Cut them at the limit, as `lmfuse embed` and `predict` do.
    Truncate,
    /// Refuse the request with 413 `too_many_tokens`.
    Reject,
}

/// Arguments of `lmfuse serve`. Every limit has an environment fallback.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Bundle folder written by `lmfuse train` or `lmfuse compare --out`.
    #[arg(long)]
    model: PathBuf,
    /// Encoder folder or hub id instead of the one recorded in the bundle (same weights).
    #[arg(long)]
    encoder: Option<String>,
    /// Address to bind. Loopback by default: serving other machines is a deliberate choice
    /// (and then an --api-key is advisable).
    #[arg(long, env = "LMFUSE_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to bind (0: any free port; the chosen one is printed).
    #[arg(long, env = "LMFUSE_PORT", default_value_t = 8080)]
    port: u16,
    /// Bearer token required by every route but /, /health and /ready.
    #[arg(long, env = "LMFUSE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Largest request body in bytes (default 2 MB, as text-embeddings-inference).
    #[arg(long, env = "LMFUSE_MAX_BODY_BYTES", default_value_t = lmfuse_server::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Most texts in one request (default 32, as text-embeddings-inference).
    #[arg(long, env = "LMFUSE_MAX_BATCH_SIZE", default_value_t = lmfuse_server::DEFAULT_MAX_BATCH_SIZE)]
    max_batch_size: usize,
    /// Most characters in one text (default 20,000: far beyond what the model reads, so
    /// tokenizing longer texts would only burn CPU).
    #[arg(long, env = "LMFUSE_MAX_INPUT_CHARS", default_value_t = lmfuse_server::DEFAULT_MAX_INPUT_CHARS)]
    max_input_chars: usize,
    /// Most tokens per text, special tokens included (default and maximum: the bundle's
    /// maximum sequence length, 256 for MiniLM).
    #[arg(long, env = "LMFUSE_MAX_INPUT_TOKENS")]
    max_input_tokens: Option<usize>,
    /// Texts over --max-input-tokens: truncate (default) or reject with 413.
    #[arg(
        long,
        env = "LMFUSE_OVER_LENGTH",
        value_enum,
        default_value = "truncate"
    )]
    over_length: OverLengthArg,
    /// Most requests queued or running at once; beyond, 429 at once (default 128).
    #[arg(long, env = "LMFUSE_MAX_QUEUE", default_value_t = lmfuse_server::DEFAULT_MAX_QUEUE)]
    max_queue: usize,
    /// Token budget of one merged batch of concurrent requests (default 16,384).
    #[arg(long, env = "LMFUSE_MAX_BATCH_TOKENS", default_value_t = lmfuse_server::DEFAULT_MAX_BATCH_TOKENS)]
    max_batch_tokens: usize,
    /// Time limit of one request, queue and inference together, in ms (default 30,000);
    /// beyond, 504.
    #[arg(long, env = "LMFUSE_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// Seconds in-flight requests get to finish after SIGTERM (default 30).
    #[arg(long, env = "LMFUSE_SHUTDOWN_GRACE_S", default_value_t = 30)]
    shutdown_grace_s: u64,
}

/// The special tokens a tokenizer puts around one text (`[CLS]` … `[SEP]` for BERT), to read
/// inputs given as token ids as the tokenizer would have produced them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    start: Vec<u32>,
    end: Vec<u32>,
}

impl Frame {
    /// Learns them from how `encoder` tokenizes an empty text and a one-word one.
    fn of(encoder: &SentenceEncoder) -> anyhow::Result<Self> {
        let t = encoder.tokenize(&["", "a"])?;
        let (empty, word) = (&t[0].ids, &t[1].ids);
        let start = empty.iter().zip(word).take_while(|(a, b)| a == b).count();
        let frame = Frame {
            start: empty[..start].to_vec(),
            end: empty[start..].to_vec(),
        };
        anyhow::ensure!(
            word.len() > empty.len() && word.ends_with(&frame.end),
            "cannot tell the tokenizer's special tokens ({empty:?} for an empty text, {word:?} \
             for \"a\")"
        );
        Ok(frame)
    }

    /// One input's `ids` as the model reads them: framed by the special tokens unless they
    /// already are, then cut at `max` tokens keeping the end tokens (as the tokenizer cuts).
    fn apply(&self, ids: &[u32], max: usize) -> TokenizedText {
        let framed = ids.len() >= self.start.len() + self.end.len()
            && ids.starts_with(&self.start)
            && ids.ends_with(&self.end);
        let mut out = if framed {
            ids.to_vec()
        } else {
            [self.start.as_slice(), ids, self.end.as_slice()].concat()
        };
        let truncated = out.len() > max;
        if truncated {
            out.truncate(max.saturating_sub(self.end.len()));
            out.extend_from_slice(&self.end);
        }
        TokenizedText {
            type_ids: vec![0; out.len()],
            ids: out,
            truncated,
        }
    }
}

/// A bundle and its encoder(s), loaded once, serving requests.
struct BundleBackend {
    loaded: Loaded,
    /// The bundle's main encoder: `None` when neither a classifier of the bundle nor its
    /// out-of-scope detector reads its embeddings (TF-IDF only). `/embed` and the token
    /// counts use it.
    encoder: Option<SentenceEncoder>,
    /// The other encoders of [`Loaded::encoders`], in order (an ensemble member's fine-tuned
    /// one), loaded where a classifier reads them.
    member_encoders: Vec<Option<SentenceEncoder>>,
    /// The main encoder's special tokens, for inputs given as token ids.
    frame: Option<Frame>,
    max_tokens: usize,
    dir: PathBuf,
    info: serde_json::Value,
}

impl BundleBackend {
    /// Loads the bundle in `dir` and its encoder; `max_tokens` (at most the bundle's maximum
    /// sequence length) cuts or flags longer texts.
    fn load(dir: &Path, encoder: Option<&str>, max_tokens: Option<usize>) -> anyhow::Result<Self> {
        let loaded = load_bundle(dir, encoder)?;
        let cols = loaded.feature_cols();
        anyhow::ensure!(
            cols.is_empty(),
            "bundle {} reads side columns ({}); `lmfuse serve` takes texts only",
            dir.display(),
            cols.join(", ")
        );
        let model_max = loaded
            .encoders
            .iter()
            .map(|e| e.info.fingerprint.max_seq_length)
            .min()
            .expect("a bundle has an encoder");
        let max_tokens = max_tokens.unwrap_or(model_max);
        anyhow::ensure!(
            (3..=model_max).contains(&max_tokens),
            "--max-input-tokens {max_tokens} must be between 3 and the bundle's maximum \
             sequence length ({model_max})"
        );
        let load = |i: usize| -> anyhow::Result<Option<SentenceEncoder>> {
            if !loaded.needs_encoder(i) {
                return Ok(None);
            }
            let e = &loaded.encoders[i];
            Ok(Some(
                SentenceEncoder::load(&e.files, &e.options)
                    .with_context(|| format!("cannot load the encoder {:?}", e.info.reference))?,
            ))
        };
        let encoder = load(0)?;
        let frame = encoder.as_ref().map(Frame::of).transpose()?;
        let member_encoders = (1..loaded.encoders.len())
            .map(load)
            .collect::<anyhow::Result<_>>()?;
        let mut info = serde_json::to_value(&loaded.manifest)?;
        if let serde_json::Value::Object(m) = &mut info {
            m.insert("bundle_dir".into(), dir.display().to_string().into());
            m.insert("max_input_tokens".into(), max_tokens.into());
            m.insert("encoder_loaded".into(), encoder.is_some().into());
        }
        Ok(Self {
            loaded,
            encoder,
            member_encoders,
            frame,
            max_tokens,
            dir: dir.to_path_buf(),
            info,
        })
    }

    /// Tokenizes with the model's truncation, then cuts at `max_tokens` (keeping the final
    /// special token, as the tokenizer's own truncation does).
    fn tokenize(
        &self,
        encoder: &SentenceEncoder,
        texts: &[&str],
    ) -> Result<Vec<TokenizedText>, BackendError> {
        let mut tokenized = encoder
            .tokenize(texts)
            .map_err(|e| BackendError::Inference(e.to_string()))?;
        for t in &mut tokenized {
            if t.ids.len() > self.max_tokens {
                let last = self.max_tokens - 1;
                let (end_id, end_type) = (t.ids[t.ids.len() - 1], t.type_ids[t.type_ids.len() - 1]);
                t.ids.truncate(last);
                t.type_ids.truncate(last);
                t.ids.push(end_id);
                t.type_ids.push(end_type);
                t.truncated = true;
            }
        }
        Ok(tokenized)
    }

    /// The main encoder and `ids` (one list per input) as it reads them; refuses ids outside
    /// its vocabulary.
    fn tokenize_ids(
        &self,
        ids: &[&[u32]],
    ) -> Result<(&SentenceEncoder, Vec<TokenizedText>), BackendError> {
        let (Some(encoder), Some(frame)) = (&self.encoder, &self.frame) else {
            return Err(self.cannot_embed());
        };
        let vocab = encoder.model().config().vocab_size;
        for (i, list) in ids.iter().enumerate() {
            if let Some(bad) = list.iter().find(|&&id| id as usize >= vocab) {
                return Err(BackendError::Unsupported(format!(
                    "input {i} holds token id {bad}, outside the vocabulary of {} ({vocab} \
                     tokens): send ids of the served model's tokenizer",
                    encoder.reference()
                )));
            }
        }
        let tokenized = ids
            .iter()
            .map(|l| frame.apply(l, self.max_tokens))
            .collect();
        Ok((encoder, tokenized))
    }

    fn cannot_embed(&self) -> BackendError {
        BackendError::Unsupported(format!(
            "bundle {} uses no encoder embeddings (TF-IDF only), so it cannot embed",
            self.dir.display()
        ))
    }

    /// The embeddings of `texts` by every loaded encoder, in [`Loaded::encoders`]' order.
    fn embeddings(&self, texts: &[&str]) -> Result<Vec<Option<DenseMatrix>>, BackendError> {
        std::iter::once(&self.encoder)
            .chain(&self.member_encoders)
            .map(|encoder| match encoder {
                Some(encoder) => {
                    let tokenized = self.tokenize(encoder, texts)?;
                    Ok(Some(DenseMatrix::from(
                        encoder.encode_tokenized(&tokenized),
                    )))
                }
                None => Ok(None),
            })
            .collect()
    }
}

impl Backend for BundleBackend {
    fn count_tokens(&self, texts: &[&str]) -> Result<Vec<TokenCount>, BackendError> {
        match &self.encoder {
            Some(encoder) => Ok(self
                .tokenize(encoder, texts)?
                .iter()
                .map(|t| TokenCount {
                    tokens: t.ids.len(),
                    truncated: t.truncated,
                })
                .collect()),
            // TF-IDF only: words stand in for tokens in the batch budget; nothing is cut.
            None => Ok(texts
                .iter()
                .map(|t| TokenCount {
                    tokens: t.split_whitespace().count() + 2,
                    truncated: false,
                })
                .collect()),
        }
    }

    fn predict(&self, texts: &[&str]) -> Result<Vec<Prediction>, BackendError> {
        let embs = self.embeddings(texts)?;
        let failed = |e: anyhow::Error| BackendError::Inference(format!("{e:#}"));
        let proba = self
            .loaded
            .predict_proba_embedded(texts, &[], &embs)
            .map_err(failed)?;
        // The detector reads the main encoder's embeddings.
        let oos = self.loaded.oos(embs[0].as_ref(), &proba).map_err(failed)?;
        let labels = self.loaded.predictor.labels();
        Ok(proba
            .chunks_exact(labels.len())
            .enumerate()
            .map(|(i, row)| Prediction {
                label: labels.name(lmfuse_metrics::argmax(row)).to_string(),
                probabilities: labels
                    .names()
                    .iter()
                    .cloned()
                    .zip(row.iter().copied())
                    .collect::<BTreeMap<_, _>>(),
                oos: oos.as_ref().map(|d| Oos {
                    is_oos: d[i].is_oos,
                    score: d[i].score,
                }),
            })
            .collect())
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BackendError> {
        let Some(encoder) = &self.encoder else {
            return Err(self.cannot_embed());
        };
        let tokenized = self.tokenize(encoder, texts)?;
        let e = encoder.encode_tokenized(&tokenized);
        Ok((0..texts.len()).map(|i| e.row(i).to_vec()).collect())
    }

    fn count_token_ids(&self, ids: &[&[u32]]) -> Result<Vec<TokenCount>, BackendError> {
        let (_, tokenized) = self.tokenize_ids(ids)?;
        Ok(tokenized
            .iter()
            .map(|t| TokenCount {
                tokens: t.ids.len(),
                truncated: t.truncated,
            })
            .collect())
    }

    fn embed_token_ids(&self, ids: &[&[u32]]) -> Result<Vec<Vec<f32>>, BackendError> {
        let (encoder, tokenized) = self.tokenize_ids(ids)?;
        let e = encoder.encode_tokenized(&tokenized);
        Ok((0..ids.len()).map(|i| e.row(i).to_vec()).collect())
    }

    fn info(&self) -> serde_json::Value {
        self.info.clone()
    }

    fn model_name(&self) -> String {
        match &self.encoder {
            Some(e) => e.reference().to_string(),
            None => self.loaded.main_encoder().files.reference.clone(),
        }
    }

    fn health(&self) -> Result<(), BackendError> {
        // A real forward pass through encoder and head.
        let p = self.predict(&["health check"])?;
        let e = match &self.encoder {
            Some(encoder) => encoder
                .encode(&["health check"])
                .map_err(|e| BackendError::Inference(e.to_string()))?
                .embeddings
                .row(0)
                .iter()
                .all(|v| v.is_finite()),
            None => true,
        };
        if p.len() != 1 || !e || p[0].probabilities.values().any(|v| !v.is_finite()) {
            return Err(BackendError::Inference(
                "the warm-up pass gave non-finite outputs".into(),
            ));
        }
        Ok(())
    }
}

impl ServeArgs {
    fn config(&self) -> ServerConfig {
        ServerConfig {
            max_body_bytes: self.max_body_bytes,
            max_batch_size: self.max_batch_size,
            max_input_chars: self.max_input_chars,
            over_length: match self.over_length {
                OverLengthArg::Truncate => OverLength::Truncate,
                OverLengthArg::Reject => OverLength::Reject,
            },
            max_queue: self.max_queue,
            max_batch_tokens: self.max_batch_tokens,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_s),
            api_key: self.api_key.clone().filter(|k| !k.is_empty()),
        }
    }
}

/// Runs `lmfuse serve` until SIGTERM or Ctrl-C.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let config = args.config();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("lmfuse-http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args, config))
}

async fn serve(args: &ServeArgs, config: ServerConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    let (dir, encoder, max_tokens) = (
        args.model.clone(),
        args.encoder.clone(),
        args.max_input_tokens,
    );
    let reloader: Arc<Reloader> = Arc::new(move |model: Option<&str>| {
        // --encoder names the encoder of the --model bundle (same weights, another place): it
        // says nothing of another bundle, which loads the encoder it records.
        let (path, encoder) = match model {
            Some(m) if Path::new(m) != dir => (PathBuf::from(m), None),
            _ => (dir.clone(), encoder.as_deref()),
        };
        BundleBackend::load(&path, encoder, max_tokens)
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
            .map_err(|e| BackendError::Load(format!("{e:#}")))
    });
    // From the effective configuration: an empty --api-key is no key.
    let has_key = config.api_key.is_some();
    let server = Server::new(config, Some(reloader.clone()))?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() && !has_key {
        eprintln!("lmfuse: warning: serving {addr} beyond this machine without --api-key");
    }
    eprintln!(
        "lmfuse: listening on http://{addr} (live); loading {}",
        args.model.display()
    );

    // Load and warm up beside the listener: /health answers at once, /ready once warmed.
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let loading = {
        let server = server.clone();
        let model = args.model.clone();
        tokio::task::spawn_blocking(move || {
            let result = reloader(None)
                .and_then(|b| b.health().map(|()| b))
                .map_err(|e| {
                    anyhow::anyhow!("{e}").context(format!("cannot serve {}", model.display()))
                });
            match result {
                Ok(b) => {
                    let name = b.model_name();
                    server.set_backend(b);
                    eprintln!(
                        "lmfuse: ready: {} with encoder {name} ({:.2} s)",
                        model.display(),
                        started.elapsed().as_secs_f64()
                    );
                }
                Err(e) => {
                    let _ = failed_tx.send(e);
                }
            }
        })
    };
    // SIGHUP: reload the bundle folder (replaced atomically by `lmfuse train --out`).
    #[cfg(unix)]
    {
        let server = server.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot watch SIGHUP")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match server.reload(None).await {
                    Ok(_) => eprintln!("lmfuse: reloaded on SIGHUP"),
                    Err(e) => eprintln!("lmfuse: {e}"),
                }
            }
        });
    }
    let startup_error = Arc::new(std::sync::Mutex::new(None));
    let shutdown = {
        let startup_error = startup_error.clone();
        async move {
            tokio::select! {
                () = lmfuse_server::terminate_signal() => {
                    eprintln!("lmfuse: stopping: finishing in-flight requests");
                }
                Ok(e) = failed_rx => {
                    *startup_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            }
        }
    };
    server.serve(listener, shutdown).await?;
    if let Some(e) = startup_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return Err(e);
    }
    loading.abort();
    eprintln!("lmfuse: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_are_framed_once_and_cut_keeping_the_end_token() {
        let f = Frame {
            start: vec![101],
            end: vec![102],
        };
        let t = f.apply(&[7, 8], 10);
        assert_eq!(
            (t.ids, t.type_ids, t.truncated),
            (vec![101, 7, 8, 102], vec![0; 4], false)
        );
        assert_eq!(f.apply(&[101, 7, 8, 102], 10).ids, [101, 7, 8, 102]);
        let t = f.apply(&[1, 2, 3, 4, 5], 4);
        assert_eq!((t.ids, t.truncated), (vec![101, 1, 2, 102], true));
        let none = Frame {
            start: vec![],
            end: vec![],
        };
        assert_eq!(none.apply(&[5, 6], 10).ids, [5, 6]);
    }
}
