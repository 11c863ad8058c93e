//! The entity scorer against seqeval's own results, recorded in `fixtures/seqeval.json` by
//! `scripts/make_seqeval_fixture.py` (seqeval 1.2.2): default (conlleval) and strict modes,
//! IOB2 and IOBES, invalid predictions and gold included.

use lmfuse_metrics::entity::{evaluate_tags, EntityReport, EntityScore, Reading};
use serde_json::Value;

fn close(a: f64, b: &Value, what: &str) {
    // seqeval gives NaN (stored as null) for the macro mean over no types; ours is 0.
    let b = b.as_f64().unwrap_or(0.0);
    assert!((a - b).abs() < 1e-9, "{what}: {a} vs seqeval {b}");
}

fn check_score(ours: &EntityScore, theirs: &Value, what: &str) {
    close(
        ours.precision,
        &theirs["precision"],
        &format!("{what} precision"),
    );
    close(ours.recall, &theirs["recall"], &format!("{what} recall"));
    close(ours.f1, &theirs["f1"], &format!("{what} f1"));
    assert_eq!(
        ours.support as u64,
        theirs["support"].as_u64().unwrap(),
        "{what} support"
    );
}

fn check(ours: &EntityReport, theirs: &Value, case: &str) {
    check_score(&ours.micro, &theirs["micro"], &format!("{case} micro"));
    check_score(&ours.macro_avg, &theirs["macro"], &format!("{case} macro"));
    check_score(
        &ours.weighted,
        &theirs["weighted"],
        &format!("{case} weighted"),
    );
    let types = theirs["per_type"].as_object().unwrap();
    let ours_types: Vec<&String> = ours.per_type.keys().collect();
    assert_eq!(ours_types, types.keys().collect::<Vec<_>>(), "{case} types");
    for (label, score) in types {
        check_score(&ours.per_type[label], score, &format!("{case} {label}"));
    }
}

fn tags(v: &Value) -> Vec<Vec<String>> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn scores_agree_with_seqeval_in_both_modes() {
    let text = include_str!("fixtures/seqeval.json");
    let fixture: Value = serde_json::from_str(text).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 12);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (gold, pred) = (tags(&case["gold"]), tags(&case["pred"]));
        let strict = match case["scheme"].as_str().unwrap() {
            "IOBES" => Reading::StrictIobes,
            _ => Reading::Strict,
        };
        let ours = evaluate_tags(&gold, &pred, Reading::Lenient).unwrap();
        check(&ours, &case["default"], &format!("{name} (default)"));
        let ours = evaluate_tags(&gold, &pred, strict).unwrap();
        check(&ours, &case["strict"], &format!("{name} (strict)"));
    }
}
