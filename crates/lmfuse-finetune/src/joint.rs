//! End-to-end training of the encoder with a head that is not the network's linear one: the
//! head keeps its own weights and optimiser ([`PooledHead`]), turns each batch's pooled
//! vectors into a loss and hands back the loss gradient with respect to them, which
//! [`Network::backward_from_pooled`] takes through the encoder.

use crate::network::{Batch, Dropout, Network};
use crate::optim::{AdamW, Schedule};
use crate::train::{clip_grad_norm, epoch_order, eval_due, io_err, record_eval, EvalPoint};
use crate::{embed, EvalRecord, Event, FinetuneError, FinetuneParams, FitSummary};
use lmfuse_core::SeededRng;
use lmfuse_encoder::TokenizedText;
use std::path::Path;
use std::time::Instant;

/// An error a [`PooledHead`] reports.
pub type HeadError = Box<dyn std::error::Error + Send + Sync>;

/// A classification head over the encoder's pooled vectors that trains itself, for
/// [`fit_with_head`]. It may read more than the pooled vectors (features of its own for the
/// same texts): the training texts are named by their index in the training set, the dev
/// texts are always all of them, in order.
pub trait PooledHead {
    /// One optimiser step of the head on the training texts `rows` (indices into the
    /// training set), whose pooled vectors (training mode, `rows × hidden`) are `pooled`,
    /// with class indices `labels`. Returns the mean cross-entropy of the batch and its
    /// gradient with respect to `pooled` (same layout), taken at the weights before the step.
    fn train_step(
        &mut self,
        rows: &[usize],
        pooled: &[f32],
        labels: &[usize],
    ) -> Result<(f32, Vec<f32>), HeadError>;

    /// Class probabilities (`texts × classes`) of every dev text, in order, from their pooled
    /// vectors in evaluation mode (`texts × hidden`), at the current weights.
    fn predict_dev(&mut self, pooled: &[f32]) -> Result<Vec<f32>, HeadError>;

    /// Keeps the current weights as the best so far: [`fit_with_head`] calls it after every
    /// evaluation that improves the dev metric, so the weights kept last are the best.
    fn keep_best(&mut self) -> Result<(), HeadError>;
}

/// Trains the encoder of `net` end to end with `head` on `train`, evaluating on `dev` as
/// [`crate::fit`] does (the same batch order for a seed, warm-up and linear decay, layer-wise
/// rates, freezing, LoRA, clipping, early stopping on `params.metric`); at the end `net` holds
/// the encoder weights of the best evaluation and `head` has kept its weights of the same
/// evaluation. The network's own linear head is frozen and unused.
///
/// The head steps with its own optimiser at its own (constant) rate; gradient clipping bounds
/// the encoder's gradient only. Gradient accumulation and the adversarial modes (FGM, PGD),
/// which re-run the loss on the same batch, are refused, and there is no checkpoint to
/// resume from: with `run_dir`, only the metrics log is written there.
#[allow(clippy::too_many_arguments)]
pub fn fit_with_head(
    net: &mut Network,
    head: &mut dyn PooledHead,
    params: &FinetuneParams,
    train: &[TokenizedText],
    y: &[usize],
    dev: &[TokenizedText],
    y_dev: &[usize],
    run_dir: Option<&Path>,
    observer: &mut dyn FnMut(&Event),
) -> Result<FitSummary, FinetuneError> {
    params.check()?;
    if params.grad_accum != 1 || params.fgm.is_some() || params.pgd.is_some() {
        return Err(FinetuneError::Invalid(
            "a head that steps on its own takes one batch a step: gradient accumulation, FGM \
             and PGD are not available with it"
                .into(),
        ));
    }
    crate::train::check_fit_inputs(net, train, y, dev, y_dev)?;
    let k = net.n_classes();
    let threads = rayon::current_num_threads();
    let started = Instant::now();
    let n_layers = net.config().num_hidden_layers;
    // The linear head (depth L + 1) is not used: `head` replaces it.
    for s in &mut net.params.specs {
        if s.depth > n_layers {
            s.frozen = true;
        }
    }
    let n_values = net.params.values.len();
    let trainable: usize = net
        .params
        .specs
        .iter()
        .filter(|s| !s.frozen)
        .map(|s| s.len())
        .sum();
    let steps_per_epoch = train.len().div_ceil(params.batch_size);
    let schedule = Schedule {
        warmup: (params.warmup * (steps_per_epoch * params.epochs) as f32).round() as usize,
        total: steps_per_epoch * params.epochs,
    };
    let lr_of = |spec: &crate::TensorSpec| crate::train::peak_lr(params, n_layers, spec.depth);
    let mut opt = AdamW::new(n_values);
    // The same streams as `fit`: one seed gives the same batches and dropout masks.
    let mut rng = SeededRng::new(params.seed ^ 0xD0_0D);
    let mut grads = vec![0.0f32; n_values];
    let mut best: Option<EvalRecord> = None;
    let mut best_values = net.params.values.clone();
    let (mut bad_evals, mut step) = (0usize, 0usize);
    let mut evals: Vec<EvalRecord> = Vec::new();
    let (mut loss_sum, mut loss_count) = (0.0f64, 0usize);
    let mut stopped_early = false;
    let log = run_dir.map(|d| d.join(crate::METRICS_LOG));
    if let Some(log) = &log {
        lmfuse_data::atomic_write(log, |_| Ok(())).map_err(io_err(log))?;
    }
    let class_names: Vec<String> = (0..k).map(|i| i.to_string()).collect();
    'epochs: for epoch in 0..params.epochs {
        let order = epoch_order(train.len(), params.seed, epoch);
        let n_batches = order.len().div_ceil(params.batch_size);
        for (batch_no, idx) in order.chunks(params.batch_size).enumerate() {
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
            let (loss, dpooled) = head
                .train_step(idx, &fwd.pooled, &labels)
                .map_err(FinetuneError::Head)?;
            if !loss.is_finite() {
                return Err(FinetuneError::Diverged { step, loss });
            }
            if dpooled.len() != fwd.pooled.len() {
                return Err(FinetuneError::Head(
                    format!(
                        "the head's gradient has {} values for {} pooled values",
                        dpooled.len(),
                        fwd.pooled.len()
                    )
                    .into(),
                ));
            }
            grads.iter_mut().for_each(|g| *g = 0.0);
            net.backward_from_pooled(&batch, &fwd, &dpooled, &mut grads, threads);
            drop(fwd);
            clip_grad_norm(net, &mut grads, params.max_grad_norm, step)?;
            let factor = schedule.factor(step);
            opt.step(
                &mut net.params,
                &grads,
                |s| lr_of(s) * factor,
                params.weight_decay,
            );
            step += 1;
            loss_sum += loss as f64;
            loss_count += 1;
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
            let pooled = embed(net, dev, false, threads);
            let proba = head.predict_dev(&pooled).map_err(FinetuneError::Head)?;
            let r = lmfuse_metrics::evaluate(y_dev, &proba, &class_names)
                .map_err(|e| FinetuneError::Invalid(format!("dev evaluation: {e}")))?;
            let out_of_patience = record_eval(
                params,
                EvalPoint {
                    epoch: epoch + 1,
                    step,
                    lr_factor: factor,
                    seconds: started.elapsed().as_secs_f64(),
                },
                (r.accuracy, r.macro_f1, r.log_loss),
                (&mut loss_sum, &mut loss_count),
                (&mut best, &mut bad_evals, &mut evals),
                log.as_deref(),
                observer,
                || {
                    best_values.copy_from_slice(&net.params.values);
                    head.keep_best().map_err(FinetuneError::Head)
                },
            )?;
            if out_of_patience {
                stopped_early = true;
                break 'epochs;
            }
        }
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
