//! The label join's Prometheus metrics (`triage_performance_*`), registered in the
//! retrainer's registry.

use std::collections::{BTreeMap, BTreeSet};

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::confidence::ConfidenceCheck;
use super::join::{LabelJoin, LabelResult};
use super::promise::PromiseCheck;
use super::race::{RaceCheck, RaceName};
use crate::metrics::{counter, counter_vec, float_gauge_vec, gauge, gauge_vec};

/// The label join's metrics (see [`super::join`]).
#[derive(Clone)]
pub struct PerformanceMetrics {
    /// Rolling accuracy per model version, over its last joined pairs.
    pub accuracy: GaugeVec,
    /// Rolling macro-F1 per model version.
    pub macro_f1: GaugeVec,
    /// Joined pairs behind each version's scores.
    pub labelled: IntGaugeVec,
    /// Label records by result.
    pub labels: IntCounterVec,
    /// Predictions held for the join.
    pub join_size: IntGauge,
    /// Labels waiting for their prediction.
    pub waiting: IntGauge,
    /// Prediction records the join could not read.
    pub invalid_predictions: IntCounter,
    /// Late labels counted as class `other` (past `retrain.join_max_unknown_classes`).
    pub other_class: IntCounter,
    /// The card's held-out macro-F1 per version (the promise).
    pub promised_macro_f1: GaugeVec,
    /// P-values of the tests against the card, by `measure` (`macro_f1`, `recall`).
    pub drop_p_value: GaugeVec,
    /// 1 while a version's window is significantly below its card.
    pub below_card: IntGaugeVec,
    /// Share of a version's window whose true labels are outside its label set.
    pub new_class_share: GaugeVec,
    /// 1 while classes a version never learned take a measurable share.
    pub new_class: IntGaugeVec,
    /// The review promise per version: automatic labels in the window, the share
    /// right, and 1 while significantly under the card's `review.target_precision`.
    pub auto_labelled: IntGaugeVec,
    pub auto_precision: GaugeVec,
    pub promise_broken: IntGaugeVec,
    /// Shadows the join could not read (ignored; the champion's prediction taken).
    pub invalid_shadows: IntCounter,
    /// Race observations dropped for room (past `rollout.min_labelled * 4`).
    pub race_dropped: IntCounter,
    /// Paired late-labelled messages per race (champion, challenger).
    pub race_labelled: IntGaugeVec,
    /// Each race's macro-F1 by role (champion, challenger) on the same messages.
    pub race_macro_f1: GaugeVec,
    /// Each race's p-values by test (promote, lose, mcnemar).
    pub race_p_value: GaugeVec,
    /// Each race's verdict: 0 continue, 1 promote, 2 lost, 3 expired.
    pub race_state: IntGaugeVec,
    /// Mean confidence above chance of each side on the same messages (the
    /// guard's label-free check), with the messages behind it.
    pub race_confidence: GaugeVec,
    pub race_confidence_messages: IntGaugeVec,
}

/// The label names of the race series.
const RACE: [&str; 2] = ["champion", "challenger"];

impl PerformanceMetrics {
    /// Registers every series in `r`, each result of the label counter at zero.
    pub fn register(r: &Registry) -> Self {
        let m = Self {
            accuracy: float_gauge_vec(
                r,
                "triage_performance_accuracy",
                "Rolling accuracy per model version over its last retrain.performance_window predictions joined with late labels.",
                &["model_version"],
            ),
            macro_f1: float_gauge_vec(
                r,
                "triage_performance_macro_f1",
                "Rolling macro-F1 per model version over its last retrain.performance_window predictions joined with late labels.",
                &["model_version"],
            ),
            labelled: gauge_vec(
                r,
                "triage_performance_labelled_predictions",
                "Predictions joined with a late label behind each version's rolling scores.",
                &["model_version"],
            ),
            labels: counter_vec(
                r,
                "triage_performance_labels_total",
                "Late label records by result (joined, relabelled, unknown_id, unknown_class, invalid).",
                &["result"],
            ),
            join_size: gauge(
                r,
                "triage_performance_join_size",
                "Predictions held for the label join.",
            ),
            waiting: gauge(
                r,
                "triage_performance_waiting_labels",
                "Late labels waiting for their prediction.",
            ),
            invalid_predictions: counter(
                r,
                "triage_performance_invalid_predictions_total",
                "Prediction records the label join could not read (skipped).",
            ),
            other_class: counter(
                r,
                "triage_performance_other_class_labels_total",
                "Late labels counted as class \"other\": their model version held retrain.join_max_unknown_classes classes outside its label set already.",
            ),
            promised_macro_f1: float_gauge_vec(
                r,
                "triage_performance_promised_macro_f1",
                "The held-out macro-F1 in each scored version's model card: what its rolling late-label macro-F1 is tested against.",
                &["model_version"],
            ),
            drop_p_value: float_gauge_vec(
                r,
                "triage_performance_drop_p_value",
                "P-value of \"the version's window is within retrain.performance_tolerance of its card\", by measure: macro_f1 (bootstrap) or recall (the worst class, Bonferroni-corrected); 1 when untested.",
                &["model_version", "measure"],
            ),
            below_card: gauge_vec(
                r,
                "triage_performance_below_card",
                "1 while a version's rolling late-label scores are significantly below its card (either p-value under retrain.performance_alpha / 2), else 0.",
                &["model_version"],
            ),
            new_class_share: float_gauge_vec(
                r,
                "triage_performance_new_class_share",
                "Share of a version's joined late labels naming a class outside its label set.",
                &["model_version"],
            ),
            new_class: gauge_vec(
                r,
                "triage_performance_new_class",
                "1 while classes a version never learned take a measurable share of its late labels (the share's lower bound at least retrain.new_class_min_share), else 0.",
                &["model_version"],
            ),
            auto_labelled: gauge_vec(
                r,
                "triage_performance_auto_labelled",
                "Late-labelled messages in a version's window whose label it applied automatically (route auto): what the review promise is measured on.",
                &["model_version"],
            ),
            auto_precision: float_gauge_vec(
                r,
                "triage_performance_auto_precision",
                "Share of those automatic labels the late labels say were right: the review promise kept (compare with the card's review.target_precision).",
                &["model_version"],
            ),
            promise_broken: gauge_vec(
                r,
                "triage_performance_auto_promise_broken",
                "1 while the automatic labels are significantly less precise than the card's review.target_precision (the Wilson upper bound of their precision, one-sided at retrain.performance_alpha, under it, on at least retrain.performance_min_labelled of them), else 0. Only for versions whose card has a routing threshold.",
                &["model_version"],
            ),
            invalid_shadows: counter(
                r,
                "triage_performance_invalid_shadows_total",
                "Shadow predictions (a challenger's, carried by a prediction record) the label join could not read: ignored, the champion's prediction taken.",
            ),
            race_dropped: counter(
                r,
                "triage_race_dropped_observations_total",
                "Paired observations dropped from a live race for room (past rollout.min_labelled * 4, oldest first).",
            ),
            race_labelled: gauge_vec(
                r,
                "triage_race_labelled_messages",
                "Late-labelled messages both the champion and the challenger in shadow predicted, behind the live race.",
                &RACE,
            ),
            race_macro_f1: float_gauge_vec(
                r,
                "triage_race_macro_f1",
                "Macro-F1 of each side of a live race (role champion or challenger) on the same late-labelled messages.",
                &["champion", "challenger", "role"],
            ),
            race_p_value: float_gauge_vec(
                r,
                "triage_race_p_value",
                "P-values of a live race by test: promote (paired bootstrap of \"challenger macro-F1 - champion's <= retrain.min_improvement\"), lose (of \"challenger >= champion\"), mcnemar (exact, on per-message correctness; reported, never decides); 1 when untested.",
                &["champion", "challenger", "test"],
            ),
            race_state: gauge_vec(
                r,
                "triage_race_state",
                "A live race's verdict: 0 continue, 1 promote, 2 lost (rejected), 3 expired (rejected after rollout.max_wait_s).",
                &RACE,
            ),
            race_confidence: float_gauge_vec(
                r,
                "triage_race_confidence",
                "Mean top-class confidence above chance ((c - 1/k) / (1 - 1/k): 0 a uniform guess, 1 certain) of each side (role champion: the published model, challenger: the one in shadow) on the same messages, labelled or not: the guard's confidence check (its p-value is triage_race_p_value{test=\"confidence\"}).",
                &["champion", "challenger", "role"],
            ),
            race_confidence_messages: gauge_vec(
                r,
                "triage_race_confidence_messages",
                "Messages both sides scored behind triage_race_confidence (at most rollout.guard_predictions * 4, the newest).",
                &RACE,
            ),
        };
        for result in LabelResult::ALL {
            m.labels.with_label_values(&[result.as_str()]);
        }
        m
    }

    /// Copies the join's state into the metrics: new counts are added, the
    /// scores and sizes set. `shown` holds the versions scored last time: the
    /// series of a version the join forgot are removed. Returns the labels counted
    /// as class `other` since the last call.
    pub fn publish(
        &self,
        join: &mut LabelJoin,
        checks: &BTreeMap<String, PromiseCheck>,
        shown: &mut BTreeSet<String>,
    ) -> u64 {
        for (result, n) in join.take_counts() {
            if n > 0 {
                self.labels.with_label_values(&[result.as_str()]).inc_by(n);
            }
        }
        let other = join.take_other_class();
        self.other_class.inc_by(other);
        let mut now = BTreeSet::new();
        for s in join.scores() {
            let v = [s.model_version.as_str()];
            self.accuracy.with_label_values(&v).set(s.accuracy);
            self.macro_f1.with_label_values(&v).set(s.macro_f1);
            self.labelled
                .with_label_values(&v)
                .set(i64::try_from(s.pairs).unwrap_or(i64::MAX));
            if let Some(c) = checks.get(&s.model_version) {
                self.publish_check(&s.model_version, c);
            }
            now.insert(s.model_version);
        }
        for gone in shown.difference(&now) {
            let v = [gone.as_str()];
            let _ = self.accuracy.remove_label_values(&v);
            let _ = self.macro_f1.remove_label_values(&v);
            let _ = self.labelled.remove_label_values(&v);
            let _ = self.promised_macro_f1.remove_label_values(&v);
            let _ = self.below_card.remove_label_values(&v);
            let _ = self.new_class_share.remove_label_values(&v);
            let _ = self.new_class.remove_label_values(&v);
            self.remove_promise(gone);
            for measure in ["macro_f1", "recall"] {
                let _ = self.drop_p_value.remove_label_values(&[gone, measure]);
            }
        }
        *shown = now;
        self.join_size
            .set(i64::try_from(join.held()).unwrap_or(i64::MAX));
        self.waiting
            .set(i64::try_from(join.waiting()).unwrap_or(i64::MAX));
        other
    }

    fn publish_check(&self, version: &str, c: &PromiseCheck) {
        let v = [version];
        match c.promised_macro_f1 {
            Some(f1) => self.promised_macro_f1.with_label_values(&v).set(f1),
            None => {
                let _ = self.promised_macro_f1.remove_label_values(&v);
            }
        }
        for (measure, p) in [("macro_f1", c.macro_f1_p), ("recall", c.recall_p())] {
            self.drop_p_value
                .with_label_values(&[version, measure])
                .set(p);
        }
        self.below_card
            .with_label_values(&v)
            .set(i64::from(c.below_card));
        self.new_class_share
            .with_label_values(&v)
            .set(c.new_class_share);
        self.new_class
            .with_label_values(&v)
            .set(i64::from(c.new_class));
        if c.auto_target.is_some() && c.auto_labelled > 0 {
            self.auto_labelled
                .with_label_values(&v)
                .set(i64::try_from(c.auto_labelled).unwrap_or(i64::MAX));
            self.auto_precision
                .with_label_values(&v)
                .set(c.auto_precision);
            self.promise_broken
                .with_label_values(&v)
                .set(i64::from(c.promise_broken));
        } else {
            self.remove_promise(version);
        }
    }

    fn remove_promise(&self, version: &str) {
        let v = [version];
        let _ = self.auto_labelled.remove_label_values(&v);
        let _ = self.auto_precision.remove_label_values(&v);
        let _ = self.promise_broken.remove_label_values(&v);
    }

    /// Copies the races' checks into the metrics; the series of a race no longer
    /// held (`shown` holds those published last time) are removed.
    pub fn publish_races(
        &self,
        checks: &BTreeMap<RaceName, RaceCheck>,
        shown: &mut BTreeSet<RaceName>,
    ) {
        for ((champion, challenger), c) in checks {
            let race = [champion.as_str(), challenger.as_str()];
            self.race_labelled
                .with_label_values(&race)
                .set(i64::try_from(c.labelled).unwrap_or(i64::MAX));
            for (role, f1) in [
                ("champion", c.champion_macro_f1),
                ("challenger", c.challenger_macro_f1),
            ] {
                self.race_macro_f1
                    .with_label_values(&[champion, challenger, role])
                    .set(f1);
            }
            for (test, p) in [
                ("promote", c.promote_p),
                ("lose", c.lose_p),
                ("mcnemar", c.mcnemar.p_value),
            ] {
                self.race_p_value
                    .with_label_values(&[champion, challenger, test])
                    .set(p);
            }
            self.race_state
                .with_label_values(&race)
                .set(c.verdict.state());
        }
        for (champion, challenger) in gone(shown, checks) {
            let race = [champion.as_str(), challenger.as_str()];
            let _ = self.race_labelled.remove_label_values(&race);
            let _ = self.race_state.remove_label_values(&race);
            for role in ["champion", "challenger"] {
                let _ = self
                    .race_macro_f1
                    .remove_label_values(&[champion, challenger, role]);
            }
            for test in ["promote", "lose", "mcnemar"] {
                let _ = self
                    .race_p_value
                    .remove_label_values(&[champion, challenger, test]);
            }
        }
        *shown = checks.keys().cloned().collect();
    }

    /// Sets the confidence series of every pair in `checks`, and removes those of
    /// the pairs in `shown` that are gone; `shown` becomes `checks`' pairs.
    pub fn publish_confidence(
        &self,
        checks: &BTreeMap<RaceName, ConfidenceCheck>,
        shown: &mut BTreeSet<RaceName>,
    ) {
        for ((champion, challenger), c) in checks {
            let pair = [champion.as_str(), challenger.as_str()];
            self.race_confidence_messages
                .with_label_values(&pair)
                .set(i64::try_from(c.predictions).unwrap_or(i64::MAX));
            for (role, mean) in [
                ("champion", c.published_mean),
                ("challenger", c.shadowed_mean),
            ] {
                self.race_confidence
                    .with_label_values(&[champion, challenger, role])
                    .set(mean);
            }
            self.race_p_value
                .with_label_values(&[champion, challenger, "confidence"])
                .set(c.p_value);
        }
        for (champion, challenger) in gone(shown, checks) {
            let _ = self
                .race_confidence_messages
                .remove_label_values(&[champion, challenger]);
            for role in ["champion", "challenger"] {
                let _ = self
                    .race_confidence
                    .remove_label_values(&[champion, challenger, role]);
            }
            let _ = self
                .race_p_value
                .remove_label_values(&[champion, challenger, "confidence"]);
        }
        *shown = checks.keys().cloned().collect();
    }
}

/// The pairs published last time (`shown`) that `checks` no longer holds.
fn gone<'a, V>(
    shown: &'a BTreeSet<RaceName>,
    checks: &'a BTreeMap<RaceName, V>,
) -> impl Iterator<Item = &'a RaceName> {
    shown.iter().filter(|name| !checks.contains_key(*name))
}
