//! Prometheus metrics: one owned registry, handles kept in [`Metrics`]. Names follow
//! `triage_<name>_<unit>[_total]`. Emitted per window, not per message.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric `triage run` exports. Cloning shares the same series.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Messages read from the input topics.
    pub messages_in: IntCounterVec,
    /// Predictions produced (acknowledged), by label and model version.
    pub predictions: IntCounterVec,
    /// Messages sent to the dead-letter topic, by reason.
    pub dlq: IntCounterVec,
    pub windows: IntCounter,
    pub window_size: Histogram,
    /// Seconds per stage: decode, embed, classify, produce.
    pub stage_seconds: HistogramVec,
    /// From the message's timestamp to the broker's acknowledgement of its prediction.
    pub end_to_end_seconds: Histogram,
    pub consumer_lag: IntGaugeVec,
    /// 1 for the serving version.
    pub model_info: IntGaugeVec,
    /// Hot swaps by result: swapped, refused.
    pub model_swaps: IntCounterVec,
    pub produce_retries: IntCounter,
    pub dlq_truncated: IntCounter,
    /// Dead letters whose key or headers were past the envelope limits and were
    /// written as their size and sha256, by part.
    pub dlq_bounded: IntCounterVec,
    /// Workers able to take a job (one being restarted after a panic is not).
    pub workers_alive: IntGauge,
    pub worker_restarts: IntCounter,
    /// 1 while no worker can classify a known-good text (windows wait, unacknowledged).
    pub worker_outage: IntGauge,
    pub ready: IntGauge,
    pub brokers_up: IntGauge,
    pub assigned_partitions: IntGauge,
    pub http_requests: IntCounterVec,
    /// Drift statistics over the recent windows, by model version.
    pub drift_value: prometheus::GaugeVec,
    /// 1 when a detector fires, by detector and model version.
    pub drift_detected: IntGaugeVec,
    pub drift_class_share: prometheus::GaugeVec,
    /// The last windows' drift reports, for the console's charts.
    pub drift_recent: crate::drift::recent::RecentDrift,
    /// 1 for the version served in place of a champion that would not load at start:
    /// `model_version` is the one served (the previous champion), `champion` the one
    /// that failed. Alerts join it with `triage_model_info` so the alert ends once a
    /// hot swap serves another version.
    pub model_fallback: IntGaugeVec,
}

/// Registers `metric` in `registry` and returns its handle. Every definition is a
/// constant in code, so a bad one is a programming error that the tests catch.
pub fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let m = metric.expect("metric definition is valid");
    registry
        .register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

/// The Prometheus text exposition of everything in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

fn buckets_seconds() -> Vec<f64> {
    vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let metrics = Self {
            messages_in: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "triage_messages_in_total",
                        "Messages read from the input topics.",
                    ),
                    &["topic"],
                ),
            ),
            predictions: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "triage_predictions_total",
                        "Predictions acknowledged by the broker.",
                    ),
                    &["label", "model_version"],
                ),
            ),
            dlq: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "triage_dlq_messages_total",
                        "Messages sent to the dead-letter topic.",
                    ),
                    &["reason"],
                ),
            ),
            windows: register(
                &registry,
                IntCounter::new("triage_windows_total", "Windows processed."),
            ),
            window_size: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new("triage_window_size_messages", "Messages per window.")
                        .buckets(vec![
                            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                        ]),
                ),
            ),
            stage_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "triage_stage_duration_seconds",
                        "Seconds per window and stage.",
                    )
                    .buckets(buckets_seconds()),
                    &["stage"],
                ),
            ),
            end_to_end_seconds: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "triage_end_to_end_latency_seconds",
                        "From the message timestamp to the acknowledgement of its prediction.",
                    )
                    .buckets(buckets_seconds()),
                ),
            ),
            consumer_lag: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "triage_consumer_lag_messages",
                        "Messages behind the high watermark.",
                    ),
                    &["topic", "partition"],
                ),
            ),
            model_info: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("triage_model_info", "1 for the model version being served."),
                    &["model_version", "embedding_model"],
                ),
            ),
            model_swaps: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "triage_model_swaps_total",
                        "Hot swaps of the champion model, by result.",
                    ),
                    &["result"],
                ),
            ),
            produce_retries: register(
                &registry,
                IntCounter::new(
                    "triage_produce_retries_total",
                    "Records produced again after a delivery failure.",
                ),
            ),
            dlq_truncated: register(
                &registry,
                IntCounter::new(
                    "triage_dlq_truncated_total",
                    "Dead letters too large for the broker, written truncated (with their original size and sha256 in headers).",
                ),
            ),
            dlq_bounded: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "triage_dlq_bounded_total",
                        "Dead letters whose key or headers were past the envelope limits, written as their size and sha256, by part (key, headers).",
                    ),
                    &["part"],
                ),
            ),
            workers_alive: register(
                &registry,
                IntGauge::new(
                    "triage_workers_alive",
                    "Classification workers able to take a job.",
                ),
            ),
            worker_restarts: register(
                &registry,
                IntCounter::new(
                    "triage_worker_restarts_total",
                    "Classification workers restarted after a panic.",
                ),
            ),
            worker_outage: register(
                &registry,
                IntGauge::new(
                    "triage_worker_outage",
                    "1 while no worker can classify a known-good text: windows wait unacknowledged.",
                ),
            ),
            ready: register(
                &registry,
                IntGauge::new("triage_ready", "1 when /readyz answers 200."),
            ),
            brokers_up: register(
                &registry,
                IntGauge::new("triage_brokers_up", "Brokers in state UP."),
            ),
            assigned_partitions: register(
                &registry,
                IntGauge::new(
                    "triage_assigned_partitions",
                    "Input partitions assigned to this instance.",
                ),
            ),
            http_requests: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "triage_http_requests_total",
                        "HTTP requests by path and status.",
                    ),
                    &["path", "status"],
                ),
            ),
            drift_value: register(
                &registry,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "triage_drift_statistic",
                        "Drift statistics over the recent windows (statistic: prediction_psi, mmd2, mmd_p_value, mean_confidence, low_confidence_share, text_length_psi, invalid_share, accuracy, macro_f1, messages).",
                    ),
                    &["statistic", "model_version"],
                ),
            ),
            drift_detected: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "triage_drift_detected",
                        "1 when a drift detector fires over the recent windows.",
                    ),
                    &["detector", "model_version"],
                ),
            ),
            drift_class_share: register(
                &registry,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "triage_drift_class_share",
                        "Share of predictions per label over the recent windows.",
                    ),
                    &["label", "model_version"],
                ),
            ),
            drift_recent: Default::default(),
            model_fallback: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "triage_model_fallback",
                        "1 while this instance serves the previous champion (model_version) because the champion would not load at start.",
                    ),
                    &["model_version", "champion"],
                ),
            ),
            registry,
        };
        // Swap results exist at zero from the start: an increase() (a dashboard's
        // annotation, an alert) then sees the first swap, which a series born at 1
        // would hide.
        for result in ["swapped", "refused"] {
            metrics.model_swaps.with_label_values(&[result]);
        }
        metrics
    }

    /// Exports a drift report for `version` (labels name the classes).
    pub fn record_drift(&self, version: &str, labels: &[String], r: &crate::drift::DriftReport) {
        let mut values = vec![
            ("messages", r.messages as f64),
            ("prediction_psi", r.prediction_psi),
            ("mmd2", r.mmd2),
            ("mmd_p_value", r.mmd_p_value),
            ("mean_confidence", r.mean_confidence),
            ("low_confidence_share", r.low_confidence_share),
            ("text_length_psi", r.text_length_psi),
            ("invalid_share", r.invalid_share),
        ];
        if let (Some(a), Some(f)) = (r.accuracy, r.macro_f1) {
            values.extend([("accuracy", a), ("macro_f1", f)]);
        }
        for (name, v) in values {
            self.drift_value.with_label_values(&[name, version]).set(v);
        }
        for (name, fired) in [
            ("prediction", r.prediction_drift),
            ("embedding", r.embedding_drift),
            ("confidence", r.confidence_drift),
            ("text_length", r.text_length_drift),
        ] {
            self.drift_detected
                .with_label_values(&[name, version])
                .set(i64::from(fired));
        }
        for (label, share) in labels.iter().zip(&r.class_mix) {
            self.drift_class_share
                .with_label_values(&[label, version])
                .set(*share);
        }
        self.drift_recent.push(version, r);
    }

    /// Drops every drift series: after a hot swap they describe a model that no
    /// longer serves, and a drift alert on them would ask to retrain for drift the
    /// promotion has already answered. The new version's series appear with its
    /// first window.
    pub fn forget_drift(&self) {
        self.drift_value.reset();
        self.drift_detected.reset();
        self.drift_class_share.reset();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new();
        m.dlq.with_label_values(&["not_json"]).inc_by(2);
        m.stage_seconds.with_label_values(&["embed"]).observe(0.2);
        let text = m.render();
        assert!(
            text.contains("triage_dlq_messages_total{reason=\"not_json\"} 2"),
            "{text}"
        );
        assert!(text.contains("triage_stage_duration_seconds_bucket{stage=\"embed\""));
        assert!(text.contains("triage_model_swaps_total{result=\"swapped\"} 0"));
    }

    #[test]
    fn a_swap_forgets_the_old_models_drift_series() {
        let m = Metrics::new();
        let report = crate::drift::DriftReport::default();
        m.record_drift("v1", &["a".to_string()], &report);
        assert!(m.render().contains("triage_drift_detected{"));
        m.forget_drift();
        assert!(!m.render().contains("model_version=\"v1\""));
    }
}
