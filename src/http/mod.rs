//! The HTTP surface of `triage run`: `/metrics`, `/healthz`, `/readyz` and
//! `POST /v1/classify` (same worker and model as the stream); `triage run` merges
//! the console for people at `/` (`crate::console`, above this module) into them.
//! The servers' bounds are in [`limits`].

pub mod limits;
#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::inference::worker::WorkerHandle;
use crate::metrics::Metrics;
use crate::stream::state::PipelineState;

#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub state: Arc<PipelineState>,
    pub worker: WorkerHandle,
    /// Shared with the console's form.
    pub limits: ClassifyLimits,
}

/// The bounds of a classify request, the same for `POST /v1/classify` and the
/// console's form.
#[derive(Clone)]
pub struct ClassifyLimits {
    /// `http.max_texts_per_request`: texts per request, lines per submit.
    pub max_texts: usize,
    /// `http.max_request_bytes`: a body (the router's limit), and a `GET /?text=`
    /// query string, bounded like a POSTed form's body.
    pub max_request_bytes: usize,
    /// `http.max_classify_in_flight`: one gate for both.
    pub gate: limits::ClassifyGate,
}

impl ClassifyLimits {
    /// The limits `http` sets, with a gate counted in `metrics`.
    pub fn new(http: &crate::config::HttpSettings, metrics: &limits::LimitMetrics) -> Self {
        Self {
            max_texts: http.max_texts_per_request,
            max_request_bytes: http.max_request_bytes,
            gate: limits::ClassifyGate::new(http.max_classify_in_flight, metrics),
        }
    }
}

/// The service's machine routes; the caller may merge more (the console, which
/// sits above this module) before [`serve`].
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/classify", post(classify))
        .with_state(app)
}

/// Serves `routes` on `listener` within `http`'s bounds until `shutdown`, with a
/// request body limit of `http.max_request_bytes` (413 beyond it) on every route.
pub async fn serve(
    listener: tokio::net::TcpListener,
    routes: Router,
    http: &crate::config::HttpSettings,
    metrics: limits::LimitMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let routes = routes.layer(DefaultBodyLimit::max(http.max_request_bytes));
    limits::serve(listener, routes, http.into(), metrics, shutdown).await;
}

async fn metrics(State(app): State<AppState>) -> Response {
    app.state.ready();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(app): State<AppState>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &app.state;
    let ready = s.ready();
    let body = json!({
        "ready": ready,
        "assigned_partitions": s.assigned.load(Relaxed),
        "brokers_up": s.brokers_up.load(Relaxed),
        "workers_alive": s.metrics.workers_alive.get(),
        "worker_outage": s.metrics.worker_outage.get() > 0,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

fn error(app: &AppState, status: StatusCode, message: impl Into<String>) -> Response {
    app.metrics
        .http_requests
        .with_label_values(&["/v1/classify", status.as_str()])
        .inc();
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// `{"text": "..."}` or `{"texts": ["...", ...]}` -> predictions in input order.
async fn classify(State(app): State<AppState>, body: Bytes) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                &app,
                StatusCode::BAD_REQUEST,
                format!("body is not JSON: {e}"),
            );
        }
    };
    let texts: Vec<String> = match (&value.get("text"), &value.get("texts")) {
        (Some(Value::String(t)), None) => vec![t.clone()],
        (None, Some(Value::Array(items))) => {
            let mut texts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(t) => texts.push(t.clone()),
                    _ => {
                        return error(
                            &app,
                            StatusCode::BAD_REQUEST,
                            format!("texts[{i}] is not a string"),
                        );
                    }
                }
            }
            texts
        }
        _ => {
            return error(
                &app,
                StatusCode::BAD_REQUEST,
                "send {\"text\": \"...\"} or {\"texts\": [\"...\", ...]}",
            );
        }
    };
    if texts.is_empty() || texts.iter().any(|t| t.trim().is_empty()) {
        return error(
            &app,
            StatusCode::BAD_REQUEST,
            "texts must be non-empty strings",
        );
    }
    if texts.len() > app.limits.max_texts {
        return error(
            &app,
            StatusCode::BAD_REQUEST,
            format!(
                "{} texts; at most {} per request (http.max_texts_per_request)",
                texts.len(),
                app.limits.max_texts
            ),
        );
    }
    let Some(_place) = app.limits.gate.try_enter() else {
        app.metrics
            .http_requests
            .with_label_values(&["/v1/classify", "503"])
            .inc();
        return limits::shed_response(limits::Limit::MaxClassifyInFlight);
    };
    match app.worker.classify(texts).await {
        Ok(c) => {
            app.metrics
                .http_requests
                .with_label_values(&["/v1/classify", "200"])
                .inc();
            axum::Json(json!({ "model_version": c.model_version, "predictions": c.labelled }))
                .into_response()
        }
        Err(e) => error(&app, StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use axum::Router;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::limits::{ClassifyGate, LimitMetrics, ServeLimits};
    use super::*;
    use crate::config::HttpSettings;
    use crate::inference::testing;

    /// `router` served within `limits` on a free local port.
    async fn start(router: Router, limits: ServeLimits, registry: &prometheus::Registry) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let metrics = LimitMetrics::register(registry);
        tokio::spawn(limits::serve(
            listener,
            router,
            limits,
            metrics,
            std::future::pending(),
        ));
        port
    }

    fn limits() -> ServeLimits {
        (&HttpSettings::default()).into()
    }

    /// One request on its own connection; the whole answer (status line, headers, body).
    async fn request(port: u16, method: &str, path: &str, body: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        out
    }

    fn status(answer: &str) -> &str {
        answer.split_whitespace().nth(1).unwrap_or("none")
    }

    #[tokio::test]
    async fn a_client_that_sends_half_a_header_is_disconnected_after_the_header_read_timeout() {
        let registry = prometheus::Registry::new();
        let mut l = limits();
        l.header_read_timeout = Duration::from_millis(300);
        let router = Router::new().route("/healthz", get(|| async { "ok" }));
        let port = start(router, l, &registry).await;
        let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "still connected after 5 s");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250),
            "closed after {waited:?}"
        );
        assert!(!String::from_utf8_lossy(&rest).contains("200"));
        // A whole request is still served.
        assert_eq!(status(&request(port, "GET", "/healthz", "").await), "200");
        let text = crate::metrics::render(&registry);
        assert!(
            text.contains(r#"triage_http_timeouts_total{limit="header_read_timeout_ms"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn past_max_connections_a_new_connection_gets_503_with_retry_after() {
        let registry = prometheus::Registry::new();
        let mut l = limits();
        l.max_connections = 2;
        let router = Router::new().route("/healthz", get(|| async { "ok" }));
        let port = start(router, l, &registry).await;
        // Two kept-alive connections hold both places.
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
            held.push(s);
        }
        let answer = request(port, "GET", "/healthz", "").await;
        assert_eq!(status(&answer), "503", "{answer}");
        assert!(answer.contains("retry-after: 1"), "{answer}");
        assert!(answer.contains("http.max_connections"), "{answer}");
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let answer = request(port, "GET", "/healthz", "").await;
            if status(&answer) == "200" {
                break;
            }
            assert!(Instant::now() < deadline, "places never freed: {answer}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let text = crate::metrics::render(&registry);
        assert!(
            text.contains(r#"triage_http_shed_total{limit="max_connections"}"#)
                && !text.contains(r#"triage_http_shed_total{limit="max_connections"} 0"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn requests_past_the_cap_get_503_slow_ones_408_and_probes_still_answer() {
        let registry = prometheus::Registry::new();
        let mut l = limits();
        l.max_concurrent_requests = 1;
        l.request_timeout = Duration::from_millis(500);
        let release = Arc::new(tokio::sync::Notify::new());
        let r = release.clone();
        let router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/slow",
                get(move || {
                    let r = r.clone();
                    async move {
                        r.notified().await;
                        "done"
                    }
                }),
            );
        let port = start(router, l, &registry).await;
        let first = tokio::spawn(request(port, "GET", "/slow", ""));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = request(port, "GET", "/slow", "").await;
        assert_eq!(status(&second), "503", "{second}");
        assert!(second.contains("retry-after: 1") && second.contains("max_concurrent_requests"));
        assert_eq!(status(&request(port, "GET", "/healthz", "").await), "200");
        // Nobody releases the first: it times out.
        let first = first.await.unwrap();
        assert_eq!(status(&first), "408", "{first}");
        assert!(first.contains("http.request_timeout_ms"), "{first}");
        let text = crate::metrics::render(&registry);
        assert!(
            text.contains(r#"triage_http_shed_total{limit="max_concurrent_requests"} 1"#)
                && text.contains(r#"triage_http_timeouts_total{limit="request_timeout_ms"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn classify_requests_past_max_classify_in_flight_get_503_at_once_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let settings = testing::settings(dir.path());
        testing::train_champion(&settings, 0);
        let p = testing::pipeline(&settings);
        let limit_metrics = LimitMetrics::register(&p.metrics.registry);
        let gate = ClassifyGate::new(1, &limit_metrics);
        let limits = super::ClassifyLimits {
            max_texts: 8,
            max_request_bytes: 1024,
            gate: gate.clone(),
        };
        let app = AppState {
            metrics: p.metrics.clone(),
            state: p.state.clone(),
            worker: p.worker.clone(),
            limits,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let http = HttpSettings::default();
        tokio::spawn(async move {
            serve(
                listener,
                router(app),
                &http,
                limit_metrics,
                std::future::pending(),
            )
            .await;
        });
        let body = r#"{"text": "great tasty lovely"}"#;
        assert_eq!(
            status(&request(port, "POST", "/v1/classify", body).await),
            "200"
        );

        // One classification in flight (as if a slow one held the worker) takes the
        // only place: every other classify request is refused at once.
        let place = gate.try_enter().unwrap();
        let n = 20;
        let started = Instant::now();
        let answers =
            futures::future::join_all((0..n).map(|_| request(port, "POST", "/v1/classify", body)))
                .await;
        for a in &answers {
            assert_eq!(status(a), "503", "{a}");
            assert!(
                a.contains("retry-after: 1") && a.contains("max_classify_in_flight"),
                "{a}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refusals waited"
        );
        assert_eq!(status(&request(port, "GET", "/healthz", "").await), "200");
        let metrics = request(port, "GET", "/metrics", "").await;
        assert!(
            metrics.contains(&format!(
                r#"triage_http_shed_total{{limit="max_classify_in_flight"}} {n}"#
            )) && metrics.contains(&format!(
                r#"triage_http_requests_total{{path="/v1/classify",status="503"}} {n}"#
            )),
            "{metrics}"
        );
        drop(place);
        assert_eq!(
            status(&request(port, "POST", "/v1/classify", body).await),
            "200"
        );
    }
}
