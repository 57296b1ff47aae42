//! Plain Kafka clients for the tools around the service (`triage topics send/tail`,
//! `triage bench`, `triage retrain`): a producer that sends keyed payloads, a reader
//! that reads a topic from its beginning, and a bounded read of a time range. The service's own consumer and producer, with their
//! delivery guarantees, are elsewhere in this module; these keep the tools free of
//! the Kafka library.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::offsets::{TopicError, starts_at};
use super::{KafkaSettings, base_config, consumer_config, producer_config};

/// Each broker request of a time-range read: a broker that is away answers nothing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// A producer configured as the service's own (idempotent, `acks=all`, its
    /// `linger.ms`, the escape hatch): what the service's produce costs, measured
    /// on its own (`triage bench`'s latency floors).
    pub fn like_service(k: &KafkaSettings) -> Result<Self, KafkaError> {
        Ok(Self {
            inner: producer_config(k).create()?,
        })
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
        Self::subscribed(base_config(k), topic, group_id)
    }

    /// A reader configured as the service's consumer (its fetch and prefetch
    /// settings, the escape hatch), in group `group_id`, from the beginning,
    /// committing nothing: the fetch floor the service itself meets.
    pub fn like_service(
        k: &KafkaSettings,
        topic: &str,
        group_id: &str,
    ) -> Result<Self, KafkaError> {
        let mut c = consumer_config(k);
        c.remove("group.instance.id");
        Self::subscribed(c, topic, group_id)
    }

    /// `config` in group `group_id`, from the beginning, committing nothing.
    fn subscribed(
        mut config: ClientConfig,
        topic: &str,
        group_id: &str,
    ) -> Result<Self, KafkaError> {
        let inner: StreamConsumer = config
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

/// One record of a time-range read.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The record's timestamp, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Why a time-range read gave nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum RangeReadError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error(
        "reading topic {topic} timed out after {seconds:.0} s with {missing} record(s) still to read up to the high watermarks; is the broker overloaded?"
    )]
    TimedOut {
        topic: String,
        seconds: f64,
        missing: i64,
    },
}

/// Reads every record of `topic` whose timestamp lies in `[from_ms, to_ms]`:
/// `offsets_for_times` finds where each partition's range starts, and each
/// partition is read up to its high watermark as it was when the read began, so
/// the read ends even while producers keep writing. Records are in partition
/// order, each partition in offset order. Blocking: call it off the async runtime.
/// `timeout` bounds the whole read.
pub fn read_time_range(
    k: &KafkaSettings,
    topic: &str,
    from_ms: i64,
    to_ms: i64,
    timeout: Duration,
) -> Result<Vec<TimedRecord>, RangeReadError> {
    let mut records = Vec::new();
    for_each_in_time_range(k, topic, from_ms, to_ms, timeout, |r| records.push(r))?;
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}

/// [`read_time_range`] without holding the records: each is handed to `each` as it
/// is read (each partition in offset order, partitions interleaved), so a caller
/// that keeps a bounded part of them reads any range in bounded memory.
pub fn for_each_in_time_range(
    k: &KafkaSettings,
    topic: &str,
    from_ms: i64,
    to_ms: i64,
    timeout: Duration,
    mut each: impl FnMut(TimedRecord),
) -> Result<(), RangeReadError> {
    let started = Instant::now();
    let kafka = |source| TopicError::kafka(topic, &k.brokers, source);
    // A broker that is away answers nothing: give up on it sooner than on a slow read.
    let left = || {
        Timeout::After(
            timeout
                .saturating_sub(started.elapsed())
                .min(CONNECT_TIMEOUT),
        )
    };
    // A group id of its own, never used to commit: the read leaves no trace.
    let group = format!(
        "triage-range-reader-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let consumer: BaseConsumer = base_config(k)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // The end of a partition is reported, so a gap before the high watermark
        // (compaction, transaction markers) cannot keep the read waiting.
        .set("enable.partition.eof", "true")
        .create()
        .map_err(kafka)?;
    // The end of each partition is fixed now: later records are not waited for.
    let mut assignment = TopicPartitionList::new();
    // Per partition: the next offset to read and the end.
    let mut pending: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for p in starts_at(&consumer, topic, &k.brokers, from_ms, &left)? {
        // No start: no record at or after from_ms.
        if let Some(start) = p.start
            && start < p.high
        {
            assignment
                .add_partition_offset(topic, p.partition, Offset::Offset(start))
                .map_err(kafka)?;
            pending.insert(p.partition, (start, p.high));
        }
    }
    if pending.is_empty() {
        return Ok(());
    }
    consumer.assign(&assignment).map_err(kafka)?;
    while !pending.is_empty() {
        let Some(remaining) = timeout.checked_sub(started.elapsed()) else {
            return Err(RangeReadError::TimedOut {
                topic: topic.to_string(),
                seconds: timeout.as_secs_f64(),
                missing: pending.values().map(|(next, end)| end - next).sum(),
            });
        };
        let Some(result) = consumer.poll(remaining.min(Duration::from_millis(500))) else {
            continue;
        };
        let m = match result {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                pending.remove(&p);
                continue;
            }
            Err(e) => return Err(kafka(e).into()),
        };
        let p = m.partition();
        let Some((next, end)) = pending.get_mut(&p) else {
            continue;
        };
        *next = m.offset() + 1;
        let timestamp_ms = m.timestamp().to_millis().unwrap_or(-1);
        if m.offset() < *end && (from_ms..=to_ms).contains(&timestamp_ms) {
            each(TimedRecord {
                partition: p,
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec),
                timestamp_ms,
            });
        }
        if *next >= *end {
            pending.remove(&p);
        }
    }
    Ok(())
}
