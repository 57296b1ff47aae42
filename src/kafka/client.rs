//! Plain Kafka clients for the tools around the service (`triage topics send/tail`,
//! `triage bench`): a producer that sends keyed payloads, and a reader that reads a
//! topic from its beginning. The service's own consumer and producer, with their
//! delivery guarantees, are elsewhere in this module; these keep the tools free of
//! the Kafka library.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::{KafkaSettings, base_config};

/// A producer with the connection settings only (no idempotence, no escape hatch):
/// what a demo or a benchmark needs to put messages on a topic.
pub struct Producer {
    inner: FutureProducer,
}

impl Producer {
    /// A producer with librdkafka's default batching delay.
    pub fn new(k: &KafkaSettings) -> Result<Self, KafkaError> {
        Ok(Self {
            inner: base_config(k).create()?,
        })
    }

    /// A producer that waits at most `linger_ms` to batch: for latency measurements.
    pub fn with_linger_ms(k: &KafkaSettings, linger_ms: u32) -> Result<Self, KafkaError> {
        let mut c = base_config(k);
        c.set("linger.ms", linger_ms.to_string());
        Ok(Self { inner: c.create()? })
    }

    /// Sends one record and waits until the broker acknowledged it; waits as long as
    /// it takes for room in the local queue.
    pub async fn send(&self, topic: &str, key: &str, payload: &[u8]) -> Result<(), KafkaError> {
        self.inner
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Timeout::Never,
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// Sends every `(key, payload)` at once and waits for all acknowledgements; a
    /// record that finds no room in the local queue within `queue_timeout` fails.
    pub async fn send_all(
        &self,
        topic: &str,
        records: &[(String, String)],
        queue_timeout: Duration,
    ) -> Result<(), KafkaError> {
        let sends = records.iter().map(|(key, payload)| {
            self.inner.send(
                FutureRecord::to(topic)
                    .key(key.as_str())
                    .payload(payload.as_str()),
                Timeout::After(queue_timeout),
            )
        });
        for result in join_all(sends).await {
            result.map_err(|(e, _)| e)?;
        }
        Ok(())
    }

    /// Queues one record without waiting for its acknowledgement (it is still
    /// delivered); fails at once when the local queue is full.
    pub fn enqueue(&self, topic: &str, key: &str, payload: &[u8]) -> Result<(), KafkaError> {
        self.inner
            .send_result(FutureRecord::to(topic).key(key).payload(payload))
            .map(drop)
            .map_err(|(e, _)| e)
    }
}

/// Reads a topic from its beginning in a consumer group of its own, committing
/// nothing: a reader leaves no trace for the service's consumer group.
pub struct TopicReader {
    inner: StreamConsumer,
}

impl TopicReader {
    /// Subscribes to `topic` as `group_id`, which should be unique to this reader.
    pub fn from_beginning(
        k: &KafkaSettings,
        topic: &str,
        group_id: &str,
    ) -> Result<Self, KafkaError> {
        let inner: StreamConsumer = base_config(k)
            .set("group.id", group_id)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()?;
        inner.subscribe(&[topic])?;
        Ok(Self { inner })
    }

    /// The next record's payload (empty when it has none).
    pub async fn next_payload(&self) -> Result<Vec<u8>, KafkaError> {
        let m = self.inner.recv().await?;
        Ok(m.payload().unwrap_or_default().to_vec())
    }
}
