//! Review: the messages the model would not label by itself, most useful first,
//! each with its text, the model's three likeliest classes explained in words, and
//! (for a signed-in reviewer) a button per class plus a free label for a class the
//! model does not know. An answer goes to the labels topic ([`crate::review::Desk`])
//! and the message leaves the queue on every replica.
//!
//! Reading needs nothing; writing needs a sign-in (`review.reviewers`) and each form
//! carries its session's CSRF token ([`crate::review::auth`]). Every answer is a
//! plain form post followed by a redirect (no JavaScript); a refused post says why
//! and counts it in `triage_review_refused_total{reason}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Pages, blocking, respond};
use crate::review::auth::{Gate, Refusal};
use crate::review::queue::{Item, MAX_TEXT_BYTES};
use crate::review::{AnswerError, Desk};

const SESSION_COOKIE: &str = "triage_session";
const SIGN_IN_COOKIE: &str = "triage_sign_in";
const PATH: &str = "/review";
/// Model versions whose routing threshold is remembered, at most.
const MAX_THRESHOLDS: usize = 64;

/// What the review handlers share.
#[derive(Clone)]
pub struct ReviewPages {
    pub pages: Pages,
    /// None: no `kafka.review_topic`, no queue.
    pub desk: Option<Desk>,
    /// Each version's routing threshold, from its card.
    thresholds: Arc<Mutex<HashMap<String, Option<f64>>>>,
    /// `triage_routes_total{route, model_version}`: the live coverage.
    routes: Option<prometheus::IntCounterVec>,
}

impl ReviewPages {
    pub fn new(
        pages: Pages,
        desk: Option<Desk>,
        routes: Option<prometheus::IntCounterVec>,
    ) -> Self {
        Self {
            pages,
            desk,
            thresholds: Arc::default(),
            routes,
        }
    }

    /// The routing thresholds of `versions` (read from their cards once each).
    async fn thresholds(&self, versions: Vec<String>) -> HashMap<String, Option<f64>> {
        let missing: Vec<String> = {
            let known = self
                .thresholds
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            versions
                .iter()
                .filter(|v| !known.contains_key(*v))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let registry = self.pages.registry.clone();
            let read = blocking(move || {
                missing
                    .into_iter()
                    .map(|v| {
                        let t = registry
                            .card(&v)
                            .ok()
                            .and_then(|c| c.routing)
                            .map(|r| r.global.threshold);
                        (v, t)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let mut known = self
                .thresholds
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if known.len() + read.len() > MAX_THRESHOLDS {
                known.clear();
            }
            known.extend(read);
        }
        let known = self
            .thresholds
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        versions
            .into_iter()
            .map(|v| {
                let t = known.get(&v).copied().flatten();
                (v, t)
            })
            .collect()
    }
}

/// Per model version: messages labelled automatically and in all, since start.
pub fn coverage(routes: &prometheus::IntCounterVec) -> Vec<(String, u64, u64)> {
    use prometheus::core::Collector;
    let mut by: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for (labels, n) in super::named(&routes.collect(), "triage_routes_total") {
        let n = n as u64;
        let label = |name: &str| labels.get(name).cloned().unwrap_or_default();
        let e = by.entry(label("model_version")).or_default();
        if label("route") == "auto" {
            e.0 += n;
        }
        e.1 += n;
    }
    by.into_iter().map(|(v, (a, t))| (v, a, t)).collect()
}

/// The review routes.
pub fn router(r: ReviewPages) -> Router {
    Router::new()
        .route(PATH, get(queue_page))
        .route("/review/answer", post(answer))
        .route("/review/sign-in", get(sign_in_page).post(sign_in))
        .route("/review/sign-out", post(sign_out))
        .with_state(r)
}

fn now_s() -> i64 {
    crate::clock::now_ms() / 1000
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, for the whole console; Secure
/// when the request came over HTTPS (a proxy's `X-Forwarded-Proto`).
fn set_cookie(headers: &HeaderMap, name: &str, value: &str, max_age_s: i64) -> HeaderValue {
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{name}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The signed-in reviewer and the session's form token, if the request has a live session.
fn signed_in(gate: &Gate, headers: &HeaderMap) -> Option<(String, String)> {
    let session = cookie(headers, SESSION_COOKIE)?;
    let reviewer = gate.reviewer(session, now_s())?;
    Some((reviewer, gate.csrf(session)))
}

#[derive(Debug, Default, Deserialize)]
pub struct QueueQuery {
    /// The id just answered, and its label: a line of thanks.
    answered: Option<String>,
    label: Option<String>,
    /// `arrival`: first come first; default most useful first.
    order: Option<String>,
}

/// What the queue view shows.
pub struct QueueView<'a> {
    pub items: &'a [Item],
    pub waiting: usize,
    pub oldest_age_s: Option<i64>,
    /// Reviewers' answers in the last hour, every replica's.
    pub answers_last_hour: usize,
    /// Per model version, since this replica started: labelled automatically, in all.
    pub coverage: &'a [(String, u64, u64)],
    pub thresholds: &'a HashMap<String, Option<f64>>,
    /// Signed in: the reviewer and the form token.
    pub reviewer: Option<(&'a str, &'a str)>,
    pub can_sign_in: bool,
    pub writable: bool,
    pub by_arrival: bool,
    pub notice: Option<Markup>,
}

async fn queue_page(
    State(r): State<ReviewPages>,
    query: Result<Query<QueueQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let notice = q.answered.as_ref().map(|id| {
        html! { p.notice #answered { "Thank you: " b { (id) } " is labelled "
        b { (q.label.as_deref().unwrap_or("")) } " and has left the queue." } }
    });
    render_queue(
        &r,
        &headers,
        q.order.as_deref() == Some("arrival"),
        notice,
        StatusCode::OK,
        started,
    )
    .await
}

async fn render_queue(
    r: &ReviewPages,
    headers: &HeaderMap,
    by_arrival: bool,
    notice: Option<Markup>,
    status: StatusCode,
    started: Instant,
) -> Response {
    let Some(desk) = &r.desk else {
        let body = html! { p.notice #no-queue {
            "There is no review queue: kafka.review_topic is empty. Set it (and create the topic with "
            code { "triage topics create" } ") and messages the model is not sure of will wait here for a person."
        } };
        return respond(&r.pages, PATH, StatusCode::OK, body, started);
    };
    let n = desk.page_items;
    let now = crate::clock::now_ms();
    let (items, waiting, oldest, answers) = desk.with_queue(|q| {
        let items = if by_arrival {
            q.first_come(n)
        } else {
            q.most_useful(n)
        };
        let answers = q.answers_since(now - crate::review::queue::ANSWER_HORIZON_MS);
        (items, q.len(), q.oldest_ms(), answers)
    });
    let mut versions: Vec<String> = items.iter().map(|i| i.model_version.clone()).collect();
    versions.sort();
    versions.dedup();
    let thresholds = r.thresholds(versions).await;
    let session = signed_in(&desk.gate, headers);
    let coverage = r.routes.as_ref().map(coverage).unwrap_or_default();
    let view = QueueView {
        coverage: &coverage,
        items: &items,
        waiting,
        oldest_age_s: oldest.map(|t| (now - t).max(0) / 1000),
        answers_last_hour: answers,
        thresholds: &thresholds,
        reviewer: session.as_ref().map(|(n, t)| (n.as_str(), t.as_str())),
        can_sign_in: desk.gate.has_accounts(),
        writable: desk.writable(),
        by_arrival,
        notice,
    };
    respond(&r.pages, PATH, status, queue_view(&view), started)
}

/// A probability in words, for people who do not read percentages as odds.
fn likelihood(p: f64) -> &'static str {
    match p {
        p if p >= 0.8 => "very likely",
        p if p >= 0.6 => "likely",
        p if p >= 0.4 => "maybe",
        p if p >= 0.2 => "possibly",
        _ => "unlikely",
    }
}

fn percent(p: f64) -> String {
    format!("{:.0}%", p * 100.0)
}

/// Why the model handed this message to a person, in words.
pub fn explain(item: &Item, threshold: Option<f64>) -> Markup {
    let first = item.top.first();
    let second = item.top.get(1);
    html! {
        @if let Some(f) = first {
            "The model's best guess is " b { (f.label) } " (" (percent(f.probability)) ", " (likelihood(f.probability)) ")"
            @match threshold {
                Some(t) if t <= 1.0 => { ", under the " (percent(t)) " it needs to label a message by itself" }
                _ => { ", not sure enough to label it by itself" }
            }
            ". "
            @if let Some(s) = second {
                @if f.probability - s.probability < 0.1 {
                    "It is a close call with " b { (s.label) } " (" (percent(s.probability)) ")"
                } @else {
                    "Next comes " b { (s.label) } " (" (percent(s.probability)) ", " (likelihood(s.probability)) ")"
                }
                @if let Some(t) = item.top.get(2) {
                    ", then " b { (t.label) } " (" (percent(t.probability)) ")"
                }
                ". "
            }
        } @else {
            "The model's label is " b { (item.label) } " at " (percent(item.confidence)) " confidence. "
        }
    }
}

fn age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

pub fn queue_view(v: &QueueView) -> Markup {
    html! {
        @if let Some(n) = &v.notice { (n) }
        section.card #summary {
            p {
                b #waiting { (v.waiting) } " message(s) waiting"
                @if let Some(a) = v.oldest_age_s { ", the oldest for " (age(a)) }
                "; " b #answers-hour { (v.answers_last_hour) } " answered in the last hour. "
                @if v.by_arrival {
                    "First come first (" a href="/review" { "most useful first" } ")."
                } @else {
                    "Most useful first: the closest calls between two classes, whose labels teach the next model most ("
                    a href="/review?order=arrival" { "first come first" } ")."
                }
            }
            @for (version, auto, total) in v.coverage.iter().filter(|c| c.2 > 0) {
                p.coverage {
                    "Since this replica started, model " b { (version) } " labelled "
                    b { (format!("{:.1}%", *auto as f64 * 100.0 / *total as f64)) }
                    " of its " (total) " messages by itself; the other " (total - auto) " came here."
                }
            }
            @match v.reviewer {
                Some((name, token)) => {
                    form.inline method="post" action="/review/sign-out" {
                        "Signed in as " b #reviewer { (name) } ". "
                        input type="hidden" name="token" value=(token);
                        button.secondary type="submit" #sign-out { "Sign out" }
                    }
                }
                None if v.can_sign_in => {
                    p #read-only { "Read-only. " a #sign-in href="/review/sign-in" { "Sign in" } " to answer." }
                }
                None => {
                    p.muted #read-only { "Read-only: no reviewer accounts are configured (review.reviewers; "
                        code { "triage reviewer NAME" } " prints one)." }
                }
            }
            @if !v.writable {
                p.notice { "Answers cannot be written: kafka.labels_topic is empty." }
            }
        }
        @if v.items.is_empty() {
            p.muted #empty { "Nothing waits for a person: every recent message was labelled automatically or answered." }
        }
        @for (i, item) in v.items.iter().enumerate() {
            section.card.item id=(format!("item-{i}")) data-id=(item.id) {
                p.text.message { (item.text) @if item.cut { span.muted { " … (cut at " (MAX_TEXT_BYTES / 1024) " KiB)" } } }
                p.explain { (explain(item, v.thresholds.get(&item.model_version).copied().flatten())) }
                @if let (Some((_, token)), true) = (v.reviewer, v.writable) {
                    form.answer method="post" action="/review/answer" {
                        input type="hidden" name="id" value=(item.id);
                        input type="hidden" name="token" value=(token);
                        div.choices {
                            @for l in &item.top {
                                button.choice type="submit" name="label" value=(l.label) {
                                    (l.label) " " span.pct { (percent(l.probability)) }
                                }
                            }
                        }
                        div.new-label {
                            input type="text" name="new_label" maxlength="64" placeholder="Another class" aria-label="Another class";
                            button.secondary type="submit" name="label" value="" { "Label as this" }
                        }
                    }
                }
                p.muted { "model " (item.model_version) " · id " (item.id) }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct AnswerForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    new_label: String,
    #[serde(default)]
    token: String,
}

/// A refused post: its status, the reason counted, and the queue with why on top.
async fn refuse(
    r: &ReviewPages,
    headers: &HeaderMap,
    status: StatusCode,
    reason: &'static str,
    why: String,
) -> Response {
    if let Some(desk) = &r.desk {
        desk.metrics.refused.with_label_values(&[reason]).inc();
    }
    let notice = html! { p.notice #refused { (why) } };
    render_queue(r, headers, false, Some(notice), status, Instant::now()).await
}

async fn answer(
    State(r): State<ReviewPages>,
    headers: HeaderMap,
    form: Result<Form<AnswerForm>, FormRejection>,
) -> Response {
    let Some(desk) = r.desk.clone() else {
        return refuse(
            &r,
            &headers,
            StatusCode::NOT_FOUND,
            "gone",
            "There is no review queue.".into(),
        )
        .await;
    };
    let signed =
        cookie(&headers, SESSION_COOKIE).and_then(|s| Some((s, desk.gate.reviewer(s, now_s())?)));
    let Some((session, reviewer)) = signed else {
        return refuse(
            &r,
            &headers,
            StatusCode::UNAUTHORIZED,
            "no_session",
            "Sign in to answer: the answer was not taken (no session, or it expired).".into(),
        )
        .await;
    };
    let Ok(Form(f)) = form else {
        return refuse(
            &r,
            &headers,
            StatusCode::BAD_REQUEST,
            "bad_label",
            "The form could not be read: answer from this page.".into(),
        )
        .await;
    };
    if !desk.gate.csrf_ok(session, &f.token) {
        return refuse(
            &r,
            &headers,
            StatusCode::FORBIDDEN,
            "bad_token",
            "The form's token does not match your session: reload the page and answer again."
                .into(),
        )
        .await;
    }
    let label = if f.label.trim().is_empty() {
        &f.new_label
    } else {
        &f.label
    };
    match desk.answer(&f.id, label, &reviewer).await {
        Ok(()) => {
            let label = crate::review::clean_label(label).unwrap_or_default();
            let to = format!(
                "/review?answered={}&label={}",
                url_encode(&f.id),
                url_encode(&label)
            );
            Redirect::to(&to).into_response()
        }
        Err(e) => {
            let status = match e {
                AnswerError::Gone => StatusCode::CONFLICT,
                AnswerError::BadLabel => StatusCode::BAD_REQUEST,
                AnswerError::NoLabelsTopic | AnswerError::NotWritten(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            refuse(&r, &headers, status, e.reason(), format!("Not taken: {e}.")).await
        }
    }
}

/// Percent-encodes everything but unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn sign_in_view(token: &str, refused: Option<&str>) -> Markup {
    html! {
        @if let Some(why) = refused { p.notice #refused { (why) } }
        section.card.narrow {
            form method="post" action="/review/sign-in" {
                input type="hidden" name="token" value=(token);
                p { label for="name" { "Name" } br; input #name type="text" name="name" autocomplete="username" required; }
                p { label for="password" { "Password" } br; input #password type="password" name="password" autocomplete="current-password" required; }
                p { button type="submit" #submit { "Sign in" } }
            }
            p.muted { "Reviewers are listed in review.reviewers; an administrator adds one with " code { "triage reviewer NAME" } "." }
        }
    }
}

/// The sign-in form, with a fresh pre-session cookie and its token.
fn sign_in_response(
    r: &ReviewPages,
    headers: &HeaderMap,
    status: StatusCode,
    refused: Option<&str>,
) -> Response {
    let started = Instant::now();
    let Some(desk) = &r.desk else {
        let body = html! { p.notice { "There is no review queue to sign in to (kafka.review_topic is empty)." } };
        return respond(&r.pages, PATH, StatusCode::NOT_FOUND, body, started);
    };
    let nonce = Gate::nonce();
    let body = sign_in_view(&desk.gate.sign_in_token(&nonce), refused);
    let mut response = respond(&r.pages, PATH, status, body, started);
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(headers, SIGN_IN_COOKIE, &nonce, 3600),
    );
    response
}

async fn sign_in_page(State(r): State<ReviewPages>, headers: HeaderMap) -> Response {
    sign_in_response(&r, &headers, StatusCode::OK, None)
}

#[derive(Debug, Default, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    token: String,
}

async fn sign_in(
    State(r): State<ReviewPages>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let Some(desk) = r.desk.clone() else {
        return sign_in_response(&r, &headers, StatusCode::NOT_FOUND, None);
    };
    let count = |result: &str| desk.metrics.sign_ins.with_label_values(&[result]).inc();
    let f = form.map(|Form(f)| f).unwrap_or_default();
    let nonce = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if !desk.gate.sign_in_token_ok(nonce, &f.token) {
        count("refused");
        return sign_in_response(
            &r,
            &headers,
            StatusCode::FORBIDDEN,
            Some("This form has expired or did not come from this page: sign in again."),
        );
    }
    match desk.gate.sign_in(&f.name, &f.password, now_s()).await {
        Ok(session) => {
            count("ok");
            tracing::info!(reviewer = %f.name, "Reviewer signed in.");
            let ttl = desk.gate.ttl_s();
            let mut response = Redirect::to(PATH).into_response();
            let h = response.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(&headers, SESSION_COOKIE, &session, ttl),
            );
            h.append(
                header::SET_COOKIE,
                set_cookie(&headers, SIGN_IN_COOKIE, "", 0),
            );
            response
        }
        Err(Refusal::WrongNameOrPassword) => {
            count("refused");
            sign_in_response(
                &r,
                &headers,
                StatusCode::UNAUTHORIZED,
                Some("Wrong name or password."),
            )
        }
        Err(Refusal::Busy) => {
            count("busy");
            let mut response = sign_in_response(
                &r,
                &headers,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("Too many sign-ins at once: try again in a few seconds."),
            );
            crate::http::limits::with_retry_after(&mut response);
            response
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct SignOutForm {
    #[serde(default)]
    token: String,
}

async fn sign_out(
    State(r): State<ReviewPages>,
    headers: HeaderMap,
    form: Result<Form<SignOutForm>, FormRejection>,
) -> Response {
    let session = cookie(&headers, SESSION_COOKIE).unwrap_or_default();
    let token = form.map(|Form(f)| f.token).unwrap_or_default();
    let Some(desk) = &r.desk else {
        return Redirect::to(PATH).into_response();
    };
    if !desk.gate.csrf_ok(session, &token) {
        return refuse(
            &r,
            &headers,
            StatusCode::FORBIDDEN,
            "bad_token",
            "The sign-out form's token does not match your session: reload the page.".into(),
        )
        .await;
    }
    let mut response = Redirect::to(PATH).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, "", 0),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::queue::Likely;

    fn item(id: &str, top: &[(&str, f64)]) -> Item {
        let mut q = crate::review::queue::Queue::new(10);
        let payload = serde_json::json!({
            "id": id, "text": "<b>the soup was cold</b>", "label": top[0].0, "confidence": top[0].1,
            "model_version": "v2", "timestamp_ms": 0,
            "top": top.iter().map(|(l, p)| serde_json::json!({"label": l, "probability": p})).collect::<Vec<_>>(),
        });
        q.offer(payload.to_string().as_bytes(), 0);
        q.get(id).cloned().unwrap()
    }

    #[test]
    fn the_explanation_names_the_classes_in_words_and_the_threshold() {
        let close = item(
            "a",
            &[("negative", 0.46), ("neutral", 0.41), ("positive", 0.13)],
        );
        let text = explain(&close, Some(0.772)).into_string();
        assert!(text.contains("<b>negative</b> (46%, maybe)"), "{text}");
        assert!(text.contains("under the 77% it needs"), "{text}");
        assert!(
            text.contains("close call with <b>neutral</b> (41%)"),
            "{text}"
        );
        assert!(text.contains("then <b>positive</b> (13%)"), "{text}");
        let clear = item(
            "b",
            &[("negative", 0.7), ("neutral", 0.2), ("positive", 0.1)],
        );
        let text = explain(&clear, None).into_string();
        assert!(
            text.contains("Next comes <b>neutral</b> (20%, possibly)"),
            "{text}"
        );
        assert!(text.contains("not sure enough"), "{text}");
        assert_eq!(
            clear.top[0],
            Likely {
                label: "negative".into(),
                probability: 0.7
            }
        );
    }

    fn view(reviewer: Option<(&str, &str)>, items: &[Item]) -> String {
        let thresholds = HashMap::new();
        queue_view(&QueueView {
            items,
            waiting: items.len(),
            oldest_age_s: Some(300),
            answers_last_hour: 7,
            coverage: &[("v2".into(), 61, 100)],
            thresholds: &thresholds,
            reviewer,
            can_sign_in: true,
            writable: true,
            by_arrival: false,
            notice: None,
        })
        .into_string()
    }

    #[test]
    fn without_a_sign_in_the_queue_is_read_only_and_text_is_escaped() {
        let items = [item(
            "a",
            &[("negative", 0.46), ("neutral", 0.41), ("positive", 0.13)],
        )];
        let html = view(None, &items);
        assert!(
            html.contains("&lt;b&gt;the soup was cold&lt;/b&gt;"),
            "{html}"
        );
        assert!(
            !html.contains("<form") && html.contains("Sign in"),
            "{html}"
        );
        assert!(html.contains("the oldest for 5 min"), "{html}");
        assert!(
            html.contains(r#"<b id="answers-hour">7</b> answered in the last hour"#),
            "{html}"
        );
    }

    #[test]
    fn a_reviewer_gets_a_button_per_likely_class_a_free_label_and_the_token() {
        let items = [item(
            "a",
            &[("negative", 0.46), ("neutral", 0.41), ("positive", 0.13)],
        )];
        let html = view(Some(("ana", "tok123")), &items);
        for class in ["negative", "neutral", "positive"] {
            assert!(
                html.contains(&format!(r#"name="label" value="{class}""#)),
                "{class}: {html}"
            );
        }
        assert!(html.contains(r#"name="new_label""#), "{html}");
        assert_eq!(
            html.matches(r#"name="token" value="tok123""#).count(),
            2,
            "answer and sign-out: {html}"
        );
        assert!(html.contains(r#"<b id="reviewer">ana</b>"#), "{html}");
    }

    #[test]
    fn coverage_is_read_per_version_from_the_route_counter() {
        let routes = prometheus::IntCounterVec::new(
            prometheus::Opts::new("triage_routes_total", "h"),
            &["route", "model_version"],
        )
        .unwrap();
        routes.with_label_values(&["auto", "v2"]).inc_by(61);
        routes.with_label_values(&["review", "v2"]).inc_by(39);
        routes.with_label_values(&["review", "v1"]).inc_by(5);
        assert_eq!(
            coverage(&routes),
            [("v1".to_string(), 0, 5), ("v2".to_string(), 61, 100)]
        );
    }

    #[test]
    fn cookies_are_read_among_others_and_set_strict_and_http_only() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; triage_session=x.y.z; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("x.y.z"));
        assert_eq!(cookie(&h, "c"), None);
        let set = set_cookie(&h, SESSION_COOKIE, "v", 60);
        let set = set.to_str().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure")
        );
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(
            set_cookie(&h, SESSION_COOKIE, "v", 60)
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
        assert_eq!(url_encode("a b/é"), "a%20b%2F%C3%A9");
    }

    /// One request on `app` with `cookies`: status, the cookies it sets, the body.
    async fn send(
        app: &Router,
        method: &str,
        path: &str,
        cookies: &str,
        form: &str,
    ) -> (StatusCode, Vec<String>, String) {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::COOKIE, cookies)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(axum::body::Body::from(form.to_string()))
            .unwrap();
        let response = tower::ServiceExt::oneshot(app.clone(), request)
            .await
            .unwrap();
        let status = response.status();
        let set: Vec<String> = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .collect();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, set, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn token_in(html: &str) -> String {
        html.split(r#"name="token" value=""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn only_a_signed_in_reviewer_with_the_form_token_gets_an_answer_through() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = crate::training::testing::settings(dir.path());
        settings.kafka.review_topic = "review".into();
        settings.kafka.labels_topic = String::new();
        settings.review.reviewers = vec![crate::config::Reviewer {
            name: "ana".into(),
            password_hash: crate::review::auth::hash_password("correct horse").unwrap(),
        }];
        let metrics = prometheus::Registry::new();
        let desk = Desk::new(&settings, &metrics).unwrap();
        let one = item(
            "m1",
            &[("negative", 0.46), ("neutral", 0.41), ("positive", 0.13)],
        );
        desk.with_queue(|q| {
            let payload = serde_json::json!({"id": one.id, "text": one.text, "label": one.label,
                "confidence": one.confidence, "top": [{"label": "negative", "probability": 0.46}]});
            q.offer(payload.to_string().as_bytes(), 0)
        });
        let pages = Pages {
            registry: crate::registry::Registry::new(settings.registry_dir()),
            requests: crate::metrics::register(
                &metrics,
                prometheus::IntCounterVec::new(
                    prometheus::Opts::new("requests", "r"),
                    &["path", "status"],
                ),
            ),
            nav: super::super::layout::SERVICE,
        };
        let app = router(ReviewPages::new(pages, Some(desk.clone()), None));
        let refused = |reason: &str| desk.metrics.refused.with_label_values(&[reason]).get();

        // Anyone may read; no form without a sign-in; a post without one is refused.
        let (status, _, html) = send(&app, "GET", "/review", "", "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            html.contains("m1") && !html.contains("/review/answer"),
            "{html}"
        );
        let (status, _, _) = send(
            &app,
            "POST",
            "/review/answer",
            "",
            "id=m1&label=neutral&token=x",
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(refused("no_session"), 1);

        // The sign-in form sets its pre-session cookie; without it, or its token, no sign-in.
        let (_, set, html) = send(&app, "GET", "/review/sign-in", "", "").await;
        let pre = set
            .iter()
            .find(|c| c.starts_with("triage_sign_in="))
            .unwrap()
            .clone();
        let token = token_in(&html);
        let (status, _, _) = send(
            &app,
            "POST",
            "/review/sign-in",
            "",
            &format!("name=ana&password=correct+horse&token={token}"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "no pre-session cookie");

        // A wrong password and an unknown name get the same answer.
        let (status, _, wrong_password) = send(
            &app,
            "POST",
            "/review/sign-in",
            &pre,
            &format!("name=ana&password=wrong&token={token}"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, unknown_name) = send(
            &app,
            "POST",
            "/review/sign-in",
            &pre,
            &format!("name=bob&password=correct+horse&token={token}"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let said = |html: &str| {
            html.split(r#"id="refused">"#)
                .nth(1)
                .unwrap()
                .split('<')
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(said(&wrong_password), "Wrong name or password.");
        assert_eq!(said(&unknown_name), said(&wrong_password));

        let (status, set, _) = send(
            &app,
            "POST",
            "/review/sign-in",
            &pre,
            &format!("name=ana&password=correct+horse&token={token}"),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let session = set
            .iter()
            .find(|c| c.starts_with("triage_session="))
            .unwrap()
            .clone();
        let (_, _, html) = send(&app, "GET", "/review", &session, "").await;
        assert!(html.contains(r#"<b id="reviewer">ana</b>"#), "{html}");
        let form_token = token_in(&html);

        // Signed in, but without the form's token (a post from another site): refused.
        let (status, _, _) = send(
            &app,
            "POST",
            "/review/answer",
            &session,
            "id=m1&label=neutral",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(refused("bad_token"), 1);
        // With it, the answer is taken as far as the labels topic, which is not set here.
        let (status, _, html) = send(
            &app,
            "POST",
            "/review/answer",
            &session,
            &format!("id=m1&label=neutral&token={form_token}"),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{html}");
        assert!(html.contains("kafka.labels_topic is empty"), "{html}");
        assert_eq!(
            desk.with_queue(|q| q.len()),
            1,
            "an answer not written stays in the queue"
        );
        // A blank free label is no label.
        let (status, _, _) = send(
            &app,
            "POST",
            "/review/answer",
            &session,
            &format!("id=m1&label=&new_label=+&token={form_token}"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(refused("bad_label"), 1);
    }
}
