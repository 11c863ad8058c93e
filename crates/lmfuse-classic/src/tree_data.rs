//! The rows the tree heads ([`crate::forest`], [`crate::gbdt`]) read, dense or sparse, without
//! ever writing a sparse matrix out in full: prediction looks each value up in its row, and
//! training keeps the non-zero entries of each column ([`SparseColumns`]), so memory follows
//! the stored values, not rows × columns.

use lmfuse_core::{CsrMatrix, DenseMatrix, Features};
use std::borrow::Cow;

/// One row of features: dense, or sparse with strictly increasing column indices.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Row<'a> {
    /// Every column's value.
    Dense(&'a [f32]),
    /// Column indices and their values; other columns hold 0.
    Sparse(&'a [u32], &'a [f32]),
}

impl Row<'_> {
    /// The value of column `j`.
    #[inline]
    pub(crate) fn get(&self, j: usize) -> f32 {
        match *self {
            Row::Dense(v) => v[j],
            Row::Sparse(idx, val) => match idx.binary_search(&(j as u32)) {
                Ok(p) => val[p],
                Err(_) => 0.0,
            },
        }
    }
}

/// The rows of [`Features`] for lookups by column.
pub(crate) enum Rows<'a> {
    /// Dense rows as they are.
    Dense(&'a DenseMatrix),
    /// Sparse rows, each with strictly increasing column indices.
    Sparse(Cow<'a, CsrMatrix>),
}

impl<'a> Rows<'a> {
    /// The rows of `x`; sparse rows are copied only when some row's columns are not strictly
    /// increasing.
    pub(crate) fn new(x: &'a Features) -> Self {
        match x {
            Features::Dense(m) => Rows::Dense(m),
            Features::Sparse(m) => Rows::Sparse(canonical(m)),
        }
    }

    /// Row `i`.
    #[inline]
    pub(crate) fn row(&self, i: usize) -> Row<'_> {
        match self {
            Rows::Dense(m) => Row::Dense(m.row(i)),
            Rows::Sparse(m) => {
                let (c, v) = m.row(i);
                Row::Sparse(c, v)
            }
        }
    }
}

/// `m` with every row's columns strictly increasing: borrowed when they already are, else a
/// copy in which, of repeated columns, the last entry counts (as in [`CsrMatrix::to_dense`]).
pub(crate) fn canonical(m: &CsrMatrix) -> Cow<'_, CsrMatrix> {
    let sorted = (0..m.rows()).all(|r| m.row(r).0.windows(2).all(|w| w[0] < w[1]));
    if sorted {
        return Cow::Borrowed(m);
    }
    let mut indptr = Vec::with_capacity(m.rows() + 1);
    indptr.push(0);
    let (mut indices, mut values) = (Vec::with_capacity(m.nnz()), Vec::with_capacity(m.nnz()));
    let mut pairs: Vec<(u32, f32)> = Vec::new();
    for r in 0..m.rows() {
        let (c, v) = m.row(r);
        pairs.clear();
        pairs.extend(c.iter().copied().zip(v.iter().copied()));
        // A stable sort keeps repeated columns in entry order; the last of each run is kept.
        pairs.sort_by_key(|&(j, _)| j);
        for (i, &(j, x)) in pairs.iter().enumerate() {
            if pairs.get(i + 1).is_none_or(|next| next.0 != j) {
                indices.push(j);
                values.push(x);
            }
        }
        indptr.push(indices.len());
    }
    let out = CsrMatrix::new(m.rows(), m.cols(), indptr, indices, values)
        .expect("sorting the entries of each row keeps a valid CSR structure");
    Cow::Owned(out)
}

/// Chosen rows of a sparse matrix, by column and by row, non-zero entries only. Only the
/// columns that hold a non-zero value are kept, numbered in column order: a "feature" here
/// is such a number, and [`SparseColumns::columns`] maps it back.
pub(crate) struct SparseColumns {
    /// The matrix column of each feature, strictly increasing.
    pub(crate) columns: Vec<u32>,
    /// Feature `f`'s entries are `col_ptr[f]..col_ptr[f + 1]` of `col_row` (ascending) and
    /// `col_val`.
    pub(crate) col_ptr: Vec<usize>,
    pub(crate) col_row: Vec<u32>,
    pub(crate) col_val: Vec<f32>,
    /// Row `i`'s entries are `row_ptr[i]..row_ptr[i + 1]` of `row_feat` (ascending) and
    /// `row_val`.
    pub(crate) row_ptr: Vec<usize>,
    pub(crate) row_feat: Vec<u32>,
    pub(crate) row_val: Vec<f32>,
}

impl SparseColumns {
    /// The non-zero entries of rows `rows` of `m`, which become rows `0..rows.len()`.
    pub(crate) fn new(m: &CsrMatrix, rows: &[usize]) -> Self {
        let m = canonical(m);
        let mut row_ptr = Vec::with_capacity(rows.len() + 1);
        row_ptr.push(0);
        let (mut cols, mut row_val) = (Vec::new(), Vec::new());
        for &r in rows {
            let (c, v) = m.row(r);
            for (&j, &x) in c.iter().zip(v) {
                if x != 0.0 {
                    cols.push(j);
                    row_val.push(x);
                }
            }
            row_ptr.push(cols.len());
        }
        let mut columns = cols.clone();
        columns.sort_unstable();
        columns.dedup();
        let row_feat: Vec<u32> = cols
            .iter()
            .map(|j| columns.binary_search(j).expect("a kept column") as u32)
            .collect();
        drop(cols);
        // Counting sort of the entries by feature; rows are visited in order, so each
        // feature's rows come out ascending.
        let mut col_ptr = vec![0usize; columns.len() + 1];
        for &f in &row_feat {
            col_ptr[f as usize + 1] += 1;
        }
        for f in 0..columns.len() {
            col_ptr[f + 1] += col_ptr[f];
        }
        let mut next = col_ptr.clone();
        let (mut col_row, mut col_val) = (vec![0u32; row_feat.len()], vec![0f32; row_feat.len()]);
        for i in 0..rows.len() {
            for e in row_ptr[i]..row_ptr[i + 1] {
                let f = row_feat[e] as usize;
                col_row[next[f]] = i as u32;
                col_val[next[f]] = row_val[e];
                next[f] += 1;
            }
        }
        Self {
            columns,
            col_ptr,
            col_row,
            col_val,
            row_ptr,
            row_feat,
            row_val,
        }
    }

    /// Feature `f`'s rows and values.
    pub(crate) fn column(&self, f: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.col_ptr[f], self.col_ptr[f + 1]);
        (&self.col_row[a..b], &self.col_val[a..b])
    }

    /// Row `i`'s features and values.
    pub(crate) fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.row_ptr[i], self.row_ptr[i + 1]);
        (&self.row_feat[a..b], &self.row_val[a..b])
    }

    /// The value of feature `f` in row `i`.
    pub(crate) fn value(&self, f: u32, i: usize) -> f32 {
        let (feats, vals) = self.row(i);
        feats.binary_search(&f).map_or(0.0, |p| vals[p])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_look_values_up_as_the_dense_matrix_holds_them() {
        // Row 0 unsorted with a repeated column (the last entry counts), row 1 empty.
        let m = CsrMatrix::new(
            3,
            5,
            vec![0, 4, 4, 6],
            vec![3, 0, 3, 1, 4, 2],
            vec![1.0, 2.0, 5.0, -1.0, 0.0, 7.0],
        )
        .unwrap();
        let dense = m.to_dense();
        let x = Features::Sparse(m.clone());
        let rows = Rows::new(&x);
        assert!(matches!(&rows, Rows::Sparse(Cow::Owned(_))));
        for i in 0..3 {
            for j in 0..5 {
                assert_eq!(rows.row(i).get(j), dense.row(i)[j], "({i}, {j})");
            }
        }
        let sorted = canonical(&m).into_owned();
        assert!(matches!(canonical(&sorted), Cow::Borrowed(_)));
        assert_eq!(sorted.to_dense(), dense);
    }

    #[test]
    fn sparse_columns_keep_non_zero_entries_of_the_chosen_rows() {
        let m = CsrMatrix::new(
            3,
            1_000_000,
            vec![0, 2, 3, 5],
            vec![999_999, 7, 7, 7, 42],
            vec![1.0, 2.0, 0.0, 3.0, -4.0],
        )
        .unwrap();
        let s = SparseColumns::new(&m, &[2, 0]);
        assert_eq!(s.columns, [7, 42, 999_999]);
        assert_eq!(s.column(0), (&[0u32, 1][..], &[3.0f32, 2.0][..]));
        assert_eq!(s.column(1), (&[0u32][..], &[-4.0f32][..]));
        assert_eq!(s.row(1), (&[0u32, 2][..], &[2.0f32, 1.0][..]));
        assert_eq!(s.value(2, 1), 1.0);
        assert_eq!(s.value(1, 1), 0.0);
    }
}
