//! The consumer context: rebalance hand-over and librdkafka statistics, reported
//! into the pipeline's shared state (readiness, lag, windows in flight).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use tracing::{info, warn};

use crate::stream::state::PipelineState;

/// librdkafka callbacks for the consumer.
pub struct TriageContext {
    pub state: Arc<PipelineState>,
    pub input_topics: Vec<String>,
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
        for topic in &self.input_topics {
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
