//! k-nearest neighbours by cosine similarity, on dense or sparse rows.
//!
//! Training rows are L2-normalised once and kept; a query's similarities to all of them come
//! from one matrix product (dense) or an inverted index over the columns (sparse), and the
//! `k` most similar vote for their class.

use crate::{
    check_input, check_training_data, stored_f32, stored_i32, ClassicError, FitHead, ProbaHead,
};
use lmfuse_core::{CsrMatrix, DenseMatrix, Features, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How the neighbours' votes are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KnnWeighting {
    /// Each neighbour votes with its cosine similarity (negative similarities count 0).
    #[default]
    Similarity,
    /// Every neighbour votes 1.
    Uniform,
}

/// Hyperparameters of [`Knn`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KnnParams {
    /// Neighbours that vote (≥ 1; fewer when there are fewer training rows).
    pub k: usize,
    /// Vote weighting.
    pub weighting: KnnWeighting,
    /// Pseudo-vote spread over all classes, so no probability is exactly 0 (≥ 0).
    pub smoothing: f32,
}

impl Default for KnnParams {
    fn default() -> Self {
        Self {
            k: 10,
            weighting: KnnWeighting::Similarity,
            smoothing: 0.01,
        }
    }
}

/// The normalised training rows.
#[derive(Debug, Clone, PartialEq)]
enum Memory {
    Dense(DenseMatrix),
    /// Rows, plus the same matrix by column (`col_ptr`, `(row, value)` postings).
    Sparse {
        rows: CsrMatrix,
        col_ptr: Vec<usize>,
        postings: Vec<(u32, f32)>,
    },
}

/// A fitted kNN classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Knn {
    params: KnnParams,
    n_classes: usize,
    memory: Memory,
    labels: Vec<usize>,
}

fn normalize_dense(m: &DenseMatrix) -> DenseMatrix {
    let mut data = m.as_slice().to_vec();
    for row in data.chunks_exact_mut(m.cols().max(1)) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    DenseMatrix::new(m.rows(), m.cols(), data).expect("same shape")
}

fn normalize_sparse(m: &CsrMatrix) -> CsrMatrix {
    let mut indptr = vec![0];
    let (mut indices, mut values) = (Vec::with_capacity(m.nnz()), Vec::with_capacity(m.nnz()));
    for r in 0..m.rows() {
        let (c, v) = m.row(r);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        indices.extend_from_slice(c);
        values.extend(v.iter().map(|x| if norm > 0.0 { x / norm } else { *x }));
        indptr.push(indices.len());
    }
    CsrMatrix::new(m.rows(), m.cols(), indptr, indices, values).expect("same structure")
}

fn index_columns(m: &CsrMatrix) -> (Vec<usize>, Vec<(u32, f32)>) {
    let mut col_ptr = vec![0usize; m.cols() + 1];
    for r in 0..m.rows() {
        for &c in m.row(r).0 {
            col_ptr[c as usize + 1] += 1;
        }
    }
    for c in 0..m.cols() {
        col_ptr[c + 1] += col_ptr[c];
    }
    let mut fill = col_ptr.clone();
    let mut postings = vec![(0u32, 0.0f32); m.nnz()];
    for r in 0..m.rows() {
        let (cols, vals) = m.row(r);
        for (&c, &v) in cols.iter().zip(vals) {
            postings[fill[c as usize]] = (r as u32, v);
            fill[c as usize] += 1;
        }
    }
    (col_ptr, postings)
}

impl Knn {
    /// Keeps `x`'s rows, L2-normalised unless `normalized` says they already are (a restored
    /// model must keep the exact stored values).
    fn new(
        params: KnnParams,
        n_classes: usize,
        x: &Features,
        labels: Vec<usize>,
        normalized: bool,
    ) -> Self {
        let memory = match x {
            Features::Dense(m) if normalized => Memory::Dense(m.clone()),
            Features::Dense(m) => Memory::Dense(normalize_dense(m)),
            Features::Sparse(m) => {
                let rows = if normalized {
                    m.clone()
                } else {
                    normalize_sparse(m)
                };
                let (col_ptr, postings) = index_columns(&rows);
                Memory::Sparse {
                    rows,
                    col_ptr,
                    postings,
                }
            }
        };
        Self {
            params,
            n_classes,
            memory,
            labels,
        }
    }

    fn n_train(&self) -> usize {
        self.labels.len()
    }

    /// Probabilities from one query's similarities to every training row.
    fn vote(&self, sims: &mut [(f32, u32)], out: &mut [f32]) {
        let k = self.params.k.min(sims.len());
        // Most similar first; ties go to the earlier training row, so results are stable.
        let order = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if k < sims.len() {
            sims.select_nth_unstable_by(k - 1, order);
        }
        let mut votes = vec![0.0f32; self.n_classes];
        for &(s, i) in &sims[..k] {
            votes[self.labels[i as usize]] += match self.params.weighting {
                KnnWeighting::Similarity => s.max(0.0),
                KnnWeighting::Uniform => 1.0,
            };
        }
        let extra = self.params.smoothing / self.n_classes as f32;
        let total: f32 = votes.iter().sum::<f32>() + self.params.smoothing;
        for (o, v) in out.iter_mut().zip(&votes) {
            *o = if total > 0.0 {
                (v + extra) / total
            } else {
                1.0 / self.n_classes as f32
            };
        }
    }
}

impl FitHead for KnnParams {
    type Model = Knn;

    fn check(&self) -> Result<(), ClassicError> {
        if self.k == 0 {
            return Err(ClassicError::InvalidParam {
                name: "k",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        if !(self.smoothing.is_finite() && self.smoothing >= 0.0) {
            return Err(ClassicError::InvalidParam {
                name: "smoothing",
                value: self.smoothing.to_string(),
                reason: "must be a finite number ≥ 0",
            });
        }
        Ok(())
    }

    fn fit(&self, x: &Features, y: &[usize], k: usize) -> Result<Knn, ClassicError> {
        self.check()?;
        check_training_data(x, y, k)?;
        Ok(Knn::new(*self, k, x, y.to_vec(), false))
    }

    fn restore(
        &self,
        n_features: usize,
        n_classes: usize,
        tensors: &BTreeMap<String, Tensor>,
    ) -> Result<Knn, ClassicError> {
        self.check()?;
        let labels = stored_i32(tensors, "labels", None, 0..n_classes as i64)?;
        let n = labels.len();
        let x = if tensors.contains_key("rows") {
            let rows = stored_f32(tensors, "rows", Some(&[n, n_features]))?;
            Features::Dense(DenseMatrix::new(n, n_features, rows.to_vec()).map_err(|e| {
                ClassicError::Stored {
                    tensor: "rows".into(),
                    reason: e.to_string(),
                }
            })?)
        } else {
            let indptr = stored_i32(tensors, "indptr", Some(&[n + 1]), 0..i32::MAX as i64)?;
            let indices = stored_i32(tensors, "indices", None, 0..n_features as i64)?;
            let values = stored_f32(tensors, "values", Some(&[indices.len()]))?;
            let m = CsrMatrix::new(
                n,
                n_features,
                indptr.iter().map(|&v| v as usize).collect(),
                indices.iter().map(|&v| v as u32).collect(),
                values.to_vec(),
            )
            .map_err(|e| ClassicError::Stored {
                tensor: "indptr".into(),
                reason: e.to_string(),
            })?;
            Features::Sparse(m)
        };
        Ok(Knn::new(
            *self,
            n_classes,
            &x,
            labels.iter().map(|&v| v as usize).collect(),
            true,
        ))
    }
}

/// Query rows scored together: bounds the similarity block to `CHUNK × training rows`.
const CHUNK: usize = 256;

impl ProbaHead for Knn {
    fn n_features(&self) -> usize {
        match &self.memory {
            Memory::Dense(m) => m.cols(),
            Memory::Sparse { rows, .. } => rows.cols(),
        }
    }

    fn n_classes(&self) -> usize {
        self.n_classes
    }

    fn predict_proba(&self, x: &Features) -> Result<Vec<f32>, ClassicError> {
        check_input(x, self.n_features())?;
        let (kc, n) = (self.n_classes, self.n_train());
        let mut out = vec![0.0f32; x.rows() * kc];
        match (&self.memory, x) {
            (Memory::Dense(train), _) => {
                let q = match x {
                    Features::Dense(m) => normalize_dense(m),
                    Features::Sparse(m) => normalize_dense(&m.to_dense()),
                };
                let d = train.cols();
                for (start, block) in (0..q.rows()).step_by(CHUNK).zip(out.chunks_mut(CHUNK * kc)) {
                    let rows = block.len() / kc;
                    let qs = &q.as_slice()[start * d..(start + rows) * d];
                    let mut sims = vec![0.0f32; rows * n];
                    // SAFETY: sims is rows×n, qs rows×d and the training rows n×d, all
                    // row-major; the second operand is read transposed through its strides.
                    unsafe {
                        gemm::gemm(
                            rows,
                            n,
                            d,
                            sims.as_mut_ptr(),
                            1,
                            n as isize,
                            false,
                            qs.as_ptr(),
                            1,
                            d as isize,
                            train.as_slice().as_ptr(),
                            d as isize,
                            1,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::Rayon(rayon::current_num_threads()),
                        );
                    }
                    block
                        .par_chunks_mut(kc)
                        .zip(sims.par_chunks(n.max(1)))
                        .for_each(|(o, s)| {
                            let mut pairs: Vec<(f32, u32)> =
                                s.iter().enumerate().map(|(j, &v)| (v, j as u32)).collect();
                            self.vote(&mut pairs, o);
                        });
                }
            }
            (
                Memory::Sparse {
                    col_ptr, postings, ..
                },
                _,
            ) => {
                let q = match x {
                    Features::Sparse(m) => normalize_sparse(m),
                    Features::Dense(m) => normalize_sparse(&CsrMatrix::from_dense(m)),
                };
                out.par_chunks_mut(kc).enumerate().for_each_init(
                    || vec![0.0f32; n],
                    |acc, (r, o)| {
                        acc.fill(0.0);
                        let (cols, vals) = q.row(r);
                        for (&c, &v) in cols.iter().zip(vals) {
                            let c = c as usize;
                            for &(i, w) in &postings[col_ptr[c]..col_ptr[c + 1]] {
                                acc[i as usize] += v * w;
                            }
                        }
                        let mut pairs: Vec<(f32, u32)> = acc
                            .iter()
                            .enumerate()
                            .map(|(j, &v)| (v, j as u32))
                            .collect();
                        self.vote(&mut pairs, o);
                    },
                );
            }
        }
        Ok(out)
    }

    fn to_tensors(&self) -> BTreeMap<String, Tensor> {
        let n = self.n_train();
        let mut t = BTreeMap::from([(
            "labels".to_string(),
            Tensor::i32(vec![n], self.labels.iter().map(|&v| v as i32).collect()),
        )]);
        match &self.memory {
            Memory::Dense(m) => {
                t.insert(
                    "rows".into(),
                    Tensor::f32(vec![n, m.cols()], m.as_slice().to_vec()),
                );
            }
            Memory::Sparse { rows, .. } => {
                let (mut indptr, mut indices, mut values) = (vec![0i32], Vec::new(), Vec::new());
                for r in 0..rows.rows() {
                    let (c, v) = rows.row(r);
                    indices.extend(c.iter().map(|&x| x as i32));
                    values.extend_from_slice(v);
                    indptr.push(indices.len() as i32);
                }
                let nnz = indices.len();
                t.insert("indptr".into(), Tensor::i32(vec![n + 1], indptr));
                t.insert("indices".into(), Tensor::i32(vec![nnz], indices));
                t.insert("values".into(), Tensor::f32(vec![nnz], values));
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::{accuracy, blobs, to_sparse};

    #[test]
    fn one_neighbour_recalls_the_training_set() {
        let (x, y) = blobs(150, 3, 1.5, 2);
        let m = KnnParams {
            k: 1,
            ..Default::default()
        }
        .fit(&x, &y, 3)
        .unwrap();
        assert_eq!(accuracy(&m.predict_proba(&x).unwrap(), &y, 3), 1.0);
    }

    #[test]
    fn dense_and_sparse_agree_and_round_trip() {
        let (x, y) = blobs(120, 3, 0.8, 4);
        let params = KnnParams::default();
        let dense = params.fit(&x, &y, 3).unwrap();
        let sx = to_sparse(&x);
        let sparse = params.fit(&sx, &y, 3).unwrap();
        let (a, b) = (
            dense.predict_proba(&x).unwrap(),
            sparse.predict_proba(&sx).unwrap(),
        );
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() < 1e-5);
        }
        for m in [&dense, &sparse] {
            let back = params.restore(2, 3, &m.to_tensors()).unwrap();
            assert_eq!(
                back.predict_proba(&x).unwrap(),
                m.predict_proba(&x).unwrap()
            );
        }
        assert!(accuracy(&a, &y, 3) > 0.9);
    }

    #[test]
    fn corrupt_tensors_are_rejected() {
        let (x, y) = blobs(30, 3, 0.8, 4);
        let params = KnnParams::default();
        let mut t = params.fit(&to_sparse(&x), &y, 3).unwrap().to_tensors();
        assert!(params.restore(2, 2, &t).is_err(), "label 2 ≥ 2 classes");
        t.insert("indices".into(), Tensor::i32(vec![1], vec![7]));
        assert!(params.restore(2, 3, &t).is_err());
    }
}
