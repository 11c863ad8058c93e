//! Classification metrics, computed from true class indices and predicted probabilities;
//! [`entity`], [`relation`] and [`ranking`] score taggers, relation classifiers and retrieval.
//!
//! Definitions follow scikit-learn so figures can be compared one to one: precision, recall
//! and F1 are 0 where undefined (`zero_division=0`), micro averages over all decisions,
//! weighted averages by support, MCC is the multiclass form of Gorodkin (2004), ROC-AUC is
//! reported for two classes only, and expected calibration error uses 15 equal-width bins of
//! the top-class probability.

pub mod entity;
pub mod ranking;
pub mod relation;

use serde::{Deserialize, Serialize};

/// Inputs that cannot be evaluated.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricsError {
    /// Probabilities are not `rows × classes`.
    #[error("probabilities hold {len} values, expected {rows} rows × {classes} classes")]
    Shape {
        /// Values given.
        len: usize,
        /// Rows (true labels) given.
        rows: usize,
        /// Classes.
        classes: usize,
    },
    /// A true label is not a class index.
    #[error("true label {label} at row {row} is not one of the {classes} classes")]
    Label {
        /// Row.
        row: usize,
        /// Label index.
        label: usize,
        /// Classes.
        classes: usize,
    },
    /// A probability is NaN or infinite.
    #[error("probability at row {row} is not a finite number")]
    NotFinite {
        /// Row.
        row: usize,
    },
    /// Nothing to evaluate.
    #[error("no examples to evaluate")]
    Empty,
    /// True and predicted labels differ in number.
    #[error("{truth} true labels but {predicted} predictions")]
    Lengths {
        /// True labels given.
        truth: usize,
        /// Predictions given.
        predicted: usize,
    },
}

/// Precision, recall and F1 of one class or one average.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prf {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
}

/// Metrics of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class name.
    pub label: String,
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// Number of true examples of the class.
    pub support: usize,
}

/// Every metric of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Examples evaluated.
    pub n: usize,
    /// Fraction of correct top-1 predictions.
    pub accuracy: f64,
    /// Unweighted mean of the per-class F1 scores.
    pub macro_f1: f64,
    /// Unweighted means over classes.
    pub macro_avg: Prf,
    /// Over all decisions (equals accuracy for single-label data).
    pub micro_avg: Prf,
    /// Means over classes weighted by support.
    pub weighted_avg: Prf,
    /// Per class, in label order.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]` counts, in label order.
    pub confusion: Vec<Vec<usize>>,
    /// Mean negative log probability of the true class (probabilities clipped at 1e-15).
    pub log_loss: f64,
    /// Area under the ROC curve of the second class's probability; two classes only.
    pub roc_auc: Option<f64>,
    /// Matthews correlation coefficient.
    pub mcc: f64,
    /// Expected calibration error of the top-class probability, 15 bins.
    pub ece: f64,
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

fn f1(p: f64, r: f64) -> f64 {
    ratio(2.0 * p * r, p + r)
}

/// Index of the largest value; the first on ties.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// Evaluates `proba` (`y_true.len() × labels.len()`, row-major) against `y_true`.
pub fn evaluate(
    y_true: &[usize],
    proba: &[f32],
    labels: &[String],
) -> Result<Report, MetricsError> {
    let (n, k) = (y_true.len(), labels.len());
    if n == 0 {
        return Err(MetricsError::Empty);
    }
    if proba.len() != n * k || k == 0 {
        return Err(MetricsError::Shape {
            len: proba.len(),
            rows: n,
            classes: k,
        });
    }
    for (row, &label) in y_true.iter().enumerate() {
        if label >= k {
            return Err(MetricsError::Label {
                row,
                label,
                classes: k,
            });
        }
        if proba[row * k..(row + 1) * k].iter().any(|p| !p.is_finite()) {
            return Err(MetricsError::NotFinite { row });
        }
    }
    let rows: Vec<&[f32]> = proba.chunks_exact(k).collect();
    let pred: Vec<usize> = rows.iter().map(|r| argmax(r)).collect();

    let mut confusion = vec![vec![0usize; k]; k];
    for (&t, &p) in y_true.iter().zip(&pred) {
        confusion[t][p] += 1;
    }
    let support: Vec<usize> = confusion.iter().map(|r| r.iter().sum()).collect();
    let predicted: Vec<usize> = (0..k)
        .map(|c| confusion.iter().map(|r| r[c]).sum())
        .collect();
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    let accuracy = correct as f64 / n as f64;

    let per_class: Vec<ClassMetrics> = (0..k)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let precision = ratio(tp, predicted[c] as f64);
            let recall = ratio(tp, support[c] as f64);
            ClassMetrics {
                label: labels[c].clone(),
                precision,
                recall,
                f1: f1(precision, recall),
                support: support[c],
            }
        })
        .collect();
    let mean = |f: &dyn Fn(&ClassMetrics) -> f64| per_class.iter().map(f).sum::<f64>() / k as f64;
    let weighted = |f: &dyn Fn(&ClassMetrics) -> f64| {
        per_class
            .iter()
            .map(|c| f(c) * c.support as f64)
            .sum::<f64>()
            / n as f64
    };
    let macro_avg = Prf {
        precision: mean(&|c| c.precision),
        recall: mean(&|c| c.recall),
        f1: mean(&|c| c.f1),
    };
    let weighted_avg = Prf {
        precision: weighted(&|c| c.precision),
        recall: weighted(&|c| c.recall),
        f1: weighted(&|c| c.f1),
    };
    let micro_avg = Prf {
        precision: accuracy,
        recall: accuracy,
        f1: accuracy,
    };

    let log_loss = y_true
        .iter()
        .zip(&rows)
        .map(|(&t, r)| -(r[t] as f64).clamp(1e-15, 1.0).ln())
        .sum::<f64>()
        / n as f64;

    let roc_auc = if k == 2 {
        roc_auc(
            y_true,
            &rows.iter().map(|r| r[1] as f64).collect::<Vec<_>>(),
        )
    } else {
        None
    };

    // Gorodkin's multiclass MCC, as scikit-learn.
    let (s, c) = (n as f64, correct as f64);
    let pt: f64 = (0..k)
        .map(|i| predicted[i] as f64 * support[i] as f64)
        .sum();
    let pp: f64 = predicted.iter().map(|&p| (p as f64).powi(2)).sum();
    let tt: f64 = support.iter().map(|&t| (t as f64).powi(2)).sum();
    let den = ((s * s - pp) * (s * s - tt)).sqrt();
    let mcc = ratio(c * s - pt, den);

    const BINS: usize = 15;
    let mut bin_n = [0usize; BINS];
    let mut bin_conf = [0f64; BINS];
    let mut bin_correct = [0usize; BINS];
    for ((r, &p), &t) in rows.iter().zip(&pred).zip(y_true) {
        let conf = r[p] as f64;
        let b = ((conf * BINS as f64).ceil() as usize).clamp(1, BINS) - 1;
        bin_n[b] += 1;
        bin_conf[b] += conf;
        bin_correct[b] += usize::from(p == t);
    }
    let ece = (0..BINS)
        .filter(|&b| bin_n[b] > 0)
        .map(|b| {
            let m = bin_n[b] as f64;
            (bin_correct[b] as f64 / m - bin_conf[b] / m).abs() * m / n as f64
        })
        .sum();

    Ok(Report {
        n,
        accuracy,
        macro_f1: macro_avg.f1,
        macro_avg,
        micro_avg,
        weighted_avg,
        per_class,
        confusion,
        log_loss,
        roc_auc,
        mcc,
        ece,
    })
}

/// ROC-AUC of `score` for class 1 against class 0 (Mann-Whitney U with average ranks for
/// ties); `None` when only one class is present.
fn roc_auc(y_true: &[usize], score: &[f64]) -> Option<f64> {
    let pos = y_true.iter().filter(|&&t| t == 1).count();
    let neg = y_true.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && score[order[j + 1]] == score[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            if y_true[o] == 1 {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (pos * (pos + 1)) as f64 / 2.0;
    Some(u / (pos as f64 * neg as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("c{i}")).collect()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn matches_scikit_learn_on_a_three_class_example() {
        // y_true = [0, 1, 2, 2, 1, 0], y_pred = [0, 2, 2, 2, 1, 1]
        // sklearn: accuracy 4/6; precision [1, .5, 2/3]; recall [.5, .5, 1];
        // f1 [2/3, .5, .8]; macro f1 0.6555…; weighted f1 = same (equal supports);
        // MCC 0.5222329678670935, log loss 0.6878663978488632 (scikit-learn 1.x)
        let y = [0, 1, 2, 2, 1, 0];
        let p = [
            0.8, 0.1, 0.1, 0.1, 0.2, 0.7, 0.0, 0.3, 0.7, 0.1, 0.1, 0.8, 0.2, 0.6, 0.2, 0.3, 0.6,
            0.1,
        ];
        let r = evaluate(&y, &p, &labels(3)).unwrap();
        close(r.accuracy, 4.0 / 6.0);
        close(r.per_class[1].precision, 0.5);
        close(r.per_class[2].precision, 2.0 / 3.0);
        close(r.per_class[0].recall, 0.5);
        close(r.macro_f1, (2.0 / 3.0 + 0.5 + 0.8) / 3.0);
        close(r.mcc, 0.522_232_967_867_093_5);
        assert_eq!(
            r.confusion,
            vec![vec![1, 1, 0], vec![0, 1, 1], vec![0, 0, 2]]
        );
        assert!(r.roc_auc.is_none());
        // log loss: -mean(ln [.8, .2, .7, .8, .6, .3])
        let want = -[0.8f64, 0.2, 0.7, 0.8, 0.6, 0.3]
            .iter()
            .map(|v| (*v as f32 as f64).ln())
            .sum::<f64>()
            / 6.0;
        close(r.log_loss, want);
    }

    #[test]
    fn binary_auc_with_ties() {
        // sklearn.metrics.roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
        let y = [0, 0, 1, 1];
        let p = [0.9, 0.1, 0.6, 0.4, 0.65, 0.35, 0.2, 0.8];
        let r = evaluate(&y, &p, &labels(2)).unwrap();
        close(r.roc_auc.unwrap(), 0.75);
        // Ties count one half: scores [0.5, 0.5] for one negative and one positive.
        let r = evaluate(&[0, 1], &[0.5, 0.5, 0.5, 0.5], &labels(2)).unwrap();
        close(r.roc_auc.unwrap(), 0.5);
    }

    #[test]
    fn perfect_and_calibrated() {
        let y = [0, 1, 1, 0];
        let p = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0];
        let r = evaluate(&y, &p, &labels(2)).unwrap();
        close(r.accuracy, 1.0);
        close(r.mcc, 1.0);
        close(r.ece, 0.0);
        assert!(r.log_loss < 1e-12);
    }

    #[test]
    fn undefined_precision_is_zero_and_bad_input_is_rejected() {
        // Class 1 never predicted: precision 0 (sklearn zero_division=0).
        let r = evaluate(&[0, 1], &[0.9, 0.1, 0.8, 0.2], &labels(2)).unwrap();
        close(r.per_class[1].precision, 0.0);
        close(r.mcc, 0.0);
        assert_eq!(
            evaluate(&[], &[], &labels(2)).unwrap_err(),
            MetricsError::Empty
        );
        assert!(matches!(
            evaluate(&[0], &[1.0], &labels(2)),
            Err(MetricsError::Shape { .. })
        ));
        assert!(matches!(
            evaluate(&[2], &[0.5, 0.5], &labels(2)),
            Err(MetricsError::Label { .. })
        ));
        assert!(matches!(
            evaluate(&[0], &[f32::NAN, 0.5], &labels(2)),
            Err(MetricsError::NotFinite { .. })
        ));
    }
}
