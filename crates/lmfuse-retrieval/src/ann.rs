//! Approximate nearest-neighbour search over unit vectors: an HNSW graph (the `hnsw_rs`
//! crate), built in parallel, dumped to and reloaded from a folder.
//!
//! Exact search stays the default; an HNSW graph pays off for large collections (hundreds
//! of thousands of vectors and up), at a recall below 1 that `lmfuse bench ann` measures.
//! Parallel insertion makes the graph depend on thread timing, so two builds of the same
//! vectors may answer slightly differently (exact search is fully deterministic).

use crate::error::{Result, RetrievalError};
use hnsw_rs::anndists::dist::DistDot;
use hnsw_rs::api::AnnT;
use hnsw_rs::hnsw::Hnsw;
use hnsw_rs::hnswio::HnswIo;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The files' common name: `ann.hnsw.graph` and `ann.hnsw.data`.
const BASENAME: &str = "ann";

/// HNSW's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnParams {
    /// Neighbours kept per node and layer (M), 4..=64.
    pub m: usize,
    /// Candidates examined while inserting.
    pub ef_construction: usize,
    /// Candidates examined while searching (at least the k asked for).
    pub ef_search: usize,
}

impl Default for AnnParams {
    fn default() -> Self {
        AnnParams {
            m: 16,
            ef_construction: 100,
            ef_search: 64,
        }
    }
}

impl AnnParams {
    /// Refuses settings outside the ranges above.
    pub fn check(&self) -> Result<()> {
        if !(4..=64).contains(&self.m) || self.ef_construction < self.m || self.ef_search == 0 {
            return Err(RetrievalError::BadQuery {
                index: 0,
                reason: format!(
                    "HNSW settings out of range: m {} (4..=64), ef_construction {} (≥ m), ef_search {} (≥ 1)",
                    self.m, self.ef_construction, self.ef_search
                ),
            });
        }
        Ok(())
    }
}

/// When an index keeps an HNSW graph over its passage vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnPolicy {
    /// The graph's settings.
    pub params: AnnParams,
    /// A generation with fewer passages than this is searched exactly, without a graph
    /// (0: always a graph).
    pub min_passages: usize,
}

impl AnnPolicy {
    /// The passage count from which `auto` builds a graph: below it exact search answers a
    /// query within a few milliseconds on two cores (`lmfuse bench ann`).
    pub const AUTO_MIN_PASSAGES: usize = 100_000;

    /// Whether a generation of `passages` passages gets a graph.
    pub fn applies(&self, passages: usize) -> bool {
        passages > 0 && passages >= self.min_passages
    }
}

/// The sha256 of a saved graph's two files, checked before they are read: hnsw_rs's reader
/// trusts its input (a truncated or altered file makes it panic or allocate without bound).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnDigest {
    /// sha256 of `ann.hnsw.graph`.
    pub graph_sha256: String,
    /// sha256 of `ann.hnsw.data`.
    pub data_sha256: String,
}

/// An HNSW graph over vectors `0..n` (inner product of unit vectors).
pub struct Ann {
    graph: Hnsw<'static, f32, DistDot>,
    params: AnnParams,
}

impl Ann {
    /// Builds the graph over the rows of `vectors` (`dim` values each, unit length), using
    /// rayon's threads.
    pub fn build(vectors: &[f32], dim: usize, params: AnnParams) -> Result<Self> {
        params.check()?;
        let n = vectors.len() / dim.max(1);
        let layers = 16;
        let graph = Hnsw::new(
            params.m,
            n.max(1),
            layers,
            params.ef_construction,
            DistDot {},
        );
        let rows: Vec<(&[f32], usize)> = vectors
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| (v, i))
            .collect();
        for chunk in rows.chunks(10_000) {
            graph.parallel_insert_slice(&chunk.to_vec());
        }
        let mut graph = graph;
        graph.set_searching_mode(true);
        Ok(Ann { graph, params })
    }

    /// The `k` nearest rows to `query` (unit length), as (row, inner product), nearest first.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        self.search_with(query, k, self.params.ef_search)
    }

    /// [`Ann::search`] examining `ef` candidates (at least `k`).
    pub fn search_with(&self, query: &[f32], k: usize, ef: usize) -> Vec<(usize, f32)> {
        self.graph
            .search(query, k, ef.max(k))
            .into_iter()
            .map(|n| (n.d_id, 1.0 - n.distance))
            .collect()
    }

    /// Writes the graph and its vectors into `dir` (`ann.hnsw.graph`, `ann.hnsw.data`),
    /// flushed to disk; returns their digest, which [`Ann::load`] checks.
    pub fn save(&self, dir: &Path) -> Result<AnnDigest> {
        std::fs::create_dir_all(dir).map_err(|e| RetrievalError::io(dir, e))?;
        self.graph
            .file_dump(dir, BASENAME)
            .map_err(|e| RetrievalError::Corrupt {
                path: dir.join(BASENAME),
                reason: format!("cannot write the HNSW graph: {e}"),
            })?;
        let mut digests = Vec::new();
        for path in files(dir) {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| RetrievalError::io(&path, e))?;
            digests
                .push(lmfuse_data::sha256_file(&path).map_err(|e| RetrievalError::io(&path, e))?);
        }
        let [graph_sha256, data_sha256] = <[String; 2]>::try_from(digests).expect("two files");
        Ok(AnnDigest {
            graph_sha256,
            data_sha256,
        })
    }

    /// The settings it was built or loaded with.
    pub fn params(&self) -> AnnParams {
        self.params
    }

    /// Reads a graph written by [`Ann::save`], after checking its files against `digest`.
    pub fn load(dir: &Path, params: AnnParams, digest: &AnnDigest) -> Result<Self> {
        let expected = [&digest.graph_sha256, &digest.data_sha256];
        for (path, want) in files(dir).into_iter().zip(expected) {
            let found =
                lmfuse_data::sha256_file(&path).map_err(|e| RetrievalError::io(&path, e))?;
            if &found != want {
                return Err(RetrievalError::Corrupt {
                    path,
                    reason: "the file's sha256 differs from the one recorded when it was written"
                        .into(),
                });
            }
        }
        // hnsw_rs ties a reloaded graph's lifetime to its loader; the loader is a few paths
        // and flags (the vectors are read into the graph), so it is leaked to give the graph
        // a 'static lifetime.
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, BASENAME)));
        let mut graph: Hnsw<'static, f32, DistDot> =
            io.load_hnsw().map_err(|e| RetrievalError::Corrupt {
                path: dir.join(format!("{BASENAME}.hnsw.graph")),
                reason: format!("cannot read the HNSW graph: {e}"),
            })?;
        graph.set_searching_mode(true);
        Ok(Ann { graph, params })
    }

    /// Vectors in the graph.
    pub fn len(&self) -> usize {
        self.graph.get_nb_point()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The graph's two files in `dir`.
fn files(dir: &Path) -> [std::path::PathBuf; 2] {
    ["hnsw.graph", "hnsw.data"].map(|ext| dir.join(format!("{BASENAME}.{ext}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let mut v: Vec<f32> = (0..dim)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
                })
                .collect();
            crate::dense::normalize(&mut v);
            out.extend(v);
        }
        out
    }

    #[test]
    fn finds_nearly_all_true_neighbours_and_survives_a_save() {
        let (n, dim) = (2000, 16);
        let vectors = unit_vectors(n, dim, 7);
        let ann = Ann::build(&vectors, dim, AnnParams::default()).unwrap();
        assert_eq!(ann.len(), n);
        let queries = unit_vectors(50, dim, 99);
        let mut found = 0;
        for q in queries.chunks_exact(dim) {
            let exact: Vec<f32> = vectors
                .chunks_exact(dim)
                .map(|v| crate::dense::dot(v, q))
                .collect();
            let truth: Vec<usize> = crate::dense::top_k(&exact, 10)
                .into_iter()
                .map(|h| h.0)
                .collect();
            let approx = ann.search(q, 10);
            found += approx.iter().filter(|h| truth.contains(&h.0)).count();
            assert!(
                (approx[0].1 - exact[approx[0].0]).abs() < 1e-4,
                "scores are inner products"
            );
        }
        assert!(
            found as f64 / 500.0 >= 0.9,
            "recall@10 {}",
            found as f64 / 500.0
        );
        let dir = tempfile::tempdir().unwrap();
        let digest = ann.save(dir.path()).unwrap();
        let back = Ann::load(dir.path(), AnnParams::default(), &digest).unwrap();
        let q = &queries[..dim];
        assert_eq!(back.search(q, 5), ann.search(q, 5));
        let nowhere = dir.path().join("nowhere");
        assert!(Ann::load(&nowhere, AnnParams::default(), &digest).is_err());
        let graph = &files(dir.path())[0];
        let bytes = std::fs::read(graph).unwrap();
        std::fs::write(graph, &bytes[..bytes.len() - 8]).unwrap();
        assert!(matches!(
            Ann::load(dir.path(), AnnParams::default(), &digest),
            Err(RetrievalError::Corrupt { .. })
        ));
    }
}
