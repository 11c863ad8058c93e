//! Ranking metrics with trec_eval's definitions (as `pytrec_eval` computes them), so figures
//! compare one to one with BEIR's.
//!
//! - A run's documents are ordered by score, highest first; equal scores by document id,
//!   *descending* (trec_eval's tie rule).
//! - A document is relevant when its grade is ≥ 1; nDCG's gain is the grade itself
//!   (trec_eval's `ndcg_cut`, not `2^grade − 1`), discounted by `log2(rank + 1)`; the ideal
//!   ranking is the judged grades sorted, cut at the same depth.
//! - `map` is average precision over the whole run; Recall@k counts relevant documents in the
//!   top k over all relevant judged ones; MRR@k is `1 / rank` of the first relevant document
//!   within the top k (0 when none).
//! - Means run over the queries that are both judged and in the run, as pytrec_eval reports
//!   them; a judged query without relevant documents scores 0 on every measure.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Judgements: for each query, the judged documents and their grades.
pub type Judgements = BTreeMap<String, BTreeMap<String, i32>>;

/// A run: for each query, the retrieved documents with their scores (any order).
pub type Run = BTreeMap<String, Vec<(String, f64)>>;

/// The scores of one query.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QueryScores {
    /// nDCG at the report's cut.
    pub ndcg: f64,
    /// Reciprocal rank within the report's cut.
    pub mrr: f64,
    /// Recall at the report's recall depth.
    pub recall: f64,
    /// Average precision over the whole run.
    pub average_precision: f64,
}

/// Mean scores over the evaluated queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankingReport {
    /// The cut of nDCG and MRR (10 by default).
    pub cut: usize,
    /// The depth of recall (100 by default).
    pub recall_depth: usize,
    /// Mean nDCG@cut.
    pub ndcg: f64,
    /// Mean reciprocal rank within the cut.
    pub mrr: f64,
    /// Mean Recall@recall_depth.
    pub recall: f64,
    /// Mean average precision (MAP) over the run's depth.
    pub map: f64,
    /// Queries evaluated (judged and in the run).
    pub queries: usize,
    /// Judged queries the run lacks (not in the means).
    pub missing: usize,
}

/// The run's documents for one query in trec_eval's order.
pub fn trec_order(retrieved: &[(String, f64)]) -> Vec<&str> {
    let mut ranked: Vec<&(String, f64)> = retrieved.iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    ranked.into_iter().map(|(d, _)| d.as_str()).collect()
}

/// Scores one query's ranked documents against its judgements.
pub fn query_scores(
    ranked: &[&str],
    judged: &BTreeMap<String, i32>,
    cut: usize,
    recall_depth: usize,
) -> QueryScores {
    let grade = |d: &str| judged.get(d).copied().unwrap_or(0);
    let relevant = judged.values().filter(|&&g| g >= 1).count();
    if relevant == 0 {
        return QueryScores {
            ndcg: 0.0,
            mrr: 0.0,
            recall: 0.0,
            average_precision: 0.0,
        };
    }
    let discount = |rank: usize| 1.0 / ((rank + 2) as f64).log2();
    let dcg: f64 = ranked
        .iter()
        .take(cut)
        .enumerate()
        .map(|(r, d)| f64::from(grade(d).max(0)) * discount(r))
        .sum();
    let mut ideal: Vec<i32> = judged.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(cut)
        .enumerate()
        .map(|(r, &g)| f64::from(g) * discount(r))
        .sum();
    let first = ranked.iter().take(cut).position(|d| grade(d) >= 1);
    let found_within = ranked
        .iter()
        .take(recall_depth)
        .filter(|d| grade(d) >= 1)
        .count();
    let (mut hits, mut precision_sum) = (0usize, 0.0);
    for (r, d) in ranked.iter().enumerate() {
        if grade(d) >= 1 {
            hits += 1;
            precision_sum += hits as f64 / (r + 1) as f64;
        }
    }
    QueryScores {
        ndcg: dcg / idcg,
        mrr: first.map_or(0.0, |r| 1.0 / (r + 1) as f64),
        recall: found_within as f64 / relevant as f64,
        average_precision: precision_sum / relevant as f64,
    }
}

/// Scores a run: per query (judged and retrieved) and the means.
pub fn evaluate_run(
    judgements: &Judgements,
    run: &Run,
    cut: usize,
    recall_depth: usize,
) -> (RankingReport, BTreeMap<String, QueryScores>) {
    let mut per_query = BTreeMap::new();
    for (query, judged) in judgements {
        if let Some(retrieved) = run.get(query) {
            let ranked = trec_order(retrieved);
            per_query.insert(
                query.clone(),
                query_scores(&ranked, judged, cut, recall_depth),
            );
        }
    }
    let n = per_query.len();
    let mean = |f: fn(&QueryScores) -> f64| {
        if n == 0 {
            0.0
        } else {
            per_query.values().map(f).sum::<f64>() / n as f64
        }
    };
    let report = RankingReport {
        cut,
        recall_depth,
        ndcg: mean(|s| s.ndcg),
        mrr: mean(|s| s.mrr),
        recall: mean(|s| s.recall),
        map: mean(|s| s.average_precision),
        queries: n,
        missing: judgements.len() - n,
    };
    (report, per_query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, i32)]) -> BTreeMap<String, i32> {
        pairs.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }

    #[test]
    fn ties_fall_to_the_larger_document_id() {
        let run = vec![("a".to_string(), 1.0), ("c".into(), 1.0), ("b".into(), 2.0)];
        assert_eq!(trec_order(&run), ["b", "c", "a"]);
    }

    #[test]
    fn a_perfect_ranking_scores_one_and_a_miss_zero() {
        let j = judged(&[("a", 2), ("b", 1), ("z", 0)]);
        let perfect = query_scores(&["a", "b", "z"], &j, 10, 100);
        assert!((perfect.ndcg - 1.0).abs() < 1e-12);
        assert_eq!(
            (perfect.mrr, perfect.recall, perfect.average_precision),
            (1.0, 1.0, 1.0)
        );
        let miss = query_scores(&["z", "q"], &j, 10, 100);
        assert_eq!(
            (miss.ndcg, miss.mrr, miss.recall, miss.average_precision),
            (0.0, 0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn graded_gain_is_linear_and_cut_applies_to_the_ideal_too() {
        let j = judged(&[("a", 2), ("b", 1)]);
        let s = query_scores(&["b", "a"], &j, 1, 100);
        // DCG@1 = 1, IDCG@1 = 2.
        assert!((s.ndcg - 0.5).abs() < 1e-12);
        assert_eq!(s.mrr, 1.0);
        let late = query_scores(&["x", "y", "a"], &j, 2, 2);
        assert_eq!((late.mrr, late.recall), (0.0, 0.0));
        assert!((late.average_precision - 1.0 / 3.0 / 2.0).abs() < 1e-12);
    }
}
