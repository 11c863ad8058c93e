//! Stratified k-fold assignment and out-of-fold member predictions.

use crate::FusionError;
use lmfuse_classic::{Head, HeadParams, ProbaHead};
use lmfuse_core::{Features, SeededRng};

/// The fold (`0..folds`) of every row: each class's rows are shuffled with `seed` and dealt
/// round-robin, continuing across classes, so every fold gets a near-equal share of each class.
pub fn stratified_folds(y: &[usize], folds: usize, seed: u64) -> Vec<usize> {
    let classes = y.iter().copied().max().map_or(0, |m| m + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &c) in y.iter().enumerate() {
        by_class[c].push(i);
    }
    let mut rng = SeededRng::new(seed);
    let mut fold = vec![0; y.len()];
    let mut next = 0;
    for rows in &mut by_class {
        rng.shuffle(rows);
        for &r in rows.iter() {
            fold[r] = next % folds.max(1);
            next += 1;
        }
    }
    fold
}

/// What [`out_of_fold`] computes.
#[derive(Debug, Clone)]
pub struct OutOfFold {
    /// Class probabilities of every row from the model that did not see it, `rows × classes`,
    /// row-major.
    pub proba: Vec<f32>,
    /// The fold models, in fold order (a fold with no rows has none); averaged, they predict
    /// new rows as the out-of-fold probabilities were predicted ([`lmfuse_classic::Bag`]).
    pub models: Vec<Head>,
}

/// Out-of-fold class probabilities of `params` on `(x, y)`: the rows of fold `f` are predicted
/// by a model fit on every other fold.
pub fn out_of_fold(
    x: &Features,
    y: &[usize],
    n_classes: usize,
    params: &HeadParams,
    folds: &[usize],
) -> Result<OutOfFold, FusionError> {
    if folds.len() != y.len() || x.rows() != y.len() {
        return Err(FusionError::Shape(format!(
            "{} feature rows, {} labels, {} fold ids",
            x.rows(),
            y.len(),
            folds.len()
        )));
    }
    let n_folds = folds.iter().copied().max().map_or(0, |m| m + 1);
    if n_folds < 2 {
        return Err(FusionError::Option(
            "out-of-fold predictions need ≥ 2 folds".into(),
        ));
    }
    let mut out = vec![0.0f32; y.len() * n_classes];
    let mut models = Vec::with_capacity(n_folds);
    for f in 0..n_folds {
        let (train, held): (Vec<usize>, Vec<usize>) = (0..y.len()).partition(|&i| folds[i] != f);
        if held.is_empty() {
            continue;
        }
        let ty: Vec<usize> = train.iter().map(|&i| y[i]).collect();
        let model = params.fit(&x.select_rows(&train), &ty, n_classes)?;
        let p = model.predict_proba(&x.select_rows(&held))?;
        for (j, &i) in held.iter().enumerate() {
            out[i * n_classes..(i + 1) * n_classes]
                .copy_from_slice(&p[j * n_classes..(j + 1) * n_classes]);
        }
        models.push(model);
    }
    Ok(OutOfFold { proba: out, models })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lmfuse_classic::KnnParams;
    use lmfuse_core::DenseMatrix;

    #[test]
    fn out_of_fold_rows_are_never_predicted_by_a_model_that_saw_them() {
        // Random labels on distinct points: a 1-nearest-neighbour model recalls every row it
        // was fit on (accuracy 1) and knows nothing about the others (accuracy near 1/2). So
        // out-of-fold accuracy near 1/2 shows no row was predicted by a model fit on it.
        let n = 400;
        let mut rng = SeededRng::new(5);
        let data: Vec<f32> = (0..n * 4)
            .map(|_| rng.below(1000) as f32 / 1000.0)
            .collect();
        let y: Vec<usize> = (0..n).map(|_| rng.below(2)).collect();
        let x = Features::Dense(DenseMatrix::new(n, 4, data).unwrap());
        let params = HeadParams::Knn(KnnParams {
            k: 1,
            ..Default::default()
        });
        let accuracy = |p: &[f32]| {
            p.chunks(2)
                .zip(&y)
                .filter(|(r, &t)| usize::from(r[1] > r[0]) == t)
                .count() as f64
                / n as f64
        };
        let in_sample = params.fit(&x, &y, 2).unwrap().predict_proba(&x).unwrap();
        assert_eq!(accuracy(&in_sample), 1.0);
        let folds = stratified_folds(&y, 5, 1);
        let oof = out_of_fold(&x, &y, 2, &params, &folds).unwrap();
        let a = accuracy(&oof.proba);
        assert!((0.4..0.6).contains(&a), "out-of-fold accuracy {a}");
        // Each fold model recalls its own training rows and predicts the held fold as above.
        assert_eq!(oof.models.len(), 5);
        for (f, m) in oof.models.iter().enumerate() {
            let held: Vec<usize> = (0..n).filter(|&i| folds[i] == f).collect();
            let p = m.predict_proba(&x.select_rows(&held)).unwrap();
            let want: Vec<f32> = held
                .iter()
                .flat_map(|&i| oof.proba[i * 2..i * 2 + 2].to_vec())
                .collect();
            assert_eq!(p, want, "fold {f}");
        }
    }

    #[test]
    fn folds_are_stratified_balanced_and_seeded() {
        let y: Vec<usize> = (0..100).map(|i| usize::from(i % 4 == 0)).collect();
        let f = stratified_folds(&y, 5, 3);
        for fold in 0..5 {
            let rows: Vec<usize> = (0..100).filter(|&i| f[i] == fold).collect();
            assert_eq!(rows.len(), 20);
            assert_eq!(rows.iter().filter(|&&i| y[i] == 1).count(), 5);
        }
        assert_eq!(f, stratified_folds(&y, 5, 3));
        assert_ne!(f, stratified_folds(&y, 5, 4));
    }
}
