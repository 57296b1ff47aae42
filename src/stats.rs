//! Summary statistics over plain numbers, for the data checks and the model card.
//! Pure functions; the drift detectors' own statistics (PSI, MMD, class mix) live
//! in `drift::stats`.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_round_to_the_nearest_rank() {
        let mut v: Vec<f64> = (0..=10).rev().map(f64::from).collect();
        let q = Quantiles::of(&mut v);
        assert_eq!((q.min, q.p50, q.p90, q.max), (0.0, 5.0, 9.0, 10.0));
        assert_eq!(Quantiles::of(&mut []), Quantiles::default());
    }
}
