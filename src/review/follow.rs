//! The review queue's Kafka side: follows `kafka.review_topic` and
//! `kafka.labels_topic` from `now - review.queue_window_s` (every partition, no
//! consumer group: each replica reads everything) and feeds the [`Desk`]'s queue:
//! a review record joins it, a label (from a reviewer on any replica, or from any
//! other source) takes its message off. The two topics are read side by side; the
//! queue remembers answered ids, so the order does not matter.
//!
//! A broker that cannot be reached is retried with a growing pause; the page keeps
//! answering meanwhile (with the queue it has).

use std::future::Future;
use std::time::{Duration, UNIX_EPOCH};

use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use super::Desk;
use super::queue::{Offered, label_ref};
use crate::clock::now_ms;
use crate::kafka::{FollowFrom, Follower, KafkaSettings, start_with_retry};

/// How often the queue's gauges are set.
const TICK: Duration = Duration::from_secs(1);

/// Follows the two topics into `desk` until `shutdown` resolves. Returns at once
/// when `kafka.review_topic` is empty (no queue).
pub async fn run(
    kafka: KafkaSettings,
    window: Duration,
    desk: Desk,
    shutdown: impl Future<Output = ()>,
) {
    if kafka.review_topic.is_empty() {
        return;
    }
    tokio::pin!(shutdown);
    let start = || {
        let kafka = &kafka;
        async move {
            let since_ms =
                now_ms().saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
            let mut from = vec![FollowFrom {
                topic: kafka.review_topic.clone(),
                since_ms,
                at_most_per_partition: None,
            }];
            if !kafka.labels_topic.is_empty() {
                from.push(FollowFrom {
                    topic: kafka.labels_topic.clone(),
                    since_ms,
                    at_most_per_partition: None,
                });
            }
            Ok((since_ms, Follower::start(kafka, from).await?))
        }
    };
    let Some((since_ms, mut follower)) =
        start_with_retry("Review queue", "the stream", shutdown.as_mut(), start).await
    else {
        return;
    };
    info!(
        review = %kafka.review_topic,
        labels = %kafka.labels_topic,
        since = %humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(since_ms.max(0) as u64)),
        "Review queue: reading the review and labels topics."
    );
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut invalid: Option<&'static str> = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {
                desk.publish(now_ms());
                if let Some(why) = invalid.take() {
                    warn!(why, total = desk.metrics.records.with_label_values(&["invalid"]).get(), "Review records skipped.");
                }
            }
            record = follower.next() => match record {
                Ok(r) => {
                    let payload = r.payload.as_deref().unwrap_or_default();
                    if r.topic == kafka.review_topic {
                        let offered = desk.with_queue(|q| q.offer(payload, r.timestamp_ms.unwrap_or_else(now_ms)));
                        if let Offered::Invalid(why) = offered {
                            debug!(partition = r.partition, offset = r.offset, why, "Review record skipped.");
                            invalid = Some(why);
                        }
                        desk.metrics.records.with_label_values(&[offered.as_str()]).inc();
                    } else if let Some(label) = label_ref(r.key.as_deref(), payload) {
                        desk.with_queue(|q| {
                            q.answer(&label.id);
                            if let Some(at) = label.reviewed_ms {
                                q.note_review_answer(at, now_ms());
                            }
                        });
                    }
                }
                Err(err) => {
                    warn!(error = %err, "Review queue: Kafka receive error; retrying.");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
        }
    }
    info!("Review queue stopped.");
}
