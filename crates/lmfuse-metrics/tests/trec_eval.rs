//! The ranking metrics against pytrec_eval's own results, recorded in `fixtures/trec_eval.json`
//! by `scripts/make_trec_eval_fixture.py`: graded judgements, many tied scores, queries
//! without relevant documents, a judged query missing from the run, a run query not judged.

use lmfuse_metrics::ranking::{evaluate_run, query_scores, trec_order, Judgements, Run};
use serde_json::Value;

fn fixture() -> (Judgements, Run, Value) {
    let text = include_str!("fixtures/trec_eval.json");
    let v: Value = serde_json::from_str(text).unwrap();
    let qrels: Judgements = serde_json::from_value(v["qrels"].clone()).unwrap();
    let mut run = Run::new();
    for (q, docs) in v["run"].as_object().unwrap() {
        let docs = docs
            .as_object()
            .unwrap()
            .iter()
            .map(|(d, s)| (d.clone(), s.as_f64().unwrap()))
            .collect();
        run.insert(q.clone(), docs);
    }
    (qrels, run, v["scores"].clone())
}

fn close(ours: f64, theirs: &Value, what: &str) {
    let theirs = theirs.as_f64().unwrap();
    assert!(
        (ours - theirs).abs() < 1e-9,
        "{what}: {ours} vs pytrec_eval {theirs}"
    );
}

#[test]
fn every_query_matches_pytrec_eval_at_two_cuts() {
    let (qrels, run, scores) = fixture();
    let scored = scores.as_object().unwrap();
    for (query, theirs) in scored {
        let ranked = trec_order(&run[query]);
        let judged = &qrels[query];
        for (cut, depth) in [(3, 5), (10, 100)] {
            let ours = query_scores(&ranked, judged, cut, depth);
            close(ours.ndcg, &theirs[format!("ndcg_cut_{cut}")], query);
            close(ours.recall, &theirs[format!("recall_{depth}")], query);
            close(ours.average_precision, &theirs["map"], query);
        }
        let full = query_scores(&ranked, judged, usize::MAX, 100);
        close(full.mrr, &theirs["recip_rank"], query);
    }
}

#[test]
fn means_run_over_the_queries_pytrec_eval_scores() {
    let (qrels, run, scores) = fixture();
    let scored = scores.as_object().unwrap();
    let (report, per_query) = evaluate_run(&qrels, &run, 10, 100);
    assert_eq!(report.queries, scored.len());
    assert_eq!(report.missing, 1);
    assert_eq!(per_query.len(), scored.len());
    let mean = |m: &str| {
        scored.values().map(|s| s[m].as_f64().unwrap()).sum::<f64>() / scored.len() as f64
    };
    assert!((report.ndcg - mean("ndcg_cut_10")).abs() < 1e-9);
    assert!((report.recall - mean("recall_100")).abs() < 1e-9);
    assert!((report.map - mean("map")).abs() < 1e-9);
    assert!(
        report.ndcg > 0.05 && report.ndcg < 0.95,
        "a non-trivial case"
    );
}
