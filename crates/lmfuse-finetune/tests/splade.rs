//! Fine-tuning checks on the small SPLADE-tiny BERT (2 layers, hidden 128): gradients against
//! finite differences, which tensors receive gradients, LoRA, the loss going down, resume after
//! a kill, and the exported encoder reproducing the network's vectors.

use lmfuse_core::{Pooling, SeededRng, TextEncoder};
use lmfuse_encoder::{LoadOptions, ModelFiles, SentenceEncoder, TokenizedText};
use lmfuse_finetune::{
    embed, fit, fit_with_head, save_encoder, Batch, Dropout, Event, FinetuneError, FinetuneParams,
    HeadError, LoraParams, Network, PooledHead,
};
use std::path::PathBuf;

fn tiny() -> Option<ModelFiles> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/splade-tiny");
    if dir.join("model.safetensors").is_file() {
        return Some(ModelFiles::from_dir(&dir, "splade-tiny").expect("splade-tiny loads"));
    }
    let msg = format!(
        "splade-tiny not found at {}: run `bash scripts/fetch-models.sh`",
        dir.display()
    );
    if std::env::var("LMFUSE_REQUIRE_ASSETS").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

fn options() -> LoadOptions {
    LoadOptions {
        pooling: Some(Pooling::Mean),
        normalize: Some(false),
        max_seq_length: Some(64),
        batch_tokens: None,
        prefix: None,
        ..LoadOptions::default()
    }
}

fn setup(n_classes: usize) -> Option<(ModelFiles, SentenceEncoder, Network)> {
    let files = tiny()?;
    let enc = SentenceEncoder::load(&files, &options()).expect("encoder");
    let net = Network::new(
        &files.config,
        enc.model().export(),
        Pooling::Mean,
        n_classes,
        7,
    )
    .expect("network");
    Some((files, enc, net))
}

fn tokenize(enc: &SentenceEncoder, texts: &[&str]) -> Vec<TokenizedText> {
    enc.tokenize(texts).expect("tokenize")
}

fn batch_of(t: &[TokenizedText]) -> Batch {
    Batch::pack(t.iter().map(|x| (x.ids.as_slice(), x.type_ids.as_slice())))
}

/// Mean cross-entropy of the logits and its gradient.
fn loss_and_grad(logits: &[f32], labels: &[usize], k: usize) -> (f64, Vec<f32>) {
    let n = labels.len();
    let mut g = vec![0.0f32; logits.len()];
    let mut loss = 0.0;
    for (i, &y) in labels.iter().enumerate() {
        let row: Vec<f64> = logits[i * k..(i + 1) * k]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let max = row.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = row.iter().map(|v| (v - max).exp()).sum();
        for j in 0..k {
            let p = (row[j] - max).exp() / z;
            g[i * k + j] = ((p - (j == y) as u8 as f64) / n as f64) as f32;
        }
        loss -= (row[y] - max) - z.ln();
    }
    (loss / n as f64, g)
}

#[test]
fn gradients_match_finite_differences_with_and_without_dropout() {
    let Some((_, enc, mut net)) = setup(3) else {
        return;
    };
    let texts = tokenize(
        &enc,
        &["a quiet film", "the plot never lands at all", "great"],
    );
    let labels = [0usize, 2, 1];
    let batch = batch_of(&texts);
    for rate in [0.0f32, 0.1] {
        let loss_at = |net: &Network| -> f64 {
            let mut rng = SeededRng::new(99);
            let dropout = (rate > 0.0).then_some(Dropout {
                rate,
                rng: &mut rng,
            });
            let fwd = net.forward(&batch, dropout, 1);
            loss_and_grad(&fwd.logits, &labels, 3).0
        };
        let mut rng = SeededRng::new(99);
        let dropout = (rate > 0.0).then_some(Dropout {
            rate,
            rng: &mut rng,
        });
        let fwd = net.forward(&batch, dropout, 1);
        let (_, dlogits) = loss_and_grad(&fwd.logits, &labels, 3);
        let mut grads = vec![0.0f32; net.params.values.len()];
        net.backward(&batch, &fwd, &dlogits, &mut grads, 1);
        drop(fwd);

        let specs = net.params.specs.clone();
        let mut checked = 0;
        let mut pick = SeededRng::new(5);
        for spec in &specs {
            // Entries that matter: for the embedding tables, rows the batch uses.
            let candidates: Vec<usize> = match spec.name.as_str() {
                "embeddings.word_embeddings.weight" => {
                    let h = spec.shape[1];
                    batch
                        .tokens
                        .iter()
                        .flat_map(|&t| (0..h).map(move |j| t as usize * h + j))
                        .collect()
                }
                "embeddings.position_embeddings.weight"
                | "embeddings.token_type_embeddings.weight" => (0..spec.shape[1] * 2).collect(),
                _ => (0..spec.len()).collect(),
            };
            // The entries with the largest gradients are the informative ones; plus random ones.
            let mut by_size = candidates.clone();
            by_size.sort_by(|&a, &b| {
                grads[spec.offset + b]
                    .abs()
                    .total_cmp(&grads[spec.offset + a].abs())
            });
            let mut entries: Vec<usize> = by_size.into_iter().take(2).collect();
            entries.push(candidates[pick.below(candidates.len())]);
            for e in entries {
                let i = spec.offset + e;
                let h = 1e-2f32;
                let orig = net.params.values[i];
                net.params.values[i] = orig + h;
                let up = loss_at(&net);
                net.params.values[i] = orig - h;
                let down = loss_at(&net);
                net.params.values[i] = orig;
                let numeric = (up - down) / (2.0 * h as f64);
                let analytic = grads[i] as f64;
                assert!(
                    (numeric - analytic).abs() <= 2e-3 + 0.05 * analytic.abs(),
                    "dropout {rate}: {}[{e}]: numeric {numeric:.6} vs analytic {analytic:.6}",
                    spec.name
                );
                checked += 1;
            }
        }
        assert!(checked >= 3 * specs.len());
    }
}

#[test]
fn gradients_reach_every_trainable_tensor_and_no_frozen_one() {
    let Some((_, enc, mut net)) = setup(2) else {
        return;
    };
    let texts = tokenize(&enc, &["one text here", "and another, longer text to read"]);
    let batch = batch_of(&texts);
    for (freeze_emb, freeze_layers) in [(false, 0), (true, 1), (true, 2)] {
        for s in &mut net.params.specs {
            s.frozen = false;
        }
        net.freeze(freeze_emb, freeze_layers);
        let fwd = net.forward(&batch, None, 2);
        let (_, dlogits) = loss_and_grad(&fwd.logits, &[0, 1], 2);
        let mut grads = vec![0.0f32; net.params.values.len()];
        net.backward(&batch, &fwd, &dlogits, &mut grads, 2);
        for s in &net.params.specs {
            let norm: f64 = grads[s.range()].iter().map(|v| (*v as f64).powi(2)).sum();
            if s.frozen {
                assert_eq!(norm, 0.0, "frozen {} got a gradient", s.name);
            } else {
                assert!(
                    norm > 0.0,
                    "{} got no gradient (freeze {freeze_emb} {freeze_layers})",
                    s.name
                );
            }
        }
        let frozen = net.params.specs.iter().filter(|s| s.frozen).count();
        match (freeze_emb, freeze_layers) {
            (false, 0) => assert_eq!(frozen, 0),
            (true, 2) => assert_eq!(frozen, net.params.specs.len() - 2, "only the head trains"),
            _ => assert!(frozen > 0),
        }
    }
}

/// A toy task the tiny model can learn: positive vs negative words.
fn toy(enc: &SentenceEncoder, n: usize, seed: u64) -> (Vec<TokenizedText>, Vec<usize>) {
    let pos = ["good", "great", "wonderful", "fine", "lovely", "superb"];
    let neg = ["bad", "awful", "terrible", "poor", "horrible", "dreadful"];
    let fill = ["the", "film", "was", "really", "quite", "a", "story", "and"];
    let mut rng = SeededRng::new(seed);
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let y = i % 2;
        let words = if y == 0 { &pos } else { &neg };
        let mut t: Vec<&str> = (0..4).map(|_| fill[rng.below(fill.len())]).collect();
        t.insert(rng.below(5), words[rng.below(words.len())]);
        texts.push(t.join(" "));
        labels.push(y);
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    (tokenize(enc, &refs), labels)
}

fn small_params() -> FinetuneParams {
    FinetuneParams {
        epochs: 3,
        batch_size: 8,
        lr: 5e-4,
        head_lr: 5e-3,
        patience: 0,
        seed: 3,
        ..FinetuneParams::default()
    }
}

#[test]
fn loss_decreases_and_the_toy_task_is_learnt() {
    let Some((_, enc, mut net)) = setup(2) else {
        return;
    };
    let (train, y) = toy(&enc, 96, 1);
    let (dev, y_dev) = toy(&enc, 32, 2);
    let mut losses = Vec::new();
    let summary = fit(
        &mut net,
        &small_params(),
        &train,
        &y,
        &dev,
        &y_dev,
        None,
        false,
        &mut |e| {
            if let Event::Step { loss, .. } = e {
                losses.push(*loss);
            }
        },
    )
    .expect("fit");
    let first: f32 = losses[..4].iter().sum::<f32>() / 4.0;
    let last: f32 = losses[losses.len() - 4..].iter().sum::<f32>() / 4.0;
    assert!(last < 0.5 * first, "loss {first} → {last}");
    assert!(
        summary.best.dev_accuracy >= 0.9,
        "dev accuracy {}",
        summary.best.dev_accuracy
    );
    assert_eq!(summary.evals.len(), 3);
}

#[test]
fn lora_trains_adapters_only_and_merges_into_the_same_function() {
    let Some((files, enc, mut net)) = setup(2) else {
        return;
    };
    let base: Vec<f32> = net.params.values.clone();
    net.add_lora(&LoraParams::default(), 11).expect("lora");
    let lora_values = net.lora().expect("adapters").n_values(&net.params);
    let trainable: usize = net
        .params
        .specs
        .iter()
        .filter(|s| !s.frozen)
        .map(|s| s.len())
        .sum();
    assert!(
        (trainable as f64) < 0.02 * base.len() as f64,
        "{trainable} of {}",
        base.len()
    );
    assert!(lora_values > 0 && lora_values < trainable);
    let (train, y) = toy(&enc, 64, 4);
    let (dev, y_dev) = toy(&enc, 16, 5);
    let params = FinetuneParams {
        lora: Some(LoraParams::default()),
        ..small_params()
    };
    fit(
        &mut net,
        &params,
        &train,
        &y,
        &dev,
        &y_dev,
        None,
        false,
        &mut |_| {},
    )
    .expect("fit");
    // Every encoder value is bit-for-bit the pretrained one; adapters and head moved.
    let head_start = net
        .params
        .specs
        .iter()
        .find(|s| s.name == "classifier.weight")
        .expect("head")
        .offset;
    assert_eq!(
        &net.params.values[..head_start],
        &base[..head_start],
        "base weights changed"
    );
    let b_moved = net
        .params
        .specs
        .iter()
        .filter(|s| s.name.ends_with("lora_B"))
        .any(|s| net.params.values[s.range()].iter().any(|v| *v != 0.0));
    assert!(b_moved, "the adapters did not train");

    // The merged export computes what the network with adapters computes.
    let dir = tempfile::tempdir().expect("tmp");
    save_encoder(&net, &files.dir, dir.path()).expect("save");
    let merged = ModelFiles::from_dir(dir.path(), "merged").expect("merged folder");
    let merged_enc = SentenceEncoder::load(&merged, &options()).expect("merged encoder");
    let texts = ["the film was good", "a dreadful story and a poor one"];
    let got = merged_enc.encode(&texts).expect("encode").embeddings;
    let fwd = net.forward(&batch_of(&tokenize(&enc, &texts)), None, 1);
    for (a, b) in got.as_slice().iter().zip(&fwd.pooled) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn saved_encoder_reproduces_the_network_vectors() {
    let Some((files, enc, mut net)) = setup(2) else {
        return;
    };
    let (train, y) = toy(&enc, 32, 8);
    let (dev, y_dev) = toy(&enc, 8, 9);
    let params = FinetuneParams {
        epochs: 1,
        ..small_params()
    };
    fit(
        &mut net,
        &params,
        &train,
        &y,
        &dev,
        &y_dev,
        None,
        false,
        &mut |_| {},
    )
    .expect("fit");
    let dir = tempfile::tempdir().expect("tmp");
    save_encoder(&net, &files.dir, dir.path()).expect("save");
    let loaded = SentenceEncoder::load(
        &ModelFiles::from_dir(dir.path(), "tuned").expect("folder"),
        &options(),
    )
    .expect("load");
    let texts = ["good", "the story was really quite awful and a bad film"];
    let got = loaded.encode(&texts).expect("encode").embeddings;
    let fwd = net.forward(&batch_of(&tokenize(&enc, &texts)), None, 2);
    let mut changed = false;
    let before = enc.encode(&texts).expect("base").embeddings;
    for ((a, b), c) in got
        .as_slice()
        .iter()
        .zip(&fwd.pooled)
        .zip(before.as_slice())
    {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        changed |= (a - c).abs() > 1e-4;
    }
    assert!(changed, "fine-tuning left the encoder unchanged");
}

#[test]
fn a_killed_run_resumes_to_the_same_result() {
    let Some((_, enc, net0)) = setup(2) else {
        return;
    };
    drop(net0);
    let (train, y) = toy(&enc, 48, 10);
    let (dev, y_dev) = toy(&enc, 16, 11);
    let new_net = || setup(2).expect("model").2;
    let steps_per_epoch = 48 / 8;
    // Evaluations at each epoch's end, and every 4 steps (not a divisor of the epoch, so a
    // checkpoint falls between evaluations and must carry the running loss).
    for eval_every in [None, Some(4)] {
        let params = FinetuneParams {
            epochs: 3,
            eval_every,
            ..small_params()
        };
        let whole = tempfile::tempdir().expect("tmp");
        let mut a = new_net();
        let sa = fit(
            &mut a,
            &params,
            &train,
            &y,
            &dev,
            &y_dev,
            Some(whole.path()),
            false,
            &mut |_| {},
        )
        .expect("fit");

        // Second run: "killed" (a panic out of the observer) in the middle of epoch 2.
        let killed = tempfile::tempdir().expect("tmp");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut b = new_net();
            let _ = fit(
                &mut b,
                &params,
                &train,
                &y,
                &dev,
                &y_dev,
                Some(killed.path()),
                false,
                &mut |e| {
                    if let Event::Step { step, .. } = e {
                        if *step == steps_per_epoch + 2 {
                            panic!("killed");
                        }
                    }
                },
            );
        }));
        assert!(result.is_err(), "the run should have been interrupted");
        let mut c = new_net();
        let mut resumed_at = None;
        let sc = fit(
            &mut c,
            &params,
            &train,
            &y,
            &dev,
            &y_dev,
            Some(killed.path()),
            true,
            &mut |e| {
                if let Event::Resumed { step } = e {
                    resumed_at = Some(*step);
                }
            },
        )
        .expect("resume");
        assert_eq!(resumed_at, Some(steps_per_epoch));
        let strip = |v: &[lmfuse_finetune::EvalRecord]| -> Vec<lmfuse_finetune::EvalRecord> {
            v.iter()
                .map(|r| lmfuse_finetune::EvalRecord {
                    seconds: 0.0,
                    ..r.clone()
                })
                .collect()
        };
        assert_eq!(
            strip(&sa.evals),
            strip(&sc.evals),
            "evaluations differ ({eval_every:?})"
        );
        assert_eq!(
            a.params.values, c.params.values,
            "resumed weights differ ({eval_every:?})"
        );
        let log =
            std::fs::read_to_string(killed.path().join(lmfuse_finetune::METRICS_LOG)).expect("log");
        assert_eq!(log.lines().count(), sa.evals.len(), "{log}");
        // A changed hyperparameter is refused, not silently mixed.
        let other = FinetuneParams {
            lr: 1e-3,
            ..params.clone()
        };
        let err = fit(
            &mut new_net(),
            &other,
            &train,
            &y,
            &dev,
            &y_dev,
            Some(killed.path()),
            true,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("other hyperparameters"), "{err}");
        // So are other data.
        let err = fit(
            &mut new_net(),
            &params,
            &dev,
            &y_dev,
            &dev,
            &y_dev,
            Some(killed.path()),
            true,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("other data"), "{err}");
        // A fresh run in the same folder starts clean: resuming right after it (killed before its
        // first checkpoint) finds nothing instead of the earlier run's state.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = fit(
                &mut new_net(),
                &params,
                &train,
                &y,
                &dev,
                &y_dev,
                Some(killed.path()),
                false,
                &mut |e| {
                    if matches!(e, Event::Step { step: 1, .. }) {
                        panic!("killed");
                    }
                },
            );
        }));
        let err = fit(
            &mut new_net(),
            &params,
            &train,
            &y,
            &dev,
            &y_dev,
            Some(killed.path()),
            true,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("no checkpoint yet"), "{err}");
    }
}

#[test]
fn lora_gradients_match_finite_differences() {
    let Some((_, enc, mut net)) = setup(2) else {
        return;
    };
    net.add_lora(
        &LoraParams {
            dropout: 0.0,
            ..LoraParams::default()
        },
        3,
    )
    .expect("lora");
    // B starts at zero (then A gets no gradient): give it values to check both.
    let mut rng = SeededRng::new(8);
    for s in net.params.specs.clone() {
        if s.name.ends_with("lora_B") {
            for v in &mut net.params.values[s.range()] {
                *v = ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2;
            }
        }
    }
    let texts = tokenize(&enc, &["a quiet film", "the plot never lands"]);
    let labels = [0usize, 1];
    let batch = batch_of(&texts);
    let fwd = net.forward(&batch, None, 1);
    let (_, dlogits) = loss_and_grad(&fwd.logits, &labels, 2);
    let mut grads = vec![0.0f32; net.params.values.len()];
    net.backward(&batch, &fwd, &dlogits, &mut grads, 1);
    drop(fwd);
    let mut checked = 0;
    for s in net
        .params
        .specs
        .clone()
        .iter()
        .filter(|s| s.name.contains("lora_"))
    {
        let mut by_size: Vec<usize> = (0..s.len()).collect();
        by_size.sort_by(|&a, &b| {
            grads[s.offset + b]
                .abs()
                .total_cmp(&grads[s.offset + a].abs())
        });
        for e in by_size.into_iter().take(2) {
            let i = s.offset + e;
            let orig = net.params.values[i];
            let at = |net: &mut Network, v: f32| {
                net.params.values[i] = v;
                let fwd = net.forward(&batch, None, 1);
                loss_and_grad(&fwd.logits, &labels, 2).0
            };
            let numeric = (at(&mut net, orig + 1e-2) - at(&mut net, orig - 1e-2)) / 2e-2;
            net.params.values[i] = orig;
            let analytic = grads[i] as f64;
            assert!(
                (numeric - analytic).abs() <= 2e-3 + 0.05 * analytic.abs(),
                "{}[{e}]: {numeric} vs {analytic}",
                s.name
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "{checked}");
}

#[test]
fn contrastive_pairs_are_capped_balanced_and_seeded() {
    use lmfuse_finetune::{contrastive_pairs, ContrastiveParams};
    // 100,000 examples: the cap bounds the pairs (SetFit's memory complaint).
    let y: Vec<usize> = (0..100_000).map(|i| i % 3).collect();
    let p = ContrastiveParams {
        max_pairs: 5_000,
        ..ContrastiveParams::default()
    };
    let pairs = contrastive_pairs(&y, &p);
    assert_eq!(pairs.len(), 5_000);
    let pos = pairs.iter().filter(|x| x.2 == 1.0).count();
    assert!((2_000..=3_000).contains(&pos), "{pos} positive pairs");
    for &(a, b, t) in &pairs {
        assert_ne!(a, b);
        assert_eq!(t == 1.0, y[a] == y[b]);
    }
    assert_eq!(pairs, contrastive_pairs(&y, &p));
    // 8 per class, 20 rounds: one positive and one negative per example per round.
    let y: Vec<usize> = (0..16).map(|i| i % 2).collect();
    assert_eq!(
        contrastive_pairs(&y, &ContrastiveParams::default()).len(),
        16 * 2 * 20
    );
}

#[test]
fn contrastive_training_pulls_classes_apart() {
    use lmfuse_finetune::{embed, fit_contrastive, ContrastiveParams};
    let Some((_, enc, mut net)) = setup(2) else {
        return;
    };
    let (train, y) = toy(&enc, 32, 21);
    let head_before = net.head_tensors().0.to_vec();
    let gap = |net: &Network| -> f32 {
        let e = embed(net, &train, true, 2);
        let h = net.config().hidden_size;
        let (mut same, mut diff, mut ns, mut nd) = (0.0, 0.0, 0, 0);
        for i in 0..train.len() {
            for j in i + 1..train.len() {
                let c: f32 = e[i * h..(i + 1) * h]
                    .iter()
                    .zip(&e[j * h..(j + 1) * h])
                    .map(|(a, b)| a * b)
                    .sum();
                if y[i] == y[j] {
                    same += c;
                    ns += 1;
                } else {
                    diff += c;
                    nd += 1;
                }
            }
        }
        same / ns as f32 - diff / nd as f32
    };
    let before = gap(&net);
    let params = ContrastiveParams {
        iterations: 5,
        lr: 2e-4,
        seed: 4,
        ..ContrastiveParams::default()
    };
    let losses = fit_contrastive(&mut net, &params, &train, &y, &mut |_| {}).expect("contrastive");
    assert_eq!(losses.len(), 1);
    let after = gap(&net);
    assert!(
        after > before + 0.2,
        "same-minus-different cosine {before} → {after}"
    );
    assert_eq!(
        net.head_tensors().0,
        head_before.as_slice(),
        "the head must not train"
    );
}

#[test]
fn adversarial_training_runs_learns_and_restores_the_embeddings() {
    use lmfuse_finetune::Pgd;
    let Some((_, enc, _)) = setup(2) else { return };
    let (train, y) = toy(&enc, 64, 31);
    let (dev, y_dev) = toy(&enc, 16, 32);
    // Small radii: the toy batches use few distinct tokens, so each row's share is large.
    for (fgm, pgd) in [
        (Some(0.1), None),
        (
            None,
            Some(Pgd {
                epsilon: 0.1,
                alpha: 0.05,
                steps: 3,
            }),
        ),
    ] {
        let mut net = setup(2).expect("model").2;
        let params = FinetuneParams {
            fgm,
            pgd,
            epochs: 2,
            ..small_params()
        };
        // The same run with a zero learning rate everywhere would leave the weights alone; here
        // the check is that the adversarial passes learn and do not leave a perturbation behind:
        // evaluating twice gives the same result.
        let s = fit(
            &mut net,
            &params,
            &train,
            &y,
            &dev,
            &y_dev,
            None,
            false,
            &mut |_| {},
        )
        .expect("fit");
        assert!(
            s.best.dev_accuracy >= 0.9,
            "{fgm:?} {pgd:?}: {}",
            s.best.dev_accuracy
        );
        let p1 = lmfuse_finetune::predict_proba(&net, &dev, 1);
        let p2 = lmfuse_finetune::predict_proba(&net, &dev, 1);
        assert_eq!(p1, p2);
    }
    // Invalid combinations are refused up front.
    let both = FinetuneParams {
        fgm: Some(1.0),
        pgd: Some(Pgd {
            epsilon: 1.0,
            alpha: 0.3,
            steps: 2,
        }),
        ..small_params()
    };
    assert!(both.check().is_err());
    let frozen = FinetuneParams {
        fgm: Some(1.0),
        freeze_embeddings: true,
        ..small_params()
    };
    assert!(frozen.check().is_err());
}

/// A softmax-linear head over the pooled vectors with plain SGD at `lr` (0: a fixed head), for
/// [`fit_with_head`]; optionally misbehaving.
struct SgdHead {
    w: Vec<f32>,
    b: Vec<f32>,
    h: usize,
    k: usize,
    lr: f32,
    best: Option<(Vec<f32>, Vec<f32>)>,
    kept: usize,
    fault: Option<&'static str>,
}

impl SgdHead {
    fn new(h: usize, k: usize, lr: f32, seed: u64) -> Self {
        let mut rng = SeededRng::new(seed);
        let w = (0..h * k)
            .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.5)
            .collect();
        Self {
            w,
            b: vec![0.0; k],
            h,
            k,
            lr,
            best: None,
            kept: 0,
            fault: None,
        }
    }

    fn proba(&self, w: &[f32], b: &[f32], pooled: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        for x in pooled.chunks_exact(self.h) {
            let z: Vec<f32> = (0..self.k)
                .map(|c| b[c] + (0..self.h).map(|j| x[j] * w[j * self.k + c]).sum::<f32>())
                .collect();
            let m = z.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = z.iter().map(|v| (v - m).exp()).collect();
            let s: f32 = e.iter().sum();
            out.extend(e.iter().map(|v| v / s));
        }
        out
    }
}

impl PooledHead for SgdHead {
    fn train_step(
        &mut self,
        rows: &[usize],
        pooled: &[f32],
        labels: &[usize],
    ) -> Result<(f32, Vec<f32>), HeadError> {
        match self.fault {
            Some("error") => return Err("the head is broken".into()),
            Some("short") => return Ok((0.5, vec![0.0; 3])),
            _ => {}
        }
        assert_eq!(rows.len() * self.h, pooled.len());
        let (h, k, n) = (self.h, self.k, labels.len());
        let p = self.proba(&self.w, &self.b, pooled);
        let mut loss = 0.0f32;
        let mut d = p.clone();
        for (r, &y) in labels.iter().enumerate() {
            loss -= p[r * k + y].max(1e-30).ln() / n as f32;
            d[r * k + y] -= 1.0;
        }
        d.iter_mut().for_each(|v| *v /= n as f32);
        let mut dpooled = vec![0.0f32; n * h];
        for r in 0..n {
            for j in 0..h {
                dpooled[r * h + j] = (0..k).map(|c| d[r * k + c] * self.w[j * k + c]).sum();
            }
        }
        for r in 0..n {
            for c in 0..k {
                self.b[c] -= self.lr * d[r * k + c];
                for j in 0..h {
                    self.w[j * k + c] -= self.lr * d[r * k + c] * pooled[r * h + j];
                }
            }
        }
        Ok((loss, dpooled))
    }

    fn predict_dev(&mut self, pooled: &[f32]) -> Result<Vec<f32>, HeadError> {
        Ok(self.proba(&self.w, &self.b, pooled))
    }

    fn keep_best(&mut self) -> Result<(), HeadError> {
        self.best = Some((self.w.clone(), self.b.clone()));
        self.kept += 1;
        Ok(())
    }
}

#[test]
fn a_head_of_its_own_trains_the_encoder_end_to_end() {
    let Some((_, enc, mut net)) = setup(2) else {
        return;
    };
    let (train, y) = toy(&enc, 96, 1);
    let (dev, y_dev) = toy(&enc, 32, 2);
    let h = net.config().hidden_size;
    let linear_before = {
        let (w, b) = net.head_tensors();
        (w.to_vec(), b.to_vec())
    };
    let encoder_before = net.params.values.clone();
    let accuracy = |p: &[f32], y: &[usize]| {
        let hits = y
            .iter()
            .enumerate()
            .filter(|&(r, &c)| p[r * 2 + c] > p[r * 2 + 1 - c])
            .count();
        hits as f64 / y.len() as f64
    };
    // A fixed random head: only the encoder learns, so learning shows that the head's
    // gradient reaches it with the right sign.
    let mut fixed = SgdHead::new(h, 2, 0.0, 5);
    let start = accuracy(
        &fixed.proba(&fixed.w, &fixed.b, &embed(&net, &dev, false, 2)),
        &y_dev,
    );
    let mut losses = Vec::new();
    let summary = fit_with_head(
        &mut net,
        &mut fixed,
        &small_params(),
        &train,
        &y,
        &dev,
        &y_dev,
        None,
        &mut |e| {
            if let Event::Step { loss, .. } = e {
                losses.push(*loss);
            }
        },
    )
    .expect("fit_with_head");
    let first: f32 = losses[..4].iter().sum::<f32>() / 4.0;
    let last: f32 = losses[losses.len() - 4..].iter().sum::<f32>() / 4.0;
    assert!(last < 0.5 * first, "loss {first} → {last}");
    assert!(
        summary.best.dev_accuracy >= 0.9 && start < 0.8,
        "dev accuracy {start} → {}",
        summary.best.dev_accuracy
    );
    assert_eq!(summary.evals.len(), 3);
    assert_eq!(fixed.kept, summary.evals.iter().filter(|e| e.best).count());
    // The network's linear head is frozen and untouched; the encoder moved.
    let (w, b) = net.head_tensors();
    assert_eq!((w.to_vec(), b.to_vec()), linear_before);
    assert_ne!(net.params.values, encoder_before);
    assert!(summary.trainable < summary.total);

    // A learning head with early stopping: the network and the kept head are those of the
    // best evaluation, and a seed gives the same run.
    let run = |seed: u64| {
        let (_, _, mut net) = setup(2).unwrap();
        let mut head = SgdHead::new(h, 2, 0.5, 9);
        let params = FinetuneParams {
            epochs: 4,
            patience: 1,
            eval_every: Some(3),
            seed,
            ..small_params()
        };
        let summary = fit_with_head(
            &mut net,
            &mut head,
            &params,
            &train,
            &y,
            &dev,
            &y_dev,
            None,
            &mut |_| {},
        )
        .expect("fit_with_head");
        (net, head, summary)
    };
    let (net, head, summary) = run(3);
    let (bw, bb) = head.best.clone().expect("a best head");
    let p = head.proba(&bw, &bb, &embed(&net, &dev, false, 2));
    assert_eq!(accuracy(&p, &y_dev), summary.best.dev_accuracy);
    let (net2, head2, _) = run(3);
    assert_eq!(net.params.values, net2.params.values);
    assert_eq!(head.best, head2.best);
    let (net3, _, _) = run(4);
    assert_ne!(net.params.values, net3.params.values);
}

#[test]
fn fit_with_head_refuses_what_it_cannot_do_and_reports_head_faults() {
    let Some((_, enc, mut net)) = setup(2) else {
        return;
    };
    let (train, y) = toy(&enc, 16, 1);
    let (dev, y_dev) = toy(&enc, 8, 2);
    let h = net.config().hidden_size;
    let mut go = |params: FinetuneParams, fault: Option<&'static str>| {
        let mut head = SgdHead::new(h, 2, 0.1, 1);
        head.fault = fault;
        fit_with_head(
            &mut net,
            &mut head,
            &params,
            &train,
            &y,
            &dev,
            &y_dev,
            None,
            &mut |_| {},
        )
        .map(|_| ())
        .unwrap_err()
    };
    for params in [
        FinetuneParams {
            grad_accum: 2,
            ..small_params()
        },
        FinetuneParams {
            fgm: Some(0.1),
            ..small_params()
        },
    ] {
        let e = go(params, None);
        assert!(
            matches!(&e, FinetuneError::Invalid(m) if m.contains("gradient accumulation, FGM and PGD")),
            "{e}"
        );
    }
    let e = go(small_params(), Some("error"));
    assert!(matches!(e, FinetuneError::Head(_)), "{e}");
    assert_eq!(
        std::error::Error::source(&e).unwrap().to_string(),
        "the head is broken"
    );
    let e = go(small_params(), Some("short"));
    assert!(
        matches!(&e, FinetuneError::Head(m) if m.to_string().contains("3 values for")),
        "{e}"
    );
}
