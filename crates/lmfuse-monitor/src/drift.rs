//! Drift of a stream against a model's training data: the population stability index (PSI)
//! of predicted labels and of confidence, and the shift of the mean embedding. Both sides are
//! a [`Profile`], which adds up event by event so that windows are kept incrementally.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Confidence bins of a profile: ten of equal width over [0, 1].
pub const CONFIDENCE_BINS: usize = 10;

/// Share given to a bin that one side leaves empty, so that PSI stays finite (the usual
/// smoothing of PSI tables).
const EMPTY_SHARE: f64 = 1e-4;

/// What a set of classified texts looked like: counts per predicted label, a histogram of
/// confidence, and the sum of their embeddings (when the classifier embeds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Texts added.
    pub n: u64,
    /// Texts per predicted label.
    pub labels: BTreeMap<String, u64>,
    /// Texts per confidence bin ([`CONFIDENCE_BINS`] of them).
    pub confidence: Vec<u64>,
    /// Sum of the embeddings (absent when the classifier gives none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_sum: Option<Vec<f64>>,
    /// Sum of the embeddings' squared norms (with `embedding_sum`).
    #[serde(default)]
    pub squared_norm_sum: f64,
}

/// The drift figures of one window against a reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftFigures {
    /// Events in the window.
    pub n: u64,
    /// PSI of the predicted labels.
    pub psi_labels: f64,
    /// PSI of the confidence histogram.
    pub psi_confidence: f64,
    /// `1 - cosine` of the window's and the reference's mean embedding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub centroid_shift: Option<f64>,
    /// The squared distance of the two mean embeddings over the reference's total variance:
    /// how far the mean moved, in the reference's own spread, whatever the encoder (a window
    /// of `n` texts drawn from the reference itself reads about `1 / n`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub centroid_distance: Option<f64>,
}

impl Profile {
    /// Adds one classified text (its embedding when there is one).
    pub fn add(&mut self, label: &str, confidence: f32, embedding: Option<&[f32]>) {
        self.n += 1;
        *self.labels.entry(label.to_string()).or_insert(0) += 1;
        if self.confidence.len() != CONFIDENCE_BINS {
            self.confidence = vec![0; CONFIDENCE_BINS];
        }
        self.confidence[confidence_bin(confidence)] += 1;
        let squared = embedding.map_or(0.0, |e| e.iter().map(|&v| f64::from(v).powi(2)).sum());
        match (embedding, &mut self.embedding_sum) {
            (Some(e), Some(sum)) if sum.len() == e.len() => {
                sum.iter_mut().zip(e).for_each(|(s, &v)| *s += f64::from(v));
                self.squared_norm_sum += squared;
            }
            (Some(e), None) if self.n == 1 => {
                self.embedding_sum = Some(e.iter().map(|&v| f64::from(v)).collect());
                self.squared_norm_sum = squared;
            }
            // A text without an embedding (or of another width) leaves the centroid
            // undefined rather than biased.
            _ => self.embedding_sum = None,
        }
    }

    /// Adds every text of `other`.
    pub fn merge(&mut self, other: &Profile) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = other.clone();
            return;
        }
        self.n += other.n;
        for (label, n) in &other.labels {
            *self.labels.entry(label.clone()).or_insert(0) += n;
        }
        self.confidence = self
            .confidence
            .iter()
            .zip(&other.confidence)
            .map(|(a, b)| a + b)
            .collect();
        self.squared_norm_sum += other.squared_norm_sum;
        self.embedding_sum = match (self.embedding_sum.take(), &other.embedding_sum) {
            (Some(mut a), Some(b)) if a.len() == b.len() => {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                Some(a)
            }
            _ => None,
        };
    }

    /// The figures of `self` (a window) against `reference`.
    pub fn against(&self, reference: &Profile) -> DriftFigures {
        let labels: std::collections::BTreeSet<&String> =
            reference.labels.keys().chain(self.labels.keys()).collect();
        let count = |p: &Profile, l: &String| p.labels.get(l).copied().unwrap_or(0);
        let window_labels: Vec<u64> = labels.iter().map(|l| count(self, l)).collect();
        let reference_labels: Vec<u64> = labels.iter().map(|l| count(reference, l)).collect();
        DriftFigures {
            n: self.n,
            psi_labels: psi(&reference_labels, &window_labels),
            psi_confidence: psi(&reference.confidence, &self.confidence),
            centroid_shift: match (&self.embedding_sum, &reference.embedding_sum) {
                (Some(a), Some(b)) if a.len() == b.len() => Some(1.0 - cosine(a, b)),
                _ => None,
            },
            centroid_distance: self.centroid_distance(reference),
        }
    }

    /// `|mean − reference mean|² / reference total variance` (see
    /// [`DriftFigures::centroid_distance`]).
    fn centroid_distance(&self, reference: &Profile) -> Option<f64> {
        let (Some(a), Some(b)) = (&self.embedding_sum, &reference.embedding_sum) else {
            return None;
        };
        if a.len() != b.len() || self.n == 0 || reference.n < 2 {
            return None;
        }
        let (n, rn) = (self.n as f64, reference.n as f64);
        let distance: f64 = a.iter().zip(b).map(|(x, y)| (x / n - y / rn).powi(2)).sum();
        let mean_norm: f64 = b.iter().map(|y| (y / rn).powi(2)).sum();
        let variance = reference.squared_norm_sum / rn - mean_norm;
        (variance > 0.0).then(|| distance / variance)
    }
}

/// The bin of a confidence in [0, 1] (out-of-range and NaN values go to the end bins).
fn confidence_bin(confidence: f32) -> usize {
    let c = if confidence.is_nan() { 0.0 } else { confidence };
    ((c.clamp(0.0, 1.0) * CONFIDENCE_BINS as f32) as usize).min(CONFIDENCE_BINS - 1)
}

/// Population stability index `Σ (q - p) ln(q / p)` of two histograms over the same bins
/// (`p` the reference); a bin one side leaves empty gets [`EMPTY_SHARE`]. Zero when either
/// side is empty.
pub fn psi(reference: &[u64], window: &[u64]) -> f64 {
    let (rn, wn): (u64, u64) = (reference.iter().sum(), window.iter().sum());
    if rn == 0 || wn == 0 {
        return 0.0;
    }
    let share = |c: u64, n: u64| (c as f64 / n as f64).max(EMPTY_SHARE);
    reference
        .iter()
        .zip(window)
        .map(|(&r, &w)| {
            let (p, q) = (share(r, rn), share(w, wn));
            (q - p) * (q / p).ln()
        })
        .sum()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na * nb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(items: &[(&str, f32, [f32; 2])]) -> Profile {
        let mut p = Profile::default();
        for (l, c, e) in items {
            p.add(l, *c, Some(e));
        }
        p
    }

    #[test]
    fn the_same_distribution_has_no_drift_and_a_moved_one_has() {
        let base = profile(&[("a", 0.95, [1.0, 0.0]), ("b", 0.85, [1.0, 0.1])]);
        let same = base.against(&base);
        assert!(same.psi_labels.abs() < 1e-12 && same.psi_confidence.abs() < 1e-12);
        assert!(same.centroid_shift.unwrap().abs() < 1e-12);
        let moved = profile(&[("a", 0.55, [0.0, 1.0]), ("a", 0.51, [0.1, 1.0])]);
        let f = moved.against(&base);
        assert!(f.psi_labels > 1.0, "{f:?}");
        assert!(f.psi_confidence > 1.0, "{f:?}");
        assert!(f.centroid_shift.unwrap() > 0.8, "{f:?}");
    }

    #[test]
    fn the_centroid_distance_of_samples_of_the_reference_is_one_over_their_size() {
        // Points on a seeded circle (total variance 1): windows of 200 drawn from the same
        // distribution read about 1/200; a window moved by 0.5 reads about 0.25.
        let point = |i: u64| {
            // SplitMix64 of i: independent angles.
            let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let a = ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 53) as f32 * std::f32::consts::TAU;
            [a.cos(), a.sin()]
        };
        let mut reference = Profile::default();
        (0..20_000).for_each(|i| reference.add("a", 0.9, Some(&point(i))));
        let mut mean_z = 0.0;
        for w in 0..50 {
            let mut window = Profile::default();
            (0..200).for_each(|i| window.add("a", 0.9, Some(&point(100_000 + w * 200 + i))));
            mean_z += window.against(&reference).centroid_distance.unwrap() * 200.0 / 50.0;
        }
        assert!((0.5..2.0).contains(&mean_z), "{mean_z}");
        let mut moved = Profile::default();
        (0..200).for_each(|i| {
            let p = point(i);
            moved.add("a", 0.9, Some(&[p[0] + 0.5, p[1]]));
        });
        let d = moved.against(&reference).centroid_distance.unwrap();
        assert!((0.2..0.32).contains(&d), "{d}");
    }

    #[test]
    fn psi_matches_a_hand_computed_value() {
        // p = (0.5, 0.5), q = (0.8, 0.2): 0.3 ln 1.6 + (-0.3) ln 0.4.
        let expected = 0.3 * 1.6f64.ln() - 0.3 * 0.4f64.ln();
        assert!((psi(&[5, 5], &[8, 2]) - expected).abs() < 1e-12);
        assert_eq!(psi(&[0, 0], &[1, 2]), 0.0);
    }

    #[test]
    fn merging_equals_adding_one_by_one() {
        let items = [
            ("a", 0.9, [1.0, 2.0]),
            ("b", 0.4, [0.5, 0.0]),
            ("a", 1.0, [0.0, 1.0]),
        ];
        let whole = profile(&items);
        let mut parts = profile(&items[..1]);
        parts.merge(&profile(&items[1..]));
        assert_eq!(whole, parts);
        let mut no_embedding = profile(&items[..1]);
        no_embedding.add("a", 0.5, None);
        assert!(no_embedding.embedding_sum.is_none());
        assert_eq!(confidence_bin(f32::NAN), 0);
        assert_eq!(confidence_bin(1.0), CONFIDENCE_BINS - 1);
    }
}
