//! Stratified, seeded splits.

use lmfuse_core::SeededRng;

/// Splits row indices `0..labels.len()` into two parts, the second holding about `fraction`
/// of each class (at least one row of every class with two or more rows), shuffled by `seed`.
/// Both parts are returned in ascending order.
pub fn stratified_split(labels: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &c) in labels.iter().enumerate() {
        by_class[c].push(i);
    }
    let mut rng = SeededRng::new(seed);
    let (mut keep, mut held) = (Vec::new(), Vec::new());
    for rows in &mut by_class {
        rng.shuffle(rows);
        let mut take = (rows.len() as f64 * fraction).round() as usize;
        if rows.len() >= 2 {
            take = take.clamp(1, rows.len() - 1);
        } else {
            take = 0;
        }
        held.extend_from_slice(&rows[..take]);
        keep.extend_from_slice(&rows[take..]);
    }
    keep.sort_unstable();
    held.sort_unstable();
    (keep, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_class_proportions_and_is_seeded() {
        let labels: Vec<usize> = (0..1000).map(|i| usize::from(i % 10 == 0)).collect();
        let (keep, held) = stratified_split(&labels, 0.2, 13);
        assert_eq!(keep.len() + held.len(), 1000);
        let held_pos = held.iter().filter(|&&i| labels[i] == 1).count();
        assert_eq!(held_pos, 20);
        assert_eq!(held.len(), 200);
        assert_eq!(
            stratified_split(&labels, 0.2, 13),
            (keep.clone(), held.clone())
        );
        assert_ne!(stratified_split(&labels, 0.2, 14).1, held);
        let mut all: Vec<usize> = keep.iter().chain(&held).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn tiny_classes_stay_in_training() {
        // Class 0: round(3 × 0.5) = 2 held out; class 1 has one row, which stays.
        let (keep, held) = stratified_split(&[0, 0, 0, 1], 0.5, 1);
        assert!(keep.contains(&3));
        assert_eq!(held.len(), 2);
        assert!(!held.contains(&3));
    }
}
