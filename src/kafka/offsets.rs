//! Where reading a topic from a point in time starts: each partition's first
//! offset at or after a timestamp (`offsets_for_times`) and its watermarks. The
//! bounded time-range read (`client::read_time_range`) and the follower
//! (`follow::Follower`) both start here, with the same errors.

use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

/// Why a topic could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot read topic {topic} on {brokers}: {source}; is the broker running?")]
    Kafka {
        topic: String,
        brokers: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("topic {topic} does not exist on {brokers}; create it with `triage topics create`")]
    MissingTopic { topic: String, brokers: String },
}

impl TopicError {
    /// The error for `topic` on `brokers` from a client error.
    pub(super) fn kafka(topic: &str, brokers: &str, source: KafkaError) -> Self {
        Self::Kafka {
            topic: topic.to_string(),
            brokers: brokers.to_string(),
            source: Box::new(source),
        }
    }
}

/// One partition of a topic, as a read from a timestamp sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PartitionStart {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
    /// The first offset at or after the timestamp; None when no record is.
    pub start: Option<i64>,
}

/// Every partition of `topic` with where a read from `since_ms` starts. Each
/// broker request gets `timeout()`.
pub(super) fn starts_at<C: ConsumerContext, T: Consumer<C>>(
    consumer: &T,
    topic: &str,
    brokers: &str,
    since_ms: i64,
    timeout: &dyn Fn() -> Timeout,
) -> Result<Vec<PartitionStart>, TopicError> {
    let kafka = |source| TopicError::kafka(topic, brokers, source);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout())
        .map_err(kafka)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(TopicError::MissingTopic {
            topic: topic.to_string(),
            brokers: brokers.to_string(),
        });
    }
    let mut query = TopicPartitionList::new();
    for &p in &partitions {
        query
            .add_partition_offset(topic, p, Offset::Offset(since_ms))
            .map_err(kafka)?;
    }
    let by_time = consumer
        .offsets_for_times(query, timeout())
        .map_err(kafka)?;
    let mut out = Vec::with_capacity(partitions.len());
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout())
            .map_err(kafka)?;
        let start = match by_time.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        out.push(PartitionStart {
            partition: p,
            low,
            high,
            start,
        });
    }
    Ok(out)
}
