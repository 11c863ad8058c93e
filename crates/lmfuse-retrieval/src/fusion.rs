//! Fusing ranked lists: reciprocal-rank fusion and a weighted sum of min-max normalised
//! scores. Both take lists of `(document, score)` sorted best first and return one such list;
//! ties go to the smaller document number, so results are deterministic.

use std::collections::HashMap;

/// RRF's constant (Cormack et al. 2009).
pub const RRF_K: f32 = 60.0;

/// Reciprocal-rank fusion: a document scores `Σ 1 / (k + rank)` over the lists it is in
/// (ranks from 1).
pub fn reciprocal_rank(lists: &[&[(usize, f32)]], k: f32) -> Vec<(usize, f32)> {
    let mut score: HashMap<usize, f32> = HashMap::new();
    for list in lists {
        for (rank, &(doc, _)) in list.iter().enumerate() {
            *score.entry(doc).or_default() += 1.0 / (k + rank as f32 + 1.0);
        }
    }
    sorted(score)
}

/// Weighted score fusion: each list's scores are scaled to 0..1 by its own minimum and
/// maximum, a document missing from a list counts 0 there, and the scaled scores are summed
/// with the lists' weights.
pub fn weighted(lists: &[(&[(usize, f32)], f32)]) -> Vec<(usize, f32)> {
    let mut score: HashMap<usize, f32> = HashMap::new();
    for &(list, weight) in lists {
        let (lo, hi) = list
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), d| {
                (lo.min(d.1), hi.max(d.1))
            });
        let span = hi - lo;
        for &(doc, s) in list {
            let scaled = if span > 0.0 { (s - lo) / span } else { 1.0 };
            *score.entry(doc).or_default() += weight * scaled;
        }
    }
    sorted(score)
}

fn sorted(score: HashMap<usize, f32>) -> Vec<(usize, f32)> {
    let mut out: Vec<(usize, f32)> = score.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrf_rewards_agreement() {
        let a = [(1, 9.0), (2, 5.0), (3, 1.0)];
        let b = [(2, 0.9), (4, 0.8)];
        let fused = reciprocal_rank(&[&a, &b], RRF_K);
        assert_eq!(fused[0].0, 2);
        assert!((fused[0].1 - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-7);
        assert_eq!(fused.len(), 4);
    }

    #[test]
    fn weighted_scales_each_list_and_counts_missing_as_zero() {
        let a = [(1, 10.0), (2, 0.0)];
        let b = [(2, 0.5), (3, 0.25)];
        let fused = weighted(&[(&a, 0.5), (&b, 0.5)]);
        // doc1: 0.5·1; doc2: 0.5·0 + 0.5·1; doc3: 0.5·0 → ties broken by document.
        assert_eq!(fused, vec![(1, 0.5), (2, 0.5), (3, 0.0)]);
    }
}
