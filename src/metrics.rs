//! Prometheus metrics: one owned registry, handles kept in [`Metrics`]. Names follow
//! `triage_<name>_<unit>[_total]`. Emitted per window, not per message.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric `triage run` exports. Cloning shares the same series.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Messages read from the input topics.
    pub messages_in: IntCounterVec,
    /// Predictions produced (acknowledged), by label and model version.
    pub predictions: IntCounterVec,
    /// The same by route (`auto`, `review`) and model version: the coverage.
    pub routes: IntCounterVec,
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
    /// Windows waiting, unacknowledged, because no worker can classify a known-good
    /// text; above 0 means an outage.
    pub worker_outage: IntGauge,
    pub ready: IntGauge,
    pub brokers_up: IntGauge,
    pub assigned_partitions: IntGauge,
    pub http_requests: IntCounterVec,
    /// Drift statistics over the recent windows, by model version.
    pub drift_value: GaugeVec,
    /// 1 when a detector fires, by detector and model version.
    pub drift_detected: IntGaugeVec,
    pub drift_class_share: GaugeVec,
    /// The last windows' drift reports, for the console's charts.
    pub drift_recent: crate::drift::recent::RecentDrift,
    /// 1 for the version served in place of a champion that would not load at start:
    /// `model_version` is the one served (the previous champion), `champion` the one
    /// that failed. Alerts join it with `triage_model_info` so the alert ends once a
    /// hot swap serves another version.
    pub model_fallback: IntGaugeVec,
    /// 1 for the challenger being scored in shadow beside the champion (no series
    /// when none is).
    pub shadow_info: IntGaugeVec,
    /// Challengers refused for shadowing (another embedding spec than the
    /// champion's, or a version that will not load).
    pub shadow_refusals: IntCounter,
    /// Texts the shadow scored (its predictions travel with the prediction records).
    pub shadow_predictions: IntCounter,
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

/// An integer counter, registered in `registry`.
pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help))
}

/// Integer counters by `labels`, registered in `registry`.
pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

/// An integer gauge, registered in `registry`.
pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help))
}

/// Integer gauges by `labels`, registered in `registry`.
pub fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

/// A float gauge, registered in `registry`.
pub fn float_gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    register(registry, Gauge::new(name, help))
}

/// Float gauges by `labels`, registered in `registry`.
pub fn float_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(registry, GaugeVec::new(Opts::new(name, help), labels))
}

/// A histogram with `buckets`, registered in `registry`.
pub fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(
        registry,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)),
    )
}

/// Histograms with `buckets` by `labels`, registered in `registry`.
pub fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels),
    )
}

/// The Prometheus text exposition of everything in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// The `name kind` of every family in a text exposition, sorted (each family's
/// `# TYPE` line): what the tests pin.
#[cfg(test)]
pub(crate) fn families(text: &str) -> Vec<&str> {
    let mut types: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    types.sort_unstable();
    types
}

fn buckets_seconds() -> Vec<f64> {
    vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let metrics = Self {
            messages_in: counter_vec(
                &r,
                "triage_messages_in_total",
                "Messages read from the input topics.",
                &["topic"],
            ),
            predictions: counter_vec(
                &r,
                "triage_predictions_total",
                "Predictions acknowledged by the broker.",
                &["label", "model_version"],
            ),
            routes: counter_vec(
                &r,
                "triage_routes_total",
                "Predictions acknowledged by the broker, by route: auto (confidence at or above the model card's routing threshold for review.target_precision) or review (for a person). Coverage = auto / all.",
                &["route", "model_version"],
            ),
            dlq: counter_vec(
                &r,
                "triage_dlq_messages_total",
                "Messages sent to the dead-letter topic.",
                &["reason"],
            ),
            windows: counter(&r, "triage_windows_total", "Windows processed."),
            window_size: histogram(
                &r,
                "triage_window_size_messages",
                "Messages per window.",
                vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ],
            ),
            stage_seconds: histogram_vec(
                &r,
                "triage_stage_duration_seconds",
                "Seconds per window and stage.",
                &["stage"],
                buckets_seconds(),
            ),
            end_to_end_seconds: histogram(
                &r,
                "triage_end_to_end_latency_seconds",
                "From the message timestamp to the acknowledgement of its prediction.",
                buckets_seconds(),
            ),
            consumer_lag: gauge_vec(
                &r,
                "triage_consumer_lag_messages",
                "Messages behind the high watermark.",
                &["topic", "partition"],
            ),
            model_info: gauge_vec(
                &r,
                "triage_model_info",
                "1 for the model version being served.",
                &["model_version", "embedding_model"],
            ),
            model_swaps: counter_vec(
                &r,
                "triage_model_swaps_total",
                "Hot swaps of the champion model, by result.",
                &["result"],
            ),
            produce_retries: counter(
                &r,
                "triage_produce_retries_total",
                "Records produced again after a delivery failure.",
            ),
            dlq_truncated: counter(
                &r,
                "triage_dlq_truncated_total",
                "Dead letters too large for the broker, written truncated (with their original size and sha256 in headers).",
            ),
            dlq_bounded: counter_vec(
                &r,
                "triage_dlq_bounded_total",
                "Dead letters whose key or headers were past the envelope limits, written as their size and sha256, by part (key, headers).",
                &["part"],
            ),
            workers_alive: gauge(
                &r,
                "triage_workers_alive",
                "Classification workers able to take a job.",
            ),
            worker_restarts: counter(
                &r,
                "triage_worker_restarts_total",
                "Classification workers restarted after a panic.",
            ),
            worker_outage: gauge(
                &r,
                "triage_worker_outage",
                "Windows waiting, unacknowledged, because no worker can classify a known-good text (0: no outage).",
            ),
            ready: gauge(&r, "triage_ready", "1 when /readyz answers 200."),
            brokers_up: gauge(&r, "triage_brokers_up", "Brokers in state UP."),
            assigned_partitions: gauge(
                &r,
                "triage_assigned_partitions",
                "Input partitions assigned to this instance.",
            ),
            http_requests: counter_vec(
                &r,
                "triage_http_requests_total",
                "HTTP requests by path and status.",
                &["path", "status"],
            ),
            drift_value: float_gauge_vec(
                &r,
                "triage_drift_statistic",
                "Drift statistics over the recent windows (statistic: prediction_psi, mmd2, mmd_p_value, mean_confidence, low_confidence_share, text_length_psi, invalid_share, accuracy, macro_f1, messages).",
                &["statistic", "model_version"],
            ),
            drift_detected: gauge_vec(
                &r,
                "triage_drift_detected",
                "1 when a drift detector fires over the recent windows.",
                &["detector", "model_version"],
            ),
            drift_class_share: float_gauge_vec(
                &r,
                "triage_drift_class_share",
                "Share of predictions per label over the recent windows.",
                &["label", "model_version"],
            ),
            drift_recent: Default::default(),
            model_fallback: gauge_vec(
                &r,
                "triage_model_fallback",
                "1 while this instance serves the previous champion (model_version) because the champion would not load at start.",
                &["model_version", "champion"],
            ),
            shadow_info: gauge_vec(
                &r,
                "triage_shadow_info",
                "1 for the challenger scored in shadow beside the champion (the challenger alias).",
                &["model_version"],
            ),
            shadow_refusals: counter(
                &r,
                "triage_shadow_refusals_total",
                "Challengers refused for shadowing: an embedding spec other than the champion's, or a version that will not load.",
            ),
            shadow_predictions: counter(
                &r,
                "triage_shadow_predictions_total",
                "Texts scored by the shadowed challenger (never published as labels).",
            ),
            registry: r,
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
        for d in crate::drift::Detector::ALL {
            self.drift_detected
                .with_label_values(&[d.name(), version])
                .set(i64::from(d.fired(r)));
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

    /// The names and kinds `/metrics` exports: dashboards, alert rules and the
    /// runbooks name them, so a change here is a change users see.
    #[test]
    fn exported_metric_names_and_types_stay_the_same() {
        let m = Metrics::new();
        // Labelled families render only once they hold a series.
        m.messages_in.with_label_values(&["t"]);
        m.predictions.with_label_values(&["a", "v1"]);
        m.dlq.with_label_values(&["not_json"]);
        m.stage_seconds.with_label_values(&["embed"]);
        m.consumer_lag.with_label_values(&["t", "0"]);
        m.model_info.with_label_values(&["v1", "e"]);
        m.dlq_bounded.with_label_values(&["key"]);
        m.http_requests.with_label_values(&["/", "200"]);
        m.model_fallback.with_label_values(&["v1", "v2"]);
        m.shadow_info.with_label_values(&["v2"]);
        m.drift_class_share.with_label_values(&["a", "v1"]);
        m.record_drift(
            "v1",
            &["a".to_string()],
            &crate::drift::DriftReport::default(),
        );
        let text = m.render();
        let types = crate::metrics::families(&text);
        assert_eq!(
            types,
            [
                "triage_assigned_partitions gauge",
                "triage_brokers_up gauge",
                "triage_consumer_lag_messages gauge",
                "triage_dlq_bounded_total counter",
                "triage_dlq_messages_total counter",
                "triage_dlq_truncated_total counter",
                "triage_drift_class_share gauge",
                "triage_drift_detected gauge",
                "triage_drift_statistic gauge",
                "triage_end_to_end_latency_seconds histogram",
                "triage_http_requests_total counter",
                "triage_messages_in_total counter",
                "triage_model_fallback gauge",
                "triage_model_info gauge",
                "triage_model_swaps_total counter",
                "triage_predictions_total counter",
                "triage_produce_retries_total counter",
                "triage_ready gauge",
                "triage_shadow_info gauge",
                "triage_shadow_predictions_total counter",
                "triage_shadow_refusals_total counter",
                "triage_stage_duration_seconds histogram",
                "triage_window_size_messages histogram",
                "triage_windows_total counter",
                "triage_worker_outage gauge",
                "triage_worker_restarts_total counter",
                "triage_workers_alive gauge",
            ]
        );
        // Every family carries its help text.
        assert_eq!(text.matches("# HELP ").count(), types.len(), "{text}");
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
