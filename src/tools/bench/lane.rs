//! Kafka for the bench: fresh topics per run, a producer, a prediction reader, and
//! a service warmed up on them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::child::Service;
use super::unique;
use crate::config::Settings;
use crate::kafka::client::{Producer, TopicReader};

pub(super) struct Lane {
    pub(super) settings: Settings,
    pub(super) input: String,
    pub(super) predictions: String,
}

pub(super) async fn lane(settings: &Settings, tag: &str) -> anyhow::Result<Lane> {
    let mut s = settings.clone();
    let input = unique(&format!("{tag}-in"));
    let predictions = unique(&format!("{tag}-pred"));
    s.kafka.input_topics = vec![input.clone()];
    s.kafka.predictions_topic = predictions.clone();
    s.kafka.dlq_topic = unique(&format!("{tag}-dlq"));
    s.kafka.features_topic = String::new();
    s.kafka.group_id = unique(&format!("{tag}-group"));
    s.http.listen = String::new();
    let names = vec![
        input.clone(),
        predictions.clone(),
        s.kafka.dlq_topic.clone(),
    ];
    for (name, outcome) in crate::kafka::create_topics(&s.kafka, &names, 1, 1).await? {
        anyhow::ensure!(
            !outcome.starts_with("failed"),
            "creating topic {name}: {outcome}"
        );
    }
    Ok(Lane {
        settings: s,
        input,
        predictions,
    })
}

/// The bench's prediction reader: a consumer configured as the service's (its
/// fetch settings and the escape hatch), so that reading a prediction back costs
/// what the service's own read costs, whatever `fetch.wait.max.ms` is set to.
pub(super) fn reader(settings: &Settings, topic: &str) -> anyhow::Result<TopicReader> {
    Ok(TopicReader::like_service(
        &settings.kafka,
        topic,
        &unique("reader"),
    )?)
}

pub(super) fn producer(settings: &Settings) -> anyhow::Result<Producer> {
    Ok(Producer::with_linger_ms(&settings.kafka, 1)?)
}

/// A prediction read back: when, how long its window had been in the service, and
/// whether it carried a challenger's prediction (its `shadow` field).
#[derive(Debug, Clone, Copy)]
pub(super) struct Arrival {
    pub(super) at: Instant,
    pub(super) in_service: Duration,
    pub(super) shadow: bool,
    /// The message's own clock in the service, when the record carries it.
    pub(super) clock: Option<RecordClock>,
}

/// A prediction's `timings_ms`: its message's time in its window, from its read to
/// its window's predictions ready, the window's embedding and classifying, and the
/// wall-clock time (µs since the epoch) of the read and of the predictions ready.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecordClock {
    pub(super) window_ms: f64,
    pub(super) since_read_ms: f64,
    pub(super) embed_ms: f64,
    pub(super) classify_ms: f64,
    pub(super) read_at_us: i64,
    pub(super) ready_at_us: i64,
}

impl RecordClock {
    fn of(t: &serde_json::Value) -> Option<Self> {
        Some(Self {
            window_ms: t["window"].as_f64()?,
            since_read_ms: t["since_read"].as_f64()?,
            embed_ms: t["embed"].as_f64().unwrap_or(0.0),
            classify_ms: t["classify"].as_f64().unwrap_or(0.0),
            read_at_us: t["read_at_us"].as_i64()?,
            ready_at_us: t["ready_at_us"].as_i64()?,
        })
    }
}

impl Arrival {
    /// When the service read its window's first message (from this process's clock).
    pub(super) fn read_at(&self) -> Instant {
        self.at.checked_sub(self.in_service).unwrap_or(self.at)
    }
}

/// Reads predictions until `n` distinct ids arrived; returns the first arrival per id.
/// Fails early if the service exits.
pub(super) async fn collect(
    reader: &TopicReader,
    n: usize,
    timeout: Duration,
    service: &mut Service,
) -> anyhow::Result<HashMap<String, Arrival>> {
    let mut seen = HashMap::with_capacity(n);
    let deadline = Instant::now() + timeout;
    while seen.len() < n {
        service.check()?;
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(
            !left.is_zero(),
            "only {} of {n} predictions within {timeout:?}",
            seen.len()
        );
        let wait = left.min(Duration::from_secs(1));
        if let Ok(Ok(payload)) = tokio::time::timeout(wait, reader.next_payload()).await {
            let v: serde_json::Value = serde_json::from_slice(&payload)?;
            if let Some(id) = v["id"].as_str() {
                let in_service = v["timings_ms"]["in_service"].as_f64().unwrap_or(0.0);
                seen.entry(id.to_string()).or_insert_with(|| Arrival {
                    at: Instant::now(),
                    in_service: Duration::from_secs_f64(in_service.max(0.0) / 1e3),
                    shadow: v["shadow"].is_object(),
                    clock: RecordClock::of(&v["timings_ms"]),
                });
            }
        }
    }
    Ok(seen)
}

pub(super) fn payload(id: &str, text: &str) -> Vec<u8> {
    serde_json::json!({ "id": id, "text": text })
        .to_string()
        .into_bytes()
}

/// A fresh lane with a producer, a prediction reader and a running service, warmed
/// up by one message through it (so it is loaded and assigned).
pub(super) struct Rig {
    pub(super) lane: Lane,
    pub(super) prod: Producer,
    pub(super) preds: TopicReader,
    pub(super) service: Service,
}

pub(super) async fn rig(settings: &Settings, tag: &str) -> anyhow::Result<Rig> {
    let lane = lane(settings, tag).await?;
    let prod = producer(&lane.settings)?;
    let preds = reader(&lane.settings, &lane.predictions)?;
    let mut service = Service::start(&lane.settings)?;
    prod.send(&lane.input, "warm", &payload("warm", "hello"))
        .await?;
    collect(&preds, 1, Duration::from_secs(120), &mut service).await?;
    Ok(Rig {
        lane,
        prod,
        preds,
        service,
    })
}
