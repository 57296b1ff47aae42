//! The retrainer's HTTP surface: `POST /v1/alerts` (Alertmanager's webhook),
//! `GET /metrics` and `GET /healthz`.
//!
//! `POST /v1/alerts` checks the bearer token before it reads the body (401, and
//! nothing starts), then the body's size (413) and shape (400, a JSON error naming
//! the field), and answers at once with what it did; the job runs in the background:
//!
//! ```json
//! {"job": "started", "accepted": [{"alert": "TriageDriftDetected", "fingerprint": "1fab5115a88eb9cb"}],
//!  "alarms": [], "coalesced": [],
//!  "ignored": [{"alert": "TriageDriftDetected", "fingerprint": "3ec3bc02054803f5", "reason": "resolved"}]}
//! ```
//!
//! `job` is `started` (a job starts now), `coalesced` (one runs or cools down; these
//! alerts join the follow-up) or `none` (nothing to do). `alarms` are alerts about a
//! swap (`TriageSwapDeadLetters`) handed to a running guard, which rolls back.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use super::metrics::{AlertAction, RetrainMetrics, UNKNOWN_ALERT};
use super::payload::{self, Ignored};
use super::scheduler::{Admission, Scheduler};
use super::token::WebhookToken;
use super::{Trigger, TriggerAlert};

/// Where Alertmanager posts its notifications.
pub const ALERTS_PATH: &str = "/v1/alerts";

/// What the routes share.
#[derive(Clone)]
pub struct WebhookState {
    pub token: Arc<WebhookToken>,
    pub scheduler: Scheduler,
    pub metrics: RetrainMetrics,
    /// `retrain.alerts`: the alert names that start a job.
    pub handled: Arc<[String]>,
    /// `retrain.max_request_bytes`: larger bodies get 413.
    pub max_request_bytes: usize,
    /// The registry's aliases now: alerts about an older version are superseded,
    /// and alerts while a challenger is in shadow are answered by its race.
    pub aliases: AliasLookup,
    /// Alerts a guard's rollback answered.
    pub answered: Answered,
    /// Where an alert about a swap raises its alarm for the guard.
    pub races: crate::late_labels::race::Races,
}

/// Reads the current champion and challenger (None: unknown; every alert counts).
pub type AliasLookup = Arc<dyn Fn() -> (Option<String>, Option<String>) + Send + Sync>;

/// The alert firings a guard's rollback answered, (fingerprint, starts_at): shared
/// by the rollout (which adds them) and the webhook (which ignores them). Seeded at
/// start from the registry's guard decisions; at most [`Answered::MAX`], the
/// oldest forgotten first (Alertmanager stops repeating an alert once it resolves,
/// so only the last few can come again).
#[derive(Clone, Default)]
pub struct Answered(Arc<std::sync::Mutex<std::collections::VecDeque<(String, String)>>>);

impl Answered {
    pub const MAX: usize = 1024;

    /// Adds the alerts of one rollback.
    pub fn add(&self, alerts: &[crate::registry::decision::AlertRef]) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for a in alerts.iter().filter(|a| !a.fingerprint.is_empty()) {
            let key = (a.fingerprint.clone(), a.starts_at.clone());
            if !held.contains(&key) {
                if held.len() >= Self::MAX {
                    held.pop_front();
                }
                held.push_back(key);
            }
        }
    }

    /// The answered firings now.
    pub fn snapshot(&self) -> std::collections::BTreeSet<(String, String)> {
        let held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.iter().cloned().collect()
    }
}

/// The routes.
pub fn router(state: WebhookState) -> Router {
    let limit = state.max_request_bytes;
    Router::new()
        .route(ALERTS_PATH, post(alerts))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// An alert the receiver acted on, as the response lists it.
#[derive(Debug, Serialize)]
struct Acted<'a> {
    alert: &'a str,
    fingerprint: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum JobAnswer {
    Started,
    Coalesced,
    None,
}

impl JobAnswer {
    fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Coalesced => "coalesced",
            Self::None => "none",
        }
    }
}

async fn alerts(State(app): State<WebhookState>, request: Request) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if let Err(failure) = app.token.check_header(authorization) {
        warn!(reason = %failure, "Webhook request refused (401); nothing started.");
        app.metrics.alert(UNKNOWN_ALERT, AlertAction::Unauthorised);
        let mut response = error(&app, StatusCode::UNAUTHORIZED, failure.to_string());
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let body = match Bytes::from_request(request, &()).await {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let message = format!(
                "body is larger than {} bytes (retrain.max_request_bytes); set max_alerts on Alertmanager's webhook_config",
                app.max_request_bytes
            );
            return error(&app, StatusCode::PAYLOAD_TOO_LARGE, message);
        }
        Err(rejection) => return error(&app, rejection.status(), rejection.body_text()),
    };
    let notification = match payload::parse(&body) {
        Ok(n) => n,
        Err(err) => return error(&app, StatusCode::BAD_REQUEST, err.to_string()),
    };
    let group_key = notification.group_key.clone();
    let truncated = notification.truncated_alerts;
    let (champion, challenger) = (app.aliases)();
    let standing = payload::Standing {
        champion,
        challenger,
        answered: app.answered.snapshot(),
    };
    let sorted = payload::sort_alerts(notification, &app.handled, &standing);

    for alarm in &sorted.alarms {
        warn!(alert = %alarm.name, fingerprint = %alarm.fingerprint, "An alert about the swap while the new champion is guarded: the guard rolls back.");
        app.races.raise_alarm(format!(
            "alert {} (fingerprint {}, firing since {})",
            alarm.name, alarm.fingerprint, alarm.starts_at
        ));
        app.metrics.alert(&alarm.name, AlertAction::Accepted);
    }
    let (job, action) = if sorted.wanted.is_empty() {
        (JobAnswer::None, AlertAction::Accepted)
    } else {
        match app.scheduler.submit(Trigger::new(sorted.wanted.clone())) {
            Admission::Started => (JobAnswer::Started, AlertAction::Accepted),
            Admission::Coalesced => (JobAnswer::Coalesced, AlertAction::Coalesced),
        }
    };
    for alert in &sorted.wanted {
        app.metrics.alert(&alert.name, action);
    }
    for ignored in &sorted.ignored {
        app.metrics.alert(&ignored.alert, AlertAction::Ignored);
    }
    info!(
        group_key = %group_key,
        job = job.as_str(),
        wanted = sorted.wanted.len(),
        ignored = sorted.ignored.len(),
        truncated_alerts = truncated,
        "Webhook notification received."
    );
    let acted = |alerts: &[TriggerAlert]| -> Vec<serde_json::Value> {
        alerts
            .iter()
            .map(|a| {
                json!(Acted {
                    alert: &a.name,
                    fingerprint: &a.fingerprint
                })
            })
            .collect()
    };
    let (accepted, coalesced) = match job {
        JobAnswer::Coalesced => (Vec::new(), acted(&sorted.wanted)),
        _ => (acted(&sorted.wanted), Vec::new()),
    };
    let ignored: &[Ignored] = &sorted.ignored;
    count(&app, StatusCode::OK);
    axum::Json(json!({
        "job": job,
        "accepted": accepted,
        "alarms": acted(&sorted.alarms),
        "coalesced": coalesced,
        "ignored": ignored,
    }))
    .into_response()
}

fn count(app: &WebhookState, status: StatusCode) {
    app.metrics
        .webhook_requests
        .with_label_values(&[status.as_str()])
        .inc();
}

fn error(app: &WebhookState, status: StatusCode, message: String) -> Response {
    count(app, status);
    (status, axum::Json(json!({ "error": message }))).into_response()
}

async fn metrics(State(app): State<WebhookState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// Liveness, and what the scheduler is doing.
async fn healthz(State(app): State<WebhookState>) -> Response {
    axum::Json(json!({ "status": "ok", "scheduler": app.scheduler.status() })).into_response()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::http::testing::get;
    use crate::retrainer::payload::tests::{FIRING, FIRING_AND_RESOLVED};
    use crate::retrainer::scheduler::Phase;
    use crate::retrainer::scheduler::tests::{FakeJob, FakeJobControl};
    use crate::retrainer::{JobOutcome, RetrainJob};

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    struct Rig {
        app: Router,
        scheduler: Scheduler,
        metrics: RetrainMetrics,
        job: FakeJobControl,
    }

    fn rig(max_request_bytes: usize) -> Rig {
        let job = FakeJob::control();
        let handled = crate::config::RetrainSettings::default().alerts;
        let metrics = RetrainMetrics::new(&handled);
        let scheduler = Scheduler::start(
            job.job.clone() as Arc<dyn RetrainJob>,
            Duration::from_secs(3600),
            metrics.clone(),
        );
        let app = router(WebhookState {
            token: Arc::new(WebhookToken::new(TOKEN)),
            scheduler: scheduler.clone(),
            metrics: metrics.clone(),
            handled: handled.into(),
            max_request_bytes,
            aliases: Arc::new(|| (None, None)),
            answered: Answered::default(),
            races: Default::default(),
        });
        Rig {
            app,
            scheduler,
            metrics,
            job,
        }
    }

    async fn send(app: &Router, authorization: Option<&str>, body: &str) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method("POST")
            .uri(ALERTS_PATH)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let request = request.body(Body::from(body.to_string())).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    fn bearer() -> String {
        format!("Bearer {TOKEN}")
    }

    fn assert_nothing_started(r: &Rig) {
        let status = r.scheduler.status();
        assert_eq!(status.phase, Phase::Idle, "{status:?}");
        assert_eq!(status.jobs_started, 0);
    }

    #[tokio::test]
    async fn missing_or_wrong_token_is_401_and_starts_nothing() {
        let mut r = rig(1 << 20);
        let (status, body) = send(&r.app, None, FIRING).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
        let wrong = format!("Bearer {TOKEN}x");
        let (status, body) = send(&r.app, Some(&wrong), FIRING).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "wrong bearer token");
        // Not even a body that is not JSON gets past the token check to a 400.
        let (status, _) = send(&r.app, Some("Bearer nope"), "not json").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        assert_nothing_started(&r);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(r.job.started.try_recv().is_err(), "a job ran");
        let m = &r.metrics;
        assert_eq!(m.webhook_requests.with_label_values(&["401"]).get(), 3);
        assert_eq!(
            m.alerts
                .with_label_values(&["unknown", "unauthorised"])
                .get(),
            3
        );
        assert_eq!(
            m.alerts
                .with_label_values(&["TriageDriftDetected", "accepted"])
                .get(),
            0
        );
        r.scheduler.shutdown().await;
    }

    #[tokio::test]
    async fn right_token_starts_a_job_and_answers_at_once() {
        let mut r = rig(1 << 20);
        let (status, body) = send(&r.app, Some(&bearer()), FIRING).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["job"], "started");
        assert_eq!(body["accepted"].as_array().unwrap().len(), 2);
        assert_eq!(body["accepted"][0]["alert"], "TriageDriftDetected");
        assert_eq!(body["accepted"][0]["fingerprint"], "1fab5115a88eb9cb");
        // The job has not finished (the fake waits for an outcome): the answer
        // did not wait for it.
        let trigger = r.job.started.recv().await.unwrap();
        assert_eq!(trigger.alerts.len(), 2);
        assert_eq!(r.metrics.running.get(), 1);

        // A second notification while the job runs joins the follow-up.
        let (status, body) = send(&r.app, Some(&bearer()), FIRING_AND_RESOLVED).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["job"], "coalesced");
        assert_eq!(body["coalesced"][0]["fingerprint"], "1fab5115a88eb9cb");
        assert_eq!(body["ignored"][0]["reason"], "resolved");
        let alerts = |action: &str| {
            r.metrics
                .alerts
                .with_label_values(&["TriageDriftDetected", action])
                .get()
        };
        assert_eq!(
            (alerts("accepted"), alerts("coalesced"), alerts("ignored")),
            (2, 1, 1)
        );
        r.job
            .outcomes
            .send(JobOutcome::Failed {
                reason: "test".into(),
            })
            .unwrap();
        r.scheduler.shutdown().await;
    }

    #[tokio::test]
    async fn only_resolved_or_unhandled_alerts_start_nothing() {
        let r = rig(1 << 20);
        let mut v: Value = serde_json::from_str(FIRING_AND_RESOLVED).unwrap();
        v["alerts"][0]["labels"]["alertname"] = "TriageDeadLetterRate".into();
        let (status, body) = send(&r.app, Some(&bearer()), &v.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["job"], "none");
        assert_eq!(body["accepted"], json!([]));
        let reasons: Vec<&str> = body["ignored"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["reason"].as_str().unwrap())
            .collect();
        assert_eq!(reasons, vec!["not_handled", "resolved"]);
        assert_nothing_started(&r);
        r.scheduler.shutdown().await;
    }

    #[tokio::test]
    async fn bad_bodies_are_400_naming_the_problem() {
        let r = rig(1 << 20);
        let (status, body) = send(&r.app, Some(&bearer()), "alertname=x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("body is not JSON")
        );
        let mut v: Value = serde_json::from_str(FIRING).unwrap();
        v["alerts"][0].as_object_mut().unwrap().remove("labels");
        let (status, body) = send(&r.app, Some(&bearer()), &v.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("alerts[0]: missing field `labels`"),
            "{body}"
        );
        assert_nothing_started(&r);
        assert_eq!(
            r.metrics.webhook_requests.with_label_values(&["400"]).get(),
            2
        );
        r.scheduler.shutdown().await;
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413() {
        let r = rig(4096);
        let mut v: Value = serde_json::from_str(FIRING).unwrap();
        v["commonAnnotations"]["description"] = "x".repeat(5000).into();
        let (status, body) = send(&r.app, Some(&bearer()), &v.to_string()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("retrain.max_request_bytes"),
            "{body}"
        );
        assert_nothing_started(&r);
        assert_eq!(
            r.metrics.webhook_requests.with_label_values(&["413"]).get(),
            1
        );
        r.scheduler.shutdown().await;
    }

    #[tokio::test]
    async fn metrics_and_healthz_answer_without_a_token() {
        let r = rig(1 << 20);
        send(&r.app, None, FIRING).await;
        let (status, text) = get(&r.app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains("triage_retrain_webhook_requests_total{status=\"401\"} 1"),
            "{text}"
        );
        assert!(text.contains("triage_retrain_running 0"), "{text}");
        let (status, text) = get(&r.app, "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        let health: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(health["status"], "ok");
        assert_eq!(health["scheduler"]["phase"], "idle");
        r.scheduler.shutdown().await;
    }
}
