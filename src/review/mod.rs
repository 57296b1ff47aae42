//! The review queue: messages whose label the model would not apply by itself
//! (`route: review`, written to `kafka.review_topic`) wait here for a person, who
//! answers on the console's Review page; the answer goes to `kafka.labels_topic`
//! with its source and reviewer, where the retrainer joins it like any late label.
//!
//! Every replica of `triage run` keeps the whole queue: it follows the review topic
//! and the labels topic ([`follow`]), so an answer given on one replica leaves the
//! queue on all, and a restart rebuilds it from the two topics ([`queue`]). Who may
//! answer is [`auth`]'s job. This module is the state and its Kafka side; the page
//! is `crate::console::review`.

pub mod auth;
pub mod follow;
pub mod queue;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde_json::json;

use crate::config::Settings;
use crate::kafka::client::Producer;
use auth::Gate;
use queue::Queue;

/// How long an answer may take to reach the labels topic before the page says so.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of a new class's name, at most.
pub const MAX_LABEL_BYTES: usize = 64;

/// The review queue's series.
#[derive(Clone)]
pub struct ReviewMetrics {
    /// Messages waiting for a person.
    pub queue_length: IntGauge,
    /// Seconds the longest-waiting message has waited (0 when none waits).
    pub oldest_age: IntGauge,
    /// Answers given on this replica, by reviewer (per hour: `increase(...[1h])`).
    pub answers: IntCounterVec,
    /// Sign-ins by result: ok, refused, busy.
    pub sign_ins: IntCounterVec,
    /// Form posts refused, by reason: no_session, bad_token, gone, bad_label, not_written.
    pub refused: IntCounterVec,
    /// Review records read, by result: queued, again, answered_before, invalid.
    pub records: IntCounterVec,
    /// Messages dropped because the queue held review.max_queue.
    pub dropped: IntCounter,
}

impl ReviewMetrics {
    pub fn register(r: &Registry) -> Self {
        use crate::metrics::register;
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(r, IntCounterVec::new(Opts::new(name, help), labels))
        };
        Self {
            queue_length: register(
                r,
                IntGauge::new(
                    "triage_review_queue_length",
                    "Messages waiting in the review queue for a person.",
                ),
            ),
            oldest_age: register(
                r,
                IntGauge::new(
                    "triage_review_queue_oldest_age_seconds",
                    "Seconds the longest-waiting message of the review queue has waited.",
                ),
            ),
            answers: counter(
                "triage_review_answers_total",
                "Review answers written to the labels topic from this replica, by reviewer.",
                &["reviewer"],
            ),
            sign_ins: counter(
                "triage_review_sign_ins_total",
                "Sign-ins to the Review page, by result (ok, refused, busy).",
                &["result"],
            ),
            refused: counter(
                "triage_review_refused_total",
                "Review form posts refused, by reason (no_session, bad_token, gone, bad_label, not_written).",
                &["reason"],
            ),
            records: counter(
                "triage_review_records_total",
                "Review records read, by result (queued, again, answered_before, invalid).",
                &["result"],
            ),
            dropped: register(
                r,
                IntCounter::new(
                    "triage_review_dropped_total",
                    "Review messages dropped because the queue held review.max_queue.",
                ),
            ),
        }
    }
}

/// Why an answer was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("this message is no longer waiting: someone answered it already")]
    Gone,
    #[error("a label is 1 to {MAX_LABEL_BYTES} bytes of letters, digits, spaces or punctuation")]
    BadLabel,
    #[error(
        "answers cannot be written: kafka.labels_topic is empty; set it to the topic the retrainer reads"
    )]
    NoLabelsTopic,
    #[error(
        "the answer could not be written to the labels topic ({0}); it is still waiting, try again"
    )]
    NotWritten(String),
}

impl AnswerError {
    /// The reason as `triage_review_refused_total` counts it.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::BadLabel => "bad_label",
            Self::NoLabelsTopic | Self::NotWritten(_) => "not_written",
        }
    }
}

/// A label a person typed, trimmed; None when it is not a label.
pub fn clean_label(label: &str) -> Option<String> {
    let label = label.trim();
    let fits = !label.is_empty() && label.len() <= MAX_LABEL_BYTES;
    (fits && !label.chars().any(char::is_control)).then(|| label.to_string())
}

/// The queue, who may answer it, and where answers go; shared by the follower and
/// the console.
#[derive(Clone)]
pub struct Desk {
    pub queue: Arc<Mutex<Queue>>,
    pub gate: Gate,
    pub metrics: ReviewMetrics,
    /// Messages the page shows at once.
    pub page_items: usize,
    labels_topic: String,
    producer: Option<Arc<Producer>>,
}

impl Desk {
    /// The desk `settings` describe, its series in `registry`. The producer is made
    /// only when there is a labels topic to write to.
    pub fn new(settings: &Settings, registry: &Registry) -> Result<Self, String> {
        let k = &settings.kafka;
        let producer = if k.labels_topic.is_empty() {
            None
        } else {
            Some(Arc::new(Producer::new(k).map_err(|e| {
                format!("cannot make the review answers' producer: {e}")
            })?))
        };
        let metrics = ReviewMetrics::register(registry);
        // Every known series from the start, at 0: rates and increases work from
        // the first answer, and a dashboard shows 0, not "no data".
        for r in &settings.review.reviewers {
            metrics.answers.with_label_values(&[&r.name]);
        }
        for result in ["ok", "refused", "busy"] {
            metrics.sign_ins.with_label_values(&[result]);
        }
        for reason in [
            "no_session",
            "bad_token",
            "gone",
            "bad_label",
            "not_written",
        ] {
            metrics.refused.with_label_values(&[reason]);
        }
        Ok(Self {
            queue: Arc::new(Mutex::new(Queue::new(settings.review.max_queue))),
            gate: Gate::new(&settings.review)?,
            metrics,
            page_items: settings.review.page_items,
            labels_topic: k.labels_topic.clone(),
            producer,
        })
    }

    /// Runs `f` on the queue.
    pub fn with_queue<T>(&self, f: impl FnOnce(&mut Queue) -> T) -> T {
        f(&mut self.queue.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether answers can be written.
    pub fn writable(&self) -> bool {
        self.producer.is_some()
    }

    /// Writes `reviewer`'s `label` for waiting message `id` to the labels topic and
    /// takes it off the queue (the other replicas take it off when they read it).
    pub async fn answer(&self, id: &str, label: &str, reviewer: &str) -> Result<(), AnswerError> {
        let label = clean_label(label).ok_or(AnswerError::BadLabel)?;
        let Some(producer) = &self.producer else {
            return Err(AnswerError::NoLabelsTopic);
        };
        let item = self
            .with_queue(|q| q.get(id).cloned())
            .ok_or(AnswerError::Gone)?;
        let record = json!({
            "id": id,
            "label": label,
            "source": "review",
            "reviewer": reviewer,
            "model_label": item.label,
            "model_version": item.model_version,
            "answered_at_ms": crate::clock::now_ms(),
        });
        let payload = record.to_string();
        let sent = producer.send(&self.labels_topic, id, payload.as_bytes());
        match tokio::time::timeout(ANSWER_TIMEOUT, sent).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(AnswerError::NotWritten(e.to_string())),
            Err(_) => {
                return Err(AnswerError::NotWritten(format!(
                    "no acknowledgement in {} s",
                    ANSWER_TIMEOUT.as_secs()
                )));
            }
        }
        self.with_queue(|q| q.answer(id));
        self.metrics.answers.with_label_values(&[reviewer]).inc();
        self.publish(crate::clock::now_ms());
        Ok(())
    }

    /// Sets the queue's gauges (length, age of the oldest) at `now_ms`.
    pub fn publish(&self, now_ms: i64) {
        let (len, oldest, dropped) =
            self.with_queue(|q| (q.len(), q.oldest_ms(), q.take_dropped()));
        self.metrics
            .queue_length
            .set(i64::try_from(len).unwrap_or(i64::MAX));
        self.metrics
            .oldest_age
            .set(oldest.map_or(0, |t| (now_ms - t).max(0) / 1000));
        self.metrics.dropped.inc_by(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_label_is_trimmed_and_bounded() {
        assert_eq!(
            clean_label("  Billing issue ").as_deref(),
            Some("Billing issue")
        );
        assert_eq!(clean_label("   "), None);
        assert_eq!(clean_label(&"x".repeat(65)), None);
        assert_eq!(clean_label("a\u{0}b"), None);
        assert_eq!(clean_label("a\nb"), None);
    }
}
