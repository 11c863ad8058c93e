//! End-to-end tests of `lmfuse tune`, experiment files (`--config`), and the embedding block
//! weight of `train` / `compare`, with the tiny test encoder.

mod common;

use common::{assert_one_line_error, ok_json, run, tiny_model};
use serde_json::Value;
use std::path::Path;

/// A two-class set where words mostly decide the label; every seventh label is flipped, so
/// configurations score differently.
fn write_noisy_set(path: &Path, n: usize, offset: usize) {
    let good = ["great", "excellent", "lovely", "fine", "superb", "nice"];
    let bad = ["awful", "terrible", "broken", "poor", "useless", "bad"];
    let items = [
        "phone", "hotel", "pizza", "laptop", "movie", "chair", "course",
    ];
    let mut s = String::new();
    for i in offset..offset + n {
        let pos = i % 2 == 0;
        let (a, b) = if pos { (&good, &bad) } else { (&bad, &good) };
        // A word of the other side in every third text.
        let second = if i % 3 == 0 { b[i % 6] } else { a[(i / 6) % 6] };
        let text = format!("the {} was {} and {}", items[i % 7], a[i % 6], second);
        let label = if (pos && i % 7 != 3) || (!pos && i % 7 == 3) {
            "pos"
        } else {
            "neg"
        };
        s.push_str(&serde_json::json!({"text": text, "label": label}).to_string());
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

/// The trials of a `tune --json` report without their timings.
fn trials_without_time(r: &Value) -> Vec<Value> {
    r["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.as_object_mut().unwrap().remove("fit_seconds");
            for s in t["scores"].as_array_mut().unwrap() {
                s.as_object_mut().unwrap().remove("seconds");
            }
            t
        })
        .collect()
}

struct Sets {
    dir: tempfile::TempDir,
}

impl Sets {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_noisy_set(&dir.path().join("train.jsonl"), 300, 0);
        write_noisy_set(&dir.path().join("dev.jsonl"), 40, 2000);
        write_noisy_set(&dir.path().join("test.jsonl"), 60, 1000);
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

fn tune(model: &str, sets: &Sets, test: &str, dev: &str, extra: &[&str]) -> Value {
    let (train, dev, test) = (sets.path("train.jsonl"), sets.path(dev), sets.path(test));
    let mut args = vec![
        "tune", "--model", model, "--train", &train, "--dev", &dev, "--test", &test, "--folds",
        "3", "--json",
    ];
    args.extend_from_slice(extra);
    ok_json(&args, &sets.dir.path().join("cache"))
}

#[test]
fn tune_halves_is_seeded_and_saves_a_bundle_that_eval_reproduces() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let sets = Sets::new();
    let b = sets.path("best");
    let search = [
        "--trials",
        "9",
        "--halving",
        "--eta",
        "3",
        "--seed",
        "1",
        "--heads",
        "logreg,nb,knn",
    ];
    let mut extra = search.to_vec();
    extra.extend(["--out", &b]);
    let r = tune(m, &sets, "test.jsonl", "dev.jsonl", &extra);
    // 300 rows, 9 configurations, eta 3: rung 0 on 100 rows, the best 3 on all 300.
    assert_eq!(
        r["rungs"],
        serde_json::json!([{"rows": 100, "configs": 9}, {"rows": 300, "configs": 3}]),
        "{r}"
    );
    let trials = r["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 9);
    let rung0 = |t: &Value| t["scores"][0]["cv_accuracy"].as_f64().unwrap();
    let (promoted, dropped): (Vec<&Value>, Vec<&Value>) =
        trials.iter().partition(|t| t["rung"] == 1);
    assert_eq!(promoted.len(), 3, "{r}");
    for t in &promoted {
        assert_eq!(t["rows"], 300);
        assert_eq!(t["scores"].as_array().unwrap().len(), 2);
    }
    let worst_kept = promoted.iter().map(|t| rung0(t)).fold(1.0, f64::min);
    for t in &dropped {
        assert_eq!(t["rows"], 100);
        assert!(rung0(t) <= worst_kept, "{t} beat a promoted trial");
    }
    // The leaderboard starts with the best of the last rung, which is the winner.
    let best_cv = promoted
        .iter()
        .map(|t| t["cv_accuracy"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(trials[0]["cv_accuracy"].as_f64().unwrap(), best_cv);
    let best = &r["best"];
    assert_eq!(best["config"], trials[0]["config"]);
    assert_eq!(best["cv_accuracy"], trials[0]["cv_accuracy"]);
    for key in ["accuracy", "macro_f1", "log_loss", "confusion"] {
        assert!(
            !best["dev"][key].is_null() && !best["test"][key].is_null(),
            "{key}"
        );
    }

    // The bundle is a `train` bundle: eval reproduces the reported test figures, and its card
    // records the winner's embedding weight.
    let e = ok_json(
        &[
            "eval",
            "--model",
            &b,
            "--data",
            &sets.path("test.jsonl"),
            "--json",
        ],
        &sets.dir.path().join("cache"),
    );
    assert_eq!(e["test"]["accuracy"], best["test"]["accuracy"]);
    assert_eq!(e["test"]["log_loss"], best["test"]["log_loss"]);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(Path::new(&b).join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["model"]["block_weights"]["emb"].as_f64().unwrap(),
        best["emb_weight"].as_f64().unwrap()
    );
    assert_eq!(manifest["model"]["head"]["kind"], best["head"]);

    // Same seed: the same trials and leaderboard; another seed draws others.
    let again = tune(m, &sets, "test.jsonl", "dev.jsonl", &search);
    assert_eq!(trials_without_time(&again), trials_without_time(&r));
    assert_eq!(again["best"]["config"], best["config"]);
    let mut other = search.to_vec();
    other[6] = "2";
    let o = tune(m, &sets, "test.jsonl", "dev.jsonl", &other);
    let configs = |r: &Value| -> Vec<Value> {
        let mut c: Vec<Value> = r["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["config"].clone())
            .collect();
        c.sort_by_key(|v| v.to_string());
        c
    };
    assert_ne!(configs(&o), configs(&r));
}

#[test]
fn tune_without_dev_keeps_every_training_row() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let sets = Sets::new();
    let (train, test) = (sets.path("train.jsonl"), sets.path("test.jsonl"));
    let r = ok_json(
        &[
            "tune", "--model", m, "--train", &train, "--test", &test, "--folds", "3", "--trials",
            "3", "--seed", "1", "--json",
        ],
        &sets.dir.path().join("cache"),
    );
    // All 300 training rows are searched and refit on; dev is absent, not carved.
    assert_eq!(r["train"], 300, "{r}");
    assert_eq!(r["dev"], 0);
    assert!(r["best"]["dev"].is_null(), "{}", r["best"]);
    assert!(r["best"]["test"]["accuracy"].is_number());
    assert_eq!(r["best"]["data"]["dev_source"], "none");
    // With --dev, dev is reported as before.
    let r = tune(
        m,
        &sets,
        "test.jsonl",
        "dev.jsonl",
        &["--trials", "3", "--seed", "1"],
    );
    assert_eq!(r["train"], 300);
    assert!(r["best"]["dev"]["accuracy"].is_number());
}

#[test]
fn tune_never_chooses_by_dev_or_test_labels() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let sets = Sets::new();
    // The same dev and test texts with every label swapped.
    for name in ["dev", "test"] {
        let text = std::fs::read_to_string(sets.path(&format!("{name}.jsonl"))).unwrap();
        let swapped: String = text
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                let flip = if v["label"] == "pos" { "neg" } else { "pos" };
                v["label"] = flip.into();
                format!("{v}\n")
            })
            .collect();
        std::fs::write(sets.path(&format!("{name}-swapped.jsonl")), swapped).unwrap();
    }
    let extra = ["--trials", "6", "--seed", "3", "--heads", "logreg,nb,knn"];
    let r = tune(m, &sets, "test.jsonl", "dev.jsonl", &extra);
    let s = tune(m, &sets, "test-swapped.jsonl", "dev-swapped.jsonl", &extra);
    assert_eq!(trials_without_time(&s), trials_without_time(&r));
    assert_eq!(s["best"]["config"], r["best"]["config"]);
    assert_eq!(s["best"]["cv_accuracy"], r["best"]["cv_accuracy"]);
    // The labels were read: the reported test accuracy is the complement.
    let (a, b) = (
        r["best"]["test"]["accuracy"].as_f64().unwrap(),
        s["best"]["test"]["accuracy"].as_f64().unwrap(),
    );
    assert!((a + b - 1.0).abs() < 1e-9, "{a} {b}");
}

#[test]
fn experiment_files_set_tune_and_compare_and_flags_override_them() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let exp = dir.path().join("exp");
    std::fs::create_dir_all(exp.join("data")).unwrap();
    write_noisy_set(&exp.join("data/train.jsonl"), 150, 0);
    write_noisy_set(&exp.join("data/test.jsonl"), 40, 1000);
    // TOML for tune: relative data paths, lists, booleans.
    let toml = exp.join("tune.toml");
    std::fs::write(
        &toml,
        format!(
            "model = {m:?}\ntrain = \"data/train.jsonl\"\ntest = \"data/test.jsonl\"\n\
             heads = [\"logreg\", \"knn\"]\nfeature_sets = [\"emb\", \"tfidf+emb\"]\n\
             trials = 4\nfolds = 3\nseed = 5\njson = true\nemb_weights = [1, 8]\n"
        ),
    )
    .unwrap();
    let t = toml.to_str().unwrap();
    let r = ok_json(&["tune", "--config", t], &cache);
    assert_eq!(r["trials"].as_array().unwrap().len(), 4, "{r}");
    assert_eq!(
        (r["folds"].as_u64(), r["seed"].as_u64()),
        (Some(3), Some(5))
    );
    assert_eq!(
        r["best"]["data"]["test_source"],
        format!("{}", exp.join("data/test.jsonl").display())
    );
    for trial in r["trials"].as_array().unwrap() {
        assert!(
            matches!(trial["head"].as_str(), Some("logreg" | "knn")),
            "{trial}"
        );
        assert!(
            matches!(trial["features"].as_str(), Some("emb" | "tfidf+emb")),
            "{trial}"
        );
        if let Some(w) = trial["emb_weight"].as_f64() {
            assert!((1.0..=8.0).contains(&w), "{trial}");
        }
    }
    // The command line wins over the file.
    let r = ok_json(
        &["tune", "--config", t, "--trials", "2", "--folds", "4"],
        &cache,
    );
    assert_eq!(r["trials"].as_array().unwrap().len(), 2);
    assert_eq!(r["folds"], 4);

    // JSON for compare (in another folder than the current one).
    let json = exp.join("compare.json");
    std::fs::write(
        &json,
        serde_json::json!({
            "model": m, "train": "data/train.jsonl", "test": "data/test.jsonl",
            "singles": ["emb:logreg", "tfidf+emb:logreg"], "ensembles": [], "folds": 3,
            "c_grid": [0.1, 1], "emb_weights": [1, 4], "json": true,
        })
        .to_string(),
    )
    .unwrap();
    let j = json.to_str().unwrap();
    let r = ok_json(&["compare", "--config", j], &cache);
    let c = r["candidates"].as_array().unwrap();
    assert_eq!(c.len(), 2, "{r}");
    assert_eq!(r["folds"], 3);
    assert!(c[0]["selected"]["emb_weight"].is_null());
    let w = c[1]["selected"]["emb_weight"].as_f64().unwrap();
    assert!(w == 1.0 || w == 4.0, "{r}");
    let r = ok_json(
        &[
            "compare",
            "--config",
            j,
            "--singles",
            "emb:logreg",
            "--folds",
            "2",
        ],
        &cache,
    );
    assert_eq!(r["candidates"].as_array().unwrap().len(), 1);
    assert_eq!(r["folds"], 2);

    // Mistakes in the file: one error line naming the key and the file.
    let bad = exp.join("bad.toml");
    std::fs::write(&bad, "train = \"data/train.jsonl\"\ntrails = 3\n").unwrap();
    let b = bad.to_str().unwrap();
    assert_one_line_error(&["tune", "--config", b], &["unknown key \"trails\"", b]);
    assert_one_line_error(&["compare", "--config", b], &["unknown key \"trails\"", b]);
    std::fs::write(&bad, "train = \"data/train.jsonl\"\nfolds = \"many\"\n").unwrap();
    assert_one_line_error(&["tune", "--config", b], &["--folds", "many", b]);
}

#[test]
fn compare_tunes_the_fusion_weight_and_train_applies_a_given_one() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    write_noisy_set(&dir.path().join("train.jsonl"), 150, 0);
    write_noisy_set(&dir.path().join("test.jsonl"), 40, 1000);
    let (train, test, b) = (p("train.jsonl"), p("test.jsonl"), p("fused"));
    let r = ok_json(
        &[
            "compare",
            "--model",
            m,
            "--train",
            &train,
            "--test",
            &test,
            "--singles",
            "tfidf+emb:logreg",
            "--ensembles",
            "",
            "--folds",
            "3",
            "--emb-weights",
            "0.25,16",
            "--out",
            &b,
            "--json",
        ],
        &cache,
    );
    let w = &r["winner"];
    let chosen = w["selected"]["emb_weight"].as_f64().unwrap();
    assert!(chosen == 0.25 || chosen == 16.0, "{r}");
    assert!(w["selected"]["c"].is_number());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(Path::new(&b).join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["model"]["block_weights"]["emb"].as_f64(),
        Some(chosen)
    );
    let e = ok_json(&["eval", "--model", &b, "--data", &test, "--json"], &cache);
    assert_eq!(e["test"]["log_loss"], r["calibration"]["test"]["log_loss"]);

    // train --emb-weight: stored, applied by eval, and it changes the model.
    let train_with = |weight: &str, out: &str| {
        ok_json(
            &[
                "train",
                "--model",
                m,
                "--train",
                &train,
                "--test",
                &test,
                "--features",
                "tfidf,emb",
                "--c-grid",
                "1",
                "--emb-weight",
                weight,
                "--out",
                out,
                "--json",
            ],
            &cache,
        )
    };
    let (b3, b1) = (p("w3"), p("w1"));
    let r3 = train_with("3", &b3);
    let r1 = train_with("1", &b1);
    assert_eq!(r3["emb_weight"], 3.0);
    assert_ne!(r3["test"]["log_loss"], r1["test"]["log_loss"]);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(Path::new(&b3).join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["model"]["block_weights"]["emb"], 3.0);
    let e = ok_json(&["eval", "--model", &b3, "--data", &test, "--json"], &cache);
    assert_eq!(e["test"]["log_loss"], r3["test"]["log_loss"]);
    assert_one_line_error(
        &[
            "train",
            "--model",
            m,
            "--train",
            &train,
            "--out",
            &b3,
            "--emb-weight",
            "0",
        ],
        &["--emb-weight", "positive"],
    );
}

#[test]
fn bundles_of_every_older_format_predict_as_they_did() {
    let Some(model) = tiny_model() else { return };
    // Bundles written by earlier lmfuse versions, one per format version, with the
    // predictions that lmfuse made with them (compat_bundles/README.md).
    let fixtures = common::workspace().join("crates/lmfuse-cli/tests/compat_bundles");
    let dir = tempfile::tempdir().unwrap();
    for (name, format_version) in [
        ("v1-tfidf-emb", 1),
        ("v2-logreg-oos", 2),
        ("v3-stacking", 3),
    ] {
        let bundle = fixtures.join(name);
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["format_version"], format_version, "{name}");
        if name == "v1-tfidf-emb" {
            // Written before block weights existed: it loads with every weight 1.
            assert!(manifest["model"].get("block_weights").is_none());
        }
        let out = dir.path().join(format!("{name}.jsonl"));
        let o = run(
            &[
                "predict",
                "--model",
                bundle.to_str().unwrap(),
                "--encoder",
                model.to_str().unwrap(),
                "-i",
                fixtures.join(format!("{name}.input.txt")).to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
            &dir.path().join("cache"),
        );
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got = std::fs::read_to_string(&out).unwrap();
        let want =
            std::fs::read_to_string(fixtures.join(format!("{name}.expected.jsonl"))).unwrap();
        assert_eq!(got.lines().count(), want.lines().count(), "{name}");
        for (g, w) in got.lines().zip(want.lines()) {
            let (g, w): (Value, Value) = (
                serde_json::from_str(g).unwrap(),
                serde_json::from_str(w).unwrap(),
            );
            assert_eq!(g["label"], w["label"], "{name}");
            for (label, p) in w["probabilities"].as_object().unwrap() {
                let q = g["probabilities"][label].as_f64().unwrap();
                assert!((q - p.as_f64().unwrap()).abs() < 1e-6, "{name}: {g} vs {w}");
            }
            assert_eq!(g["oos"].is_null(), w["oos"].is_null(), "{name}: {g} vs {w}");
            if !w["oos"].is_null() {
                assert_eq!(g["oos"]["is_oos"], w["oos"]["is_oos"], "{name}: {g} vs {w}");
                let (gs, ws) = (
                    g["oos"]["score"].as_f64().unwrap(),
                    w["oos"]["score"].as_f64().unwrap(),
                );
                assert!(
                    (gs - ws).abs() <= 1e-4 * ws.abs().max(1.0),
                    "{name}: {g} vs {w}"
                );
            }
        }
    }
    // The v2 fixture's last line is off-topic and was flagged.
    let v2 = std::fs::read_to_string(fixtures.join("v2-logreg-oos.expected.jsonl")).unwrap();
    let last: Value = serde_json::from_str(v2.lines().last().unwrap()).unwrap();
    assert_eq!(last["oos"]["is_oos"], true, "{last}");
}

#[test]
fn the_example_experiment_files_run() {
    let Some(model) = tiny_model() else { return };
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let examples = common::workspace().join("examples");
    for (command, file, extra) in [
        ("compare", "fusion.toml", &[][..]),
        ("tune", "tune.toml", &["--trials", "6"][..]),
    ] {
        let out = dir.path().join(command);
        let config = examples.join(file);
        let mut args = vec![
            command,
            "--config",
            config.to_str().unwrap(),
            "--model",
            m,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let r = ok_json(&args, &cache);
        assert_eq!(r["folds"], 5, "{file}: {r}");
        assert!(out.join("manifest.json").is_file(), "{file}");
    }
}
