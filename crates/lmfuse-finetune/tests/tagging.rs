//! Fine-tuning for tagging on splade-tiny (2 layers, hidden 128): a toy name-tagging task is
//! learnt by the softmax and the CRF heads, the run is deterministic for a seed, and what the
//! tagger cannot do is refused.

mod common;

use common::tiny;
use lmfuse_core::{Pooling, SeededRng};
use lmfuse_crf::Chain;
use lmfuse_encoder::{SentenceEncoder, WordWindow};
use lmfuse_finetune::{fit_tagger, EvalRecord, Event, FinetuneParams, Network, TagHead, TagSet};

const LABELS: [&str; 3] = ["B-PER", "I-PER", "O"];

/// Sentences of filler words with first names (B-PER), some followed by a surname (I-PER).
fn toy(n: usize, seed: u64) -> (Vec<Vec<String>>, Vec<Vec<usize>>) {
    let filler = [
        "the", "went", "to", "with", "and", "saw", "today", "city", "house", "late",
    ];
    let names = ["alice", "bob", "carol", "dave", "emma", "frank"];
    let surnames = ["smith", "jones", "brown"];
    let mut rng = SeededRng::new(seed);
    let (mut sentences, mut tags) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let (mut s, mut t) = (Vec::new(), Vec::new());
        for _ in 0..4 + rng.below(6) {
            if rng.below(4) == 0 {
                s.push(names[rng.below(names.len())].to_string());
                t.push(0);
                if rng.below(2) == 0 {
                    s.push(surnames[rng.below(surnames.len())].to_string());
                    t.push(1);
                }
            } else {
                s.push(filler[rng.below(filler.len())].to_string());
                t.push(2);
            }
        }
        sentences.push(s);
        tags.push(t);
    }
    (sentences, tags)
}

/// Share of the dev words tagged right.
fn accuracy(decoded: &[Vec<(usize, usize)>], windows: &[WordWindow], tags: &[Vec<usize>]) -> f64 {
    let (mut right, mut all) = (0, 0);
    for (w, words) in windows.iter().zip(decoded) {
        for &(word, tag) in words {
            right += usize::from(tags[w.sentence][word] == tag);
            all += 1;
        }
    }
    right as f64 / all as f64
}

fn run(enc: &SentenceEncoder, head: TagHead, params: &FinetuneParams) -> (Vec<f64>, Vec<f32>) {
    let (train, train_tags) = toy(160, 1);
    let (dev, dev_tags) = toy(40, 2);
    let (tw, dw) = (
        enc.word_windows(&train).unwrap(),
        enc.word_windows(&dev).unwrap(),
    );
    let labels: Vec<String> = LABELS.map(String::from).to_vec();
    let chain = Chain::iob2(&labels);
    let mut net = Network::new(
        enc.model().config(),
        enc.model().export(),
        Pooling::Mean,
        3,
        7,
    )
    .unwrap();
    let mut score = |d: &[Vec<(usize, usize)>]| accuracy(d, &dw, &dev_tags);
    let fit = fit_tagger(
        &mut net,
        head,
        &chain,
        params,
        (
            TagSet {
                windows: &tw,
                tags: &train_tags,
            },
            TagSet {
                windows: &dw,
                tags: &dev_tags,
            },
        ),
        &mut score,
        (None, false),
        &mut |_| {},
    )
    .unwrap();
    let scores = fit.summary.evals.iter().map(|e| e.dev_macro_f1).collect();
    (scores, fit.transitions)
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

#[test]
fn both_heads_learn_the_toy_names_deterministically() {
    let Some(enc) = tiny() else { return };
    for head in [TagHead::Softmax, TagHead::Crf] {
        let (scores, transitions) = run(&enc, head, &params());
        let best = scores.iter().cloned().fold(0.0, f64::max);
        assert!(best > 0.95, "{head}: dev accuracy by epoch {scores:?}");
        match head {
            TagHead::Softmax => assert!(transitions.iter().all(|&t| t == 0.0)),
            TagHead::Crf => assert!(transitions.iter().any(|&t| t != 0.0)),
        }
        if head == TagHead::Crf {
            assert_eq!(
                run(&enc, head, &params()),
                (scores, transitions),
                "same seed, same run"
            );
        }
    }
}

#[test]
fn what_tagging_cannot_do_is_refused() {
    let Some(enc) = tiny() else { return };
    let (train, tags) = toy(8, 1);
    let windows = enc.word_windows(&train).unwrap();
    let labels: Vec<String> = LABELS.map(String::from).to_vec();
    let chain = Chain::iob2(&labels);
    let set = TagSet {
        windows: &windows,
        tags: &tags,
    };
    let attempt = |n_classes: usize, params: FinetuneParams, tags: &[Vec<usize>]| {
        let mut net = Network::new(
            enc.model().config(),
            enc.model().export(),
            Pooling::Mean,
            n_classes,
            7,
        )
        .unwrap();
        let bad = TagSet {
            windows: &windows,
            tags,
        };
        fit_tagger(
            &mut net,
            TagHead::Crf,
            &chain,
            &params,
            (bad, set),
            &mut |_| 0.0,
            (None, false),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string()
    };
    let accum = FinetuneParams {
        grad_accum: 2,
        ..params()
    };
    assert!(attempt(3, accum, &tags).contains("gradient accumulation"));
    assert!(attempt(4, params(), &tags).contains("4 classes"));
    let mut out_of_range = tags.clone();
    out_of_range[0][0] = 3;
    let err = attempt(3, params(), &out_of_range);
    assert!(err.contains("training sentences: sentence 0"), "{err}");
}

#[test]
fn a_killed_crf_tagger_resumes_to_the_uninterrupted_result() {
    let Some(enc) = tiny() else { return };
    let (train, train_tags) = toy(64, 1);
    let (dev, dev_tags) = toy(16, 2);
    let (tw, dw) = (
        enc.word_windows(&train).unwrap(),
        enc.word_windows(&dev).unwrap(),
    );
    let chain = Chain::iob2(&LABELS.map(String::from));
    let params = FinetuneParams {
        epochs: 3,
        ..params()
    };
    let steps_per_epoch = tw.len().div_ceil(8);
    let fit_in = |dir: &std::path::Path, resume: bool, kill_at: usize| {
        let mut net = Network::new(
            enc.model().config(),
            enc.model().export(),
            Pooling::Mean,
            3,
            7,
        )
        .unwrap();
        let mut score = |d: &[Vec<(usize, usize)>]| accuracy(d, &dw, &dev_tags);
        let sets = (
            TagSet {
                windows: &tw,
                tags: &train_tags,
            },
            TagSet {
                windows: &dw,
                tags: &dev_tags,
            },
        );
        let mut observe = |e: &Event| {
            if matches!(e, Event::Step { step, .. } if *step == kill_at) {
                panic!("killed");
            }
        };
        let fit = fit_tagger(
            &mut net,
            TagHead::Crf,
            &chain,
            &params,
            sets,
            &mut score,
            (Some(dir), resume),
            &mut observe,
        )
        .unwrap();
        let evals: Vec<EvalRecord> = fit
            .summary
            .evals
            .iter()
            .map(|r| EvalRecord {
                seconds: 0.0,
                ..r.clone()
            })
            .collect();
        (net.params.values, fit.transitions, evals)
    };
    let whole = tempfile::tempdir().unwrap();
    let uninterrupted = fit_in(whole.path(), false, usize::MAX);
    let killed = tempfile::tempdir().unwrap();
    let kill = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fit_in(killed.path(), false, steps_per_epoch + 2)
    }));
    assert!(kill.is_err(), "the run should have been interrupted");
    let resumed = fit_in(killed.path(), true, usize::MAX);
    assert!(uninterrupted.1.iter().any(|&t| t != 0.0));
    assert_eq!(
        uninterrupted, resumed,
        "weights, transitions and evaluations"
    );
}
