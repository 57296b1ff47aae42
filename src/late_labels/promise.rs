//! Is a model version keeping its card's promise? Two questions on its rolling
//! late-label window ([`super::join::VersionWindow`]), each a test that weighs the
//! labelled count behind it rather than a fixed threshold:
//!
//! - **Below its card.** The card promises a held-out macro-F1 and a recall per
//!   class, each measured on a known number of rows (its confusion matrix). The
//!   window is worse when
//!   - its macro-F1 is lower than the card's by more than `retrain.performance_tolerance`,
//!     judged by a two-sample bootstrap of the difference ([`RESAMPLES`] resamples of
//!     the window's pairs and of the card's held-out rows, seeded): the p-value is
//!     the share of resamples where the window comes within the tolerance; or
//!   - one class's recall is lower than the card's by more than the tolerance:
//!     a one-sided two-proportion z-test per class with Agresti-Caffo's adjustment
//!     (one success and one failure added to each side, so a class recalled
//!     perfectly on either side still has a variance), over the classes with at least
//!     [`MIN_CLASS_PAIRS`] pairs in the window, Bonferroni-corrected over them.
//!
//!   Each of the two families gets half of `retrain.performance_alpha`, so the
//!   chance of a false alarm on one window stays under the alpha. A window of fewer
//!   than `retrain.performance_min_labelled` pairs is not tested.
//! - **A new class.** True labels outside the version's label set (a class it never
//!   learned) take a measurable share of the window: the Wilson lower bound of their
//!   share, one-sided at `retrain.performance_alpha`, is at least
//!   `retrain.new_class_min_share`. This needs no card: a version predicting classes
//!   it was not trained on fails here even when its card is gone.
//!
//! The macro-F1 of the window counts the new classes as the join scores them (each
//! a class with F1 0): a model meeting classes it cannot name is not keeping a
//! promise made on the classes it knew.
//!
//! Pure: windows and cards in, a [`PromiseCheck`] out. [`super::follow`] runs it
//! on every tick for the versions whose window changed and
//! [`super::metrics`] exports it as `triage_performance_below_card`,
//! `triage_performance_new_class` and their figures, which `TriagePerformanceDrop`
//! reads.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::join::{VersionWindow, macro_f1};
use crate::config::RetrainSettings;
use crate::registry::card::ModelCard;
use crate::stats::{normal_cdf, wilson_lower};

/// Bootstrap resamples of the macro-F1 difference (the smallest p-value it can
/// give is 1 / (RESAMPLES + 1), well under any alpha worth paging on).
pub const RESAMPLES: usize = 400;
/// Rows drawn from the card's held-out slice per resample, at most: a larger slice
/// is subsampled, which widens its spread (the test errs towards silence) and keeps
/// a check's cost bounded by this and `retrain.performance_window`.
pub const MAX_CARD_DRAWS: usize = 5_000;
/// Pairs of a class in the window below which its recall is not tested.
pub const MIN_CLASS_PAIRS: u64 = 10;
/// The bootstrap's seed: the same window and card give the same p-value.
const SEED: u64 = 0x7269_6167_6521;

/// What a version's card promised on its held-out slice.
#[derive(Debug, Clone, PartialEq)]
pub struct Promise {
    pub labels: Vec<String>,
    pub macro_f1: f64,
    /// `confusion[truth][predicted]` over `labels`.
    pub confusion: Vec<Vec<u64>>,
    /// The card's `review.target_precision`: the share of its automatic labels
    /// promised right (None for cards without a routing threshold).
    pub auto_target: Option<f64>,
}

impl Promise {
    /// The card's held-out evaluation, or None when it has no rows to promise on.
    pub fn from_card(card: &ModelCard) -> Option<Self> {
        let m = &card.metrics;
        let labels: Vec<String> = m.per_class.iter().map(|c| c.label.clone()).collect();
        let square = m.confusion.len() == labels.len()
            && m.confusion.iter().all(|row| row.len() == labels.len());
        let rows: u64 = m.confusion.iter().flatten().sum();
        (square && rows > 0).then(|| Self {
            labels,
            macro_f1: m.macro_f1,
            confusion: m.confusion.clone(),
            auto_target: card.routing.as_ref().map(|r| r.target_precision),
        })
    }

    /// The recall the card measured for `class`, and the rows behind it.
    fn recall(&self, class: &str) -> Option<(u64, u64)> {
        let i = self.labels.iter().position(|l| l == class)?;
        let support: u64 = self.confusion[i].iter().sum();
        (support > 0).then(|| (self.confusion[i][i], support))
    }
}

/// The test's settings (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromiseTest {
    pub alpha: f64,
    pub tolerance: f64,
    pub min_labelled: usize,
    pub new_class_min_share: f64,
}

impl PromiseTest {
    pub fn from_settings(r: &RetrainSettings) -> Self {
        Self {
            alpha: r.performance_alpha,
            tolerance: r.performance_tolerance,
            min_labelled: r.performance_min_labelled,
            new_class_min_share: r.new_class_min_share,
        }
    }
}

/// The class whose recall fell furthest, by its test.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassDrop {
    pub class: String,
    pub live_recall: f64,
    pub promised_recall: f64,
    /// Its p-value, Bonferroni-corrected over the classes tested.
    pub p_value: f64,
}

/// One version's window checked against its promise.
#[derive(Debug, Clone, PartialEq)]
pub struct PromiseCheck {
    /// Pairs in the window.
    pub pairs: usize,
    /// Whether the window had the pairs to be tested (`performance_min_labelled`).
    pub tested: bool,
    /// The card's macro-F1, when the version has a card.
    pub promised_macro_f1: Option<f64>,
    /// P-value of "the window's macro-F1 is within the tolerance of the card's";
    /// 1 when not tested.
    pub macro_f1_p: f64,
    /// The class with the smallest recall p-value, when a class was tested.
    pub worst_class: Option<ClassDrop>,
    /// Share of the window's pairs whose truth is outside the label set, and the
    /// Wilson lower bound of that share.
    pub new_class_share: f64,
    pub new_class_lower: f64,
    /// The verdicts.
    pub below_card: bool,
    pub new_class: bool,
    /// The review promise: automatic labels in the window, the share of them right,
    /// the card's target, and whether the window shows it broken (the Wilson upper
    /// bound of that share, one-sided at `alpha`, under the target, once
    /// `min_labelled` automatic labels stand behind it).
    pub auto_labelled: u64,
    pub auto_precision: f64,
    pub auto_target: Option<f64>,
    pub promise_broken: bool,
}

impl PromiseCheck {
    /// The recall family's p-value (1 when no class was tested).
    pub fn recall_p(&self) -> f64 {
        self.worst_class.as_ref().map_or(1.0, |c| c.p_value)
    }
}

/// Checks `window` against `promise` (None: the version has no readable card, and
/// only the new-class question is asked).
pub fn check(
    test: &PromiseTest,
    window: &VersionWindow,
    promise: Option<&Promise>,
) -> PromiseCheck {
    let n = window.pairs.len();
    let tested = n > 0 && n >= test.min_labelled;
    let known = window.labels.len();
    let outside = window.pairs.iter().filter(|&&(t, _)| t >= known).count();
    let share = if n == 0 {
        0.0
    } else {
        outside as f64 / n as f64
    };
    let lower = wilson_lower(outside as u64, n as u64, test.alpha);
    let (macro_f1_p, worst_class) = match (promise, tested) {
        (Some(p), true) => (
            macro_f1_p_value(window, p, test.tolerance),
            worst_recall(window, p, test.tolerance),
        ),
        _ => (1.0, None),
    };
    let half = test.alpha / 2.0;
    let recall_p = worst_class.as_ref().map_or(1.0, |c| c.p_value);
    let (auto_n, auto_right) = (window.auto_labelled, window.auto_right);
    let auto_target = promise.and_then(|p| p.auto_target);
    let auto_upper = 1.0 - wilson_lower(auto_n - auto_right.min(auto_n), auto_n, test.alpha);
    PromiseCheck {
        pairs: n,
        tested,
        promised_macro_f1: promise.map(|p| p.macro_f1),
        macro_f1_p,
        worst_class,
        new_class_share: share,
        new_class_lower: lower,
        below_card: tested && (macro_f1_p < half || recall_p < half),
        new_class: tested && outside > 0 && lower >= test.new_class_min_share,
        auto_labelled: auto_n,
        auto_precision: if auto_n == 0 {
            1.0
        } else {
            auto_right as f64 / auto_n as f64
        },
        auto_target,
        promise_broken: auto_target.is_some_and(|target| {
            auto_n > 0 && auto_n >= test.min_labelled as u64 && auto_upper < target
        }),
    }
}

/// Per-class counts of a sample of (truth, predicted) pairs over `k` classes
/// (also the live race's, [`super::race`]).
pub(crate) struct Counts {
    support: Vec<u64>,
    predicted: Vec<u64>,
    hits: Vec<u64>,
}

impl Counts {
    pub(crate) fn new(k: usize) -> Self {
        Self {
            support: vec![0; k],
            predicted: vec![0; k],
            hits: vec![0; k],
        }
    }

    pub(crate) fn clear(&mut self) {
        for v in [&mut self.support, &mut self.predicted, &mut self.hits] {
            v.fill(0);
        }
    }

    pub(crate) fn add(&mut self, (truth, predicted): (usize, usize)) {
        self.support[truth] += 1;
        self.predicted[predicted] += 1;
        if truth == predicted {
            self.hits[truth] += 1;
        }
    }

    pub(crate) fn macro_f1(&self) -> f64 {
        macro_f1(&self.support, &self.predicted, &self.hits)
    }
}

/// Bootstrap p-value of H0 "window macro-F1 >= card macro-F1 - tolerance": the
/// share of resamples (with the observed sample counted once, so it is never 0)
/// in which the window comes within the tolerance.
fn macro_f1_p_value(window: &VersionWindow, promise: &Promise, tolerance: f64) -> f64 {
    let k_card = promise.labels.len();
    // The card's rows as (truth, predicted) cells with their cumulative counts.
    let mut cells = Vec::new();
    let mut cumulative = Vec::new();
    let mut total = 0u64;
    for (t, row) in promise.confusion.iter().enumerate() {
        for (p, &count) in row.iter().enumerate() {
            if count > 0 {
                total += count;
                cells.push((t, p));
                cumulative.push(total);
            }
        }
    }
    let card_draws = usize::try_from(total)
        .unwrap_or(usize::MAX)
        .min(MAX_CARD_DRAWS);
    let pairs = &window.pairs;
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut live = Counts::new(window.classes);
    let mut card = Counts::new(k_card);
    let mut within = 1usize;
    for _ in 0..RESAMPLES {
        live.clear();
        for _ in 0..pairs.len() {
            live.add(pairs[rng.random_range(0..pairs.len())]);
        }
        card.clear();
        for _ in 0..card_draws {
            let draw = rng.random_range(0..total);
            let at = cumulative.partition_point(|&c| c <= draw);
            card.add(cells[at]);
        }
        if live.macro_f1() - card.macro_f1() >= -tolerance {
            within += 1;
        }
    }
    within as f64 / (RESAMPLES + 1) as f64
}

/// The class whose recall fell furthest below the card's, by a one-sided
/// Agresti-Caffo z-test of "live recall >= promised recall - tolerance",
/// Bonferroni-corrected over the classes tested.
fn worst_recall(window: &VersionWindow, promise: &Promise, tolerance: f64) -> Option<ClassDrop> {
    let known = window.labels.len();
    let mut support = vec![0u64; known];
    let mut hits = vec![0u64; known];
    for &(t, p) in &window.pairs {
        if t < known {
            support[t] += 1;
            hits[t] += u64::from(t == p);
        }
    }
    let mut tested = Vec::new();
    for (c, class) in window.labels.iter().enumerate() {
        let Some((card_hits, card_support)) = promise.recall(class) else {
            continue;
        };
        if support[c] < MIN_CLASS_PAIRS {
            continue;
        }
        let adjusted = |x: u64, n: u64| (x as f64 + 1.0) / (n as f64 + 2.0);
        let (live, promised) = (
            adjusted(hits[c], support[c]),
            adjusted(card_hits, card_support),
        );
        let variance = live * (1.0 - live) / (support[c] as f64 + 2.0)
            + promised * (1.0 - promised) / (card_support as f64 + 2.0);
        let z = (live - promised + tolerance) / variance.sqrt();
        tested.push(ClassDrop {
            class: class.clone(),
            live_recall: hits[c] as f64 / support[c] as f64,
            promised_recall: card_hits as f64 / card_support as f64,
            p_value: normal_cdf(z),
        });
    }
    let m = tested.len() as f64;
    tested
        .into_iter()
        .map(|mut d| {
            d.p_value = (d.p_value * m).min(1.0);
            d
        })
        .min_by(|a, b| a.p_value.total_cmp(&b.p_value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: PromiseTest = PromiseTest {
        alpha: 0.01,
        tolerance: 0.05,
        min_labelled: 50,
        new_class_min_share: 0.05,
    };

    /// A card on `labels` whose held-out slice has `rows` rows per class, each
    /// class recalled at `recall` (the misses go to the next class).
    fn promise(labels: &[&str], rows: u64, recall: f64) -> Promise {
        let k = labels.len();
        let right = (rows as f64 * recall).round() as u64;
        let confusion = (0..k)
            .map(|t| {
                let mut row = vec![0; k];
                row[t] = right;
                row[(t + 1) % k] += rows - right;
                row
            })
            .collect::<Vec<_>>();
        let mut counts = Counts::new(k);
        for (t, row) in confusion.iter().enumerate() {
            for (p, &n) in row.iter().enumerate() {
                for _ in 0..n {
                    counts.add((t, p));
                }
            }
        }
        Promise {
            labels: labels.iter().map(|l| l.to_string()).collect(),
            macro_f1: counts.macro_f1(),
            confusion,
            auto_target: None,
        }
    }

    /// A window over `labels` (plus two slots for classes outside them) with
    /// `per_class` pairs of each known class recalled at `recall`, and `new` pairs
    /// of a class outside the set predicted as the first class.
    fn window(labels: &[&str], per_class: usize, recall: f64, new: usize) -> VersionWindow {
        let k = labels.len();
        let right = (per_class as f64 * recall).round() as usize;
        let mut pairs = Vec::new();
        for t in 0..k {
            pairs.extend((0..per_class).map(|i| (t, if i < right { t } else { (t + 1) % k })));
        }
        pairs.extend((0..new).map(|_| (k, 0)));
        VersionWindow {
            labels: labels.iter().map(|l| l.to_string()).collect(),
            classes: k + 2,
            pairs,
            auto_labelled: 0,
            auto_right: 0,
            revision: 1,
        }
    }

    const LABELS: [&str; 3] = ["negative", "neutral", "positive"];

    #[test]
    fn a_window_as_good_as_its_card_keeps_the_promise() {
        let p = promise(&LABELS, 200, 0.9);
        let c = check(&TEST, &window(&LABELS, 60, 0.9, 0), Some(&p));
        assert!(c.tested && !c.below_card && !c.new_class, "{c:?}");
        assert!(c.macro_f1_p > 0.3, "{c:?}");
        // A little worse, within the tolerance: still kept.
        let c = check(&TEST, &window(&LABELS, 60, 0.87, 0), Some(&p));
        assert!(!c.below_card, "{c:?}");
    }

    #[test]
    fn a_clear_drop_is_below_the_card_once_enough_pairs_stand_behind_it() {
        let p = promise(&LABELS, 200, 0.9);
        let c = check(&TEST, &window(&LABELS, 60, 0.6, 0), Some(&p));
        assert!(c.below_card, "{c:?}");
        assert!(c.macro_f1_p < 0.005, "{c:?}");
        let worst = c.worst_class.as_ref().unwrap();
        assert!(
            worst.p_value < 0.005 && (worst.live_recall - 0.6).abs() < 0.02,
            "{worst:?}"
        );
        // The same drop on too few pairs is not tested at all...
        let c = check(&TEST, &window(&LABELS, 10, 0.6, 0), Some(&p));
        assert!(!c.tested && !c.below_card && c.macro_f1_p == 1.0, "{c:?}");
        // ...and on a few more it is tested but not yet significant.
        let c = check(
            &PromiseTest {
                min_labelled: 12,
                ..TEST
            },
            &window(&LABELS, 5, 0.8, 0),
            Some(&p),
        );
        assert!(c.tested && !c.below_card, "{c:?}");
    }

    #[test]
    fn one_class_collapsing_is_caught_by_its_recall() {
        let p = promise(&LABELS, 300, 0.9);
        let mut w = window(&LABELS, 200, 0.9, 0);
        // Class 1 (neutral) now recalled at 0.6.
        let mut seen = 0;
        for pair in w.pairs.iter_mut().filter(|(t, _)| *t == 1) {
            seen += 1;
            pair.1 = if seen <= 120 { 1 } else { 2 };
        }
        let c = check(&TEST, &w, Some(&p));
        let worst = c.worst_class.as_ref().unwrap();
        assert_eq!(worst.class, "neutral");
        assert!(c.below_card && worst.p_value < 0.005, "{c:?}");
    }

    #[test]
    fn a_perfect_card_and_a_perfect_window_do_not_alarm() {
        let p = promise(&LABELS, 50, 1.0);
        let c = check(&TEST, &window(&LABELS, 40, 1.0, 0), Some(&p));
        assert!(!c.below_card, "{c:?}");
        assert!(c.worst_class.unwrap().p_value > 0.5);
    }

    #[test]
    fn a_class_never_learned_is_found_by_its_share() {
        let two = ["negative", "positive"];
        // 60 pairs of a class outside the set among 160: share 0.375.
        let c = check(&TEST, &window(&two, 50, 0.95, 60), None);
        assert!(c.new_class && c.new_class_lower > 0.25, "{c:?}");
        assert_eq!(c.promised_macro_f1, None);
        // Two in 102 is no measurable share at a 5 % floor.
        let c = check(&TEST, &window(&two, 50, 0.95, 2), None);
        assert!(!c.new_class && c.new_class_share > 0.0, "{c:?}");
        // With its card, the new class drags macro-F1 below the promise as well.
        let p = promise(&two, 200, 0.95);
        let c = check(&TEST, &window(&two, 50, 0.95, 100), Some(&p));
        assert!(c.new_class && c.below_card, "{c:?}");
    }

    #[test]
    fn the_wilson_bound_matches_a_known_value() {
        // 30 of 100 at 95 % one-sided (z = 1.645): 0.2307 (the lower end of the
        // two-sided 90 % Wilson interval, (0.2307, 0.3793)).
        assert!((wilson_lower(30, 100, 0.05) - 0.2307).abs() < 1e-3);
        assert!(wilson_lower(0, 100, 0.05) < 1e-12);
        assert_eq!(wilson_lower(0, 0, 0.05), 0.0);
    }

    /// A window of `n` pairs drawn from `promise`'s confusion matrix, with each
    /// class's hits moved to a miss with probability `loss`.
    fn drawn(promise: &Promise, n: usize, loss: f64, rng: &mut ChaCha8Rng) -> VersionWindow {
        let k = promise.labels.len();
        let cells: Vec<(usize, usize, u64)> = (0..k)
            .flat_map(|t| (0..k).map(move |p| (t, p)))
            .map(|(t, p)| (t, p, promise.confusion[t][p]))
            .collect();
        let total: u64 = cells.iter().map(|c| c.2).sum();
        let pairs = (0..n)
            .map(|_| {
                let mut draw = rng.random_range(0..total);
                let &(t, p, _) = cells
                    .iter()
                    .find(|c| {
                        let hit = draw < c.2;
                        draw = draw.saturating_sub(c.2);
                        hit
                    })
                    .unwrap();
                if t == p && rng.random_bool(loss) {
                    (t, (t + 1) % k)
                } else {
                    (t, p)
                }
            })
            .collect();
        VersionWindow {
            labels: promise.labels.clone().into(),
            classes: k + 2,
            pairs,
            auto_labelled: 0,
            auto_right: 0,
            revision: 1,
        }
    }

    #[test]
    fn false_alarms_stay_near_alpha_and_a_real_drop_is_found() {
        // Windows drawn from the very distribution the card measured (on 300
        // held-out rows, recall 0.85): the promise holds, so an alarm is a false
        // one. Then windows where a share of the hits became misses: a fifth (recall
        // 0.85 -> 0.68, 0.12 past the tolerance; 200 pairs and 300 card rows leave
        // that close to the test's edge) and a third (recall -> 0.57, clear).
        let p = promise(&LABELS, 100, 0.85);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let trials = 40;
        let mut alarms = |loss: f64| {
            (0..trials)
                .filter(|_| check(&TEST, &drawn(&p, 200, loss, &mut rng), Some(&p)).below_card)
                .count()
        };
        let (false_alarms, fifth, third) = (alarms(0.0), alarms(0.2), alarms(1.0 / 3.0));
        eprintln!(
            "of {trials} windows of 200 pairs: {false_alarms} false alarms; drops found: {fifth} (recall -0.17), {third} (recall -0.28)"
        );
        assert!(false_alarms <= 2, "{false_alarms} false alarms in {trials}");
        assert!(third >= trials * 9 / 10, "{third} of {trials} drops found");
        assert!(fifth > false_alarms, "{fifth} vs {false_alarms}");
    }

    #[test]
    fn the_check_is_deterministic() {
        let p = promise(&LABELS, 200, 0.9);
        let w = window(&LABELS, 30, 0.8, 3);
        assert_eq!(check(&TEST, &w, Some(&p)), check(&TEST, &w, Some(&p)));
    }

    #[test]
    fn a_card_promises_its_held_out_evaluation_or_nothing() {
        let mut card = crate::registry::card::fixture::card(&LABELS, 4);
        let p = Promise::from_card(&card).unwrap();
        assert_eq!(p.labels, LABELS);
        assert_eq!(p.macro_f1, card.metrics.macro_f1);
        card.metrics.confusion = Vec::new();
        assert_eq!(Promise::from_card(&card), None);
    }

    #[test]
    fn the_review_promise_is_broken_only_when_the_automatic_labels_are_significantly_worse() {
        let mut promise = promise(&LABELS, 100, 0.9);
        promise.auto_target = Some(0.95);
        let mut w = window(&LABELS, 100, 0.9, 0);
        // 300 automatic labels, 90% right: even the upper bound (alpha 0.01) of
        // 270/300 is under 0.95.
        (w.auto_labelled, w.auto_right) = (300, 270);
        let c = check(&TEST, &w, Some(&promise));
        assert!(c.promise_broken, "{c:?}");
        assert!((c.auto_precision - 0.9).abs() < 1e-9);
        // 94% of 300: not significantly under 95%.
        w.auto_right = 282;
        assert!(!check(&TEST, &w, Some(&promise)).promise_broken);
        // Too few automatic labels to say.
        (w.auto_labelled, w.auto_right) = (20, 15);
        assert!(!check(&TEST, &w, Some(&promise)).promise_broken);
        // No target in the card: nothing promised.
        promise.auto_target = None;
        (w.auto_labelled, w.auto_right) = (300, 200);
        assert!(!check(&TEST, &w, Some(&promise)).promise_broken);
    }
}
