//! `lmfuse train --unlabeled`: self-training adds class-balanced pseudo-labels round after
//! round, is seeded, and refuses an unlabelled file that has labels.

mod common;

use common::{fails_with, ok_json, s, tiny_model, workspace, write_file};
use serde_json::Value;
use std::path::Path;

/// 8 labelled reviews per class, 8 per class for dev, the test set, and the other reviews'
/// texts as the unlabelled pool.
fn files(dir: &Path) -> [String; 4] {
    let reviews = std::fs::read_to_string(workspace().join("examples/reviews.jsonl")).unwrap();
    let rows: Vec<Value> = reviews
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (mut train, mut dev, mut pool, mut test) = (vec![], vec![], vec![], vec![]);
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for (i, r) in rows.iter().enumerate() {
        let n = seen.entry(r["label"].to_string()).or_default();
        *n += 1;
        match (*n, i >= 200) {
            (_, true) => test.push(r.to_string()),
            (1..=8, _) => train.push(r.to_string()),
            (9..=16, _) => dev.push(r.to_string()),
            _ => pool.push(serde_json::json!({"text": r["text"]}).to_string()),
        }
    }
    let write = |name: &str, lines: Vec<String>| {
        s(&write_file(dir, name, &(lines.join("\n") + "\n"))).to_string()
    };
    [
        write("train.jsonl", train),
        write("dev.jsonl", dev),
        write("pool.jsonl", pool),
        write("test.jsonl", test),
    ]
}

/// `lmfuse train` on `[train, dev, test]` saving to `out`.
fn train_args(model: &Path, [train, dev, test]: [&str; 3], out: &Path) -> Vec<String> {
    let args = [
        "train",
        "--model",
        s(model),
        "--train",
        train,
        "--dev",
        dev,
        "--test",
        test,
        "--out",
        s(out),
    ];
    args.map(String::from).to_vec()
}

#[test]
fn self_training_adds_balanced_pseudo_labels_and_is_seeded() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let [train, dev, pool, test] = files(dir.path());
    let out = dir.path().join("bundle");
    let mut args = train_args(&model, [&train, &dev, &test], &out);
    args.extend(["--unlabeled", &pool, "--json"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = ok_json(&args, &cache);
    let st = &first["self_training"];
    let rounds = st["rounds"].as_array().unwrap();
    assert!(rounds.len() >= 2, "{st:#}");
    for (r, round) in rounds.iter().enumerate().skip(1) {
        let added: Vec<u64> = round["added"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(
            added,
            [8, 8],
            "round {r}: each class its share of 16: {round}"
        );
        assert_eq!(round["pseudo_labelled"], 16 * r as u64);
    }
    assert!(st["kept"].as_u64().unwrap() < rounds.len() as u64);
    assert!(out.join("manifest.json").is_file());
    let again = ok_json(&args, &cache);
    assert_eq!(
        again["self_training"], first["self_training"],
        "same data, same rounds"
    );
    assert_eq!(again["test"], first["test"]);
}

#[test]
fn an_unlabelled_file_with_labels_or_bad_settings_is_refused() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let [train, dev, _, test] = files(dir.path());
    let out = dir.path().join("bundle");
    let base = train_args(&model, [&train, &dev, &test], &out);
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .map(String::from)
            .collect()
    };
    let run = |extra: &[&str], needles: &[&str]| {
        let args = with(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(&args, &cache, needles);
    };
    run(
        &["--unlabeled", &dev],
        &["dev.jsonl", "every record has a label"],
    );
    let empty = write_file(dir.path(), "empty.txt", "");
    run(&["--unlabeled", s(&empty)], &["empty.txt"]);
    let pool = write_file(dir.path(), "pool.txt", "one text\nanother\n");
    run(
        &["--unlabeled", s(&pool), "--pseudo-threshold", "1.5"],
        &["--pseudo-threshold", "1.5"],
    );
    run(
        &["--unlabeled", s(&pool), "--self-train-rounds", "0"],
        &["--self-train-rounds"],
    );
}
