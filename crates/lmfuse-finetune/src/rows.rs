//! The training loop of tasks read from rows of the last layer (tagging, relations): the
//! network's linear layer applied to chosen token states, trained end to end with the
//! schedule, layer-wise rates, clipping, dev evaluation and early stopping of [`crate::fit`].

use crate::network::{apply_mask, Batch, Forward, Network, ParamStore, TensorSpec};
use crate::optim::{AdamW, Schedule};
use crate::train::{clip_grad_norm, epoch_order, eval_due, record_eval, EvalPoint};
use crate::{EvalRecord, Event, FinetuneError, FinetuneParams, FitSummary, Metric};
use lmfuse_core::SeededRng;
use lmfuse_encoder::ops;
use std::path::Path;
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

/// Loop state kept across evaluations.
struct Tracker {
    best: Option<EvalRecord>,
    best_values: Vec<f32>,
    best_extra: Vec<f32>,
    bad_evals: usize,
    evals: Vec<EvalRecord>,
    loss_sum: f64,
    loss_count: usize,
}

/// Trains `net` and the task's extra values; `net` ends with the weights of the best dev
/// evaluation, whose extra values are returned beside the summary. Chooses by the task's
/// score (recorded as `dev_macro_f1`).
pub(crate) fn drive(
    net: &mut Network,
    task: &mut dyn RowTask,
    params: &FinetuneParams,
    run_dir: Option<&Path>,
    observer: &mut dyn FnMut(&Event),
) -> Result<(FitSummary, Vec<f32>), FinetuneError> {
    let started = Instant::now();
    let n_layers = net.config().num_hidden_layers;
    let mut extra = extra_store(task.extra_len(), n_layers + 1);
    let n_values = net.params.values.len();
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
    let (mut opt, mut opt_extra) = (AdamW::new(n_values), AdamW::new(task.extra_len()));
    let mut rng = SeededRng::new(params.seed ^ 0x7A66);
    let mut grads = vec![0.0f32; n_values];
    let mut t = Tracker {
        best: None,
        best_values: net.params.values.clone(),
        best_extra: extra.values.clone(),
        bad_evals: 0,
        evals: Vec::new(),
        loss_sum: 0.0,
        loss_count: 0,
    };
    let (mut step, mut stopped_early) = (0usize, false);
    let log = run_dir.map(|d| d.join(crate::METRICS_LOG));
    if let Some(log) = &log {
        lmfuse_data::atomic_write(log, |_| Ok(())).map_err(crate::train::io_err(log))?;
    }
    'epochs: for epoch in 0..params.epochs {
        let order = epoch_order(task.train_len(), params.seed, epoch);
        let n_batches = order.len().div_ceil(params.batch_size);
        for (batch_no, idx) in order.chunks(params.batch_size).enumerate() {
            grads.fill(0.0);
            let mut dextra = vec![0.0f64; task.extra_len()];
            let loss = task.step(net, &extra.values, idx, &mut rng, (&mut grads, &mut dextra));
            if !loss.is_finite() {
                return Err(FinetuneError::Diverged { step, loss });
            }
            clip_grad_norm(net, &mut grads, params.max_grad_norm, step)?;
            let factor = schedule.factor(step);
            let lr_of = |s: &TensorSpec| crate::train::peak_lr(params, n_layers, s.depth) * factor;
            opt.step(&mut net.params, &grads, lr_of, params.weight_decay);
            if !dextra.is_empty() {
                let g: Vec<f32> = dextra.iter().map(|&x| x as f32).collect();
                opt_extra.step(&mut extra, &g, lr_of, 0.0);
            }
            step += 1;
            t.loss_sum += f64::from(loss);
            t.loss_count += 1;
            observer(&Event::Step {
                step,
                total: schedule.total,
                loss,
            });
            if !eval_due(
                params.eval_every,
                step,
                schedule.total,
                batch_no + 1 == n_batches,
            ) {
                continue;
            }
            let (accuracy, score, dev_loss) = task.evaluate(net, &extra.values);
            let out_of_patience = record_eval(
                &choose,
                EvalPoint {
                    epoch: epoch + 1,
                    step,
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
                    t.best_extra.copy_from_slice(&extra.values);
                    Ok(())
                },
            )?;
            if out_of_patience {
                stopped_early = true;
                break 'epochs;
            }
        }
    }
    net.params.values.copy_from_slice(&t.best_values);
    let best = t
        .best
        .ok_or_else(|| FinetuneError::Invalid("no evaluation ran".into()))?;
    let summary = FitSummary {
        evals: t.evals,
        best,
        steps: step,
        stopped_early,
        trainable,
        total: n_values + task.extra_len(),
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((summary, t.best_extra))
}
