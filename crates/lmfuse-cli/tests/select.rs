//! `lmfuse select`: the texts to label next chosen with a bundle, and `--simulate`'s learning
//! curves (seeded, budgets checked, bad input named).

mod common;

use common::{fails_with, lmfuse, run, s, tiny_model, workspace, write_file};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The shipped reviews split into a pool (first 200) and a test set (last 100).
fn pool_and_test(dir: &Path) -> (String, String) {
    let reviews = std::fs::read_to_string(workspace().join("examples/reviews.jsonl")).unwrap();
    let lines: Vec<&str> = reviews.lines().collect();
    let pool = write_file(dir, "pool.jsonl", &(lines[..200].join("\n") + "\n"));
    let test = write_file(dir, "test.jsonl", &(lines[200..].join("\n") + "\n"));
    (s(&pool).to_string(), s(&test).to_string())
}

/// The tiny model, a scratch folder, its cache, and the pool and test files in it; `None`
/// (a skip) without the model.
fn setup() -> Option<(PathBuf, tempfile::TempDir, PathBuf, String, String)> {
    let model = tiny_model()?;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (pool, test) = pool_and_test(dir.path());
    Some((model, dir, cache, pool, test))
}

fn simulate(model: &Path, pool: &str, test: &str, out: &Path, cache: &Path) -> Value {
    let args = [
        "select",
        "--simulate",
        "--train",
        pool,
        "--test",
        test,
        "--model",
        s(model),
        "--budget",
        "60",
        "--initial",
        "10",
        "--step",
        "25",
        "--seeds",
        "2",
        "--strategies",
        "random,margin,kcenter,hybrid",
        "-o",
        s(out),
        "--svg",
        &format!("{}.svg", s(out)),
    ];
    let status = lmfuse(&args, cache).status().unwrap();
    assert!(status.success());
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[test]
fn a_simulation_writes_seeded_curves_and_a_plot() {
    let Some((model, dir, cache, pool, test)) = setup() else {
        return;
    };
    let first = simulate(&model, &pool, &test, &dir.path().join("a.json"), &cache);
    let curves = first["curves"].as_array().unwrap();
    assert_eq!(curves.len(), 4);
    for c in curves {
        let labels: Vec<u64> = c["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["labels"].as_u64().unwrap())
            .collect();
        assert_eq!(labels, [10, 35, 60], "{c}");
        assert_eq!(c["runs"].as_array().unwrap().len(), 2);
    }
    let random_end = curves[0]["points"][2]["accuracy"].as_f64().unwrap();
    assert!(random_end > 0.6, "60 labels of an easy set: {random_end}");
    let again = simulate(&model, &pool, &test, &dir.path().join("b.json"), &cache);
    assert_eq!(first, again, "same seeds, same curves");
    let svg = std::fs::read_to_string(dir.path().join("a.json.svg")).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 4);
}

#[test]
fn a_bundle_chooses_distinct_texts_of_the_pool() {
    let Some((model, dir, cache, pool, test)) = setup() else {
        return;
    };
    let bundle = dir.path().join("bundle");
    let train = [
        "train",
        "--model",
        s(&model),
        "--train",
        &test,
        "--test",
        &test,
        "--out",
        s(&bundle),
    ];
    assert!(lmfuse(&train, &cache).status().unwrap().success());
    for strategy in ["margin", "entropy", "kcenter", "hybrid", "random"] {
        let args = [
            "select",
            "--pool",
            &pool,
            "--bundle",
            s(&bundle),
            "--budget",
            "7",
            "--strategy",
            strategy,
            "--labelled",
            &test,
        ];
        let out = run(&args, &cache);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let chosen: Vec<Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut rows: Vec<u64> = chosen.iter().map(|c| c["row"].as_u64().unwrap()).collect();
        assert_eq!(chosen.len(), 7, "{strategy}");
        assert_eq!(chosen[0]["rank"], 1);
        rows.sort_unstable();
        rows.dedup();
        assert_eq!(rows.len(), 7, "{strategy}: distinct texts");
        if strategy == "margin" {
            let u: Vec<f64> = chosen
                .iter()
                .map(|c| c["uncertainty"].as_f64().unwrap())
                .collect();
            assert!(
                u.windows(2).all(|w| w[0] >= w[1]),
                "least sure first: {u:?}"
            );
        }
    }
    let too_many = [
        "select",
        "--pool",
        &pool,
        "--bundle",
        s(&bundle),
        "--budget",
        "201",
    ];
    fails_with(
        &too_many,
        &cache,
        &["201", "larger than the pool (200 texts)"],
    );
    let empty = write_file(dir.path(), "empty.jsonl", "");
    let none = [
        "select",
        "--pool",
        s(&empty),
        "--bundle",
        s(&bundle),
        "--budget",
        "1",
    ];
    fails_with(&none, &cache, &["empty"]);
}

#[test]
fn bad_simulations_are_named() {
    let Some((model, dir, cache, pool, test)) = setup() else {
        return;
    };
    let base = [
        "select",
        "--simulate",
        "--train",
        &pool,
        "--model",
        s(&model),
    ];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }
    fails_with(
        &with(&base, &["--test", &test, "--budget", "500"]),
        &cache,
        &["--budget 500", "larger than the pool"],
    );
    fails_with(
        &with(
            &base,
            &[
                "--test",
                &test,
                "--budget",
                "50",
                "--strategies",
                "random,smart",
            ],
        ),
        &cache,
        &["smart", "margin", "hybrid"],
    );
    let odd = write_file(
        dir.path(),
        "odd.jsonl",
        "{\"text\": \"fine\", \"label\": \"positive\"}\n{\"text\": \"meh\", \"label\": \"neutral\"}\n",
    );
    fails_with(
        &with(&base, &["--test", s(&odd), "--budget", "50"]),
        &cache,
        &["odd.jsonl:2", "neutral", "not a label of the pool"],
    );
}
