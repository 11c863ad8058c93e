//! A bundle ready to predict: its classifier(s), and the encoder(s) they read, resolved and
//! checked. What `eval`, `predict`, the server and the Python package load.

use crate::encoders::embed_texts;
use crate::ensure;
use crate::error::{Context, PipelineError, Result};
use crate::observe::Observer;
use lmfuse_cache::EmbeddingCache;
use lmfuse_core::{DenseMatrix, Precision};
use lmfuse_data::Cell;
use lmfuse_encoder::{LoadOptions, ModelFiles, ModelSpec};
use lmfuse_train::{Classifier, EncoderInfo, OosDetector, Predictor};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A bundle with its encoder(s) resolved and checked.
pub struct Model {
    /// The classifier, or the ensemble of classifiers.
    pub predictor: Predictor,
    /// The encoders the classifiers read, in [`Predictor::encoders`]' order: the predictor's
    /// own first, then (in an ensemble) one fine-tuned for a member inside the bundle.
    pub encoders: Vec<ModelEncoder>,
    /// The bundle's manifest.
    pub manifest: lmfuse_bundle::Manifest,
}

/// One encoder of a bundle.
pub struct ModelEncoder {
    /// As the classifiers' cards record it.
    pub info: EncoderInfo,
    /// Its files (same weights as at training); `None` when nothing in the bundle reads its
    /// embeddings (a TF-IDF-only classifier), so it was not looked for.
    pub files: Option<ModelFiles>,
    /// Pooling, normalisation and maximum length as at training.
    pub options: LoadOptions,
}

impl ModelEncoder {
    /// Its files; an error when the bundle does not need (so did not resolve) them.
    pub fn files(&self) -> Result<&ModelFiles> {
        self.files.as_ref().with_context(|| {
            format!(
                "the encoder {:?} is not loaded: nothing in this bundle reads its embeddings",
                self.info.reference
            )
        })
    }
}

/// Whether an input is out of scope, and its score (higher = further from the known classes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OosDecision {
    /// Out of scope.
    pub is_oos: bool,
    /// The detector's score.
    pub score: f32,
}

/// One text's prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// The most probable class.
    pub label: String,
    /// Every class's probability.
    pub probabilities: BTreeMap<String, f32>,
    /// Out-of-scope decision and score, for bundles with a detector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oos: Option<OosDecision>,
}

fn uses_emb(c: &Classifier) -> bool {
    c.card.features.iter().any(|f| f == "emb")
}

impl Model {
    /// Loads the bundle in `dir` and the encoders it reads (`encoder` instead of the
    /// predictor's own, which must have the same weights). An encoder nothing reads is not
    /// looked for, so a TF-IDF-only bundle loads on a machine without any model.
    pub fn load(dir: &Path, encoder: Option<&str>) -> Result<Model> {
        Self::load_in(dir, encoder, None)
    }

    /// [`Model::load`] with every encoder run in `precision` instead of the one the bundle
    /// records (`None`: as recorded). An encoder stored in int8 cannot run in f32.
    pub fn load_in(
        dir: &Path,
        encoder: Option<&str>,
        precision: Option<Precision>,
    ) -> Result<Model> {
        let bundle = lmfuse_bundle::load(dir)
            .with_context(|| format!("cannot load the bundle {}", dir.display()))?;
        if bundle.manifest.model.get("task").and_then(|t| t.as_str()) == Some(crate::ner::TASK) {
            return Err(PipelineError::Invalid(format!(
                "{} is a named-entity bundle: use `lmfuse ner predict`",
                dir.display()
            )));
        }
        let predictor = Predictor::from_bundle(&bundle)
            .with_context(|| format!("cannot use the bundle {}", dir.display()))?;
        Self::with_encoders(predictor, bundle.manifest, Some(dir), encoder, precision)
    }

    /// A classifier just trained (the Python package's `fit`), ready to predict without a
    /// bundle on disk: its encoder resolved and checked as [`Model::load`] does (`encoder`
    /// instead of the one its card records, with the same weights).
    pub fn from_classifier(classifier: Classifier, encoder: Option<&str>) -> Result<Model> {
        let (manifest, _, _) = classifier.to_bundle(crate::VERSION, &crate::now_rfc3339());
        Self::with_encoders(
            Predictor::Single(Box::new(classifier)),
            manifest,
            None,
            encoder,
            None,
        )
    }

    /// `predictor` with the encoders it reads resolved; `dir` is its bundle folder (`None`
    /// for a classifier not saved, which cannot hold an encoder of its own).
    fn with_encoders(
        predictor: Predictor,
        manifest: lmfuse_bundle::Manifest,
        dir: Option<&Path>,
        encoder: Option<&str>,
        precision: Option<Precision>,
    ) -> Result<Model> {
        let mut encoders = Vec::new();
        for (i, info) in predictor.encoders().into_iter().enumerate() {
            let needed = reads_encoder(&predictor, i, info);
            // `encoder` stands in for the predictor's own; a member's fine-tuned encoder is in
            // the bundle.
            let files = match needed {
                true => Some(resolve_encoder(
                    dir,
                    info,
                    if i == 0 { encoder } else { None },
                )?),
                false => None,
            };
            let mut options = recorded_options(info);
            if precision.is_some() {
                options.precision = precision;
            }
            encoders.push(ModelEncoder {
                info: info.clone(),
                files,
                options,
            });
        }
        Ok(Model {
            predictor,
            encoders,
            manifest,
        })
    }

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

    /// The classes, in the order of the probability columns.
    pub fn labels(&self) -> &lmfuse_core::LabelSet {
        self.predictor.labels()
    }

    /// The predictor's own encoder (of an ensemble: the one its members share).
    pub fn main_encoder(&self) -> &ModelEncoder {
        &self.encoders[0]
    }

    /// Index in [`Model::encoders`] of the encoder `c` reads.
    fn encoder_of(&self, c: &Classifier) -> usize {
        self.encoders
            .iter()
            .position(|e| e.info == c.card.encoder)
            .expect("every classifier's encoder is listed")
    }

    /// Whether some classifier reads the embeddings of encoder `i`, or (for the main one)
    /// the out-of-scope detector does.
    pub fn needs_encoder(&self, i: usize) -> bool {
        self.encoders[i].files.is_some()
    }

    /// The out-of-scope detector of a single-classifier bundle trained with one.
    pub fn detector(&self) -> Option<&OosDetector> {
        match &self.predictor {
            Predictor::Single(c) => c.oos.as_ref(),
            Predictor::Ensemble(_) => None,
        }
    }

    /// Class probabilities of `texts` (with side `columns`), row-major, and the out-of-scope
    /// decisions where the bundle has a detector: each encoder runs at most once (through
    /// the cache), whatever the number of members that use its embeddings.
    pub fn predict_proba(
        &self,
        texts: &[String],
        columns: &[(String, Vec<Cell>)],
        mut cache: Option<&mut EmbeddingCache>,
        on: &dyn Observer,
    ) -> Result<(Vec<f32>, Option<Vec<OosDecision>>)> {
        let mut embs = Vec::with_capacity(self.encoders.len());
        for e in &self.encoders {
            embs.push(match &e.files {
                Some(files) => {
                    let (emb, _) = embed_texts(texts, files, &e.options, cache.as_deref_mut(), on)?;
                    Some(DenseMatrix::from(emb))
                }
                None => None,
            });
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let proba = self.predict_proba_embedded(&refs, columns, &embs)?;
        let oos = self.oos(embs[0].as_ref(), &proba)?;
        Ok((proba, oos))
    }

    /// One [`Prediction`] per text (see [`Model::predict_proba`]).
    pub fn predict(
        &self,
        texts: &[String],
        columns: &[(String, Vec<Cell>)],
        cache: Option<&mut EmbeddingCache>,
        on: &dyn Observer,
    ) -> Result<Vec<Prediction>> {
        let (proba, oos) = self.predict_proba(texts, columns, cache, on)?;
        Ok(self.predictions(&proba, oos.as_deref()))
    }

    /// Rows of probabilities (and decisions) as [`Prediction`]s.
    pub fn predictions(&self, proba: &[f32], oos: Option<&[OosDecision]>) -> Vec<Prediction> {
        let labels = self.labels();
        let k = labels.len();
        proba
            .chunks_exact(k)
            .enumerate()
            .map(|(i, row)| Prediction {
                label: labels.name(lmfuse_metrics::argmax(row)).to_string(),
                probabilities: labels
                    .names()
                    .iter()
                    .cloned()
                    .zip(row.iter().copied())
                    .collect(),
                oos: oos.map(|d| d[i]),
            })
            .collect()
    }

    /// Out-of-scope decisions for rows with embeddings `emb` and class probabilities `proba`,
    /// or `None` when the bundle has no detector.
    pub fn oos(
        &self,
        emb: Option<&DenseMatrix>,
        proba: &[f32],
    ) -> Result<Option<Vec<OosDecision>>> {
        let Some(det) = self.detector() else {
            return Ok(None);
        };
        let emb = emb.context("embeddings are missing for the out-of-scope detector")?;
        let k = self.labels().len();
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
    /// [`Model::encoders`], `None` where no classifier reads it) were computed by the caller
    /// (with encoders loaded once, as the server does).
    pub fn predict_proba_embedded(
        &self,
        texts: &[&str],
        columns: &[(String, Vec<Cell>)],
        embs: &[Option<DenseMatrix>],
    ) -> Result<Vec<f32>> {
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

/// Whether some classifier of `predictor` reads the embeddings of its encoder `i` (`info`),
/// or (for the main one) its out-of-scope detector does.
fn reads_encoder(predictor: &Predictor, i: usize, info: &EncoderInfo) -> bool {
    let detector = matches!(predictor, Predictor::Single(c) if c.oos.is_some());
    (i == 0 && detector)
        || predictor
            .classifiers()
            .iter()
            .any(|c| uses_emb(c) && &c.card.encoder == info)
}

/// Finds the encoder of the bundle in `dir`: `encoder` when given, else the one the bundle
/// records; checks that its weights are the ones the bundle was trained with. The one place
/// that decides where a bundle's encoder comes from.
/// The load options that reproduce an encoder as a bundle recorded it.
pub(crate) fn recorded_options(info: &EncoderInfo) -> LoadOptions {
    LoadOptions {
        pooling: Some(info.fingerprint.pooling),
        normalize: Some(info.fingerprint.normalize),
        max_seq_length: Some(info.fingerprint.max_seq_length),
        batch_tokens: None,
        prefix: Some(info.fingerprint.prefix.clone()),
        long_text: info.fingerprint.long_text,
        precision: Some(info.fingerprint.precision),
    }
}

pub(crate) fn resolve_encoder(
    dir: Option<&Path>,
    info: &EncoderInfo,
    encoder: Option<&str>,
) -> Result<ModelFiles> {
    let name = dir.map_or("(not saved)".to_string(), |d| d.display().to_string());
    let spec = match encoder {
        Some(e) => ModelSpec::parse(e),
        // A fine-tuned encoder travels inside its bundle (checked by sha256 at load).
        None if info.in_bundle => match dir {
            Some(dir) => ModelSpec::Dir(dir.join(lmfuse_bundle::ENCODER_DIR)),
            None => crate::bail!("the encoder {:?} is not saved anywhere", info.reference),
        },
        None if info.reference == lmfuse_encoder::DEFAULT_MODEL_NAME => ModelSpec::Default,
        None => ModelSpec::parse(&info.reference),
    };
    let files = ModelFiles::resolve(&spec).with_context(|| {
        format!(
            "cannot open the encoder {:?} of bundle {name} (pass --encoder with its folder)",
            info.reference,
        )
    })?;
    ensure!(
        files.weights_sha256 == info.fingerprint.weights_sha256,
        "encoder mismatch: bundle {name} was trained with weights sha256 {}, but {} has {}",
        info.fingerprint.weights_sha256,
        files.weights_path.display(),
        files.weights_sha256
    );
    Ok(files)
}
