//! The `[rollout]` section: how a challenger proves itself on live traffic (the
//! live race of [`crate::late_labels::race`]) and how long a new champion is
//! watched afterwards (the guard). Owned by `late_labels` and the retrainer;
//! defined here because they sit above `config` in the dependency order.

use serde::{Deserialize, Serialize};

use super::validate::{Checker, Problem};

/// The live race between the champion and a challenger in shadow, and the guard
/// after a promotion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSettings {
    /// Late-labelled messages both models predicted that a race needs before its
    /// paired test may decide; a race keeps at most four times this many (the
    /// oldest leave first).
    pub min_labelled: usize,
    /// Seconds a race may run (from its first labelled message) without a verdict
    /// before the challenger is rejected as expired.
    pub max_wait_s: u64,
    /// Significance level of the race's paired test, for promoting and for losing.
    pub alpha: f64,
    /// Late-labelled messages the previous champion stays in shadow for after a
    /// promotion, so the guard can roll a worse new champion back.
    pub guard_labelled: usize,
    /// The guard's label-free check: the new champion's mean confidence above
    /// chance, on the same messages, below this share of the replaced champion's
    /// is a collapse (significantly, at `alpha`), and rolls back. 0 turns it off.
    pub confidence_collapse: f64,
    /// Messages both champions scored that the confidence check needs before it
    /// may decide; it keeps at most four times this many (the oldest leave first).
    pub guard_predictions: usize,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        Self {
            min_labelled: 200,
            max_wait_s: 24 * 3600,
            alpha: 0.05,
            guard_labelled: 200,
            confidence_collapse: 0.5,
            guard_predictions: 100,
        }
    }
}

impl RolloutSettings {
    /// Every problem with this section alone, each with the key and the fix.
    pub fn problems(&self) -> Vec<Problem> {
        let mut c = Checker::default();
        c.check(
            (20..=100_000).contains(&self.min_labelled),
            "rollout.min_labelled",
            || format!("{} messages is outside 20 ..= 100000", self.min_labelled),
            "use 200 (a paired test on fewer messages sees only large differences)",
        );
        c.check(
            (60..=90 * 24 * 3600).contains(&self.max_wait_s),
            "rollout.max_wait_s",
            || format!("{} s is outside 60 s .. 90 days", self.max_wait_s),
            "use 86400 (a day of late labels)",
        );
        c.check(
            self.alpha > 0.0 && self.alpha < 0.5,
            "rollout.alpha",
            || format!("{} is outside (0, 0.5)", self.alpha),
            "use 0.05",
        );
        c.check(
            (20..=100_000).contains(&self.guard_labelled),
            "rollout.guard_labelled",
            || format!("{} messages is outside 20 ..= 100000", self.guard_labelled),
            "use 200",
        );
        c.check(
            (0.0..1.0).contains(&self.confidence_collapse),
            "rollout.confidence_collapse",
            || format!("{} is outside 0 ..< 1", self.confidence_collapse),
            "use 0.5 (a new champion keeping less than half the old one's confidence above chance has collapsed), or 0 to turn the check off",
        );
        c.check(
            (20..=100_000).contains(&self.guard_predictions),
            "rollout.guard_predictions",
            || {
                format!(
                    "{} messages is outside 20 ..= 100000",
                    self.guard_predictions
                )
            },
            "use 100",
        );
        c.0
    }

    /// Paired observations a race keeps, at most: four times `min_labelled`.
    pub fn max_race_observations(&self) -> usize {
        self.min_labelled.saturating_mul(4).max(1)
    }

    /// Paired confidences the guard's check keeps, at most: four times
    /// `guard_predictions`.
    pub fn max_confidence_pairs(&self) -> usize {
        self.guard_predictions.saturating_mul(4).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &RolloutSettings) -> Vec<&'static str> {
        s.problems().into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn the_defaults_are_valid() {
        assert!(keys(&RolloutSettings::default()).is_empty());
    }

    #[test]
    fn impossible_rollout_values_are_refused_by_key() {
        let s = RolloutSettings {
            min_labelled: 5,
            max_wait_s: 10,
            alpha: 0.0,
            guard_labelled: 0,
            confidence_collapse: 1.0,
            guard_predictions: 5,
        };
        assert_eq!(
            keys(&s),
            vec![
                "rollout.min_labelled",
                "rollout.max_wait_s",
                "rollout.alpha",
                "rollout.guard_labelled",
                "rollout.confidence_collapse",
                "rollout.guard_predictions"
            ]
        );
        let s = RolloutSettings {
            alpha: f64::NAN,
            ..RolloutSettings::default()
        };
        assert_eq!(keys(&s), vec!["rollout.alpha"]);
    }
}
