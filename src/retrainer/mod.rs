//! Alert-triggered retraining: `triage retrainer`, a process of its own (so a
//! retrain never takes CPU from the consumers) that receives Alertmanager's webhook
//! and runs a [`RetrainJob`] for the alerts it handles.
//!
//! - [`payload`]: Alertmanager's webhook notification (version 4) and which of its
//!   alerts ask for a retrain (pure);
//! - [`token`]: the bearer token, compared in constant time;
//! - [`scheduler`]: one job at a time, a cooldown after each, alerts meanwhile
//!   coalesced into one follow-up job;
//! - [`rollout`]: the live race acted on: a challenger in shadow promoted or
//!   rejected on the late labels both models scored, each outcome a decision;
//! - [`schedule`]: `retrain.every`, the same job on a schedule, due by the
//!   registry's clock (its last decision or champion change);
//! - [`webhook`]: the HTTP surface (`POST /v1/alerts`, `GET /metrics`, `GET /healthz`);
//! - [`metrics`]: the receiver's own Prometheus registry;
//! - [`alert_job`]: the job for alerts: [`crate::retrain`]'s job (recent feature
//!   records joined with late labels, a challenger fitted and judged against the
//!   champion on the same held-out rows, every decision recorded), run off the
//!   async runtime;
//! - beside the webhook, [`crate::late_labels`]: the join of late labels with
//!   predictions, for rolling accuracy and macro-F1 per model version.
//!
//! The job itself (fit a challenger, compare it with the champion, promote) is
//! behind [`RetrainJob`], so the receiver is tested with a fake one.

pub mod alert_job;
pub mod metrics;
pub mod payload;
pub mod rollout;
pub mod schedule;
pub mod scheduler;
pub mod token;
pub mod webhook;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use tracing::info;

use crate::config::RetrainSettings;
use crate::kafka::KafkaSettings;
use crate::registry::decision::AlertRef;

pub use metrics::RetrainMetrics;
pub use scheduler::{Admission, Phase, Scheduler};
pub use token::{TokenError, WebhookToken};
pub use webhook::WebhookState;

/// One firing alert that asked for a retrain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TriggerAlert {
    /// The `alertname` label.
    pub name: String,
    /// Alertmanager's fingerprint of the label set (empty if the sender gave none).
    pub fingerprint: String,
    /// All labels, e.g. `detector` and `model_version` for `TriageDriftDetected`.
    pub labels: BTreeMap<String, String>,
    /// When the alert started firing (RFC 3339, as Alertmanager sent it).
    pub starts_at: String,
}

impl TriggerAlert {
    /// The alert as a decision names it.
    pub fn as_ref(&self) -> AlertRef {
        AlertRef {
            name: self.name.clone(),
            fingerprint: self.fingerprint.clone(),
            starts_at: self.starts_at.clone(),
        }
    }
}

/// Why a job runs: the alerts that asked for it. When notifications arrive while a
/// job runs or cools down, their alerts are merged into the one follow-up trigger.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Trigger {
    /// Distinct alerts (by fingerprint, else by labels), oldest notification first,
    /// at most [`Trigger::MAX_ALERTS`].
    pub alerts: Vec<TriggerAlert>,
    /// Webhook notifications folded into this trigger.
    pub notifications: u32,
    /// Whether `retrain.every` asked for it too ([`schedule`]).
    pub scheduled: bool,
}

impl Trigger {
    /// Alerts kept per trigger; more only repeat what the first ones say.
    pub const MAX_ALERTS: usize = 256;

    /// A trigger from one notification's handled alerts.
    pub fn new(alerts: Vec<TriggerAlert>) -> Self {
        let mut t = Self::default();
        t.merge(Self {
            alerts,
            notifications: 1,
            scheduled: false,
        });
        t
    }

    /// The trigger of a scheduled run (`retrain.every`).
    pub fn scheduled() -> Self {
        Self {
            scheduled: true,
            ..Self::default()
        }
    }

    /// Folds a later notification's alerts into this trigger.
    pub fn merge(&mut self, later: Trigger) {
        self.notifications = self.notifications.saturating_add(later.notifications);
        self.scheduled |= later.scheduled;
        for alert in later.alerts {
            let seen = self.alerts.iter().any(|a| {
                if a.fingerprint.is_empty() || alert.fingerprint.is_empty() {
                    a.labels == alert.labels
                } else {
                    a.fingerprint == alert.fingerprint
                }
            });
            if !seen && self.alerts.len() < Self::MAX_ALERTS {
                self.alerts.push(alert);
            }
        }
    }

    /// The alerts, as a decision records them.
    pub fn alert_refs(&self) -> Vec<AlertRef> {
        self.alerts.iter().map(TriggerAlert::as_ref).collect()
    }

    /// The distinct alert names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.alerts.iter().map(|a| a.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// What a job decided. Each ends up in `triage_retrain_jobs_total{verdict}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum JobOutcome {
    /// A challenger passed the gates, beat the champion and is the champion now.
    Promoted { version: String },
    /// A challenger passed the gates and beat the champion on the held-out slice,
    /// and now races it in shadow (`retrain.rollout = "shadow"`).
    Shadow { version: String },
    /// A challenger was fitted and judged, and the champion stays (a gate failed, or
    /// it did not beat the champion by the margin). A decision, not an error.
    Rejected { reason: String },
    /// No decision could be made (no data, a registry error, a panic...).
    Failed { reason: String },
}

impl JobOutcome {
    /// The metric label: `promoted`, `shadow`, `rejected` or `failed`.
    pub fn verdict(&self) -> &'static str {
        match self {
            Self::Promoted { .. } => "promoted",
            Self::Shadow { .. } => "shadow",
            Self::Rejected { .. } => "rejected",
            Self::Failed { .. } => "failed",
        }
    }
}

/// The retraining job the receiver runs.
///
/// What an implementation must do, given the [`Trigger`] (the alerts that asked for
/// it, for the decision record; it need not act on their labels):
///
/// 1. take the recent labelled feature records (plus the original training set, as
///    configured) and fit a challenger;
/// 2. evaluate the champion and the challenger on the same held-out recent data;
/// 3. promote the challenger (move the `champion` alias; running consumers hot-swap)
///    only if it passes the training gates and beats the champion by the configured
///    margin, and return [`JobOutcome::Promoted`]; otherwise store it unpromoted and
///    return [`JobOutcome::Rejected`] with the reason; return [`JobOutcome::Failed`]
///    when no decision could be made;
/// 4. record the decision (trigger, scores of both, verdict) in the registry.
///
/// The receiver guarantees one job at a time and the cooldown; it logs and counts
/// the outcome, times the job, and turns a panic into `Failed`. The job must keep
/// CPU-heavy work off the async runtime (`tokio::task::spawn_blocking`), so the
/// webhook keeps answering. On shutdown the receiver waits for a running job to
/// finish; it can still be killed at any point (SIGKILL, a pod's grace period), so
/// the registry must never be left half-written: write a version whole, then move
/// the alias atomically.
pub trait RetrainJob: Send + Sync + 'static {
    /// Runs one retrain for `trigger` and says what it decided.
    fn run(&self, trigger: Trigger) -> BoxFuture<'_, JobOutcome>;

    /// The gauges the job keeps its decisions' scores in, if any; the receiver
    /// exports them on its /metrics.
    fn decision_scores(&self) -> Option<metrics::DecisionScores> {
        None
    }

    /// The `[rollout]` settings the live races are judged by (None: the defaults).
    /// The job carries the whole configuration; the receiver's own arguments do not.
    fn rollout(&self) -> Option<crate::config::RolloutSettings> {
        None
    }
}

/// Why `triage retrainer` could not run.
#[derive(Debug, thiserror::Error)]
pub enum RetrainerError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("cannot listen on {address} (retrain.listen): {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
}

/// Runs the receiver on `settings.listen` (alerts about a version other than the
/// champion `aliases()` names are superseded; while it names a challenger, the race
/// answers them), and beside it the label join over
/// `kafka`'s predictions and labels topics, until `shutdown` resolves; then waits
/// for a running job to finish (a pending follow-up is dropped). `registry` feeds
/// the console at `/` (late-label accuracy, models, retraining runs). The server
/// keeps `http`'s bounds (timeouts, connection and request caps), as `triage run`'s.
pub async fn run(
    settings: &RetrainSettings,
    kafka: &KafkaSettings,
    http: &crate::config::HttpSettings,
    aliases: webhook::AliasLookup,
    registry: crate::registry::Registry,
    job: Arc<dyn RetrainJob>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RetrainerError> {
    // The token first: without one nothing listens.
    let token = WebhookToken::from_settings(settings)?;
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .map_err(|source| RetrainerError::Listen {
            address: settings.listen.clone(),
            source,
        })?;
    let metrics = RetrainMetrics::new(&settings.alerts);
    let limit_metrics = crate::http::limits::LimitMetrics::register(&metrics.registry);
    if let Some(scores) = job.decision_scores() {
        scores.register(&metrics.registry);
    }
    // One shutdown for the server and the join.
    let shutdown = shutdown.boxed().shared();
    // The live races' checks, for the retrainer to act on (`Races::get`).
    let rollout = job.rollout().unwrap_or_default();
    let races = crate::late_labels::race::Races::default();
    let joiner = tokio::spawn(crate::late_labels::follow::run(
        kafka.clone(),
        crate::late_labels::join::JoinLimits::from_settings(settings).with_rollout(&rollout),
        crate::late_labels::cards::PromiseBook::new(
            Some(registry.clone()),
            crate::late_labels::promise::PromiseTest::from_settings(settings),
        ),
        crate::late_labels::race::RaceBook::new(
            crate::late_labels::race::RaceTest::from_settings(&rollout, settings),
            races.clone(),
        )
        .with_confidence(crate::late_labels::confidence::ConfidenceTest::from_settings(&rollout)),
        metrics.performance.clone(),
        shutdown.clone(),
    ));
    let scheduler = Scheduler::start(
        job,
        Duration::from_secs(settings.cooldown_s),
        metrics.clone(),
    );
    let schedule = settings.every().ok().flatten().map(|every| {
        tokio::spawn(schedule::run(
            every,
            registry.clone(),
            scheduler.clone(),
            metrics.clone(),
            shutdown.clone(),
        ))
    });
    // Firings a guard's rollback answered: the registry's, then the rollout's.
    let answered = webhook::Answered::default();
    for d in registry.decisions().map(|d| d.entries).unwrap_or_default() {
        answered.add(&d.answered_alerts);
    }
    let settler = tokio::spawn(rollout::run(
        registry.clone(),
        races.clone(),
        answered.clone(),
        rollout::Rules {
            max_wait: Duration::from_secs(rollout.max_wait_s),
            margin: settings.min_improvement,
            guard_labelled: rollout.guard_labelled,
            guard_after_seq: registry.aliases().map_or(0, |a| a.seq),
        },
        metrics.clone(),
        shutdown.clone(),
    ));
    let console = crate::console::retrainer_router(registry, &metrics.registry);
    let state = WebhookState {
        token: Arc::new(token),
        scheduler: scheduler.clone(),
        metrics,
        handled: settings.alerts.clone().into(),
        max_request_bytes: settings.max_request_bytes,
        aliases,
        answered,
        races,
    };
    info!(
        address = %settings.listen,
        alerts = ?settings.alerts,
        cooldown_s = settings.cooldown_s,
        "Retrainer listening: POST /v1/alerts, GET /metrics, GET /healthz, the console at /."
    );
    crate::http::limits::serve(
        listener,
        webhook::router(state).merge(console),
        http.into(),
        limit_metrics,
        shutdown,
    )
    .await;
    if let Some(schedule) = schedule {
        let _ = schedule.await;
    }
    let _ = settler.await;
    scheduler.shutdown().await;
    if let Err(err) = joiner.await {
        tracing::error!(error = %err, "The label join failed.");
    }
    info!("Retrainer stopped.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::retrainer_router;
    use crate::http::testing::get;
    use crate::registry::Registry;
    use crate::registry::decision::Verdict;
    use crate::registry::decision::fixture::decision;
    use crate::retrainer::metrics::RetrainMetrics;
    use axum::http::StatusCode;

    fn alert(name: &str, fingerprint: &str, detector: &str) -> TriggerAlert {
        TriggerAlert {
            name: name.into(),
            fingerprint: fingerprint.into(),
            labels: BTreeMap::from([
                ("alertname".to_string(), name.to_string()),
                ("detector".to_string(), detector.to_string()),
            ]),
            starts_at: "2026-11-30T10:00:00Z".into(),
        }
    }

    #[test]
    fn merged_triggers_keep_each_alert_once_and_count_notifications() {
        let mut t = Trigger::new(vec![alert("TriageDriftDetected", "a1", "mmd")]);
        t.merge(Trigger::new(vec![
            alert("TriageDriftDetected", "a1", "mmd"),
            alert("TriagePerformanceDrop", "b2", "macro_f1"),
        ]));
        t.merge(Trigger::new(vec![alert("TriageDriftDetected", "", "psi")]));
        t.merge(Trigger::new(vec![alert("TriageDriftDetected", "", "psi")]));
        assert_eq!(t.notifications, 4);
        assert_eq!(t.alerts.len(), 3);
        assert_eq!(
            t.names(),
            vec!["TriageDriftDetected", "TriagePerformanceDrop"]
        );
    }

    #[test]
    fn a_trigger_holds_a_bounded_number_of_alerts() {
        let mut t = Trigger::default();
        for i in 0..Trigger::MAX_ALERTS + 10 {
            t.merge(Trigger::new(vec![alert("A", &i.to_string(), "mmd")]));
        }
        assert_eq!(t.alerts.len(), Trigger::MAX_ALERTS);
        assert_eq!(t.notifications as usize, Trigger::MAX_ALERTS + 10);
    }

    #[test]
    fn outcomes_name_their_verdict() {
        let failed = JobOutcome::Failed {
            reason: "no data".into(),
        };
        assert_eq!(failed.verdict(), "failed");
        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            serde_json::json!({"verdict": "failed", "reason": "no data"})
        );
        assert_eq!(
            JobOutcome::Promoted {
                version: "v3".into()
            }
            .verdict(),
            "promoted"
        );
    }

    #[tokio::test]
    async fn the_retrainer_console_serves_its_views_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        registry
            .record_decision(&decision("retrain-1", Verdict::Rejected))
            .unwrap();
        let metrics = RetrainMetrics::new(&[]);
        metrics
            .performance
            .accuracy
            .with_label_values(&["v1"])
            .set(0.9);
        let app = retrainer_router(registry, &metrics.registry);
        for (path, shows) in [
            ("/", ">0.900<"),
            ("/models", "triage train"),
            ("/retraining", "retrain-1"),
        ] {
            let (status, html) = get(&app, path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {html}");
            assert!(html.contains(shows), "{path} shows {shows}: {html}");
            assert!(html.contains(">Late labels</a>") && !html.contains("/drift"));
        }
        assert!(
            metrics
                .render()
                .contains(r#"triage_http_requests_total{path="/retraining",status="200"} 1"#)
        );
    }
}
