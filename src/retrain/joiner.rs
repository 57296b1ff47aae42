//! The label join's Kafka side: follows the predictions and labels topics from
//! `now - retrain.join_window_s` and feeds [`LabelJoin`] (see [`super::labels`] for
//! what the join keeps and why it is rebuilt rather than stored).
//!
//! Start-up replays the predictions first and only then the labels, so a label in
//! the window finds its prediction instead of waiting for it. A broker that cannot
//! be reached is retried with a growing pause; the webhook does not wait for it.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use super::labels::{JoinLimits, LabelJoin};
use super::metrics::PerformanceMetrics;
use crate::kafka::{FollowFrom, FollowedRecord, Follower, KafkaError, KafkaSettings};

/// How often expiry runs and the metrics are updated.
const TICK: Duration = Duration::from_secs(1);
/// Longest pause between attempts to reach the broker.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Start-up replay of the predictions ends when it has read the backlog, or when
/// nothing came for this long (a partition whose end cannot be seen).
const REPLAY_IDLE: Duration = Duration::from_secs(3);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Runs the join until `shutdown` resolves. Returns at once when
/// `kafka.labels_topic` is empty.
pub async fn run(
    kafka: KafkaSettings,
    limits: JoinLimits,
    metrics: PerformanceMetrics,
    shutdown: impl Future<Output = ()>,
) {
    if kafka.labels_topic.is_empty() {
        info!("kafka.labels_topic is empty: no label join, no triage_performance_* scores.");
        return;
    }
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_secs(1);
    let (since_ms, mut predictions, mut labels) = loop {
        let since_ms = now_ms().saturating_sub(limits.window_ms);
        let start = async {
            let predictions = Follower::start(
                &kafka,
                vec![FollowFrom {
                    topic: kafka.predictions_topic.clone(),
                    since_ms,
                    // The join keeps the newest max_predictions: older ones would
                    // be forgotten as soon as they were read.
                    at_most_per_partition: i64::try_from(limits.max_predictions).ok(),
                }],
            )
            .await?;
            let labels = Follower::start(
                &kafka,
                vec![FollowFrom {
                    topic: kafka.labels_topic.clone(),
                    since_ms,
                    at_most_per_partition: None,
                }],
            )
            .await?;
            Ok::<_, crate::kafka::FollowError>((predictions, labels))
        };
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            started = start => match started {
                Ok((p, l)) => break (since_ms, p, l),
                Err(err) => warn!(
                    error = %err,
                    retry_in_s = backoff.as_secs(),
                    "Label join cannot start; retrying (the webhook is not affected)."
                ),
            },
        }
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    };
    info!(
        predictions = %kafka.predictions_topic,
        labels = %kafka.labels_topic,
        since = %humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(since_ms.max(0) as u64)),
        "Label join: replaying predictions, then labels."
    );

    let mut join = LabelJoin::new(limits);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut labels_open = false;
    let mut last_prediction = Instant::now();
    let mut invalid_prediction: Option<String> = None;
    loop {
        if !labels_open && (predictions.caught_up() || last_prediction.elapsed() > REPLAY_IDLE) {
            labels_open = true;
            info!(
                held = join.held(),
                "Label join: predictions replayed; reading labels."
            );
        }
        // Not biased between the topics: neither may starve the other.
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {
                join.expire(now_ms());
                metrics.publish(&mut join);
                if let Some(error) = invalid_prediction.take() {
                    warn!(%error, total = metrics.invalid_predictions.get(), "Prediction records skipped by the label join.");
                }
            }
            record = predictions.next() => {
                last_prediction = Instant::now();
                let Some(r) = received(record).await else { continue };
                let now = now_ms();
                let payload = r.payload.as_deref().unwrap_or_default();
                if let Err(err) = join.prediction(payload, r.timestamp_ms.unwrap_or(now), now) {
                    debug!(partition = r.partition, offset = r.offset, error = %err, "Prediction skipped.");
                    metrics.invalid_predictions.inc();
                    invalid_prediction = Some(err.to_string());
                }
            }
            record = labels.next(), if labels_open => {
                let Some(r) = received(record).await else { continue };
                let outcome = join.label(r.key.as_deref(), r.payload.as_deref().unwrap_or_default(), now_ms());
                debug!(partition = r.partition, offset = r.offset, ?outcome, "Label.");
            }
        }
    }
    info!("Label join stopped.");
}

/// The record, or None after logging a receive error (and a short pause: the
/// error is usually a broker away, which the Kafka client reconnects to by itself).
async fn received(record: Result<FollowedRecord, KafkaError>) -> Option<FollowedRecord> {
    match record {
        Ok(r) => Some(r),
        Err(err) => {
            warn!(error = %err, "Label join: Kafka receive error; retrying.");
            tokio::time::sleep(Duration::from_millis(500)).await;
            None
        }
    }
}
