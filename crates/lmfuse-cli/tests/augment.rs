//! `lmfuse train --augment`: seeded copies of the training rows only, synonyms from a
//! thesaurus file, and bad settings or files named.

mod common;

use common::{fails_with, ok_json, s, tiny_model, workspace, write_file};
use serde_json::Value;

/// `lmfuse train` on the shipped reviews with the tiny model, saving into `dir`.
fn train_args(dir: &std::path::Path) -> Vec<String> {
    let model = tiny_model().expect("checked by the caller");
    let reviews = workspace().join("examples/reviews.jsonl");
    let out = dir.join("bundle");
    [
        "train",
        "--model",
        s(&model),
        "--train",
        s(&reviews),
        "--out",
        s(&out),
    ]
    .map(String::from)
    .to_vec()
}

fn train(extra: &[&str], cache: &std::path::Path) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let mut args = train_args(dir.path());
    args.extend(extra.iter().chain(&["--json"]).map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok_json(&args, cache)
}

#[test]
fn copies_of_the_training_rows_are_added_and_seeded() {
    if tiny_model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let plain = train(&[], &cache);
    let spec = ["--augment", "copies=2,rs=0.2,rd=0.2"];
    let first = train(&spec, &cache);
    let a = &first["augmentation"];
    let texts = a["texts"].as_u64().unwrap();
    assert_eq!(texts, plain["data"]["train"].as_u64().unwrap());
    let added = a["added"].as_u64().unwrap();
    assert!(added > texts && added <= 2 * texts, "{a}");
    assert_eq!(
        a["by_op"]["swap"].as_u64().unwrap() + a["by_op"]["delete"].as_u64().unwrap(),
        added
    );
    assert_eq!(
        first["data"], plain["data"],
        "dev and test are not augmented"
    );
    let again = train(&spec, &cache);
    assert_eq!(
        (&again["augmentation"], &again["test"]),
        (a, &first["test"])
    );
    let other = train(&[&spec[..], &["--seed", "5"]].concat(), &cache);
    assert_ne!(other["augmentation"]["added"], Value::Null);
}

#[test]
fn synonyms_come_from_the_thesaurus_and_bad_ones_are_named() {
    if tiny_model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let thesaurus = write_file(
        dir.path(),
        "th.dat",
        "UTF-8\nnever|1\n(adv)|ne'er|at no time\nexpectation|1\n(noun)|outlook|prospect\n",
    );
    let with = train(
        &["--augment", "copies=1,sr=0.3", "--thesaurus", s(&thesaurus)],
        &cache,
    );
    assert!(
        with["augmentation"]["by_op"]["synonym"].as_u64().unwrap() > 0,
        "{with}"
    );
    let base = train_args(dir.path());
    let base: Vec<&str> = base.iter().map(String::as_str).collect();
    let not_one = write_file(dir.path(), "notes.txt", "shopping list\nmilk\n");
    for (extra, needles) in [
        (vec!["--augment", "copies=1,sr=0.3"], vec!["--thesaurus"]),
        (
            vec!["--augment", "sr=0.3", "--thesaurus", s(&not_one)],
            vec!["notes.txt:1", "neither a MyThes"],
        ),
        (vec!["--augment", "rs=2"], vec!["rs must be in [0, 1]"]),
        (
            vec!["--augment", "rs=0.1", "--thesaurus", "missing.dat"],
            vec!["missing.dat"],
        ),
    ] {
        fails_with(&[&base[..], &extra].concat(), &cache, &needles);
    }
}

#[test]
fn a_command_paraphrases_and_the_filter_drops_flipped_copies() {
    if tiny_model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // "Back-translation" by sed: every text gets a paraphrase.
    let para = train(&["--augment-cmd", "sed 's/^/Honestly, /'"], &cache);
    let a = &para["augmentation"];
    assert_eq!(a["by_op"]["paraphrase"], a["texts"], "{a}");
    // A command that turns every text into the same praise: the classifier of the rows
    // alone calls the negative ones' copies positive, and the filter drops them.
    let praise = [
        "--augment-cmd",
        "sed 's/.*/Wonderful, I loved it, thank you!/'",
    ];
    let unfiltered = train(&praise, &cache);
    assert_eq!(
        unfiltered["augmentation"]["by_op"]["paraphrase"],
        a["texts"]
    );
    let filtered = train(
        &[&praise[..], &["--augment-filter", "0.5"]].concat(),
        &cache,
    );
    let f = &filtered["augmentation"];
    let dropped = f["filtered"].as_u64().unwrap();
    assert!(dropped > 0, "{f}");
    assert_eq!(
        f["added"].as_u64().unwrap() + dropped,
        a["texts"].as_u64().unwrap()
    );
    let base = train_args(dir.path());
    let base: Vec<&str> = base.iter().map(String::as_str).collect();
    for (extra, needles) in [
        (
            vec!["--augment-cmd", "head -n 2"],
            vec!["head -n 2", "answered 2 lines"],
        ),
        (
            vec!["--augment-cmd", "exit 4"],
            vec!["exit 4", "exit status: 4"],
        ),
        (
            vec!["--augment-filter", "0.9"],
            vec!["need --augment or --augment-cmd"],
        ),
    ] {
        fails_with(&[&base[..], &extra].concat(), &cache, &needles);
    }
}
