//! A bundle ready to predict: its classifier(s), and the encoder it was trained with, resolved
//! and checked. Shared by `eval`, `predict` and `serve`.

use anyhow::Context;
use lmfuse_core::DenseMatrix;
use lmfuse_data::Cell;
use lmfuse_encoder::{LoadOptions, ModelFiles, ModelSpec};
use lmfuse_train::{Classifier, EncoderInfo, OosDetector, Predictor};
use std::path::Path;

/// A bundle with its encoder(s) resolved and checked.
pub(crate) struct Loaded {
    /// The classifier, or the ensemble of classifiers.
    pub predictor: Predictor,
    /// The encoders the classifiers read, in [`Predictor::encoders`]' order: the predictor's
    /// own first, then (in an ensemble) one fine-tuned for a member inside the bundle.
    pub encoders: Vec<LoadedEncoder>,
    /// The bundle's manifest.
    pub manifest: lmfuse_bundle::Manifest,
}

/// One encoder of a bundle, resolved.
pub(crate) struct LoadedEncoder {
    /// As the classifiers' cards record it.
    pub info: EncoderInfo,
    /// Its files (same weights as at training).
    pub files: ModelFiles,
    /// Pooling, normalisation and maximum length as at training.
    pub options: LoadOptions,
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

    /// The predictor's own encoder (of an ensemble: the one its members share).
    pub fn main_encoder(&self) -> &LoadedEncoder {
        &self.encoders[0]
    }

    /// Index in [`Loaded::encoders`] of the encoder `c` reads.
    fn encoder_of(&self, c: &Classifier) -> usize {
        self.encoders
            .iter()
            .position(|e| e.info == c.card.encoder)
            .expect("every classifier's encoder is loaded")
    }

    /// Whether some classifier reads the embeddings of encoder `i`, or (for the main one)
    /// the out-of-scope detector does.
    pub fn needs_encoder(&self, i: usize) -> bool {
        (i == 0 && self.detector().is_some())
            || self
                .predictor
                .classifiers()
                .iter()
                .any(|c| uses_emb(c) && self.encoder_of(c) == i)
    }

    /// The out-of-scope detector of a single-classifier bundle trained with one.
    pub fn detector(&self) -> Option<&OosDetector> {
        match &self.predictor {
            Predictor::Single(c) => c.oos.as_ref(),
            Predictor::Ensemble(_) => None,
        }
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

    /// Class probabilities of `texts` whose embeddings `embs` (one per encoder of
    /// [`Loaded::encoders`], `None` where no classifier reads it) were computed by the caller
    /// (with encoders loaded once, as the server does).
    pub fn predict_proba_embedded(
        &self,
        texts: &[&str],
        columns: &[(String, Vec<Cell>)],
        embs: &[Option<DenseMatrix>],
    ) -> anyhow::Result<Vec<f32>> {
        let classifiers = self.predictor.classifiers();
        let mut probas = Vec::with_capacity(classifiers.len());
        for c in &classifiers {
            let own_emb = if uses_emb(c) {
                let i = self.encoder_of(c);
                Some(embs.get(i).cloned().flatten().with_context(|| {
                    format!(
                        "embeddings of encoder {:?} are missing for a classifier that uses them",
                        self.encoders[i].info.reference
                    )
                })?)
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
    let mut encoders = Vec::new();
    for (i, info) in predictor.encoders().into_iter().enumerate() {
        // `encoder` stands in for the predictor's own; a member's fine-tuned encoder is in
        // the bundle.
        let files = resolve_encoder(dir, info, if i == 0 { encoder } else { None })?;
        let options = LoadOptions {
            pooling: Some(info.fingerprint.pooling),
            normalize: Some(info.fingerprint.normalize),
            max_seq_length: Some(info.fingerprint.max_seq_length),
            batch_tokens: None,
        };
        encoders.push(LoadedEncoder {
            info: info.clone(),
            files,
            options,
        });
    }
    Ok(Loaded {
        predictor,
        encoders,
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
