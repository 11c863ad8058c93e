//! The relation scorer against the official SemEval-2010 Task 8 scorer (v1.2, Perl).
//!
//! `fixtures/semeval_key.txt` and `fixtures/semeval_proposed.txt` are 400 synthetic
//! `id<TAB>label` lines (wrong directions, wrong relations, `Other` both ways); the figures
//! below are what the Perl scorer printed for them. When the scorer and `perl` are at hand
//! (`../shared/data/semeval2010_task8`), the test also runs it on the fixture and on random
//! predictions and compares every figure it prints to two decimals.

use lmfuse_metrics::relation::{relation_scores, RelationReport};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn labels(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split_once('\t').unwrap().1.to_string())
        .collect()
}

fn score(key: &[String], proposed: &[String]) -> RelationReport {
    let t: Vec<&str> = key.iter().map(String::as_str).collect();
    let p: Vec<&str> = proposed.iter().map(String::as_str).collect();
    relation_scores(&t, &p, "Other").unwrap()
}

fn pct(x: f64) -> f64 {
    (x * 10000.0).round() / 100.0
}

#[test]
fn the_fixture_scores_as_the_official_scorer_printed() {
    let r = score(
        &labels(&fixture("semeval_key.txt")),
        &labels(&fixture("semeval_proposed.txt")),
    );
    assert_eq!(pct(r.official_macro_f1), 58.35);
    assert_eq!(pct(r.micro.f1), 59.06);
    assert_eq!(pct(r.accuracy), 64.75);
    let f1 = |name: &str| pct(r.per_relation[name].prf.f1);
    assert_eq!(f1("Cause-Effect"), 65.62);
    assert_eq!(f1("Instrument-Agency"), 49.23);
    assert_eq!(f1("Product-Producer"), 46.51);
    assert_eq!(f1("Other"), 77.42);
    assert_eq!(r.per_relation["Entity-Origin"].wrong_direction, 6);
}

fn scorer() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/semeval2010_task8/semeval2010_task8_scorer-v1.2.pl");
    let perl = Command::new("perl").arg("-v").output().is_ok();
    if path.is_file() && perl {
        return Some(path);
    }
    let msg = format!("the official scorer {} or perl is missing", path.display());
    assert!(
        std::env::var("LMFUSE_REQUIRE_ASSETS").as_deref() != Ok("1"),
        "{msg}"
    );
    eprintln!("SKIPPED: {msg}");
    None
}

/// The official scorer's (micro F1, macro F1) of the last block (directionality counted).
fn official(scorer: &Path, key: &Path, proposed: &Path) -> (f64, f64) {
    let out = Command::new("perl")
        .arg(scorer)
        .arg(proposed)
        .arg(key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let last = text
        .rsplit("<<< (9+1)-WAY EVALUATION TAKING")
        .next()
        .unwrap();
    let f1_after = |marker: &str| -> f64 {
        let block = &last[last.find(marker).unwrap()..];
        let at = block.find("F1 =").unwrap() + 4;
        block[at..]
            .trim_start()
            .split('%')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (
        f1_after("Micro-averaged result"),
        f1_after("MACRO-averaged result"),
    )
}

/// Perl prints two decimals; ours agrees within their rounding.
fn agree((micro, macro_f1): (f64, f64), ours: &RelationReport, what: &str) {
    let close = |a: f64, b: f64| (a * 100.0 - b).abs() <= 0.0051;
    assert!(
        close(ours.micro.f1, micro),
        "{what}: micro {} vs {micro}",
        ours.micro.f1
    );
    assert!(
        close(ours.official_macro_f1, macro_f1),
        "{what}: macro {} vs {macro_f1}",
        ours.official_macro_f1
    );
}

fn write(dir: &Path, name: &str, labels: &[String]) -> PathBuf {
    let path = dir.join(name);
    let body: String = labels
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{}\t{l}\n", i + 1))
        .collect();
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn agrees_with_the_official_scorer_on_random_predictions() {
    let Some(scorer) = scorer() else { return };
    let (key, proposed) = (fixture("semeval_key.txt"), fixture("semeval_proposed.txt"));
    let r = score(&labels(&key), &labels(&proposed));
    agree(official(&scorer, &key, &proposed), &r, "fixture");
    let relations = [
        "Cause-Effect",
        "Component-Whole",
        "Entity-Origin",
        "Message-Topic",
    ];
    let mut all = vec!["Other".to_string()];
    for r in relations {
        all.push(format!("{r}(e1,e2)"));
        all.push(format!("{r}(e2,e1)"));
    }
    let dir = std::env::temp_dir().join(format!("lmfuse-semeval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % n
    };
    for case in 0..6 {
        let n = 50 + 40 * case;
        let truth: Vec<String> = (0..n).map(|_| all[next(all.len())].clone()).collect();
        let pred: Vec<String> = truth
            .iter()
            .map(|t| {
                if next(3) == 0 {
                    t.clone()
                } else {
                    all[next(all.len())].clone()
                }
            })
            .collect();
        let k = write(&dir, "key.txt", &truth);
        let p = write(&dir, "proposed.txt", &pred);
        let r = score(&truth, &pred);
        agree(official(&scorer, &k, &p), &r, &format!("case {case}"));
    }
    std::fs::remove_dir_all(&dir).ok();
}
