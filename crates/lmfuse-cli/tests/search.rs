//! `lmfuse index` and `lmfuse search` end to end with the tiny model: build, search each way,
//! score on judgements, add and delete, bad input, a build killed half-way.

mod common;

use common::{fails_with, ok_json, run, s, tiny_model, write_file};
use std::path::{Path, PathBuf};

const CORPUS: &str = r#"{"id": "cats", "title": "Cats", "text": "Cats purr and chase mice around the house."}
{"id": "dogs", "title": "Dogs", "text": "Dogs bark at the postman and fetch sticks in the park."}
{"id": "tea", "title": "Green tea", "text": "Green tea is brewed with water below boiling point."}
{"id": "rust", "title": "Rust", "text": "Rust is a systems programming language with a borrow checker."}
{"id": "zh", "title": "", "text": "我们在北京大学学习自然语言处理。"}
"#;

const QUERIES: &str = r#"{"id": "q1", "text": "why do dogs bark"}
{"id": "q2", "text": "brewing green tea"}
{"id": "q3", "text": "北京大学"}
{"id": "q4", "text": "unjudged query"}
"#;

const QRELS: &str = "query-id\tcorpus-id\tscore\nq1\tdogs\t1\nq2\ttea\t1\nq3\tzh\t1\n";

/// A corpus, queries and judgements in `dir`, and a built index (tiny model) at `dir/idx`.
fn built(dir: &Path, model: &Path) -> PathBuf {
    let corpus = write_file(dir, "corpus.jsonl", CORPUS);
    let idx = dir.join("idx");
    let summary = ok_json(
        &[
            "index",
            "build",
            "--corpus",
            s(&corpus),
            "--out",
            s(&idx),
            "--model",
            s(model),
            "--json",
        ],
        &dir.join("cache"),
    );
    assert_eq!(summary["documents"], 5);
    assert_eq!(summary["generation"], 1);
    idx
}

fn top_ids(out: &std::process::Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["hits"][0]["id"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

#[test]
fn an_index_is_built_searched_and_scored_in_every_mode() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let idx = built(dir.path(), &model);
    let search = |mode: &str| {
        run(
            &[
                "search",
                "--index",
                s(&idx),
                "--mode",
                mode,
                "-q",
                "dogs bark",
                "-q",
                "green tea",
                "-k",
                "3",
            ],
            &cache,
        )
    };
    assert_eq!(top_ids(&search("bm25")), ["dogs", "tea"]);
    for mode in ["dense", "hybrid", "weighted"] {
        assert_eq!(top_ids(&search(mode)).len(), 2, "{mode}");
    }
    let queries = write_file(dir.path(), "queries.jsonl", QUERIES);
    let qrels = write_file(dir.path(), "qrels.tsv", QRELS);
    let judged = |command: &str, extra: &[&str]| {
        let mut args = vec![
            "search",
            command,
            "--index",
            s(&idx),
            "--queries",
            s(&queries),
        ];
        args.extend(["--qrels", s(&qrels), "--json"]);
        args.extend(extra);
        ok_json(&args, &cache)
    };
    let report = judged("eval", &[]);
    assert_eq!(report["queries"], 3, "only judged queries are searched");
    let modes = report["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 4);
    let bm25 = &modes[0];
    assert_eq!(bm25["mode"]["mode"], "bm25");
    assert!(
        (bm25["scores"]["ndcg"].as_f64().unwrap() - 1.0).abs() < 1e-9,
        "{bm25}"
    );
    assert!(bm25["p50_ms"].as_f64().unwrap() >= 0.0);
    assert!(report["encode_ms_per_query"].as_f64().is_some());

    let learned = [
        "search",
        "--index",
        s(&idx),
        "--mode",
        "learned",
        "-q",
        "green tea",
    ];
    let before = run(&learned, &cache);
    assert!(String::from_utf8_lossy(&before.stderr).contains("train-ranker"));
    let trained = judged("train-ranker", &["--folds", "2"]);
    assert_eq!(trained["queries"], 3);
    assert_eq!(trained["tried"].as_array().unwrap().len(), 4);
    assert_eq!(top_ids(&run(&learned, &cache)), ["tea"]);
    let with_ranker = judged("eval", &[]);
    assert_eq!(
        with_ranker["modes"].as_array().unwrap().len(),
        5,
        "learned joins the default modes"
    );
}

#[test]
fn documents_are_added_and_deleted_as_new_generations() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let idx = built(dir.path(), &model);
    let more = write_file(
        dir.path(),
        "more.csv",
        "id,title,text\ncocoa,Cocoa,Hot cocoa is made from cacao beans and milk.\n",
    );
    let added = ok_json(
        &[
            "index",
            "add",
            "--index",
            s(&idx),
            "--corpus",
            s(&more),
            "--json",
        ],
        &cache,
    );
    assert_eq!(
        (added["generation"].as_u64(), added["documents"].as_u64()),
        (Some(2), Some(6))
    );
    let cacao = || {
        run(
            &[
                "search",
                "--index",
                s(&idx),
                "--mode",
                "bm25",
                "-q",
                "cacao beans",
            ],
            &cache,
        )
    };
    assert_eq!(top_ids(&cacao()), ["cocoa"]);
    let deleted = ok_json(
        &[
            "index",
            "delete",
            "--index",
            s(&idx),
            "--ids",
            "cocoa,dogs",
            "--json",
        ],
        &cache,
    );
    assert_eq!(deleted["documents"], 4);
    assert_eq!(top_ids(&cacao()), [""], "deleted documents are gone");
    let again = run(
        &["index", "add", "--index", s(&idx), "--corpus", s(&more)],
        &cache,
    );
    assert!(again.status.success());
    let dup = run(
        &["index", "add", "--index", s(&idx), "--corpus", s(&more)],
        &cache,
    );
    let err = String::from_utf8_lossy(&dup.stderr);
    assert!(
        !dup.status.success() && err.contains("\"cocoa\" is already in the index"),
        "{err}"
    );
    let info = run(&["index", "info", "--index", s(&idx)], &cache);
    let manifest: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(
        (
            manifest["generation"].as_u64(),
            manifest["documents"].as_u64()
        ),
        (Some(4), Some(5))
    );
}

#[test]
fn bad_input_is_refused_with_the_file_and_line() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let idx = built(dir.path(), &model);
    let build = |corpus: &Path, needles: &[&str]| {
        let args = [
            "index",
            "build",
            "--corpus",
            s(corpus),
            "--out",
            s(&idx),
            "--bm25-only",
        ];
        fails_with(&args, &cache, needles)
    };
    let empty = write_file(dir.path(), "empty.jsonl", "");
    build(&empty, &["empty.jsonl: no documents"]);
    let dup = write_file(
        dir.path(),
        "dup.jsonl",
        "{\"id\": \"a\", \"title\": \"\", \"text\": \"x\"}\n{\"id\": \"a\", \"title\": \"\", \"text\": \"y\"}\n",
    );
    build(&dup, &["dup.jsonl:2", "duplicate id \"a\""]);
    let queries = write_file(dir.path(), "queries.jsonl", QUERIES);
    let qrels = write_file(dir.path(), "bad.tsv", "q1\tdogs\t1\nq2\tnowhere\t1\n");
    fails_with(
        &[
            "search",
            "eval",
            "--index",
            s(&idx),
            "--queries",
            s(&queries),
            "--qrels",
            s(&qrels),
        ],
        &cache,
        &["bad.tsv:2", "\"nowhere\" is not in the corpus"],
    );
    let long = "word ".repeat(1000);
    fails_with(
        &["search", "--index", s(&idx), "--mode", "bm25", "-q", &long],
        &cache,
        &["query 1 has 5000 characters"],
    );
    // The index is intact after all the refused builds.
    let out = run(
        &[
            "search",
            "--index",
            s(&idx),
            "--mode",
            "bm25",
            "-q",
            "green tea",
        ],
        &cache,
    );
    assert_eq!(top_ids(&out), ["tea"]);
    let gen = idx.join("gen-000001").join("documents.jsonl");
    std::fs::write(&gen, "{\"key\": 0,").unwrap();
    fails_with(
        &["search", "--index", s(&idx), "-q", "tea"],
        &cache,
        &["documents.jsonl", "damaged"],
    );
    let bm25_only = dir.path().join("bm25");
    let corpus = dir.path().join("corpus.jsonl");
    assert!(run(
        &[
            "index",
            "build",
            "--corpus",
            s(&corpus),
            "--out",
            s(&bm25_only),
            "--bm25-only"
        ],
        &cache
    )
    .status
    .success());
    fails_with(
        &[
            "search",
            "--index",
            s(&bm25_only),
            "--mode",
            "dense",
            "-q",
            "tea",
        ],
        &cache,
        &["no vectors", "--mode bm25"],
    );
}

#[test]
fn a_build_killed_half_way_leaves_the_old_index_readable() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let idx = built(dir.path(), &model);
    let mut big = String::new();
    for i in 0..100_000 {
        big.push_str(&format!(
            "{{\"id\": \"d{i}\", \"title\": \"T{i}\", \"text\": \"document number {i} about topic {} with some words\"}}\n",
            i % 97
        ));
    }
    let corpus = write_file(dir.path(), "big.jsonl", &big);
    let mut child = common::lmfuse(
        &[
            "index",
            "build",
            "--corpus",
            s(&corpus),
            "--out",
            s(&idx),
            "--model",
            s(&model),
            "--no-cache",
        ],
        &cache,
    )
    .spawn()
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the build ran to its end before the kill"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let out = run(
        &[
            "search",
            "--index",
            s(&idx),
            "--mode",
            "hybrid",
            "-q",
            "green tea",
        ],
        &cache,
    );
    assert_eq!(top_ids(&out).len(), 1);
    let info = run(&["index", "info", "--index", s(&idx)], &cache);
    let manifest: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(
        (
            manifest["generation"].as_u64(),
            manifest["documents"].as_u64()
        ),
        (Some(1), Some(5))
    );
}

#[test]
fn an_index_with_an_hnsw_graph_answers_as_the_exact_one() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let exact = built(dir.path(), &model);
    let approx = dir.path().join("approx");
    let corpus = dir.path().join("corpus.jsonl");
    let build = |extra: &[&str]| {
        let mut args = vec![
            "index",
            "build",
            "--corpus",
            s(&corpus),
            "--out",
            s(&approx),
        ];
        args.extend(["--model", s(&model), "--ann", "on"]);
        args.extend(extra);
        run(&args, &cache)
    };
    let built_approx = build(&["--json"]);
    assert!(built_approx.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&built_approx.stdout).unwrap();
    assert_eq!(summary["approximate"], true);
    let info = ok_json(&["index", "info", "--index", s(&approx)], &cache);
    assert!(info["ann"]["graph_sha256"].is_string(), "{info}");
    let dense = |idx: &Path| {
        let args = [
            "search",
            "--index",
            s(idx),
            "--mode",
            "dense",
            "-q",
            "dogs bark",
            "-q",
            "green tea",
        ];
        top_ids(&run(&args, &cache))
    };
    assert_eq!(dense(&approx), dense(&exact));
    let out = build(&["--ann-m", "2"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("HNSW"));
}

/// The tiny cross-encoder of lmfuse-encoder's fixtures (made by
/// scripts/make-cross-encoder-fixture.py).
fn cross_fixture() -> PathBuf {
    common::workspace().join("crates/lmfuse-encoder/tests/fixtures/cross-tiny")
}

#[test]
fn a_cross_encoder_reranks_the_best_documents_of_any_mode() {
    let Some(model) = tiny_model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let idx = built(dir.path(), &model);
    let cross = cross_fixture();
    let search = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec![
            "search",
            "--index",
            s(&idx),
            "--mode",
            "bm25",
            "-q",
            "the dogs and the cats",
        ];
        args.extend(extra);
        let out = run(&args, &cache);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        line["hits"].as_array().unwrap().clone()
    };
    let plain = search(&["-k", "5"]);
    let reranked = search(&["-k", "2", "--rerank", s(&cross), "--rerank-depth", "5"]);
    assert_eq!(
        reranked.len(),
        2,
        "-k results after rescoring --rerank-depth"
    );
    // The scores are the cross-encoder's on "title text", and the best of all five come first.
    let files = lmfuse_encoder::ModelFiles::from_dir(&cross, "cross").unwrap();
    let encoder = lmfuse_encoder::CrossEncoder::load(&files, None).unwrap();
    let corpus: Vec<serde_json::Value> = CORPUS
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let text_of = |id: &str| {
        let d = corpus.iter().find(|d| d["id"] == id).unwrap();
        let (title, text) = (d["title"].as_str().unwrap(), d["text"].as_str().unwrap());
        if title.is_empty() {
            text.to_string()
        } else {
            format!("{title} {text}")
        }
    };
    let mut want: Vec<(String, f32)> = plain
        .iter()
        .map(|h| {
            let id = h["id"].as_str().unwrap();
            let t = text_of(id);
            (
                id.to_string(),
                encoder
                    .score(&[("the dogs and the cats", t.as_str())])
                    .unwrap()[0],
            )
        })
        .collect();
    want.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (got, (id, score)) in reranked.iter().zip(&want) {
        assert_eq!(got["id"], id.as_str());
        assert!(
            (got["score"].as_f64().unwrap() as f32 - score).abs() < 1e-4,
            "{got}"
        );
    }
    // search eval reports the reranker; a model without a classifier is refused.
    let queries = write_file(dir.path(), "queries.jsonl", QUERIES);
    let qrels = write_file(dir.path(), "qrels.tsv", QRELS);
    let eval = [
        "search",
        "eval",
        "--index",
        s(&idx),
        "--queries",
        s(&queries),
        "--qrels",
        s(&qrels),
        "--modes",
        "bm25",
        "--rerank",
        s(&cross),
        "--json",
    ];
    let report = ok_json(&eval, &cache);
    assert_eq!(report["reranker"], s(&cross));
    fails_with(
        &[
            "search",
            "--index",
            s(&idx),
            "-q",
            "tea",
            "--rerank",
            s(&model),
        ],
        &cache,
        &["cross-encoder", "classifier"],
    );
}
