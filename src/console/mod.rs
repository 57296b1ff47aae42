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
pub mod late_labels;
pub mod layout;
pub mod models;
pub mod retraining;
pub mod review;
pub mod svg;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::Markup;
use prometheus::IntCounterVec;
use prometheus::proto::{LabelPair, MetricFamily, MetricType};
use serde::Deserialize;
use tracing::debug;

use crate::drift::DriftSettings;
use crate::http::ClassifyLimits;
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

impl Pages {
    /// The registry's champion, if there is one.
    async fn champion(&self) -> Option<String> {
        let registry = self.registry.clone();
        blocking(move || registry.resolve("champion").ok())
            .await
            .ok()
            .flatten()
    }
}

/// What the service console's handlers share.
#[derive(Clone)]
pub struct Console {
    pub pages: Pages,
    pub drift: DriftSettings,
    /// The service's worker: the form is classified like `POST /v1/classify`.
    pub worker: WorkerHandle,
    pub metrics: Arc<Metrics>,
    /// The form's bounds, shared with `POST /v1/classify`.
    pub limits: ClassifyLimits,
    reference: Arc<Mutex<CachedReference>>,
    /// The review queue, when `kafka.review_topic` is set.
    pub desk: Option<crate::review::Desk>,
}

impl Console {
    pub fn new(
        registry: Registry,
        drift: DriftSettings,
        worker: WorkerHandle,
        metrics: Arc<Metrics>,
        limits: ClassifyLimits,
        desk: Option<crate::review::Desk>,
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
            limits,
            reference: Arc::default(),
            desk,
        }
    }
}

/// The value of each series of `name`, with its labels' values in order.
fn series(families: &[MetricFamily], name: &str) -> Vec<(Vec<String>, f64)> {
    each_series(families, name, |l| l.value().to_string())
}

/// Each series of `name` as its labels by name, and its value.
fn named(families: &[MetricFamily], name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    each_series(families, name, |l| {
        (l.name().to_string(), l.value().to_string())
    })
}

/// Each series of the counter or gauge `name`: its labels through `label`, and its value.
fn each_series<L, C: FromIterator<L>>(
    families: &[MetricFamily],
    name: &str,
    label: impl Fn(&LabelPair) -> L + Copy,
) -> Vec<(C, f64)> {
    families
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| {
            let counter = f.get_field_type() == MetricType::COUNTER;
            f.get_metric().iter().map(move |m| {
                let value = if counter {
                    m.get_counter().get_value()
                } else {
                    m.get_gauge().get_value()
                };
                (m.get_label().iter().map(label).collect(), value)
            })
        })
        .collect()
}

/// The service console's routes, with their state.
pub fn router(console: Console) -> Router {
    let pages = console.pages.clone();
    let review = review::ReviewPages::new(
        pages.clone(),
        console.desk.clone(),
        Some(console.metrics.routes.clone()),
    );
    Router::new()
        .route("/", get(classify_get).post(classify_post))
        .route("/drift", get(drift))
        .with_state(console)
        .merge(registry_views(pages))
        .merge(review::router(review))
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
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Nothing is fetched, nothing runs, no other site may frame a page (the review
    // forms' buttons) or be the target of one of its forms.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
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

async fn classify_get(State(c): State<Console>, uri: Uri) -> Response {
    let query = uri.query().unwrap_or_default();
    if query.len() > c.limits.max_request_bytes {
        let started = Instant::now();
        let why = format!(
            "The query string is {} bytes; at most {} (http.max_request_bytes): send long text with the form (POST).",
            query.len(),
            c.limits.max_request_bytes
        );
        let serving = c.pages.champion().await;
        let body = classify::view(
            "",
            serving.as_deref(),
            c.limits.max_texts,
            &Outcome::Refused(why),
        );
        return respond(&c.pages, "/", StatusCode::URI_TOO_LONG, body, started);
    }
    let form = Query::<ClassifyForm>::try_from_uri(&uri)
        .map(|Query(f)| f.text)
        .map_err(|e| format!("The query string could not be read ({}).", e.body_text()));
    classify_page(c, form).await
}

async fn classify_post(
    State(c): State<Console>,
    form: Result<Form<ClassifyForm>, FormRejection>,
) -> Response {
    let form = form.map(|Form(f)| f.text).map_err(|e| {
        format!(
            "The form could not be read ({}): send it from this page, as application/x-www-form-urlencoded with a text field.",
            e.body_text()
        )
    });
    classify_page(c, form).await
}

/// What a submit asks for: its messages, or why it is refused.
fn judge(text: &str, max_texts: usize) -> Result<Vec<String>, String> {
    let messages = classify::messages(text);
    if messages.is_empty() {
        Err("Every line is blank: write one message per line.".into())
    } else if messages.len() > max_texts {
        Err(format!(
            "{} messages; at most {max_texts} per submit (http.max_texts_per_request).",
            messages.len()
        ))
    } else {
        Ok(messages)
    }
}

/// `form`: the submitted text, or why it could not be read.
async fn classify_page(c: Console, form: Result<String, String>) -> Response {
    let started = Instant::now();
    let judged = match &form {
        Ok(text) if text.is_empty() => None,
        Ok(text) => Some(judge(text, c.limits.max_texts)),
        Err(why) => Some(Err(why.clone())),
    };
    let (status, outcome) = match judged {
        None => (StatusCode::OK, Outcome::Empty),
        Some(Err(why)) => (StatusCode::BAD_REQUEST, Outcome::Refused(why)),
        Some(Ok(messages)) => match c.limits.gate.try_enter() {
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                Outcome::Refused(format!(
                    "Busy: other classifications are running (http.max_classify_in_flight); try again in {} s.",
                    crate::http::limits::RETRY_AFTER_S
                )),
            ),
            Some(_place) => match c.worker.classify(messages.clone()).await {
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
            },
        },
    };
    let serving = match &outcome {
        Outcome::Labelled { model_version, .. } => Some(model_version.clone()),
        _ => c.pages.champion().await,
    };
    let text = form.unwrap_or_default();
    let body = classify::view(&text, serving.as_deref(), c.limits.max_texts, &outcome);
    let mut response = respond(&c.pages, "/", status, body, started);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        crate::http::limits::with_retry_after(&mut response);
    }
    response
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
    let champion = c.champion().await;
    let data = late_labels::LateLabels::from_metrics(&metrics.gather(), champion);
    respond(&c, "/", StatusCode::OK, late_labels::view(&data), started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::testing::get;

    async fn post_form(app: &Router, content_type: &str, body: &str) -> (StatusCode, String) {
        let request = axum::http::Request::builder()
            .method("POST")
            .uri("/")
            .header(header::CONTENT_TYPE, content_type)
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        let response = tower::ServiceExt::oneshot(app.clone(), request)
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    const FORM: &str = "application/x-www-form-urlencoded";

    #[tokio::test]
    async fn the_service_console_classifies_the_form_and_refuses_bad_input_on_the_page() {
        use crate::inference::testing;
        let dir = tempfile::tempdir().unwrap();
        let settings = testing::settings(dir.path());
        let version = testing::train_champion(&settings, 0);
        let p = testing::pipeline(&settings);
        let registry = Registry::new(settings.registry_dir());
        let limit_metrics = crate::http::limits::LimitMetrics::register(&p.metrics.registry);
        let gate = crate::http::limits::ClassifyGate::new(1, &limit_metrics);
        let console = Console::new(
            registry,
            settings.drift.clone(),
            p.worker.clone(),
            p.metrics.clone(),
            ClassifyLimits {
                max_texts: 2,
                max_request_bytes: 64,
                gate: gate.clone(),
            },
            None,
        );
        let app = router(console);

        // GET /?text= is bounded like a form's body, and answered on the page.
        let (status, html) = get(&app, "/?text=great+tasty").await;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(html.contains(r#"id="label-0">positive<"#), "{html}");
        let long = format!("/?text={}", "a".repeat(60));
        let (status, html) = get(&app, &long).await;
        assert_eq!(status, StatusCode::URI_TOO_LONG, "{html}");
        assert!(
            html.contains("65 bytes; at most 64 (http.max_request_bytes)"),
            "{html}"
        );

        // With the one classify place taken, a submit is refused at once, not queued.
        let place = gate.try_enter().unwrap();
        let request = axum::http::Request::post("/")
            .header("content-type", FORM)
            .body(axum::body::Body::from("text=great"))
            .unwrap();
        let response = tower::ServiceExt::oneshot(app.clone(), request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        drop(place);
        assert!(
            p.metrics
                .render()
                .contains(r#"triage_http_shed_total{limit="max_classify_in_flight"} 1"#)
        );

        let (status, html) =
            post_form(&app, FORM, "text=great+tasty+lovely%0A%0Aawful+rude+dirty").await;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(html.contains(r#"id="label-0">positive<"#), "{html}");
        assert!(html.contains(r#"id="label-1">negative<"#), "{html}");
        assert!(html.contains(&format!(r#"<b id="model-version">{version}</b>"#)));

        for (content_type, body, says) in [
            (FORM, "text=a%0Ab%0Ac", "at most 2 per submit"),
            (FORM, "text=+%0A+", "Every line is blank"),
            (
                "application/json",
                r#"{"text":"x"}"#,
                "The form could not be read",
            ),
        ] {
            let (status, html) = post_form(&app, content_type, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {html}");
            assert!(html.contains(says), "{body}: {html}");
        }
        let (status, html) = get(&app, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            html.contains(&format!("Champion <b>{version}</b>")),
            "{html}"
        );

        let (_, html) = get(&app, "/drift").await;
        assert!(html.contains("no-windows"), "{html}");
        let texts: Vec<String> = (0..60).map(|i| testing::review(i).0).collect();
        let observe = crate::inference::worker::Observe {
            truth: vec![None; texts.len()],
            invalid: 0,
        };
        p.worker.classify_window(texts, observe).await.unwrap();
        let (status, html) = get(&app, "/drift").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            html.contains(r#"id="detectors""#) && html.contains("reference"),
            "{html}"
        );
        let (_, html) = get(&app, "/models").await;
        assert!(html.contains("Confusion matrix of v1"));
        assert!(
            p.metrics
                .render()
                .contains(r#"triage_http_requests_total{path="/",status="400"} 3"#)
        );
    }
}
