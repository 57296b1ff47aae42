//! Following topics from a point in time: every partition assigned by hand (no
//! consumer group, nothing committed), each starting at the first record at or
//! after a timestamp (`offsets_for_times`), then new records as they arrive.
//!
//! This is how a process rebuilds a bounded state from the log instead of
//! persisting it (the retrainer's label join): start from `now - window`, read the
//! backlog, keep going. [`Follower::caught_up`] says when the backlog that existed
//! at the start (up to each partition's high watermark then) has been read, so a
//! reader of several followers can replay one topic before another.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{KafkaSettings, apply_escape_hatch, base_config};

/// How long each broker request of the start-up may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One record of a followed topic.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The record's timestamp, milliseconds since the Unix epoch, when it has one.
    pub timestamp_ms: Option<i64>,
}

/// Why following could not start.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("cannot follow topic {topic} on {brokers}: {source}; is the broker running?")]
    Kafka {
        topic: String,
        brokers: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("topic {topic} does not exist on {brokers}; create it with `triage topics create`")]
    MissingTopic { topic: String, brokers: String },
}

/// Where to start one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowFrom {
    pub topic: String,
    /// The first record read in each partition is the first at or after this time
    /// (milliseconds since the Unix epoch).
    pub since_ms: i64,
    /// Read at most this many of each partition's latest records (a state that
    /// keeps only the newest N never needs older ones). None: no such bound.
    pub at_most_per_partition: Option<i64>,
}

/// Follows topics from a timestamp; see the module documentation.
pub struct Follower {
    consumer: StreamConsumer,
    /// Partitions whose backlog at the start is not read yet: the high watermark
    /// they had then.
    backlog: BTreeMap<(String, i32), i64>,
}

impl Follower {
    /// Looks up each topic's partitions and start offsets and assigns them.
    /// Fails when a topic does not exist or the broker cannot be reached within
    /// the request timeouts; the caller decides whether to retry.
    pub async fn start(k: &KafkaSettings, from: Vec<FollowFrom>) -> Result<Self, FollowError> {
        let k = k.clone();
        match tokio::task::spawn_blocking(move || Self::start_blocking(&k, &from)).await {
            Ok(result) => result,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    fn start_blocking(k: &KafkaSettings, from: &[FollowFrom]) -> Result<Self, FollowError> {
        let mut config = base_config(k);
        // Never subscribes, so it never joins this group; the id only satisfies
        // librdkafka. Nothing is committed or stored.
        config
            .set("group.id", "triage-follower")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // An assigned offset that retention deleted meanwhile: the oldest left.
            .set("auto.offset.reset", "earliest");
        apply_escape_hatch(&mut config, k);
        let first = from.first().map(|f| f.topic.clone()).unwrap_or_default();
        let consumer: StreamConsumer = config.create().map_err(|source| FollowError::Kafka {
            topic: first,
            brokers: k.brokers.clone(),
            source: Box::new(source),
        })?;
        let mut assignment = TopicPartitionList::new();
        let mut backlog = BTreeMap::new();
        for f in from {
            let kafka = |source| FollowError::Kafka {
                topic: f.topic.clone(),
                brokers: k.brokers.clone(),
                source: Box::new(source),
            };
            for (partition, start, high) in start_offsets(&consumer, f).map_err(|e| match e {
                StartError::Kafka(source) => kafka(source),
                StartError::Missing => FollowError::MissingTopic {
                    topic: f.topic.clone(),
                    brokers: k.brokers.clone(),
                },
            })? {
                assignment
                    .add_partition_offset(&f.topic, partition, Offset::Offset(start))
                    .map_err(kafka)?;
                if start < high {
                    backlog.insert((f.topic.clone(), partition), high);
                }
            }
        }
        consumer
            .assign(&assignment)
            .map_err(|source| FollowError::Kafka {
                topic: from
                    .iter()
                    .map(|f| f.topic.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                brokers: k.brokers.clone(),
                source: Box::new(source),
            })?;
        Ok(Self { consumer, backlog })
    }

    /// The next record of any followed partition; waits for one. An error is
    /// transient (librdkafka reconnects by itself): the caller may log it and
    /// call again.
    pub async fn next(&mut self) -> Result<FollowedRecord, KafkaError> {
        let m = self.consumer.recv().await?;
        let record = FollowedRecord {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            timestamp_ms: m.timestamp().to_millis(),
        };
        drop(m);
        let key = (record.topic.clone(), record.partition);
        if let Some(&high) = self.backlog.get(&key)
            && record.offset + 1 >= high
        {
            self.backlog.remove(&key);
        }
        Ok(record)
    }

    /// Whether every partition's backlog at the start has been read (records
    /// written since may still follow).
    pub fn caught_up(&mut self) -> bool {
        if self.backlog.is_empty() {
            return true;
        }
        // A partition whose last records before the high watermark were not data
        // (transaction markers) never delivers the record that ends its backlog:
        // its position says it is through.
        if let Ok(position) = self.consumer.position() {
            for e in position.elements() {
                let key = (e.topic().to_string(), e.partition());
                if let (Offset::Offset(next), Some(&high)) = (e.offset(), self.backlog.get(&key))
                    && next >= high
                {
                    self.backlog.remove(&key);
                }
            }
        }
        self.backlog.is_empty()
    }
}

enum StartError {
    Kafka(KafkaError),
    Missing,
}

impl From<KafkaError> for StartError {
    fn from(e: KafkaError) -> Self {
        Self::Kafka(e)
    }
}

/// `(partition, start offset, high watermark)` of each partition of `f.topic`.
fn start_offsets(
    consumer: &StreamConsumer,
    f: &FollowFrom,
) -> Result<Vec<(i32, i64, i64)>, StartError> {
    let metadata = consumer.fetch_metadata(Some(&f.topic), Timeout::After(REQUEST_TIMEOUT))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == f.topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(StartError::Missing);
    }
    let mut query = TopicPartitionList::new();
    for &p in &partitions {
        query.add_partition_offset(&f.topic, p, Offset::Offset(f.since_ms))?;
    }
    let by_time = consumer.offsets_for_times(query, Timeout::After(REQUEST_TIMEOUT))?;
    let mut out = Vec::with_capacity(partitions.len());
    for &p in &partitions {
        let (low, high) =
            consumer.fetch_watermarks(&f.topic, p, Timeout::After(REQUEST_TIMEOUT))?;
        let found = by_time
            .find_partition(&f.topic, p)
            .map(|e| e.offset())
            .unwrap_or(Offset::End);
        let mut start = match found {
            Offset::Offset(o) => o,
            // No record at or after since_ms: only new ones.
            _ => high,
        };
        if let Some(n) = f.at_most_per_partition {
            start = start.max(high - n);
        }
        out.push((p, start.clamp(low, high), high));
    }
    Ok(out)
}
