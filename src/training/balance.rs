//! Class balancing by oversampling: linfa-logistic has no sample weights, so a
//! class weighs more by having its rows repeated.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::split::rows_by_class;
use crate::config::ClassBalance;

/// Row indices (with repeats) to fit on. For [`ClassBalance::Oversample`], each class
/// gets as many rows as the largest: every row `m / n` times, then a seeded sample
/// of `m % n` distinct rows, so no row is repeated more than once above another of
/// its class. For [`ClassBalance::None`], every row once.
pub fn rows_to_fit(labels: &[usize], balance: ClassBalance, seed: u64) -> Vec<usize> {
    if balance == ClassBalance::None {
        return (0..labels.len()).collect();
    }
    let by_class = rows_by_class(labels);
    let largest = by_class.iter().map(Vec::len).max().unwrap_or(0);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows = Vec::with_capacity(largest * by_class.len());
    for mut members in by_class.into_iter().filter(|m| !m.is_empty()) {
        let n = members.len();
        for _ in 0..largest / n {
            rows.extend_from_slice(&members);
        }
        members.shuffle(&mut rng);
        rows.extend_from_slice(&members[..largest % n]);
    }
    rows.sort_unstable();
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(labels: &[usize], rows: &[usize]) -> Vec<usize> {
        let mut c = vec![0; 3];
        for &r in rows {
            c[labels[r]] += 1;
        }
        c
    }

    #[test]
    fn every_class_gets_as_many_rows_as_the_largest() {
        // 7 / 3 / 2 rows.
        let labels = [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2];
        let rows = rows_to_fit(&labels, ClassBalance::Oversample, 42);
        assert_eq!(counts(&labels, &rows), vec![7, 7, 7]);
        // Class 1 (3 rows): two copies of each, and one of them a third time.
        for row in 7..10 {
            let n = rows.iter().filter(|&&r| r == row).count();
            assert!(n == 2 || n == 3, "row {row} repeated {n} times");
        }
        // Class 0 is untouched.
        assert!((0..7).all(|row| rows.iter().filter(|&&r| r == row).count() == 1));
    }

    #[test]
    fn same_seed_same_rows_and_none_keeps_the_data_as_is() {
        let labels = [0, 0, 0, 1, 2, 2];
        assert_eq!(
            rows_to_fit(&labels, ClassBalance::Oversample, 1),
            rows_to_fit(&labels, ClassBalance::Oversample, 1)
        );
        assert_eq!(
            rows_to_fit(&labels, ClassBalance::None, 1),
            vec![0, 1, 2, 3, 4, 5]
        );
    }
}
