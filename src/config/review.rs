//! The `[review]` section: the promise of the labels triage applies by itself.
//! At training, the confidence threshold that keeps `target_precision` on the
//! out-of-fold predictions is chosen and recorded in the card
//! ([`crate::model::routing`]); a prediction under it goes to a person.

use serde::{Deserialize, Serialize};

use super::validate::{Checker, Problem};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewSettings {
    /// The share of automatic labels that must be right: the routing threshold is
    /// the lowest calibrated confidence at which the out-of-fold predictions above it
    /// reach it.
    pub target_precision: f64,
}

impl Default for ReviewSettings {
    fn default() -> Self {
        Self {
            target_precision: 0.95,
        }
    }
}

impl ReviewSettings {
    /// Every problem with this section alone, each with the key and the fix.
    pub fn problems(&self) -> Vec<Problem> {
        let mut c = Checker::default();
        c.check(
            self.target_precision >= 0.5 && self.target_precision < 1.0,
            "review.target_precision",
            || format!("{} is outside 0.5 ..< 1", self.target_precision),
            "use 0.95 (19 automatic labels in 20 right); 1 would send every message to review",
        );
        c.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_impossible_targets_are_refused() {
        assert!(ReviewSettings::default().problems().is_empty());
        for bad in [0.4, 1.0, f64::NAN] {
            let s = ReviewSettings {
                target_precision: bad,
            };
            assert_eq!(s.problems()[0].key, "review.target_precision", "{bad}");
        }
    }
}
