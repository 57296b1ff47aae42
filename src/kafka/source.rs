//! Kafka as the pipeline's source: a consumer in a group, with offsets stored
//! only when a window is acknowledged (`enable.auto.offset.store=false`) and the
//! stored offsets committed in the background, on hand-over and on close.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use tracing::{debug, info, warn};

use super::{KafkaSettings, TriageContext, consumer_config};
use crate::stream::state::PipelineState;
use crate::stream::{Acknowledge, Message, Position, Source, SourceError};

type Consumer_ = StreamConsumer<TriageContext>;

/// Reads the input topics as a member of the consumer group.
pub struct KafkaSource {
    consumer: Arc<Consumer_>,
}

impl KafkaSource {
    /// Creates the consumer and subscribes; partitions arrive with the group's
    /// assignment (the context reports it into `state`).
    pub fn subscribe(k: &KafkaSettings, state: Arc<PipelineState>) -> Result<Self, KafkaError> {
        let context = TriageContext {
            state,
            input_topics: k.input_topics.clone(),
        };
        let consumer: Consumer_ = consumer_config(k).create_with_context(context)?;
        let topics: Vec<&str> = k.input_topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let instance = k.instance_id().ok().flatten();
        info!(topics = ?k.input_topics, group = %k.group_id, instance = ?instance, brokers = %k.brokers, "Consuming.");
        Ok(Self {
            consumer: Arc::new(consumer),
        })
    }

    /// Commits what was acknowledged and leaves the group (a static member stays
    /// in it until its session times out, so that a restart takes its partitions
    /// back at once).
    pub fn close(self) {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => info!("Offsets committed."),
            Err(err) => {
                debug!(error = %err, "Final commit (nothing stored since the last one is fine).")
            }
        }
        self.consumer.unsubscribe();
    }
}

impl Source for KafkaSource {
    type Ack = KafkaAck;

    fn acknowledger(&self) -> KafkaAck {
        KafkaAck {
            consumer: self.consumer.clone(),
        }
    }

    async fn next(&mut self) -> Result<Option<Message>, SourceError> {
        loop {
            match self.consumer.recv().await {
                Ok(m) => return Ok(Some(message_of(&m))),
                Err(err) => {
                    warn!(error = %err, "Kafka receive error; retrying.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

fn message_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Message {
    // Not `Headers::iter`: it panics on a header name that is not UTF-8 (see headers.rs).
    let headers = super::headers::read(m);
    Message {
        position: Position::Log {
            topic: m.topic().into(),
            partition: m.partition(),
            offset: m.offset(),
        },
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        headers,
        timestamp_ms: m.timestamp().to_millis(),
        rejected: None,
    }
}

/// Stores a written window's offsets; the consumer commits them.
#[derive(Clone)]
pub struct KafkaAck {
    consumer: Arc<Consumer_>,
}

impl Acknowledge for KafkaAck {
    fn ack(&self, last: &[Position]) {
        for p in last {
            let Position::Log {
                topic,
                partition,
                offset,
            } = p
            else {
                continue;
            };
            if let Err(err) = self.consumer.store_offset(topic, *partition, *offset) {
                // The partition was revoked meanwhile: its next owner reads these again.
                debug!(topic = &**topic, partition, offset, error = %err, "Offset not stored.");
            }
        }
    }
}
