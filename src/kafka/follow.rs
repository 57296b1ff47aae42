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
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::warn;

use super::offsets::{TopicError, starts_at};
use super::{KafkaSettings, apply_escape_hatch, base_config};

/// How long each broker request of the start-up may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after a failed start, doubled after each next failure up to the most.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Runs `start` until it succeeds, pausing 1 s after the first failure and twice
/// as long after each next one (60 s at most), and logs each failure as "`what`
/// cannot start; retrying (`unaffected` is not affected)". None when `shutdown`
/// resolves first. For the parts that follow topics beside the service (the label
/// join, the review queue): a broker that is not there yet delays them, it does
/// not stop the process.
pub async fn start_with_retry<T, F, Fut>(
    what: &str,
    unaffected: &str,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
    mut start: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, FollowError>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return None,
            started = start() => match started {
                Ok(started) => return Some(started),
                Err(err) => warn!(
                    error = %err,
                    retry_in_s = backoff.as_secs(),
                    "{what} cannot start; retrying ({unaffected} is not affected)."
                ),
            },
        }
        tokio::select! {
            biased;
            () = &mut shutdown => return None,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

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
pub type FollowError = TopicError;

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
        let first = from.first().map_or("", |f| f.topic.as_str());
        let consumer: StreamConsumer = config
            .create()
            .map_err(|source| TopicError::kafka(first, &k.brokers, source))?;
        let mut assignment = TopicPartitionList::new();
        let mut backlog = BTreeMap::new();
        let timeout = || Timeout::After(REQUEST_TIMEOUT);
        for f in from {
            for p in starts_at(&consumer, &f.topic, &k.brokers, f.since_ms, &timeout)? {
                // No record at or after since_ms: only new ones.
                let mut start = p.start.unwrap_or(p.high);
                if let Some(n) = f.at_most_per_partition {
                    start = start.max(p.high - n);
                }
                let start = start.clamp(p.low, p.high);
                assignment
                    .add_partition_offset(&f.topic, p.partition, Offset::Offset(start))
                    .map_err(|source| TopicError::kafka(&f.topic, &k.brokers, source))?;
                if start < p.high {
                    backlog.insert((f.topic.clone(), p.partition), p.high);
                }
            }
        }
        let topics: Vec<&str> = from.iter().map(|f| f.topic.as_str()).collect();
        consumer
            .assign(&assignment)
            .map_err(|source| TopicError::kafka(&topics.join(","), &k.brokers, source))?;
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Instant;

    use super::*;

    fn missing() -> FollowError {
        TopicError::MissingTopic {
            topic: "t".into(),
            brokers: "b".into(),
        }
    }

    #[tokio::test]
    async fn a_start_that_fails_is_retried_after_a_pause_until_it_succeeds() {
        let tries = Cell::new(0);
        let shutdown = std::future::pending::<()>();
        tokio::pin!(shutdown);
        let began = Instant::now();
        let started = start_with_retry("Test", "nothing", shutdown.as_mut(), || {
            tries.set(tries.get() + 1);
            let n = tries.get();
            async move { if n < 2 { Err(missing()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(started, Some(2));
        assert!(
            began.elapsed() >= FIRST_BACKOFF,
            "no pause after the failure"
        );
    }

    #[tokio::test]
    async fn shutdown_ends_the_retries() {
        let shutdown = tokio::time::sleep(Duration::from_millis(50));
        tokio::pin!(shutdown);
        let began = Instant::now();
        let started: Option<()> =
            start_with_retry("Test", "nothing", shutdown.as_mut(), || async {
                Err(missing())
            })
            .await;
        assert_eq!(started, None);
        assert!(
            began.elapsed() < FIRST_BACKOFF,
            "shutdown waited for the pause"
        );
    }
}
