//! Feature matrices: dense row-major and compressed sparse rows.

/// A dense row-major `rows × cols` matrix of f32.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseMatrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

/// Data whose length or structure does not fit the stated shape.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("matrix data does not fit shape {rows} × {cols}: {reason}")]
pub struct MatrixShapeError {
    /// Rows stated.
    pub rows: usize,
    /// Columns stated.
    pub cols: usize,
    /// What is wrong.
    pub reason: String,
}

impl DenseMatrix {
    /// Wraps row-major data.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self, MatrixShapeError> {
        if data.len() != rows * cols {
            return Err(MatrixShapeError {
                rows,
                cols,
                reason: format!("{} values", data.len()),
            });
        }
        Ok(Self { rows, cols, data })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Row-major values.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Keeps the rows listed in `idx`, in that order.
    pub fn select_rows(&self, idx: &[usize]) -> Self {
        let mut data = Vec::with_capacity(idx.len() * self.cols);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Self {
            rows: idx.len(),
            cols: self.cols,
            data,
        }
    }
}

impl From<crate::Embeddings> for DenseMatrix {
    fn from(e: crate::Embeddings) -> Self {
        let (rows, cols) = (e.rows(), e.dim());
        Self {
            rows,
            cols,
            data: e.into_vec(),
        }
    }
}

/// A sparse `rows × cols` matrix in compressed sparse row form.
#[derive(Debug, Clone, PartialEq)]
pub struct CsrMatrix {
    rows: usize,
    cols: usize,
    indptr: Vec<usize>,
    indices: Vec<u32>,
    values: Vec<f32>,
}

impl CsrMatrix {
    /// Builds from CSR arrays, checking their structure.
    pub fn new(
        rows: usize,
        cols: usize,
        indptr: Vec<usize>,
        indices: Vec<u32>,
        values: Vec<f32>,
    ) -> Result<Self, MatrixShapeError> {
        let err = |reason: String| MatrixShapeError { rows, cols, reason };
        if indptr.len() != rows + 1 || indptr.first() != Some(&0) {
            return Err(err(format!("indptr has {} entries", indptr.len())));
        }
        if indptr.windows(2).any(|w| w[0] > w[1]) || indptr[rows] != indices.len() {
            return Err(err(
                "indptr is not a non-decreasing prefix of the entries".into()
            ));
        }
        if indices.len() != values.len() {
            return Err(err("indices and values differ in length".into()));
        }
        if indices.iter().any(|&c| c as usize >= cols) {
            return Err(err("a column index is out of range".into()));
        }
        Ok(Self {
            rows,
            cols,
            indptr,
            indices,
            values,
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The non-zero entries of a dense matrix.
    pub fn from_dense(m: &DenseMatrix) -> Self {
        let mut indptr = Vec::with_capacity(m.rows() + 1);
        indptr.push(0);
        let (mut indices, mut values) = (Vec::new(), Vec::new());
        for r in 0..m.rows() {
            for (c, &v) in m.row(r).iter().enumerate() {
                if v != 0.0 {
                    indices.push(c as u32);
                    values.push(v);
                }
            }
            indptr.push(indices.len());
        }
        Self {
            rows: m.rows(),
            cols: m.cols(),
            indptr,
            indices,
            values,
        }
    }

    /// The same matrix with its zeros written out.
    pub fn to_dense(&self) -> DenseMatrix {
        let mut data = vec![0.0; self.rows * self.cols];
        for r in 0..self.rows {
            let (c, v) = self.row(r);
            for (&j, &x) in c.iter().zip(v) {
                data[r * self.cols + j as usize] = x;
            }
        }
        DenseMatrix {
            rows: self.rows,
            cols: self.cols,
            data,
        }
    }

    /// Stored entries.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Column indices and values of row `i`.
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[i], self.indptr[i + 1]);
        (&self.indices[a..b], &self.values[a..b])
    }

    /// Keeps the rows listed in `idx`, in that order.
    pub fn select_rows(&self, idx: &[usize]) -> Self {
        let mut indptr = Vec::with_capacity(idx.len() + 1);
        indptr.push(0);
        let (mut indices, mut values) = (Vec::new(), Vec::new());
        for &i in idx {
            let (c, v) = self.row(i);
            indices.extend_from_slice(c);
            values.extend_from_slice(v);
            indptr.push(indices.len());
        }
        Self {
            rows: idx.len(),
            cols: self.cols,
            indptr,
            indices,
            values,
        }
    }
}

/// The input of a classical head: dense or sparse rows of features.
#[derive(Debug, Clone, PartialEq)]
pub enum Features {
    /// Dense rows (embeddings, tabular columns).
    Dense(DenseMatrix),
    /// Sparse rows (TF-IDF).
    Sparse(CsrMatrix),
}

impl Features {
    /// Rows.
    pub fn rows(&self) -> usize {
        match self {
            Features::Dense(m) => m.rows(),
            Features::Sparse(m) => m.rows(),
        }
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        match self {
            Features::Dense(m) => m.cols(),
            Features::Sparse(m) => m.cols(),
        }
    }

    /// Keeps the rows listed in `idx`, in that order.
    pub fn select_rows(&self, idx: &[usize]) -> Self {
        match self {
            Features::Dense(m) => Features::Dense(m.select_rows(idx)),
            Features::Sparse(m) => Features::Sparse(m.select_rows(idx)),
        }
    }

    /// The first (row, column) holding NaN or an infinity, if any.
    pub fn first_non_finite(&self) -> Option<(usize, usize)> {
        match self {
            Features::Dense(m) => m
                .as_slice()
                .iter()
                .position(|v| !v.is_finite())
                .map(|p| (p / m.cols().max(1), p % m.cols().max(1))),
            Features::Sparse(m) => (0..m.rows()).find_map(|r| {
                let (c, v) = m.row(r);
                v.iter()
                    .position(|x| !x.is_finite())
                    .map(|p| (r, c[p] as usize))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_structure_is_checked() {
        assert!(CsrMatrix::new(2, 3, vec![0, 1, 2], vec![0, 2], vec![1.0, 2.0]).is_ok());
        assert!(CsrMatrix::new(2, 3, vec![0, 1], vec![0], vec![1.0]).is_err());
        assert!(CsrMatrix::new(2, 3, vec![0, 2, 1], vec![0, 1], vec![1.0, 2.0]).is_err());
        assert!(CsrMatrix::new(1, 3, vec![0, 1], vec![3], vec![1.0]).is_err());
        assert!(CsrMatrix::new(1, 3, vec![0, 1], vec![0], vec![]).is_err());
    }

    #[test]
    fn dense_and_csr_convert_both_ways() {
        let d = DenseMatrix::new(2, 3, vec![0.0, 1.5, 0.0, -2.0, 0.0, 3.0]).unwrap();
        let c = CsrMatrix::from_dense(&d);
        assert_eq!(c.nnz(), 3);
        assert_eq!(c.row(1), (&[0u32, 2][..], &[-2.0f32, 3.0][..]));
        assert_eq!(c.to_dense(), d);
    }

    #[test]
    fn select_rows_and_find_non_finite() {
        let d = DenseMatrix::new(3, 2, vec![1.0, 2.0, 3.0, f32::NAN, 5.0, 6.0]).unwrap();
        let f = Features::Dense(d);
        assert_eq!(f.first_non_finite(), Some((1, 1)));
        let picked = f.select_rows(&[2, 0]);
        assert_eq!(picked.first_non_finite(), None);
        let s = CsrMatrix::new(
            2,
            4,
            vec![0, 1, 3],
            vec![3, 0, 2],
            vec![1.0, 2.0, f32::INFINITY],
        )
        .unwrap();
        let fs = Features::Sparse(s);
        assert_eq!(fs.first_non_finite(), Some((1, 2)));
        let picked = fs.select_rows(&[1]);
        assert_eq!(picked.rows(), 1);
        assert_eq!(picked.cols(), 4);
    }
}
