//! Fitting the answer engine's learned parts on the table's own questions: the intent
//! classifier, the out-of-scope detector, the ranker and the confidence calibrator. Every
//! training question is scored as if it were new: its own text is left out of the question
//! index, and the learned parts score it from models fitted without its fold (folds by entry,
//! so an entry's paraphrases share one fold).

use super::signals::{confidence_features, Parts, Signals, FAQ_FEATURES, PRIOR};
use crate::error::{PipelineError, Result};
use crate::observe::Observer;
use crate::ranker::{
    held_out_scores, logreg, select_and_fit, FeatureSet, Fitted, Group, KindScore, RankerKind,
};
use lmfuse_classic::{Head, ProbaHead};
use lmfuse_core::{DenseMatrix, Features};
use lmfuse_metrics::ranking::Judgements;
use lmfuse_train::{OosDetector, OosMethod};
use std::collections::BTreeMap;

/// The intent classifier's C, chosen by held-out accuracy from these.
const INTENT_C: [f64; 3] = [1.0, 10.0, 100.0];

/// The table's questions: vector, entry, fold.
pub(crate) struct TrainingQuestions<'a> {
    pub(crate) vectors: &'a DenseMatrix,
    pub(crate) entry: &'a [usize],
    pub(crate) fold: &'a [usize],
    pub(crate) folds: usize,
}

/// A fitted intent classifier over question vectors.
pub(crate) struct Intent {
    pub(crate) head: Head,
    pub(crate) c: f64,
}

/// What fitting the intent classifier gives: the classifier, every training question's
/// held-out probabilities, and their accuracy on the labelled questions.
pub(crate) struct IntentFit {
    pub(crate) intent: Intent,
    pub(crate) held_out: Vec<Vec<f32>>,
    pub(crate) held_out_accuracy: f64,
}

/// The rows `rows` of `x`.
fn rows_of(x: &DenseMatrix, rows: &[usize]) -> Result<DenseMatrix> {
    let data: Vec<f32> = rows.iter().flat_map(|&r| x.row(r).to_vec()).collect();
    Ok(DenseMatrix::new(rows.len(), x.cols(), data)?)
}

/// The rows `rows` of `x`, as a head's input.
fn features_of(x: &DenseMatrix, rows: &[usize]) -> Result<Features> {
    Ok(Features::Dense(rows_of(x, rows)?))
}

/// Held-out class probabilities of every training question under `c` (rows of questions
/// whose category is unknown get an empty row).
fn held_out_intent(
    t: &TrainingQuestions,
    y: &[Option<usize>],
    n_classes: usize,
    c: f64,
) -> Result<Vec<Vec<f32>>> {
    let mut out = vec![Vec::new(); y.len()];
    for fold in 0..t.folds {
        let train: Vec<usize> = (0..y.len())
            .filter(|&i| t.fold[i] != fold && y[i].is_some())
            .collect();
        let test: Vec<usize> = (0..y.len()).filter(|&i| t.fold[i] == fold).collect();
        let labels: Vec<usize> = train.iter().map(|&i| y[i].expect("filtered")).collect();
        if test.is_empty() || labels.is_empty() {
            continue;
        }
        let head = logreg(c).fit(&features_of(t.vectors, &train)?, &labels, n_classes)?;
        let proba = head.predict_proba(&features_of(t.vectors, &test)?)?;
        for (&i, p) in test.iter().zip(proba.chunks_exact(n_classes)) {
            out[i] = p.to_vec();
        }
    }
    Ok(out)
}

/// The intent classifier (C chosen by held-out accuracy) and every training question's
/// held-out probabilities under it; `None` without categories.
pub(crate) fn fit_intent(
    t: &TrainingQuestions,
    y: &[Option<usize>],
    n_classes: usize,
) -> Result<Option<IntentFit>> {
    if n_classes < 2 {
        return Ok(None);
    }
    let mut best: Option<(usize, f64, Vec<Vec<f32>>)> = None;
    for c in INTENT_C {
        let proba = held_out_intent(t, y, n_classes, c)?;
        let right = proba
            .iter()
            .zip(y)
            .filter(|(p, y)| !p.is_empty() && y.is_some_and(|y| lmfuse_metrics::argmax(p) == y))
            .count();
        if best.as_ref().is_none_or(|b| right > b.0) {
            best = Some((right, c, proba));
        }
    }
    let (right, c, proba) = best.expect("three values of C");
    let labelled: Vec<usize> = (0..y.len()).filter(|&i| y[i].is_some()).collect();
    let labels: Vec<usize> = labelled.iter().map(|&i| y[i].expect("filtered")).collect();
    let head = logreg(c).fit(&features_of(t.vectors, &labelled)?, &labels, n_classes)?;
    Ok(Some(IntentFit {
        intent: Intent { head, c },
        held_out: proba,
        held_out_accuracy: right as f64 / labelled.len().max(1) as f64,
    }))
}

/// The out-of-scope detector (cosine distance to the nearest table question) and every
/// training question's held-out score.
pub(crate) fn fit_oos(t: &TrainingQuestions) -> Result<(OosDetector, Vec<f32>)> {
    let n = t.entry.len();
    let fit = |rows: &[usize]| -> Result<OosDetector> {
        let zeros = vec![0usize; rows.len()];
        Ok(OosDetector::fit(
            OosMethod::Knn,
            &rows_of(t.vectors, rows)?,
            &zeros,
            1,
            None,
            1,
        )?)
    };
    let mut scores = vec![0.0; n];
    for fold in 0..t.folds {
        let train: Vec<usize> = (0..n).filter(|&i| t.fold[i] != fold).collect();
        let test: Vec<usize> = (0..n).filter(|&i| t.fold[i] == fold).collect();
        if test.is_empty() || train.len() < 2 {
            continue;
        }
        let det = fit(&train)?;
        for (&i, s) in test
            .iter()
            .zip(det.score(&rows_of(t.vectors, &test)?, &[], 1))
        {
            scores[i] = s;
        }
    }
    let all: Vec<usize> = (0..n).collect();
    Ok((fit(&all)?, scores))
}

/// A question the ranker and the calibrator learn from: a table question with its own text
/// left out of the question index (as a question about an answer-only entry), or a reworded
/// table question with its text kept (as a user's paraphrase of a known question).
pub(crate) struct TrainingQuery {
    pub(crate) text: String,
    pub(crate) vector: Vec<f32>,
    pub(crate) entry: usize,
    pub(crate) fold: usize,
    pub(crate) exclude: Option<usize>,
    pub(crate) intent: Vec<f32>,
    pub(crate) oos: f32,
}

/// A question reworded by dropping words: each kept with probability 0.6, at least one,
/// and at least one dropped from questions of three words or more.
pub(crate) fn reworded(text: &str, rng: &mut lmfuse_core::SeededRng) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut keep: Vec<bool> = words.iter().map(|_| rng.below(10) < 6).collect();
    if words.len() >= 3 && keep.iter().all(|&k| k) {
        keep[rng.below(words.len())] = false;
    }
    if !keep.contains(&true) && !words.is_empty() {
        keep[rng.below(words.len())] = true;
    }
    let kept: Vec<&str> = words
        .iter()
        .zip(&keep)
        .filter(|(_, &k)| k)
        .map(|(w, _)| *w)
        .collect();
    kept.join(" ")
}

/// Every training query's signals.
pub(crate) fn training_signals(
    parts: &Parts,
    queries: &[TrainingQuery],
    on: &dyn Observer,
) -> Result<Vec<Signals>> {
    let task = on.task("scoring the table's questions", queries.len() as u64);
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        out.push(parts.signals(&q.text, &q.vector, q.intent.clone(), q.exclude)?);
        task.inc(1);
    }
    task.finish();
    Ok(out)
}

/// What fitting the ranker gives: the model, every kind's score, the kept kind and each
/// training question's held-out candidate scores.
pub(crate) struct RankerFit {
    pub(crate) fitted: Fitted,
    pub(crate) tried: Vec<KindScore>,
    pub(crate) kept: RankerKind,
    pub(crate) groups: Vec<Group>,
    pub(crate) held_out: Vec<Option<Vec<f32>>>,
}

/// Fits the ranker on the training questions' candidates (kind by cross-validation).
pub(crate) fn fit_ranker(
    parts: &Parts,
    queries: &[TrainingQuery],
    signals: &[Signals],
    (depth, kinds, folds): (usize, &[RankerKind], usize),
    on: &dyn Observer,
) -> Result<RankerFit> {
    let groups: Vec<Group> = signals
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let candidates = parts.candidates(s, depth);
            let relevant = candidates
                .iter()
                .map(|c| c.doc == queries[i].entry)
                .collect();
            Group {
                id: i.to_string(),
                candidates,
                relevant,
                fold: queries[i].fold,
            }
        })
        .collect();
    let qrels: Judgements = (0..signals.len())
        .map(|i| {
            (
                i.to_string(),
                BTreeMap::from([(queries[i].entry.to_string(), 1)]),
            )
        })
        .collect();
    let features = FeatureSet {
        names: &FAQ_FEATURES,
        prior: PRIOR,
    };
    let key = |c: &lmfuse_retrieval::Candidate| c.doc.to_string();
    let (kept, tried, fitted) =
        select_and_fit(&groups, (kinds, folds), features, &key, &qrels, on)?;
    let held_out = held_out_scores(&kept, &groups, folds, features)?;
    Ok(RankerFit {
        fitted,
        tried,
        kept,
        groups,
        held_out,
    })
}

/// A logistic model of P(first answer right) over [`super::signals::CONFIDENCE_FEATURES`],
/// on standardised features.
pub(crate) type Calibrator = Fitted;

/// Fits the calibrator on rows of confidence features and whether the first answer was right.
pub(crate) fn fit_calibrator(rows: &[Vec<f32>], right: &[bool]) -> Result<Calibrator> {
    if !right.contains(&true) || !right.contains(&false) {
        return Err(PipelineError::Invalid(
            "the table's questions are all answered right or all wrong by held-out models: \
             no confidence can be calibrated (add questions or paraphrases)"
                .into(),
        ));
    }
    Fitted::fit_binary(&logreg(1.0), rows, right)
}

/// The calibrator's training rows: each training query's held-out confidence features and
/// whether its held-out first answer was right (queries of a fold the ranker could not be
/// fitted without are left out).
pub(crate) fn calibration_rows(
    fit: &RankerFit,
    signals: &[Signals],
    queries: &[TrainingQuery],
) -> (Vec<Vec<f32>>, Vec<bool>) {
    let (mut rows, mut right) = (Vec::new(), Vec::new());
    for (i, g) in fit.groups.iter().enumerate() {
        let Some(scores) = &fit.held_out[i] else {
            continue;
        };
        rows.push(confidence_features(
            &g.candidates,
            scores,
            &signals[i],
            queries[i].oos,
        ));
        let best =
            (0..scores.len()).max_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)));
        right.push(best.is_some_and(|b| g.relevant[b]));
    }
    (rows, right)
}

/// The lowest threshold on `confidence` whose answered questions (confidence ≥ it) are right
/// in at least `target` of cases, with the precision and coverage it gives; when none
/// reaches the target, the one with the best precision. `right[i]`: question i's first answer
/// is right (an out-of-scope question's never is).
pub fn threshold_for_precision(confidence: &[f32], right: &[bool], target: f64) -> (f32, f64, f64) {
    let mut order: Vec<usize> = (0..confidence.len()).collect();
    order.sort_by(|&a, &b| confidence[b].total_cmp(&confidence[a]));
    let n = confidence.len().max(1) as f64;
    let (mut hits, mut best_reaching, mut best_any) = (0usize, None, (f64::MIN, f32::MAX, 0.0));
    for (k, &i) in order.iter().enumerate() {
        hits += usize::from(right[i]);
        let next_differs = order
            .get(k + 1)
            .is_none_or(|&j| confidence[j] < confidence[i]);
        if !next_differs {
            continue;
        }
        let precision = hits as f64 / (k + 1) as f64;
        let coverage = (k + 1) as f64 / n;
        if precision + 1e-12 >= target {
            best_reaching = Some((confidence[i], precision, coverage));
        }
        if precision > best_any.0 {
            best_any = (precision, confidence[i], coverage);
        }
    }
    best_reaching.unwrap_or((best_any.1, best_any.0.max(0.0), best_any.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_the_loosest_reaching_the_precision() {
        let conf = [0.9, 0.8, 0.7, 0.6, 0.5];
        let right = [true, true, false, true, false];
        let (t, p, c) = threshold_for_precision(&conf, &right, 0.75);
        assert_eq!(t, 0.6);
        assert!((p - 0.75).abs() < 1e-9 && (c - 0.8).abs() < 1e-9);
        let (t, p, _) = threshold_for_precision(&conf, &right, 1.0);
        assert_eq!(t, 0.8);
        assert!((p - 1.0).abs() < 1e-9);
        // Unreachable: the best precision there is.
        let (t, p, _) = threshold_for_precision(&[0.9, 0.1], &[false, true], 0.9);
        assert_eq!(t, 0.1);
        assert!((p - 0.5).abs() < 1e-9);
    }
}
