//! Summary statistics over plain numbers: quantiles, nearest-rank percentiles and
//! medians, for the data checks, the model card and the tools, and the standard
//! normal distribution for the late-label tests. Pure functions; the
//! drift detectors' own statistics (PSI, MMD, class mix) live in `drift::stats`.

use serde::{Deserialize, Serialize};

/// Minimum, median, 90th percentile and maximum of a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Quantiles {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub max: f64,
}

impl Quantiles {
    /// Quantiles of `values` (sorted in place) at the rank `(n - 1) * q` rounded to
    /// the nearest row; all zero when empty.
    pub fn of(values: &mut [f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Self {
            min: values[0],
            p50: at(0.5),
            p90: at(0.9),
            max: values[values.len() - 1],
        }
    }
}

/// Nearest-rank percentile of sorted values (`q` in [0, 1]); `None` when empty.
/// At `q = 0.5` this is the lower median.
pub fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Nearest-rank percentile of sorted values; 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    nearest_rank(sorted, q).unwrap_or(0.0)
}

/// Median of unsorted values: the middle one, or the mean of the two middle ones;
/// 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The standard normal distribution function Φ(z).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * puruspe::erfc(-z / std::f64::consts::SQRT_2)
}

/// The standard normal quantile Φ⁻¹(p) for `p` in (0, 1).
pub fn normal_quantile(p: f64) -> f64 {
    -std::f64::consts::SQRT_2 * puruspe::inverfc(2.0 * p)
}

/// Wilson's lower confidence bound of a proportion `x / n`, one-sided at `alpha`.
pub fn wilson_lower(x: u64, n: u64, alpha: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let (n, p) = (n as f64, x as f64 / n as f64);
    let z = normal_quantile(1.0 - alpha);
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - spread) / (1.0 + z2 / n)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn nearest_rank_at_one_half_is_the_lower_median() {
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 0.5), Some(2));
        assert_eq!(nearest_rank(&[1, 2, 3], 0.5), Some(2));
        assert_eq!(nearest_rank::<usize>(&[], 0.5), None);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn quantiles_round_to_the_nearest_rank() {
        let mut v: Vec<f64> = (0..=10).rev().map(f64::from).collect();
        let q = Quantiles::of(&mut v);
        assert_eq!((q.min, q.p50, q.p90, q.max), (0.0, 5.0, 9.0, 10.0));
        assert_eq!(Quantiles::of(&mut []), Quantiles::default());
    }

    #[test]
    fn the_normal_distribution_matches_its_tables() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-12);
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-2.326_348) - 0.01).abs() < 1e-6);
        assert!((normal_quantile(0.99) - 2.326_348).abs() < 1e-5);
        assert!((normal_quantile(0.5)).abs() < 1e-9);
        assert!((normal_quantile(normal_cdf(-1.3)) + 1.3).abs() < 1e-6);
    }
}
