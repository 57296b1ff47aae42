//! Console consumer for demos and debugging (`triage topics tail`), like Kafka's own
//! `kafka-console-consumer`, without extra tools; the producer side (`triage topics
//! send`) is [`super::produce`].

use std::time::{Duration, Instant};

use super::common::unique;
use crate::config::Settings;
use crate::kafka::client::TopicReader;

/// Prints records of `topic` from the beginning, one JSON line each, until `count`
/// were printed or `idle` passed without a new one.
pub async fn tail(
    settings: &Settings,
    topic: &str,
    count: usize,
    idle: Duration,
    mut print: impl FnMut(&str),
) -> anyhow::Result<usize> {
    let reader = TopicReader::from_beginning(&settings.kafka, topic, &unique("tail"))?;
    let mut printed = 0;
    let mut last = Instant::now();
    while printed < count && last.elapsed() < idle {
        let left = idle.saturating_sub(last.elapsed());
        if let Ok(Ok(payload)) = tokio::time::timeout(left, reader.next_payload()).await {
            print(&String::from_utf8_lossy(&payload));
            printed += 1;
            last = Instant::now();
        }
    }
    Ok(printed)
}
