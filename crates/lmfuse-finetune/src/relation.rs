//! Relation classification: the encoder fine-tuned end to end with a linear layer over the
//! states of the first token and of the two opening entity markers (the "entity start"
//! representation of Baldini Soares et al. 2019), trained by cross-entropy.
//!
//! The layer over the three concatenated states is kept as the network's own linear layer
//! built for `3 × classes` outputs, block `k` read over state `k`: `logits = W₀·s₀ + W₁·s₁ +
//! W₂·s₂ + b`, so that the network's head, its rate and its decay serve unchanged.

use crate::network::{dropout_mask, Network};
use crate::rows::{backward, drive, emissions, gather, refuse_unsupported, run, RowTask};
use crate::train::cross_entropy;
use crate::{Event, FinetuneError, FinetuneParams, FitSummary};
use lmfuse_core::SeededRng;
use lmfuse_encoder::{BertConfig, MarkedPair, MarkerIds, NamedTensor};
use std::path::Path;

/// Marked pairs and their class indices.
#[derive(Clone, Copy)]
pub struct PairSet<'a> {
    /// The pairs as token ids.
    pub pairs: &'a [MarkedPair],
    /// Each pair's class.
    pub labels: &'a [usize],
}

/// The outcome of [`fit_relation`].
#[derive(Debug, Clone)]
pub struct RelationFit {
    /// Evaluations and the best one (its `dev_macro_f1` is the score `dev_score` gave).
    pub summary: FitSummary,
    /// The layer over [first; e1; e2] states as `3·hidden × classes` weights (inputs first,
    /// as `LogisticRegression` stores its coefficients).
    pub coef: Vec<f32>,
    /// Its `classes` biases.
    pub intercept: Vec<f32>,
}

const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

/// Adds four marker tokens to the vocabulary of `encoder` (weights as
/// [`lmfuse_encoder::BertModel::export`] gives them): rows appended to the word embeddings,
/// each a copy of the row of the token in `start_from`, and `config.vocab_size` raised.
/// Returns the new tokens' ids.
pub fn add_marker_tokens(
    config: &mut BertConfig,
    encoder: &mut [NamedTensor],
    start_from: MarkerIds,
) -> Result<MarkerIds, FinetuneError> {
    let h = config.hidden_size;
    let words = encoder
        .iter_mut()
        .find(|t| t.name == WORD_EMBEDDINGS)
        .ok_or_else(|| {
            FinetuneError::Invalid(format!("encoder tensor {WORD_EMBEDDINGS} is missing"))
        })?;
    let v = config.vocab_size;
    if words.shape != [v, h] {
        return Err(FinetuneError::Invalid(format!(
            "{WORD_EMBEDDINGS} has shape {:?}, expected [{v}, {h}]",
            words.shape
        )));
    }
    for &id in &start_from {
        let id = id as usize;
        if id >= v {
            return Err(FinetuneError::Invalid(format!(
                "marker source token {id} is outside the vocabulary ({v})"
            )));
        }
        let row = words.data[id * h..(id + 1) * h].to_vec();
        words.data.extend_from_slice(&row);
    }
    words.shape[0] = v + 4;
    config.vocab_size = v + 4;
    Ok(std::array::from_fn(|k| (v + k) as u32))
}

/// Checks pairs against the network.
fn check_pairs(
    net: &Network,
    classes: usize,
    name: &str,
    set: PairSet<'_>,
) -> Result<(), FinetuneError> {
    let c = net.config();
    let bad = |m: String| Err(FinetuneError::Invalid(format!("{name} pairs: {m}")));
    if set.pairs.is_empty() || set.pairs.len() != set.labels.len() {
        return bad(format!(
            "{} pairs, {} labels",
            set.pairs.len(),
            set.labels.len()
        ));
    }
    for (i, (p, &y)) in set.pairs.iter().zip(set.labels).enumerate() {
        if p.ids.is_empty() || p.ids.len() > c.max_tokens() {
            return bad(format!("pair {i} has {} tokens", p.ids.len()));
        }
        if p.e1 >= p.ids.len() || p.e2 >= p.ids.len() {
            return bad(format!("pair {i}: a marker row is past its tokens"));
        }
        if let Some(id) = p.ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return bad(format!("pair {i}: token id {id} is outside the vocabulary"));
        }
        if y >= classes {
            return bad(format!("pair {i}: class {y} of {classes}"));
        }
    }
    Ok(())
}

/// Class scores `pairs × classes` from block emissions of the rows (first, e1, e2 per pair).
fn logits_of(emit: &[f32], classes: usize) -> Vec<f32> {
    emit.chunks_exact(9 * classes)
        .flat_map(|three| {
            (0..classes).map(move |c| {
                (0..3)
                    .map(|k| three[k * 3 * classes + k * classes + c])
                    .sum()
            })
        })
        .collect()
}

/// Rows (first token, e1, e2) of each pair in the packed batch.
fn pair_rows(pairs: &[&MarkedPair], spans: &[lmfuse_encoder::Span]) -> Vec<usize> {
    pairs
        .iter()
        .zip(spans)
        .flat_map(|(p, s)| [s.start, s.start + p.e1, s.start + p.e2])
        .collect()
}

/// Relation training as a [`crate::rows::RowTask`].
struct RelationTask<'a, 'f> {
    classes: usize,
    params: &'a FinetuneParams,
    train: PairSet<'a>,
    dev: PairSet<'a>,
    dev_score: &'f mut dyn FnMut(&[usize]) -> f64,
    threads: usize,
}

impl RelationTask<'_, '_> {
    /// Class scores of `pairs` in evaluation mode.
    fn scores(&self, net: &Network, pairs: &[&MarkedPair]) -> Vec<f32> {
        let ids: Vec<&[u32]> = pairs.iter().map(|p| p.ids.as_slice()).collect();
        let (batch, fwd) = run(net, &ids, None, self.threads);
        let rows = pair_rows(pairs, &batch.spans);
        let states = gather(&fwd.hidden, &rows, net.config().hidden_size);
        logits_of(&emissions(net, &states), self.classes)
    }
}

impl RowTask for RelationTask<'_, '_> {
    fn train_len(&self) -> usize {
        self.train.pairs.len()
    }

    fn extra_len(&self) -> usize {
        0
    }

    fn step(
        &self,
        net: &Network,
        _extra: &[f32],
        idx: &[usize],
        rng: &mut SeededRng,
        (grads, _): (&mut [f32], &mut [f64]),
    ) -> f32 {
        let pairs: Vec<&MarkedPair> = idx.iter().map(|&i| &self.train.pairs[i]).collect();
        let labels: Vec<usize> = idx.iter().map(|&i| self.train.labels[i]).collect();
        let ids: Vec<&[u32]> = pairs.iter().map(|p| p.ids.as_slice()).collect();
        let (batch, fwd) = run(
            net,
            &ids,
            Some((self.params.dropout, &mut *rng)),
            self.threads,
        );
        let rows = pair_rows(&pairs, &batch.spans);
        let mut states = gather(&fwd.hidden, &rows, net.config().hidden_size);
        let mask = dropout_mask(&mut states, self.params.dropout, rng);
        let emit = emissions(net, &states);
        let c = self.classes;
        // The mean loss; its gradient already divided by the batch.
        let (loss, dlogits) = cross_entropy(&logits_of(&emit, c), &labels, c, 1.0);
        let mut demit = vec![0.0f32; emit.len()];
        for (i, dl) in dlogits.chunks_exact(c).enumerate() {
            for k in 0..3 {
                let at = (3 * i + k) * 3 * c + k * c;
                demit[at..at + c].copy_from_slice(dl);
            }
        }
        backward(
            net,
            (&batch, &fwd),
            (&states, &mask, &rows),
            &demit,
            grads,
            self.threads,
        );
        loss
    }

    fn feed(&self, eat: &mut dyn FnMut(u64)) {
        for set in [self.train, self.dev] {
            eat(set.pairs.len() as u64);
            for (p, &y) in set.pairs.iter().zip(set.labels) {
                p.ids.iter().for_each(|&i| eat(u64::from(i)));
                [p.e1, p.e2, y].into_iter().for_each(|v| eat(v as u64));
            }
        }
    }

    fn evaluate(&mut self, net: &Network, _extra: &[f32]) -> (f64, f64, f64) {
        let c = self.classes;
        let dev = self.dev;
        let mut predicted = Vec::with_capacity(dev.pairs.len());
        let mut loss = 0.0;
        for (chunk, labels) in dev.pairs.chunks(32).zip(dev.labels.chunks(32)) {
            let pairs: Vec<&MarkedPair> = chunk.iter().collect();
            let logits = self.scores(net, &pairs);
            loss += f64::from(cross_entropy(&logits, labels, c, 1.0).0) * labels.len() as f64;
            predicted.extend(logits.chunks_exact(c).map(lmfuse_metrics::argmax));
        }
        let right = predicted
            .iter()
            .zip(dev.labels)
            .filter(|(a, b)| a == b)
            .count();
        let n = dev.pairs.len() as f64;
        (right as f64 / n, (self.dev_score)(&predicted), loss / n)
    }
}

/// The network's block layer as one layer over [first; e1; e2]: `3·hidden × classes`
/// weights (inputs first, as the network's) and `classes` biases (the three blocks' summed).
pub fn relation_layer(net: &Network, classes: usize) -> (Vec<f32>, Vec<f32>) {
    let (w, b) = net.head_tensors();
    let h = net.config().hidden_size;
    let k = 3 * classes;
    // Block `block` of the network's `hidden × 3·classes` weight reads state `block`.
    let coef = (0..3)
        .flat_map(|block| (0..h).map(move |j| (block, j)))
        .flat_map(|(block, j)| {
            let row = &w[j * k..(j + 1) * k];
            row[block * classes..(block + 1) * classes].iter().copied()
        })
        .collect();
    let intercept = (0..classes)
        .map(|c| (0..3).map(|block| b[block * classes + c]).sum())
        .collect();
    (coef, intercept)
}

/// Fine-tunes `net` (its linear layer built for `3 × classes` outputs) to classify the
/// relation of each marked pair, evaluating on `dev` as [`crate::fit`] does and choosing by
/// the score `dev_score` gives the dev predictions (class indices). At the end `net` holds
/// the weights of the best evaluation. Gradient accumulation, FGM, PGD and LoRA are refused.
/// With `run_dir` the metrics log and a checkpoint after every epoch are written there, and
/// `resume` continues a killed run to the end an uninterrupted one reaches.
pub fn fit_relation(
    net: &mut Network,
    classes: usize,
    params: &FinetuneParams,
    (train, dev): (PairSet<'_>, PairSet<'_>),
    dev_score: &mut dyn FnMut(&[usize]) -> f64,
    (run_dir, resume): (Option<&Path>, bool),
    observer: &mut dyn FnMut(&Event),
) -> Result<RelationFit, FinetuneError> {
    refuse_unsupported(params, "relation fine-tuning")?;
    if net.n_classes() != 3 * classes {
        return Err(FinetuneError::Invalid(format!(
            "the network scores {} outputs, a relation layer over three states of {classes} \
             classes needs {}",
            net.n_classes(),
            3 * classes
        )));
    }
    check_pairs(net, classes, "training", train)?;
    check_pairs(net, classes, "dev", dev)?;
    let mut task = RelationTask {
        classes,
        params,
        train,
        dev,
        dev_score,
        threads: rayon::current_num_threads(),
    };
    let (summary, _) = drive(net, &mut task, params, (run_dir, resume), observer)?;
    let (coef, intercept) = relation_layer(net, classes);
    Ok(RelationFit {
        summary,
        coef,
        intercept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lmfuse_core::Pooling;
    use lmfuse_encoder::{LoadOptions, ModelFiles, SentenceEncoder};

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

    #[test]
    fn the_relation_gradient_matches_finite_differences() {
        let Some(enc) = tiny() else { return };
        let mut config = enc.model().config().clone();
        let mut tensors = enc.model().export();
        let start = enc.punctuation_markers().unwrap();
        let markers = add_marker_tokens(&mut config, &mut tensors, start).unwrap();
        let mut net = Network::new(&config, tensors, Pooling::Mean, 9, 7).unwrap();
        let texts = [
            "the storm caused a flood in the valley",
            "a flood in the valley was caused by the storm near the old town",
        ];
        let pairs = enc
            .mark_pairs(
                &[(texts[0], 4..9, 18..23), (texts[1], 2..7, 39..44)],
                markers,
            )
            .unwrap();
        assert!(pairs[1].truncated, "the second is cut to 16 tokens");
        let labels = [0usize, 2];
        let params = FinetuneParams {
            dropout: 0.0,
            ..FinetuneParams::default()
        };
        let set = PairSet {
            pairs: &pairs,
            labels: &labels,
        };
        let task = RelationTask {
            classes: 3,
            params: &params,
            train: set,
            dev: set,
            dev_score: &mut |_| 0.0,
            threads: 1,
        };
        let loss_at = |net: &Network| {
            let mut g = vec![0.0f32; net.params.values.len()];
            let mut rng = SeededRng::new(1);
            f64::from(task.step(net, &[], &[0, 1], &mut rng, (&mut g, &mut [])))
        };
        let mut grads = vec![0.0f32; net.params.values.len()];
        let mut rng = SeededRng::new(1);
        task.step(&net, &[], &[0, 1], &mut rng, (&mut grads, &mut []));
        let (w_range, b_range) = net.head_ranges();
        let layer = net
            .params
            .find("encoder.layer.1.output.dense.weight")
            .unwrap();
        let word = net.params.specs[net.params.find(WORD_EMBEDDINGS).unwrap()].range();
        let h = config.hidden_size;
        let marker_row = word.start + markers[2] as usize * h;
        let r = net.params.specs[layer].range();
        let entries = [
            w_range.start + 1,
            w_range.start + 3 * 3 + 4,
            b_range.start + 7,
            r.start + 3,
            r.start + 77,
            marker_row + 5,
        ];
        for i in entries {
            let step = 1e-2f32;
            let orig = net.params.values[i];
            net.params.values[i] = orig + step;
            let up = loss_at(&net);
            net.params.values[i] = orig - step;
            let down = loss_at(&net);
            net.params.values[i] = orig;
            let numeric = (up - down) / (2.0 * f64::from(step));
            let analytic = f64::from(grads[i]);
            assert!(
                (numeric - analytic).abs() <= 2e-3 + 0.05 * analytic.abs(),
                "value {i}: numeric {numeric:.6} vs analytic {analytic:.6}"
            );
        }
        assert!(grads[marker_row..marker_row + h].iter().any(|&g| g != 0.0));
    }
}
