//! Kafka as the pipeline's sink: an idempotent producer (`acks=all`) that routes
//! each record kind to its topic and classifies what the broker answers:
//! - retriable errors (a leader moving, a timeout) are produced again with
//!   backoff, counted in `triage_produce_retries_total`, for a bounded time;
//! - a dead letter too large for the broker is written truncated to fit, with
//!   headers for its original size and sha256 (`triage_dlq_truncated_total`);
//! - anything else (an unknown topic, no authorisation, a prediction too large)
//!   fails the window: the pipeline stops loudly and nothing is committed.
//!
//! No record can stall a partition in a silent retry loop.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use tracing::warn;

use super::{KafkaSettings, producer_config};
use crate::metrics::Metrics;
use crate::stream::envelope::truncate_payload;
use crate::stream::{Record, RecordKind, Sink, SinkError};

/// Room left for the record's framing (key, headers' own overhead, batch header).
const FRAMING_BYTES: usize = 1024;
/// Retriable failures of one record before the window fails.
const MAX_RETRIES: u32 = 8;

/// Produces a window's records to the predictions, features and dead-letter topics.
#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer,
    topics: Arc<Topics>,
    metrics: Arc<Metrics>,
}

struct Topics {
    predictions: String,
    features: String,
    review: String,
    dlq: String,
    /// The producer's own size limit (`message.max.bytes`).
    max_record_bytes: usize,
}

impl KafkaSink {
    pub fn new(k: &KafkaSettings, metrics: Arc<Metrics>) -> Result<Self, KafkaError> {
        let max_record_bytes = k.max_record_bytes();
        Ok(Self {
            producer: producer_config(k).create()?,
            topics: Arc::new(Topics {
                predictions: k.predictions_topic.clone(),
                features: k.features_topic.clone(),
                review: k.review_topic.clone(),
                dlq: k.dlq_topic.clone(),
                max_record_bytes,
            }),
            metrics,
        })
    }

    /// Waits up to `timeout` for records still queued (on shutdown).
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer;
        let _ = self.producer.flush(Timeout::After(timeout));
    }

    fn topic_of(&self, kind: &RecordKind) -> &str {
        match kind {
            RecordKind::Prediction => &self.topics.predictions,
            RecordKind::Feature => &self.topics.features,
            RecordKind::Review => &self.topics.review,
            RecordKind::DeadLetter { .. } => &self.topics.dlq,
        }
    }

    /// Produces one record until the broker acknowledges it, or fails it.
    async fn deliver(&self, record: &Record) -> Result<(), SinkError> {
        let topic = self.topic_of(&record.kind);
        let mut backoff = Duration::from_millis(100);
        let mut retries = 0;
        let mut truncated: Option<Record> = None;
        loop {
            let current = truncated.as_ref().unwrap_or(record);
            let err = match self.send(topic, current).await {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            match classify(&err) {
                Failure::TooLarge if matches!(record.kind, RecordKind::DeadLetter { .. }) => {
                    let size = current.payload.as_ref().map_or(0, Vec::len);
                    let limit = match &truncated {
                        None => self.topics.max_record_bytes,
                        Some(_) => size / 2,
                    }
                    .saturating_sub(FRAMING_BYTES + headers_len(record));
                    if size == 0 {
                        return Err(fatal(topic, err, "even its headers are too large"));
                    }
                    warn!(
                        topic,
                        size, limit, "Dead letter too large for the broker; writing it truncated."
                    );
                    truncated = Some(truncate_payload(current, limit.min(size.saturating_sub(1))));
                    self.metrics.dlq_truncated.inc();
                }
                Failure::Retriable if retries < MAX_RETRIES => {
                    retries += 1;
                    self.metrics.produce_retries.inc();
                    warn!(topic, error = %err, retry = retries, "Delivery failed; producing again.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Failure::Retriable => {
                    return Err(fatal(topic, err, "still failing after retries"));
                }
                Failure::TooLarge | Failure::Fatal => {
                    return Err(fatal(topic, err, "the broker will not take it"));
                }
            }
        }
    }

    async fn send(&self, topic: &str, record: &Record) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (k, v) in &record.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(payload) = &record.payload {
            out = out.payload(payload.as_slice());
        }
        if let Some(key) = &record.key {
            out = out.key(key.as_slice());
        }
        self.producer
            .send(out, Timeout::Never)
            .await
            .map(|_| ())
            .map_err(|(err, _)| err)
    }
}

impl Sink for KafkaSink {
    async fn write(&self, records: Vec<Record>) -> Result<(), SinkError> {
        let results = futures::future::join_all(records.iter().map(|r| self.deliver(r))).await;
        results.into_iter().collect()
    }
}

/// What a failed delivery calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Retriable,
    TooLarge,
    Fatal,
}

fn classify(err: &KafkaError) -> Failure {
    use RDKafkaErrorCode as C;
    let code = match err {
        KafkaError::MessageProduction(code) => *code,
        _ => return Failure::Fatal,
    };
    match code {
        C::MessageSizeTooLarge => Failure::TooLarge,
        C::QueueFull
        | C::MessageTimedOut
        | C::RequestTimedOut
        | C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::NetworkException
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::KafkaStorageError
        | C::OutOfOrderSequenceNumber
        | C::BrokerNotAvailable => Failure::Retriable,
        _ => Failure::Fatal,
    }
}

fn fatal(topic: &str, err: KafkaError, why: &str) -> SinkError {
    SinkError {
        context: format!(
            "cannot produce to {topic} ({why}); check the topic exists and triage may write to it"
        ),
        source: Box::new(err),
    }
}

fn headers_len(record: &Record) -> usize {
    crate::stream::envelope::headers_bytes(&record.headers) + 256
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_errors_are_classified() {
        let e = |c| KafkaError::MessageProduction(c);
        assert_eq!(
            classify(&e(RDKafkaErrorCode::MessageSizeTooLarge)),
            Failure::TooLarge
        );
        assert_eq!(
            classify(&e(RDKafkaErrorCode::NotLeaderForPartition)),
            Failure::Retriable
        );
        assert_eq!(
            classify(&e(RDKafkaErrorCode::QueueFull)),
            Failure::Retriable
        );
        assert_eq!(
            classify(&e(RDKafkaErrorCode::TopicAuthorizationFailed)),
            Failure::Fatal
        );
        assert_eq!(
            classify(&e(RDKafkaErrorCode::UnknownTopicOrPartition)),
            Failure::Fatal
        );
        assert_eq!(classify(&KafkaError::Canceled), Failure::Fatal);
    }
}
