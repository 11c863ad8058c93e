//! Label sets and the seeded random numbers every lmfuse component uses.

use serde::{Deserialize, Serialize};

/// The classes of a task, in a stable order: numerically when every label is an integer,
/// otherwise lexicographically. Index `i` is class `i` everywhere (heads, metrics, bundles).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSet {
    names: Vec<String>,
}

impl LabelSet {
    /// The distinct labels of `labels`, sorted.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names: Vec<String> = labels.into_iter().map(str::to_string).collect();
        names.sort();
        names.dedup();
        if names.iter().all(|n| n.parse::<i64>().is_ok()) {
            names.sort_by_key(|n| n.parse::<i64>().expect("checked"));
        }
        Self { names }
    }

    /// Rebuilds a stored label set, in the stored order.
    pub fn from_names(names: Vec<String>) -> Self {
        Self { names }
    }

    /// Class names in index order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no classes.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Index of `label`.
    pub fn index(&self, label: &str) -> Option<usize> {
        self.names.iter().position(|n| n == label)
    }

    /// Name of class `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }
}

/// FNV-1a (64 bits) of `bytes`: a hash fixed by its definition, for seeding and naming by
/// content (not for hash tables facing untrusted keys).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64: a tiny, fast, well-tested generator whose output is fixed by its definition,
/// so a seed gives the same shuffles and splits on every platform and in every future version
/// (crates like `rand` make no such promise for `StdRng`).
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The generator's state: `SeededRng::new(rng.state())` continues the same sequence.
    pub fn state(&self) -> u64 {
        self.0
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (`n > 0`), without modulo bias.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_its_published_test_vectors() {
        assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(*b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn labels_sort_numerically_when_all_are_integers() {
        let l = LabelSet::from_labels(["10", "2", "2", "1"]);
        assert_eq!(l.names(), ["1", "2", "10"]);
        let l = LabelSet::from_labels(["pos", "neg", "pos"]);
        assert_eq!(l.names(), ["neg", "pos"]);
        assert_eq!(l.index("pos"), Some(1));
        assert_eq!(l.index("other"), None);
    }

    #[test]
    fn rng_is_fixed_by_its_seed() {
        // First outputs of SplitMix64 for seed 0 (reference implementation by S. Vigna).
        let mut r = SeededRng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let mut a = (0..50).collect::<Vec<_>>();
        let mut b = a.clone();
        SeededRng::new(7).shuffle(&mut a);
        SeededRng::new(7).shuffle(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..50).collect::<Vec<_>>());
    }
}
