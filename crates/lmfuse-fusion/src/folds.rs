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

/// Out-of-fold probabilities of any model: for every fold `f` (`0..=max(folds)`) with rows,
/// `fit_predict(fit_rows, held_rows)` fits on the rows of the other folds and returns class
/// probabilities of the held rows (`held × n_classes`, row-major), which land in the held rows'
/// places. Returns `folds.len() × n_classes`, and what each fold's call returned besides (its
/// model, say), in fold order; a fold with no rows is skipped.
pub fn out_of_fold_by<M, E>(
    folds: &[usize],
    n_classes: usize,
    mut fit_predict: impl FnMut(&[usize], &[usize]) -> Result<(Vec<f32>, M), E>,
) -> Result<(Vec<f32>, Vec<M>), E>
where
    E: From<FusionError>,
{
    let n_folds = folds.iter().copied().max().map_or(0, |m| m + 1);
    if n_folds < 2 {
        return Err(FusionError::Option("out-of-fold predictions need ≥ 2 folds".into()).into());
    }
    let mut out = vec![0.0f32; folds.len() * n_classes];
    let mut extras = Vec::with_capacity(n_folds);
    for f in 0..n_folds {
        let (fit, held): (Vec<usize>, Vec<usize>) = (0..folds.len()).partition(|&i| folds[i] != f);
        if held.is_empty() {
            continue;
        }
        let (p, extra) = fit_predict(&fit, &held)?;
        if p.len() != held.len() * n_classes {
            return Err(FusionError::Shape(format!(
                "fold {f}: {} probabilities for {} held rows of {n_classes} classes",
                p.len(),
                held.len()
            ))
            .into());
        }
        for (j, &i) in held.iter().enumerate() {
            out[i * n_classes..(i + 1) * n_classes]
                .copy_from_slice(&p[j * n_classes..(j + 1) * n_classes]);
        }
        extras.push(extra);
    }
    Ok((out, extras))
}

/// Out-of-fold class probabilities of `params` on `(x, y)`, `rows × n_classes` row-major: the
/// rows of fold `f` are predicted by a model fit on every other fold.
pub fn out_of_fold(
    x: &Features,
    y: &[usize],
    n_classes: usize,
    params: &HeadParams,
    folds: &[usize],
) -> Result<Vec<f32>, FusionError> {
    Ok(fit_out_of_fold(x, y, n_classes, params, folds, |_| ())?.0)
}

/// [`out_of_fold`], also returning the fold models in fold order: each was fit on the same
/// (k-1)/k share of the rows as the one that made a held row's probabilities, so their mean
/// ([`lmfuse_classic::Bag`]) predicts new rows like the out-of-fold rows were predicted.
pub fn out_of_fold_models(
    x: &Features,
    y: &[usize],
    n_classes: usize,
    params: &HeadParams,
    folds: &[usize],
) -> Result<(Vec<f32>, Vec<Head>), FusionError> {
    fit_out_of_fold(x, y, n_classes, params, folds, |m| m)
}

fn fit_out_of_fold<M>(
    x: &Features,
    y: &[usize],
    n_classes: usize,
    params: &HeadParams,
    folds: &[usize],
    keep: impl Fn(Head) -> M,
) -> Result<(Vec<f32>, Vec<M>), FusionError> {
    if folds.len() != y.len() || x.rows() != y.len() {
        return Err(FusionError::Shape(format!(
            "{} feature rows, {} labels, {} fold ids",
            x.rows(),
            y.len(),
            folds.len()
        )));
    }
    out_of_fold_by(folds, n_classes, |fit, held| {
        let fy: Vec<usize> = fit.iter().map(|&i| y[i]).collect();
        let model = params.fit(&x.select_rows(fit), &fy, n_classes)?;
        let p = model.predict_proba(&x.select_rows(held))?;
        Ok((p, keep(model)))
    })
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
        let a = accuracy(&oof);
        assert!((0.4..0.6).contains(&a), "out-of-fold accuracy {a}");
        // The fold models: model f predicts fold f's rows as above, and recalls the rows it
        // was fit on (so it was fit on exactly the other folds).
        let (proba, models) = out_of_fold_models(&x, &y, 2, &params, &folds).unwrap();
        assert_eq!(proba, oof);
        assert_eq!(models.len(), 5);
        for (f, m) in models.iter().enumerate() {
            let (fit, held): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| folds[i] != f);
            let p = m.predict_proba(&x.select_rows(&held)).unwrap();
            let want: Vec<f32> = held
                .iter()
                .flat_map(|&i| oof[i * 2..i * 2 + 2].to_vec())
                .collect();
            assert_eq!(p, want, "fold {f}");
            let fy: Vec<usize> = fit.iter().map(|&i| y[i]).collect();
            assert_eq!(
                accuracy_of(&m.predict_proba(&x.select_rows(&fit)).unwrap(), &fy),
                1.0
            );
        }
    }

    fn accuracy_of(p: &[f32], y: &[usize]) -> f64 {
        p.chunks(2)
            .zip(y)
            .filter(|(r, &t)| usize::from(r[1] > r[0]) == t)
            .count() as f64
            / y.len() as f64
    }

    #[test]
    fn out_of_fold_by_gives_each_held_row_its_own_fold_s_prediction() {
        // Fold f "predicts" every held row as [f, row]: each row must get its own fold's
        // value and index, every fold is called once with the complementary rows, and an
        // empty fold (2 here) is skipped.
        let folds = [0, 1, 3, 0, 1, 3, 3];
        let mut calls = Vec::new();
        let (p, extra) = out_of_fold_by::<usize, FusionError>(&folds, 2, |fit, held| {
            assert!(fit.iter().all(|&i| !held.contains(&i)));
            assert_eq!(fit.len() + held.len(), folds.len());
            calls.push(folds[held[0]]);
            Ok((
                held.iter()
                    .flat_map(|&i| [folds[i] as f32, i as f32])
                    .collect(),
                held.len(),
            ))
        })
        .unwrap();
        assert_eq!(calls, vec![0, 1, 3]);
        assert_eq!(extra, vec![2, 2, 3]);
        for (i, &f) in folds.iter().enumerate() {
            assert_eq!(&p[i * 2..i * 2 + 2], &[f as f32, i as f32]);
        }
        let e = out_of_fold_by::<(), FusionError>(&folds, 2, |_, _| Ok((vec![0.0], ())));
        assert!(e.unwrap_err().to_string().contains("fold 0"));
        let e = out_of_fold_by::<(), FusionError>(&[0, 0], 2, |_, _| Ok((vec![], ())));
        assert!(e.is_err());
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
