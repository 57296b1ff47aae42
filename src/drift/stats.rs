//! Drift statistics as pure functions over plain data.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Shares below this are floored before logs are taken (PSI is undefined at 0).
const FLOOR: f64 = 1e-4;

/// Population stability index between a reference and a current distribution
/// (shares over the same bins): sum (a - e) * ln(a / e). Rules of thumb: < 0.1
/// stable, 0.1-0.25 moderate shift, > 0.25 large shift.
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (e, a) = (e.max(FLOOR), a.max(FLOOR));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// Shares of each class among `labels` (indices below `classes`).
pub fn class_mix(labels: &[usize], classes: usize) -> Vec<f64> {
    let mut mix = vec![0.0; classes];
    for &l in labels {
        if l < classes {
            mix[l] += 1.0;
        }
    }
    let n = labels.len().max(1) as f64;
    mix.iter_mut().for_each(|m| *m /= n);
    mix
}

/// The seed project's rule, made relative to the reference: some class crossed
/// `min` or `max` — predicted for under `min` of the messages where the reference
/// had it at `min` or more, or over `max` where the reference had it at `max` or
/// less. (Taken literally, the rule fires forever on any label set of more than ten
/// balanced classes, where every class is under 10%.)
pub fn class_share_rule(reference: &[f64], mix: &[f64], min: f64, max: f64) -> bool {
    reference
        .iter()
        .zip(mix)
        .any(|(&r, &s)| (s < min && r >= min) || (s > max && r <= max))
}

fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum()
}

/// Maximum mean discrepancy between two samples with a Gaussian kernel, and its
/// permutation-test p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MmdTest {
    /// Unbiased MMD² estimate.
    pub mmd2: f64,
    /// Share of `permutations` label shuffles with an MMD² at least as large.
    pub p_value: f64,
}

/// MMD² (unbiased) from a full kernel matrix, with the first `n` rows as sample X.
fn mmd2_from_kernel(k: &[Vec<f64>], order: &[usize], n: usize) -> f64 {
    let m = order.len() - n;
    let (x, y) = order.split_at(n);
    let mut kxx = 0.0;
    for (i, &a) in x.iter().enumerate() {
        for &b in &x[i + 1..] {
            kxx += k[a][b];
        }
    }
    let mut kyy = 0.0;
    for (i, &a) in y.iter().enumerate() {
        for &b in &y[i + 1..] {
            kyy += k[a][b];
        }
    }
    let mut kxy = 0.0;
    for &a in x {
        for &b in y {
            kxy += k[a][b];
        }
    }
    2.0 * kxx / (n * (n - 1)) as f64 + 2.0 * kyy / (m * (m - 1)) as f64 - 2.0 * kxy / (n * m) as f64
}

/// Two-sample MMD test (as alibi-detect's `MMDDrift`): Gaussian kernel with the
/// median pairwise distance as bandwidth, p-value from `permutations` shuffles.
/// Both samples need at least two rows.
pub fn mmd_test(
    reference: &[Vec<f32>],
    current: &[Vec<f32>],
    permutations: usize,
    seed: u64,
) -> Option<MmdTest> {
    let (n, m) = (reference.len(), current.len());
    if n < 2 || m < 2 {
        return None;
    }
    let all: Vec<&[f32]> = reference.iter().chain(current).map(Vec::as_slice).collect();
    let total = all.len();
    let mut d2 = vec![vec![0.0; total]; total];
    let mut pairwise = Vec::with_capacity(total * (total - 1) / 2);
    for i in 0..total {
        for j in i + 1..total {
            let d = squared_distance(all[i], all[j]);
            d2[i][j] = d;
            d2[j][i] = d;
            pairwise.push(d);
        }
    }
    pairwise.sort_by(f64::total_cmp);
    let median = pairwise[pairwise.len() / 2].max(1e-12);
    let k: Vec<Vec<f64>> = d2
        .iter()
        .map(|row| row.iter().map(|&d| (-d / median).exp()).collect())
        .collect();
    let mut order: Vec<usize> = (0..total).collect();
    let observed = mmd2_from_kernel(&k, &order, n);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut at_least = 0usize;
    for _ in 0..permutations {
        order.shuffle(&mut rng);
        if mmd2_from_kernel(&k, &order, n) >= observed {
            at_least += 1;
        }
    }
    Some(MmdTest {
        mmd2: observed,
        p_value: (at_least + 1) as f64 / (permutations + 1) as f64,
    })
}

/// Mean of `values` (0 when empty).
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// Share of `values` below `threshold`.
pub fn share_below(values: &[f64], threshold: f64) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().filter(|&&v| v < threshold).count() as f64 / values.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn psi_hand_computed() {
        assert_eq!(psi(&[0.5, 0.5], &[0.5, 0.5]), 0.0);
        // (0.7-0.5) ln(0.7/0.5) + (0.3-0.5) ln(0.3/0.5)
        let want = 0.2 * (0.7f64 / 0.5).ln() + (-0.2) * (0.3f64 / 0.5).ln();
        assert!((psi(&[0.5, 0.5], &[0.7, 0.3]) - want).abs() < 1e-12);
        assert!(
            psi(&[0.5, 0.5], &[1.0, 0.0]).is_finite(),
            "empty bins are floored"
        );
    }

    #[test]
    fn class_mix_and_share_rule() {
        let mix = class_mix(&[0, 0, 0, 1], 3);
        assert_eq!(mix, vec![0.75, 0.25, 0.0]);
        let reference = [0.3, 0.3, 0.4];
        assert!(
            class_share_rule(&reference, &mix, 0.1, 0.9),
            "class 2 fell under 10%"
        );
        assert!(!class_share_rule(&reference, &[0.3, 0.3, 0.4], 0.1, 0.9));
        assert!(
            class_share_rule(&[0.6, 0.4], &[0.95, 0.05], 0.01, 0.9),
            "class 0 rose over 90%"
        );
        // Eleven balanced classes sit under 10% in the reference too: no alarm.
        let eleven = vec![1.0 / 11.0; 11];
        assert!(!class_share_rule(&eleven, &eleven, 0.1, 0.9));
    }

    fn gaussian(rng: &mut ChaCha8Rng, n: usize, dim: usize, shift: f32) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                (0..dim)
                    .map(|_| {
                        // Sum of uniforms: close enough to normal for a test.
                        let s: f32 = (0..12).map(|_| rng.random::<f32>()).sum::<f32>() - 6.0;
                        s + shift
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn mmd_does_not_fire_on_the_same_distribution() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let reference = gaussian(&mut rng, 100, 8, 0.0);
        let current = gaussian(&mut rng, 50, 8, 0.0);
        let t = mmd_test(&reference, &current, 200, 7).unwrap();
        assert!(t.p_value > 0.05, "{t:?}");
    }

    #[test]
    fn mmd_fires_on_a_shifted_distribution() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let reference = gaussian(&mut rng, 100, 8, 0.0);
        let current = gaussian(&mut rng, 50, 8, 0.8);
        let t = mmd_test(&reference, &current, 200, 7).unwrap();
        assert!(t.p_value < 0.01, "{t:?}");
        assert!(t.mmd2 > 0.0);
    }

    #[test]
    fn mmd_needs_two_rows_per_sample() {
        assert_eq!(mmd_test(&[vec![0.0]], &[vec![1.0], vec![2.0]], 10, 1), None);
    }

    #[test]
    fn confidence_summaries() {
        assert_eq!(mean(&[0.5, 1.0]), 0.75);
        assert_eq!(share_below(&[0.2, 0.6, 0.9, 0.4], 0.5), 0.5);
        assert_eq!(mean(&[]), 0.0);
    }
}
