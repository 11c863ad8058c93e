//! `lmfuse ner`: train, eval, predict and features end to end on made-up sentences, bad tagged
//! input, the fusion with an encoder, and determinism.

mod common;

use common::{assert_one_line_error, ok_json, run, s, tiny_model, write_file as write};
use std::path::{Path, PathBuf};

const PEOPLE: [&str; 6] = ["Alice", "Bob", "Carol", "David", "Emma", "Frank"];
const CITIES: [&str; 5] = ["Paris", "Rome", "Berlin", "Madrid", "Oslo"];
const ORGS: [&[&str]; 3] = [&["Acme", "Corp"], &["Globex"], &["Initech", "Labs"]];

/// `n` CoNLL sentences from templates (people, cities, organisations), starting at `offset`.
fn conll(n: usize, offset: usize) -> String {
    let mut out = String::new();
    for i in offset..offset + n {
        let person = PEOPLE[i % PEOPLE.len()];
        let city = CITIES[(i / 2) % CITIES.len()];
        let org = ORGS[(i / 3) % ORGS.len()];
        let mut rows = vec![(person, "B-PER".to_string())];
        let verb = ["works", "lives", "studies"][i % 3];
        rows.push((verb, "O".into()));
        rows.push(([("for"), ("in"), ("at")][i % 3], "O".into()));
        if i % 3 == 1 {
            rows.push((city, "B-LOC".into()));
        } else {
            for (k, w) in org.iter().enumerate() {
                rows.push((w, format!("{}-ORG", if k == 0 { 'B' } else { 'I' })));
            }
            rows.push(("in", "O".into()));
            rows.push((city, "B-LOC".into()));
        }
        rows.push((".", "O".into()));
        for (w, t) in rows {
            out.push_str(&format!("{w}\t{t}\n"));
        }
        out.push('\n');
    }
    out
}

#[test]
fn train_eval_and_predict_agree_and_find_character_spans() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let train = write(dir.path(), "train.conll", &conll(60, 0));
    let dev = write(dir.path(), "dev.conll", &conll(20, 60));
    let out = dir.path().join("ner");
    let report = ok_json(
        &[
            "ner",
            "train",
            "--train",
            s(&train),
            "--dev",
            s(&dev),
            "--out",
            s(&out),
            "--c2",
            "0.01,1",
            "--json",
        ],
        &cache,
    );
    let dev_f1 = report["train"]["dev"]["micro"]["f1"].as_f64().unwrap();
    assert!(dev_f1 > 0.95, "{report}");
    assert_eq!(report["train"]["dev_f1_by_c2"].as_array().unwrap().len(), 2);
    let eval = ok_json(
        &[
            "ner",
            "eval",
            "--model",
            s(&out),
            "--data",
            s(&dev),
            "--json",
        ],
        &cache,
    );
    assert_eq!(
        eval["micro"]["f1"].as_f64().unwrap(),
        dev_f1,
        "eval reproduces train's dev score"
    );
    assert!(eval["per_type"]["ORG"]["support"].as_u64().unwrap() > 0);

    let texts = write(dir.path(), "texts.txt", "Carol lives in Oslo.\n");
    let found = run(
        &["ner", "predict", "--model", s(&out), "-i", s(&texts)],
        &cache,
    );
    assert!(
        found.status.success(),
        "{}",
        String::from_utf8_lossy(&found.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    let spans: Vec<(u64, u64, &str, &str)> = line["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["start"].as_u64().unwrap(),
                e["end"].as_u64().unwrap(),
                e["label"].as_str().unwrap(),
                e["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(spans, vec![(0, 5, "PER", "Carol"), (15, 19, "LOC", "Oslo")]);

    let tagged = run(
        &[
            "ner",
            "predict",
            "--model",
            s(&out),
            "-i",
            s(&dev),
            "--conll",
        ],
        &cache,
    );
    assert!(tagged.status.success());
    assert_eq!(String::from_utf8_lossy(&tagged.stdout).lines().count(), 20);
}

#[test]
fn bad_tagged_input_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ner");
    let broken = write(dir.path(), "broken.conll", &(conll(3, 0) + "Rome\tI-LOC\n"));
    let args = ["ner", "train", "--train", s(&broken), "--out", s(&out)];
    assert_one_line_error(
        &args,
        &[
            "broken.conll:",
            "tag \"I-LOC\" breaks the BIO scheme",
            "--repair-bio",
        ],
    );
    assert!(!out.exists(), "nothing is written for a refused file");
    let repaired = run(
        &[&args[..], &["--repair-bio"]].concat(),
        &dir.path().join("cache"),
    );
    assert!(
        repaired.status.success(),
        "{}",
        String::from_utf8_lossy(&repaired.stderr)
    );

    let columns = write(dir.path(), "columns.conll", "Rome\tNNP\tB-LOC\nis\tO\n");
    let args = ["ner", "train", "--train", s(&columns), "--out", s(&out)];
    assert_one_line_error(&args, &["columns.conll:2: 2 columns, expected 3"]);

    let spans = write(
        dir.path(),
        "spans.jsonl",
        "{\"text\": \"Rome\", \"entities\": [{\"start\": 0, \"end\": 9, \"label\": \"LOC\"}]}\n",
    );
    let args = ["ner", "train", "--train", s(&spans), "--out", s(&out)];
    assert_one_line_error(&args, &["spans.jsonl:1: entity 0: span 0..9"]);

    let args = [
        "ner",
        "train",
        "--train",
        s(&broken),
        "--out",
        s(&out),
        "--c2",
        "0.1,1",
    ];
    assert_one_line_error(&args, &["need --dev"]);
}

#[test]
fn classifier_and_ner_bundles_refuse_each_others_commands() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let train = write(dir.path(), "train.conll", &conll(30, 0));
    let out = dir.path().join("ner");
    ok_json(
        &[
            "ner",
            "train",
            "--train",
            s(&train),
            "--out",
            s(&out),
            "--json",
        ],
        &cache,
    );
    let texts = write(dir.path(), "t.txt", "Bob lives in Rome\n");
    assert_one_line_error(
        &["predict", "--model", s(&out), "-i", s(&texts)],
        &["is a named-entity bundle: use `lmfuse ner predict`"],
    );
    let labelled = dir.path().join("labelled.jsonl");
    common::write_set(&labelled, 20, 0);
    let classifier = dir.path().join("clf");
    let trained = run(
        &[
            "train",
            "--train",
            s(&labelled),
            "--features",
            "tfidf",
            "--out",
            s(&classifier),
        ],
        &cache,
    );
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    assert_one_line_error(
        &["ner", "predict", "--model", s(&classifier), "-i", s(&texts)],
        &["is not an NER bundle"],
    );
}

#[test]
fn the_fusion_reads_the_encoder_recorded_in_its_bundle_and_is_deterministic() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let train = write(dir.path(), "train.conll", &conll(40, 0));
    let dev = write(dir.path(), "dev.conll", &conll(12, 40));
    let fit = |name: &str| {
        let out = dir.path().join(name);
        let report = ok_json(
            &[
                "ner",
                "train",
                "--train",
                s(&train),
                "--dev",
                s(&dev),
                "--out",
                s(&out),
                "--features",
                "hand,emb",
                "--model",
                s(&model),
                "--max-iter",
                "30",
                "--json",
            ],
            &cache,
        );
        (out, report)
    };
    let (out, first) = fit("a");
    let (other, second) = fit("b");
    assert_eq!(
        first["train"]["dev"], second["train"]["dev"],
        "same data, same model"
    );
    let weights = |d: &Path| std::fs::read(d.join("weights.safetensors")).unwrap();
    assert_eq!(weights(&out), weights(&other));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest["model"]["encoder"]["fingerprint"]["weights_sha256"].is_string());
    assert!(
        weights(&out).len() > 4 * 128 * 7,
        "dense weights are stored"
    );
    let eval = ok_json(
        &[
            "ner",
            "eval",
            "--model",
            s(&out),
            "--data",
            s(&dev),
            "--json",
        ],
        &cache,
    );
    assert_eq!(eval["micro"], first["train"]["dev"]["micro"]);
}

#[test]
fn compare_ranks_the_three_taggers_on_dev_and_saves_the_best() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let train = write(dir.path(), "train.conll", &conll(40, 0));
    let dev = write(dir.path(), "dev.conll", &conll(12, 40));
    let out = dir.path().join("best");
    let report = ok_json(
        &[
            "ner",
            "compare",
            "--train",
            s(&train),
            "--dev",
            s(&dev),
            "--test",
            s(&dev),
            "--out",
            s(&out),
            "--model",
            s(&model),
            "--max-iter",
            "30",
            "--c2",
            "0.1,1",
            "--json",
        ],
        &cache,
    );
    let board = report["leaderboard"].as_array().unwrap();
    let names: Vec<&str> = board
        .iter()
        .map(|r| r["features"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec!["emb", "hand", "hand+emb"]);
    let f1: Vec<f64> = board
        .iter()
        .map(|r| r["dev"]["micro"]["f1"].as_f64().unwrap())
        .collect();
    assert!(
        f1.windows(2).all(|w| w[0] >= w[1]),
        "ranked by dev F1: {f1:?}"
    );
    assert_eq!(report["best"], board[0]["features"]);
    let eval = ok_json(
        &[
            "ner",
            "eval",
            "--model",
            s(&out),
            "--data",
            s(&dev),
            "--json",
        ],
        &cache,
    );
    assert_eq!(
        eval["micro"], report["test"]["micro"],
        "the saved model is the best one"
    );
    assert_eq!(eval["micro"]["f1"], board[0]["dev"]["micro"]["f1"]);
    let args = ["ner", "compare", "--train", s(&train), "--out", s(&out)];
    common::assert_one_line_error(&args, &["needs --dev"]);
}

/// `ner train` (or `compare`) on made-up sentences with the tiny encoder fine-tuned
/// (`extra` adds flags); returns the bundle folder and the JSON report.
fn tuned(dir: &Path, command: &str, extra: &[&str]) -> Option<(PathBuf, serde_json::Value)> {
    let model = tiny_model()?;
    let train = write(dir, "train.conll", &conll(40, 0));
    let dev = write(dir, "dev.conll", &conll(12, 40));
    let out = dir.join(format!("tuned-{command}"));
    let mut args = vec![
        "ner",
        command,
        "--train",
        s(&train),
        "--dev",
        s(&dev),
        "--test",
        s(&dev),
        "--out",
        s(&out),
        "--model",
        s(&model),
        "--lr",
        "1e-3",
        "--epochs",
        "2",
        "--max-iter",
        "20",
        "--json",
    ];
    args.extend_from_slice(extra);
    let report = ok_json(&args, &dir.join("cache"));
    Some((out, report))
}

#[test]
fn a_tagger_fine_tuned_with_a_crf_saves_its_encoder_and_scores_as_it_trained() {
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--features", "emb", "--finetune", "crf"];
    let Some((out, report)) = tuned(dir.path(), "train", &extra) else {
        return;
    };
    let train = &report["train"];
    assert_eq!(train["features"], "ft-crf");
    let evals = train["finetune"]["evals"].as_array().unwrap();
    assert_eq!(evals.len(), 2, "one evaluation an epoch");
    // The F1 seen while fine-tuning is the saved bundle's: one decoding for both.
    assert_eq!(
        train["finetune"]["best"]["dev_macro_f1"].as_f64(),
        train["dev"]["micro"]["f1"].as_f64()
    );
    assert!(
        out.join("encoder/model.safetensors").is_file(),
        "the tuned encoder is inside"
    );
    let dev = dir.path().join("dev.conll");
    let eval = ok_json(
        &[
            "ner",
            "eval",
            "--model",
            s(&out),
            "--data",
            s(&dev),
            "--json",
        ],
        &dir.path().join("cache"),
    );
    assert_eq!(eval["micro"], train["dev"]["micro"]);
    assert_eq!(eval["micro"], report["test"]["micro"]);
}

#[test]
fn compare_with_fine_tuning_ranks_the_tuned_tagger_and_its_fusion_too() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_, report)) = tuned(dir.path(), "compare", &["--finetune", "softmax"]) else {
        return;
    };
    let board = report["leaderboard"].as_array().unwrap();
    let mut names: Vec<&str> = board
        .iter()
        .map(|r| r["features"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["emb", "ft-softmax", "hand", "hand+emb", "hand+ft-softmax"]
    );
    let f1: Vec<f64> = board
        .iter()
        .map(|r| r["dev"]["micro"]["f1"].as_f64().unwrap())
        .collect();
    assert!(
        f1.windows(2).all(|w| w[0] >= w[1]),
        "ranked by dev F1: {f1:?}"
    );
    common::assert_one_line_error(
        &[
            "ner",
            "train",
            "--train",
            "x.conll",
            "--out",
            "o",
            "--features",
            "emb",
            "--finetune",
            "crf",
        ],
        &["needs an encoder", "--dev"],
    );
}

#[test]
fn the_fusion_over_a_tuned_tagger_is_cross_fitted_and_saved_with_its_layer() {
    let dir = tempfile::tempdir().unwrap();
    let extra = [
        "--features",
        "hand,emb",
        "--finetune",
        "crf",
        "--fusion-folds",
        "2",
    ];
    let Some((out, report)) = tuned(dir.path(), "train", &extra) else {
        return;
    };
    assert_eq!(report["train"]["features"], "hand+ft-crf");
    let weights = std::fs::read(out.join("weights.safetensors")).unwrap();
    let header = String::from_utf8_lossy(&weights[..weights.len().min(4096)]).to_string();
    assert!(
        header.contains("emission.weight"),
        "the tuned layer is stored"
    );
    let dev = dir.path().join("dev.conll");
    let eval = ok_json(
        &[
            "ner",
            "eval",
            "--model",
            s(&out),
            "--data",
            s(&dev),
            "--json",
        ],
        &dir.path().join("cache"),
    );
    assert_eq!(eval["micro"], report["train"]["dev"]["micro"]);
    let one_fold = [
        "ner",
        "train",
        "--train",
        "x.conll",
        "--dev",
        "y.conll",
        "--out",
        "o",
        "--features",
        "hand,emb",
        "--finetune",
        "crf",
        "--fusion-folds",
        "1",
    ];
    common::assert_one_line_error(&one_fold, &["at least 2 folds"]);
}
