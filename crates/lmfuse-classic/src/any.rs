//! Every head behind one pair of enums, for callers that pick the head at run time (the CLI,
//! bundles): [`HeadParams`] serialises as `{"kind": ..., "params": {...}}`.

use crate::{
    Bag, ClassicError, FitHead, Gbdt, GbdtParams, Knn, KnnParams, LinearSvm, LinearSvmParams,
    LogisticRegression, LogisticRegressionParams, Mlp, MlpParams, NaiveBayes, NaiveBayesParams,
    ProbaHead, RandomForest, RandomForestParams,
};
use lmfuse_core::{Features, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The hyperparameters of any head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "params", rename_all = "snake_case")]
pub enum HeadParams {
    /// Multinomial logistic regression.
    Logreg(LogisticRegressionParams),
    /// Linear SVM with sigmoid-calibrated probabilities.
    Svm(LinearSvmParams),
    /// Naive Bayes.
    Nb(NaiveBayesParams),
    /// Cosine k-nearest neighbours.
    Knn(KnnParams),
    /// Random forest.
    Rf(RandomForestParams),
    /// Histogram gradient-boosted trees.
    Gbdt(GbdtParams),
    /// Small MLP: deep fusion or a shared hidden layer.
    Mlp(MlpParams),
}

/// A fitted head of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Head {
    /// Multinomial logistic regression.
    Logreg(LogisticRegression),
    /// Linear SVM.
    Svm(LinearSvm),
    /// Naive Bayes.
    Nb(NaiveBayes),
    /// k-nearest neighbours.
    Knn(Knn),
    /// Random forest.
    Rf(RandomForest),
    /// Gradient-boosted trees.
    Gbdt(Gbdt),
    /// Multilayer perceptron.
    Mlp(Mlp),
    /// Fold models of one kind, averaged (see [`crate::bag`]).
    Bag(Bag),
}

impl HeadParams {
    /// The head's short name, as on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            HeadParams::Logreg(_) => "logreg",
            HeadParams::Svm(_) => "svm",
            HeadParams::Nb(_) => "nb",
            HeadParams::Knn(_) => "knn",
            HeadParams::Rf(_) => "rf",
            HeadParams::Gbdt(_) => "gbdt",
            HeadParams::Mlp(_) => "mlp",
        }
    }

    /// The hyperparameter that model selection varies for this head, and its value.
    pub fn tuned(&self) -> (&'static str, f64) {
        match self {
            HeadParams::Logreg(p) => ("c", p.c),
            HeadParams::Svm(p) => ("c", p.c),
            HeadParams::Nb(p) => ("alpha", p.alpha),
            HeadParams::Knn(p) => ("k", p.k as f64),
            HeadParams::Rf(p) => ("n_trees", p.n_trees as f64),
            HeadParams::Gbdt(p) => ("learning_rate", p.learning_rate),
            HeadParams::Mlp(p) => ("alpha", p.alpha),
        }
    }

    /// A cheaper setting that ranks like this one, for fitting every point of a selection
    /// grid (the SVM without its calibration folds); the chosen point is then refit as is.
    pub fn for_selection(&self) -> HeadParams {
        match self {
            HeadParams::Svm(p) => HeadParams::Svm(LinearSvmParams {
                calibration_folds: 0,
                ..*p
            }),
            other => *other,
        }
    }

    /// Validates the hyperparameters.
    pub fn check(&self) -> Result<(), ClassicError> {
        match self {
            HeadParams::Logreg(p) => FitHead::check(p),
            HeadParams::Svm(p) => p.check(),
            HeadParams::Nb(p) => p.check(),
            HeadParams::Knn(p) => p.check(),
            HeadParams::Rf(p) => p.check(),
            HeadParams::Gbdt(p) => p.check(),
            HeadParams::Mlp(p) => p.check(),
        }
    }

    /// [`HeadParams::fit`], warm-started from `start` where the head can be (logistic
    /// regression from another logistic regression of the same shape: a C search's previous
    /// fit); the other heads fit from scratch.
    pub fn fit_from(
        &self,
        x: &Features,
        y: &[usize],
        n_classes: usize,
        start: Option<&Head>,
    ) -> Result<Head, ClassicError> {
        match (self, start) {
            (HeadParams::Logreg(p), Some(Head::Logreg(m))) => {
                Ok(Head::Logreg(p.fit_from(x, y, n_classes, Some(m))?))
            }
            _ => self.fit(x, y, n_classes),
        }
    }

    /// Fits the head.
    pub fn fit(&self, x: &Features, y: &[usize], n_classes: usize) -> Result<Head, ClassicError> {
        Ok(match self {
            HeadParams::Logreg(p) => Head::Logreg(FitHead::fit(p, x, y, n_classes)?),
            HeadParams::Svm(p) => Head::Svm(p.fit(x, y, n_classes)?),
            HeadParams::Nb(p) => Head::Nb(p.fit(x, y, n_classes)?),
            HeadParams::Knn(p) => Head::Knn(p.fit(x, y, n_classes)?),
            HeadParams::Rf(p) => Head::Rf(p.fit(x, y, n_classes)?),
            HeadParams::Gbdt(p) => Head::Gbdt(p.fit(x, y, n_classes)?),
            HeadParams::Mlp(p) => Head::Mlp(p.fit(x, y, n_classes)?),
        })
    }

    /// Rebuilds a fitted head from its tensors.
    pub fn restore(
        &self,
        n_features: usize,
        n_classes: usize,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<Head, ClassicError> {
        Ok(match self {
            HeadParams::Logreg(p) => Head::Logreg(p.restore(n_features, n_classes, tensors)?),
            HeadParams::Svm(p) => Head::Svm(p.restore(n_features, n_classes, tensors)?),
            HeadParams::Nb(p) => Head::Nb(p.restore(n_features, n_classes, tensors)?),
            HeadParams::Knn(p) => Head::Knn(p.restore(n_features, n_classes, tensors)?),
            HeadParams::Rf(p) => Head::Rf(p.restore(n_features, n_classes, tensors)?),
            HeadParams::Gbdt(p) => Head::Gbdt(p.restore(n_features, n_classes, tensors)?),
            HeadParams::Mlp(p) => Head::Mlp(p.restore(n_features, n_classes, tensors)?),
        })
    }
}

impl Head {
    fn inner(&self) -> &dyn ProbaHead {
        match self {
            Head::Logreg(m) => m,
            Head::Svm(m) => m,
            Head::Nb(m) => m,
            Head::Knn(m) => m,
            Head::Rf(m) => m,
            Head::Gbdt(m) => m,
            Head::Mlp(m) => m,
            Head::Bag(m) => m,
        }
    }
}

impl ProbaHead for Head {
    fn n_features(&self) -> usize {
        self.inner().n_features()
    }

    fn n_classes(&self) -> usize {
        self.inner().n_classes()
    }

    fn predict_proba(&self, x: &Features) -> Result<Vec<f32>, ClassicError> {
        self.inner().predict_proba(x)
    }

    fn to_tensors(&self) -> BTreeMap<String, Tensor> {
        self.inner().to_tensors()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::blobs;

    #[test]
    fn every_head_fits_round_trips_and_serialises_its_params() {
        let (x, y) = blobs(90, 3, 0.8, 9);
        for params in [
            HeadParams::Logreg(Default::default()),
            HeadParams::Svm(Default::default()),
            HeadParams::Nb(Default::default()),
            HeadParams::Knn(Default::default()),
            HeadParams::Rf(RandomForestParams {
                n_trees: 10,
                ..Default::default()
            }),
            HeadParams::Gbdt(GbdtParams {
                max_rounds: 20,
                min_samples_leaf: 5,
                ..Default::default()
            }),
            HeadParams::Mlp(MlpParams {
                hidden: 16,
                epochs: 10,
                ..Default::default()
            }),
            HeadParams::Mlp(MlpParams {
                hidden: 16,
                projection: 8,
                dense_tail: 1,
                alpha: 1e-3,
                epochs: 10,
                seed: 5,
                ..Default::default()
            }),
        ] {
            let json = serde_json::to_value(params).unwrap();
            assert_eq!(json["kind"], params.name());
            let back: HeadParams = serde_json::from_value(json).unwrap();
            assert_eq!(back, params);
            let head = params.fit(&x, &y, 3).unwrap();
            let restored = back.restore(2, 3, &head.to_tensors()).unwrap();
            assert_eq!(
                restored.predict_proba(&x).unwrap(),
                head.predict_proba(&x).unwrap(),
                "{}",
                params.name()
            );
        }
    }
}
