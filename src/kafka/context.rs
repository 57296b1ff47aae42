//! The consumer context: rebalance hand-over and librdkafka statistics.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// State shared by the run loop, the window tasks and the librdkafka callbacks.
pub struct ConsumerState {
    pub metrics: Arc<Metrics>,
    pub input_topics: Vec<String>,
    /// Windows produced but not yet acknowledged and stored.
    in_flight: Mutex<usize>,
    drained: Condvar,
    pub assigned: AtomicUsize,
    pub brokers_up: AtomicUsize,
    pub model_loaded: AtomicBool,
    pub drain_timeout: Duration,
}

impl ConsumerState {
    pub fn new(metrics: Arc<Metrics>, input_topics: Vec<String>, drain_timeout: Duration) -> Self {
        Self {
            metrics,
            input_topics,
            in_flight: Mutex::new(0),
            drained: Condvar::new(),
            assigned: AtomicUsize::new(0),
            brokers_up: AtomicUsize::new(0),
            model_loaded: AtomicBool::new(false),
            drain_timeout,
        }
    }

    pub fn window_started(&self) {
        *self.in_flight.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    pub fn window_finished(&self) {
        let mut n = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.drained.notify_all();
        }
    }

    /// Blocks until no window is in flight or `timeout` passes; returns what is left.
    pub fn wait_drained(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut n = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            n = self
                .drained
                .wait_timeout(n, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *n
    }

    /// Ready: a model is loaded, partitions are assigned, a broker is up.
    pub fn ready(&self) -> bool {
        let ready = self.model_loaded.load(Ordering::Relaxed)
            && self.assigned.load(Ordering::Relaxed) > 0
            && self.brokers_up.load(Ordering::Relaxed) > 0;
        self.metrics.ready.set(i64::from(ready));
        ready
    }
}

/// librdkafka callbacks for the consumer.
pub struct TriageContext {
    pub state: Arc<ConsumerState>,
}

impl ClientContext for TriageContext {
    fn stats(&self, stats: Statistics) {
        let up = stats
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0 && b.state == "UP")
            .count();
        self.state.brokers_up.store(up, Ordering::Relaxed);
        self.state.metrics.brokers_up.set(up as i64);
        for topic in &self.state.input_topics {
            let Some(t) = stats.topics.get(topic) else {
                continue;
            };
            for (id, p) in &t.partitions {
                if *id >= 0 && p.consumer_lag >= 0 {
                    self.state
                        .metrics
                        .consumer_lag
                        .with_label_values(&[topic, &id.to_string()])
                        .set(p.consumer_lag);
                }
            }
        }
        self.state.ready();
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(error = %error, reason, "Kafka client error.");
    }
}

impl ConsumerContext for TriageContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Hand over cleanly: let in-flight windows be acknowledged (their offsets
            // stored), then commit. What is still in flight at the deadline is read
            // again by the next owner: duplicates, never loss.
            let left = self.state.wait_drained(self.state.drain_timeout);
            if let Err(err) = consumer.commit_consumer_state(CommitMode::Sync) {
                // NoOffset: nothing stored since the last commit.
                if !matches!(
                    err,
                    KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)
                ) {
                    warn!(error = %err, "Commit before rebalance failed.");
                }
            }
            info!(
                partitions = tpl.count(),
                windows_abandoned = left,
                "Partitions revoked."
            );
            self.state.assigned.store(0, Ordering::Relaxed);
            self.state.metrics.assigned_partitions.set(0);
            self.state.ready();
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let n = tpl.count();
                info!(partitions = n, "Partitions assigned.");
                self.state.assigned.store(n, Ordering::Relaxed);
                self.state.metrics.assigned_partitions.set(n as i64);
                self.state.ready();
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(err) => warn!(error = %err, "Rebalance error."),
        }
    }
}
