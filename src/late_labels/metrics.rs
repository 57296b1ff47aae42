//! The label join's Prometheus metrics (`triage_performance_*`), registered in the
//! retrainer's registry.

use std::collections::BTreeSet;

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::join::{LabelJoin, LabelResult};
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
}

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
    pub fn publish(&self, join: &mut LabelJoin, shown: &mut BTreeSet<String>) -> u64 {
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
            now.insert(s.model_version);
        }
        for gone in shown.difference(&now) {
            let v = [gone.as_str()];
            let _ = self.accuracy.remove_label_values(&v);
            let _ = self.macro_f1.remove_label_values(&v);
            let _ = self.labelled.remove_label_values(&v);
        }
        *shown = now;
        self.join_size
            .set(i64::try_from(join.held()).unwrap_or(i64::MAX));
        self.waiting
            .set(i64::try_from(join.waiting()).unwrap_or(i64::MAX));
        other
    }
}
