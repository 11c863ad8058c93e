//! The training loop of tasks read from rows of the last layer (tagging, relations): the
//! network's linear layer applied to chosen token states, trained end to end with the
//! schedule, layer-wise rates, clipping, dev evaluation and early stopping of [`crate::fit`].

use crate::network::{apply_mask, Batch, Forward, Network, ParamStore, TensorSpec};
use crate::optim::{AdamW, Schedule};
use crate::train::{
    clip_grad_norm, epoch_order, eval_due, fingerprint_of, fresh_run, io_err, load_checkpoint,
    read_vectors, record_eval, restart_log, save_checkpoint, write_vectors, EvalPoint,
};
use crate::{EvalRecord, Event, FinetuneError, FinetuneParams, FitSummary, Metric, CHECKPOINT_DIR};
use lmfuse_core::SeededRng;
use lmfuse_encoder::ops;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A task trained by [`drive`].
pub(crate) trait RowTask {
    /// Training items.
    fn train_len(&self) -> usize;
    /// Values trained beside the network (the CRF transitions): the head's rate, no decay,
    /// not clipped. Zero for none.
    fn extra_len(&self) -> usize;
    /// Forward, loss and backward of the training items `idx`: adds the network's gradient
    /// into `grads` and the extra values' into `dextra`; returns the mean loss.
    fn step(
        &self,
        net: &Network,
        extra: &[f32],
        idx: &[usize],
        rng: &mut SeededRng,
        grads: (&mut [f32], &mut [f64]),
    ) -> f32;
    /// (accuracy, the score that chooses, loss) on dev, in evaluation mode.
    fn evaluate(&mut self, net: &Network, extra: &[f32]) -> (f64, f64, f64);
    /// Feeds the training and dev items (token ids and labels) to `eat`, for the run's
    /// fingerprint: a resume must see the same data.
    fn feed(&self, eat: &mut dyn FnMut(u64));
}

/// Refuses what the row tasks do not support.
pub(crate) fn refuse_unsupported(params: &FinetuneParams, task: &str) -> Result<(), FinetuneError> {
    params.check()?;
    if params.grad_accum != 1
        || params.fgm.is_some()
        || params.pgd.is_some()
        || params.lora.is_some()
    {
        return Err(FinetuneError::Invalid(format!(
            "{task} takes one batch a step with full fine-tuning: gradient accumulation, FGM, \
             PGD and LoRA are not available for it"
        )));
    }
    Ok(())
}

/// Packs token sequences (segment ids all 0) and runs the network (training mode with
/// `(rate, rng)`).
pub(crate) fn run(
    net: &Network,
    ids: &[&[u32]],
    drop: Option<(f32, &mut SeededRng)>,
    threads: usize,
) -> (Batch, Forward) {
    let zeros: Vec<Vec<u32>> = ids.iter().map(|i| vec![0; i.len()]).collect();
    let batch = Batch::pack(ids.iter().zip(&zeros).map(|(i, z)| (*i, z.as_slice())));
    let drop = drop.map(|(rate, rng)| crate::Dropout { rate, rng });
    let fwd = net.forward(&batch, drop, threads);
    (batch, fwd)
}

/// The states of packed rows `rows` (`rows × hidden`).
pub(crate) fn gather(hidden: &[f32], rows: &[usize], h: usize) -> Vec<f32> {
    let mut states = Vec::with_capacity(rows.len() * h);
    for &r in rows {
        states.extend_from_slice(&hidden[r * h..(r + 1) * h]);
    }
    states
}

/// Scores `rows × classes` of `states` through the network's linear layer.
pub(crate) fn emissions(net: &Network, states: &[f32]) -> Vec<f32> {
    let (w, b) = net.head_tensors();
    let (h, k) = (net.config().hidden_size, net.n_classes());
    let n = states.len() / h;
    let mut out = vec![0.0f32; n * k];
    crate::kernels_fill(&mut out, b);
    ops::matmul(&mut out, states, w, (n, h, k), false, false, true, 1);
    out
}

/// Gradient of the linear layer from `demit`, then through the encoder from the rows.
pub(crate) fn backward(
    net: &Network,
    (batch, fwd): (&Batch, &Forward),
    (states, mask, rows): (&[f32], &Option<Vec<f32>>, &[usize]),
    demit: &[f32],
    grads: &mut [f32],
    threads: usize,
) {
    let (h, k) = (net.config().hidden_size, net.n_classes());
    let n = rows.len();
    let (w_range, b_range) = net.head_ranges();
    ops::matmul(
        &mut grads[w_range],
        states,
        demit,
        (h, n, k),
        true,
        false,
        true,
        1,
    );
    ops::sum_rows_into(demit, &mut grads[b_range]);
    let mut dstates = vec![0.0f32; n * h];
    let (w, _) = net.head_tensors();
    ops::matmul(&mut dstates, demit, w, (n, k, h), false, true, false, 1);
    apply_mask(&mut dstates, mask);
    let mut dx = vec![0.0f32; batch.tokens.len() * h];
    for (&r, d) in rows.iter().zip(dstates.chunks_exact(h)) {
        for (x, g) in dx[r * h..(r + 1) * h].iter_mut().zip(d) {
            *x += g;
        }
    }
    net.backward_from_hidden(batch, fwd, dx, grads, threads);
}

/// The store of the extra values.
fn extra_store(n: usize, depth: usize) -> ParamStore {
    ParamStore {
        specs: vec![TensorSpec {
            name: "extra".into(),
            shape: vec![n],
            offset: 0,
            decay: false,
            depth,
            frozen: false,
        }],
        values: vec![0.0; n],
    }
}

/// Loop state kept across evaluations and checkpoints.
struct Tracker {
    best: Option<EvalRecord>,
    best_values: Vec<f32>,
    best_extra: Vec<f32>,
    bad_evals: usize,
    evals: Vec<EvalRecord>,
    loss_sum: f64,
    loss_count: usize,
}

/// The optimisers' state.
struct Optimisers {
    net: AdamW,
    extra: AdamW,
    extra_values: ParamStore,
    rng: SeededRng,
    step: usize,
    epochs_done: usize,
}

fn extra_file(dir: &Path, epochs_done: usize) -> PathBuf {
    dir.join(format!("extra-{epochs_done}.safetensors"))
}

/// Restores the run from the checkpoint in `dir` (see [`crate::fit`]'s resume).
fn restore(
    net: &mut Network,
    dir: &Path,
    (params, fingerprint): (&FinetuneParams, &str),
    (o, t): (&mut Optimisers, &mut Tracker),
) -> Result<(), FinetuneError> {
    let r = load_checkpoint(dir, params, fingerprint, net.params.values.len())?;
    (o.net.m, o.net.v, net.params.values, t.best_values) = (r.m, r.v, r.values, r.best_values);
    let state = r.state;
    let n = o.extra_values.values.len();
    if n > 0 {
        let path = extra_file(dir, state.epochs_done);
        let mut v = read_vectors(&path, &["values", "adam_m", "adam_v", "best"], n)?;
        t.best_extra = v.pop().expect("four vectors");
        o.extra.v = v.pop().expect("four vectors");
        o.extra.m = v.pop().expect("four vectors");
        o.extra_values.values = v.pop().expect("four vectors");
        o.extra.steps = state.adam_steps;
    }
    o.net.steps = state.adam_steps;
    o.rng = SeededRng::new(state.rng_state);
    (o.step, o.epochs_done) = (state.step, state.epochs_done);
    (t.best, t.bad_evals, t.evals) = (state.best, state.bad_evals, state.evals);
    (t.loss_sum, t.loss_count) = (state.loss_sum, state.loss_count);
    Ok(())
}

/// Writes the checkpoint of the epoch just ended: the extra values first (under the epoch's
/// name), then the network's state naming that epoch, then older extra files go.
fn checkpoint(
    net: &Network,
    dir: Option<&Path>,
    (params, fingerprint): (&FinetuneParams, &str),
    (o, t): (&Optimisers, &Tracker),
) -> Result<(), FinetuneError> {
    let Some(dir) = dir else { return Ok(()) };
    let keep = extra_file(dir, o.epochs_done);
    if !o.extra_values.values.is_empty() {
        let vectors: [(&str, &[f32]); 4] = [
            ("values", &o.extra_values.values),
            ("adam_m", &o.extra.m),
            ("adam_v", &o.extra.v),
            ("best", &t.best_extra),
        ];
        write_vectors(&keep, &vectors)?;
    }
    save_checkpoint(
        Some(dir),
        params,
        net,
        &o.net,
        (o.step, o.epochs_done),
        &o.rng,
        (&t.best, &t.best_values),
        t.bad_evals,
        &t.evals,
        (fingerprint, t.loss_sum, t.loss_count),
    )?;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("extra-") && e.path() != keep {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Trains `net` and the task's extra values; `net` ends with the weights of the best dev
/// evaluation, whose extra values are returned beside the summary. Chooses by the task's
/// score (recorded as `dev_macro_f1`). With `run_dir`, the metrics log is written there and
/// a checkpoint after every epoch; with `resume`, training continues from that checkpoint
/// and ends where an uninterrupted run with the same seed ends (as [`crate::fit`]).
pub(crate) fn drive(
    net: &mut Network,
    task: &mut dyn RowTask,
    params: &FinetuneParams,
    (run_dir, resume): (Option<&Path>, bool),
    observer: &mut dyn FnMut(&Event),
) -> Result<(FitSummary, Vec<f32>), FinetuneError> {
    let started = Instant::now();
    let n_layers = net.config().num_hidden_layers;
    let n_values = net.params.values.len();
    let fingerprint = fingerprint_of(|eat| task.feed(eat), &net.params.values);
    let trainable = net
        .params
        .specs
        .iter()
        .filter(|s| !s.frozen)
        .map(|s| s.len())
        .sum::<usize>()
        + task.extra_len();
    let steps_per_epoch = task.train_len().div_ceil(params.batch_size);
    let schedule = Schedule {
        warmup: (params.warmup * (steps_per_epoch * params.epochs) as f32).round() as usize,
        total: steps_per_epoch * params.epochs,
    };
    let choose = FinetuneParams {
        metric: Metric::MacroF1,
        ..params.clone()
    };
    let mut o = Optimisers {
        net: AdamW::new(n_values),
        extra: AdamW::new(task.extra_len()),
        extra_values: extra_store(task.extra_len(), n_layers + 1),
        rng: SeededRng::new(params.seed ^ 0x7A66),
        step: 0,
        epochs_done: 0,
    };
    let mut t = Tracker {
        best: None,
        best_values: net.params.values.clone(),
        best_extra: vec![0.0; task.extra_len()],
        bad_evals: 0,
        evals: Vec::new(),
        loss_sum: 0.0,
        loss_count: 0,
    };
    let ckpt_dir = run_dir.map(|d| d.join(CHECKPOINT_DIR));
    if let Some(dir) = &ckpt_dir {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    if resume {
        let dir = ckpt_dir
            .as_deref()
            .ok_or_else(|| FinetuneError::Invalid("resuming needs a run folder".into()))?;
        restore(net, dir, (params, &fingerprint), (&mut o, &mut t))?;
        observer(&Event::Resumed { step: o.step });
        restart_log(run_dir, &t.evals)?;
    } else {
        fresh_run(run_dir, ckpt_dir.as_deref())?;
    }
    let log = run_dir.map(|d| d.join(crate::METRICS_LOG));
    let mut grads = vec![0.0f32; n_values];
    let mut stopped_early =
        params.patience > 0 && t.bad_evals >= params.patience && t.best.is_some();
    for epoch in o.epochs_done..params.epochs {
        if stopped_early {
            break;
        }
        let order = epoch_order(task.train_len(), params.seed, epoch);
        let n_batches = order.len().div_ceil(params.batch_size);
        for (batch_no, idx) in order.chunks(params.batch_size).enumerate() {
            grads.fill(0.0);
            let mut dextra = vec![0.0f64; task.extra_len()];
            let loss = task.step(
                net,
                &o.extra_values.values,
                idx,
                &mut o.rng,
                (&mut grads, &mut dextra),
            );
            if !loss.is_finite() {
                return Err(FinetuneError::Diverged { step: o.step, loss });
            }
            clip_grad_norm(net, &mut grads, params.max_grad_norm, o.step)?;
            let factor = schedule.factor(o.step);
            let lr_of = |s: &TensorSpec| crate::train::peak_lr(params, n_layers, s.depth) * factor;
            o.net
                .step(&mut net.params, &grads, lr_of, params.weight_decay);
            if !dextra.is_empty() {
                let g: Vec<f32> = dextra.iter().map(|&x| x as f32).collect();
                o.extra.step(&mut o.extra_values, &g, lr_of, 0.0);
            }
            o.step += 1;
            t.loss_sum += f64::from(loss);
            t.loss_count += 1;
            observer(&Event::Step {
                step: o.step,
                total: schedule.total,
                loss,
            });
            if !eval_due(
                params.eval_every,
                o.step,
                schedule.total,
                batch_no + 1 == n_batches,
            ) {
                continue;
            }
            let (accuracy, score, dev_loss) = task.evaluate(net, &o.extra_values.values);
            let out_of_patience = record_eval(
                &choose,
                EvalPoint {
                    epoch: epoch + 1,
                    step: o.step,
                    lr_factor: factor,
                    seconds: started.elapsed().as_secs_f64(),
                },
                (accuracy, score, dev_loss),
                (&mut t.loss_sum, &mut t.loss_count),
                (&mut t.best, &mut t.bad_evals, &mut t.evals),
                log.as_deref(),
                observer,
                || {
                    t.best_values.copy_from_slice(&net.params.values);
                    t.best_extra.copy_from_slice(&o.extra_values.values);
                    Ok(())
                },
            )?;
            if out_of_patience {
                stopped_early = true;
                break;
            }
        }
        o.epochs_done = epoch + 1;
        if !stopped_early {
            checkpoint(net, ckpt_dir.as_deref(), (params, &fingerprint), (&o, &t))?;
        }
    }
    net.params.values.copy_from_slice(&t.best_values);
    let best = t
        .best
        .ok_or_else(|| FinetuneError::Invalid("no evaluation ran".into()))?;
    let summary = FitSummary {
        evals: t.evals,
        best,
        steps: o.step,
        stopped_early,
        trainable,
        total: n_values + task.extra_len(),
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((summary, t.best_extra))
}
