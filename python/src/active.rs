//! Active learning as `lmfuse select` runs it (`lmfuse_pipeline::active`): the texts of a pool
//! to label next with a bundle, and the learning curves of the strategies on labelled files;
//! each returns JSON.

use crate::py_err;
use crate::settings::{cache_spec, parse, DataSettings, EncoderSettings};
use lmfuse_pipeline::active::{
    learning_curves as curves, select_next, CurvesSpec, SimulateSpec, Strategy,
};
use lmfuse_pipeline::model::Model;
use lmfuse_pipeline::{Result, Silent};
use pyo3::prelude::*;
use std::path::PathBuf;

/// The loop of a simulation (a dict with every key, named as `lmfuse select`'s flags).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct CurvesSettings {
    strategies: Vec<String>,
    seeds: Vec<u64>,
    initial: usize,
    step: usize,
    budget: usize,
    c: f64,
    use_cache: bool,
    cache_dir: Option<PathBuf>,
}

/// Runs `lmfuse select --simulate` on `train` (the pool) and `test`; the curves as JSON.
#[pyfunction]
#[pyo3(signature = (train, test, settings, encoder, data))]
pub fn learning_curves(
    py: Python<'_>,
    train: PathBuf,
    test: PathBuf,
    settings: CurvesSettings,
    encoder: EncoderSettings,
    data: DataSettings,
) -> PyResult<String> {
    let strategies = settings
        .strategies
        .iter()
        .map(|s| parse::<Strategy>("strategies", s))
        .collect::<Result<Vec<_>>>()
        .map_err(py_err)?;
    let spec = CurvesSpec {
        strategies,
        seeds: settings.seeds,
        run: SimulateSpec {
            strategy: Strategy::Random,
            initial: settings.initial,
            step: settings.step,
            budget: settings.budget,
            c: settings.c,
            seed: 0,
        },
    };
    let choice = encoder.choice().map_err(py_err)?;
    let data = data.spec(Vec::new()).map_err(py_err)?;
    let cache = cache_spec(settings.use_cache, settings.cache_dir);
    py.detach(|| -> Result<String> {
        let report = curves(&train, &test, &data, (&choice, &cache), &spec, &Silent)?;
        Ok(serde_json::to_string(&report)?)
    })
    .map_err(py_err)
}

/// Runs `lmfuse select` with the bundle at `bundle` on `pool`; the chosen texts as JSON.
#[pyfunction]
#[pyo3(signature = (bundle, pool, labelled, strategy, budget, seed, use_cache, cache_dir))]
#[allow(clippy::too_many_arguments)]
pub fn select(
    py: Python<'_>,
    bundle: PathBuf,
    pool: Vec<String>,
    labelled: Vec<String>,
    strategy: String,
    budget: usize,
    seed: u64,
    use_cache: bool,
    cache_dir: Option<PathBuf>,
) -> PyResult<String> {
    let strategy: Strategy = parse("strategy", &strategy).map_err(py_err)?;
    let cache = cache_spec(use_cache, cache_dir);
    py.detach(|| -> Result<String> {
        let model = Model::load(&bundle, None)?;
        let chosen = select_next(
            &model,
            &pool,
            &labelled,
            (strategy, budget, seed),
            &cache,
            &Silent,
        )?;
        Ok(serde_json::to_string(&chosen)?)
    })
    .map_err(py_err)
}
