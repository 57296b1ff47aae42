//! The HTTP surface of `triage run`: `/metrics`, `/healthz`, `/readyz` and
//! `POST /v1/classify` (same worker and model as the stream), and the console for
//! people at `/` ([`crate::console`]).

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
    pub max_texts: usize,
    pub console: crate::console::Console,
}

/// The routes, with a request body limit of `max_request_bytes` (413 beyond it).
pub fn router(app: AppState, max_request_bytes: usize) -> Router {
    let console = crate::console::router(app.console.clone());
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/classify", post(classify))
        .with_state(app)
        .merge(console)
        .layer(DefaultBodyLimit::max(max_request_bytes))
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    app: AppState,
    max_request_bytes: usize,
) -> std::io::Result<()> {
    axum::serve(listener, router(app, max_request_bytes)).await
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
        "worker_outage": s.metrics.worker_outage.get() == 1,
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
    if texts.len() > app.max_texts {
        return error(
            &app,
            StatusCode::BAD_REQUEST,
            format!(
                "{} texts; at most {} per request (http.max_texts_per_request)",
                texts.len(),
                app.max_texts
            ),
        );
    }
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
