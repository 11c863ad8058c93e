//! A bag of fold models: the heads a k-fold out-of-fold pass fit (each on every fold but one),
//! kept to predict together by averaging their class probabilities.
//!
//! A combiner (stacking, adaptive gating, fitted weights) learns from out-of-fold
//! probabilities, which come from models fit on (k-1)/k of the rows. A single model refit on
//! all rows is more confident than those, so at prediction time the combiner would see inputs
//! unlike the ones it learnt from. Averaging the fold models themselves keeps the two alike;
//! AutoGluon's bagged stack ensembles predict the same way.

use crate::{ClassicError, Head, HeadParams, ProbaHead};
use lmfuse_core::{Features, Tensor};
use std::collections::BTreeMap;

/// Fold models of one head kind that predict the mean of their class probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct Bag {
    heads: Vec<Head>,
}

fn fold_prefix(j: usize) -> String {
    format!("fold{j}.")
}

impl Bag {
    /// A bag of `heads`: at least one, all of one kind (and none a bag), agreeing on input
    /// width and class count.
    pub fn new(heads: Vec<Head>) -> Result<Self, ClassicError> {
        let first = heads.first().ok_or(ClassicError::Empty)?;
        let (d, k) = (first.n_features(), first.n_classes());
        let kind = std::mem::discriminant(first);
        if matches!(first, Head::Bag(_)) || heads.iter().any(|h| std::mem::discriminant(h) != kind)
        {
            return Err(ClassicError::InvalidParam {
                name: "bag",
                value: format!("{} heads", heads.len()),
                reason: "the fold models must be of one kind, and not bags themselves",
            });
        }
        if let Some(other) = heads.iter().find(|h| h.n_features() != d) {
            return Err(ClassicError::Width {
                expected: d,
                got: other.n_features(),
            });
        }
        if heads.iter().any(|h| h.n_classes() != k) {
            return Err(ClassicError::InvalidParam {
                name: "bag",
                value: format!("{} heads", heads.len()),
                reason: "every fold model must have the same classes",
            });
        }
        Ok(Self { heads })
    }

    /// The fold models.
    pub fn heads(&self) -> &[Head] {
        &self.heads
    }

    /// Rebuilds a bag of `folds` models fit with `params` from [`ProbaHead::to_tensors`]'
    /// output (model `j`'s tensors under `fold{j}.`).
    pub fn restore(
        params: &HeadParams,
        folds: usize,
        n_features: usize,
        n_classes: usize,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<Self, ClassicError> {
        if folds == 0 {
            return Err(ClassicError::InvalidParam {
                name: "bagged",
                value: "0".into(),
                reason: "a bag holds at least one fold model",
            });
        }
        let heads = (0..folds)
            .map(|j| {
                let p = fold_prefix(j);
                let own: BTreeMap<String, Tensor> = tensors
                    .iter()
                    .filter_map(|(n, t)| n.strip_prefix(&p).map(|l| (l.to_string(), t.clone())))
                    .collect();
                params
                    .restore(n_features, n_classes, &own)
                    .map_err(|e| match e {
                        ClassicError::Stored { tensor, reason } => ClassicError::Stored {
                            tensor: format!("{p}{tensor}"),
                            reason,
                        },
                        other => other,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Tensors of a model the card does not count would be ignored: refuse them.
        if let Some(stray) = tensors
            .keys()
            .find(|n| !(0..folds).any(|j| n.starts_with(&fold_prefix(j))))
        {
            return Err(ClassicError::Stored {
                tensor: stray.clone(),
                reason: format!("not a tensor of the bag's {folds} fold models"),
            });
        }
        Self::new(heads)
    }
}

impl ProbaHead for Bag {
    fn n_features(&self) -> usize {
        self.heads[0].n_features()
    }

    fn n_classes(&self) -> usize {
        self.heads[0].n_classes()
    }

    fn predict_proba(&self, x: &Features) -> Result<Vec<f32>, ClassicError> {
        let mut sum = self.heads[0].predict_proba(x)?;
        for h in &self.heads[1..] {
            for (s, p) in sum.iter_mut().zip(h.predict_proba(x)?) {
                *s += p;
            }
        }
        let n = self.heads.len() as f32;
        sum.iter_mut().for_each(|s| *s /= n);
        Ok(sum)
    }

    fn to_tensors(&self) -> BTreeMap<String, Tensor> {
        self.heads
            .iter()
            .enumerate()
            .flat_map(|(j, h)| {
                let p = fold_prefix(j);
                h.to_tensors()
                    .into_iter()
                    .map(move |(n, t)| (format!("{p}{n}"), t))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::blobs;
    use crate::LogisticRegressionParams;

    #[test]
    fn a_bag_predicts_the_mean_of_its_models_and_round_trips() {
        let (x, y) = blobs(120, 3, 1.5, 4);
        let params = HeadParams::Logreg(LogisticRegressionParams::default());
        let heads: Vec<Head> = [0..60, 60..120, 30..90]
            .into_iter()
            .map(|r| {
                let rows: Vec<usize> = r.collect();
                let ys: Vec<usize> = rows.iter().map(|&i| y[i]).collect();
                params.fit(&x.select_rows(&rows), &ys, 3).unwrap()
            })
            .collect();
        let each: Vec<Vec<f32>> = heads.iter().map(|h| h.predict_proba(&x).unwrap()).collect();
        let bag = Bag::new(heads).unwrap();
        let p = bag.predict_proba(&x).unwrap();
        for (i, &v) in p.iter().enumerate() {
            let mean = each.iter().map(|e| e[i]).sum::<f32>() / 3.0;
            assert!((v - mean).abs() < 1e-6, "{i}: {v} vs {mean}");
        }
        // The models differ (else the mean would prove nothing).
        assert!(each[0]
            .iter()
            .zip(&each[1])
            .any(|(a, b)| (a - b).abs() > 1e-3));
        let restored = Bag::restore(&params, 3, 2, 3, &bag.to_tensors()).unwrap();
        assert_eq!(restored.predict_proba(&x).unwrap(), p);
    }

    #[test]
    fn a_missing_fold_names_its_tensor() {
        let (x, y) = blobs(60, 2, 1.0, 1);
        let params = HeadParams::Logreg(LogisticRegressionParams::default());
        let bag = Bag::new(vec![params.fit(&x, &y, 2).unwrap()]).unwrap();
        let e = Bag::restore(&params, 2, 2, 2, &bag.to_tensors()).unwrap_err();
        assert!(e.to_string().contains("fold1."), "{e}");
        assert!(Bag::new(Vec::new()).is_err());
        assert!(Bag::restore(&params, 0, 2, 2, &bag.to_tensors()).is_err());
        // A tensor of a model beyond the card's count is refused, not ignored.
        let two = Bag::new(vec![params.fit(&x, &y, 2).unwrap(); 2]).unwrap();
        let e = Bag::restore(&params, 1, 2, 2, &two.to_tensors()).unwrap_err();
        assert!(
            e.to_string().contains("fold1.") && e.to_string().contains("1 fold models"),
            "{e}"
        );
        // One kind, no nesting.
        let nb = HeadParams::Nb(Default::default()).fit(&x, &y, 2).unwrap();
        assert!(Bag::new(vec![bag.heads()[0].clone(), nb]).is_err());
        assert!(Bag::new(vec![Head::Bag(bag.clone())]).is_err());
    }
}
