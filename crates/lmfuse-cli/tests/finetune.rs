//! End-to-end tests of `lmfuse finetune` with the tiny test encoder: the bundle carries the
//! fine-tuned encoder and reloads to the reported figures, and a run killed with SIGKILL in
//! epoch 2 resumes to the result of an uninterrupted run.

mod common;

use common::{assert_one_line_error, lmfuse, ok_json, run, tiny_model, write_set};
use std::path::Path;
use std::time::{Duration, Instant};

fn finetune_args<'a>(
    model: &'a str,
    train: &'a str,
    dev: &'a str,
    test: &'a str,
    out: &'a str,
) -> Vec<&'a str> {
    vec![
        "finetune",
        "--model",
        model,
        "--train",
        train,
        "--dev",
        dev,
        "--test",
        test,
        "--out",
        out,
        "--lr",
        "3e-4",
        "--head-lr",
        "3e-3",
        "--batch-size",
        "4",
        "--patience",
        "0",
        "--json",
    ]
}

#[test]
fn finetuned_bundle_carries_its_encoder_and_reloads_to_the_reported_figures() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (train, dev, test) = (
        dir.path().join("train.jsonl"),
        dir.path().join("dev.jsonl"),
        dir.path().join("test.jsonl"),
    );
    write_set(&train, 80, 0);
    write_set(&dev, 20, 100);
    write_set(&test, 20, 200);
    let out = dir.path().join("ft");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (m, tr, dv, te, o) = (s(&model), s(&train), s(&dev), s(&test), s(&out));
    let mut args = finetune_args(&m, &tr, &dv, &te, &o);
    args.extend(["--epochs", "3"]);
    let report = ok_json(&args, dir.path());
    assert_eq!(report["head"], "finetune");
    assert_eq!(
        report["trials"].as_array().unwrap().len(),
        3,
        "one evaluation per epoch"
    );
    assert!(
        report["test"]["accuracy"].as_f64().unwrap() >= 0.9,
        "{report}"
    );
    assert!(out.join("encoder/model.safetensors").is_file());
    assert!(dir.path().join("ft.run/metrics.jsonl").is_file());

    // `eval` loads the encoder from inside the bundle and reproduces the test figures.
    let eval = ok_json(
        &["eval", "--model", &o, "--data", &te, "--json"],
        dir.path(),
    );
    for key in ["accuracy", "log_loss"] {
        let (a, b) = (
            eval["test"][key].as_f64().unwrap(),
            report["test"][key].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-4, "{key}: eval {a} vs finetune {b}");
    }
    // A damaged encoder inside the bundle is refused by name.
    let weights = out.join("encoder/model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(&weights, bytes).unwrap();
    let bad = run(&["eval", "--model", &o, "--data", &te], dir.path());
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("encoder/model.safetensors"), "{err}");

    // LoRA: a small share of the parameters trains.
    let lora_out = s(&dir.path().join("ft-lora"));
    let mut args = finetune_args(&m, &tr, &dv, &te, &lora_out);
    args.extend(["--epochs", "2", "--lora"]);
    let lora = ok_json(&args, dir.path());
    assert_eq!(lora["head"], "finetune-lora");
    let share =
        lora["trainable_parameters"].as_f64().unwrap() / lora["total_parameters"].as_f64().unwrap();
    assert!(share < 0.02, "trainable share {share}");
    let eval = ok_json(
        &["eval", "--model", &lora_out, "--data", &te, "--json"],
        dir.path(),
    );
    assert!(
        (eval["test"]["log_loss"].as_f64().unwrap() - lora["test"]["log_loss"].as_f64().unwrap())
            .abs()
            < 1e-4
    );

    // Converted to int8, the (intact) LoRA bundle stores its fine-tuned encoder in int8 (a
    // quarter of the linear layers' bytes) and predicts as the original does with
    // --precision int8.
    let int8 = dir.path().join("ft-int8");
    let i8s = s(&int8);
    let done = ok_json(
        &[
            "models", "convert", "--bundle", &lora_out, "--out", &i8s, "--json",
        ],
        dir.path(),
    );
    assert_eq!(done["stored_converted"], 1, "{done}");
    let size = |p: &Path| {
        std::fs::metadata(p.join("encoder/model.safetensors"))
            .unwrap()
            .len()
    };
    assert!(
        size(&int8) * 2 < size(&out),
        "{} vs {}",
        size(&int8),
        size(&out)
    );
    let predict = |bundle: &str, extra: &[&str]| {
        let mut args = vec![
            "predict", "--model", bundle, "--input", &te, "--output", "-",
        ];
        args.extend_from_slice(extra);
        let run = run(&args, dir.path());
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        String::from_utf8(run.stdout).unwrap()
    };
    let (converted, at_load) = (
        predict(&i8s, &[]),
        predict(&lora_out, &["--precision", "int8"]),
    );
    let labels = |out: &str| -> Vec<String> {
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["label"].to_string())
            .collect()
    };
    assert_eq!(labels(&converted), labels(&at_load));
    // An int8-stored encoder cannot be asked for f32.
    assert_one_line_error(
        &[
            "predict",
            "--model",
            &i8s,
            "--input",
            &te,
            "--output",
            "-",
            "--precision",
            "f32",
        ],
        &["stored in int8"],
    );
}

#[test]
fn a_run_killed_in_epoch_two_resumes_to_the_uninterrupted_result() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (train, dev, test) = (
        dir.path().join("train.jsonl"),
        dir.path().join("dev.jsonl"),
        dir.path().join("test.jsonl"),
    );
    write_set(&train, 400, 0);
    write_set(&dev, 40, 1000);
    write_set(&test, 40, 2000);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (m, tr, dv, te) = (s(&model), s(&train), s(&dev), s(&test));

    let whole = s(&dir.path().join("whole"));
    let mut args = finetune_args(&m, &tr, &dv, &te, &whole);
    args.extend(["--epochs", "3"]);
    let uninterrupted = ok_json(&args, dir.path());

    let killed = s(&dir.path().join("killed"));
    let mut args = finetune_args(&m, &tr, &dv, &te, &killed);
    args.extend(["--epochs", "3"]);
    let mut child = lmfuse(&args, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the end of epoch 1 (its checkpoint), then kill -9 inside epoch 2.
    let state = dir.path().join("killed.run/checkpoint/state.json");
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&state) {
            if text.contains("\"epochs_done\": 1") {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "epoch 1 never finished"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run was not killed");
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(
        text.contains("\"epochs_done\": 1"),
        "the kill did not land in epoch 2: {text}"
    );
    assert!(
        !dir.path().join("killed").exists(),
        "a killed run must not leave a bundle"
    );

    args.push("--resume");
    let resumed = ok_json(&args, dir.path());
    for key in ["accuracy", "macro_f1", "log_loss"] {
        let (a, b) = (
            uninterrupted["dev"][key].as_f64().unwrap(),
            resumed["dev"][key].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-9,
            "dev {key}: uninterrupted {a}, resumed {b}"
        );
    }
    assert_eq!(uninterrupted["steps"], resumed["steps"]);
    assert_eq!(
        std::fs::read(dir.path().join("whole/encoder/model.safetensors")).unwrap(),
        std::fs::read(dir.path().join("killed/encoder/model.safetensors")).unwrap(),
        "resumed weights differ"
    );
}

#[test]
fn contrastive_mode_tunes_the_encoder_then_fits_logreg_and_reloads() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (train, dev, test) = (
        dir.path().join("train.jsonl"),
        dir.path().join("dev.jsonl"),
        dir.path().join("test.jsonl"),
    );
    write_set(&train, 16, 0);
    write_set(&dev, 20, 100);
    write_set(&test, 20, 200);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let out = s(&dir.path().join("setfit"));
    let report = ok_json(
        &[
            "finetune",
            "--contrastive",
            "--model",
            &s(&model),
            "--train",
            &s(&train),
            "--dev",
            &s(&dev),
            "--test",
            &s(&test),
            "--out",
            &out,
            "--contrastive-lr",
            "2e-4",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(report["head"], "contrastive+logreg");
    assert_eq!(report["pairs"], 16 * 2 * 20, "{report}");
    assert!(report["selected"]["param"].as_str().is_some());
    // Any classical head on the tuned embeddings.
    let knn_out = s(&dir.path().join("setfit-knn"));
    let knn = ok_json(
        &[
            "finetune",
            "--contrastive",
            "--contrastive-head",
            "knn",
            "--model",
            &s(&model),
            "--train",
            &s(&train),
            "--dev",
            &s(&dev),
            "--test",
            &s(&test),
            "--out",
            &knn_out,
            "--contrastive-lr",
            "2e-4",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(knn["head"], "contrastive+knn");
    let eval = ok_json(
        &["eval", "--model", &out, "--data", &s(&test), "--json"],
        dir.path(),
    );
    let (a, b) = (
        eval["test"]["log_loss"].as_f64().unwrap(),
        report["test"]["log_loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-4, "eval {a} vs report {b}");
}

/// The manifest's model card of the bundle in `dir`.
fn model_card(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["model"].clone()
}

#[test]
fn shared_head_trains_end_to_end_and_eval_reproduces_the_reported_figures() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (train, dev, test) = (
        dir.path().join("train.jsonl"),
        dir.path().join("dev.jsonl"),
        dir.path().join("test.jsonl"),
    );
    write_set(&train, 80, 0);
    write_set(&dev, 20, 100);
    write_set(&test, 20, 200);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (m, tr, dv, te) = (s(&model), s(&train), s(&dev), s(&test));
    let shared = |out: &str, seed: &str| {
        let mut args = finetune_args(&m, &tr, &dv, &te, out);
        args.extend(["--shared-head", "--epochs", "3", "--seed", seed]);
        ok_json(&args, dir.path())
    };
    let o = s(&dir.path().join("ft-shared"));
    let report = shared(&o, "5");
    assert_eq!(report["head"], "finetune-shared");
    assert_eq!(
        report["features"],
        serde_json::json!(["tfidf_word", "tfidf_char", "emb"])
    );
    assert_eq!(report["shared_head"]["projection"], 128);
    assert_eq!(
        report["shared_head"]["dense_tail"], 128,
        "splade-tiny's width"
    );
    assert_eq!(report["shared_head"]["lr"], 3e-3, "--head-lr");
    assert_eq!(report["trials"].as_array().unwrap().len(), 3);
    assert!(
        report["test"]["accuracy"].as_f64().unwrap() >= 0.9,
        "{report}"
    );
    assert!(dir.path().join("ft-shared.run/metrics.jsonl").is_file());
    let logged = std::fs::read_to_string(dir.path().join("ft-shared.run/metrics.jsonl")).unwrap();
    assert_eq!(logged.lines().count(), 3);

    // The bundle: a `shared` MLP over TF-IDF and the fine-tuned encoder's unnormalised
    // vectors, that encoder inside it (trained: its weights are not the base model's).
    let card = model_card(Path::new(&o));
    assert_eq!(card["head"]["kind"], "mlp");
    assert_eq!(card["head"]["params"]["projection"], 128);
    assert_eq!(card["head"]["params"]["dense_tail"], 128);
    assert_eq!(card["features"], report["features"]);
    assert_eq!(card["encoder"]["in_bundle"], true);
    assert_eq!(card["encoder"]["fingerprint"]["normalize"], false);
    assert_ne!(
        card["encoder"]["fingerprint"]["weights_sha256"],
        card["training"]["base_weights_sha256"]
    );
    assert!(Path::new(&o).join("encoder/model.safetensors").is_file());

    // `eval` reads the bundle with no code of this mode and reproduces the test figures.
    let eval = ok_json(
        &["eval", "--model", &o, "--data", &te, "--json"],
        dir.path(),
    );
    for key in ["accuracy", "log_loss"] {
        let (a, b) = (
            eval["test"][key].as_f64().unwrap(),
            report["test"][key].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-4, "{key}: eval {a} vs finetune {b}");
    }

    // The same seed gives the same run and the same weights; another seed does not.
    let o2 = s(&dir.path().join("ft-shared-again"));
    let again = shared(&o2, "5");
    assert_eq!(again["trials"].as_array().unwrap().len(), 3);
    for (a, b) in report["trials"]
        .as_array()
        .unwrap()
        .iter()
        .zip(again["trials"].as_array().unwrap())
    {
        for key in ["train_loss", "dev_accuracy", "dev_log_loss"] {
            assert_eq!(a[key], b[key], "{key}");
        }
    }
    assert_eq!(report["test"], again["test"]);
    for file in ["weights.safetensors", "encoder/model.safetensors"] {
        assert!(
            std::fs::read(Path::new(&o).join(file)).unwrap()
                == std::fs::read(Path::new(&o2).join(file)).unwrap(),
            "{file} differs between two runs with one seed"
        );
    }
    let o3 = s(&dir.path().join("ft-shared-other"));
    shared(&o3, "6");
    assert!(
        std::fs::read(Path::new(&o).join("weights.safetensors")).unwrap()
            != std::fs::read(Path::new(&o3).join("weights.safetensors")).unwrap()
    );

    // The report's dev figures are the best evaluation's: encoder and head restored together.
    let trials = report["trials"].as_array().unwrap();
    // (the last evaluation marked best: each improvement is marked when it happens)
    let best = trials.iter().rev().find(|t| t["best"] == true).unwrap();
    assert_eq!(report["dev"]["accuracy"], best["dev_accuracy"], "{report}");
    let (a, b) = (
        report["dev"]["log_loss"].as_f64().unwrap(),
        best["dev_log_loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-6, "dev log loss {a} vs best trial {b}");

    // The loss gradient reaches the encoder through the pooled vectors: without weight decay
    // (which moves weights on its own), the encoder still changes.
    let no_decay = s(&dir.path().join("ft-shared-no-decay"));
    let mut args = finetune_args(&m, &tr, &dv, &te, &no_decay);
    args.extend(["--shared-head", "--epochs", "1", "--weight-decay", "0"]);
    ok_json(&args, dir.path());
    let card = model_card(Path::new(&no_decay));
    assert_ne!(
        card["encoder"]["fingerprint"]["weights_sha256"],
        card["training"]["base_weights_sha256"]
    );

    // With LoRA, the adapters (merged into the saved encoder) train with the head.
    let lora_out = s(&dir.path().join("ft-shared-lora"));
    let mut args = finetune_args(&m, &tr, &dv, &te, &lora_out);
    args.extend(["--shared-head", "--lora", "--epochs", "2"]);
    let lora = ok_json(&args, dir.path());
    assert_eq!(lora["head"], "finetune-shared-lora");
    assert!(
        lora["trainable_parameters"].as_u64() < report["trainable_parameters"].as_u64(),
        "{} vs {}",
        lora["trainable_parameters"],
        report["trainable_parameters"]
    );
    let eval = ok_json(
        &["eval", "--model", &lora_out, "--data", &te, "--json"],
        dir.path(),
    );
    for key in ["accuracy", "log_loss"] {
        let (a, b) = (
            eval["test"][key].as_f64().unwrap(),
            lora["test"][key].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-4, "LoRA {key}: eval {a} vs finetune {b}");
    }
}

#[test]
fn shared_head_refuses_options_it_does_not_combine_with() {
    let base = [
        "finetune",
        "--shared-head",
        "--model",
        "m",
        "--train",
        "no-such-train.jsonl",
        "--out",
        "o",
    ];
    for extra in [
        &["--contrastive"][..],
        &["--resume"],
        &["--grad-accum", "2"],
        &["--fgm", "0.1"],
        &["--pgd", "0.5"],
    ] {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        assert_one_line_error(&args, &["--shared-head", "does not combine with", extra[0]]);
    }
    // The head's decay is checked before any data or model is read.
    for (alpha, reason) in [
        ("-1", "at least 0"),
        ("1000", "lr · alpha must stay below 1"),
    ] {
        let flag = format!("--shared-head-alpha={alpha}");
        let mut args = base.to_vec();
        args.push(&flag);
        assert_one_line_error(&args, &["hyperparameter alpha", reason]);
    }
    // The head's option alone is a usage error, not silently ignored.
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "finetune",
            "--model",
            "m",
            "--train",
            "t.jsonl",
            "--out",
            "o",
            "--shared-head-alpha",
            "10",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--shared-head"), "{err}");
}

/// A tiny random-weight model of each family beyond English BERT (see the encoder's
/// `tests/families.rs`): Unigram BERT with a prompt (multilingual-e5), XLM-RoBERTa, and a
/// Chinese character BERT with CLS pooling (bge-small-zh).
fn family(name: &str) -> String {
    common::workspace()
        .join("crates/lmfuse-encoder/tests/fixtures/families")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn full_lora_and_fgm_fine_tuning_work_with_every_encoder_family() {
    let dir = tempfile::tempdir().unwrap();
    let (train, dev, test) = (
        dir.path().join("train.jsonl"),
        dir.path().join("dev.jsonl"),
        dir.path().join("test.jsonl"),
    );
    write_set(&train, 40, 0);
    write_set(&dev, 12, 100);
    write_set(&test, 12, 200);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (tr, dv, te) = (s(&train), s(&dev), s(&test));
    for (name, extra) in [
        ("e5_unigram", vec!["--fgm", "0.5"]),
        ("xlmr", vec!["--lora"]),
        (
            "bge_zh",
            vec!["--freeze-embeddings", "--layer-lr-decay", "0.9"],
        ),
    ] {
        let m = family(name);
        let o = s(&dir.path().join(format!("ft-{name}")));
        let mut args = finetune_args(&m, &tr, &dv, &te, &o);
        args.extend(["--epochs", "2"]);
        args.extend(extra.iter().copied());
        let report = ok_json(&args, dir.path());
        assert!(
            report["test"]["log_loss"].as_f64().unwrap().is_finite(),
            "{name}: {report}"
        );
        if extra.contains(&"--lora") {
            assert_eq!(report["head"], "finetune-lora", "{name}");
        } else {
            assert!(
                Path::new(&o).join("encoder/tokenizer.json").is_file(),
                "{name}"
            );
        }
        let eval = ok_json(
            &["eval", "--model", &o, "--data", &te, "--json"],
            dir.path(),
        );
        let (a, b) = (
            eval["test"]["log_loss"].as_f64().unwrap(),
            report["test"]["log_loss"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-4, "{name}: eval {a} vs finetune {b}");
    }
}

#[test]
fn compare_fine_tunes_and_tune_searches_with_an_xlm_roberta_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = (
        dir.path().join("train.jsonl"),
        dir.path().join("test.jsonl"),
    );
    write_set(&train, 60, 0);
    write_set(&test, 20, 1000);
    let m = family("xlmr");
    let (tr, te) = (train.to_str().unwrap(), test.to_str().unwrap());
    let board = ok_json(
        &[
            "compare",
            "--model",
            &m,
            "--train",
            tr,
            "--test",
            te,
            "--folds",
            "2",
            "--singles",
            "emb:logreg",
            "--ensembles",
            "",
            "--finetune",
            "--finetune-epochs",
            "1",
            "--json",
        ],
        dir.path(),
    );
    let names: Vec<&str> = board["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(names.contains(&"finetuned"), "{board}");
    let tuned = ok_json(
        &[
            "tune", "--model", &m, "--train", tr, "--test", te, "--folds", "2", "--heads",
            "logreg", "--json",
        ],
        dir.path(),
    );
    let trials = tuned["trials"].as_array().unwrap();
    assert!(!trials.is_empty(), "{tuned}");
}
