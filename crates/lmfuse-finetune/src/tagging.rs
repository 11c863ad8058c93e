//! Token classification: the encoder fine-tuned end to end with the network's linear layer
//! read over each word's first subword (first-subword labelling), as a softmax per word or as
//! the emissions of a linear-chain CRF (forward-algorithm loss, IOB2 transitions).
//!
//! Sentences come as [`WordWindow`]s (long ones in overlapping windows, each word labelled in
//! exactly one). Both heads are decoded by Viterbi under the IOB2 constraints (the softmax
//! head with zero transitions: the constrained best path of its per-word scores), as the CRF
//! bundle that stores the fine-tuned tagger decodes them.

use crate::network::{dropout_mask, Batch, Network};
use crate::rows::{backward, drive, emissions, gather, refuse_unsupported, run, RowTask};
use crate::{Event, FinetuneError, FinetuneParams, FitSummary};
use lmfuse_core::SeededRng;
use lmfuse_crf::Chain;
use lmfuse_encoder::WordWindow;
use serde::{Deserialize, Serialize};
use std::path::Path;

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

/// The packed row of every labelled word of `windows` (the batch's layout), in order.
fn word_rows(batch: &Batch, windows: &[&WordWindow]) -> Vec<usize> {
    windows
        .iter()
        .zip(&batch.spans)
        .flat_map(|(w, span)| w.firsts.iter().map(move |&(_, row)| span.start + row))
        .collect()
}

/// The windows' token ids.
fn ids_of<'a>(windows: &[&'a WordWindow]) -> Vec<&'a [u32]> {
    windows.iter().map(|w| w.ids.as_slice()).collect()
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
            &ids_of(&windows),
            Some((self.params.dropout, &mut *rng)),
            self.threads,
        );
        let rows = word_rows(&batch, &windows);
        let mut states = gather(&fwd.hidden, &rows, net.config().hidden_size);
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
            (&batch, &fwd),
            (&states, &mask, &rows),
            &demit,
            grads,
            self.threads,
        );
        (loss / f64::from(words)) as f32
    }
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
        let (batch, fwd) = run(net, &ids_of(&windows), None, threads);
        let states = gather(&fwd.hidden, &word_rows(&batch, &windows), h);
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
/// Gradient accumulation, FGM, PGD and LoRA are refused. With `run_dir` the metrics log and a
/// checkpoint after every epoch are written there, and `resume` continues a killed run to the
/// end an uninterrupted one reaches (as [`crate::fit`]).
#[allow(clippy::too_many_arguments)]
pub fn fit_tagger(
    net: &mut Network,
    head: TagHead,
    chain: &Chain,
    params: &FinetuneParams,
    (train, dev): (TagSet<'_>, TagSet<'_>),
    dev_score: &mut dyn FnMut(&[Decoded]) -> f64,
    (run_dir, resume): (Option<&Path>, bool),
    observer: &mut dyn FnMut(&Event),
) -> Result<TaggerFit, FinetuneError> {
    refuse_unsupported(params, "tagging")?;
    if net.n_classes() != chain.tags() {
        return Err(FinetuneError::Invalid(format!(
            "the network scores {} classes, the chain has {} tags",
            net.n_classes(),
            chain.tags()
        )));
    }
    check_set(net, chain, "training", train)?;
    check_set(net, chain, "dev", dev)?;
    let mut task = TaggingTask {
        stepper: Stepper {
            head,
            chain,
            params,
            train,
            threads: rayon::current_num_threads(),
        },
        dev,
        dev_score,
    };
    let (summary, extra) = drive(net, &mut task, params, (run_dir, resume), observer)?;
    let l = chain.tags();
    Ok(TaggerFit {
        summary,
        transitions: if extra.is_empty() {
            vec![0.0; l * l]
        } else {
            extra
        },
    })
}

/// Tagging as a [`RowTask`].
struct TaggingTask<'a, 'f> {
    stepper: Stepper<'a>,
    dev: TagSet<'a>,
    dev_score: &'f mut dyn FnMut(&[Decoded]) -> f64,
}

impl RowTask for TaggingTask<'_, '_> {
    fn train_len(&self) -> usize {
        self.stepper.train.windows.len()
    }

    fn extra_len(&self) -> usize {
        let l = self.stepper.chain.tags();
        match self.stepper.head {
            TagHead::Crf => l * l,
            TagHead::Softmax => 0,
        }
    }

    fn step(
        &self,
        net: &Network,
        extra: &[f32],
        idx: &[usize],
        rng: &mut SeededRng,
        grads: (&mut [f32], &mut [f64]),
    ) -> f32 {
        self.stepper.step(net, extra, idx, rng, grads)
    }

    fn feed(&self, eat: &mut dyn FnMut(u64)) {
        for set in [self.stepper.train, self.dev] {
            eat(set.windows.len() as u64);
            for w in set.windows {
                eat(w.sentence as u64);
                w.ids.iter().for_each(|&i| eat(u64::from(i)));
                for &(word, row) in &w.firsts {
                    eat(row as u64);
                    eat(set.tags[w.sentence][word] as u64);
                }
            }
        }
    }

    fn evaluate(&mut self, net: &Network, extra: &[f32]) -> (f64, f64, f64) {
        let s = &self.stepper;
        let (decoded, loss, accuracy) = decode(net, s.head, s.chain, extra, self.dev, s.threads);
        (accuracy, (self.dev_score)(&decoded), loss)
    }
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
