//! Drift statistics as pure functions over plain data.

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

/// The seed project's rule ("a class under 10% or over 90% of predictions"), made
/// relative to the reference so that sampling noise cannot trip it: a class fell
/// under `min` from at least `min` in the reference and to under half its reference
/// share, or rose over `max` from at most `max` and the other classes together fell
/// to under half their reference share. (Taken literally, the rule fires forever on
/// any label set of more than ten balanced classes, where every class is under 10%;
/// without the halving, a class at 10% in the reference flickers across the line.)
pub fn class_share_rule(reference: &[f64], mix: &[f64], min: f64, max: f64) -> bool {
    reference.iter().zip(mix).any(|(&r, &s)| {
        (s < min && r >= min && s < r / 2.0) || (s > max && r <= max && 1.0 - s < (1.0 - r) / 2.0)
    })
}

/// Squared Euclidean distance, in eight independent lanes so the compiler can use
/// SIMD (a single running sum forces one addition at a time).
fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            lanes[i] += d * d;
        }
    }
    f64::from(lanes.iter().sum::<f32>() + tail)
}

/// Gaussian-kernel bandwidth by the median heuristic: the median squared distance
/// between distinct rows of `sample` (floored so identical rows do not divide by 0).
pub fn median_bandwidth(sample: &[&[f32]]) -> f64 {
    let mut d: Vec<f64> = Vec::with_capacity(sample.len() * sample.len().saturating_sub(1) / 2);
    for (i, a) in sample.iter().enumerate() {
        for b in &sample[i + 1..] {
            d.push(squared_distance(a, b));
        }
    }
    if d.is_empty() {
        return 1.0;
    }
    d.sort_by(f64::total_cmp);
    d[d.len() / 2].max(1e-12)
}

/// Maximum mean discrepancy between samples `x` and `y` (unbiased MMD² estimate,
/// Gaussian kernel exp(-d² / bandwidth)). `None` with fewer than two rows a side.
pub fn mmd2(x: &[&[f32]], y: &[&[f32]], bandwidth: f64) -> Option<f64> {
    if x.len() < 2 {
        return None;
    }
    mmd2_with_within(x, mean_kernel_within(x, bandwidth), y, bandwidth)
}

/// [`mmd2`] with the mean kernel within `x` already known (it is fixed when `x` is
/// the reference and only `y` changes).
pub fn mmd2_with_within(x: &[&[f32]], x_within: f64, y: &[&[f32]], bandwidth: f64) -> Option<f64> {
    if x.len() < 2 || y.len() < 2 {
        return None;
    }
    let mut cross = 0.0;
    for a in x {
        for b in y {
            cross += (-squared_distance(a, b) / bandwidth).exp();
        }
    }
    Some(x_within + mean_kernel_within(y, bandwidth) - 2.0 * cross / (x.len() * y.len()) as f64)
}

/// Mean Gaussian kernel over distinct pairs of `x` (the within-sample term of MMD²).
pub fn mean_kernel_within(x: &[&[f32]], bandwidth: f64) -> f64 {
    let mut sum = 0.0;
    for (i, a) in x.iter().enumerate() {
        for b in &x[i + 1..] {
            sum += (-squared_distance(a, b) / bandwidth).exp();
        }
    }
    2.0 * sum / (x.len() * x.len().saturating_sub(1)).max(1) as f64
}

/// Empirical p-value of `observed` against draws of the statistic under no drift:
/// (1 + draws at least as large) / (1 + draws).
pub fn empirical_p_value(null: &[f64], observed: f64) -> f64 {
    let at_least = null.iter().filter(|&&v| v >= observed).count();
    (at_least + 1) as f64 / (null.len() + 1) as f64
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
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

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
        // A class at 11% in the reference and 9% live is noise, not drift.
        assert!(!class_share_rule(&[0.11, 0.89], &[0.09, 0.91], 0.1, 0.95));
        assert!(class_share_rule(&[0.11, 0.89], &[0.05, 0.95], 0.1, 0.96));
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

    fn rows(v: &[Vec<f32>]) -> Vec<&[f32]> {
        v.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn mmd_is_near_zero_on_the_same_distribution_and_large_on_a_shift() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let reference = gaussian(&mut rng, 100, 8, 0.0);
        let same = gaussian(&mut rng, 60, 8, 0.0);
        let shifted = gaussian(&mut rng, 60, 8, 0.8);
        let bw = median_bandwidth(&rows(&reference));
        // Median squared distance of 8-dim unit normals: about 2 * 8.
        assert!((10.0..22.0).contains(&bw), "{bw}");
        let null = mmd2(&rows(&reference), &rows(&same), bw).unwrap();
        let drift = mmd2(&rows(&reference), &rows(&shifted), bw).unwrap();
        assert!(null.abs() < 0.02, "{null}");
        assert!(drift > 5.0 * null.abs().max(0.005), "{drift} vs {null}");
    }

    #[test]
    fn mmd_hand_computed_and_needs_two_rows_per_sample() {
        // x = {0, 0}, y = {1, 1} on a line, bandwidth 1: k(x,x') = k(y,y') = 1,
        // k(x,y) = e^-1, so MMD² = 1 + 1 - 2 e^-1.
        let x = [vec![0.0f32], vec![0.0]];
        let y = [vec![1.0f32], vec![1.0]];
        let got = mmd2(&rows(&x), &rows(&y), 1.0).unwrap();
        assert!((got - (2.0 - 2.0 * (-1.0f64).exp())).abs() < 1e-12, "{got}");
        assert_eq!(mmd2(&rows(&x[..1]), &rows(&y), 1.0), None);
    }

    #[test]
    fn empirical_p_values() {
        let null = [0.1, 0.2, 0.3, 0.4];
        assert_eq!(
            empirical_p_value(&null, 0.5),
            0.2,
            "beyond every draw: 1 / 5"
        );
        assert_eq!(empirical_p_value(&null, 0.25), 0.6);
        assert_eq!(empirical_p_value(&[], 1.0), 1.0);
    }

    #[test]
    fn confidence_summaries() {
        assert_eq!(mean(&[0.5, 1.0]), 0.75);
        assert_eq!(share_below(&[0.2, 0.6, 0.9, 0.4], 0.5), 0.5);
        assert_eq!(mean(&[]), 0.0);
    }
}
