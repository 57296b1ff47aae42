//! The console: pages for people at `/` on `triage run`'s HTTP surface. Classify
//! (a form, the only view that does anything), Models, Drift & quality and
//! Retraining; read-only otherwise (promotion stays a CLI action). HTML from maud
//! templates, charts as server-drawn SVG, CSS inline, no JavaScript: it works in
//! any browser, offline, and at phone width.
//!
//! Each view is a plain function from data to markup (unit-tested beside it); the
//! handlers here read the data (registry files on a blocking thread, the drift ring
//! from memory), render, count the request in `triage_http_requests_total` and
//! log the time spent at debug level.

pub mod classify;
pub mod drift;
pub mod labels;
pub mod layout;
pub mod models;
pub mod retraining;
pub mod svg;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::Markup;
use prometheus::IntCounterVec;
use serde::Deserialize;
use tracing::debug;

use crate::drift::DriftSettings;
use crate::inference::worker::WorkerHandle;
use crate::metrics::Metrics;
use crate::model::comparison::compare;
use crate::registry::Registry;
use classify::Outcome;
use drift::{DriftData, ReferenceSummary};
use models::ModelsData;

/// A version's labels and drift reference summary, read once per version.
type CachedReference = Option<(String, Arc<(Vec<String>, ReferenceSummary)>)>;

/// What every view needs: the registry, where requests are counted, the navigation.
#[derive(Clone)]
pub struct Pages {
    pub registry: Registry,
    /// `triage_http_requests_total{path, status}`.
    requests: IntCounterVec,
    nav: layout::Nav,
}

/// What the service console's handlers share.
#[derive(Clone)]
pub struct Console {
    pub pages: Pages,
    pub drift: DriftSettings,
    /// The service's worker: the form is classified like `POST /v1/classify`.
    pub worker: WorkerHandle,
    pub metrics: Arc<Metrics>,
    /// `http.max_texts_per_request`: lines per submit.
    pub max_texts: usize,
    reference: Arc<Mutex<CachedReference>>,
}

impl Console {
    pub fn new(
        registry: Registry,
        drift: DriftSettings,
        worker: WorkerHandle,
        metrics: Arc<Metrics>,
        max_texts: usize,
    ) -> Self {
        Self {
            pages: Pages {
                registry,
                requests: metrics.http_requests.clone(),
                nav: layout::SERVICE,
            },
            drift,
            worker,
            metrics,
            max_texts,
            reference: Arc::default(),
        }
    }
}

/// The service console's routes, with their state.
pub fn router(console: Console) -> Router {
    let pages = console.pages.clone();
    Router::new()
        .route("/", get(classify_get).post(classify_post))
        .route("/drift", get(drift))
        .with_state(console)
        .merge(registry_views(pages))
}

/// The views both consoles have: they read only the registry.
fn registry_views(pages: Pages) -> Router {
    Router::new()
        .route("/models", get(models))
        .route("/retraining", get(retraining))
        .with_state(pages)
}

/// The retrainer's console: late-label accuracy (from the label join's metrics in
/// `metrics`, the retrainer's registry, where its requests are counted too),
/// models and retraining runs.
pub fn retrainer_router(registry: Registry, metrics: &prometheus::Registry) -> Router {
    let requests = crate::metrics::register(
        metrics,
        IntCounterVec::new(
            prometheus::Opts::new(
                "triage_http_requests_total",
                "Console requests by path and status.",
            ),
            &["path", "status"],
        ),
    );
    let pages = Pages {
        registry,
        requests,
        nav: layout::RETRAINER,
    };
    Router::new()
        .route("/", get(late_labels))
        .with_state((pages.clone(), metrics.clone()))
        .merge(registry_views(pages))
}

/// Wraps a view in the page, counts and times it. `Server-Timing` carries the
/// same time as the footer, for tools.
fn respond(
    c: &Pages,
    path: &'static str,
    status: StatusCode,
    body: Markup,
    started: Instant,
) -> Response {
    let title = c
        .nav
        .iter()
        .find(|(p, _)| *p == path)
        .map_or("triage", |(_, name)| name);
    let elapsed = started.elapsed();
    let html = layout::page(c.nav, path, title, body, elapsed).into_string();
    c.requests.with_label_values(&[path, status.as_str()]).inc();
    debug!(
        path,
        status = status.as_u16(),
        bytes = html.len(),
        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
        "Console view rendered."
    );
    let mut response = (status, axum::response::Html(html)).into_response();
    if let Ok(v) =
        HeaderValue::from_str(&format!("render;dur={:.3}", elapsed.as_secs_f64() * 1000.0))
    {
        response.headers_mut().insert("server-timing", v);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Runs registry reads off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("reading the registry stopped: {e}"))
}

#[derive(Debug, Default, Deserialize)]
pub struct ClassifyForm {
    #[serde(default)]
    text: String,
}

async fn classify_get(State(c): State<Console>, Query(form): Query<ClassifyForm>) -> Response {
    classify_page(c, form.text).await
}

async fn classify_post(State(c): State<Console>, Form(form): Form<ClassifyForm>) -> Response {
    classify_page(c, form.text).await
}

async fn classify_page(c: Console, text: String) -> Response {
    let started = Instant::now();
    let messages = classify::messages(&text);
    let (status, outcome) = if messages.is_empty() {
        let status = if text.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        let outcome = if text.is_empty() {
            Outcome::Empty
        } else {
            Outcome::Refused("Every line is blank: write one message per line.".into())
        };
        (status, outcome)
    } else if messages.len() > c.max_texts {
        (
            StatusCode::BAD_REQUEST,
            Outcome::Refused(format!(
                "{} messages; at most {} per submit (http.max_texts_per_request).",
                messages.len(),
                c.max_texts
            )),
        )
    } else {
        match c.worker.classify(messages.clone()).await {
            Ok(classified) => (
                StatusCode::OK,
                Outcome::Labelled {
                    model_version: classified.model_version,
                    labelled: messages.into_iter().zip(classified.labelled).collect(),
                },
            ),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Outcome::Refused(e.to_string()),
            ),
        }
    };
    let registry = c.pages.registry.clone();
    let champion = blocking(move || registry.resolve("champion").ok())
        .await
        .ok()
        .flatten();
    let serving = match &outcome {
        Outcome::Labelled { model_version, .. } => Some(model_version.clone()),
        _ => champion,
    };
    let body = classify::view(&text, serving.as_deref(), c.max_texts, &outcome);
    respond(&c.pages, "/", status, body, started)
}

/// `?v=` shows that version's card (default: the champion); `?a=&b=` compares two.
#[derive(Debug, Default, Deserialize)]
pub struct ModelsQuery {
    v: Option<String>,
    a: Option<String>,
    b: Option<String>,
}

/// Cards listed, newest first.
const MAX_CARDS: usize = 30;

fn load_models(registry: &Registry, q: &ModelsQuery) -> ModelsData {
    let mut d = ModelsData::default();
    match registry.versions() {
        Ok(versions) => {
            for v in versions.iter().rev().take(MAX_CARDS) {
                match registry.card(v) {
                    Ok(card) => d.cards.push(card),
                    Err(e) => d.problems.push(e.to_string()),
                }
            }
        }
        Err(e) => d.problems.push(e.to_string()),
    }
    match registry.aliases() {
        Ok(a) => d.champion = a.champion,
        Err(e) => d.problems.push(e.to_string()),
    }
    match registry.history() {
        Ok(journal) => {
            if !journal.skipped.is_empty() {
                d.problems.push(format!(
                    "{} line(s) of the promotion history could not be read and are left out.",
                    journal.skipped.len()
                ));
            }
            d.history = journal.entries.into_iter().rev().collect();
        }
        Err(e) => d.problems.push(e.to_string()),
    }
    let mut find = |name: &str| match d.cards.iter().find(|c| c.version == name) {
        Some(card) => Some(card.clone()),
        None => {
            d.problems.push(format!(
                "No version {name} among the registry's latest {MAX_CARDS}."
            ));
            None
        }
    };
    let selected = q.v.clone().or_else(|| d.champion.clone());
    let selected = selected.and_then(|v| find(&v));
    let compared = match (&q.a, &q.b) {
        (Some(a), Some(b)) => find(a).zip(find(b)),
        _ => None,
    };
    d.selected = selected;
    d.compare = compared.map(|(a, b)| {
        let comparison = compare(&a.metrics, &b.metrics);
        (a.version, b.version, comparison)
    });
    d
}

async fn models(State(c): State<Pages>, Query(q): Query<ModelsQuery>) -> Response {
    let started = Instant::now();
    let registry = c.registry.clone();
    let data = blocking(move || load_models(&registry, &q))
        .await
        .unwrap_or_else(|e| ModelsData {
            problems: vec![e],
            ..ModelsData::default()
        });
    respond(&c, "/models", StatusCode::OK, models::view(&data), started)
}

impl Console {
    /// `version`'s labels and reference, read from the registry once per version.
    async fn reference(
        &self,
        version: &str,
    ) -> Result<Arc<(Vec<String>, ReferenceSummary)>, String> {
        if let Some((v, r)) = &*self
            .reference
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            && v == version
        {
            return Ok(r.clone());
        }
        let (registry, name) = (self.pages.registry.clone(), version.to_string());
        let loaded = blocking(move || registry.load(&name))
            .await?
            .map_err(|e| e.to_string())?;
        let summary = Arc::new((
            loaded.card.labels,
            ReferenceSummary {
                class_mix: loaded.reference.class_mix,
                mean_confidence: loaded.reference.mean_confidence,
            },
        ));
        *self
            .reference
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((version.to_string(), summary.clone()));
        Ok(summary)
    }
}

async fn drift(State(c): State<Console>) -> Response {
    let started = Instant::now();
    let points = c.metrics.drift_recent.latest_version();
    let mut data = DriftData {
        points,
        settings: c.drift.clone(),
        labels: Vec::new(),
        reference: None,
        problems: Vec::new(),
    };
    if let Some(version) = data.points.last().map(|p| p.version.clone()) {
        match c.reference(&version).await {
            Ok(r) => {
                data.labels = r.0.clone();
                data.reference = Some(r.1.clone());
            }
            Err(e) => data
                .problems
                .push(format!("The reference of {version}: {e}")),
        }
    }
    respond(
        &c.pages,
        "/drift",
        StatusCode::OK,
        drift::view(&data),
        started,
    )
}

async fn retraining(State(c): State<Pages>) -> Response {
    let started = Instant::now();
    let registry = c.registry.clone();
    let body = match blocking(move || registry.decisions()).await {
        Ok(Ok(journal)) => {
            let newest: Vec<_> = journal.entries.into_iter().rev().collect();
            retraining::view(&newest, journal.skipped.len())
        }
        Ok(Err(e)) => maud::html! { p.notice { (e.to_string()) } },
        Err(e) => maud::html! { p.notice { (e) } },
    };
    respond(&c, "/retraining", StatusCode::OK, body, started)
}

async fn late_labels(State((c, metrics)): State<(Pages, prometheus::Registry)>) -> Response {
    let started = Instant::now();
    let registry = c.registry.clone();
    let champion = blocking(move || registry.resolve("champion").ok())
        .await
        .ok()
        .flatten();
    let data = labels::LateLabels::from_metrics(&metrics.gather(), champion);
    respond(&c, "/", StatusCode::OK, labels::view(&data), started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::decision::Verdict;
    use crate::registry::decision::fixture::decision;
    use crate::retrain::metrics::RetrainMetrics;
    use crate::retrain::webhook::tests::get;

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
