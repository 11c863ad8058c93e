//! Token classification: the encoder fine-tuned end to end with the network's linear layer
//! read over each word's first subword (first-subword labelling), as a softmax per word or as
//! the emissions of a linear-chain CRF (forward-algorithm loss, IOB2 transitions).
//!
//! Sentences come as [`WordWindow`]s (long ones in overlapping windows, each word labelled in
//! exactly one). Both heads are decoded by Viterbi under the IOB2 constraints (the softmax
//! head with zero transitions: the constrained best path of its per-word scores), as the CRF
//! bundle that stores the fine-tuned tagger decodes them.

use crate::network::{apply_mask, dropout_mask, Batch, Forward, Network, ParamStore, TensorSpec};
use crate::optim::{AdamW, Schedule};
use crate::train::{clip_grad_norm, epoch_order, eval_due, record_eval, EvalPoint};
use crate::{EvalRecord, Event, FinetuneError, FinetuneParams, FitSummary, Metric};
use lmfuse_core::SeededRng;
use lmfuse_crf::Chain;
use lmfuse_encoder::{ops, WordWindow};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// How the per-word scores are trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagHead {
    /// Cross-entropy of each word's tag.
    Softmax,
    /// Negative log-likelihood of the whole tag sequence under a linear-chain CRF.
    Crf,
}

impl std::fmt::Display for TagHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TagHead::Softmax => "softmax",
            TagHead::Crf => "crf",
        })
    }
}

impl std::str::FromStr for TagHead {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "softmax" => Ok(TagHead::Softmax),
            "crf" => Ok(TagHead::Crf),
            _ => Err(format!("unknown tagging head {s:?} (softmax, crf)")),
        }
    }
}

/// Windows of tagged sentences: `tags[sentence][word]` are tag indices of the chain.
#[derive(Clone, Copy)]
pub struct TagSet<'a> {
    /// The encoder windows.
    pub windows: &'a [WordWindow],
    /// Each sentence's tag indices.
    pub tags: &'a [Vec<usize>],
}

/// One window's decoded words: `(word, tag index)` in word order.
pub type Decoded = Vec<(usize, usize)>;

/// The outcome of [`fit_tagger`].
#[derive(Debug, Clone)]
pub struct TaggerFit {
    /// Evaluations and the best one (its `dev_macro_f1` is the entity F1 `dev_score` gave).
    pub summary: FitSummary,
    /// Transition weights `L × L` of the best evaluation (zeros for the softmax head).
    pub transitions: Vec<f32>,
}

/// The gold tags of a window's labelled words, and whether its first is a sentence's first.
fn window_gold(w: &WordWindow, tags: &[Vec<usize>]) -> (Vec<usize>, bool) {
    let gold = w
        .firsts
        .iter()
        .map(|&(word, _)| tags[w.sentence][word])
        .collect();
    (gold, w.firsts.first().is_some_and(|&(word, _)| word == 0))
}

/// Checks the windows against the network and the chain.
fn check_set(
    net: &Network,
    chain: &Chain,
    name: &str,
    set: TagSet<'_>,
) -> Result<(), FinetuneError> {
    let c = net.config();
    let bad = |m: String| Err(FinetuneError::Invalid(format!("{name} sentences: {m}")));
    if set.windows.is_empty() {
        return bad("none".into());
    }
    for w in set.windows {
        if w.ids.is_empty() || w.ids.len() > c.max_tokens() {
            return bad(format!("a window of {} tokens", w.ids.len()));
        }
        if let Some(id) = w.ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return bad(format!("token id {id} is outside the vocabulary"));
        }
        let Some(tags) = set.tags.get(w.sentence) else {
            return bad(format!("sentence {} has no tags", w.sentence));
        };
        for &(word, row) in &w.firsts {
            if row >= w.ids.len() || tags.get(word).is_none_or(|&t| t >= chain.tags()) {
                return bad(format!(
                    "sentence {}: word {word} has no tag of the chain's {} or no piece",
                    w.sentence,
                    chain.tags()
                ));
            }
        }
    }
    Ok(())
}

/// Per-word states of a forward pass (`words × hidden`, the windows' labelled words in
/// order) and the packed row each came from.
fn gather_states(
    batch: &Batch,
    windows: &[&WordWindow],
    hidden: &[f32],
    h: usize,
) -> (Vec<f32>, Vec<usize>) {
    let mut states = Vec::new();
    let mut rows = Vec::new();
    for (w, span) in windows.iter().zip(&batch.spans) {
        for &(_, row) in &w.firsts {
            let r = span.start + row;
            rows.push(r);
            states.extend_from_slice(&hidden[r * h..(r + 1) * h]);
        }
    }
    (states, rows)
}

/// Emissions `words × L` of `states` through the network's linear layer.
fn emissions(net: &Network, states: &[f32]) -> Vec<f32> {
    let (w, b) = net.head_tensors();
    let (h, k) = (net.config().hidden_size, net.n_classes());
    let n = states.len() / h;
    let mut out = vec![0.0f32; n * k];
    crate::kernels_fill(&mut out, b);
    ops::matmul(&mut out, states, w, (n, h, k), false, false, true, 1);
    out
}

/// The loss of each window's words (summed) and its gradient with respect to the emissions.
fn loss_and_grad(
    head: TagHead,
    chain: &Chain,
    trans: &[f32],
    emit: &[f32],
    golds: &[(Vec<usize>, bool)],
    dtrans: &mut [f64],
) -> (f64, Vec<f32>) {
    let l = chain.tags();
    let trans64: Vec<f64> = trans.iter().map(|&x| f64::from(x)).collect();
    let mut demit = vec![0.0f32; emit.len()];
    let mut loss = 0.0;
    let mut at = 0;
    for (gold, first) in golds {
        let n = gold.len();
        let e: Vec<f64> = emit[at * l..(at + n) * l]
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        let mut de = vec![0.0f64; n * l];
        loss += match head {
            TagHead::Crf => chain.nll(&e, &trans64, gold, *first, (&mut de, dtrans)),
            TagHead::Softmax => softmax_loss(&e, gold, l, &mut de),
        };
        for (d, g) in demit[at * l..(at + n) * l].iter_mut().zip(&de) {
            *d = *g as f32;
        }
        at += n;
    }
    (loss, demit)
}

/// Summed cross-entropy of each word's tag; adds its gradient into `de`.
fn softmax_loss(e: &[f64], gold: &[usize], l: usize, de: &mut [f64]) -> f64 {
    let mut loss = 0.0;
    for ((row, d), &y) in e.chunks_exact(l).zip(de.chunks_exact_mut(l)).zip(gold) {
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|v| (v - max).exp()).sum();
        loss += z.ln() + max - row[y];
        for (j, (dj, v)) in d.iter_mut().zip(row).enumerate() {
            *dj += (v - max).exp() / z - f64::from(u8::from(j == y));
        }
    }
    loss
}

/// The tensor store of the transitions, trained beside the network at the head's rate.
fn transition_store(l: usize, depth: usize) -> ParamStore {
    ParamStore {
        specs: vec![TensorSpec {
            name: "crf.transitions".into(),
            shape: vec![l, l],
            offset: 0,
            decay: false,
            depth,
            frozen: false,
        }],
        values: vec![0.0; l * l],
    }
}

/// Everything one optimiser step needs besides the network.
struct Stepper<'a> {
    head: TagHead,
    chain: &'a Chain,
    params: &'a FinetuneParams,
    train: TagSet<'a>,
    threads: usize,
}

impl Stepper<'_> {
    /// Forward, loss and backward of the windows `idx`; returns the mean loss per word.
    fn step(
        &self,
        net: &Network,
        trans: &[f32],
        idx: &[usize],
        rng: &mut SeededRng,
        (grads, dtrans): (&mut [f32], &mut [f64]),
    ) -> f32 {
        let windows: Vec<&WordWindow> = idx.iter().map(|&i| &self.train.windows[i]).collect();
        let (batch, fwd) = run(
            net,
            &windows,
            Some((self.params.dropout, &mut *rng)),
            self.threads,
        );
        let h = net.config().hidden_size;
        let (mut states, rows) = gather_states(&batch, &windows, &fwd.hidden, h);
        let mask = dropout_mask(&mut states, self.params.dropout, rng);
        let emit = emissions(net, &states);
        let golds: Vec<(Vec<usize>, bool)> = windows
            .iter()
            .map(|w| window_gold(w, self.train.tags))
            .collect();
        let words = rows.len().max(1) as f32;
        let (loss, mut demit) = loss_and_grad(self.head, self.chain, trans, &emit, &golds, dtrans);
        demit.iter_mut().for_each(|d| *d /= words);
        dtrans.iter_mut().for_each(|d| *d /= f64::from(words));
        backward(
            net,
            &batch,
            &fwd,
            (&states, &mask, &rows),
            &demit,
            grads,
            self.threads,
        );
        (loss / f64::from(words)) as f32
    }
}

/// Packs `windows` and runs the network (training mode with `(rate, rng)`).
fn run(
    net: &Network,
    windows: &[&WordWindow],
    drop: Option<(f32, &mut SeededRng)>,
    threads: usize,
) -> (Batch, Forward) {
    let zeros: Vec<Vec<u32>> = windows.iter().map(|w| vec![0; w.ids.len()]).collect();
    let batch = Batch::pack(
        windows
            .iter()
            .zip(&zeros)
            .map(|(w, z)| (w.ids.as_slice(), z.as_slice())),
    );
    let drop = drop.map(|(rate, rng)| crate::Dropout { rate, rng });
    let fwd = net.forward(&batch, drop, threads);
    (batch, fwd)
}

/// Gradient of the linear layer, then through the encoder from the words' rows.
fn backward(
    net: &Network,
    batch: &Batch,
    fwd: &Forward,
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
        dx[r * h..(r + 1) * h].copy_from_slice(d);
    }
    net.backward_from_hidden(batch, fwd, dx, grads, threads);
}

/// Decoded tags of every window's labelled words (`(word, tag)` in order), with the dev loss
/// per word and the token accuracy, in evaluation mode.
fn decode(
    net: &Network,
    head: TagHead,
    chain: &Chain,
    trans: &[f32],
    set: TagSet<'_>,
    threads: usize,
) -> (Vec<Vec<(usize, usize)>>, f64, f64) {
    let l = chain.tags();
    let used: Vec<f64> = match head {
        TagHead::Crf => trans.iter().map(|&x| f64::from(x)).collect(),
        TagHead::Softmax => vec![0.0; l * l],
    };
    let h = net.config().hidden_size;
    let mut out = Vec::with_capacity(set.windows.len());
    let (mut loss, mut right, mut words) = (0.0, 0usize, 0usize);
    let mut start = 0;
    while start < set.windows.len() {
        let mut end = start;
        let mut tokens = 0;
        while end < set.windows.len()
            && (end == start || tokens + set.windows[end].ids.len() <= 2048)
        {
            tokens += set.windows[end].ids.len();
            end += 1;
        }
        let windows: Vec<&WordWindow> = set.windows[start..end].iter().collect();
        let (batch, fwd) = run(net, &windows, None, threads);
        let (states, _) = gather_states(&batch, &windows, &fwd.hidden, h);
        let emit = emissions(net, &states);
        let golds: Vec<(Vec<usize>, bool)> =
            windows.iter().map(|w| window_gold(w, set.tags)).collect();
        let mut scratch = vec![0.0; l * l];
        loss += loss_and_grad(head, chain, trans, &emit, &golds, &mut scratch).0;
        let mut at = 0;
        for (w, (gold, first)) in windows.iter().zip(&golds) {
            let n = gold.len();
            let e: Vec<f64> = emit[at * l..(at + n) * l]
                .iter()
                .map(|&x| f64::from(x))
                .collect();
            let path = chain.viterbi(&e, &used, *first);
            right += path.iter().zip(gold).filter(|(a, b)| a == b).count();
            words += n;
            out.push(w.firsts.iter().map(|&(word, _)| word).zip(path).collect());
            at += n;
        }
        start = end;
    }
    let words = words.max(1) as f64;
    (out, loss / words, right as f64 / words)
}

/// Fine-tunes `net` for tagging: its linear layer (built for `chain.tags()` classes) scores
/// each labelled word, trained with `head`'s loss, and the encoder end to end; evaluates on
/// `dev` as [`crate::fit`] does (same schedule, layer-wise rates, freezing, clipping of the
/// network's gradient, early stopping), choosing by the entity F1 that `dev_score` gives for
/// the decoded dev windows. At the end `net` holds the weights of the best evaluation.
///
/// The CRF transitions train with AdamW at the head's rate (no decay, not clipped).
/// Gradient accumulation, FGM, PGD and LoRA are refused; no checkpoint is written (with
/// `run_dir`, the metrics log only).
#[allow(clippy::too_many_arguments)]
pub fn fit_tagger(
    net: &mut Network,
    head: TagHead,
    chain: &Chain,
    params: &FinetuneParams,
    (train, dev): (TagSet<'_>, TagSet<'_>),
    dev_score: &mut dyn FnMut(&[Decoded]) -> f64,
    run_dir: Option<&Path>,
    observer: &mut dyn FnMut(&Event),
) -> Result<TaggerFit, FinetuneError> {
    params.check()?;
    if params.grad_accum != 1
        || params.fgm.is_some()
        || params.pgd.is_some()
        || params.lora.is_some()
    {
        return Err(FinetuneError::Invalid(
            "tagging takes one batch a step with full fine-tuning: gradient accumulation, FGM, \
             PGD and LoRA are not available for it"
                .into(),
        ));
    }
    if net.n_classes() != chain.tags() {
        return Err(FinetuneError::Invalid(format!(
            "the network scores {} classes, the chain has {} tags",
            net.n_classes(),
            chain.tags()
        )));
    }
    check_set(net, chain, "training", train)?;
    check_set(net, chain, "dev", dev)?;
    let started = Instant::now();
    let threads = rayon::current_num_threads();
    let n_layers = net.config().num_hidden_layers;
    let l = chain.tags();
    let mut trans = transition_store(l, n_layers + 1);
    let n_values = net.params.values.len();
    let trainable = net
        .params
        .specs
        .iter()
        .filter(|s| !s.frozen)
        .map(|s| s.len())
        .sum::<usize>()
        + if head == TagHead::Crf { l * l } else { 0 };
    let steps_per_epoch = train.windows.len().div_ceil(params.batch_size);
    let schedule = Schedule {
        warmup: (params.warmup * (steps_per_epoch * params.epochs) as f32).round() as usize,
        total: steps_per_epoch * params.epochs,
    };
    let choose = FinetuneParams {
        metric: Metric::MacroF1,
        ..params.clone()
    };
    let stepper = Stepper {
        head,
        chain,
        params,
        train,
        threads,
    };
    let (mut opt, mut opt_trans) = (AdamW::new(n_values), AdamW::new(l * l));
    let mut rng = SeededRng::new(params.seed ^ 0x7A66);
    let mut grads = vec![0.0f32; n_values];
    let mut best: Option<EvalRecord> = None;
    let (mut best_values, mut best_trans) = (net.params.values.clone(), trans.values.clone());
    let (mut bad_evals, mut step) = (0usize, 0usize);
    let mut evals = Vec::new();
    let (mut loss_sum, mut loss_count) = (0.0f64, 0usize);
    let mut stopped_early = false;
    let log = run_dir.map(|d| d.join(crate::METRICS_LOG));
    if let Some(log) = &log {
        lmfuse_data::atomic_write(log, |_| Ok(())).map_err(crate::train::io_err(log))?;
    }
    'epochs: for epoch in 0..params.epochs {
        let order = epoch_order(train.windows.len(), params.seed, epoch);
        let n_batches = order.len().div_ceil(params.batch_size);
        for (batch_no, idx) in order.chunks(params.batch_size).enumerate() {
            grads.fill(0.0);
            let mut dtrans = vec![0.0f64; l * l];
            let loss = stepper.step(net, &trans.values, idx, &mut rng, (&mut grads, &mut dtrans));
            if !loss.is_finite() {
                return Err(FinetuneError::Diverged { step, loss });
            }
            clip_grad_norm(net, &mut grads, params.max_grad_norm, step)?;
            let factor = schedule.factor(step);
            let lr_of = |s: &TensorSpec| crate::train::peak_lr(params, n_layers, s.depth) * factor;
            opt.step(&mut net.params, &grads, lr_of, params.weight_decay);
            if head == TagHead::Crf {
                let g: Vec<f32> = dtrans.iter().map(|&x| x as f32).collect();
                opt_trans.step(&mut trans, &g, lr_of, 0.0);
            }
            step += 1;
            loss_sum += f64::from(loss);
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
            let (decoded, dev_loss, accuracy) =
                decode(net, head, chain, &trans.values, dev, threads);
            let f1 = dev_score(&decoded);
            let out_of_patience = record_eval(
                &choose,
                EvalPoint {
                    epoch: epoch + 1,
                    step,
                    lr_factor: factor,
                    seconds: started.elapsed().as_secs_f64(),
                },
                (accuracy, f1, dev_loss),
                (&mut loss_sum, &mut loss_count),
                (&mut best, &mut bad_evals, &mut evals),
                log.as_deref(),
                observer,
                || {
                    best_values.copy_from_slice(&net.params.values);
                    best_trans.copy_from_slice(&trans.values);
                    Ok(())
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
    Ok(TaggerFit {
        summary: FitSummary {
            evals,
            best,
            steps: step,
            stopped_early,
            trainable,
            total: n_values + l * l,
            seconds: started.elapsed().as_secs_f64(),
        },
        transitions: best_trans,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lmfuse_core::Pooling;
    use lmfuse_encoder::{LoadOptions, ModelFiles, SentenceEncoder};

    /// splade-tiny (2 layers, hidden 128), or `None` (skipped) when it was not fetched.
    fn tiny() -> Option<SentenceEncoder> {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/splade-tiny");
        if !dir.join("model.safetensors").is_file() {
            assert!(
                std::env::var("LMFUSE_REQUIRE_ASSETS").as_deref() != Ok("1"),
                "splade-tiny not found at {}",
                dir.display()
            );
            eprintln!("SKIPPED: splade-tiny not found: run `bash scripts/fetch-models.sh`");
            return None;
        }
        let files = ModelFiles::from_dir(&dir, "splade-tiny").expect("splade-tiny loads");
        let options = LoadOptions {
            pooling: Some(Pooling::Mean),
            max_seq_length: Some(16),
            ..LoadOptions::default()
        };
        Some(SentenceEncoder::load(&files, &options).expect("encoder"))
    }

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn the_tagging_gradient_matches_finite_differences() {
        let Some(enc) = tiny() else { return };
        let labels: Vec<String> = ["B-PER", "I-PER", "O"].map(String::from).to_vec();
        let chain = Chain::iob2(&labels);
        // The second sentence is longer than one window: it is read in two.
        let sentences = vec![
            words("alice smith met bob"),
            words("we saw carol jones and dave in the old town hall near the river bank today"),
        ];
        let tags = vec![
            vec![0, 1, 2, 0],
            vec![2, 2, 0, 1, 2, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2],
        ];
        let windows = enc.word_windows(&sentences).unwrap();
        assert!(windows.len() > 2, "the long sentence is split");
        let mut net = Network::new(
            enc.model().config(),
            enc.model().export(),
            Pooling::Mean,
            3,
            7,
        )
        .unwrap();
        let params = FinetuneParams {
            dropout: 0.0,
            ..FinetuneParams::default()
        };
        let all: Vec<usize> = (0..windows.len()).collect();
        let trans: Vec<f32> = (0..9).map(|i| 0.1 * i as f32 - 0.4).collect();
        for head in [TagHead::Softmax, TagHead::Crf] {
            let stepper = Stepper {
                head,
                chain: &chain,
                params: &params,
                train: TagSet {
                    windows: &windows,
                    tags: &tags,
                },
                threads: 1,
            };
            let loss_at = |net: &Network, trans: &[f32]| {
                let mut g = vec![0.0f32; net.params.values.len()];
                let mut dt = vec![0.0f64; 9];
                let mut rng = SeededRng::new(1);
                f64::from(stepper.step(net, trans, &all, &mut rng, (&mut g, &mut dt)))
            };
            let mut grads = vec![0.0f32; net.params.values.len()];
            let mut dtrans = vec![0.0f64; 9];
            let mut rng = SeededRng::new(1);
            stepper.step(&net, &trans, &all, &mut rng, (&mut grads, &mut dtrans));
            let (w_range, _) = net.head_ranges();
            let layer = net
                .params
                .find("encoder.layer.1.output.dense.weight")
                .unwrap();
            let mut entries = vec![w_range.start, w_range.start + 5];
            let r = net.params.specs[layer].range();
            entries.extend([r.start + 3, r.start + 77]);
            for i in entries {
                let h = 1e-2f32;
                let orig = net.params.values[i];
                net.params.values[i] = orig + h;
                let up = loss_at(&net, &trans);
                net.params.values[i] = orig - h;
                let down = loss_at(&net, &trans);
                net.params.values[i] = orig;
                let numeric = (up - down) / (2.0 * f64::from(h));
                let analytic = f64::from(grads[i]);
                assert!(
                    (numeric - analytic).abs() <= 2e-3 + 0.05 * analytic.abs(),
                    "{head}: value {i}: numeric {numeric:.6} vs analytic {analytic:.6}"
                );
            }
            for k in [0, 2, 8] {
                let (mut up, mut down) = (trans.clone(), trans.clone());
                up[k] += 1e-2;
                down[k] -= 1e-2;
                let numeric = (loss_at(&net, &up) - loss_at(&net, &down)) / 2e-2;
                let analytic = match head {
                    TagHead::Crf => dtrans[k],
                    TagHead::Softmax => 0.0,
                };
                assert!(
                    (numeric - analytic).abs() <= 2e-3 + 0.05 * analytic.abs(),
                    "{head}: transition {k}: numeric {numeric:.6} vs analytic {analytic:.6}"
                );
            }
        }
    }
}
