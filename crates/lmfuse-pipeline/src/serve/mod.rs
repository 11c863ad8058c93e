//! A bundle behind `lmfuse-server`'s [`Backend`]: its classifier(s) and the encoder(s) they
//! read, loaded once, answering predictions, embeddings and token counts ([`BundleBackend`]),
//! or a named-entity tagger answering entities ([`NerBackend`]). What `lmfuse serve` (and any
//! other host of the server) loads and reloads ([`load_backend`]).

use crate::ensure;
use crate::error::{Context, PipelineError, Result};
use crate::model::Model;
use crate::ner::NerModel;
use lmfuse_core::{DenseMatrix, LongText, Precision, TextEncoder};
use lmfuse_encoder::{Framing, SentenceEncoder, TokenizedText};
use lmfuse_server::{
    Backend, BackendError, Oos, Prediction, Reloader, ServedTask, TokenCount, TokenEntity,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod search;

pub use search::{FaqBackend, IndexBackend};

/// How a folder is served, beyond the folder itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// An encoder (folder or hub id) in place of the one a bundle records (same weights).
    pub encoder: Option<String>,
    /// Most tokens per text of a classifier (at most its maximum sequence length).
    pub max_tokens: Option<usize>,
    /// A cross-encoder (folder or hub id) for an index: `/rerank` scores pairs with it and
    /// `/search` rescores its best documents with it.
    pub reranker: Option<String>,
    /// Documents the cross-encoder rescores per `/search` query (at least its `k`).
    pub rerank_depth: usize,
    /// The precision a classifier's encoders run in instead of the recorded one.
    pub precision: Option<Precision>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            encoder: None,
            max_tokens: None,
            reranker: None,
            rerank_depth: 100,
            precision: None,
        }
    }
}

/// The [`Reloader`] of a server that serves the folder `dir`: `None` (start-up, SIGHUP,
/// `POST /reload` without a body) reloads `dir` with `options`; another folder loads with the
/// encoder *it* records (`options.encoder` names the encoder of `dir`'s bundle, and says
/// nothing of another one). Each load is [`load_backend`]'s.
pub fn reloader(dir: PathBuf, options: ServeOptions) -> Arc<Reloader> {
    Arc::new(move |model: Option<&str>| {
        let (path, options) = match model {
            Some(m) if Path::new(m) != dir => (
                PathBuf::from(m),
                ServeOptions {
                    encoder: None,
                    ..options.clone()
                },
            ),
            _ => (dir.clone(), options.clone()),
        };
        load_backend(&path, &options).map_err(|e| BackendError::Load(e.chain_message()))
    })
}

/// Loads the folder `dir` for the server: an [`IndexBackend`] or a [`FaqBackend`] by its
/// manifest, a [`NerBackend`] when a bundle's task is [`crate::ner::TASK`], else a
/// [`BundleBackend`]. `options.encoder` applies to bundles, `max_tokens` to classifiers (a
/// tagger reads whole texts, long ones in windows), the reranker to indexes.
pub fn load_backend(dir: &Path, options: &ServeOptions) -> Result<Arc<dyn Backend>> {
    let (encoder, max_tokens) = (options.encoder.as_deref(), options.max_tokens);
    let kind = served_kind(dir);
    ensure!(
        kind == ServedKind::Bundle || options.precision.is_none(),
        "{}: --precision applies to classifier bundles; an index or an answer engine runs its \
         encoder as it was built",
        dir.display()
    );
    ensure!(
        kind == ServedKind::Bundle || encoder.is_none(),
        "{} is an index or an answer engine: it is served with the encoder it was built with, \
         and another encoder cannot be given",
        dir.display()
    );
    ensure!(
        kind == ServedKind::Index || options.reranker.is_none(),
        "{} is not an index: a cross-encoder reranks an index's search results",
        dir.display()
    );
    match kind {
        ServedKind::Index => return Ok(Arc::new(IndexBackend::load(dir, options)?)),
        ServedKind::Faq => return Ok(Arc::new(FaqBackend::load(dir)?)),
        ServedKind::Bundle => {}
    }
    match read_manifest(dir) {
        Some(manifest) if task_of(&manifest) == Some(crate::ner::TASK) => {
            ensure!(
                options.precision.is_none(),
                "{}: --precision applies to classifier bundles, not to taggers yet",
                dir.display()
            );
            Ok(Arc::new(NerBackend::with_manifest(dir, encoder, manifest)?))
        }
        // Not a tagger, or no readable manifest: the classifier's loader says what is wrong.
        _ => Ok(Arc::new(BundleBackend::load_in(
            dir,
            encoder,
            max_tokens,
            options.precision,
        )?)),
    }
}

/// Each tokenized text's token count and whether it was cut.
pub(crate) fn counts_of(tokenized: &[TokenizedText]) -> Vec<TokenCount> {
    tokenized
        .iter()
        .map(|t| TokenCount {
            tokens: t.ids.len(),
            truncated: t.truncated,
        })
        .collect()
}

/// Words (and two for the frame) as each text's tokens, where no tokenizer cuts anything: the
/// batch budget's measure for models without an encoder.
pub(crate) fn word_counts(texts: &[&str]) -> Vec<TokenCount> {
    texts
        .iter()
        .map(|t| TokenCount {
            tokens: t.split_whitespace().count() + 2,
            truncated: false,
        })
        .collect()
}

/// What a folder holds, by its manifest's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedKind {
    /// A model bundle (a classifier or a tagger).
    Bundle,
    /// A search index (`lmfuse index build`).
    Index,
    /// An answer engine (`lmfuse faq build`).
    Faq,
}

/// What `dir` holds: an index or an answer engine by their manifests, else a bundle (whose
/// loader says what is wrong when it is none).
pub fn served_kind(dir: &Path) -> ServedKind {
    if dir.join(lmfuse_retrieval::MANIFEST).is_file() {
        ServedKind::Index
    } else if dir.join(crate::faq::MANIFEST).is_file() {
        ServedKind::Faq
    } else {
        ServedKind::Bundle
    }
}

/// The manifest of the bundle in `dir`, as JSON; `None` when it cannot be read.
fn read_manifest(dir: &Path) -> Option<serde_json::Value> {
    let bytes = std::fs::read(dir.join(lmfuse_bundle::MANIFEST)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `model.task` a manifest records (classifier bundles record none).
fn task_of(manifest: &serde_json::Value) -> Option<&str> {
    manifest.get("model")?.get("task")?.as_str()
}

/// A bundle and its encoder(s), loaded once, serving requests.
pub struct BundleBackend {
    model: Model,
    /// The bundle's main encoder: `None` when neither a classifier of the bundle nor its
    /// out-of-scope detector reads its embeddings (TF-IDF only). `/embed` and the token
    /// counts use it.
    encoder: Option<SentenceEncoder>,
    /// The other encoders of [`Model::encoders`], in order (an ensemble member's fine-tuned
    /// one), loaded where a classifier reads them.
    member_encoders: Vec<Option<SentenceEncoder>>,
    /// The main encoder's special tokens, for inputs given as token ids.
    frame: Option<Framing>,
    max_tokens: usize,
    dir: PathBuf,
    info: serde_json::Value,
}

impl BundleBackend {
    /// Loads the bundle in `dir` and its encoder; `max_tokens` (at most the bundle's maximum
    /// sequence length) cuts or flags longer texts.
    pub fn load(dir: &Path, encoder: Option<&str>, max_tokens: Option<usize>) -> Result<Self> {
        Self::load_in(dir, encoder, max_tokens, None)
    }

    /// [`BundleBackend::load`] with the encoders run in `precision` (`None`: as recorded).
    pub fn load_in(
        dir: &Path,
        encoder: Option<&str>,
        max_tokens: Option<usize>,
        precision: Option<Precision>,
    ) -> Result<Self> {
        let loaded = Model::load_in(dir, encoder, precision)?;
        let cols = loaded.feature_cols();
        ensure!(
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
        ensure!(
            (3..=model_max).contains(&max_tokens),
            "--max-input-tokens {max_tokens} must be between 3 and the bundle's maximum \
             sequence length ({model_max})"
        );
        let load = |i: usize| -> Result<Option<SentenceEncoder>> {
            let e = &loaded.encoders[i];
            let Some(files) = &e.files else {
                return Ok(None);
            };
            Ok(Some(
                SentenceEncoder::load(files, &e.options)
                    .with_context(|| format!("cannot load the encoder {:?}", e.info.reference))?,
            ))
        };
        let encoder = load(0)?;
        let frame = match &encoder {
            Some(e) => Some(e.framing().cloned().with_context(|| {
                format!(
                    "cannot tell the special tokens of {}'s tokenizer (an empty text and \"a\" \
                     are framed differently)",
                    e.reference()
                )
            })?),
            None => None,
        };
        let member_encoders = (1..loaded.encoders.len())
            .map(load)
            .collect::<Result<_>>()?;
        let mut info = serde_json::to_value(&loaded.manifest)?;
        if let serde_json::Value::Object(m) = &mut info {
            m.insert("bundle_dir".into(), dir.display().to_string().into());
            m.insert("max_input_tokens".into(), max_tokens.into());
            m.insert("encoder_loaded".into(), encoder.is_some().into());
        }
        Ok(Self {
            model: loaded,
            encoder,
            member_encoders,
            frame,
            max_tokens,
            dir: dir.to_path_buf(),
            info,
        })
    }

    /// The classes the bundle predicts, in its order.
    pub fn labels(&self) -> Vec<String> {
        self.model.labels().names().to_vec()
    }

    /// Predictions of `texts` and the main encoder's embeddings of them (none for a TF-IDF
    /// bundle), from one encoder pass.
    pub fn predict_with_embeddings(
        &self,
        texts: &[&str],
    ) -> Result<(Vec<Prediction>, Option<DenseMatrix>), BackendError> {
        let embs = self.embeddings(texts)?;
        let failed = |e: PipelineError| BackendError::Inference(e.chain_message());
        let proba = self
            .model
            .predict_proba_embedded(texts, &[], &embs)
            .map_err(failed)?;
        // The detector reads the main encoder's embeddings.
        let oos = self.model.oos(embs[0].as_ref(), &proba).map_err(failed)?;
        let predictions = self
            .model
            .predictions(&proba, oos.as_deref())
            .into_iter()
            .map(|p| Prediction {
                label: p.label,
                probabilities: p.probabilities,
                oos: p.oos.map(|d| Oos {
                    is_oos: d.is_oos,
                    score: d.score,
                }),
            })
            .collect();
        Ok((predictions, embs.into_iter().next().flatten()))
    }

    /// Tokenizes cut at `max_tokens` (keeping the closing special tokens); whole when the
    /// encoder windows long texts.
    fn tokenize(
        &self,
        encoder: &SentenceEncoder,
        texts: &[&str],
    ) -> Result<Vec<TokenizedText>, BackendError> {
        let failed = |e: lmfuse_encoder::EncoderError| BackendError::Inference(e.to_string());
        if encoder.fingerprint().long_text == LongText::Windows {
            return encoder.tokenize_for_embedding(texts).map_err(failed);
        }
        encoder
            .tokenize_at_most(texts, self.max_tokens)
            .map_err(failed)
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

    /// The embeddings of `texts` by every loaded encoder, in [`Model::encoders`]' order.
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
            Some(encoder) => Ok(counts_of(&self.tokenize(encoder, texts)?)),
            // TF-IDF only: words stand in for tokens in the batch budget; nothing is cut.
            None => Ok(word_counts(texts)),
        }
    }

    fn predict(&self, texts: &[&str]) -> Result<Vec<Prediction>, BackendError> {
        Ok(self.predict_with_embeddings(texts)?.0)
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
        Ok(counts_of(&tokenized))
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
            None => self.model.main_encoder().info.reference.clone(),
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

/// A named-entity bundle ([`NerModel`]) behind the server: `POST /` and `/predict` answer its
/// entities in Hugging Face's token-classification shape; it neither classifies nor embeds.
pub struct NerBackend {
    model: NerModel,
    dir: PathBuf,
    info: serde_json::Value,
}

impl NerBackend {
    /// Loads the NER bundle in `dir`, with `encoder` (same weights) in place of the encoder
    /// it records.
    pub fn load(dir: &Path, encoder: Option<&str>) -> Result<Self> {
        let manifest = read_manifest(dir).unwrap_or_default();
        Self::with_manifest(dir, encoder, manifest)
    }

    /// [`NerBackend::load`] with the bundle's manifest already read (what `/info` shows).
    fn with_manifest(
        dir: &Path,
        encoder: Option<&str>,
        manifest: serde_json::Value,
    ) -> Result<Self> {
        let model = NerModel::load_with_encoder(dir, encoder)?;
        let mut info = manifest;
        if let serde_json::Value::Object(m) = &mut info {
            m.insert("bundle_dir".into(), dir.display().to_string().into());
            m.insert("encoder_loaded".into(), model.encoder().is_some().into());
        }
        Ok(Self {
            model,
            dir: dir.to_path_buf(),
            info,
        })
    }

    fn cannot(&self, what: &str) -> BackendError {
        BackendError::Unsupported(format!(
            "bundle {} is a named-entity tagger: it {what}; POST / or /predict answer its \
             entities",
            self.dir.display()
        ))
    }
}

impl Backend for NerBackend {
    /// The tagger's tokens ([`lmfuse_data::tagged::tokenize`]: words, punctuation, one CJK
    /// character each); nothing is cut.
    fn count_tokens(&self, texts: &[&str]) -> Result<Vec<TokenCount>, BackendError> {
        Ok(texts
            .iter()
            .map(|t| TokenCount {
                tokens: lmfuse_data::tagged::tokenize(t, &[]).len(),
                truncated: false,
            })
            .collect())
    }

    fn predict(&self, _: &[&str]) -> Result<Vec<Prediction>, BackendError> {
        Err(self.cannot("has no class labels"))
    }

    fn embed(&self, _: &[&str]) -> Result<Vec<Vec<f32>>, BackendError> {
        Err(self.cannot("gives no sentence embeddings"))
    }

    fn info(&self) -> serde_json::Value {
        self.info.clone()
    }

    /// The bundle's folder name.
    fn model_name(&self) -> String {
        self.dir.file_name().map_or_else(
            || self.dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    fn task(&self) -> ServedTask {
        ServedTask::TokenClassification
    }

    fn tag(&self, texts: &[&str]) -> Result<Vec<Vec<TokenEntity>>, BackendError> {
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        let found = self
            .model
            .find(&texts)
            .map_err(|e| BackendError::Inference(e.chain_message()))?;
        Ok(found
            .into_iter()
            .map(|entities| {
                entities
                    .into_iter()
                    .map(|e| TokenEntity {
                        entity_group: e.label,
                        score: e.score,
                        word: e.text,
                        start: e.start,
                        end: e.end,
                    })
                    .collect()
            })
            .collect())
    }
}
