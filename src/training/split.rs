//! Seeded stratified train/test split.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Row indices of the two parts of a split.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// Row indices of each class (`labels` are class indices).
pub fn rows_by_class(labels: &[usize]) -> Vec<Vec<usize>> {
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (row, &label) in labels.iter().enumerate() {
        by_class[label].push(row);
    }
    by_class
}

/// Holds out `test_fraction` of each class (rounded, at least one row when a class
/// has two or more), chosen by a ChaCha8 generator seeded with `seed`: the same
/// labels and seed always give the same split. Both parts are sorted.
pub fn stratified_split(labels: &[usize], test_fraction: f64, seed: u64) -> Split {
    let by_class = rows_by_class(labels);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for mut rows in by_class {
        rows.shuffle(&mut rng);
        let n = rows.len();
        let mut n_test = (n as f64 * test_fraction).round() as usize;
        if n >= 2 {
            n_test = n_test.clamp(1, n - 1);
        } else {
            n_test = 0;
        }
        test.extend_from_slice(&rows[..n_test]);
        train.extend_from_slice(&rows[n_test..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    Split { train, test }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(rows: &[usize], labels: &[usize], class: usize) -> usize {
        rows.iter().filter(|&&r| labels[r] == class).count()
    }

    #[test]
    fn each_class_keeps_its_share() {
        let labels: Vec<usize> = (0..100)
            .map(|i| {
                if i < 70 {
                    0
                } else if i < 90 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let s = stratified_split(&labels, 0.2, 42);
        assert_eq!(count(&s.test, &labels, 0), 14);
        assert_eq!(count(&s.test, &labels, 1), 4);
        assert_eq!(count(&s.test, &labels, 2), 2);
        assert_eq!(s.train.len() + s.test.len(), 100);
    }

    #[test]
    fn parts_are_disjoint_and_cover_every_row() {
        let labels: Vec<usize> = (0..57).map(|i| i % 3).collect();
        let s = stratified_split(&labels, 0.25, 7);
        let mut all = [s.train.clone(), s.test.clone()].concat();
        all.sort_unstable();
        assert_eq!(all, (0..57).collect::<Vec<_>>());
    }

    #[test]
    fn same_seed_same_split_other_seed_other_split() {
        let labels: Vec<usize> = (0..200).map(|i| i % 4).collect();
        let a = stratified_split(&labels, 0.2, 42);
        assert_eq!(a, stratified_split(&labels, 0.2, 42));
        assert_ne!(a.test, stratified_split(&labels, 0.2, 43).test);
    }

    #[test]
    fn tiny_classes_still_land_in_both_parts() {
        // 2 rows at 10% rounds to 0 test rows; the split keeps one for testing.
        let labels = [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
        let s = stratified_split(&labels, 0.1, 1);
        assert_eq!(count(&s.test, &labels, 0), 1);
        assert_eq!(count(&s.train, &labels, 0), 1);
    }
}
