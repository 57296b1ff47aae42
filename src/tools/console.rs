//! Console producer and consumer for demos and debugging (`triage topics send` and
//! `triage topics tail`), like Kafka's own `kafka-console-producer` /
//! `kafka-console-consumer`, without extra tools.

use std::path::Path;
use std::time::{Duration, Instant};

use super::common::unique;
use crate::config::Settings;
use crate::feature::readers::{LabelValue, ReaderSpec, read_file};
use crate::kafka::client::{Producer, TopicReader};

/// Sends up to `rows` rows of a data file to `topic` as JSON messages with the
/// configured id, text and label fields (so `triage run` reads them as they are).
pub async fn send_file(
    settings: &Settings,
    path: &Path,
    topic: &str,
    rows: usize,
) -> anyhow::Result<usize> {
    let spec = ReaderSpec::new(&settings.data, Some(&settings.labels.field));
    let mut messages = Vec::new();
    read_file(path, &spec, |r| {
        if messages.len() < rows {
            let mut obj = serde_json::Map::new();
            obj.insert(settings.data.id_field.clone(), r.id.clone().into());
            obj.insert(settings.data.text_field.clone(), r.text.into());
            match r.label {
                Some(LabelValue::Number(n)) => {
                    obj.insert(settings.labels.field.clone(), n.into());
                }
                Some(LabelValue::Text(t)) => {
                    obj.insert(settings.labels.field.clone(), t.into());
                }
                None => {}
            }
            messages.push((r.id, serde_json::Value::Object(obj).to_string()));
        }
        Ok(())
    })?;
    Producer::new(&settings.kafka)?
        .send_all(topic, &messages, Duration::from_secs(30))
        .await?;
    Ok(messages.len())
}

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
