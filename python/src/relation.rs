//! Relation classifiers: fit on examples from Python through `lmfuse_pipeline::relation`,
//! loaded from relation bundles; probabilities, scores and saving.
//!
//! Python hands the examples over as JSON Lines text (markers in the text or `e1`/`e2`
//! spans), read by the same parser as the CLI's files, so errors name the set and line.

use crate::settings::EncoderSettings;
use crate::{py_err, value_error};
use lmfuse_pipeline::relation::{
    self, parse_relations, FinetuneParams, RelationExample, RelationFinetune, RelationModel,
    RelationTrainSpec,
};
use lmfuse_pipeline::{PipelineError, Silent};
use pyo3::prelude::*;
use std::path::{Path, PathBuf};

/// A classifier's settings as `RelationClassifier` passes them (a dict with every key).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct RelationSettings {
    c: Vec<f64>,
    other: String,
    dev_fraction: f64,
    finetune: bool,
    epochs: usize,
    batch_size: usize,
    lr: f32,
    head_lr: f32,
    seed: u64,
}

impl RelationSettings {
    fn spec(
        &self,
        encoder: &EncoderSettings,
        has_dev: bool,
    ) -> lmfuse_pipeline::Result<RelationTrainSpec> {
        Ok(RelationTrainSpec {
            train: PathBuf::from("X"),
            dev: has_dev.then(|| PathBuf::from("X_dev")),
            dev_fraction: self.dev_fraction,
            encoder: encoder.choice()?,
            other: self.other.clone(),
            c_grid: self.c.clone(),
            finetune: self.finetune.then(|| RelationFinetune {
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
            }),
            seed: self.seed,
        })
    }
}

/// Examples from JSON Lines text; `name` names them in errors.
fn examples(
    jsonl: &str,
    name: &str,
    labelled: bool,
) -> lmfuse_pipeline::Result<Vec<RelationExample>> {
    let found = parse_relations(jsonl.as_bytes(), Path::new(name), labelled)?;
    if found.is_empty() {
        return Err(PipelineError::Invalid(format!("{name}: no examples")));
    }
    Ok(found)
}

/// Trains a relation classifier on `train` (JSON Lines), choosing on `dev` or on a share held
/// out of `train`.
#[pyfunction]
pub fn relation_fit(
    py: Python<'_>,
    train: String,
    dev: Option<String>,
    settings: RelationSettings,
    encoder: EncoderSettings,
) -> PyResult<Relations> {
    let spec = settings.spec(&encoder, dev.is_some()).map_err(py_err)?;
    let (model, report) = py
        .detach(|| -> lmfuse_pipeline::Result<_> {
            let train = examples(&train, "X", true)?;
            let dev = dev.map(|d| examples(&d, "X_dev", true)).transpose()?;
            relation::train_examples(train, dev, &spec, &Silent)
        })
        .map_err(py_err)?;
    let report = serde_json::to_value(&report).map_err(|e| value_error(e.to_string()))?;
    Ok(Relations { model, report })
}

/// Loads a relation bundle written by `lmfuse relation train` or `RelationClassifier.save`.
#[pyfunction]
pub fn relation_load(py: Python<'_>, path: PathBuf) -> PyResult<Relations> {
    let model = py.detach(|| RelationModel::load(&path)).map_err(py_err)?;
    Ok(Relations {
        model,
        report: serde_json::Value::Null,
    })
}

/// A relation classifier ready to use: fitted in Python or loaded from a bundle.
#[pyclass(module = "lmfuse._native", frozen)]
pub struct Relations {
    model: RelationModel,
    report: serde_json::Value,
}

#[pymethods]
impl Relations {
    /// JSON: `labels`, `kind`, the `encoder` it reads, the training `report`.
    fn info(&self) -> String {
        serde_json::json!({
            "labels": self.model.labels(),
            "kind": self.model.kind(),
            "encoder": self.model.encoder().reference,
            "report": self.report,
        })
        .to_string()
    }

    /// Class probabilities of the examples (JSON Lines, labels not needed), row-major.
    fn predict_proba(&self, py: Python<'_>, jsonl: String) -> PyResult<Vec<f32>> {
        py.detach(|| -> lmfuse_pipeline::Result<_> {
            self.model.predict_proba(&examples(&jsonl, "X", false)?)
        })
        .map_err(py_err)
    }

    /// The official SemEval macro-F1, micro scores, accuracy and per-relation counts on
    /// labelled examples (JSON Lines), as JSON.
    fn evaluate(&self, py: Python<'_>, jsonl: String) -> PyResult<String> {
        let report = py
            .detach(|| -> lmfuse_pipeline::Result<_> {
                self.model
                    .evaluate(&examples(&jsonl, "X", true)?, Path::new("X"))
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
