//! Passage vectors on disk: one safetensors file (`vectors` f32 `[passages, dim]`, L2-normalised,
//! and `passage_doc` u32 `[passages]`, each passage's document), memory-mapped for search.

use crate::error::{Result, RetrievalError};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::ops::Range;
use std::path::{Path, PathBuf};

const VECTORS: &str = "vectors";
const PASSAGE_DOC: &str = "passage_doc";

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Writes passage vectors (already normalised) atomically.
pub(crate) fn write(path: &Path, dim: usize, vectors: &[f32], passage_doc: &[u32]) -> Result<()> {
    let rows = passage_doc.len();
    debug_assert_eq!(vectors.len(), rows * dim);
    let vec_bytes: Vec<u8> = vectors.iter().flat_map(|x| x.to_le_bytes()).collect();
    let doc_bytes: Vec<u8> = passage_doc.iter().flat_map(|x| x.to_le_bytes()).collect();
    let corrupt = |e: safetensors::SafeTensorError| RetrievalError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let tensors = [
        (
            VECTORS,
            TensorView::new(Dtype::F32, vec![rows, dim], &vec_bytes).map_err(corrupt)?,
        ),
        (
            PASSAGE_DOC,
            TensorView::new(Dtype::U32, vec![rows], &doc_bytes).map_err(corrupt)?,
        ),
    ];
    let bytes = safetensors::serialize(tensors, None).map_err(corrupt)?;
    crate::store::write_atomically(path, &bytes)
}

/// Passage vectors, memory-mapped.
pub(crate) struct Dense {
    path: PathBuf,
    map: Mmap,
    dim: usize,
    vectors: Range<usize>,
    docs: Range<usize>,
    /// Each document's passages: rows `first[d]..first[d + 1]` (passages are stored in
    /// document order).
    first: Vec<usize>,
}

impl Dense {
    /// Maps `path` and checks shapes, types and alignment.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| RetrievalError::io(path, e))?;
        // SAFETY: index files are written once (temp file + rename) and never changed in
        // place, so the mapping cannot change under us.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| RetrievalError::io(path, e))?;
        let corrupt = |reason: String| RetrievalError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let (dim, vectors, docs) = {
            let st = SafeTensors::deserialize(&map).map_err(|e| corrupt(e.to_string()))?;
            let v = st.tensor(VECTORS).map_err(|e| corrupt(e.to_string()))?;
            let d = st.tensor(PASSAGE_DOC).map_err(|e| corrupt(e.to_string()))?;
            let ok = v.dtype() == Dtype::F32
                && d.dtype() == Dtype::U32
                && v.shape().len() == 2
                && d.shape() == [v.shape()[0]];
            if !ok {
                return Err(corrupt("unexpected tensor types or shapes".into()));
            }
            let range = |data: &[u8]| {
                let start = data.as_ptr() as usize - map.as_ptr() as usize;
                start..start + data.len()
            };
            (v.shape()[1], range(v.data()), range(d.data()))
        };
        if vectors.start % 4 != 0 || docs.start % 4 != 0 {
            return Err(corrupt("tensor data is not 4-byte aligned".into()));
        }
        let owners: &[u32] = cast(&map[docs.clone()]);
        if owners.windows(2).any(|w| w[0] > w[1]) {
            return Err(corrupt("passages are not in document order".into()));
        }
        let documents = owners.last().map_or(0, |&d| d as usize + 1);
        let first = (0..=documents)
            .map(|d| owners.partition_point(|&o| (o as usize) < d))
            .collect();
        Ok(Dense {
            path: path.to_path_buf(),
            map,
            dim,
            vectors,
            docs,
            first,
        })
    }

    /// Vector dimension.
    pub(crate) fn dim(&self) -> usize {
        self.dim
    }

    /// All passage vectors, row after row.
    pub(crate) fn vectors(&self) -> &[f32] {
        cast(&self.map[self.vectors.clone()])
    }

    /// Each passage's document.
    pub(crate) fn passage_doc(&self) -> &[u32] {
        cast(&self.map[self.docs.clone()])
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Exact search: every document's best passage score for `query` (a unit vector) by
    /// inner product; `-inf` for a document without passages.
    pub(crate) fn doc_scores(&self, query: &[f32], documents: usize) -> Vec<f32> {
        let mut best = vec![f32::NEG_INFINITY; documents];
        for (row, &doc) in self
            .vectors()
            .chunks_exact(self.dim)
            .zip(self.passage_doc())
        {
            let s = dot(row, query);
            let slot = &mut best[doc as usize];
            if s > *slot {
                *slot = s;
            }
        }
        best
    }
}

impl Dense {
    /// Document `doc`'s best passage score for `query` (a unit vector); `-inf` without
    /// passages.
    pub(crate) fn doc_score(&self, query: &[f32], doc: usize) -> f32 {
        let rows = match (self.first.get(doc), self.first.get(doc + 1)) {
            (Some(&a), Some(&b)) => a..b,
            _ => 0..0,
        };
        let vectors = self.vectors();
        rows.map(|r| dot(&vectors[r * self.dim..(r + 1) * self.dim], query))
            .fold(f32::NEG_INFINITY, f32::max)
    }
}

fn cast<T: Copy>(bytes: &[u8]) -> &[T] {
    // SAFETY: alignment was checked on open; u32 and f32 have no invalid bit patterns.
    let (head, body, tail) = unsafe { bytes.align_to::<T>() };
    assert!(head.is_empty() && tail.is_empty(), "aligned on open");
    body
}

/// Inner product in eight independent lanes, which the compiler turns into SIMD.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The `k` best finite scores, best first, ties to the smaller index.
pub fn top_k(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..scores.len())
        .filter(|&i| scores[i].is_finite())
        .collect();
    let by = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    if idx.len() > k {
        idx.select_nth_unstable_by(k, by);
        idx.truncate(k);
    }
    idx.sort_by(by);
    idx.into_iter().map(|i| (i, scores[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_and_documents_score_as_their_best_passage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dense.safetensors");
        let mut rows = vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8];
        for r in rows.chunks_mut(2) {
            normalize(r);
        }
        write(&path, 2, &rows, &[0, 1, 1]).unwrap();
        let dense = Dense::open(&path).unwrap();
        assert_eq!(dense.dim(), 2);
        assert_eq!(dense.vectors(), rows.as_slice());
        assert_eq!(dense.passage_doc(), [0, 1, 1]);
        let hits = top_k(&dense.doc_scores(&[0.0, 1.0], 3), 5);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [1, 0]);
        assert!((hits[0].1 - 1.0).abs() < 1e-6);
        assert!((dense.doc_score(&[0.0, 1.0], 1) - 1.0).abs() < 1e-6);
        assert!(dense.doc_score(&[0.0, 1.0], 0).abs() < 1e-6);
        assert_eq!(dense.doc_score(&[0.0, 1.0], 7), f32::NEG_INFINITY);
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dense.safetensors");
        write(&path, 2, &[1.0, 0.0], &[0]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(matches!(
            Dense::open(&path),
            Err(RetrievalError::Corrupt { .. })
        ));
    }

    #[test]
    fn dot_matches_the_plain_sum_and_top_k_breaks_ties_by_index() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.1).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-4);
        assert_eq!(
            top_k(&[1.0, 3.0, 3.0, f32::NEG_INFINITY], 2),
            [(1, 3.0), (2, 3.0)]
        );
    }
}
