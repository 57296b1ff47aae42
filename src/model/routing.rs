//! The routing threshold with a promise: at training, the lowest confidence at
//! which the out-of-fold predictions at or above it are right at least
//! `review.target_precision` of the time, **by a lower confidence bound** (Wilson,
//! one-sided at [`ALPHA`]), not by the share alone: a threshold chosen where the
//! share just touches the target keeps it on new rows only half the time
//! (measured on reviews: 0.950 out-of-fold, 0.941 held-out). Messages at or above it
//! are labelled automatically; the rest go to a person. Pure: (confidence,
//! predicted class, right) triples in, the thresholds and what they promise out.
//!
//! **Global, and per class beside it.** One threshold for every class serves: it
//! is chosen on all the out-of-fold rows. A threshold per predicted class is
//! chosen the same way on each class's rows alone and recorded beside it, with the
//! coverage it would give, so the card says what per-class routing would gain; it
//! does not serve, because each per-class threshold rests on a k-th of the rows and
//! its promise is the looser for it.

use serde::{Deserialize, Serialize};

use super::logistic::Prediction;
use crate::stats::wilson_lower;

/// The one-sided level of the bound the precision must keep the target by.
pub const ALPHA: f64 = 0.05;

/// One out-of-fold prediction as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub confidence: f64,
    pub predicted: usize,
    pub right: bool,
}

/// A threshold and what it does on the rows it was chosen on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// Confidence at or above which a label is applied automatically; above 1 when
    /// no threshold keeps the target (everything goes to review).
    pub threshold: f64,
    /// Share of the rows labelled automatically, and their precision.
    pub coverage: f64,
    pub precision: f64,
}

/// The routing recorded in the card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routing {
    pub target_precision: f64,
    /// Out-of-fold rows it was chosen on.
    pub rows: u64,
    /// The threshold that serves.
    pub global: Threshold,
    /// Per predicted class (in label order), measured, not served.
    pub per_class: Vec<Threshold>,
    /// Coverage and precision of the per-class thresholds together.
    pub per_class_coverage: f64,
    pub per_class_precision: f64,
    /// The served threshold on the held-out split, rows it was not chosen on: how
    /// close the promise is kept.
    #[serde(default)]
    pub held_out: Option<Threshold>,
}

/// No threshold keeps the target: nothing is automatic.
const NONE: f64 = 1.0 + f64::EPSILON * 4.0;

/// The lowest threshold at which the rows at or above it reach `target` precision
/// by its lower bound (the most coverage that surely keeps it).
pub fn choose(rows: &[Scored], target: f64) -> Threshold {
    let mut sorted: Vec<&Scored> = rows.iter().collect();
    sorted.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    let n = rows.len();
    let mut best = Threshold {
        threshold: NONE,
        coverage: 0.0,
        precision: 1.0,
    };
    let mut right = 0usize;
    for (i, s) in sorted.iter().enumerate() {
        right += usize::from(s.right);
        // Only at the end of a run of equal confidences: a threshold takes them all.
        let last_of_run = sorted
            .get(i + 1)
            .is_none_or(|next| next.confidence < s.confidence);
        let taken = i + 1;
        let precision = right as f64 / taken as f64;
        if last_of_run && wilson_lower(right as u64, taken as u64, ALPHA) >= target {
            best = Threshold {
                threshold: s.confidence,
                coverage: taken as f64 / n as f64,
                precision,
            };
        }
    }
    best
}

/// Each prediction against its true label, as routing sees it.
pub fn scored(predictions: &[Prediction], labels: &[usize]) -> Vec<Scored> {
    predictions
        .iter()
        .zip(labels)
        .map(|(p, &y)| Scored {
            confidence: p.confidence,
            predicted: p.label,
            right: p.label == y,
        })
        .collect()
}

/// Coverage and precision of the rows `auto` keeps out of `rows` (precision 1
/// when it keeps none).
fn kept(rows: &[Scored], auto: impl Fn(&Scored) -> bool) -> (f64, f64) {
    let (mut taken, mut right) = (0usize, 0usize);
    for s in rows.iter().filter(|s| auto(s)) {
        taken += 1;
        right += usize::from(s.right);
    }
    let precision = if taken == 0 {
        1.0
    } else {
        right as f64 / taken as f64
    };
    (taken as f64 / rows.len().max(1) as f64, precision)
}

/// What `threshold` does on `rows`.
pub fn apply(rows: &[Scored], threshold: f64) -> Threshold {
    let (coverage, precision) = kept(rows, |s| s.confidence >= threshold);
    Threshold {
        threshold,
        coverage,
        precision,
    }
}

/// The global threshold for `target`, and the per-class ones measured beside it.
pub fn route(rows: &[Scored], classes: usize, target: f64) -> Routing {
    let global = choose(rows, target);
    let per_class: Vec<Threshold> = (0..classes)
        .map(|k| {
            let of_class: Vec<Scored> = rows.iter().filter(|s| s.predicted == k).copied().collect();
            choose(&of_class, target)
        })
        .collect();
    let (per_class_coverage, per_class_precision) = kept(rows, |s| {
        per_class
            .get(s.predicted)
            .is_some_and(|t| s.confidence >= t.threshold)
    });
    Routing {
        target_precision: target,
        rows: rows.len() as u64,
        global,
        per_class,
        per_class_coverage,
        per_class_precision,
        held_out: None,
    }
}

/// What makes a queued message uncertain, for [`review_priority_by`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uncertainty {
    /// A low top-class probability.
    Confidence,
    /// A small gap between the two likeliest classes.
    Margin,
}

/// The gap between the two largest of `probabilities` (the largest alone with one
/// class; 0 with none).
pub fn margin(probabilities: &[f64]) -> f64 {
    let (mut first, mut second) = (0.0f64, 0.0f64);
    for &p in probabilities {
        if p > first {
            second = first;
            first = p;
        } else if p > second {
            second = p;
        }
    }
    first - second
}

/// How uncertain a prediction is by `by`, in [0, 1]: 1 minus its confidence, or 1
/// minus its margin. Higher is more uncertain.
pub fn review_priority_by(probabilities: &[f64], by: Uncertainty) -> f64 {
    let top = probabilities.iter().copied().fold(0.0f64, f64::max);
    match by {
        Uncertainty::Confidence => 1.0 - top,
        Uncertainty::Margin => 1.0 - margin(probabilities),
    }
}

/// The review queue's order: how much a person's answer to a waiting message is
/// worth to the next model, from its served probabilities (all classes, or only
/// the likeliest few: the two largest decide). **Higher first.** Measured on a
/// replay (`triage review-order`, docs/model-quality.md): the smallest margin
/// between the two likeliest classes first beat first-come order.
pub fn review_priority(probabilities: &[f64]) -> f64 {
    review_priority_by(probabilities, Uncertainty::Margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(confidence: f64, predicted: usize, right: bool) -> Scored {
        Scored {
            confidence,
            predicted,
            right,
        }
    }

    /// `n` copies of each row: enough rows for the bound to sit near the share.
    fn times(rows: &[Scored], n: usize) -> Vec<Scored> {
        rows.iter()
            .flat_map(|r| std::iter::repeat_n(*r, n))
            .collect()
    }

    #[test]
    fn the_lowest_threshold_that_keeps_the_target_by_its_bound_is_chosen() {
        // Sorted: 0.99 R, 0.95 R, 0.9 R, 0.8 W, 0.7 R, 0.6 W; 200 of each.
        let rows = times(
            &[
                s(0.9, 0, true),
                s(0.6, 0, false),
                s(0.99, 1, true),
                s(0.8, 1, false),
                s(0.95, 0, true),
                s(0.7, 1, true),
            ],
            200,
        );
        let t = choose(&rows, 0.75);
        // At 0.7: 800 right of 1,000 = 0.8, lower bound about 0.78 >= 0.75; at 0.6:
        // 800 of 1,200 < 0.75.
        assert_eq!(t.threshold, 0.7);
        assert_eq!((t.coverage, t.precision), (5.0 / 6.0, 0.8));
        let strict = choose(&rows, 0.95);
        assert_eq!((strict.threshold, strict.coverage), (0.9, 0.5));
        // Nothing keeps an impossible target: all to review.
        let none = choose(&[s(0.9, 0, false)], 0.95);
        assert!(none.threshold > 1.0 && none.coverage == 0.0);
        assert_eq!(apply(&rows, none.threshold).coverage, 0.0);
    }

    #[test]
    fn a_share_that_only_touches_the_target_is_not_enough_on_few_rows() {
        // 19 of 20 right is 0.95, but its lower bound is about 0.78.
        let mut rows: Vec<Scored> = (0..19)
            .map(|i| s(0.99 - i as f64 * 0.001, 0, true))
            .collect();
        rows.push(s(0.5, 0, false));
        assert!(choose(&rows, 0.95).threshold > 1.0);
        // The same share on 2,000 rows (1,900 right at the top) keeps it only above the
        // wrong ones: the bound wants the 1,900 alone.
        let many = times(&rows, 100);
        let t = choose(&many, 0.95);
        assert!(t.threshold > 0.5 && t.precision == 1.0, "{t:?}");
    }

    #[test]
    fn the_review_priority_puts_the_closest_call_first() {
        // Order does not matter, nor do the classes after the second.
        let close = [0.1, 0.46, 0.44];
        let clear = [0.7, 0.2, 0.1];
        assert!((margin(&close) - 0.02).abs() < 1e-12);
        assert!((margin(&[0.44, 0.46]) - 0.02).abs() < 1e-12);
        assert_eq!(margin(&[0.8]), 0.8);
        assert!(review_priority(&close) > review_priority(&clear));
        assert!((review_priority(&close) - 0.98).abs() < 1e-12);
        // By confidence, a flat three-way split beats a close two-way one; by
        // margin, the reverse.
        let flat = [0.4, 0.3, 0.3];
        let by = review_priority_by;
        assert!(by(&flat, Uncertainty::Confidence) > by(&close, Uncertainty::Confidence));
        assert!(by(&flat, Uncertainty::Margin) < by(&close, Uncertainty::Margin));
    }

    #[test]
    fn equal_confidences_are_taken_together() {
        let rows = times(&[s(0.9, 0, true), s(0.8, 0, true), s(0.8, 0, false)], 100);
        // 0.8 takes both rows at 0.8: 2 of 3, not 2 of 2.
        let t = choose(&rows, 0.9);
        assert_eq!(t.threshold, 0.9);
    }

    #[test]
    fn per_class_thresholds_are_measured_beside_the_global_one() {
        // Class 0 is sure and right; class 1 is right only when very sure.
        let mut rows = Vec::new();
        for i in 0..100 {
            rows.push(s(0.6 + i as f64 * 0.0005, 0, true));
            rows.push(s(0.7 + i as f64 * 0.0025, 1, i >= 30));
        }
        let r = route(&rows, 2, 0.95);
        assert!(r.per_class[0].threshold <= 0.6 + 1e-9, "{r:?}");
        assert!(r.per_class[1].threshold > 0.77, "{r:?}");
        assert!(r.per_class_coverage > r.global.coverage, "{r:?}");
        assert!(
            r.per_class_precision >= 0.95 && r.global.precision >= 0.95,
            "{r:?}"
        );
    }
}
