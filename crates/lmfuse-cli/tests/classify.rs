//! End-to-end tests of `lmfuse train`, `eval` and `predict` with the tiny test encoder.

mod common;

use common::{
    assert_one_line_error, embed_json, ok_json, run, tiny_model, write_intents, write_set,
};
use std::path::{Path, PathBuf};

/// `lmfuse train --model MODEL --train TRAIN --out OUT --json EXTRA...`, parsed.
fn train_json(
    model: &str,
    train: &Path,
    out: &Path,
    extra: &[&str],
    cache: &Path,
) -> serde_json::Value {
    let mut args = vec![
        "train",
        "--model",
        model,
        "--train",
        train.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    ok_json(&args, cache)
}

#[test]
fn train_eval_predict_round_trip_and_determinism() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (train, test) = (
        dir.path().join("train.jsonl"),
        dir.path().join("test.jsonl"),
    );
    write_set(&train, 120, 0);
    write_set(&test, 40, 1000);
    let b1 = dir.path().join("b1");
    let b2 = dir.path().join("b2");
    let r1 = train_json(m, &train, &b1, &["--test", test.to_str().unwrap()], &cache);
    assert!(r1["test"]["accuracy"].as_f64().unwrap() >= 0.9, "{r1}");
    assert!(r1["dev"]["macro_f1"].is_number());
    assert_eq!(r1["data"]["dev"], 12);
    assert_eq!(r1["labels"], serde_json::json!(["neg", "pos"]));
    // Same data, same seed: identical bundle but for created_at.
    train_json(m, &train, &b2, &["--test", test.to_str().unwrap()], &cache);
    assert_eq!(
        std::fs::read(b1.join("weights.safetensors")).unwrap(),
        std::fs::read(b2.join("weights.safetensors")).unwrap()
    );
    let strip = |p: PathBuf| {
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("created_at");
        v
    };
    assert_eq!(
        strip(b1.join("manifest.json")),
        strip(b2.join("manifest.json"))
    );

    // Reload: eval on the test file gives exactly the figures reported at training.
    let e = ok_json(
        &[
            "eval",
            "--model",
            b1.to_str().unwrap(),
            "--data",
            test.to_str().unwrap(),
            "--json",
        ],
        &cache,
    );
    assert_eq!(e["test"]["accuracy"], r1["test"]["accuracy"]);
    assert_eq!(e["test"]["log_loss"], r1["test"]["log_loss"]);

    // Predict keeps input order and gives probabilities that sum to one.
    let input = dir.path().join("in.txt");
    std::fs::write(
        &input,
        "the hotel was great and lovely\nthe phone was awful and broken\n",
    )
    .unwrap();
    let out = dir.path().join("pred.jsonl");
    let o = run(
        &[
            "predict",
            "--model",
            b1.to_str().unwrap(),
            "-i",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let preds: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(preds.len(), 2);
    assert_eq!(preds[0]["label"], "pos");
    assert_eq!(preds[1]["label"], "neg");
    for p in &preds {
        let sum: f64 = p["probabilities"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-5);
    }
}

#[test]
fn tfidf_and_fused_features_round_trip_through_a_bundle() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (train, test) = (
        dir.path().join("train.jsonl"),
        dir.path().join("test.jsonl"),
    );
    write_set(&train, 120, 0);
    write_set(&test, 40, 1000);
    for features in ["tfidf", "tfidf,emb"] {
        let b = dir.path().join(features.replace(',', "-"));
        let extra = ["--test", test.to_str().unwrap(), "--features", features];
        let r = train_json(m, &train, &b, &extra, &cache);
        assert!(
            r["test"]["accuracy"].as_f64().unwrap() >= 0.9,
            "{features}: {r}"
        );
        assert!(
            b.join("tfidf_word.vocab.json").is_file() && b.join("tfidf_char.vocab.json").is_file()
        );
        let e = ok_json(
            &[
                "eval",
                "--model",
                b.to_str().unwrap(),
                "--data",
                test.to_str().unwrap(),
                "--json",
            ],
            &cache,
        );
        assert_eq!(e["test"]["log_loss"], r["test"]["log_loss"], "{features}");
        // Determinism with sparse features too.
        let b2 = dir.path().join("again");
        train_json(m, &train, &b2, &extra, &cache);
        for f in [
            "weights.safetensors",
            "tfidf_word.vocab.json",
            "tfidf_char.vocab.json",
        ] {
            assert_eq!(
                std::fs::read(b.join(f)).unwrap(),
                std::fs::read(b2.join(f)).unwrap(),
                "{features}: {f}"
            );
        }
    }
}

#[test]
fn bad_training_data_gives_one_clear_error_line() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let o = out.to_str().unwrap();
    let file = |name: &str, body: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };
    let empty = file("empty.jsonl", b"");
    assert_one_line_error(
        &["train", "--model", m, "--train", &empty, "--out", o],
        &["empty.jsonl", "no examples"],
    );
    let one = file(
        "one.jsonl",
        b"{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"b\",\"label\":\"x\"}\n",
    );
    assert_one_line_error(
        &["train", "--model", m, "--train", &one, "--out", o],
        &["one.jsonl", "at least two classes"],
    );
    let nolabel = file("nolabel.jsonl", b"{\"text\":\"a\",\"y\":\"x\"}\n");
    assert_one_line_error(
        &["train", "--model", m, "--train", &nolabel, "--out", o],
        &["nolabel.jsonl:1", "\"label\" is missing", "--label-col"],
    );
    let csv = file("d.csv", b"body,label\nhi,x\n");
    assert_one_line_error(
        &["train", "--model", m, "--train", &csv, "--out", o],
        &["d.csv", "no column \"text\""],
    );
    let utf = file(
        "u.jsonl",
        b"{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"\xff\",\"label\":\"y\"}\n",
    );
    assert_one_line_error(
        &["train", "--model", m, "--train", &utf, "--out", o],
        &["u.jsonl:2", "invalid UTF-8"],
    );
    // A label in the test file that training never saw.
    let train = dir.path().join("train.jsonl");
    write_set(&train, 40, 0);
    let unseen = file(
        "unseen.jsonl",
        b"{\"text\":\"a\",\"label\":\"pos\"}\n{\"text\":\"b\",\"label\":\"maybe\"}\n",
    );
    assert_one_line_error(
        &[
            "train",
            "--model",
            m,
            "--train",
            train.to_str().unwrap(),
            "--test",
            &unseen,
            "--out",
            o,
        ],
        &[
            "unseen.jsonl:2",
            "\"maybe\"",
            "does not occur in the training data",
        ],
    );
    // The shared head needs a TF-IDF block and the embedding.
    assert_one_line_error(
        &[
            "train",
            "--model",
            m,
            "--train",
            train.to_str().unwrap(),
            "--head",
            "shared",
            "--out",
            o,
        ],
        &["--head shared", "--features tfidf,emb"],
    );
    assert!(!out.exists(), "a failed run wrote a bundle");
    // A bundle used with an encoder other than the one it was trained with.
    let b = dir.path().join("good-bundle");
    let cache = dir.path().join("cache");
    train_json(m, &train, &b, &[], &cache);
    let other = common::workspace().join("models/all-MiniLM-L6-v2");
    if other.is_dir() {
        assert_one_line_error(
            &[
                "eval",
                "--model",
                b.to_str().unwrap(),
                "--data",
                train.to_str().unwrap(),
                "--encoder",
                other.to_str().unwrap(),
            ],
            &["encoder mismatch", "sha256"],
        );
    }
    let manifest = b.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap().replace(
        &format!("\"format_version\": {}", lmfuse_bundle::PLAIN_VERSION),
        "\"format_version\": 7",
    );
    std::fs::write(&manifest, text).unwrap();
    assert_one_line_error(
        &[
            "eval",
            "--model",
            b.to_str().unwrap(),
            "--data",
            train.to_str().unwrap(),
        ],
        &["manifest.json", "format version 7"],
    );
    // A bundle that is not there, or is corrupt.
    assert_one_line_error(
        &["eval", "--model", "/no/such/bundle", "--data", &unseen],
        &["/no/such/bundle", "manifest.json", "missing"],
    );
}

#[test]
fn empty_texts_and_a_10_mb_line_are_handled() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let train = dir.path().join("train.jsonl");
    write_set(&train, 60, 0);
    let b = dir.path().join("b");
    train_json(m, &train, &b, &[], &cache);
    // Empty texts are valid inputs (the encoder sees [CLS] [SEP]); a 10 MB line is truncated
    // at the model's maximum length.
    let big = "word ".repeat(2_000_000);
    let input = dir.path().join("odd.jsonl");
    let body = format!(
        "{}\n{}\n",
        serde_json::json!({"text": ""}),
        serde_json::json!({"text": big})
    );
    std::fs::write(&input, body).unwrap();
    let out = run(
        &[
            "predict",
            "--model",
            b.to_str().unwrap(),
            "-i",
            input.to_str().unwrap(),
            "-o",
            "-",
        ],
        &cache,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 2);
}

#[test]
fn every_head_is_deterministic_and_reloads_to_the_same_probabilities() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (train, test) = (
        dir.path().join("train.jsonl"),
        dir.path().join("test.jsonl"),
    );
    write_set(&train, 160, 0);
    write_set(&test, 40, 1000);
    let cases = [
        ("logreg", "emb"),
        ("svm", "emb"),
        ("svm", "tfidf"),
        ("nb", "emb"),
        ("nb", "tfidf"),
        ("knn", "emb"),
        ("knn", "tfidf,emb"),
        ("rf", "emb"),
        ("gbdt", "emb"),
        ("mlp", "emb"),
        ("mlp", "tfidf,emb"),
        ("shared", "tfidf,emb"),
    ];
    for (head, features) in cases {
        let name = format!("{head}-{}", features.replace(',', "+"));
        let extra = [
            "--test",
            test.to_str().unwrap(),
            "--head",
            head,
            "--features",
            features,
        ];
        let (b1, b2) = (dir.path().join(&name), dir.path().join(format!("{name}-2")));
        let r = train_json(m, &train, &b1, &extra, &cache);
        // `shared` is the mlp head with a projection per block.
        assert_eq!(r["head"], if head == "shared" { "mlp" } else { head });
        assert!(
            r["test"]["accuracy"].as_f64().unwrap() >= 0.8,
            "{name}: {}",
            r["test"]
        );
        train_json(m, &train, &b2, &extra, &cache);
        assert_eq!(
            std::fs::read(b1.join("weights.safetensors")).unwrap(),
            std::fs::read(b2.join("weights.safetensors")).unwrap(),
            "{name}: same seed and data, different weights"
        );
        let e = ok_json(
            &[
                "eval",
                "--model",
                b1.to_str().unwrap(),
                "--data",
                test.to_str().unwrap(),
                "--json",
            ],
            &cache,
        );
        assert_eq!(e["test"]["log_loss"], r["test"]["log_loss"], "{name}");
        assert_eq!(e["test"]["accuracy"], r["test"]["accuracy"], "{name}");
    }
}

#[test]
fn side_columns_feed_the_tab_block_through_train_eval_and_predict() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // The text says nothing; the side columns decide the label.
    let write = |path: &Path, n: usize, offset: usize| {
        let mut s = String::from("text,amount,channel,label\n");
        for i in offset..offset + n {
            let fraud = i % 2 == 0;
            let amount = if fraud { 900 + i % 50 } else { 10 + i % 50 };
            let channel = if fraud {
                "web"
            } else {
                ["shop", "phone"][i % 2]
            };
            let label = if fraud { "fraud" } else { "ok" };
            s.push_str(&format!("payment number {i},{amount},{channel},{label}\n"));
        }
        std::fs::write(path, s).unwrap();
    };
    let (train, test) = (dir.path().join("train.csv"), dir.path().join("test.csv"));
    write(&train, 120, 0);
    write(&test, 40, 1000);
    let b = dir.path().join("tab");
    let r = train_json(
        m,
        &train,
        &b,
        &[
            "--test",
            test.to_str().unwrap(),
            "--features",
            "emb,tab",
            "--feature-cols",
            "amount,channel",
        ],
        &cache,
    );
    assert_eq!(r["features"], serde_json::json!(["emb", "tab"]));
    assert!(
        r["test"]["accuracy"].as_f64().unwrap() >= 0.95,
        "{}",
        r["test"]
    );
    // eval reads the side columns the bundle names, without being told.
    let e = ok_json(
        &[
            "eval",
            "--model",
            b.to_str().unwrap(),
            "--data",
            test.to_str().unwrap(),
            "--json",
        ],
        &cache,
    );
    assert_eq!(e["test"]["log_loss"], r["test"]["log_loss"]);
    // predict needs them too; a file without them is an error naming the column.
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "text,amount,channel\nx,950,web\ny,12,shop\n").unwrap();
    let out = dir.path().join("pred.jsonl");
    let o = run(
        &[
            "predict",
            "--model",
            b.to_str().unwrap(),
            "-i",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let preds = std::fs::read_to_string(&out).unwrap();
    let labels: Vec<String> = preds
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["label"].to_string())
        .collect();
    assert_eq!(labels, ["\"fraud\"", "\"ok\""]);
    std::fs::write(&input, "text,amount\nx,950\n").unwrap();
    assert_one_line_error(
        &[
            "predict",
            "--model",
            b.to_str().unwrap(),
            "-i",
            input.to_str().unwrap(),
        ],
        &["channel"],
    );
    // tab without --feature-cols (and the reverse) is refused up front.
    assert_one_line_error(
        &[
            "train",
            "--model",
            m,
            "--train",
            train.to_str().unwrap(),
            "--features",
            "emb,tab",
            "--out",
            dir.path().join("x").to_str().unwrap(),
        ],
        &["--feature-cols"],
    );
}

#[test]
fn compare_ranks_by_cv_and_saves_an_ensemble_that_reloads_identically() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (train, test) = (
        dir.path().join("train.jsonl"),
        dir.path().join("test.jsonl"),
    );
    write_set(&train, 150, 0);
    write_set(&test, 40, 1000);
    let t = test.to_str().unwrap();
    let base = [
        "compare",
        "--model",
        m,
        "--train",
        train.to_str().unwrap(),
        "--test",
        t,
        "--folds",
        "3",
        "--c-grid",
        "0.1,1,10",
        "--json",
    ];
    let r = ok_json(&base, &cache);
    let candidates = r["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 8, "{r}");
    // The votes learn nothing and use the refit members; the learnt combiners the bagged ones.
    for c in candidates {
        let name = c["name"].as_str().unwrap();
        let want = match name.split('(').next().unwrap() {
            "hard_vote" | "soft_vote" => "refit",
            "weighted" | "stacking" | "adaptive" => "bagged",
            _ => {
                assert!(c.get("member_models").is_none(), "{c}");
                continue;
            }
        };
        assert_eq!(c["member_models"], want, "{name}");
    }
    let best = candidates
        .iter()
        .map(|c| c["cv_accuracy"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(r["winner"]["cv_accuracy"].as_f64().unwrap(), best);
    assert!(
        r["winner"]["test"]["accuracy"].is_number() && r["winner"]["dev"]["macro_f1"].is_number()
    );

    // Only ensembles: the winner is one, saved with all its members, and reloads to the
    // very probabilities compare measured.
    let b = dir.path().join("ensemble");
    let mut args = base.to_vec();
    args.extend([
        "--singles",
        "",
        "--members",
        "emb:logreg,tfidf:nb",
        "--ensembles",
        "stacking,adaptive",
        "--out",
        b.to_str().unwrap(),
        // The probabilities as the combiner gives them (calibration: its own test).
        "--no-calibrate",
    ]);
    let r = ok_json(&args, &cache);
    assert_eq!(r["winner"]["kind"], "ensemble");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["model"]["task"], "text-classification-ensemble");
    assert_eq!(manifest["model"]["members"].as_array().unwrap().len(), 2);
    let e = ok_json(
        &[
            "eval",
            "--model",
            b.to_str().unwrap(),
            "--data",
            t,
            "--json",
        ],
        &cache,
    );
    assert_eq!(e["test"]["log_loss"], r["winner"]["test"]["log_loss"]);
    assert_eq!(e["test"]["accuracy"], r["winner"]["test"]["accuracy"]);
    // By default the members of a learnt combiner predict with their 3 fold models (the
    // models that made the out-of-fold rows the combiner learnt from).
    assert_eq!(r["winner"]["member_models"], "bagged");
    for member in manifest["model"]["members"].as_array().unwrap() {
        assert_eq!(member["head"]["bagged"], 3, "{member}");
    }
    // Bags need format 3; a bundle without one stays at 2, which the lmfuse before bags reads.
    assert_eq!(
        manifest["format_version"],
        lmfuse_bundle::BAGGED_HEADS_VERSION
    );

    // `--oof-members refit`: one model per member, refit on all of train; it too reloads to
    // what compare measured, and its test probabilities are not the bagged ones.
    let refit_dir = dir.path().join("ensemble-refit");
    let mut args = args.clone();
    let at = args.iter().position(|a| *a == "--out").unwrap();
    args[at + 1] = refit_dir.to_str().unwrap();
    args.extend(["--oof-members", "refit"]);
    let refit = ok_json(&args, &cache);
    assert_eq!(refit["winner"]["member_models"], "refit");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(refit_dir.join("manifest.json")).unwrap()).unwrap();
    for member in manifest["model"]["members"].as_array().unwrap() {
        assert!(member["head"].get("bagged").is_none(), "{member}");
    }
    assert_eq!(manifest["format_version"], lmfuse_bundle::PLAIN_VERSION);
    let e = ok_json(
        &[
            "eval",
            "--model",
            refit_dir.to_str().unwrap(),
            "--data",
            t,
            "--json",
        ],
        &cache,
    );
    assert_eq!(e["test"]["log_loss"], refit["winner"]["test"]["log_loss"]);
    assert_ne!(
        refit["winner"]["test"]["log_loss"],
        r["winner"]["test"]["log_loss"]
    );
    // Cross-validation does not depend on how members predict new rows.
    assert_eq!(refit["winner"]["cv_accuracy"], r["winner"]["cv_accuracy"]);
}

/// Train (120 rows) and test (40 other rows) files of the small two-class set in `dir`.
fn small_train_test(dir: &Path) -> (PathBuf, PathBuf) {
    let (train, test) = (dir.join("train.jsonl"), dir.join("test.jsonl"));
    write_set(&train, 120, 0);
    write_set(&test, 40, 1000);
    (train, test)
}

#[test]
fn compare_presets_a_time_limit_calibration_and_the_one_se_rule() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (train, test) = (
        dir.path().join("train.jsonl"),
        dir.path().join("test.jsonl"),
    );
    write_set(&train, 150, 0);
    write_set(&test, 40, 1000);
    let out = dir.path().join("winner");
    let base = [
        "compare",
        "--model",
        m,
        "--train",
        train.to_str().unwrap(),
        "--test",
        test.to_str().unwrap(),
        "--folds",
        "3",
        "--c-grid",
        "0.1,1,10",
        "--json",
    ];
    // medium: fast's three models and four more, as singles and as members (2 classes: the
    // boosted trees are in), and the five ensembles over all seven.
    let mut medium = base.to_vec();
    medium.extend(["--preset", "medium", "--out", out.to_str().unwrap()]);
    let r = ok_json(&medium, &cache);
    let names: Vec<&str> = r["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for single in [
        "tfidf+emb:svm",
        "emb:mlp",
        "tfidf+emb:shared",
        "tfidf+emb:gbdt",
    ] {
        assert!(names.contains(&single), "{names:?}");
    }
    assert_eq!(names.len(), 7 + 5, "{names:?}");
    assert_eq!(r["preset"], "medium");
    // The winner is calibrated: a positive temperature, out-of-fold log loss no worse, and
    // the saved bundle reloads to the calibrated test figures.
    let c = &r["calibration"];
    assert_eq!(c["candidate"], r["winner"]["name"]);
    assert!(c["temperature"].as_f64().unwrap() > 0.0, "{c}");
    assert!(
        c["oof_log_loss_calibrated"].as_f64() <= c["oof_log_loss"].as_f64(),
        "{c}"
    );
    assert_eq!(c["test"]["accuracy"], r["winner"]["test"]["accuracy"]);
    assert_eval_reproduces(&out, &test, c, &cache);

    // A spent budget: the first candidate is still fit and wins; the rest are listed as
    // skipped with the reason.
    let mut short = base.to_vec();
    short.extend(["--time-limit", "0.001s", "--select", "one-se"]);
    let r = ok_json(&short, &cache);
    assert_eq!(r["candidates"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["winner"]["name"], "emb:logreg");
    let skipped = r["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 2 + 5, "{r}");
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("time limit"),
        "{r}"
    );
    assert!(
        r.get("calibration").is_none(),
        "no --out, nothing calibrated: {r}"
    );

    // one-se: the winner's CV mean is within one standard error of the best's.
    let mut one_se = base.to_vec();
    one_se.extend(["--select", "one-se"]);
    let r = ok_json(&one_se, &cache);
    let best = r["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == r["best_cv"])
        .unwrap();
    let se = best["cv_std"].as_f64().unwrap() / 3f64.sqrt();
    let w = r["winner"]["cv_accuracy"].as_f64().unwrap();
    assert!(
        w >= best["cv_accuracy"].as_f64().unwrap() - se - 1e-12,
        "{r}"
    );
    assert!(r["reason"].is_string(), "{r}");
    let usage = run(&[&base[..], &["--time-limit", "5d"]].concat(), &cache);
    let stderr = String::from_utf8_lossy(&usage.stderr);
    assert_eq!(usage.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown unit 'd'"), "{stderr}");
}

/// `lmfuse eval` of the bundle `out` on `data` reports the test accuracy of `saved` (an entry
/// of compare's leaderboard) and, to 1e-4, its log loss.
fn assert_eval_reproduces(out: &Path, data: &Path, saved: &serde_json::Value, cache: &Path) {
    let e = ok_json(
        &[
            "eval",
            "--model",
            out.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ],
        cache,
    );
    assert_eq!(e["test"]["accuracy"], saved["test"]["accuracy"]);
    let lp = |v: &serde_json::Value| v["test"]["log_loss"].as_f64().unwrap();
    assert!((lp(&e) - lp(saved)).abs() < 1e-4, "{e} vs {saved}");
}

/// The set-up of compare's fine-tuning tests: the tiny model and the small set (train and
/// test) in a temporary folder.
struct FinetuneCompare {
    dir: tempfile::TempDir,
    model: PathBuf,
    train: PathBuf,
    test: PathBuf,
    cache: PathBuf,
}

impl FinetuneCompare {
    /// `None` (skipped) without the tiny model.
    fn new() -> Option<Self> {
        let model = tiny_model()?;
        let dir = tempfile::tempdir().unwrap();
        let (train, test) = small_train_test(dir.path());
        let cache = dir.path().join("cache");
        Some(Self {
            dir,
            model,
            train,
            test,
            cache,
        })
    }

    /// `compare` with the tiny model on the small set, 2 folds, then `rest`.
    fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "compare",
            "--model",
            self.model.to_str().unwrap(),
            "--train",
            self.train.to_str().unwrap(),
            "--test",
            self.test.to_str().unwrap(),
            "--folds",
            "2",
        ];
        args.extend_from_slice(rest);
        args
    }
}

#[test]
fn compare_fine_tunes_the_encoder_per_fold_and_saves_it_as_the_only_candidate() {
    let Some(fx) = FinetuneCompare::new() else {
        return;
    };
    let (cache, test) = (&fx.cache, &fx.test);
    let out = fx.dir.path().join("winner");
    let args = fx.args(&[
        "--singles",
        "emb:logreg",
        "--ensembles",
        "",
        "--finetune",
        "--finetune-epochs",
        "1",
        "--json",
    ]);
    let r = ok_json(&args, cache);
    let candidates = r["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 2, "{r}");
    let ft = &candidates[1];
    assert_eq!(ft["name"], "finetuned");
    assert_eq!(ft["kind"], "finetuned");
    let cv = ft["cv_accuracy"].as_f64().unwrap();
    assert!(
        (0.0..=1.0).contains(&cv) && ft["cv_std"].is_number(),
        "{ft}"
    );
    assert!(ft["test"]["accuracy"].is_number() && ft["selected"]["best_step"].is_number());

    // The fine-tuned encoder alone: it wins, and its bundle (encoder inside, calibrated)
    // reloads to the test metrics compare measured for it.
    let mut alone = args.to_vec();
    let at = alone.iter().position(|a| *a == "emb:logreg").unwrap();
    alone[at] = "";
    alone.extend(["--out", out.to_str().unwrap()]);
    let r = ok_json(&alone, cache);
    assert_eq!(r["winner"]["name"], "finetuned");
    assert!(out.join("encoder").join("model.safetensors").is_file());
    assert_eval_reproduces(&out, test, &r["calibration"], cache);

    // It cannot be an ensemble member: the members share one encoder.
    let mut member = args.to_vec();
    member.extend([
        "--members",
        "emb:logreg,finetuned",
        "--ensembles",
        "stacking",
    ]);
    assert_one_line_error(&member, &["finetuned", "--finetune"]);
}

#[test]
fn compare_trains_the_shared_layer_end_to_end_per_fold_and_saves_it_with_its_encoder() {
    let Some(fx) = FinetuneCompare::new() else {
        return;
    };
    let (cache, test) = (&fx.cache, &fx.test);
    let out = fx.dir.path().join("winner");
    let args = fx.args(&[
        "--singles",
        "",
        "--ensembles",
        "",
        "--finetune",
        "--finetune-shared",
        "--finetune-shared-alpha",
        "1",
        "--finetune-epochs",
        "1",
        "--json",
    ]);
    let r = ok_json(&args, cache);
    let candidates = r["candidates"].as_array().unwrap();
    let names: Vec<&str> = candidates
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["finetuned", "finetuned_shared"], "{r}");
    let shared = &candidates[1];
    assert_eq!(shared["kind"], "shared_hidden_layer");
    assert_eq!(shared["selected"]["alpha"], 1.0);
    assert!(shared["selected"]["best_step"].is_number(), "{shared}");
    // The fine-tuning settings are in the row, for the reader of the leaderboard.
    for c in candidates {
        assert_eq!(c["finetune"]["epochs"], 1, "{c}");
    }
    let cv = shared["cv_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&cv) && shared["cv_std"].is_number());

    // Alone it wins; its bundle (a shared-head classifier over tfidf and the fine-tuned
    // encoder inside) reloads to the test metrics compare measured.
    let mut alone: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| *a != "--finetune")
        .collect();
    alone.extend(["--out", out.to_str().unwrap()]);
    let r = ok_json(&alone, cache);
    assert_eq!(r["candidates"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["winner"]["name"], "finetuned_shared");
    // Same seed, same folds, same runs: the same figures as beside the linear candidate.
    assert_eq!(r["winner"]["cv_accuracy"], shared["cv_accuracy"]);
    assert_eq!(r["winner"]["test"], shared["test"]);
    assert!(out.join("encoder").join("model.safetensors").is_file());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let training = &manifest["model"]["training"];
    assert_eq!(training["method"], "finetune-shared", "{manifest}");
    assert_eq!(training["shared_head"]["alpha"], 1.0, "{manifest}");
    assert_eval_reproduces(&out, test, &r["calibration"], cache);

    // Several alphas: each trained on all of train, the best dev accuracy chooses (ties: the
    // earlier), and the folds run with that one: the figures of a run given only it.
    let with_alphas = |alphas: &'static str| -> serde_json::Value {
        let mut a: Vec<&str> = args
            .iter()
            .copied()
            .filter(|a| *a != "--finetune")
            .collect();
        let at = a
            .iter()
            .position(|a| *a == "--finetune-shared-alpha")
            .unwrap();
        a[at + 1] = alphas;
        ok_json(&a, cache)
    };
    let chose = with_alphas("1,200");
    let w = &chose["winner"];
    let tried = w["tried"].as_array().unwrap();
    let alphas: Vec<f64> = tried.iter().map(|t| t["alpha"].as_f64().unwrap()).collect();
    assert_eq!(alphas, [1.0, 200.0], "{w}");
    let dev = |t: &serde_json::Value| t["dev_accuracy"].as_f64().unwrap();
    let best = if dev(&tried[1]) > dev(&tried[0]) {
        1
    } else {
        0
    };
    assert_eq!(w["selected"]["alpha"], tried[best]["alpha"], "{w}");
    assert_eq!(w["dev"]["accuracy"], tried[best]["dev_accuracy"], "{w}");
    let only = if best == 0 {
        r.clone()
    } else {
        with_alphas("200")
    };
    assert!(only["winner"].get("tried").is_none(), "{only}");
    assert_eq!(w["cv_accuracy"], only["winner"]["cv_accuracy"]);
    assert_eq!(w["test"], only["winner"]["test"]);

    // Fine-tuning settings without a fine-tuned candidate are a usage error; the shared
    // candidate as an ensemble member is refused.
    let epochs_alone = [
        "compare",
        "--train",
        fx.train.to_str().unwrap(),
        "--finetune-epochs",
        "1",
    ];
    // (A preset may turn fine-tuning on, so this is the library's check, not clap's.)
    assert_one_line_error(&epochs_alone, &["--finetune-epochs", "--finetune-shared"]);
    let mut member = args.to_vec();
    member.extend([
        "--members",
        "emb:logreg,finetuned_shared",
        "--ensembles",
        "stacking",
    ]);
    assert_one_line_error(&member, &["finetuned_shared", "--finetune-shared"]);
}

#[test]
fn compare_adds_the_fine_tuned_candidate_to_every_ensemble_and_saves_one_with_both_encoders() {
    let Some(fx) = FinetuneCompare::new() else {
        return;
    };
    let (cache, test) = (&fx.cache, &fx.test);
    let out = fx.dir.path().join("mixed");
    let args = fx.args(&[
        "--singles",
        "",
        "--members",
        "emb:logreg,tfidf:logreg",
        "--ensembles",
        "soft_vote,stacking",
        "--finetune-shared",
        "--finetune-shared-alpha",
        "1",
        "--finetune-epochs",
        "1",
        // A rate that moves the encoder far from its base (see the serve test).
        "--finetune-lr",
        "1e-3",
        "--finetuned-members",
        "--json",
    ]);
    let r = ok_json(&args, cache);
    let names: Vec<&str> = r["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let mixed = "stacking(emb:logreg,tfidf:logreg,finetuned_shared)";
    assert_eq!(
        names,
        [
            "soft_vote(emb:logreg,tfidf:logreg)",
            "stacking(emb:logreg,tfidf:logreg)",
            "finetuned_shared",
            "soft_vote(emb:logreg,tfidf:logreg,finetuned_shared)",
            mixed,
        ],
        "{r}"
    );
    assert!(
        r.get("saved").unwrap().is_null(),
        "nothing saved without --out"
    );

    // The ensemble with the fine-tuned member, saved in place of the winner: the bundle holds
    // the fine-tuned encoder for that member and reloads to what compare measured.
    let mut save = args.to_vec();
    save.extend(["--out", out.to_str().unwrap(), "--save-candidate", mixed]);
    save.push("--no-calibrate");
    let s = ok_json(&save, cache);
    assert_eq!(s["saved"], mixed);
    assert_eq!(
        s["winner"]["name"], r["winner"]["name"],
        "the winner is still named"
    );
    let entry = s["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == mixed)
        .unwrap();
    assert!(out.join("encoder").join("model.safetensors").is_file());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let model_card = &manifest["model"];
    assert_eq!(
        model_card["task"], "text-classification-ensemble",
        "{manifest}"
    );
    let members = model_card["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert_eq!(members[2]["encoder"]["in_bundle"], true, "{manifest}");
    assert!(
        members[0]["encoder"].get("in_bundle").is_none(),
        "{manifest}"
    );
    assert_eq!(model_card["training"]["finetuned_member_model"], "refit");
    assert_eq!(
        manifest["format_version"],
        lmfuse_bundle::MIXED_ENCODERS_VERSION
    );
    assert_eval_reproduces(&out, test, entry, cache);

    // A name that is no candidate is refused before anything is fit; so are fine-tuned
    // members without ensembles.
    let mut bad = args.to_vec();
    bad.extend(["--out", out.to_str().unwrap(), "--save-candidate", "nope"]);
    assert_one_line_error(&bad, &["\"nope\"", "--save-candidate", mixed]);
    let mut no_ensembles = args.to_vec();
    let at = no_ensembles
        .iter()
        .position(|a| *a == "--ensembles")
        .unwrap();
    no_ensembles[at + 1] = "";
    assert_one_line_error(&no_ensembles, &["--finetuned-members", "--ensembles"]);
}

/// Intent-routing train, dev and test files (a third of each labelled `oos`) in `dir`.
fn write_intent_splits(dir: &Path) -> [String; 3] {
    let paths = ["train", "dev", "test"].map(|s| dir.join(format!("{s}.jsonl")));
    for (path, (n, offset)) in paths.iter().zip([(60, 0), (30, 100), (30, 200)]) {
        write_intents(path, n, offset);
    }
    paths.map(|p| p.to_str().unwrap().to_string())
}

/// `train --json` with out-of-scope detection `method` tuned for `objective` (3 neighbours
/// for knn) on the intent splits, saving to `out`.
fn oos_train_args<'a>(
    model: &'a str,
    [train, dev, test]: &'a [String; 3],
    out: &'a str,
    method: &'a str,
    objective: &'a str,
) -> Vec<&'a str> {
    vec![
        "train",
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
        "--oos",
        method,
        "--oos-k",
        "3",
        "--oos-objective",
        objective,
        "--json",
    ]
}

#[test]
fn out_of_scope_detection_is_tuned_on_dev_saved_and_reported_by_eval_and_predict() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let splits = write_intent_splits(dir.path());
    let test = &splits[2];
    for method in ["max_prob", "mahalanobis", "knn"] {
        let out = dir.path().join(format!("oos-{method}"));
        // Every objective, one per method.
        let objective = match method {
            "max_prob" => "balanced",
            "mahalanobis" => "accuracy",
            _ => "recall:0.9",
        };
        let args = oos_train_args(m, &splits, out.to_str().unwrap(), method, objective);
        let report = ok_json(&args, dir.path());
        let test_oos = &report["oos"]["test"];
        assert_eq!(test_oos["method"], method);
        assert_eq!(test_oos["out_of_scope"], 10);
        assert!(
            test_oos["oos_recall"].as_f64().unwrap() >= 0.9,
            "{method}: {test_oos}"
        );
        assert!(
            test_oos["in_scope_accuracy"].as_f64().unwrap() >= 0.9,
            "{method}: {test_oos}"
        );
        // eval on the saved bundle reproduces the figures.
        let eval = ok_json(
            &[
                "eval",
                "--model",
                out.to_str().unwrap(),
                "--data",
                test,
                "--json",
            ],
            dir.path(),
        );
        assert_eq!(
            eval["oos"]["oos_recall"], test_oos["oos_recall"],
            "{method}"
        );
        assert_eq!(
            eval["oos"]["in_scope_accuracy"], test_oos["in_scope_accuracy"],
            "{method}"
        );
        // predict marks each row.
        let texts = dir.path().join("texts.txt");
        std::fs::write(
            &texts,
            "book a flight to city 7 please\nmy cat number 3 likes the warm sofa\n",
        )
        .unwrap();
        let pred = run(
            &[
                "predict",
                "--model",
                out.to_str().unwrap(),
                "--input",
                texts.to_str().unwrap(),
            ],
            dir.path(),
        );
        assert!(
            pred.status.success(),
            "{}",
            String::from_utf8_lossy(&pred.stderr)
        );
        let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&pred.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows[0]["oos"]["is_oos"], false, "{method}: {}", rows[0]);
        assert_eq!(rows[1]["oos"]["is_oos"], true, "{method}: {}", rows[1]);
        assert!(rows[1]["oos"]["score"].as_f64().is_some());
    }
}

#[test]
fn out_of_scope_auto_tries_every_detector_and_keeps_the_best_on_dev() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let splits = write_intent_splits(dir.path());
    let test = &splits[2];
    let out = dir.path().join("oos-auto");
    let args = oos_train_args(m, &splits, out.to_str().unwrap(), "auto", "balanced");
    let report = ok_json(&args, dir.path());
    let tried = report["oos_tried"].as_array().unwrap();
    let methods: Vec<&str> = tried
        .iter()
        .map(|t| t["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["max_prob", "mahalanobis", "knn"], "{report}");
    // Each value is the balanced objective of its own dev figures.
    for t in tried {
        let want =
            (t["in_scope_accuracy"].as_f64().unwrap() + t["oos_recall"].as_f64().unwrap()) / 2.0;
        assert!(
            (t["objective_value"].as_f64().unwrap() - want).abs() < 1e-9,
            "{t}"
        );
    }
    // The chosen one is the first of the best, and it is what `oos` reports and the bundle holds.
    let values: Vec<f64> = tried
        .iter()
        .map(|t| t["objective_value"].as_f64().unwrap())
        .collect();
    let best = values.iter().copied().fold(f64::MIN, f64::max);
    let first_best = values.iter().position(|&v| v == best).unwrap();
    let chosen = &tried[first_best];
    let dev_oos = &report["oos"]["dev"];
    assert_eq!(dev_oos["method"], chosen["method"], "{report}");
    assert_eq!(dev_oos["threshold"], chosen["threshold"], "{report}");
    assert_eq!(report["oos"]["test"]["method"], chosen["method"]);
    let eval = ok_json(
        &[
            "eval",
            "--model",
            out.to_str().unwrap(),
            "--data",
            test,
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(eval["oos"]["method"], chosen["method"], "{eval}");
    assert_eq!(
        eval["oos"]["oos_recall"],
        report["oos"]["test"]["oos_recall"]
    );
    // An unknown detector is a usage error that names the choices, auto among them.
    let mut bad = args.to_vec();
    let at = bad.iter().position(|a| *a == "auto").unwrap();
    bad[at] = "lof";
    let usage = run(&bad, dir.path());
    let stderr = String::from_utf8_lossy(&usage.stderr);
    assert_eq!(usage.status.code(), Some(2), "{stderr}");
    for needle in ["lof", "mahalanobis", "auto"] {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
}

#[test]
fn a_tfidf_only_bundle_predicts_where_its_encoder_is_gone() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // A copy of the encoder that the bundle records, removed after training.
    let copy = dir.path().join("encoder");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(&model).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
        }
    }
    let (train, test, out) = (
        dir.path().join("train.jsonl"),
        dir.path().join("test.jsonl"),
        dir.path().join("bundle"),
    );
    write_set(&train, 120, 0);
    write_set(&test, 40, 1000);
    let extra = ["--features", "tfidf", "--test", test.to_str().unwrap()];
    let trained = train_json(copy.to_str().unwrap(), &train, &out, &extra, &cache);
    std::fs::remove_dir_all(&copy).unwrap();
    let e = ok_json(
        &[
            "eval",
            "--model",
            out.to_str().unwrap(),
            "--data",
            test.to_str().unwrap(),
            "--json",
        ],
        &cache,
    );
    assert_eq!(e["test"]["accuracy"], trained["test"]["accuracy"]);
    let p = run(
        &[
            "predict",
            "--model",
            out.to_str().unwrap(),
            "--input",
            test.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    assert_eq!(String::from_utf8_lossy(&p.stdout).lines().count(), 40);
}

#[test]
fn windowed_long_texts_are_recorded_in_the_bundle_and_applied_by_eval_and_embed() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (train, test) = small_train_test(dir.path());
    // Six tokens per pass: every text of the set needs two or three windows.
    let windows = ["--max-length", "6", "--long-text", "windows"];
    let out = dir.path().join("b");
    let mut extra = vec!["--test", test.to_str().unwrap()];
    extra.extend_from_slice(&windows);
    let saved = train_json(m, &train, &out, &extra, &cache);
    let recorded = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .any(|s| s.contains(r#""long_text":"windows""#) || s.contains(r#""long_text": "windows""#));
    assert!(recorded, "the bundle records the long-text mode");
    assert_eval_reproduces(&out, &test, &saved, &cache);

    let input = dir.path().join("texts.txt");
    std::fs::write(
        &input,
        "the hotel was lovely and the pizza was awful\nthe hotel\n",
    )
    .unwrap();
    let vectors = |extra: &[&str], name: &str| -> Vec<Vec<f64>> {
        let output = dir.path().join(name);
        embed_json(m, &input, &output, extra, &cache);
        std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let row = v.get("embedding").unwrap_or(&v);
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    let cut = vectors(&["--max-length", "6", "--format", "text"], "cut.jsonl");
    let windowed = vectors(
        &[&windows[..], &["--format", "text"]].concat(),
        "windows.jsonl",
    );
    let diff = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    };
    assert!(diff(&cut[0], &windowed[0]) > 1e-4, "the long text differs");
    assert!(diff(&cut[1], &windowed[1]) < 1e-6, "the short one does not");
}

#[test]
fn a_chinese_stop_list_is_applied_to_the_word_grams_and_recorded() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (good, bad) = (["干净", "安静", "方便"], ["脏", "吵", "贵"]);
    let write = |path: &Path, n: usize| {
        let mut s = String::new();
        for i in 0..n {
            let (w, label) = match i % 2 {
                0 => (good[i % 3], "pos"),
                _ => (bad[i % 3], "neg"),
            };
            let text = format!("我们的房间{w}了，这个酒店的服务{w}");
            s.push_str(&serde_json::json!({"text": text, "label": label}).to_string());
            s.push('\n');
        }
        std::fs::write(path, s).unwrap();
    };
    let (train, test) = (
        dir.path().join("train.jsonl"),
        dir.path().join("test.jsonl"),
    );
    write(&train, 60);
    write(&test, 20);
    let out = dir.path().join("b");
    let extra = [
        "--test",
        test.to_str().unwrap(),
        "--features",
        "tfidf",
        "--stop-words",
        "zh",
    ];
    let saved = train_json(m, &train, &out, &extra, &cache);
    let vocab = std::fs::read_to_string(out.join("tfidf_word.vocab.json")).unwrap();
    assert!(vocab.contains("房间") && vocab.contains("干净"), "{vocab}");
    for stop in ["\"的\"", "\"我们\"", "\"这个\"", "\"了\""] {
        assert!(!vocab.contains(stop), "{stop} left out: {vocab}");
    }
    let recorded = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .any(|s| {
            s.contains(r#""stop_words":"chinese""#) || s.contains(r#""stop_words": "chinese""#)
        });
    assert!(recorded, "the bundle records the stop list");
    assert_eval_reproduces(&out, &test, &saved, &cache);
    let bad = [
        "train",
        "--model",
        m,
        "--train",
        train.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--stop-words",
        "fr",
    ];
    let r = run(&bad, &cache);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("expected none or zh"));
}
