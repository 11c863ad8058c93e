//! A bundle ready to predict: its classifier(s), and the encoder it was trained with, resolved
//! and checked. Shared by `eval`, `predict` and `serve`.

use crate::embed::embed_texts;
use anyhow::Context;
use lmfuse_cache::EmbeddingCache;
use lmfuse_core::DenseMatrix;
use lmfuse_data::Cell;
use lmfuse_encoder::{LoadOptions, ModelFiles, ModelSpec};
use lmfuse_train::{Classifier, EncoderInfo, OosDetector, Predictor};
use std::path::Path;

/// A bundle with its encoder resolved and checked.
pub(crate) struct Loaded {
    /// The classifier, or the ensemble of classifiers.
    pub predictor: Predictor,
    /// The encoder's files (same weights as at training).
    pub files: ModelFiles,
    /// Pooling, normalisation and maximum length as at training.
    pub options: LoadOptions,
    /// The bundle's manifest.
    pub manifest: lmfuse_bundle::Manifest,
}

impl Loaded {
    /// The side columns the classifier(s) read (empty without a `tab` block).
    pub fn feature_cols(&self) -> Vec<String> {
        let mut cols: Vec<String> = Vec::new();
        for c in self.predictor.classifiers() {
            if let Some(t) = &c.text_features.tabular {
                for col in &t.spec().columns {
                    if !cols.iter().any(|n| n == col.name()) {
                        cols.push(col.name().to_string());
                    }
                }
            }
        }
        cols
    }

    /// Whether some classifier reads encoder embeddings.
    pub fn uses_embeddings(&self) -> bool {
        self.predictor.classifiers().iter().any(|c| uses_emb(c))
    }

    /// Whether some classifier reads encoder embeddings, or the out-of-scope detector does.
    fn needs_embeddings(&self) -> bool {
        self.uses_embeddings() || self.detector().is_some()
    }

    /// The out-of-scope detector of a single-classifier bundle trained with one.
    pub fn detector(&self) -> Option<&OosDetector> {
        match &self.predictor {
            Predictor::Single(c) => c.oos.as_ref(),
            Predictor::Ensemble(_) => None,
        }
    }

    /// Class probabilities of `texts` (with side `columns`), row-major, and the out-of-scope
    /// decisions where the bundle has a detector: the encoder runs at most once (through the
    /// cache), whatever the number of members that use its embeddings.
    pub fn predict_proba(
        &self,
        texts: &[String],
        columns: &[(String, Vec<Cell>)],
        cache: Option<&mut EmbeddingCache>,
        quiet: bool,
    ) -> anyhow::Result<(Vec<f32>, Option<Vec<OosDecision>>)> {
        let emb = if self.needs_embeddings() {
            Some(DenseMatrix::from(
                embed_texts(texts, &self.files, &self.options, cache, quiet)?.0,
            ))
        } else {
            None
        };
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let proba = self.predict_proba_embedded(&refs, columns, emb.clone())?;
        let oos = self.oos(emb.as_ref(), &proba)?;
        Ok((proba, oos))
    }

    /// Out-of-scope decisions for rows with embeddings `emb` and class probabilities `proba`,
    /// or `None` when the bundle has no detector.
    pub fn oos(
        &self,
        emb: Option<&DenseMatrix>,
        proba: &[f32],
    ) -> anyhow::Result<Option<Vec<OosDecision>>> {
        let Some(det) = self.detector() else {
            return Ok(None);
        };
        let emb = emb.context("embeddings are missing for the out-of-scope detector")?;
        let k = self.predictor.labels().len();
        let scores = det.score(emb, proba, k);
        Ok(Some(
            scores
                .iter()
                .zip(proba.chunks_exact(k))
                .map(|(&score, p)| OosDecision {
                    is_oos: det.is_oos(score, p),
                    score,
                })
                .collect(),
        ))
    }

    /// Class probabilities of `texts` whose embeddings `emb` were computed by the caller (with
    /// an encoder loaded once, as the server does); `emb` may be `None` when no classifier
    /// uses embeddings.
    pub fn predict_proba_embedded(
        &self,
        texts: &[&str],
        columns: &[(String, Vec<Cell>)],
        emb: Option<DenseMatrix>,
    ) -> anyhow::Result<Vec<f32>> {
        let classifiers = self.predictor.classifiers();
        let mut probas = Vec::with_capacity(classifiers.len());
        for c in &classifiers {
            let own_emb = if uses_emb(c) {
                Some(
                    emb.clone()
                        .context("embeddings are missing for a classifier that uses them")?,
                )
            } else {
                None
            };
            let x = c.text_features.features(texts, own_emb, columns)?;
            probas.push(c.predict_proba(&x)?);
        }
        match &self.predictor {
            Predictor::Single(_) => Ok(probas.pop().expect("one classifier")),
            Predictor::Ensemble(e) => {
                let lengths: Vec<f32> = texts.iter().map(|t| t.chars().count() as f32).collect();
                let refs: Vec<&[f32]> = probas.iter().map(Vec::as_slice).collect();
                Ok(e.combine(&refs, &lengths)?)
            }
        }
    }
}

/// Whether an input is out of scope, and its score (higher = further from the known classes).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct OosDecision {
    /// Out of scope.
    pub is_oos: bool,
    /// The detector's score.
    pub score: f32,
}

fn uses_emb(c: &Classifier) -> bool {
    c.card.features.iter().any(|f| f == "emb")
}

/// Loads the bundle in `dir` and the encoder it was trained with (or `encoder`, which must
/// have the same weights).
pub(crate) fn load_bundle(dir: &Path, encoder: Option<&str>) -> anyhow::Result<Loaded> {
    let bundle = lmfuse_bundle::load(dir)
        .with_context(|| format!("cannot load the bundle {}", dir.display()))?;
    let predictor = Predictor::from_bundle(&bundle)
        .with_context(|| format!("cannot use the bundle {}", dir.display()))?;
    let info = predictor.encoder();
    let files = resolve_encoder(dir, info, encoder)?;
    let options = LoadOptions {
        pooling: Some(info.fingerprint.pooling),
        normalize: Some(info.fingerprint.normalize),
        max_seq_length: Some(info.fingerprint.max_seq_length),
        batch_tokens: None,
    };
    Ok(Loaded {
        predictor,
        files,
        options,
        manifest: bundle.manifest,
    })
}

/// Finds the encoder of the bundle in `dir`: `encoder` when given, else the one the bundle
/// records; checks that its weights are the ones the bundle was trained with. The one place
/// that decides where a bundle's encoder comes from.
fn resolve_encoder(
    dir: &Path,
    info: &EncoderInfo,
    encoder: Option<&str>,
) -> anyhow::Result<ModelFiles> {
    let spec = match encoder {
        Some(e) => ModelSpec::parse(e),
        // A fine-tuned encoder travels inside its bundle (checked by sha256 at load).
        None if info.in_bundle => ModelSpec::Dir(dir.join(lmfuse_bundle::ENCODER_DIR)),
        None if info.reference == lmfuse_encoder::DEFAULT_MODEL_NAME => ModelSpec::Default,
        None => ModelSpec::parse(&info.reference),
    };
    let files = ModelFiles::resolve(&spec).with_context(|| {
        format!(
            "cannot open the encoder {:?} of bundle {} (pass --encoder with its folder)",
            info.reference,
            dir.display()
        )
    })?;
    anyhow::ensure!(
        files.weights_sha256 == info.fingerprint.weights_sha256,
        "encoder mismatch: bundle {} was trained with weights sha256 {}, but {} has {}",
        dir.display(),
        info.fingerprint.weights_sha256,
        files.weights_path.display(),
        files.weights_sha256
    );
    Ok(files)
}
