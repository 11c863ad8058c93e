//! The tree heads on sparse rows over a vocabulary of 20 million columns: rows × columns as
//! f32 would be 240 GB, and a single f32 per column 80 MB, yet the fits stay within a peak
//! resident size of 64 MB (about 11 MB when written), and they still separate the classes.
//! The only test in its binary, so the process's peak is its own.

use lmfuse_classic::{GbdtParams, RandomForestParams};
use lmfuse_core::{CsrMatrix, Features, SeededRng};

const VOCAB: usize = 20_000_000;

/// `n` rows, 3 classes cycling: 2 of 20 class words and 4 random words each.
fn documents(n: usize, seed: u64) -> (Features, Vec<usize>) {
    let mut rng = SeededRng::new(seed);
    let word = |c: usize, i: usize| ((c * 20 + i) * (VOCAB / 61) + 7) % VOCAB;
    let (mut indptr, mut indices, mut values) = (vec![0], Vec::new(), Vec::new());
    let mut y = Vec::with_capacity(n);
    for r in 0..n {
        let c = r % 3;
        let mut row: Vec<(u32, f32)> = Vec::new();
        for _ in 0..2 {
            row.push((
                word(c, rng.below(20)) as u32,
                0.5 + rng.below(50) as f32 / 100.0,
            ));
        }
        for _ in 0..4 {
            row.push((rng.below(VOCAB) as u32, 0.1 + rng.below(50) as f32 / 100.0));
        }
        row.sort_by_key(|e| e.0);
        row.dedup_by_key(|e| e.0);
        indices.extend(row.iter().map(|e| e.0));
        values.extend(row.iter().map(|e| e.1));
        indptr.push(indices.len());
        y.push(c);
    }
    let m = CsrMatrix::new(n, VOCAB, indptr, indices, values).unwrap();
    (Features::Sparse(m), y)
}

/// Peak resident set size of this process in MB (Linux), or `None`.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn accuracy(p: &[f32], y: &[usize]) -> f64 {
    let hits = p
        .chunks(3)
        .zip(y)
        .filter(|(r, &t)| (0..3).max_by(|&a, &b| r[a].total_cmp(&r[b])) == Some(t))
        .count();
    hits as f64 / y.len() as f64
}

#[test]
fn a_huge_sparse_vocabulary_fits_in_bounded_memory() {
    let (x, y) = documents(4000, 9);
    let train: Vec<usize> = (0..3000).collect();
    let test: Vec<usize> = (3000..4000).collect();
    let (xtr, xte) = (x.select_rows(&train), x.select_rows(&test));
    let rf = RandomForestParams {
        n_trees: 30,
        seed: 1,
        ..Default::default()
    }
    .fit(&xtr, &y[..3000], 3)
    .unwrap();
    let gbdt = GbdtParams {
        max_rounds: 40,
        min_samples_leaf: 3,
        seed: 1,
        ..Default::default()
    }
    .fit(&xtr, &y[..3000], 3)
    .unwrap();
    for (name, p) in [
        ("rf", rf.predict_proba(&xte).unwrap()),
        ("gbdt", gbdt.predict_proba(&xte).unwrap()),
    ] {
        let acc = accuracy(&p, &y[3000..]);
        assert!(acc > 0.9, "{name}: held-out accuracy {acc}");
    }
    if let Some(mb) = peak_rss_mb() {
        println!("peak resident size {mb:.1} MB");
        assert!(mb < 64.0, "peak resident size {mb:.1} MB");
    }
}
