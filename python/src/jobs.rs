//! `compare` and `finetune` on data files, as `lmfuse compare` and `lmfuse finetune` run
//! them (`lmfuse_pipeline::compare::compare`, `lmfuse_pipeline::finetune::finetune`); each
//! returns its JSON report.

use crate::settings::{cache_spec, choice, parse, DataSettings, EncoderSettings};
use crate::{py_err, value_error};
use lmfuse_pipeline::compare::{CompareSpec, ExperimentSpec, OofMembers};
use lmfuse_pipeline::data::{load_splits, SplitPlan};
use lmfuse_pipeline::finetune::FinetuneSpec;
use lmfuse_pipeline::preset::{Preset, SelectRule};
use lmfuse_pipeline::{PipelineError, Result, Silent};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

/// `lmfuse compare`'s settings (a dict with every key, named as its flags).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct CompareSettings {
    train: PathBuf,
    dev: Option<PathBuf>,
    test: Option<PathBuf>,
    folds: usize,
    seed: u64,
    c_grid: Vec<f64>,
    out: Option<PathBuf>,
    preset: String,
    select: String,
    time_limit: Option<f64>,
    calibrate: bool,
    singles: Option<Vec<String>>,
    members: Option<Vec<String>>,
    ensembles: Option<Vec<String>>,
    emb_weights: Vec<f32>,
    oof_members: String,
    finetune: bool,
    finetune_shared: bool,
    finetune_shared_alpha: Vec<f64>,
    finetuned_members: bool,
    save_candidate: Option<String>,
    finetune_epochs: usize,
    finetune_lr: f32,
    use_cache: bool,
    cache_dir: Option<PathBuf>,
    stop_words: String,
}

impl CompareSettings {
    fn spec(self, encoder: &EncoderSettings, data: &DataSettings) -> Result<CompareSpec> {
        let oof_members = match self.oof_members.as_str() {
            "bagged" => OofMembers::Bagged,
            "refit" => OofMembers::Refit,
            other => lmfuse_pipeline::bail!("oof_members={other:?}: expected bagged or refit"),
        };
        let preset = match self.preset.as_str() {
            "fast" => Preset::Fast,
            "medium" => Preset::Medium,
            "best" => Preset::Best,
            other => lmfuse_pipeline::bail!("preset={other:?}: expected fast, medium or best"),
        };
        let select = match self.select.as_str() {
            "best-cv" => SelectRule::BestCv,
            "one-se" => SelectRule::OneSe,
            other => lmfuse_pipeline::bail!("select={other:?}: expected best-cv or one-se"),
        };
        lmfuse_pipeline::ensure!(
            self.time_limit.is_none_or(|t| t.is_finite() && t > 0.0),
            "time_limit must be a positive number of seconds"
        );
        let exp = ExperimentSpec {
            model: encoder.choice()?,
            data: data.spec(Vec::new())?,
            cache: cache_spec(self.use_cache, self.cache_dir),
            train: self.train,
            dev: self.dev,
            test: self.test,
            folds: self.folds,
            seed: self.seed,
            c_grid: self.c_grid,
            out: self.out,
            stop_words: parse("stop_words", &self.stop_words)?,
        };
        let mut spec = CompareSpec::new(exp, preset);
        spec.preset_candidates = self.singles.is_none() && self.members.is_none();
        if let Some(v) = self.singles {
            spec.singles = v;
        }
        if let Some(v) = self.members {
            spec.members = v;
        }
        if let Some(v) = self.ensembles {
            spec.ensembles = v;
        }
        spec.finetune |= self.finetune;
        spec.finetune_shared |= self.finetune_shared;
        spec.finetuned_members |= self.finetuned_members;
        spec.emb_weights = self.emb_weights;
        spec.oof_members = oof_members;
        spec.finetune_shared_alpha = self.finetune_shared_alpha;
        spec.save_candidate = self.save_candidate;
        spec.finetune_epochs = self.finetune_epochs;
        spec.finetune_lr = self.finetune_lr;
        spec.select = select;
        spec.time_limit = self.time_limit;
        spec.calibrate = self.calibrate;
        Ok(spec)
    }
}

/// Runs `lmfuse compare`; returns its leaderboard as JSON (as `--json` prints it).
#[pyfunction]
#[pyo3(signature = (settings, encoder, data))]
pub fn compare(
    py: Python<'_>,
    settings: CompareSettings,
    encoder: EncoderSettings,
    data: DataSettings,
) -> PyResult<String> {
    let job = settings.spec(&encoder, &data).map_err(py_err)?;
    py.detach(|| -> Result<String> {
        let board = lmfuse_pipeline::compare::compare(&job, &Silent)?;
        Ok(serde_json::to_string(&board)?)
    })
    .map_err(py_err)
}

/// Runs `lmfuse finetune` on the files of `plan`'s kind, saving the bundle to `out`;
/// `options` holds the flags given (underscored names), the others keep the CLI's defaults.
/// Returns the report as JSON (as `--json` prints it).
#[pyfunction]
#[pyo3(signature = (train, dev, test, out, options, encoder, data))]
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    py: Python<'_>,
    train: PathBuf,
    dev: Option<PathBuf>,
    test: Option<PathBuf>,
    out: PathBuf,
    options: &Bound<'_, PyDict>,
    encoder: EncoderSettings,
    data: DataSettings,
) -> PyResult<String> {
    let mut spec = FinetuneSpec::default();
    for (key, value) in options.iter() {
        let key: String = key.extract()?;
        set_option(&mut spec, &key, &value)?;
    }
    let choice = encoder.choice().map_err(py_err)?;
    let data = data.spec(Vec::new()).map_err(py_err)?;
    let plan = SplitPlan {
        train,
        dev,
        test,
        seed: spec.seed,
        carve_dev: true,
        carve_test: true,
    };
    py.detach(|| -> Result<String> {
        spec.check()?;
        let splits = load_splits(&plan, &data)?;
        let outcome = lmfuse_pipeline::finetune::finetune(splits, &spec, &choice, &out, &Silent)?;
        Ok(serde_json::to_string(&outcome.report)?)
    })
    .map_err(py_err)
}

/// The fine-tuning options by name, for the error that lists them.
const OPTIONS: &str = "seed, run_dir, resume, epochs, batch_size, grad_accum, lr, head_lr, \
    layer_lr_decay, weight_decay, warmup, dropout, max_grad_norm, freeze_embeddings, \
    freeze_layers, eval_every, patience, metric, fgm, pgd, pgd_alpha, pgd_steps, lora, \
    lora_rank, lora_alpha, lora_dropout, lora_targets, contrastive, pair_iterations, \
    max_pairs, contrastive_lr, contrastive_epochs, contrastive_head, shared_head, \
    shared_head_alpha";

fn usize_option<'a>(spec: &'a mut FinetuneSpec, key: &str) -> Option<&'a mut usize> {
    Some(match key {
        "epochs" => &mut spec.epochs,
        "batch_size" => &mut spec.batch_size,
        "grad_accum" => &mut spec.grad_accum,
        "freeze_layers" => &mut spec.freeze_layers,
        "patience" => &mut spec.patience,
        "pgd_steps" => &mut spec.pgd_steps,
        "lora_rank" => &mut spec.lora_rank,
        "pair_iterations" => &mut spec.pair_iterations,
        "max_pairs" => &mut spec.max_pairs,
        "contrastive_epochs" => &mut spec.contrastive_epochs,
        _ => return None,
    })
}

fn f32_option<'a>(spec: &'a mut FinetuneSpec, key: &str) -> Option<&'a mut f32> {
    Some(match key {
        "lr" => &mut spec.lr,
        "head_lr" => &mut spec.head_lr,
        "layer_lr_decay" => &mut spec.layer_lr_decay,
        "weight_decay" => &mut spec.weight_decay,
        "warmup" => &mut spec.warmup,
        "dropout" => &mut spec.dropout,
        "max_grad_norm" => &mut spec.max_grad_norm,
        "pgd_alpha" => &mut spec.pgd_alpha,
        "lora_alpha" => &mut spec.lora_alpha,
        "lora_dropout" => &mut spec.lora_dropout,
        "contrastive_lr" => &mut spec.contrastive_lr,
        _ => return None,
    })
}

fn bool_option<'a>(spec: &'a mut FinetuneSpec, key: &str) -> Option<&'a mut bool> {
    Some(match key {
        "resume" => &mut spec.resume,
        "freeze_embeddings" => &mut spec.freeze_embeddings,
        "lora" => &mut spec.lora,
        "contrastive" => &mut spec.contrastive,
        "shared_head" => &mut spec.shared_head,
        _ => return None,
    })
}

/// Sets fine-tuning option `key` to `value`; an unknown name or a value of the wrong type
/// is a `ValueError` naming the option.
fn set_option(spec: &mut FinetuneSpec, key: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let bad = |e: PyErr| value_error(format!("{key}={value}: {e}"));
    let invalid = |e: PipelineError| value_error(e.to_string());
    if let Some(field) = usize_option(spec, key) {
        *field = value.extract().map_err(bad)?;
    } else if let Some(field) = f32_option(spec, key) {
        *field = value.extract().map_err(bad)?;
    } else if let Some(field) = bool_option(spec, key) {
        *field = value.extract().map_err(bad)?;
    } else {
        match key {
            "seed" => spec.seed = value.extract().map_err(bad)?,
            "shared_head_alpha" => spec.shared_head_alpha = value.extract().map_err(bad)?,
            "run_dir" => spec.run_dir = value.extract().map_err(bad)?,
            "eval_every" => spec.eval_every = value.extract().map_err(bad)?,
            "fgm" => spec.fgm = value.extract().map_err(bad)?,
            "pgd" => spec.pgd = value.extract().map_err(bad)?,
            "metric" => {
                let name: String = value.extract().map_err(bad)?;
                spec.metric = parse("metric", &name).map_err(invalid)?;
            }
            "contrastive_head" => {
                let name: String = value.extract().map_err(bad)?;
                spec.contrastive_head = choice(
                    "contrastive_head",
                    &name,
                    "logreg, svm, nb, knn, rf, gbdt, mlp, shared",
                )
                .map_err(invalid)?;
            }
            "lora_targets" => {
                let names: Vec<String> = value.extract().map_err(bad)?;
                spec.lora_targets = names
                    .iter()
                    .map(|n| choice("lora_targets", n, "query, key, value"))
                    .collect::<Result<_>>()
                    .map_err(invalid)?;
            }
            _ => {
                return Err(value_error(format!(
                    "unknown fine-tuning option {key:?}: expected one of {OPTIONS}"
                )))
            }
        }
    }
    Ok(())
}
