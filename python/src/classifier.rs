//! Text classifiers: fit on rows from Python through `lmfuse_pipeline::classify::train`,
//! loaded from bundles with `Model::load`; probabilities, decision values and saving.

use crate::settings::{cache_spec, choice, parse, EncoderSettings};
use crate::{py_err, value_error};
use lmfuse_augment::AugmentSpec;
use lmfuse_classic::{ClassWeight, Head};
use lmfuse_core::{DenseMatrix, Features, LabelSet};
use lmfuse_data::{Cell, LabelledTexts};
use lmfuse_pipeline::augment::AugmentPlan;
use lmfuse_pipeline::classify::{FeatureSet, OosSpec, TrainSpec};
use lmfuse_pipeline::data::{splits_from_rows, DataSpec, SplitPlan};
use lmfuse_pipeline::encoders::{embed_texts, CacheSpec};
use lmfuse_pipeline::model::Model;
use lmfuse_pipeline::selftrain::{self_train, SelfTrainSpec};
use lmfuse_pipeline::{bail, ensure, Context, PipelineError, Result, Silent};
use lmfuse_train::{HeadKind, Predictor, TrainOptions};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;
use std::path::{Path, PathBuf};

/// A side-column cell as Python passes it (`None` is a missing value).
#[derive(FromPyObject)]
pub enum CellIn {
    /// A string (a category).
    Text(String),
    /// A number (bools count as 0 and 1).
    Number(f64),
}

/// Side columns as Python passes them: name, then one cell per row.
pub type ColumnsIn = Vec<(String, Vec<Option<CellIn>>)>;

/// The side columns as the library takes them; every column must have `rows` cells and
/// numbers must be finite.
fn cells(columns: ColumnsIn, rows: usize) -> PyResult<Vec<(String, Vec<Cell>)>> {
    let mut out = Vec::with_capacity(columns.len());
    for (name, values) in columns {
        if values.len() != rows {
            return Err(value_error(format!(
                "feature column {name:?} has {} values for {rows} texts",
                values.len()
            )));
        }
        let mut column = Vec::with_capacity(rows);
        for (i, v) in values.into_iter().enumerate() {
            column.push(match v {
                None => Cell::Missing,
                Some(CellIn::Text(t)) => Cell::Text(t),
                Some(CellIn::Number(x)) if x.is_finite() => Cell::Number(x),
                Some(CellIn::Number(x)) => {
                    return Err(value_error(format!(
                        "feature column {name:?} holds {x} at row {i}: numbers must be finite \
                         (None marks a missing value)"
                    )))
                }
            });
        }
        out.push((name, column));
    }
    Ok(out)
}

/// `TextClassifier`'s parameters, as a dict with every key.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct FitSettings {
    features: String,
    head: String,
    c: Option<f64>,
    c_grid: Option<Vec<f64>>,
    class_weight: String,
    emb_weight: f32,
    seed: u64,
    oos: Option<String>,
    oos_label: String,
    oos_k: usize,
    oos_objective: String,
    use_cache: bool,
    cache_dir: Option<PathBuf>,
    stop_words: String,
    augment: Option<String>,
    thesaurus: Option<PathBuf>,
    augment_cmd: Option<String>,
    augment_filter: Option<f32>,
    self_train_rounds: usize,
    pseudo_threshold: f32,
    pseudo_growth: f64,
}

impl FitSettings {
    fn train_spec(&self) -> Result<TrainSpec> {
        let head: HeadKind = choice(
            "head",
            &self.head,
            "logreg, svm, nb, knn, rf, gbdt, mlp, shared",
        )?;
        let features: FeatureSet = parse("features", &self.features)?;
        let class_weight: ClassWeight =
            choice("class_weight", &self.class_weight, "uniform, balanced")?;
        let c_grid = match (self.c, &self.c_grid) {
            (Some(c), _) => vec![c],
            (None, Some(grid)) => grid.clone(),
            (None, None) => TrainSpec::default().c_grid,
        };
        let oos = match &self.oos {
            None => None,
            Some(o) => Some(OosSpec {
                choice: parse("oos", o)?,
                label: self.oos_label.clone(),
                k: self.oos_k,
                objective: parse("oos_objective", &self.oos_objective)?,
            }),
        };
        Ok(TrainSpec {
            head,
            features,
            c_grid,
            class_weight,
            emb_weight: self.emb_weight,
            seed: self.seed,
            oos,
            stop_words: parse("stop_words", &self.stop_words)?,
            augment: self.augment_plan()?,
        })
    }
}

impl FitSettings {
    /// The augmentation `augment`, `augment_cmd` and `augment_filter` ask for, if any.
    fn augment_plan(&self) -> Result<Option<AugmentPlan>> {
        if self.augment.is_none() && self.augment_cmd.is_none() && self.augment_filter.is_none() {
            return Ok(None);
        }
        let spec: Option<AugmentSpec> = match &self.augment {
            Some(text) => Some(parse("augment", text)?),
            None => None,
        };
        let plan = AugmentPlan {
            spec,
            thesaurus: self.thesaurus.clone(),
            command: self.augment_cmd.clone(),
            filter: self.augment_filter,
        };
        plan.check()?;
        Ok(Some(plan))
    }
}

/// Whether training needs a dev slice: to choose among several settings of the head, or to
/// tune an out-of-scope threshold. Otherwise the one setting is fit on every row.
fn needs_dev(spec: &TrainSpec) -> bool {
    let options = TrainOptions {
        head: spec.head,
        c_grid: spec.c_grid.clone(),
        ..TrainOptions::default()
    };
    options.candidates().len() > 1 || spec.oos.is_some()
}

/// Trains on rows from Python as `lmfuse train` trains on a file, without a test slice.
fn train_rows(
    texts: Vec<String>,
    labels: Vec<String>,
    columns: Vec<(String, Vec<Cell>)>,
    unlabeled: Option<Vec<String>>,
    (settings, encoder): (&FitSettings, &EncoderSettings),
) -> Result<Fitted> {
    let spec = settings.train_spec()?;
    // Rows from Python: no format, and the columns named only in messages.
    let data = DataSpec {
        format: None,
        text_col: "text".to_string(),
        label_col: "label".to_string(),
        feature_cols: columns.iter().map(|(name, _)| name.clone()).collect(),
    };
    spec.check(&data)?;
    let plan = SplitPlan {
        train: PathBuf::from("<python data>"),
        dev: None,
        test: None,
        seed: settings.seed,
        carve_dev: needs_dev(&spec),
        carve_test: false,
    };
    let rows = LabelledTexts {
        lines: (1..=texts.len()).collect(),
        texts,
        labels,
        columns,
    };
    let splits = splits_from_rows(rows, &plan, &data)?;
    let encoder = encoder.choice()?;
    let cache = cache_spec(settings.use_cache, settings.cache_dir.clone());
    let trained = match unlabeled {
        None => lmfuse_pipeline::classify::train(&splits, &spec, &encoder, &cache, &Silent)?,
        Some(pool) => {
            let st = SelfTrainSpec {
                rounds: settings.self_train_rounds,
                threshold: settings.pseudo_threshold,
                growth: settings.pseudo_growth,
            };
            self_train(&splits, &pool, (&spec, &st), &encoder, &cache, &Silent)?
        }
    };
    let report = serde_json::to_value(&trained.report)?;
    let model = Model::from_classifier(trained.classifier, encoder.model.as_deref())?;
    Ok(Fitted {
        model,
        source: None,
        cache,
        report,
    })
}

/// Fits a classifier on `texts` with `labels` (strings) and side `columns`; with
/// `unlabeled` texts, self-trains (as `lmfuse train --unlabeled`).
#[pyfunction]
#[pyo3(signature = (texts, labels, columns, settings, encoder, unlabeled=None))]
pub fn fit(
    py: Python<'_>,
    texts: Vec<String>,
    labels: Vec<String>,
    columns: ColumnsIn,
    settings: FitSettings,
    encoder: EncoderSettings,
    unlabeled: Option<Vec<String>>,
) -> PyResult<Fitted> {
    if labels.len() != texts.len() {
        return Err(value_error(format!(
            "{} labels for {} texts: y needs one label per text",
            labels.len(),
            texts.len()
        )));
    }
    let columns = cells(columns, texts.len())?;
    py.detach(|| train_rows(texts, labels, columns, unlabeled, (&settings, &encoder)))
        .map_err(py_err)
}

/// Loads the bundle in `path` (a classifier or an ensemble) with the encoders it reads, run
/// in `precision` (`None`: as the bundle records).
#[pyfunction]
#[pyo3(signature = (path, use_cache, cache_dir, precision=None))]
pub fn load(
    py: Python<'_>,
    path: PathBuf,
    use_cache: bool,
    cache_dir: Option<PathBuf>,
    precision: Option<String>,
) -> PyResult<Fitted> {
    let precision =
        crate::settings::parse_optional("precision", precision.as_deref()).map_err(py_err)?;
    let loaded = py.detach(|| -> Result<_> {
        let model = Model::load_in(&path, None, precision)?;
        let source = std::fs::canonicalize(&path)
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        Ok((model, source))
    });
    let (model, source) = loaded.map_err(load_error)?;
    Ok(Fitted {
        model,
        source: Some(source),
        cache: cache_spec(use_cache, cache_dir),
        report: serde_json::Value::Null,
    })
}

/// Copies the bundle in `path` to `out` with its encoders recorded in `precision` (no
/// retraining; in int8 a fine-tuned encoder inside is stored converted); returns what was
/// written as JSON text (`lmfuse models convert --bundle`'s report).
#[pyfunction]
#[pyo3(signature = (path, out, precision))]
pub fn convert_bundle(
    py: Python<'_>,
    path: PathBuf,
    out: PathBuf,
    precision: String,
) -> PyResult<String> {
    let precision = crate::settings::parse("precision", &precision).map_err(py_err)?;
    let done = py
        .detach(|| lmfuse_pipeline::convert::convert_bundle(&path, &out, precision))
        .map_err(load_error)?;
    serde_json::to_string(&done).map_err(|e| value_error(e.to_string()))
}

/// A bundle that cannot be read (no manifest, a bad checksum, an unknown format) is the
/// caller's input: `ValueError`; the rest as [`py_err`].
fn load_error(e: PipelineError) -> PyErr {
    let bad_bundle = matches!(
        e.root(),
        PipelineError::Bundle(_) | PipelineError::Train(lmfuse_train::TrainError::Bundle { .. })
    );
    if bad_bundle && !e.is_not_found() {
        value_error(e.chain_message())
    } else {
        py_err(e)
    }
}

/// The fold (0..n_folds) of each label, stratified by class and seeded, as `lmfuse compare`
/// and `lmfuse tune` assign them (classes ordered as lmfuse orders labels).
#[pyfunction]
#[pyo3(signature = (labels, n_folds, seed))]
pub fn stratified_folds(labels: Vec<String>, n_folds: usize, seed: u64) -> PyResult<Vec<usize>> {
    if n_folds < 2 {
        return Err(value_error(format!("n_folds={n_folds}: at least 2 folds")));
    }
    let set = LabelSet::from_labels(labels.iter().map(String::as_str));
    let y: Vec<usize> = labels.iter().filter_map(|l| set.index(l)).collect();
    Ok(lmfuse_fusion::stratified_folds(&y, n_folds, seed))
}

/// A classifier ready to predict: fitted in Python or loaded from a bundle.
#[pyclass(module = "lmfuse._native", frozen)]
pub struct Fitted {
    model: Model,
    /// The bundle folder it was loaded from (`None`: fitted in Python).
    source: Option<PathBuf>,
    cache: CacheSpec,
    /// The training report of a fit (null for a loaded bundle).
    report: serde_json::Value,
}

#[pymethods]
impl Fitted {
    /// JSON: `labels`, `feature_cols`, the bundle's `card`, whether it has a
    /// `decision_function`, the training `report` and the `source` folder.
    fn info(&self) -> PyResult<String> {
        let info = serde_json::json!({
            "labels": self.model.labels().names(),
            "feature_cols": self.model.feature_cols(),
            "card": self.model.manifest.model,
            "decision_function": self.linear_head().is_some(),
            "report": self.report,
            "source": self.source,
        });
        Ok(info.to_string())
    }

    /// Class probabilities, texts × classes (columns in the order of the labels).
    fn predict_proba<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        columns: ColumnsIn,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (rows, k) = (texts.len(), self.model.labels().len());
        let columns = cells(columns, rows)?;
        let proba = if rows == 0 {
            Vec::new()
        } else {
            py.detach(|| -> Result<Vec<f32>> {
                let mut cache = self.cache.open()?;
                let (proba, _) =
                    self.model
                        .predict_proba(&texts, &columns, cache.as_mut(), &Silent)?;
                Ok(proba)
            })
            .map_err(py_err)?
        };
        to_array(py, rows, k, proba)
    }

    /// The linear head's scores `X·W + b`, texts × classes (logreg: logits; svm: margins).
    fn decision_function<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        columns: ColumnsIn,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let (rows, k) = (texts.len(), self.model.labels().len());
        let columns = cells(columns, rows)?;
        let scores = py
            .detach(|| self.decisions(&texts, &columns))
            .map_err(py_err)?;
        to_array(py, rows, k, scores)
    }

    /// Writes the bundle to `path` atomically (a loaded bundle: copied from its folder, as
    /// it was loaded).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.write(&path)).map_err(py_err)
    }
}

/// A `rows × cols` numpy array of `data`.
fn to_array<T: numpy::Element>(
    py: Python<'_>,
    rows: usize,
    cols: usize,
    data: Vec<T>,
) -> PyResult<Bound<'_, PyArray2<T>>> {
    let array = Array2::from_shape_vec((rows, cols), data)
        .map_err(|e| value_error(format!("result of the wrong shape: {e}")))?;
    Ok(array.into_pyarray(py))
}

/// The weights and intercepts of a linear head.
enum Linear<'a> {
    Logreg(&'a lmfuse_classic::LogisticRegression),
    Svm(&'a lmfuse_classic::LinearSvm),
}

impl Fitted {
    /// The classifier's head when it is linear (a single logreg or svm, not bagged).
    fn linear_head(&self) -> Option<(&lmfuse_train::Classifier, Linear<'_>)> {
        let Predictor::Single(c) = &self.model.predictor else {
            return None;
        };
        match &c.head {
            Head::Logreg(m) => Some((c, Linear::Logreg(m))),
            Head::Svm(m) => Some((c, Linear::Svm(m))),
            _ => None,
        }
    }

    fn decisions(&self, texts: &[String], columns: &[(String, Vec<Cell>)]) -> Result<Vec<f64>> {
        let Some((c, head)) = self.linear_head() else {
            bail!(
                "only a single logreg or svm classifier has a decision function: use predict_proba"
            );
        };
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let main = self.model.main_encoder();
        let emb = match &main.files {
            Some(files) if c.card.features.iter().any(|f| f == "emb") => {
                let mut cache = self.cache.open()?;
                let (emb, _) = embed_texts(texts, files, &main.options, cache.as_mut(), &Silent)?;
                Some(DenseMatrix::from(emb))
            }
            _ => None,
        };
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let x = c.text_features.features(&refs, emb, columns)?;
        match head {
            Linear::Logreg(m) => linear_scores(&x, m.coef(), m.intercept()),
            Linear::Svm(m) => Ok(m.decision_function(&x)?),
        }
    }

    fn write(&self, dir: &Path) -> Result<()> {
        match (&self.source, &self.model.predictor) {
            (Some(src), _) => copy_bundle(src, &self.model.manifest, dir),
            (None, Predictor::Single(c)) => lmfuse_pipeline::classify::save_classifier(c, dir),
            (None, Predictor::Ensemble(_)) => {
                bail!("an ensemble is saved by the command that built it")
            }
        }
    }
}

/// `X·W + b` for every row of `x`, `rows × classes`, with `coef` `features × classes`
/// row-major.
fn linear_scores(x: &Features, coef: &[f32], intercept: &[f32]) -> Result<Vec<f64>> {
    let k = intercept.len();
    ensure!(
        coef.len() == x.cols() * k,
        "the head takes {} feature columns, the features have {}",
        coef.len() / k.max(1),
        x.cols()
    );
    let mut z = Vec::with_capacity(x.rows() * k);
    for r in 0..x.rows() {
        let mut row: Vec<f64> = intercept.iter().map(|&b| f64::from(b)).collect();
        let mut add = |j: usize, v: f32| {
            for (c, s) in row.iter_mut().enumerate() {
                *s += f64::from(v) * f64::from(coef[j * k + c]);
            }
        };
        match x {
            Features::Dense(m) => m.row(r).iter().enumerate().for_each(|(j, &v)| add(j, v)),
            Features::Sparse(m) => {
                let (idx, vals) = m.row(r);
                idx.iter().zip(vals).for_each(|(&j, &v)| add(j as usize, v));
            }
        }
        z.extend(row);
    }
    Ok(z)
}

/// Copies the bundle in `src` to `dir` (atomically), after checking that it is still the
/// one loaded (`loaded`'s checksums).
fn copy_bundle(src: &Path, loaded: &lmfuse_bundle::Manifest, dir: &Path) -> Result<()> {
    let bundle = lmfuse_bundle::load(src)
        .with_context(|| format!("cannot read the bundle {} to save it", src.display()))?;
    ensure!(
        bundle.manifest.files == loaded.files,
        "the bundle {} changed since it was loaded: load it again to save it",
        src.display()
    );
    let mut files = Vec::with_capacity(bundle.files.len());
    for name in &bundle.files {
        let path = src.join(name);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        files.push((name.clone(), bytes));
    }
    lmfuse_bundle::save_with_files(dir, bundle.manifest, &bundle.tensors, &bundle.json, &files)
        .with_context(|| format!("cannot save the bundle to {}", dir.display()))
}
