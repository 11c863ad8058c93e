//! The two traits every head implements, after linfa's `Fit` / `Predict` split: hyperparameters
//! ([`FitHead`]) are checked once and fit a model; the fitted model ([`ProbaHead`]) predicts
//! class probabilities and converts itself to and from named tensors for a bundle.

use crate::ClassicError;
use lmfuse_core::{Features, Tensor};
use std::collections::BTreeMap;

/// Hyperparameters of a head.
pub trait FitHead {
    /// The fitted model.
    type Model: ProbaHead;

    /// Validates the hyperparameters; `fit` calls it first.
    fn check(&self) -> Result<(), ClassicError>;

    /// Fits on features `x` with class indices `y` in `0..n_classes`.
    fn fit(&self, x: &Features, y: &[usize], n_classes: usize)
        -> Result<Self::Model, ClassicError>;

    /// Rebuilds a model fit with these hyperparameters from [`ProbaHead::to_tensors`]' output,
    /// checking every name, shape and value.
    fn restore(
        &self,
        n_features: usize,
        n_classes: usize,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<Self::Model, ClassicError>;
}

/// A fitted head.
pub trait ProbaHead {
    /// Input width.
    fn n_features(&self) -> usize;

    /// Number of classes.
    fn n_classes(&self) -> usize;

    /// Class probabilities, `rows × classes` row-major; every row sums to 1.
    fn predict_proba(&self, x: &Features) -> Result<Vec<f32>, ClassicError>;

    /// The fitted state as named tensors (names local to the head; the caller prefixes them).
    fn to_tensors(&self) -> BTreeMap<String, Tensor>;
}

/// Checks rows given for prediction: `expected` columns, every value finite.
pub fn check_input(x: &Features, expected: usize) -> Result<(), ClassicError> {
    if x.cols() != expected {
        return Err(ClassicError::Width {
            expected,
            got: x.cols(),
        });
    }
    if let Some((row, col)) = x.first_non_finite() {
        return Err(ClassicError::NotFinite { row, col });
    }
    Ok(())
}

fn stored(tensor: &str, reason: String) -> ClassicError {
    ClassicError::Stored {
        tensor: tensor.to_string(),
        reason,
    }
}

fn get<'a>(
    tensors: &'a BTreeMap<String, Tensor>,
    name: &str,
    shape: Option<&[usize]>,
) -> Result<&'a Tensor, ClassicError> {
    let t = tensors
        .get(name)
        .ok_or_else(|| stored(name, "missing".into()))?;
    if let Some(shape) = shape {
        if t.shape != shape {
            return Err(stored(
                name,
                format!("shape {:?}, expected {shape:?}", t.shape),
            ));
        }
    }
    if t.shape.iter().product::<usize>() != t.len() {
        return Err(stored(
            name,
            format!("shape {:?} does not hold {} values", t.shape, t.len()),
        ));
    }
    Ok(t)
}

/// The finite f32 values of tensor `name`; `shape`, when given, must match exactly.
pub fn stored_f32<'a>(
    tensors: &'a BTreeMap<String, Tensor>,
    name: &str,
    shape: Option<&[usize]>,
) -> Result<&'a [f32], ClassicError> {
    let t = get(tensors, name, shape)?;
    let v = t
        .as_f32()
        .ok_or_else(|| stored(name, format!("dtype {}, expected F32", t.dtype_name())))?;
    if let Some(p) = v.iter().position(|x| !x.is_finite()) {
        return Err(stored(name, format!("value {p} is NaN or infinite")));
    }
    Ok(v)
}

/// The i32 values of tensor `name`, each checked to lie in `range`; `shape` as [`stored_f32`].
pub fn stored_i32<'a>(
    tensors: &'a BTreeMap<String, Tensor>,
    name: &str,
    shape: Option<&[usize]>,
    range: std::ops::Range<i64>,
) -> Result<&'a [i32], ClassicError> {
    let t = get(tensors, name, shape)?;
    let v = t
        .as_i32()
        .ok_or_else(|| stored(name, format!("dtype {}, expected I32", t.dtype_name())))?;
    if let Some(p) = v.iter().position(|x| !range.contains(&(*x as i64))) {
        return Err(stored(
            name,
            format!("value {} at {p} is outside {range:?}", v[p]),
        ));
    }
    Ok(v)
}
