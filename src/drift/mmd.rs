//! Embedding drift: an MMD detector with a threshold calibrated on the model's own
//! data. Evidently's `mmd` drift method with `bootstrap=True` takes this route (the
//! threshold is a quantile of MMD values between samples of the reference); alibi-detect's
//! `MMDDrift` instead runs a permutation test per batch.
//!
//! Why calibrate instead of permuting: a permutation test's p-value is uniform only on
//! average over reference samples. With one fixed reference sample (the one stored with
//! the model), measured on real reviews, p < 0.01 fired on 2.7% of stationary windows.
//! Calibrating against this very reference sample fixes that, and costs nothing at run
//! time: one MMD² per window instead of a hundred.
//!
//! Why a fitted tail instead of the draws' empirical tail: the calibration draws come
//! from a finite pool (the training rows), live windows from the whole population.
//! Draws without replacement from a pool vary less than live windows do, and the
//! pool's own sampling error shifts them; both grow with `rows per draw / pool rows`.
//! With the 2,000-review model (1,600-row pool) the empirical tail gave 1.1% p < 0.005
//! on stationary windows. So the draws fix a shifted gamma (Pearson type III: mean,
//! variance and skewness matched, the usual approximation of a quadratic statistic
//! such as MMD²), its spread widened by the finite-pool factor, and the p-value comes
//! from that curve, which is also smoother in the far tail than 400 draws are.

use ndarray::ArrayView2;
use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::stats::{empirical_p_value, mean_kernel_within, median_bandwidth, mmd2_with_within};

/// Smallest skewness the fitted tail takes: below it the shape would grow without
/// bound; at it the curve is already a normal for any tail that matters here.
const MIN_SKEWNESS: f64 = 0.02;

/// Calibration draws use at most `pool rows / POOL_PER_DRAW` rows each.
pub const POOL_PER_DRAW: usize = 10;

/// The MMD detector's calibration, stored in the drift reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MmdNull {
    /// Gaussian kernel bandwidth: median squared distance within the reference rows.
    pub bandwidth: f64,
    /// Mean kernel within the reference rows: fixed, so computed once here.
    pub reference_within: f64,
    /// Rows per side: the first `sample_size` rows of the reference sample against
    /// this many live rows.
    pub sample_size: usize,
    /// MMD² of the reference rows against random training rows (no drift), sorted.
    pub null: Vec<f64>,
    /// The null's fitted tail, which p-values come from (absent in references from
    /// before it existed: those use the draws' empirical tail).
    #[serde(default)]
    pub tail: Option<NullTail>,
}

/// A shifted gamma (Pearson type III) fitted to the calibration draws by their mean,
/// variance and skewness, the variance widened by `inflation`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NullTail {
    pub location: f64,
    pub shape: f64,
    pub scale: f64,
    /// Rows the draws came from, and the variance factor that pool size called for:
    /// (pool + rows per draw) / (pool - rows per draw).
    pub pool_rows: usize,
    pub inflation: f64,
}

impl NullTail {
    /// Fits the draws; `None` for fewer than 20 draws or draws that do not vary.
    pub fn fit(draws: &[f64], pool_rows: usize, sample_size: usize) -> Option<Self> {
        let n = draws.len();
        if n < 20 || pool_rows <= sample_size {
            return None;
        }
        let mean = draws.iter().sum::<f64>() / n as f64;
        let moment = |k: i32| draws.iter().map(|v| (v - mean).powi(k)).sum::<f64>() / n as f64;
        let variance = moment(2);
        if !(variance.is_finite() && variance > 0.0) {
            return None;
        }
        let skewness = (moment(3) / variance.powf(1.5)).max(MIN_SKEWNESS);
        let ratio = sample_size as f64 / pool_rows as f64;
        let inflation = (1.0 + ratio) / (1.0 - ratio);
        let sd = (variance * inflation).sqrt();
        let shape = 4.0 / (skewness * skewness);
        let scale = sd * skewness / 2.0;
        Some(Self {
            location: mean - shape * scale,
            shape,
            scale,
            pool_rows,
            inflation,
        })
    }

    /// P(statistic >= `value`) under no drift.
    pub fn p_value(&self, value: f64) -> f64 {
        let x = (value - self.location) / self.scale;
        if !x.is_finite() {
            return if x > 0.0 { 0.0 } else { 1.0 };
        }
        if x <= 0.0 {
            return 1.0;
        }
        puruspe::gammq(self.shape, x).clamp(0.0, 1.0)
    }
}

/// An MMD² and its p-value against the calibration draws.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MmdResult {
    pub mmd2: f64,
    pub p_value: f64,
}

impl MmdNull {
    /// Draws the statistic's distribution under no drift: `draws` times, `sample_size`
    /// random rows of `pool` (training rows: same source as the reference, but not
    /// in it) against the reference rows. `None` when there are too few rows to test.
    pub fn calibrate(
        reference: &[Vec<f32>],
        pool: ArrayView2<'_, f32>,
        sample_size: usize,
        draws: usize,
        seed: u64,
    ) -> Option<Self> {
        // Each draw takes at most a tenth of the pool: draws that share most of
        // their rows vary less than live windows do, and the threshold would come
        // out too low (measured: 88-row draws from 352 training rows gave 6.4%
        // false alarms per window instead of 0.5%).
        let size = sample_size
            .min(reference.len())
            .min(pool.nrows() / POOL_PER_DRAW);
        if size < 10 || draws == 0 {
            return None;
        }
        let x: Vec<&[f32]> = reference[..size].iter().map(Vec::as_slice).collect();
        let bandwidth = median_bandwidth(&x);
        let within = mean_kernel_within(&x, bandwidth);
        let rows: Vec<Vec<f32>> = pool.rows().into_iter().map(|r| r.to_vec()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut null: Vec<f64> = (0..draws)
            .filter_map(|_| {
                let y: Vec<&[f32]> = sample(&mut rng, rows.len(), size)
                    .into_iter()
                    .map(|i| rows[i].as_slice())
                    .collect();
                mmd2_with_within(&x, within, &y, bandwidth)
            })
            .collect();
        null.sort_by(f64::total_cmp);
        let tail = NullTail::fit(&null, rows.len(), size);
        Some(Self {
            bandwidth,
            reference_within: within,
            sample_size: size,
            null,
            tail,
        })
    }

    /// Tests `current` (at least `sample_size` rows, else `None`; extra rows are
    /// not used, so pass them shuffled) against the reference rows.
    pub fn test(&self, reference: &[Vec<f32>], current: &[&[f32]]) -> Option<MmdResult> {
        if current.len() < self.sample_size || reference.len() < self.sample_size {
            return None;
        }
        let x: Vec<&[f32]> = reference[..self.sample_size]
            .iter()
            .map(Vec::as_slice)
            .collect();
        let value = mmd2_with_within(
            &x,
            self.reference_within,
            &current[..self.sample_size],
            self.bandwidth,
        )?;
        let p_value = match &self.tail {
            Some(tail) => tail.p_value(value),
            None => empirical_p_value(&self.null, value),
        };
        Some(MmdResult {
            mmd2: value,
            p_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::Rng;

    fn normal_rows(rng: &mut ChaCha8Rng, n: usize, dim: usize, shift: f32) -> Array2<f32> {
        Array2::from_shape_fn((n, dim), |_| {
            (0..12).map(|_| rng.random::<f32>()).sum::<f32>() - 6.0 + shift
        })
    }

    fn as_vecs(a: &Array2<f32>) -> Vec<Vec<f32>> {
        a.rows().into_iter().map(|r| r.to_vec()).collect()
    }

    #[test]
    fn calibrated_test_is_quiet_on_the_same_source_and_fires_on_a_shift() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let reference = as_vecs(&normal_rows(&mut rng, 60, 6, 0.0));
        let pool = normal_rows(&mut rng, 400, 6, 0.0);
        let null = MmdNull::calibrate(&reference, pool.view(), 40, 200, 1).unwrap();
        assert_eq!(null.sample_size, 40);
        assert_eq!(null.null.len(), 200);
        assert!(null.null.windows(2).all(|w| w[0] <= w[1]), "sorted");

        // Fresh draws from the same source: p-values spread over (0, 1], rarely tiny.
        let mut small = 0;
        for _ in 0..50 {
            let current = as_vecs(&normal_rows(&mut rng, 40, 6, 0.0));
            let rows: Vec<&[f32]> = current.iter().map(Vec::as_slice).collect();
            let r = null.test(&reference, &rows).unwrap();
            small += usize::from(r.p_value < 0.01);
        }
        assert!(small <= 3, "{small} of 50 same-source tests under 0.01");

        let shifted = as_vecs(&normal_rows(&mut rng, 40, 6, 1.0));
        let rows: Vec<&[f32]> = shifted.iter().map(Vec::as_slice).collect();
        let r = null.test(&reference, &rows).unwrap();
        assert!(r.p_value < 0.01, "{r:?}");
        assert!(
            r.p_value < 1.0 / 201.0,
            "beyond every calibration draw, the fitted tail goes on falling: {r:?}"
        );
        assert!(r.mmd2 > null.null[199]);
    }

    #[test]
    fn the_fitted_tail_matches_gamma_draws_and_widens_for_a_small_pool() {
        // Sums of squared normals: a chi-square with 4 degrees of freedom (a gamma
        // with shape 2, scale 2): mean 4, variance 8, 99.5% quantile 14.86.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let normal = |rng: &mut ChaCha8Rng| (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
        let draws: Vec<f64> = (0..4000)
            .map(|_| (0..4).map(|_| normal(&mut rng).powi(2)).sum())
            .collect();
        let huge_pool = NullTail::fit(&draws, 1_000_000_000, 1).unwrap();
        assert!((huge_pool.inflation - 1.0).abs() < 1e-6);
        let p = huge_pool.p_value(14.86);
        assert!(
            (0.003..0.008).contains(&p),
            "p at the true 99.5% quantile: {p}"
        );
        assert_eq!(huge_pool.p_value(huge_pool.location - 1.0), 1.0);
        assert!(
            huge_pool.p_value(5.0) > huge_pool.p_value(6.0),
            "falls with the statistic"
        );
        assert!(huge_pool.p_value(f64::INFINITY) == 0.0);

        // Draws of a tenth of the pool each: variance widened by 1.1 / 0.9.
        let small_pool = NullTail::fit(&draws, 1000, 100).unwrap();
        assert!((small_pool.inflation - 1.1 / 0.9).abs() < 1e-12);
        assert!(
            small_pool.p_value(14.86) > 1.5 * p,
            "a wider tail: fewer false alarms"
        );

        assert_eq!(NullTail::fit(&draws[..10], 1000, 10), None, "too few draws");
        assert_eq!(NullTail::fit(&[1.0; 100], 1000, 10), None, "no spread");
        assert_eq!(NullTail::fit(&draws, 10, 10), None, "the pool is one draw");
    }

    #[test]
    fn calibrations_from_before_the_fitted_tail_use_the_empirical_tail() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let reference = as_vecs(&normal_rows(&mut rng, 40, 3, 0.0));
        let pool = normal_rows(&mut rng, 400, 3, 0.0);
        let mut null = MmdNull::calibrate(&reference, pool.view(), 40, 100, 1).unwrap();
        let mut stored = serde_json::to_value(&null).unwrap();
        stored.as_object_mut().unwrap().remove("tail");
        let old: MmdNull = serde_json::from_value(stored).unwrap();
        assert_eq!(old.tail, None);
        null.tail = None;
        assert_eq!(old, null);
        let shifted = as_vecs(&normal_rows(&mut rng, 40, 3, 2.0));
        let rows: Vec<&[f32]> = shifted.iter().map(Vec::as_slice).collect();
        assert_eq!(old.test(&reference, &rows).unwrap().p_value, 1.0 / 101.0);
    }

    #[test]
    fn too_few_rows_are_not_tested() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let reference = as_vecs(&normal_rows(&mut rng, 5, 3, 0.0));
        let pool = normal_rows(&mut rng, 100, 3, 0.0);
        assert_eq!(MmdNull::calibrate(&reference, pool.view(), 40, 10, 1), None);

        let reference = as_vecs(&normal_rows(&mut rng, 30, 3, 0.0));
        let null = MmdNull::calibrate(&reference, pool.view(), 20, 10, 1).unwrap();
        assert_eq!(null.sample_size, 10, "a tenth of the 100-row pool");
        let current = as_vecs(&normal_rows(&mut rng, 9, 3, 0.0));
        let rows: Vec<&[f32]> = current.iter().map(Vec::as_slice).collect();
        assert_eq!(null.test(&reference, &rows), None, "9 < sample_size 10");
    }
}
