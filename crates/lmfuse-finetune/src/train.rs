//! The training loop: epochs of shuffled mini-batches, AdamW, dev evaluation, early stopping,
//! metrics log and resumable checkpoints.

use crate::lora::LoraParams;
use crate::network::{Batch, Dropout, Network};
use crate::optim::{AdamW, Schedule};
use crate::FinetuneError;
use lmfuse_core::SeededRng;
use lmfuse_encoder::TokenizedText;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Checkpoint folder inside a run folder.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// Metrics log inside a run folder: one JSON object a line, one line per evaluation.
pub const METRICS_LOG: &str = "metrics.jsonl";
const STATE_JSON: &str = "state.json";
const CHECKPOINT_VERSION: u32 = 1;

/// The dev metric that early stopping follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Accuracy.
    Accuracy,
    /// Macro-averaged F1.
    MacroF1,
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "accuracy" => Ok(Metric::Accuracy),
            "macro_f1" | "f1" => Ok(Metric::MacroF1),
            _ => Err(format!("unknown metric {s:?} (accuracy, macro_f1)")),
        }
    }
}

/// Fine-tuning hyperparameters. [`FinetuneParams::check`] validates them once, up front.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneParams {
    /// Passes over the training set (at most).
    pub epochs: usize,
    /// Texts per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Peak learning rate of the encoder.
    pub lr: f32,
    /// Peak learning rate of the head.
    pub head_lr: f32,
    /// Layer-wise decay: layer `l` of `L` gets `lr · decay^(L − l)`, the embeddings
    /// `lr · decay^L`. 1 means one rate for the whole encoder.
    pub layer_lr_decay: f32,
    /// Decoupled weight decay (not on biases and LayerNorm).
    pub weight_decay: f32,
    /// Share of the optimiser steps spent warming up.
    pub warmup: f32,
    /// Dropout rate (embeddings, after attention and feed-forward blocks, head input).
    pub dropout: f32,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f32,
    /// Freeze the embedding tables and their LayerNorm.
    pub freeze_embeddings: bool,
    /// Freeze the lowest N transformer layers.
    pub freeze_layers: usize,
    /// Evaluate on dev every N optimiser steps and after the last one (`None`: at the end of
    /// each epoch).
    pub eval_every: Option<usize>,
    /// Stop after this many evaluations without improvement (0: never stop early).
    pub patience: usize,
    /// The metric that picks the best weights.
    pub metric: Metric,
    /// Seed of the head's initialisation, the batch order and dropout.
    pub seed: u64,
    /// FGM adversarial training: perturb the word embeddings by ε along the gradient.
    pub fgm: Option<f32>,
    /// PGD adversarial training: `steps` ascent steps of size `alpha` on the word embeddings,
    /// projected onto the ball of radius `epsilon`.
    #[serde(default)]
    pub pgd: Option<Pgd>,
    /// LoRA adapters instead of full fine-tuning.
    pub lora: Option<LoraParams>,
}

impl Default for FinetuneParams {
    fn default() -> Self {
        Self {
            epochs: 3,
            batch_size: 16,
            grad_accum: 1,
            lr: 3e-5,
            head_lr: 1e-3,
            layer_lr_decay: 1.0,
            weight_decay: 0.01,
            warmup: 0.1,
            dropout: 0.1,
            max_grad_norm: 1.0,
            freeze_embeddings: false,
            freeze_layers: 0,
            eval_every: None,
            patience: 2,
            metric: Metric::Accuracy,
            seed: 13,
            fgm: None,
            pgd: None,
            lora: None,
        }
    }
}

impl FinetuneParams {
    /// Validates every value.
    pub fn check(&self) -> Result<(), FinetuneError> {
        let bad = |m: String| Err(FinetuneError::Invalid(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("batch size and gradient accumulation must be at least 1".into());
        }
        for (name, v) in [
            ("learning rate", self.lr),
            ("head learning rate", self.head_lr),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} must be positive, got {v}"));
            }
        }
        if !(self.layer_lr_decay > 0.0 && self.layer_lr_decay <= 1.0) {
            return bad(format!(
                "layer-wise decay must be in (0, 1], got {}",
                self.layer_lr_decay
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(format!(
                "weight decay must be ≥ 0, got {}",
                self.weight_decay
            ));
        }
        if !(0.0..1.0).contains(&self.warmup) {
            return bad(format!(
                "warm-up share must be in [0, 1), got {}",
                self.warmup
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if !(self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite()) {
            return bad(format!(
                "max gradient norm must be ≥ 0, got {}",
                self.max_grad_norm
            ));
        }
        if self.eval_every == Some(0) {
            return bad("evaluation interval must be at least 1 step".into());
        }
        if let Some(eps) = self.fgm {
            if !(eps.is_finite() && eps > 0.0) {
                return bad(format!("FGM epsilon must be positive, got {eps}"));
            }
            if self.freeze_embeddings || self.lora.is_some() {
                return bad("FGM perturbs the word embeddings along their gradient: it needs them trainable (not with --freeze-embeddings or LoRA)".into());
            }
        }
        if let Some(p) = &self.pgd {
            if !(p.epsilon.is_finite()
                && p.epsilon > 0.0
                && p.alpha.is_finite()
                && p.alpha > 0.0
                && p.steps > 0)
            {
                return bad(format!(
                    "PGD needs positive epsilon, alpha and steps, got {p:?}"
                ));
            }
            if self.fgm.is_some() || self.freeze_embeddings || self.lora.is_some() {
                return bad("PGD perturbs the trainable word embeddings: not with FGM, --freeze-embeddings or LoRA".into());
            }
        }
        if let Some(l) = &self.lora {
            l.check()?;
        }
        Ok(())
    }
}

/// Projected gradient descent adversarial training (Madry et al.) on the word embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pgd {
    /// Radius of the perturbation ball.
    pub epsilon: f32,
    /// Size of each ascent step.
    pub alpha: f32,
    /// Ascent steps.
    pub steps: usize,
}

/// One evaluation, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Epoch (1-based) the evaluation happened in.
    pub epoch: usize,
    /// Optimiser steps so far.
    pub step: usize,
    /// Mean training loss since the previous evaluation.
    pub train_loss: f32,
    /// Dev accuracy.
    pub dev_accuracy: f64,
    /// Dev macro-F1.
    pub dev_macro_f1: f64,
    /// Dev log loss.
    pub dev_log_loss: f64,
    /// Learning-rate factor of the schedule at this step.
    pub lr_factor: f32,
    /// Seconds of training so far (this process).
    pub seconds: f64,
    /// Whether this is the best so far.
    pub best: bool,
}

/// Progress reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// An optimiser step finished.
    Step {
        /// Optimiser steps so far.
        step: usize,
        /// Total optimiser steps of the run.
        total: usize,
        /// The step's mean loss.
        loss: f32,
    },
    /// An evaluation finished.
    Eval(EvalRecord),
    /// Resumed from a checkpoint after this many steps.
    Resumed {
        /// Optimiser steps already done.
        step: usize,
    },
}

/// The outcome of [`fit`].
#[derive(Debug, Clone, Serialize)]
pub struct FitSummary {
    /// Every evaluation, in order (including those before a resume).
    pub evals: Vec<EvalRecord>,
    /// The best evaluation, whose weights the network now holds.
    pub best: EvalRecord,
    /// Optimiser steps taken in all.
    pub steps: usize,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Trainable values.
    pub trainable: usize,
    /// All parameter values.
    pub total: usize,
    /// Seconds spent in this process.
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CheckpointState {
    pub(crate) version: u32,
    pub(crate) params: FinetuneParams,
    pub(crate) n_values: usize,
    pub(crate) step: usize,
    pub(crate) epochs_done: usize,
    pub(crate) rng_state: u64,
    pub(crate) adam_steps: usize,
    pub(crate) best: Option<EvalRecord>,
    pub(crate) bad_evals: usize,
    pub(crate) evals: Vec<EvalRecord>,
    /// The file of weights and moments this state goes with.
    pub(crate) tensors: String,
    /// The file of the best weights, if any evaluation ran.
    pub(crate) best_tensors: Option<String>,
    /// Hash of the training and dev tokens and labels and of the initial weights: a resume
    /// must see the same data and starting point.
    pub(crate) fingerprint: String,
    /// Loss accumulated since the last evaluation (sum, count).
    pub(crate) loss_sum: f64,
    pub(crate) loss_count: usize,
}

/// FNV-1a over what `feed` gives and every 997th initial weight (cheap, stable across
/// platforms): a resume must see the same data and starting point.
pub(crate) fn fingerprint_of(feed: impl FnOnce(&mut dyn FnMut(u64)), values: &[f32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |v: u64| {
        for b in v.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(&mut eat);
    values
        .iter()
        .step_by(997)
        .for_each(|v| eat(v.to_bits() as u64));
    format!("{h:016x}")
}

/// [`fingerprint_of`] the training and dev texts and labels.
fn run_fingerprint(
    train: &[TokenizedText],
    y: &[usize],
    dev: &[TokenizedText],
    y_dev: &[usize],
    values: &[f32],
) -> String {
    let feed = |eat: &mut dyn FnMut(u64)| {
        for (set, labels) in [(train, y), (dev, y_dev)] {
            eat(set.len() as u64);
            for (t, &l) in set.iter().zip(labels) {
                eat(t.ids.len() as u64);
                t.ids.iter().chain(&t.type_ids).for_each(|&i| eat(i as u64));
                eat(l as u64);
            }
        }
    };
    fingerprint_of(feed, values)
}

/// Checks that every text fits the network: non-empty, within the positions, ids in range.
pub(crate) fn check_texts(
    net: &Network,
    sets: &[(&str, &[TokenizedText])],
) -> Result<(), FinetuneError> {
    let c = net.config();
    for (name, set) in sets {
        for (i, t) in set.iter().enumerate() {
            let bad = |m: String| {
                Err(FinetuneError::Invalid(format!(
                    "{name} text {}: {m}",
                    i + 1
                )))
            };
            if t.ids.is_empty() || t.ids.len() != t.type_ids.len() {
                return bad("no tokens (or token and segment ids differ in number)".into());
            }
            if t.ids.len() > c.max_tokens() {
                return bad(format!(
                    "{} tokens, the model has {} positions",
                    t.ids.len(),
                    c.max_tokens()
                ));
            }
            if let Some(id) = t.ids.iter().find(|&&id| id as usize >= c.vocab_size) {
                return bad(format!(
                    "token id {id} is outside the vocabulary ({})",
                    c.vocab_size
                ));
            }
            if let Some(id) = t
                .type_ids
                .iter()
                .find(|&&id| id as usize >= c.type_vocab_size)
            {
                return bad(format!(
                    "segment id {id} is outside the type vocabulary ({})",
                    c.type_vocab_size
                ));
            }
        }
    }
    Ok(())
}

/// Euclidean norm, accumulated in f64 (the adversarial perturbations' step directions).
fn l2_norm(v: &[f32]) -> f32 {
    v.iter().map(|x| (x * x) as f64).sum::<f64>().sqrt() as f32
}

/// Adds the gradient of the (scaled) cross-entropy of one training-mode pass over `batch` to
/// `grads`: the adversarial passes of FGM and PGD.
fn add_loss_gradient(
    net: &Network,
    batch: &Batch,
    labels: &[usize],
    scale: f32,
    dropout: f32,
    rng: &mut SeededRng,
    grads: &mut [f32],
) {
    let threads = rayon::current_num_threads();
    let fwd = net.forward(batch, Some(Dropout { rate: dropout, rng }), threads);
    let (_, d) = cross_entropy(&fwd.logits, labels, net.n_classes(), scale);
    net.backward(batch, &fwd, &d, grads, threads);
}

/// Scales `grads` so that the global norm over the trainable tensors is at most `max_norm`
/// (0: no clipping); a non-finite norm is an error naming the step.
pub(crate) fn clip_grad_norm(
    net: &Network,
    grads: &mut [f32],
    max_norm: f32,
    step: usize,
) -> Result<(), FinetuneError> {
    if max_norm <= 0.0 {
        return Ok(());
    }
    let norm = net
        .params
        .specs
        .iter()
        .filter(|s| !s.frozen)
        .map(|s| grads[s.range()].iter().map(|v| (v * v) as f64).sum::<f64>())
        .sum::<f64>()
        .sqrt() as f32;
    if !norm.is_finite() {
        return Err(FinetuneError::Invalid(format!(
            "training diverged at step {step}: the gradient norm is {norm} (lower the learning rate)"
        )));
    }
    if norm > max_norm {
        let c = max_norm / norm;
        grads.iter_mut().for_each(|g| *g *= c);
    }
    Ok(())
}

/// A checkpoint read back: its state, the weights and Adam moments, and the best weights.
pub(crate) struct Restored {
    pub(crate) state: CheckpointState,
    pub(crate) values: Vec<f32>,
    pub(crate) m: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) best_values: Vec<f32>,
}

/// Reads the checkpoint in `dir`, refusing one of another version, other hyperparameters,
/// other data or another network size.
pub(crate) fn load_checkpoint(
    dir: &Path,
    params: &FinetuneParams,
    fingerprint: &str,
    n_values: usize,
) -> Result<Restored, FinetuneError> {
    let state_path = dir.join(STATE_JSON);
    if !state_path.is_file() {
        return Err(FinetuneError::Checkpoint {
            path: state_path,
            message: "no checkpoint yet (the run ended before its first epoch); start again without --resume".into(),
        });
    }
    let text = std::fs::read_to_string(&state_path).map_err(io_err(&state_path))?;
    let state: CheckpointState =
        serde_json::from_str(&text).map_err(|e| FinetuneError::Checkpoint {
            path: state_path.clone(),
            message: e.to_string(),
        })?;
    let mismatch = |m: String| FinetuneError::Checkpoint {
        path: state_path.clone(),
        message: m,
    };
    if state.version != CHECKPOINT_VERSION {
        return Err(mismatch(format!(
            "version {} (this build reads {CHECKPOINT_VERSION})",
            state.version
        )));
    }
    if state.params != *params {
        return Err(mismatch(
            "it was written with other hyperparameters; resume with the same options".into(),
        ));
    }
    if state.fingerprint != fingerprint {
        return Err(mismatch(
            "it was written for other data or another model; resume with the same files".into(),
        ));
    }
    if state.n_values != n_values {
        return Err(mismatch(format!(
            "{} parameter values, this network has {n_values}",
            state.n_values
        )));
    }
    let mut v = read_vectors(
        &dir.join(&state.tensors),
        &["values", "adam_m", "adam_v"],
        n_values,
    )?;
    let (adam_v, m, values) = (
        v.pop().expect("three vectors"),
        v.pop().expect("three vectors"),
        v.pop().expect("three vectors"),
    );
    let best_values = match &state.best_tensors {
        Some(f) => read_vectors(&dir.join(f), &["values"], n_values)?
            .pop()
            .expect("one vector"),
        None => values.clone(),
    };
    Ok(Restored {
        state,
        values,
        m,
        v: adam_v,
        best_values,
    })
}

/// After a resume: the metrics log keeps exactly the evaluations the checkpoint knows.
pub(crate) fn restart_log(
    run_dir: Option<&Path>,
    evals: &[EvalRecord],
) -> Result<(), FinetuneError> {
    if let Some(run) = run_dir {
        let log = run.join(METRICS_LOG);
        let mut text = String::new();
        for e in evals {
            text.push_str(&serde_json::to_string(e).expect("plain record"));
            text.push('\n');
        }
        lmfuse_data::atomic_write(&log, |w| w.write_all(text.as_bytes())).map_err(io_err(&log))?;
    }
    Ok(())
}

/// A fresh run never picks up an earlier run's files: its checkpoints go, its log starts
/// empty.
pub(crate) fn fresh_run(
    run_dir: Option<&Path>,
    ckpt_dir: Option<&Path>,
) -> Result<(), FinetuneError> {
    if let Some(run) = run_dir {
        if let Some(dir) = ckpt_dir {
            clear_checkpoints(dir);
        }
        let log = run.join(METRICS_LOG);
        lmfuse_data::atomic_write(&log, |_| Ok(())).map_err(io_err(&log))?;
    }
    Ok(())
}

/// Removes a previous run's checkpoint files (and temp files of killed writes) from `dir`.
fn clear_checkpoints(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name == STATE_JSON
                || name.starts_with(".lmfuse-tmp-")
                || (name.ends_with(".safetensors")
                    && ["state-", "best-", "extra-"]
                        .iter()
                        .any(|p| name.starts_with(p)));
            if ours {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FinetuneError + '_ {
    move |source| FinetuneError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Writes named 1-D f32 vectors as a safetensors file, atomically.
pub(crate) fn write_vectors(path: &Path, vectors: &[(&str, &[f32])]) -> Result<(), FinetuneError> {
    let bytes: Vec<(String, Vec<u8>, usize)> = vectors
        .iter()
        .map(|(n, v)| (n.to_string(), to_bytes(v), v.len()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, len)| {
            TensorView::new(Dtype::F32, vec![*len], b)
                .map(|v| (n.clone(), v))
                .map_err(|e| FinetuneError::Checkpoint {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let data = safetensors::serialize(views, None).map_err(|e| FinetuneError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    lmfuse_data::atomic_write(path, |w| w.write_all(&data)).map_err(io_err(path))
}

/// Reads the named 1-D f32 vectors of a safetensors file, each of length `len`.
pub(crate) fn read_vectors(
    path: &Path,
    names: &[&str],
    len: usize,
) -> Result<Vec<Vec<f32>>, FinetuneError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let bad = |message: String| FinetuneError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    names
        .iter()
        .map(|n| {
            let t = st.tensor(n).map_err(|e| bad(format!("{n}: {e}")))?;
            if t.dtype() != Dtype::F32 || t.shape() != [len] {
                return Err(bad(format!(
                    "{n} has shape {:?} {:?}, expected [{len}] F32",
                    t.shape(),
                    t.dtype()
                )));
            }
            let v: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if v.iter().any(|x| !x.is_finite()) {
                return Err(bad(format!("{n} holds NaN or infinite values")));
            }
            Ok(v)
        })
        .collect()
}

/// The texts' order for `epoch`: a permutation fixed by the seed and the epoch alone, so a
/// resumed run sees the very batches an uninterrupted one would.
pub(crate) fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    SeededRng::new(seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .shuffle(&mut order);
    order
}

/// Whether a dev evaluation is due after `step` of `total`: every `eval_every` steps and at the
/// last step when it is set, else at the end of each epoch.
pub(crate) fn eval_due(
    eval_every: Option<usize>,
    step: usize,
    total: usize,
    end_of_epoch: bool,
) -> bool {
    match eval_every {
        Some(n) => step.is_multiple_of(n) || step == total,
        None => end_of_epoch,
    }
}

/// Where in a run a dev evaluation happens.
pub(crate) struct EvalPoint {
    /// Epoch, 1-based.
    pub epoch: usize,
    /// Optimiser steps so far.
    pub step: usize,
    /// The schedule's learning-rate factor.
    pub lr_factor: f32,
    /// Seconds of training so far.
    pub seconds: f64,
}

/// One dev evaluation's book-keeping, shared by [`fit`] and [`crate::fit_with_head`]: the
/// record of the evaluation at `at` with dev `(accuracy, macro-F1, log loss)` and the mean of
/// the training losses `(sum, count)` since the previous one (which restart at zero). It is
/// marked best when it beats `best` by `params.metric` (by more than 1e-12); then `keep` runs
/// (to keep the weights) and the patience count restarts, else the count grows. The record
/// is appended to the metrics log `log` and to `evals`, and `observer` hears of it. Returns
/// whether patience has run out.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_eval(
    params: &FinetuneParams,
    at: EvalPoint,
    (dev_accuracy, dev_macro_f1, dev_log_loss): (f64, f64, f64),
    train_loss: (&mut f64, &mut usize),
    (best, bad_evals, evals): (&mut Option<EvalRecord>, &mut usize, &mut Vec<EvalRecord>),
    log: Option<&Path>,
    observer: &mut dyn FnMut(&Event),
    keep: impl FnOnce() -> Result<(), FinetuneError>,
) -> Result<bool, FinetuneError> {
    let (loss_sum, loss_count) = train_loss;
    let mut record = EvalRecord {
        epoch: at.epoch,
        step: at.step,
        train_loss: (*loss_sum / (*loss_count).max(1) as f64) as f32,
        dev_accuracy,
        dev_macro_f1,
        dev_log_loss,
        lr_factor: at.lr_factor,
        seconds: at.seconds,
        best: false,
    };
    (*loss_sum, *loss_count) = (0.0, 0);
    let value = |r: &EvalRecord| match params.metric {
        Metric::Accuracy => r.dev_accuracy,
        Metric::MacroF1 => r.dev_macro_f1,
    };
    record.best = best
        .as_ref()
        .is_none_or(|b| value(&record) > value(b) + 1e-12);
    if record.best {
        *best = Some(record.clone());
        keep()?;
        *bad_evals = 0;
    } else {
        *bad_evals += 1;
    }
    if let Some(log) = log {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)
            .map_err(io_err(log))?;
        writeln!(
            f,
            "{}",
            serde_json::to_string(&record).expect("plain record")
        )
        .map_err(io_err(log))?;
    }
    evals.push(record.clone());
    observer(&Event::Eval(record));
    Ok(params.patience > 0 && *bad_evals >= params.patience)
}

/// Checks what [`fit`] and [`crate::fit_with_head`] are given: texts in train and dev, one
/// label a text, labels within the network's classes, texts the encoder can read.
pub(crate) fn check_fit_inputs(
    net: &Network,
    train: &[TokenizedText],
    y: &[usize],
    dev: &[TokenizedText],
    y_dev: &[usize],
) -> Result<(), FinetuneError> {
    if train.is_empty() || dev.is_empty() {
        return Err(FinetuneError::Invalid(
            "fine-tuning needs training and dev texts".into(),
        ));
    }
    if train.len() != y.len() || dev.len() != y_dev.len() {
        return Err(FinetuneError::Invalid(
            "texts and labels differ in number".into(),
        ));
    }
    let k = net.n_classes();
    if let Some(bad) = y.iter().chain(y_dev).find(|&&c| c >= k) {
        return Err(FinetuneError::Invalid(format!(
            "class index {bad} is out of range for {k} classes"
        )));
    }
    check_texts(net, &[("training", train), ("dev", dev)])?;
    Ok(())
}

/// The peak learning rate of a tensor at `depth`: 0 is the embeddings, 1..=L the layers (each
/// layer below the top gets `layer_lr_decay` times the one above), L + 1 the head.
pub(crate) fn peak_lr(params: &FinetuneParams, n_layers: usize, depth: usize) -> f32 {
    let below_top = match depth {
        0 => n_layers,
        d if d <= n_layers => n_layers - d,
        _ => return params.head_lr,
    };
    params.lr * params.layer_lr_decay.powi(below_top as i32)
}

/// Class probabilities of `texts` in evaluation mode, `texts × classes`.
pub fn predict_proba(net: &Network, texts: &[TokenizedText], threads: usize) -> Vec<f32> {
    let k = net.n_classes();
    let mut out = vec![0.0f32; texts.len() * k];
    // Batches of similar lengths, about 2,048 tokens each.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].ids.len());
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        let mut tokens = 0;
        while end < order.len() && (end == start || tokens + texts[order[end]].ids.len() <= 2048) {
            tokens += texts[order[end]].ids.len();
            end += 1;
        }
        let idx = &order[start..end];
        let batch = Batch::pack(
            idx.iter()
                .map(|&i| (texts[i].ids.as_slice(), texts[i].type_ids.as_slice())),
        );
        let fwd = net.forward(&batch, None, threads);
        for (row, &i) in fwd.logits.chunks_exact(k).zip(idx) {
            out[i * k..(i + 1) * k].copy_from_slice(&softmax(row));
        }
        start = end;
    }
    out
}

fn softmax(z: &[f32]) -> Vec<f32> {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = z.iter().map(|v| (v - max).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Mean cross-entropy of `logits` against `labels` and its gradient (scaled by `scale`).
pub(crate) fn cross_entropy(
    logits: &[f32],
    labels: &[usize],
    k: usize,
    scale: f32,
) -> (f32, Vec<f32>) {
    let n = labels.len();
    let mut grad = vec![0.0f32; logits.len()];
    let mut loss = 0.0f64;
    for ((row, g), &y) in logits
        .chunks_exact(k)
        .zip(grad.chunks_exact_mut(k))
        .zip(labels)
    {
        let p = softmax(row);
        loss -= (p[y].max(1e-30) as f64).ln();
        for (j, (gj, pj)) in g.iter_mut().zip(&p).enumerate() {
            *gj = (pj - if j == y { 1.0 } else { 0.0 }) * scale / n as f32;
        }
    }
    ((loss / n as f64) as f32, grad)
}

fn evaluate(
    net: &Network,
    dev: &[TokenizedText],
    y_dev: &[usize],
    threads: usize,
) -> Result<(f64, f64, f64), FinetuneError> {
    let proba = predict_proba(net, dev, threads);
    let labels: Vec<String> = (0..net.n_classes()).map(|i| i.to_string()).collect();
    let r = lmfuse_metrics::evaluate(y_dev, &proba, &labels)
        .map_err(|e| FinetuneError::Invalid(format!("dev evaluation: {e}")))?;
    Ok((r.accuracy, r.macro_f1, r.log_loss))
}

/// Fine-tunes `net` on `train` (tokenized texts and class indices), evaluating on `dev`; at
/// the end `net` holds the best weights by `params.metric`.
///
/// With `run_dir`, a checkpoint is written there atomically after every epoch (weights,
/// optimiser moments, generator state, step, evaluations) together with the metrics log; with
/// `resume`, training continues from that checkpoint and ends where an uninterrupted run with
/// the same seed ends.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    net: &mut Network,
    params: &FinetuneParams,
    train: &[TokenizedText],
    y: &[usize],
    dev: &[TokenizedText],
    y_dev: &[usize],
    run_dir: Option<&Path>,
    resume: bool,
    observer: &mut dyn FnMut(&Event),
) -> Result<FitSummary, FinetuneError> {
    params.check()?;
    check_fit_inputs(net, train, y, dev, y_dev)?;
    let k = net.n_classes();
    let threads = rayon::current_num_threads();
    let started = Instant::now();
    let n_values = net.params.values.len();
    let fingerprint = run_fingerprint(train, y, dev, y_dev, &net.params.values);
    let trainable: usize = net
        .params
        .specs
        .iter()
        .filter(|s| !s.frozen)
        .map(|s| s.len())
        .sum();

    let steps_per_epoch = train.len().div_ceil(params.batch_size * params.grad_accum);
    let schedule = Schedule {
        warmup: (params.warmup * (steps_per_epoch * params.epochs) as f32).round() as usize,
        total: steps_per_epoch * params.epochs,
    };
    let n_layers = net.config().num_hidden_layers;
    let lr_of = |spec: &crate::TensorSpec| peak_lr(params, n_layers, spec.depth);

    let mut opt = AdamW::new(n_values);
    let mut rng = SeededRng::new(params.seed ^ 0xD0_0D);
    let mut step = 0usize;
    let mut epochs_done = 0usize;
    let mut best: Option<EvalRecord> = None;
    let mut best_values = net.params.values.clone();
    let mut bad_evals = 0usize;
    let mut evals: Vec<EvalRecord> = Vec::new();

    let ckpt_dir = run_dir.map(|d| d.join(CHECKPOINT_DIR));
    let mut resumed_loss = (0.0f64, 0usize);
    if let Some(dir) = &ckpt_dir {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    if resume {
        let dir = ckpt_dir
            .as_ref()
            .ok_or_else(|| FinetuneError::Invalid("resuming needs a run folder".into()))?;
        let r = load_checkpoint(dir, params, &fingerprint, n_values)?;
        (opt.m, opt.v, net.params.values, best_values) = (r.m, r.v, r.values, r.best_values);
        let state = r.state;
        opt.steps = state.adam_steps;
        rng = SeededRng::new(state.rng_state);
        step = state.step;
        epochs_done = state.epochs_done;
        best = state.best;
        bad_evals = state.bad_evals;
        evals = state.evals;
        observer(&Event::Resumed { step });
        restart_log(run_dir, &evals)?;
        resumed_loss = (state.loss_sum, state.loss_count);
    } else {
        fresh_run(run_dir, ckpt_dir.as_deref())?;
    }

    let mut grads = vec![0.0f32; n_values];
    let (mut loss_sum, mut loss_count) = resumed_loss;
    let mut stopped_early = bad_evals >= params.patience && params.patience > 0 && best.is_some();
    let word_range = net.word_embeddings_range();

    let first_epoch = epochs_done;
    for epoch in first_epoch..params.epochs {
        if stopped_early {
            break;
        }
        let order = epoch_order(train.len(), params.seed, epoch);
        let micro: Vec<&[usize]> = order.chunks(params.batch_size).collect();
        let n_groups = micro.len().div_ceil(params.grad_accum);
        for (group_no, group) in micro.chunks(params.grad_accum).enumerate() {
            grads.iter_mut().for_each(|g| *g = 0.0);
            let mut step_loss = 0.0f32;
            let scale = 1.0 / group.len() as f32;
            for idx in group {
                let batch = Batch::pack(
                    idx.iter()
                        .map(|&i| (train[i].ids.as_slice(), train[i].type_ids.as_slice())),
                );
                let labels: Vec<usize> = idx.iter().map(|&i| y[i]).collect();
                let fwd = net.forward(
                    &batch,
                    Some(Dropout {
                        rate: params.dropout,
                        rng: &mut rng,
                    }),
                    threads,
                );
                let (loss, dlogits) = cross_entropy(&fwd.logits, &labels, k, scale);
                if !loss.is_finite() {
                    return Err(FinetuneError::Diverged { step, loss });
                }
                let adversarial = params.fgm.is_some() || params.pgd.is_some();
                // With accumulation, `grads` already holds earlier micro-batches: the
                // adversarial direction must be this batch's own word-embedding gradient.
                let word_before =
                    (adversarial && group.len() > 1).then(|| grads[word_range.clone()].to_vec());
                net.backward(&batch, &fwd, &dlogits, &mut grads, threads);
                drop(fwd);
                step_loss += loss * scale;
                let own_word_grad: Vec<f32> = if adversarial {
                    let mut g = grads[word_range.clone()].to_vec();
                    if let Some(before) = &word_before {
                        g.iter_mut().zip(before).for_each(|(a, b)| *a -= b);
                    }
                    g
                } else {
                    Vec::new()
                };
                if let Some(eps) = params.fgm {
                    // FGM: move the word embeddings by ε along the normalised gradient, add
                    // the gradient of the loss there, move them back.
                    let g = &own_word_grad;
                    let norm = l2_norm(g);
                    if norm > 0.0 && norm.is_finite() {
                        let saved = net.params.values[word_range.clone()].to_vec();
                        for (w, gv) in net.params.values[word_range.clone()].iter_mut().zip(g) {
                            *w += eps * gv / norm;
                        }
                        add_loss_gradient(
                            net,
                            &batch,
                            &labels,
                            scale,
                            params.dropout,
                            &mut rng,
                            &mut grads,
                        );
                        net.params.values[word_range.clone()].copy_from_slice(&saved);
                    }
                }
                if let Some(pgd) = params.pgd {
                    // PGD: `steps` ascent steps on a perturbation r of the word embeddings,
                    // each along the latest gradient and projected onto ‖r‖ ≤ ε; the gradient
                    // of the last one is added to the clean gradient.
                    let clean = grads.clone();
                    let saved = net.params.values[word_range.clone()].to_vec();
                    let mut r = vec![0.0f32; word_range.len()];
                    for t in 0..pgd.steps {
                        // Step 0 follows the clean gradient of this batch; later steps the
                        // gradient at the perturbed point (`grads` was zeroed for them).
                        let g = if t == 0 {
                            &own_word_grad[..]
                        } else {
                            &grads[word_range.clone()]
                        };
                        let norm = l2_norm(g);
                        if !(norm > 0.0 && norm.is_finite()) {
                            break;
                        }
                        for (ri, gi) in r.iter_mut().zip(g) {
                            *ri += pgd.alpha * gi / norm;
                        }
                        let rn = l2_norm(&r);
                        if rn > pgd.epsilon {
                            r.iter_mut().for_each(|v| *v *= pgd.epsilon / rn);
                        }
                        for ((w, s0), ri) in net.params.values[word_range.clone()]
                            .iter_mut()
                            .zip(&saved)
                            .zip(&r)
                        {
                            *w = s0 + ri;
                        }
                        if t + 1 < pgd.steps {
                            grads.iter_mut().for_each(|g| *g = 0.0);
                        } else {
                            grads.copy_from_slice(&clean);
                        }
                        add_loss_gradient(
                            net,
                            &batch,
                            &labels,
                            scale,
                            params.dropout,
                            &mut rng,
                            &mut grads,
                        );
                    }
                    net.params.values[word_range.clone()].copy_from_slice(&saved);
                }
            }
            clip_grad_norm(net, &mut grads, params.max_grad_norm, step)?;
            let factor = schedule.factor(step);
            opt.step(
                &mut net.params,
                &grads,
                |s| lr_of(s) * factor,
                params.weight_decay,
            );
            step += 1;
            loss_sum += step_loss as f64;
            loss_count += 1;
            observer(&Event::Step {
                step,
                total: schedule.total,
                loss: step_loss,
            });

            let end_of_epoch = group_no + 1 == n_groups;
            if eval_due(params.eval_every, step, schedule.total, end_of_epoch) {
                let dev_scores = evaluate(net, dev, y_dev, threads)?;
                let log = run_dir.map(|run| run.join(METRICS_LOG));
                stopped_early = record_eval(
                    params,
                    EvalPoint {
                        epoch: epoch + 1,
                        step,
                        lr_factor: factor,
                        seconds: started.elapsed().as_secs_f64(),
                    },
                    dev_scores,
                    (&mut loss_sum, &mut loss_count),
                    (&mut best, &mut bad_evals, &mut evals),
                    log.as_deref(),
                    observer,
                    || {
                        best_values.copy_from_slice(&net.params.values);
                        Ok(())
                    },
                )?;
            }
            if stopped_early {
                // Nothing more of this epoch; the checkpoint below records the stop.
                break;
            }
        }
        epochs_done = epoch + 1;
        save_checkpoint(
            ckpt_dir.as_deref(),
            params,
            net,
            &opt,
            (step, epochs_done),
            &rng,
            (&best, &best_values),
            bad_evals,
            &evals,
            (&fingerprint, loss_sum, loss_count),
        )?;
    }
    net.params.values.copy_from_slice(&best_values);
    let best = best.ok_or_else(|| FinetuneError::Invalid("no evaluation ran".into()))?;
    Ok(FitSummary {
        evals,
        best,
        steps: step,
        stopped_early,
        trainable,
        total: n_values,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes the checkpoint: the tensors under names of their own (`state-<epochs>`,
/// `best-<step>`), then `state.json` naming them, then removes older tensor files. A kill at
/// any point leaves a `state.json` whose files are complete.
#[allow(clippy::too_many_arguments)]
pub(crate) fn save_checkpoint(
    dir: Option<&Path>,
    params: &FinetuneParams,
    net: &Network,
    opt: &AdamW,
    (step, epochs_done): (usize, usize),
    rng: &SeededRng,
    (best, best_values): (&Option<EvalRecord>, &[f32]),
    bad_evals: usize,
    evals: &[EvalRecord],
    (fingerprint, loss_sum, loss_count): (&str, f64, usize),
) -> Result<(), FinetuneError> {
    let Some(dir) = dir else {
        return Ok(());
    };
    let tensors = format!("state-{epochs_done}.safetensors");
    write_vectors(
        &dir.join(&tensors),
        &[
            ("values", &net.params.values),
            ("adam_m", &opt.m),
            ("adam_v", &opt.v),
        ],
    )?;
    let best_tensors = match best {
        Some(b) => {
            // Always written: a file of that name may be left from a killed write.
            let name = format!("best-{}.safetensors", b.step);
            write_vectors(&dir.join(&name), &[("values", best_values)])?;
            Some(name)
        }
        None => None,
    };
    let state = CheckpointState {
        version: CHECKPOINT_VERSION,
        params: params.clone(),
        n_values: net.params.values.len(),
        step,
        epochs_done,
        rng_state: rng.state(),
        adam_steps: opt.steps,
        best: best.clone(),
        bad_evals,
        evals: evals.to_vec(),
        tensors: tensors.clone(),
        best_tensors: best_tensors.clone(),
        fingerprint: fingerprint.to_string(),
        loss_sum,
        loss_count,
    };
    let path: PathBuf = dir.join(STATE_JSON);
    let text = serde_json::to_vec_pretty(&state).expect("plain state");
    lmfuse_data::atomic_write(&path, |w| w.write_all(&text)).map_err(io_err(&path))?;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name == tensors || Some(&name) == best_tensors.as_ref();
            if !ours
                && name.ends_with(".safetensors")
                && (name.starts_with("state-") || name.starts_with("best-"))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// SetFit-style contrastive fine-tuning hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContrastiveParams {
    /// Rounds of pair sampling: each round draws one same-class and one other-class partner
    /// for every example (SetFit's `num_iterations`).
    pub iterations: usize,
    /// At most this many pairs in all (memory and time stay bounded on large sets).
    pub max_pairs: usize,
    /// Passes over the pairs.
    pub epochs: usize,
    /// Pairs per batch.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Warm-up share of the steps.
    pub warmup: f32,
    /// Dropout rate.
    pub dropout: f32,
    /// Clip the global gradient norm to this (0: no clipping; sentence-transformers uses 1).
    pub max_grad_norm: f32,
    /// Seed of the pairs, their order and dropout.
    pub seed: u64,
}

impl Default for ContrastiveParams {
    fn default() -> Self {
        Self {
            iterations: 20,
            max_pairs: 20_000,
            epochs: 1,
            batch_size: 16,
            lr: 2e-5,
            weight_decay: 0.01,
            warmup: 0.1,
            dropout: 0.1,
            max_grad_norm: 1.0,
            seed: 13,
        }
    }
}

impl ContrastiveParams {
    /// Validates every value.
    pub fn check(&self) -> Result<(), FinetuneError> {
        let bad = |m: &str| Err(FinetuneError::Invalid(m.to_string()));
        if self.iterations == 0 || self.max_pairs == 0 || self.epochs == 0 || self.batch_size == 0 {
            return bad("contrastive iterations, pairs, epochs and batch size must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("the contrastive learning rate must be positive");
        }
        if !(0.0..1.0).contains(&self.warmup) || !(0.0..1.0).contains(&self.dropout) {
            return bad("warm-up share and dropout must be in [0, 1)");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad("weight decay must be ≥ 0");
        }
        Ok(())
    }
}

/// Pairs `(a, b, target)` with target 1 for the same class and 0 otherwise: per round, every
/// example gets a random same-class partner (when its class has another example) and a random
/// other-class partner; capped at `max_pairs` and shuffled.
pub fn contrastive_pairs(y: &[usize], params: &ContrastiveParams) -> Vec<(usize, usize, f32)> {
    let k = y.iter().max().map_or(0, |m| m + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &c) in y.iter().enumerate() {
        by_class[c].push(i);
    }
    let mut rng = SeededRng::new(params.seed ^ 0x005E_7F17);
    let mut pairs = Vec::new();
    'rounds: for _ in 0..params.iterations {
        for (i, &c) in y.iter().enumerate() {
            let same = &by_class[c];
            if same.len() > 1 {
                let mut j = same[rng.below(same.len())];
                while j == i {
                    j = same[rng.below(same.len())];
                }
                pairs.push((i, j, 1.0));
            }
            if same.len() < y.len() {
                let mut j = rng.below(y.len());
                while y[j] == c {
                    j = rng.below(y.len());
                }
                pairs.push((i, j, 0.0));
            }
            if pairs.len() >= params.max_pairs {
                break 'rounds;
            }
        }
    }
    pairs.truncate(params.max_pairs);
    rng.shuffle(&mut pairs);
    pairs
}

/// Contrastive fine-tuning of the encoder (the SetFit recipe): for pairs of training texts,
/// the cosine similarity of their pooled vectors is pulled to 1 for the same class and to 0
/// otherwise (squared error). The head is not trained; fit a classical head on the new
/// embeddings afterwards. Returns the mean loss of each epoch.
pub fn fit_contrastive(
    net: &mut Network,
    params: &ContrastiveParams,
    train: &[TokenizedText],
    y: &[usize],
    observer: &mut dyn FnMut(&Event),
) -> Result<Vec<f32>, FinetuneError> {
    params.check()?;
    if train.len() != y.len() || train.len() < 2 {
        return Err(FinetuneError::Invalid(
            "contrastive training needs at least two labelled texts".into(),
        ));
    }
    check_texts(net, &[("training", train)])?;
    let pairs = contrastive_pairs(y, params);
    if pairs.is_empty() {
        return Err(FinetuneError::Invalid(
            "no pairs: every class has a single example and there is one class".into(),
        ));
    }
    let threads = rayon::current_num_threads();
    let n_layers = net.config().num_hidden_layers;
    for s in &mut net.params.specs {
        if s.depth > n_layers {
            s.frozen = true;
        }
    }
    let h = net.config().hidden_size;
    let n_values = net.params.values.len();
    let mut opt = AdamW::new(n_values);
    let mut grads = vec![0.0f32; n_values];
    let steps_per_epoch = pairs.len().div_ceil(params.batch_size);
    let schedule = Schedule {
        warmup: (params.warmup * (steps_per_epoch * params.epochs) as f32).round() as usize,
        total: steps_per_epoch * params.epochs,
    };
    let mut rng = SeededRng::new(params.seed ^ 0xC0_5E);
    let mut step = 0;
    let mut epoch_losses = Vec::new();
    for epoch in 0..params.epochs {
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        SeededRng::new(params.seed ^ (epoch as u64 + 7)).shuffle(&mut order);
        let mut sum = 0.0f64;
        for chunk in order.chunks(params.batch_size) {
            let b = chunk.len();
            // One packed batch: the first texts of the pairs, then the second ones.
            let texts: Vec<&TokenizedText> = chunk
                .iter()
                .map(|&p| &train[pairs[p].0])
                .chain(chunk.iter().map(|&p| &train[pairs[p].1]))
                .collect();
            let batch = Batch::pack(
                texts
                    .iter()
                    .map(|t| (t.ids.as_slice(), t.type_ids.as_slice())),
            );
            let fwd = net.forward(
                &batch,
                Some(Dropout {
                    rate: params.dropout,
                    rng: &mut rng,
                }),
                threads,
            );
            let mut dpooled = vec![0.0f32; 2 * b * h];
            let mut loss = 0.0f32;
            for (r, &p) in chunk.iter().enumerate() {
                let u = &fwd.pooled[r * h..(r + 1) * h];
                let v = &fwd.pooled[(b + r) * h..(b + r + 1) * h];
                let nu = u.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-8);
                let nv = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-8);
                let dot: f32 = u.iter().zip(v).map(|(a, c)| a * c).sum();
                let cos = dot / (nu * nv);
                let diff = cos - pairs[p].2;
                loss += diff * diff / b as f32;
                let g = 2.0 * diff / b as f32;
                let (du, dv) = dpooled.split_at_mut(b * h);
                let (du, dv) = (&mut du[r * h..(r + 1) * h], &mut dv[r * h..(r + 1) * h]);
                for j in 0..h {
                    du[j] = g * (v[j] / (nu * nv) - cos * u[j] / (nu * nu));
                    dv[j] = g * (u[j] / (nu * nv) - cos * v[j] / (nv * nv));
                }
            }
            if !loss.is_finite() {
                return Err(FinetuneError::Diverged { step, loss });
            }
            grads.iter_mut().for_each(|g| *g = 0.0);
            net.backward_from_pooled(&batch, &fwd, &dpooled, &mut grads, threads);
            drop(fwd);
            clip_grad_norm(net, &mut grads, params.max_grad_norm, step)?;
            let factor = schedule.factor(step);
            opt.step(
                &mut net.params,
                &grads,
                |_| params.lr * factor,
                params.weight_decay,
            );
            step += 1;
            sum += loss as f64;
            observer(&Event::Step {
                step,
                total: schedule.total,
                loss,
            });
        }
        epoch_losses.push((sum / steps_per_epoch as f64) as f32);
    }
    Ok(epoch_losses)
}

/// Pooled vectors of `texts` in evaluation mode, `texts × hidden`, L2-normalised when
/// `normalize` (as the sentence encoder does for models that say so).
pub fn embed(net: &Network, texts: &[TokenizedText], normalize: bool, threads: usize) -> Vec<f32> {
    let h = net.config().hidden_size;
    let mut out = vec![0.0f32; texts.len() * h];
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].ids.len());
    for idx in order.chunks(64) {
        let batch = Batch::pack(
            idx.iter()
                .map(|&i| (texts[i].ids.as_slice(), texts[i].type_ids.as_slice())),
        );
        let fwd = net.forward(&batch, None, threads);
        for (row, &i) in fwd.pooled.chunks_exact(h).zip(idx) {
            let dst = &mut out[i * h..(i + 1) * h];
            dst.copy_from_slice(row);
            if normalize {
                let n = dst.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                dst.iter_mut().for_each(|x| *x /= n);
            }
        }
    }
    out
}
