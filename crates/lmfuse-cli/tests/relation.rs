//! `lmfuse relation`: train (frozen + logistic regression, fine-tuned), eval and predict end
//! to end on made-up directed relations, and bad input.

mod common;

use common::{assert_one_line_error, ok_json, run, s, tiny_model, write_file as write};
use std::path::{Path, PathBuf};

const NAMES: [&str; 6] = ["alice", "bob", "carol", "dave", "emma", "frank"];

/// `n` JSONL examples from `offset`: "<a> built <b>" is Product-Producer, "<a> owns <b>"
/// Member-Collection, direction from which entity is e1, "and" is Other; every third line
/// gives character spans instead of markers.
fn examples(n: usize, offset: usize) -> String {
    let mut out = String::new();
    for i in offset..offset + n {
        let (a, b) = (NAMES[i % 6], NAMES[(i / 6 + 1 + i) % 6]);
        let verb = ["built", "owns", "and"][(i / 2) % 3];
        let e1_first = i % 2 == 0;
        let relation = match verb {
            "built" => "Product-Producer",
            "owns" => "Member-Collection",
            _ => "Other",
        };
        let label = match (relation, e1_first) {
            ("Other", _) => "Other".to_string(),
            (r, true) => format!("{r}(e1,e2)"),
            (r, false) => format!("{r}(e2,e1)"),
        };
        let line = if i % 3 == 0 {
            let text = format!("today {a} {verb} {b} here");
            let ra = (6, 6 + a.len());
            let start_b = 6 + a.len() + 1 + verb.len() + 1;
            let rb = (start_b, start_b + b.len());
            let (e1, e2) = if e1_first { (ra, rb) } else { (rb, ra) };
            serde_json::json!({"text": text, "e1": {"start": e1.0, "end": e1.1},
                "e2": {"start": e2.0, "end": e2.1}, "label": label})
        } else {
            let (ta, tb) = if e1_first { ("e1", "e2") } else { ("e2", "e1") };
            let text = format!("today <{ta}>{a}</{ta}> {verb} <{tb}>{b}</{tb}> here");
            serde_json::json!({"text": text, "label": label})
        };
        out.push_str(&format!("{line}\n"));
    }
    out
}

/// `relation train` on 120/40 examples with `extra`; returns (bundle, dev file, report).
fn trained(dir: &Path, extra: &[&str]) -> Option<(PathBuf, PathBuf, serde_json::Value)> {
    let model = tiny_model()?;
    let train = write(dir, "train.jsonl", &examples(120, 0));
    let dev = write(dir, "dev.jsonl", &examples(40, 500));
    let out = dir.join("bundle");
    let mut args = vec![
        "relation",
        "train",
        "--train",
        s(&train),
        "--dev",
        s(&dev),
        "--out",
        s(&out),
        "--model",
        s(&model),
        "--json",
    ];
    args.extend_from_slice(extra);
    let report = ok_json(&args, &dir.join("cache"));
    Some((out, dev, report))
}

fn eval(bundle: &Path, data: &Path, cache: &Path) -> serde_json::Value {
    ok_json(
        &[
            "relation",
            "eval",
            "--model",
            s(bundle),
            "--data",
            s(data),
            "--json",
        ],
        cache,
    )
}

#[test]
fn frozen_states_train_eval_and_predict_agree() {
    let dir = tempfile::tempdir().unwrap();
    let Some((bundle, dev, report)) = trained(dir.path(), &["--c", "0.1,1"]) else {
        return;
    };
    let train = &report["train"];
    assert_eq!(train["kind"], "frozen-logreg");
    assert_eq!(train["dev_f1_by_c"].as_array().unwrap().len(), 2);
    let dev_f1 = train["dev"]["official_macro_f1"].as_f64().unwrap();
    assert!(dev_f1 > 0.5, "dev macro-F1 {dev_f1}");
    let scored = eval(&bundle, &dev, &dir.path().join("cache"));
    assert!((scored["official_macro_f1"].as_f64().unwrap() - dev_f1).abs() < 1e-9);
    let out = dir.path().join("pred.jsonl");
    let done = run(
        &[
            "relation",
            "predict",
            "--model",
            s(&bundle),
            "-i",
            s(&dev),
            "-o",
            s(&out),
        ],
        &dir.path().join("cache"),
    );
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 40);
    let truth: Vec<String> = std::fs::read_to_string(&dev)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["label"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let right = lines
        .iter()
        .zip(&truth)
        .filter(|(p, t)| p["label"] == t.as_str())
        .count();
    let accuracy = scored["accuracy"].as_f64().unwrap();
    assert!((right as f64 / 40.0 - accuracy).abs() < 1e-9);
    assert!(lines.iter().all(|l| l["score"].as_f64().unwrap() > 0.0));
    // A card whose marker tokens leave the vocabulary is refused, not read out of bounds.
    let manifest = bundle.join("manifest.json");
    let mut card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let good = card.clone();
    card["model"]["markers"][2] = 99_999_999.into();
    std::fs::write(&manifest, serde_json::to_vec(&card).unwrap()).unwrap();
    let args = ["relation", "eval", "--model", s(&bundle), "--data", s(&dev)];
    assert_one_line_error(&args, &["marker token 99999999", "vocabulary"]);
    std::fs::write(&manifest, serde_json::to_vec(&good).unwrap()).unwrap();
    // Markers removed, the entities as character spans of the text.
    let first = &lines[1];
    let text: Vec<char> = first["text"].as_str().unwrap().chars().collect();
    let span = |k: &str| -> String {
        let (a, b) = (
            first[k]["start"].as_u64().unwrap(),
            first[k]["end"].as_u64().unwrap(),
        );
        text[a as usize..b as usize].iter().collect()
    };
    assert!(!first["text"].as_str().unwrap().contains("<e1>"));
    assert!(NAMES.contains(&span("e1").as_str()) && NAMES.contains(&span("e2").as_str()));
}

#[test]
fn the_fine_tuned_model_reloads_to_its_training_time_dev_score() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let extra = [
        "--finetune",
        "--epochs",
        "2",
        "--lr",
        "1e-3",
        "--head-lr",
        "1e-2",
        "--batch-size",
        "8",
        "--run-dir",
        s(&run_dir),
    ];
    let Some((bundle, dev, report)) = trained(dir.path(), &extra) else {
        return;
    };
    assert!(run_dir.join("checkpoint/state.json").is_file());
    // Resuming the finished run restores its best weights: the same model again.
    let again = dir.path().join("again");
    std::fs::create_dir(&again).unwrap();
    let mut resume = extra.to_vec();
    resume.push("--resume");
    let (bundle2, _, report2) = trained(&again, &resume).unwrap();
    assert_eq!(report2["train"]["dev"], report["train"]["dev"]);
    assert_eq!(
        std::fs::read(bundle.join("weights.safetensors")).unwrap(),
        std::fs::read(bundle2.join("weights.safetensors")).unwrap()
    );
    let train = &report["train"];
    assert_eq!(train["kind"], "finetuned");
    let best = train["finetune"]["best"]["dev_macro_f1"].as_f64().unwrap();
    let dev_f1 = train["dev"]["official_macro_f1"].as_f64().unwrap();
    assert!(
        (best - dev_f1).abs() < 1e-9,
        "fine-tuning saw {best}, the saved model {dev_f1}"
    );
    let scored = eval(&bundle, &dev, &dir.path().join("cache"));
    assert!((scored["official_macro_f1"].as_f64().unwrap() - dev_f1).abs() < 1e-9);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("encoder/config.json")).unwrap())
            .unwrap();
    let base: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tiny_model().unwrap().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        config["vocab_size"].as_u64().unwrap(),
        base["vocab_size"].as_u64().unwrap() + 4,
        "four marker tokens added"
    );
}

#[test]
fn bad_relation_input_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let Some(model) = tiny_model() else { return };
    let train = write(
        dir.path(),
        "train.jsonl",
        &(examples(10, 0) + "{\"text\": \"<e1>a</e1> b c\", \"label\": \"Other\"}\n"),
    );
    let out = dir.path().join("b");
    let args = [
        "relation",
        "train",
        "--train",
        s(&train),
        "--out",
        s(&out),
        "--model",
        s(&model),
    ];
    assert_one_line_error(&args, &["train.jsonl:11", "marker <e2> is missing"]);
    let train = write(dir.path(), "train2.jsonl", &examples(30, 0));
    let dev = write(
        dir.path(),
        "dev.jsonl",
        &(examples(3, 0)
            + "{\"text\": \"<e1>a</e1> b <e2>c</e2>\", \"label\": \"Cause-Effect(e1,e2)\"}\n"),
    );
    let args = [
        "relation",
        "train",
        "--train",
        s(&train),
        "--dev",
        s(&dev),
        "--out",
        s(&out),
        "--model",
        s(&model),
    ];
    assert_one_line_error(
        &args,
        &[
            "dev.jsonl:4",
            "Cause-Effect(e1,e2)",
            "not among the training labels",
        ],
    );
    assert!(!out.exists(), "nothing saved");
}

/// CoNLL sentences "today <name> <verb> <name> here" with the names tagged PER.
fn names_conll(n: usize, offset: usize) -> String {
    let mut out = String::new();
    for i in offset..offset + n {
        let (a, b) = (NAMES[i % 6], NAMES[(i / 6 + 1 + i) % 6]);
        let verb = ["built", "owns", "and"][(i / 2) % 3];
        for (w, t) in [
            ("today", "O"),
            (a, "B-PER"),
            (verb, "O"),
            (b, "B-PER"),
            ("here", "O"),
        ] {
            out.push_str(&format!("{w}\t{t}\n"));
        }
        out.push('\n');
    }
    out
}

#[test]
fn extract_chains_the_tagger_and_the_relation_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let Some((bundle, _, _)) = trained(dir.path(), &["--c", "1"]) else {
        return;
    };
    let cache = dir.path().join("cache");
    let conll = write(dir.path(), "names.conll", &names_conll(60, 0));
    let ner = dir.path().join("ner");
    let done = run(
        &["ner", "train", "--train", s(&conll), "--out", s(&ner)],
        &cache,
    );
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let texts =
        "today alice built bob here\ntoday carol owns dave here\ntoday emma and frank here\n";
    let input = write(dir.path(), "texts.txt", texts);
    let out = dir.path().join("found.jsonl");
    let done = run(
        &[
            "extract",
            "--ner",
            s(&ner),
            "--relation",
            s(&bundle),
            "-i",
            s(&input),
            "-o",
            s(&out),
        ],
        &cache,
    );
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        let entities = line["entities"].as_array().unwrap();
        assert_eq!(entities.len(), 2, "{line}");
        for r in line["relations"].as_array().unwrap() {
            assert_eq!((r["e1"].as_u64(), r["e2"].as_u64()), (Some(0), Some(1)));
            assert_ne!(r["label"], "Other", "Other pairs are left out");
        }
    }
    assert_eq!(lines[0]["entities"][1]["text"], "bob");
    let label = lines[0]["relations"][0]["label"].as_str().unwrap_or("none");
    assert_eq!(label, "Product-Producer(e1,e2)", "{}", lines[0]);
}
