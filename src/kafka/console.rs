//! Console producer and consumer for demos and debugging, like Kafka's own
//! `kafka-console-producer` / `kafka-console-consumer`, without extra tools.

use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::base_config;
use crate::config::Settings;
use crate::feature::readers::{LabelValue, ReaderSpec, read_file};

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
    let producer: FutureProducer = base_config(&settings.kafka).create()?;
    let sends = messages.iter().map(|(id, body)| {
        producer.send(
            FutureRecord::to(topic)
                .key(id.as_str())
                .payload(body.as_str()),
            Timeout::After(Duration::from_secs(30)),
        )
    });
    for result in futures::future::join_all(sends).await {
        result.map_err(|(e, _)| e)?;
    }
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
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let consumer: StreamConsumer = base_config(&settings.kafka)
        .set(
            "group.id",
            format!("triage-tail-{}-{n}", std::process::id()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut printed = 0;
    let mut last = Instant::now();
    while printed < count && last.elapsed() < idle {
        let left = idle.saturating_sub(last.elapsed());
        if let Ok(Ok(m)) = tokio::time::timeout(left, consumer.recv()).await {
            print(&String::from_utf8_lossy(m.payload().unwrap_or_default()));
            printed += 1;
            last = Instant::now();
        }
    }
    Ok(printed)
}
