//! `lmfuse faq` end to end with the tiny model: build with a dev set, ask (alone and in a
//! conversation), eval in every mode, a rebuild over the engine, bad input.

mod common;

use common::{fails_with, ok_json, run, s, tiny_model, write_file};
use std::path::Path;

const TABLE: &str = "id,question,answer,category,para
permit,How do I apply for a building permit?,Send the drawings to the municipal building committee.,permits,Where do I send my permit application? | tell me about that
permit-time,How long does a building permit take?,Ten weeks by law and up to twenty for complex cases.,permits,When will my permit be decided? | how long
roof,When should a roof be replaced?,Tiles last forty years and felt roofs about twenty.,roofs,How old can my roof get? | what about it
roof-cost,What does a new roof cost?,About eight hundred crowns per square metre with tiles.,roofs,Price of roof renovation? | and the price
tax,Can I deduct renovation labour from tax?,The ROT deduction covers thirty percent of labour costs.,tax,Is renovation work tax deductible? | deduction
tax-limit,How large is the ROT deduction at most?,At most fifty thousand crowns per person and year.,tax,Maximum ROT amount per year? | limit
heat,Which heat pump suits a villa?,A ground source heat pump suits villas with room for a borehole.,heating,Best heating for a detached house? | which one
noise,What can I do about a noisy neighbour?,Talk to them first and then to the landlord or the municipality.,neighbours,My neighbour makes noise at night | help
";

const DEV: &str = r#"{"text": "Where do I apply for the permit to build?", "answer_id": "permit"}
{"text": "How many weeks until the permit decision?", "answer_id": "permit-time"}
{"text": "Cost of tiles on a new roof?", "answer_id": "roof-cost"}
{"text": "What is the largest ROT deduction?", "answer_id": "tax-limit"}
{"text": "Heat pump for a house?", "answer_id": "heat"}
{"text": "What is the capital of France?", "answer_id": ""}
{"text": "Recommend a good pizza place", "answer_id": ""}
"#;

fn build(dir: &Path, model: &Path, out: &Path) -> serde_json::Value {
    let table = write_file(dir, "table.csv", TABLE);
    let dev = write_file(dir, "dev.jsonl", DEV);
    let args = [
        "faq",
        "build",
        "--table",
        s(&table),
        "--out",
        s(out),
        "--category-col",
        "category",
        "--paraphrases-col",
        "para",
        "--dev",
        s(&dev),
        "--model",
        s(model),
        "--json",
    ];
    ok_json(&args, &dir.join("cache"))
}

#[test]
fn an_engine_is_built_asked_and_scored() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let engine = dir.path().join("engine");
    let report = build(dir.path(), &model, &engine);
    assert_eq!(report["entries"], 8);
    assert_eq!(report["questions"], 24);
    assert_eq!(report["categories"], 5);
    assert_eq!(report["chosen_on"], "dev");
    assert_eq!(report["dev"]["modes"].as_array().unwrap().len(), 3);
    let ask = [
        "faq",
        "ask",
        "--faq",
        s(&engine),
        "-k",
        "2",
        "--conversation",
        "-q",
        "How do I apply for a building permit?",
        "-q",
        "and how long does it take",
    ];
    let out = run(&ask, &cache);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["answers"].as_array().unwrap().len(), 2);
    assert_eq!(
        lines[0]["answers"][0]["id"], "permit",
        "an exact table question"
    );
    assert_eq!(
        lines[0]["context_used"], false,
        "the first turn has no context"
    );
    let confidence = lines[0]["confidence"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&confidence));
    assert!(lines[0]["intent"]["category"].is_string());
    assert!(lines[1]["context_used"].is_boolean() && lines[1]["hand_over"].is_boolean());
    let dev = dir.path().join("dev.jsonl");
    let evaluate = || {
        let args = [
            "faq",
            "eval",
            "--faq",
            s(&engine),
            "--questions",
            s(&dev),
            "--json",
        ];
        ok_json(&args, &cache)
    };
    let eval = evaluate();
    assert_eq!(eval["in_scope"], 5);
    assert_eq!(eval["out_of_scope"], 2);
    let dev_report = &report["dev"]["modes"];
    for (i, m) in eval["modes"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            m["top1_accuracy"], dev_report[i]["top1_accuracy"],
            "the saved engine answers as built"
        );
        assert_eq!(m["coverage"], dev_report[i]["coverage"]);
    }
    // A half-written generation (a killed build) is ignored, then cleared by the next build,
    // which replaces the generation whole.
    std::fs::create_dir_all(engine.join("gen-000009/answers")).unwrap();
    let again = evaluate();
    assert_eq!(
        again["modes"][0]["top1_accuracy"],
        eval["modes"][0]["top1_accuracy"]
    );
    build(dir.path(), &model, &engine);
    let gens: Vec<String> = std::fs::read_dir(&engine)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("gen-"))
        .collect();
    assert_eq!(gens, ["gen-000002"]);
}

#[test]
fn bad_input_is_refused_with_the_file_and_line() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let fails = |args: &[&str], needle: &str| fails_with(args, &cache, &[needle]);
    let dup = write_file(
        dir.path(),
        "dup.csv",
        "id,question,answer\na,q1,x\nb,q2,y\na,q3,z\n",
    );
    let out = dir.path().join("e");
    fails(
        &[
            "faq",
            "build",
            "--table",
            s(&dup),
            "--out",
            s(&out),
            "--model",
            s(&model),
        ],
        "dup.csv:4: duplicate id \"a\"",
    );
    let small = write_file(
        dir.path(),
        "small.csv",
        "id,question,answer\na,q1,x\nb,q2,y\n",
    );
    fails(
        &[
            "faq",
            "build",
            "--table",
            s(&small),
            "--out",
            s(&out),
            "--model",
            s(&model),
        ],
        "at least 2 entries and 10 questions",
    );
    let table = write_file(dir.path(), "table.csv", TABLE);
    let dev = write_file(
        dir.path(),
        "dev.csv",
        "text,answer_id\nfine,permit\nlost,nowhere\n",
    );
    let args = [
        "faq",
        "build",
        "--table",
        s(&table),
        "--paraphrases-col",
        "para",
        "--dev",
        s(&dev),
        "--out",
        s(&out),
        "--model",
        s(&model),
    ];
    fails(&args, "dev.csv:3: answer_id \"nowhere\" is no entry");
    fails(
        &["faq", "ask", "--faq", s(&out), "-q", "hello"],
        "not an answer engine folder",
    );
    let engine = dir.path().join("engine");
    build(dir.path(), &model, &engine);
    let long = "word ".repeat(1000);
    fails(
        &["faq", "ask", "--faq", s(&engine), "-q", &long],
        "over the limit",
    );
    fails(&["faq", "ask", "--faq", s(&engine), "-q", "  "], "is empty");
}
