//! Entity taggers: fit on token and tag lists from Python through `lmfuse_pipeline::ner`,
//! loaded from NER bundles; tags, character spans, scores and saving.

use crate::settings::EncoderSettings;
use crate::{py_err, value_error};
use lmfuse_pipeline::ner::{
    self, CrfParams, FeatureParams, FinetuneParams, NerFinetune, NerModel, NerTrainSpec, TagOptions,
};
use lmfuse_pipeline::{PipelineError, Silent};
use pyo3::prelude::*;
use std::path::PathBuf;

/// A tagger's settings as `EntityTagger` passes them (a dict with every key).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct TaggerSettings {
    hand: bool,
    emb: bool,
    c2: Vec<f64>,
    max_iter: usize,
    min_freq: usize,
    window: usize,
    affixes: usize,
    bigrams: bool,
    tag_scheme: Option<String>,
    repair: bool,
    finetune: Option<String>,
    epochs: usize,
    batch_size: usize,
    lr: f32,
    head_lr: f32,
    seed: u64,
}

impl TaggerSettings {
    fn tag_options(&self) -> lmfuse_pipeline::Result<TagOptions> {
        let scheme = match &self.tag_scheme {
            Some(s) => Some(s.parse().map_err(PipelineError::Invalid)?),
            None => None,
        };
        Ok(TagOptions {
            scheme,
            repair: self.repair,
        })
    }

    fn spec(&self, encoder: &EncoderSettings) -> lmfuse_pipeline::Result<NerTrainSpec> {
        Ok(NerTrainSpec {
            train: PathBuf::new(),
            dev: None,
            tags: self.tag_options()?,
            crf: CrfParams {
                c2: self.c2.first().copied().unwrap_or(0.1),
                max_iter: self.max_iter,
                min_freq: self.min_freq,
                hand_features: self.hand,
                features: FeatureParams {
                    window: self.window,
                    affixes: self.affixes,
                    bigrams: self.bigrams,
                },
                ..CrfParams::default()
            },
            c2_grid: self.c2.clone(),
            gazetteers: Vec::new(),
            encoder: if self.emb {
                Some(encoder.choice()?)
            } else {
                None
            },
            finetune: self.finetune_spec()?,
        })
    }

    /// The fine-tuning for tagging, when `finetune` names a head.
    fn finetune_spec(&self) -> lmfuse_pipeline::Result<Option<NerFinetune>> {
        let Some(head) = &self.finetune else {
            return Ok(None);
        };
        Ok(Some(NerFinetune {
            head: head.parse().map_err(PipelineError::Invalid)?,
            params: FinetuneParams {
                epochs: self.epochs,
                batch_size: self.batch_size,
                lr: self.lr,
                head_lr: self.head_lr,
                seed: self.seed,
                ..FinetuneParams::default()
            },
            run_dir: None,
            resume: false,
            folds: 3,
        }))
    }
}

/// Token lists and tag lists of one set, as Python passes them.
type Sequences = (Vec<Vec<String>>, Vec<Vec<String>>);

/// Trains a tagger on `train` (choosing `c2` on `dev` when several are given).
#[pyfunction]
pub fn ner_fit(
    py: Python<'_>,
    train: Sequences,
    dev: Option<Sequences>,
    settings: TaggerSettings,
    encoder: EncoderSettings,
) -> PyResult<Tagger> {
    let spec = settings.spec(&encoder).map_err(py_err)?;
    let options = spec.tags;
    let (model, report) = py
        .detach(|| -> lmfuse_pipeline::Result<_> {
            let train = ner::from_sequences(train.0, train.1, options, "y")?;
            let dev = match dev {
                Some((t, g)) => Some(ner::from_sequences(t, g, options, "y_dev")?),
                None => None,
            };
            ner::train_sets(train, dev, &spec, &Silent)
        })
        .map_err(py_err)?;
    let report = serde_json::to_value(&report).map_err(|e| value_error(e.to_string()))?;
    Ok(Tagger { model, report })
}

/// Loads an NER bundle written by `lmfuse ner train` or `EntityTagger.save`.
#[pyfunction]
pub fn ner_load(py: Python<'_>, path: PathBuf) -> PyResult<Tagger> {
    let model = py.detach(|| NerModel::load(&path)).map_err(py_err)?;
    Ok(Tagger {
        model,
        report: serde_json::Value::Null,
    })
}

/// A tagger ready to use: fitted in Python or loaded from a bundle.
#[pyclass(module = "lmfuse._native", frozen)]
pub struct Tagger {
    model: NerModel,
    report: serde_json::Value,
}

#[pymethods]
impl Tagger {
    /// JSON: entity `types`, the `encoder` it reads (or null), the training `report`.
    fn info(&self) -> String {
        serde_json::json!({
            "types": self.model.types(),
            "encoder": self.model.encoder().map(|e| &e.reference),
            "report": self.report,
        })
        .to_string()
    }

    /// IOB2 tags of each tokenised sentence.
    fn tag(&self, py: Python<'_>, sentences: Vec<Vec<String>>) -> PyResult<Vec<Vec<String>>> {
        let tagged = py.detach(|| self.model.tag(&sentences)).map_err(py_err)?;
        Ok(tagged.into_iter().map(|(tags, _)| tags).collect())
    }

    /// The entities of raw texts as JSON: one list of {start, end, label, text, score} per
    /// text, offsets in characters.
    fn find(&self, py: Python<'_>, texts: Vec<String>) -> PyResult<String> {
        let found = py.detach(|| self.model.find(&texts)).map_err(py_err)?;
        serde_json::to_string(&found).map_err(|e| value_error(e.to_string()))
    }

    /// Strict entity scores of the tagger on token and tag lists, as JSON.
    fn evaluate(
        &self,
        py: Python<'_>,
        tokens: Vec<Vec<String>>,
        tags: Vec<Vec<String>>,
    ) -> PyResult<String> {
        let report = py
            .detach(|| -> lmfuse_pipeline::Result<_> {
                let set = ner::from_sequences(tokens, tags, TagOptions::default(), "y")?;
                self.model.evaluate(&set)
            })
            .map_err(py_err)?;
        serde_json::to_string(&report).map_err(|e| value_error(e.to_string()))
    }

    /// Writes the bundle to `path` atomically.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let report = serde_json::from_value(self.report.clone()).ok();
        py.detach(|| self.model.save(&path, report.as_ref()))
            .map_err(py_err)
    }
}
