//! Scores of relation classification as the official SemEval-2010 Task 8 scorer (v1.2)
//! computes them.
//!
//! Labels carry their direction as a suffix (`Cause-Effect(e1,e2)`); one label (`Other`) means
//! no relation. The official score is the "(9+1)-way evaluation taking directionality into
//! account": per relation `r` (direction stripped, `Other` left out), a prediction counts as
//! correct only when relation and direction both match, precision divides by every prediction
//! of `r` (either direction) and recall by every true `r`; the score is the plain mean of the
//! relations' F1 over the relations in the truth.

use crate::{f1, ratio, MetricsError, Prf};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One relation's counts and scores (direction stripped from its name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelationScore {
    /// Precision, recall and F1.
    #[serde(flatten)]
    pub prf: Prf,
    /// Predictions with the right relation and direction.
    pub correct: usize,
    /// Predictions of this relation with the wrong direction.
    pub wrong_direction: usize,
    /// Predictions of this relation (either direction).
    pub predicted: usize,
    /// True examples of this relation.
    pub support: usize,
}

/// The report of [`relation_scores`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelationReport {
    /// The official score: the mean F1 over the relations in the truth, `Other` excluded,
    /// direction counted.
    pub official_macro_f1: f64,
    /// Micro-averaged precision, recall and F1 over the same relations.
    pub micro: Prf,
    /// Exact-label accuracy (relation and direction; `Other` included).
    pub accuracy: f64,
    /// Examples scored.
    pub n: usize,
    /// Per relation, direction stripped.
    pub per_relation: BTreeMap<String, RelationScore>,
}

/// A label without its direction suffix (`(e1,e2)` or `(e2,e1)`).
pub fn undirected(label: &str) -> &str {
    label
        .strip_suffix("(e1,e2)")
        .or_else(|| label.strip_suffix("(e2,e1)"))
        .unwrap_or(label)
}

/// Scores `predicted` against `truth` (same length), `other` naming the no-relation label.
pub fn relation_scores(
    truth: &[&str],
    predicted: &[&str],
    other: &str,
) -> Result<RelationReport, MetricsError> {
    if truth.is_empty() {
        return Err(MetricsError::Empty);
    }
    if truth.len() != predicted.len() {
        return Err(MetricsError::Lengths {
            truth: truth.len(),
            predicted: predicted.len(),
        });
    }
    let mut per: BTreeMap<String, RelationScore> = BTreeMap::new();
    let blank = || RelationScore {
        prf: Prf {
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
        },
        correct: 0,
        wrong_direction: 0,
        predicted: 0,
        support: 0,
    };
    let mut exact = 0usize;
    for (&t, &p) in truth.iter().zip(predicted) {
        exact += usize::from(t == p);
        let (tu, pu) = (undirected(t), undirected(p));
        per.entry(tu.to_string()).or_insert_with(blank).support += 1;
        let entry = per.entry(pu.to_string()).or_insert_with(blank);
        entry.predicted += 1;
        if t == p {
            entry.correct += 1;
        } else if tu == pu {
            entry.wrong_direction += 1;
        }
    }
    // Relations predicted but absent from the truth are not averaged (as the official scorer).
    per.retain(|name, s| s.support > 0 || name == other);
    let (mut macro_f1, mut relations) = (0.0, 0usize);
    let (mut correct, mut proposed, mut support) = (0usize, 0usize, 0usize);
    for (name, s) in per.iter_mut() {
        let precision = ratio(s.correct as f64, s.predicted as f64);
        let recall = ratio(s.correct as f64, s.support as f64);
        s.prf = Prf {
            precision,
            recall,
            f1: f1(precision, recall),
        };
        if name != other && s.support > 0 {
            macro_f1 += s.prf.f1;
            relations += 1;
            correct += s.correct;
            proposed += s.predicted;
            support += s.support;
        }
    }
    let micro_p = ratio(correct as f64, proposed as f64);
    let micro_r = ratio(correct as f64, support as f64);
    Ok(RelationReport {
        official_macro_f1: ratio(macro_f1, relations as f64),
        micro: Prf {
            precision: micro_p,
            recall: micro_r,
            f1: f1(micro_p, micro_r),
        },
        accuracy: exact as f64 / truth.len() as f64,
        n: truth.len(),
        per_relation: per,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_counts_and_other_is_left_out() {
        let truth = [
            "A(e1,e2)", "A(e1,e2)", "A(e2,e1)", "B(e1,e2)", "Other", "Other",
        ];
        let pred = [
            "A(e1,e2)", "A(e2,e1)", "A(e2,e1)", "Other", "B(e2,e1)", "Other",
        ];
        let r = relation_scores(&truth, &pred, "Other").unwrap();
        let a = &r.per_relation["A"];
        assert_eq!(
            (a.correct, a.wrong_direction, a.predicted, a.support),
            (2, 1, 3, 3)
        );
        let b = &r.per_relation["B"];
        assert_eq!((b.correct, b.predicted, b.support), (0, 1, 1));
        // A: P = R = 2/3; B: 0. Mean over A and B.
        assert!((r.official_macro_f1 - (2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert!((r.accuracy - 3.0 / 6.0).abs() < 1e-12);
        assert!((r.micro.precision - 2.0 / 4.0).abs() < 1e-12);
        assert!((r.micro.recall - 2.0 / 4.0).abs() < 1e-12);
    }

    #[test]
    fn relations_only_predicted_are_not_averaged() {
        let r =
            relation_scores(&["A(e1,e2)", "Other"], &["A(e1,e2)", "C(e1,e2)"], "Other").unwrap();
        assert!(!r.per_relation.contains_key("C"));
        assert!((r.official_macro_f1 - 1.0).abs() < 1e-12);
    }

    #[test]
    fn lengths_must_agree() {
        assert!(relation_scores(&["A"], &[], "Other").is_err());
        assert!(relation_scores(&[], &[], "Other").is_err());
    }
}
