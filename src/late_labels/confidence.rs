//! The guard's label-free check: has the new champion's confidence collapsed next
//! to the champion it replaced, on the same messages? Late labels take hours; a
//! model whose answers went near-uniform (a broken fit, a wrong graph, a label set
//! that lost its classes) shows it in its first hundred predictions. Pure: paired
//! confidences in, a [`ConfidenceCheck`] out; the join collects them from the
//! prediction records' `confidence` and `shadow.confidence` ([`super::join`]).
//!
//! **Above chance, so label sets of different sizes compare.** A model's
//! confidence in its top class is put on a common scale: `(c - 1/k) / (1 - 1/k)`
//! for k classes, 0 for a uniform guess and 1 for certainty. A three-class model
//! at 0.70 and a two-class one at 0.78 are both at 0.55 above chance.
//!
//! **The test.** With `r` = `rollout.confidence_collapse` and, per message, the
//! published model's (the new champion's) `a_i` and the shadowed one's (the
//! replaced champion's) `b_i` above chance, `d_i = a_i - r * b_i`. The new
//! champion has collapsed when the mean of `d` is significantly below 0: a
//! one-sided z-test on the paired differences, p = Phi(mean / (sd / sqrt(n))), under
//! `rollout.alpha`, once `rollout.guard_predictions` messages stand behind it.
//! Paired, so what the traffic does to both models (hard messages, a new topic)
//! cancels; a new champion with more classes than the old one is not penalised
//! for it.

use std::collections::VecDeque;

use crate::config::RolloutSettings;
use crate::stats::normal_cdf;

/// The check's settings (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConfidenceTest {
    /// `rollout.guard_predictions`.
    pub min_predictions: usize,
    /// `rollout.confidence_collapse`; 0: never collapsed.
    pub collapse: f64,
    /// `rollout.alpha`.
    pub alpha: f64,
}

impl ConfidenceTest {
    pub fn from_settings(rollout: &RolloutSettings) -> Self {
        Self {
            min_predictions: rollout.guard_predictions,
            collapse: rollout.confidence_collapse,
            alpha: rollout.alpha,
        }
    }
}

/// A top-class confidence above chance for `classes` classes, in [0, 1]; 0 for a
/// label set of fewer than two classes or a confidence that is not a number.
pub fn above_chance(confidence: f64, classes: usize) -> f64 {
    if classes < 2 || !confidence.is_finite() {
        return 0.0;
    }
    let chance = 1.0 / classes as f64;
    ((confidence - chance) / (1.0 - chance)).clamp(0.0, 1.0)
}

/// The paired confidences of one (published, shadowed) pair, newest last, at most
/// a bound; the oldest leave first.
#[derive(Debug, Clone, Default)]
pub struct ConfidencePairs {
    pairs: VecDeque<(f32, f32)>,
    /// Changes whenever the pairs do.
    pub revision: u64,
    /// Insertion number of the last pair (the least recent pair is forgotten).
    pub last_seq: u64,
}

impl ConfidencePairs {
    /// Adds one message's (published, shadowed) confidences above chance; returns
    /// the pairs dropped for room (`max`).
    pub fn push(&mut self, published: f64, shadowed: f64, max: usize, seq: u64) -> u64 {
        self.pairs.push_back((published as f32, shadowed as f32));
        self.revision += 1;
        self.last_seq = seq;
        let mut dropped = 0;
        while self.pairs.len() > max.max(1) {
            self.pairs.pop_front();
            dropped += 1;
        }
        dropped
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The pairs, oldest first.
    pub fn to_vec(&self) -> Vec<(f32, f32)> {
        self.pairs.iter().copied().collect()
    }
}

/// One pair's confidences checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConfidenceCheck {
    /// Messages both models scored, behind the figures.
    pub predictions: usize,
    /// Mean confidence above chance of the published model and of the shadowed one.
    pub published_mean: f64,
    pub shadowed_mean: f64,
    /// P-value of "the published model keeps at least `collapse` of the shadowed
    /// one's confidence" (small: it collapsed); 1 when not tested.
    pub p_value: f64,
    pub collapsed: bool,
}

/// Checks `pairs` of (published, shadowed) confidences above chance.
pub fn check(test: &ConfidenceTest, pairs: &[(f32, f32)]) -> ConfidenceCheck {
    let n = pairs.len();
    let mean = |f: &dyn Fn(&(f32, f32)) -> f64| {
        if n == 0 {
            0.0
        } else {
            pairs.iter().map(f).sum::<f64>() / n as f64
        }
    };
    let published_mean = mean(&|p| f64::from(p.0));
    let shadowed_mean = mean(&|p| f64::from(p.1));
    let tested = test.collapse > 0.0 && n >= test.min_predictions.max(2);
    let p_value = if tested {
        let d = |p: &(f32, f32)| f64::from(p.0) - test.collapse * f64::from(p.1);
        let d_mean = mean(&d);
        let var = pairs.iter().map(|p| (d(p) - d_mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let se = (var / n as f64).sqrt();
        if se > 0.0 {
            normal_cdf(d_mean / se)
        } else if d_mean < 0.0 {
            0.0
        } else {
            1.0
        }
    } else {
        1.0
    };
    ConfidenceCheck {
        predictions: n,
        published_mean,
        shadowed_mean,
        p_value,
        collapsed: tested && p_value < test.alpha,
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    const TEST: ConfidenceTest = ConfidenceTest {
        min_predictions: 100,
        collapse: 0.5,
        alpha: 0.05,
    };

    /// `n` messages: the published model's confidences above chance around `a`, the
    /// shadowed one's around `b`, each message's difficulty shared by both.
    fn pairs(seed: u64, n: usize, a: f64, b: f64) -> Vec<(f32, f32)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let hard: f64 = rng.random_range(-0.2..0.2);
                let noise = |rng: &mut ChaCha8Rng| rng.random_range(-0.1..0.1);
                let x = (a + hard + noise(&mut rng)).clamp(0.0, 1.0);
                let y = (b + hard + noise(&mut rng)).clamp(0.0, 1.0);
                (x as f32, y as f32)
            })
            .collect()
    }

    #[test]
    fn confidence_is_put_above_chance_for_the_label_set() {
        assert_eq!(above_chance(0.5, 2), 0.0);
        assert!((above_chance(0.7, 3) - 0.55).abs() < 1e-9);
        assert!((above_chance(0.775, 2) - 0.55).abs() < 1e-9);
        assert_eq!(above_chance(0.2, 3), 0.0, "below chance is clamped");
        assert_eq!(above_chance(1.0, 1), 0.0);
        assert_eq!(above_chance(f64::NAN, 3), 0.0);
    }

    #[test]
    fn a_near_uniform_new_champion_collapses_after_min_predictions_and_not_before() {
        let obs = pairs(1, 300, 0.05, 0.6);
        let before = check(&TEST, &obs[..99]);
        assert!(!before.collapsed && before.p_value == 1.0, "{before:?}");
        let at = check(&TEST, &obs[..100]);
        assert!(at.collapsed && at.p_value < 1e-6, "{at:?}");
        assert!(at.published_mean < 0.1 && at.shadowed_mean > 0.5, "{at:?}");
    }

    #[test]
    fn a_somewhat_less_confident_champion_or_an_unconfident_pair_is_not_a_collapse() {
        // Three quarters of the old confidence: fine.
        let c = check(&TEST, &pairs(2, 400, 0.45, 0.6));
        assert!(!c.collapsed && c.p_value > 0.5, "{c:?}");
        // Both near chance: nothing collapsed that was there before.
        let c = check(&TEST, &pairs(3, 400, 0.04, 0.05));
        assert!(!c.collapsed, "{c:?}");
        // Turned off.
        let off = ConfidenceTest {
            collapse: 0.0,
            ..TEST
        };
        assert!(!check(&off, &pairs(4, 400, 0.0, 0.9)).collapsed);
    }

    #[test]
    fn false_collapses_stay_near_alpha_at_the_boundary() {
        // Exactly half the old confidence: the null's edge. Over 200 windows the
        // rate of "collapsed" must stay near alpha (5%), not far above.
        let false_alarms = (0..200)
            .filter(|seed| check(&TEST, &pairs(100 + seed, 200, 0.3, 0.6)).collapsed)
            .count();
        assert!(false_alarms <= 20, "{false_alarms} of 200");
    }

    #[test]
    fn the_pairs_are_bounded_and_counted() {
        let mut p = ConfidencePairs::default();
        let dropped: u64 = (0..10).map(|i| p.push(0.5, 0.5, 4, i)).sum();
        assert_eq!((p.len(), dropped, p.revision, p.last_seq), (4, 6, 10, 9));
    }
}
