//! Fine-tuning for relations on splade-tiny (2 layers, hidden 128): marker tokens added to the
//! vocabulary start as copies of their punctuation, a toy directed relation task is learnt,
//! the run is deterministic for a seed, and bad inputs are refused.

mod common;

use common::tiny;
use lmfuse_core::{Pooling, SeededRng};
use lmfuse_encoder::{MarkedPair, SentenceEncoder};
use lmfuse_finetune::{add_marker_tokens, fit_relation, Event, FinetuneParams, Network, PairSet};

/// "today <a> <verb> <b> here": labels from the verb and from which entity is e1: 0 built(e1,e2), 1 built(e2,e1), 2 owns(e1,e2),
/// 3 owns(e2,e1), 4 other ("and").
fn toy(
    n: usize,
    seed: u64,
) -> Vec<(
    String,
    std::ops::Range<usize>,
    std::ops::Range<usize>,
    usize,
)> {
    let names = ["alice", "bob", "carol", "dave", "emma", "frank"];
    let verbs = ["built", "owns", "and"];
    let mut rng = SeededRng::new(seed);
    (0..n)
        .map(|_| {
            let (a, b) = (names[rng.below(6)], names[rng.below(6)]);
            let v = rng.below(3);
            let text = format!("today {a} {} {b} here", verbs[v]);
            let ra = 6..6 + a.len();
            let rb = text.len() - 5 - b.len()..text.len() - 5;
            let e1_first = rng.below(2) == 0;
            let (e1, e2) = if e1_first { (ra, rb) } else { (rb, ra) };
            let label = if v == 2 {
                4
            } else {
                2 * v + usize::from(!e1_first)
            };
            (text, e1, e2, label)
        })
        .collect()
}

fn marked(
    enc: &SentenceEncoder,
    items: &[(
        String,
        std::ops::Range<usize>,
        std::ops::Range<usize>,
        usize,
    )],
    markers: [u32; 4],
) -> (Vec<MarkedPair>, Vec<usize>) {
    let inputs: Vec<_> = items
        .iter()
        .map(|(t, a, b, _)| (t.as_str(), a.clone(), b.clone()))
        .collect();
    (
        enc.mark_pairs(&inputs, markers).unwrap(),
        items.iter().map(|i| i.3).collect(),
    )
}

fn network(enc: &SentenceEncoder, outputs: usize) -> (Network, [u32; 4]) {
    let mut config = enc.model().config().clone();
    let mut tensors = enc.model().export();
    let start = enc.punctuation_markers().unwrap();
    let markers = add_marker_tokens(&mut config, &mut tensors, start).unwrap();
    let net = Network::new(&config, tensors, Pooling::Mean, outputs, 7).unwrap();
    (net, markers)
}

fn params() -> FinetuneParams {
    FinetuneParams {
        epochs: 4,
        batch_size: 8,
        lr: 1e-3,
        head_lr: 1e-2,
        patience: 0,
        ..FinetuneParams::default()
    }
}

fn run(enc: &SentenceEncoder) -> (Vec<f64>, Vec<f32>) {
    let (mut net, markers) = network(enc, 15);
    let (train, y) = marked(enc, &toy(240, 1), markers);
    let (dev, y_dev) = marked(enc, &toy(60, 2), markers);
    let mut score =
        |p: &[usize]| p.iter().zip(&y_dev).filter(|(a, b)| a == b).count() as f64 / p.len() as f64;
    let fit = fit_relation(
        &mut net,
        5,
        &params(),
        (
            PairSet {
                pairs: &train,
                labels: &y,
            },
            PairSet {
                pairs: &dev,
                labels: &y_dev,
            },
        ),
        &mut score,
        (None, false),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((fit.coef.len(), fit.intercept.len()), (5 * 3 * 128, 5));
    let scores = fit.summary.evals.iter().map(|e| e.dev_macro_f1).collect();
    (scores, fit.coef)
}

#[test]
fn marker_tokens_start_as_their_punctuation() {
    let Some(enc) = tiny() else { return };
    let mut config = enc.model().config().clone();
    let v = config.vocab_size;
    let mut tensors = enc.model().export();
    let start = enc.punctuation_markers().unwrap();
    let markers = add_marker_tokens(&mut config, &mut tensors, start).unwrap();
    assert_eq!(
        markers,
        [v as u32, v as u32 + 1, v as u32 + 2, v as u32 + 3]
    );
    assert_eq!(config.vocab_size, v + 4);
    let words = tensors
        .iter()
        .find(|t| t.name == "embeddings.word_embeddings.weight")
        .unwrap();
    let h = config.hidden_size;
    for (new, old) in markers.iter().zip(start) {
        let row = |id: u32| &words.data[id as usize * h..(id as usize + 1) * h];
        assert_eq!(row(*new), row(old));
    }
    let mut small = enc.model().config().clone();
    let err = add_marker_tokens(
        &mut small,
        &mut enc.model().export(),
        [0, 1, 2, v as u32 + 9],
    );
    assert!(err
        .unwrap_err()
        .to_string()
        .contains("outside the vocabulary"));
}

#[test]
fn a_directed_toy_relation_is_learnt_deterministically() {
    let Some(enc) = tiny() else { return };
    let (scores, weight) = run(&enc);
    let best = scores.iter().cloned().fold(0.0, f64::max);
    assert!(best > 0.9, "dev accuracy by epoch {scores:?}");
    assert_eq!(run(&enc), (scores, weight), "same seed, same run");
}

#[test]
fn bad_relation_inputs_are_refused() {
    let Some(enc) = tiny() else { return };
    let (net, markers) = network(&enc, 15);
    let (pairs, y) = marked(&enc, &toy(8, 1), markers);
    let attempt = |mut net: Network, y: &[usize], classes: usize| {
        let set = PairSet {
            pairs: &pairs,
            labels: y,
        };
        fit_relation(
            &mut net,
            classes,
            &params(),
            (set, set),
            &mut |_| 0.0,
            (None, false),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string()
    };
    assert!(attempt(network(&enc, 15).0, &y, 4).contains("needs 12"));
    let mut bad = y.clone();
    bad[3] = 9;
    let err = attempt(net, &bad, 5);
    assert!(
        err.contains("training pairs: pair 3: class 9 of 5"),
        "{err}"
    );
}

#[test]
fn a_killed_relation_run_resumes_to_the_uninterrupted_result() {
    let Some(enc) = tiny() else { return };
    let (_, markers) = network(&enc, 15);
    let (train, y) = marked(&enc, &toy(64, 1), markers);
    let (dev, y_dev) = marked(&enc, &toy(16, 2), markers);
    let params = FinetuneParams {
        epochs: 3,
        ..params()
    };
    let fit_in = |dir: &std::path::Path, resume: bool, kill_at: usize| {
        let (mut net, _) = network(&enc, 15);
        let set = |pairs, labels| PairSet { pairs, labels };
        let mut observe = |e: &Event| {
            if matches!(e, Event::Step { step, .. } if *step == kill_at) {
                panic!("killed");
            }
        };
        let fit = fit_relation(
            &mut net,
            5,
            &params,
            (set(&train, &y), set(&dev, &y_dev)),
            &mut |p: &[usize]| p.iter().zip(&y_dev).filter(|(a, b)| a == b).count() as f64,
            (Some(dir), resume),
            &mut observe,
        )
        .unwrap();
        let steps: Vec<(usize, f64)> = fit
            .summary
            .evals
            .iter()
            .map(|r| (r.step, r.dev_macro_f1))
            .collect();
        (fit.coef, net.params.values, steps)
    };
    let whole = tempfile::tempdir().unwrap();
    let uninterrupted = fit_in(whole.path(), false, usize::MAX);
    let killed = tempfile::tempdir().unwrap();
    let kill = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fit_in(killed.path(), false, 8 + 3)
    }));
    assert!(kill.is_err(), "the run should have been interrupted");
    assert_eq!(uninterrupted, fit_in(killed.path(), true, usize::MAX));
}
