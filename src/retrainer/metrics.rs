//! The retrainer's own Prometheus metrics (its own registry: it is its own process):
//! the webhook and jobs (`triage_retrain_*`), and beside them the label join's
//! (`triage_performance_*`, [`crate::late_labels::metrics`]).

use prometheus::{Gauge, GaugeVec, Histogram, IntCounterVec, IntGauge, Opts, Registry};

use crate::late_labels::metrics::PerformanceMetrics;
use crate::metrics::{counter_vec, float_gauge, gauge, histogram};
use crate::registry::decision::Contender;
use crate::retrain::error::RetrainError;

/// What `triage_retrain_alerts_total{action}` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertAction {
    /// Started a job.
    Accepted,
    /// Folded into the follow-up job (one is running or cooling down).
    Coalesced,
    /// Resolved, not in `retrain.alerts`, or nameless.
    Ignored,
    /// The request had no valid token: counted once per request, with
    /// `alert="unknown"`, because an unauthenticated body is never read.
    Unauthorised,
}

impl AlertAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Coalesced => "coalesced",
            Self::Ignored => "ignored",
            Self::Unauthorised => "unauthorised",
        }
    }
}

/// The `alert` label of unauthorised requests.
pub const UNKNOWN_ALERT: &str = "unknown";
/// The `alert` label of every alert name outside `retrain.alerts`: the label's
/// values are a closed set, whatever names callers send.
pub const OTHER_ALERT: &str = "other";

/// The last decision's held-out scores of the champion and the challenger, by role and
/// model version (`triage_retrain_decision_accuracy`, `triage_retrain_decision_macro_f1`):
/// the numbers the verdict compared, for dashboards. Owned by the job that decides;
/// the retrainer registers them beside its own. Cloning shares the same series.
#[derive(Clone)]
pub struct DecisionScores {
    accuracy: GaugeVec,
    macro_f1: GaugeVec,
    /// Failed jobs by cause (`triage_retrain_failures_total{cause}`): the keys of
    /// `crate::retrain::error::RetrainError::cause`, and `stopped` for a job that
    /// panicked. Beside `triage_retrain_jobs_total{verdict}`, whose series stay as
    /// they are for the dashboards and alerts that read them.
    failures: IntCounterVec,
}

/// The failure cause of a job that stopped without a decision (a panic).
pub const STOPPED: &str = "stopped";

impl DecisionScores {
    pub fn new() -> Self {
        let gauge = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), &["role", "model_version"])
                .expect("metric definition is valid")
        };
        Self {
            accuracy: gauge(
                "triage_retrain_decision_accuracy",
                "Accuracy on the last retrain's held-out recent rows, by role (champion, challenger) and model version.",
            ),
            macro_f1: gauge(
                "triage_retrain_decision_macro_f1",
                "Macro-F1 on the last retrain's held-out recent rows, by role (champion, challenger) and model version.",
            ),
            failures: IntCounterVec::new(
                Opts::new(
                    "triage_retrain_failures_total",
                    "Failed retrain jobs by cause (start, locked, registry, read, not_enough_data, original_data, work_folder, training, scoring, promotion, stopped).",
                ),
                &["cause"],
            )
            .expect("metric definition is valid"),
        }
    }

    /// Counts a failed job by its cause; a cause outside the closed set counts as
    /// `stopped`.
    pub fn failed(&self, cause: Option<&str>) {
        let cause = cause
            .and_then(|c| RetrainError::CAUSES.iter().find(|k| **k == c).copied())
            .unwrap_or(STOPPED);
        self.failures.with_label_values(&[cause]).inc();
    }

    /// Adds the gauges and the failure counter (every cause at zero) to `registry`.
    pub fn register(&self, registry: &Registry) {
        for g in [&self.accuracy, &self.macro_f1] {
            registry
                .register(Box::new(g.clone()))
                .expect("metric names are unique");
        }
        for cause in RetrainError::CAUSES.iter().chain([&STOPPED]) {
            self.failures.with_label_values(&[cause]);
        }
        registry
            .register(Box::new(self.failures.clone()))
            .expect("metric names are unique");
    }

    /// Shows a decision's contenders, replacing the previous decision's. A decision
    /// that scored neither (it failed before) leaves the last scores in place.
    pub fn record(&self, champion: Option<&Contender>, challenger: Option<&Contender>) {
        if champion.is_none() && challenger.is_none() {
            return;
        }
        self.accuracy.reset();
        self.macro_f1.reset();
        for (role, contender) in [("champion", champion), ("challenger", challenger)] {
            if let Some(c) = contender {
                let labels = [role, c.version.as_str()];
                self.accuracy
                    .with_label_values(&labels)
                    .set(c.metrics.accuracy);
                self.macro_f1
                    .with_label_values(&labels)
                    .set(c.metrics.macro_f1);
            }
        }
    }
}

impl Default for DecisionScores {
    fn default() -> Self {
        Self::new()
    }
}

/// Handles of every metric the retrainer exports. Cloning shares the same series.
#[derive(Clone)]
pub struct RetrainMetrics {
    pub registry: Registry,
    /// The alert names counted by name (`retrain.alerts`); others are `other`.
    handled: std::sync::Arc<[String]>,
    /// Webhook requests by HTTP status.
    pub webhook_requests: IntCounterVec,
    /// Alerts by name and what was done with them.
    pub alerts: IntCounterVec,
    /// Finished jobs by verdict: promoted, rejected, failed.
    pub jobs: IntCounterVec,
    pub job_duration: Histogram,
    /// 1 while a job runs.
    pub running: IntGauge,
    /// When the last job finished (Unix seconds); 0 before the first.
    pub last_job_timestamp: Gauge,
    /// Scheduled runs (`retrain.every`) by what the scheduler did with them.
    pub scheduled: IntCounterVec,
    /// When the next scheduled run is due (Unix seconds); 0 without a schedule.
    pub next_scheduled: Gauge,
    /// Guards of a new champion ended, by outcome (passed, rolled_back).
    pub guards: IntCounterVec,
    /// Champions rolled back, by who (guard).
    pub rollbacks: IntCounterVec,
    /// The label join's scores and counts.
    pub performance: PerformanceMetrics,
}

impl RetrainMetrics {
    /// The metrics, with series for `handled` alerts, every verdict and the usual
    /// statuses at zero, so alert rules and dashboards see them before the first event.
    pub fn new(handled: &[String]) -> Self {
        let r = Registry::new();
        let m = Self {
            handled: handled.to_vec().into(),
            webhook_requests: counter_vec(
                &r,
                "triage_retrain_webhook_requests_total",
                "Webhook requests to POST /v1/alerts, by HTTP status.",
                &["status"],
            ),
            alerts: counter_vec(
                &r,
                "triage_retrain_alerts_total",
                "Alerts received, by alert name and action (accepted, coalesced, ignored, unauthorised).",
                &["alert", "action"],
            ),
            jobs: counter_vec(
                &r,
                "triage_retrain_jobs_total",
                "Finished retrain jobs, by verdict (promoted, shadow: racing the champion live, rejected, failed).",
                &["verdict"],
            ),
            job_duration: histogram(
                &r,
                "triage_retrain_job_duration_seconds",
                "Seconds per retrain job.",
                vec![
                    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
                ],
            ),
            running: gauge(&r, "triage_retrain_running", "1 while a retrain job runs."),
            last_job_timestamp: float_gauge(
                &r,
                "triage_retrain_last_job_timestamp_seconds",
                "When the last retrain job finished, Unix seconds (0: none yet).",
            ),
            scheduled: counter_vec(
                &r,
                "triage_retrain_scheduled_total",
                "Scheduled retrains (retrain.every) by action: started (a job started), coalesced (joined the follow-up of a running job), held (due while a challenger races in shadow: waits for the race or the guard).",
                &["action"],
            ),
            next_scheduled: float_gauge(
                &r,
                "triage_retrain_next_scheduled_timestamp_seconds",
                "When the next scheduled retrain (retrain.every) is due, Unix seconds (0: no schedule).",
            ),
            guards: counter_vec(
                &r,
                "triage_guards_total",
                "Guards of a new champion ended, by outcome: passed (it held on rollout.guard_labelled late-labelled messages), rolled_back.",
                &["outcome"],
            ),
            rollbacks: counter_vec(
                &r,
                "triage_rollbacks_total",
                "Champions rolled back by triage itself, by who (guard: the champion it replaced beat it on the same late-labelled messages).",
                &["by"],
            ),
            performance: PerformanceMetrics::register(&r),
            registry: r,
        };
        for status in ["200", "400", "401", "413"] {
            m.webhook_requests.with_label_values(&[status]);
        }
        for alert in handled {
            for action in [
                AlertAction::Accepted,
                AlertAction::Coalesced,
                AlertAction::Ignored,
            ] {
                m.alerts
                    .with_label_values(&[alert.as_str(), action.as_str()]);
            }
        }
        m.alerts
            .with_label_values(&[UNKNOWN_ALERT, AlertAction::Unauthorised.as_str()]);
        m.alerts
            .with_label_values(&[OTHER_ALERT, AlertAction::Ignored.as_str()]);
        for verdict in ["promoted", "shadow", "rejected", "failed"] {
            m.jobs.with_label_values(&[verdict]);
        }
        for action in ["started", "coalesced"] {
            m.scheduled.with_label_values(&[action]);
        }
        for outcome in ["passed", "rolled_back"] {
            m.guards.with_label_values(&[outcome]);
        }
        m.rollbacks.with_label_values(&["guard"]);
        m
    }

    /// Counts one alert: by its name when it is one of `retrain.alerts` (or the
    /// unauthorised `unknown`), else as `other`, so a caller cannot grow the series.
    pub fn alert(&self, alert: &str, action: AlertAction) {
        let known = self.handled.iter().any(|h| h == alert)
            || (alert == UNKNOWN_ALERT && action == AlertAction::Unauthorised);
        let alert = if known { alert } else { OTHER_ALERT };
        self.alerts
            .with_label_values(&[alert, action.as_str()])
            .inc();
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        crate::metrics::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_exist_at_zero_before_any_event() {
        let m = RetrainMetrics::new(&["TriageDriftDetected".to_string()]);
        let text = m.render();
        for line in [
            "triage_retrain_webhook_requests_total{status=\"401\"} 0",
            "triage_retrain_alerts_total{action=\"accepted\",alert=\"TriageDriftDetected\"} 0",
            "triage_retrain_alerts_total{action=\"unauthorised\",alert=\"unknown\"} 0",
            "triage_retrain_jobs_total{verdict=\"promoted\"} 0",
            "triage_retrain_job_duration_seconds_count 0",
            "triage_retrain_running 0",
            "triage_retrain_last_job_timestamp_seconds 0",
            "triage_performance_labels_total{result=\"unknown_id\"} 0",
            "triage_performance_join_size 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    /// The names and kinds the retrainer exports (its alert rules and dashboard
    /// name them).
    #[test]
    fn exported_metric_names_and_types_stay_the_same() {
        let m = RetrainMetrics::new(&["TriageDriftDetected".to_string()]);
        // Labelled families render only once they hold a series.
        let p = &m.performance;
        for v in [
            &p.accuracy,
            &p.macro_f1,
            &p.promised_macro_f1,
            &p.new_class_share,
        ] {
            v.with_label_values(&["v1"]);
        }
        for v in [&p.labelled, &p.below_card, &p.new_class] {
            v.with_label_values(&["v1"]);
        }
        p.drop_p_value.with_label_values(&["v1", "macro_f1"]);
        p.race_labelled.with_label_values(&["v1", "v2"]);
        p.race_state.with_label_values(&["v1", "v2"]);
        p.race_macro_f1.with_label_values(&["v1", "v2", "champion"]);
        p.race_p_value.with_label_values(&["v1", "v2", "promote"]);
        let scores = DecisionScores::new();
        scores.register(&m.registry);
        scores.accuracy.with_label_values(&["champion", "v1"]);
        scores.macro_f1.with_label_values(&["champion", "v1"]);
        let text = m.render();
        let types = crate::metrics::families(&text);
        assert_eq!(
            types,
            [
                "triage_guards_total counter",
                "triage_performance_accuracy gauge",
                "triage_performance_below_card gauge",
                "triage_performance_drop_p_value gauge",
                "triage_performance_invalid_predictions_total counter",
                "triage_performance_invalid_shadows_total counter",
                "triage_performance_join_size gauge",
                "triage_performance_labelled_predictions gauge",
                "triage_performance_labels_total counter",
                "triage_performance_macro_f1 gauge",
                "triage_performance_new_class gauge",
                "triage_performance_new_class_share gauge",
                "triage_performance_other_class_labels_total counter",
                "triage_performance_promised_macro_f1 gauge",
                "triage_performance_waiting_labels gauge",
                "triage_race_dropped_observations_total counter",
                "triage_race_labelled_messages gauge",
                "triage_race_macro_f1 gauge",
                "triage_race_p_value gauge",
                "triage_race_state gauge",
                "triage_retrain_alerts_total counter",
                "triage_retrain_decision_accuracy gauge",
                "triage_retrain_decision_macro_f1 gauge",
                "triage_retrain_failures_total counter",
                "triage_retrain_job_duration_seconds histogram",
                "triage_retrain_jobs_total counter",
                "triage_retrain_last_job_timestamp_seconds gauge",
                "triage_retrain_next_scheduled_timestamp_seconds gauge",
                "triage_retrain_running gauge",
                "triage_retrain_scheduled_total counter",
                "triage_retrain_webhook_requests_total counter",
                "triage_rollbacks_total counter",
            ]
        );
        assert_eq!(text.matches("# HELP ").count(), types.len(), "{text}");
    }

    #[test]
    fn alert_names_outside_the_handled_ones_count_as_other() {
        let m = RetrainMetrics::new(&["TriageDriftDetected".to_string()]);
        let series = |m: &RetrainMetrics| {
            m.render()
                .lines()
                .filter(|l| l.starts_with("triage_retrain_alerts_total{"))
                .count()
        };
        let before = series(&m);
        for i in 0..10_000 {
            m.alert(&format!("Flood{i}"), AlertAction::Ignored);
            m.alert(&format!("Flood{i}"), AlertAction::Accepted);
        }
        m.alert(UNKNOWN_ALERT, AlertAction::Ignored);
        m.alert("TriageDriftDetected", AlertAction::Accepted);
        let text = m.render();
        assert!(
            text.contains("triage_retrain_alerts_total{action=\"ignored\",alert=\"other\"} 10001"),
            "{text}"
        );
        assert!(
            text.contains("triage_retrain_alerts_total{action=\"accepted\",alert=\"other\"} 10000"),
            "{text}"
        );
        assert!(
            text.contains(
                "triage_retrain_alerts_total{action=\"accepted\",alert=\"TriageDriftDetected\"} 1"
            ),
            "{text}"
        );
        assert_eq!(
            series(&m),
            before + 1,
            "one new series: other/accepted\n{text}"
        );
        assert!(!text.contains("Flood"), "{text}");
    }

    #[test]
    fn decision_scores_show_the_last_decision_by_role() {
        use crate::registry::decision::Scores;
        let contender = |version: &str, f1: f64| Contender {
            version: version.into(),
            metrics: Scores {
                accuracy: f1 + 0.05,
                macro_f1: f1,
                per_class_f1: Default::default(),
            },
        };
        let scores = DecisionScores::new();
        let registry = Registry::new();
        scores.register(&registry);
        scores.record(Some(&contender("v1", 0.4)), Some(&contender("v2", 0.9)));
        scores.record(Some(&contender("v2", 0.8)), Some(&contender("v3", 0.7)));
        scores.record(Some(&contender("v2", 0.1)), None);
        scores.record(None, None);
        let text = crate::metrics::render(&registry);
        assert!(
            text.contains(
                "triage_retrain_decision_macro_f1{model_version=\"v2\",role=\"champion\"} 0.1"
            ),
            "{text}"
        );
        assert!(!text.contains("v1") && !text.contains("v3"), "{text}");
    }

    #[test]
    fn failed_jobs_are_counted_by_a_cause_from_a_closed_set() {
        let m = RetrainMetrics::new(&[]);
        let scores = DecisionScores::new();
        scores.register(&m.registry);
        let text = m.render();
        assert!(
            text.contains(r#"triage_retrain_failures_total{cause="not_enough_data"} 0"#),
            "every cause starts at zero: {text}"
        );
        scores.failed(Some("not_enough_data"));
        scores.failed(Some("../../anything a caller made up"));
        scores.failed(None);
        let text = m.render();
        assert!(text.contains(r#"triage_retrain_failures_total{cause="not_enough_data"} 1"#));
        assert!(text.contains(r#"triage_retrain_failures_total{cause="stopped"} 2"#));
        assert!(!text.contains("anything"), "{text}");
    }
}
