//! The label join's Kafka side: follows the predictions and labels topics from
//! `now - retrain.join_window_s` and feeds [`LabelJoin`] (see [`super::join`] for
//! what the join keeps and why it is rebuilt rather than stored).
//!
//! Start-up replays the predictions first and only then the labels, so a label in
//! the window finds its prediction instead of waiting for it. A broker that cannot
//! be reached is retried with a growing pause; the webhook does not wait for it.
//!
//! The join itself (parsing, joining, scoring) runs on a thread of its own, fed by
//! a bounded channel of [`JOIN_QUEUE`] records: its CPU work never holds up the
//! async runtime (the webhook, /healthz and /metrics keep answering), and a join
//! that falls behind slows the reading of the topics instead of piling records up.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::{debug, error, info, warn};

use super::cards::PromiseBook;
use super::join::{JoinLimits, LabelJoin};
use super::metrics::PerformanceMetrics;
use super::race::RaceBook;
use crate::clock::now_ms;
use crate::kafka::{
    FollowFrom, FollowedRecord, Follower, KafkaError, KafkaSettings, start_with_retry,
};

/// How often expiry runs and the metrics are updated.
const TICK: Duration = Duration::from_secs(1);
/// Start-up replay of the predictions ends when it has read the backlog, or when
/// nothing came for this long (a partition whose end cannot be seen).
const REPLAY_IDLE: Duration = Duration::from_secs(3);
/// Records on their way to the join's thread, at most.
pub const JOIN_QUEUE: usize = 1024;

/// What the join's thread is fed.
enum Input {
    Prediction(FollowedRecord),
    Label(FollowedRecord),
    /// Expire, and publish the metrics.
    Tick,
}

/// Runs the join until `shutdown` resolves. Returns at once when
/// `kafka.labels_topic` is empty. `promises` reads each version's card to check its
/// window against (on the join's thread: a registry read never holds up the runtime);
/// `races` checks each live race (champion against its challenger in shadow).
pub async fn run(
    kafka: KafkaSettings,
    limits: JoinLimits,
    promises: PromiseBook,
    races: RaceBook,
    metrics: PerformanceMetrics,
    shutdown: impl Future<Output = ()>,
) {
    if kafka.labels_topic.is_empty() {
        info!("kafka.labels_topic is empty: no label join, no triage_performance_* scores.");
        return;
    }
    tokio::pin!(shutdown);
    let start = || {
        let (kafka, window_ms, max_predictions) =
            (&kafka, limits.window_ms, limits.max_predictions);
        async move {
            let since_ms = now_ms().saturating_sub(window_ms);
            let predictions = Follower::start(
                kafka,
                vec![FollowFrom {
                    topic: kafka.predictions_topic.clone(),
                    since_ms,
                    // The join keeps the newest max_predictions: older ones would
                    // be forgotten as soon as they were read.
                    at_most_per_partition: i64::try_from(max_predictions).ok(),
                }],
            )
            .await?;
            let labels = Follower::start(
                kafka,
                vec![FollowFrom {
                    topic: kafka.labels_topic.clone(),
                    since_ms,
                    at_most_per_partition: None,
                }],
            )
            .await?;
            Ok((since_ms, predictions, labels))
        }
    };
    let Some((since_ms, mut predictions, mut labels)) =
        start_with_retry("Label join", "the webhook", shutdown.as_mut(), start).await
    else {
        return;
    };
    info!(
        predictions = %kafka.predictions_topic,
        labels = %kafka.labels_topic,
        since = %humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(since_ms.max(0) as u64)),
        "Label join: replaying predictions, then labels."
    );

    let (feed, inbox) = mpsc::channel(JOIN_QUEUE);
    let worker = match std::thread::Builder::new()
        .name("label-join".into())
        .spawn(move || join_thread(limits, promises, races, metrics, inbox))
    {
        Ok(worker) => worker,
        Err(err) => {
            error!(error = %err, "Label join: cannot start its thread; no triage_performance_* scores.");
            return;
        }
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut labels_open = false;
    let mut last_prediction = Instant::now();
    loop {
        if !labels_open && (predictions.caught_up() || last_prediction.elapsed() > REPLAY_IDLE) {
            labels_open = true;
            info!("Label join: predictions replayed; reading labels.");
        }
        // Not biased between the topics: neither may starve the other.
        let input = tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => Input::Tick,
            record = predictions.next() => {
                last_prediction = Instant::now();
                let Some(r) = received(record).await else { continue };
                Input::Prediction(r)
            }
            record = labels.next(), if labels_open => {
                let Some(r) = received(record).await else { continue };
                Input::Label(r)
            }
        };
        // A full queue waits here: the join's pace is the read's pace.
        let sent = tokio::select! {
            () = &mut shutdown => break,
            sent = feed.send(input) => sent,
        };
        if sent.is_err() {
            error!("Label join: its thread stopped; no more triage_performance_* updates.");
            break;
        }
    }
    drop(feed);
    let joined = tokio::task::spawn_blocking(move || worker.join()).await;
    if !matches!(joined, Ok(Ok(()))) {
        error!("Label join: its thread panicked.");
    }
    info!("Label join stopped.");
}

/// The join's own thread: takes records and ticks until the channel closes.
fn join_thread(
    limits: JoinLimits,
    mut promises: PromiseBook,
    mut races: RaceBook,
    metrics: PerformanceMetrics,
    mut inbox: mpsc::Receiver<Input>,
) {
    let mut join = LabelJoin::new(limits);
    let mut shown = BTreeSet::new();
    let mut shown_races = BTreeSet::new();
    let mut shown_confidence = BTreeSet::new();
    let mut invalid_prediction: Option<String> = None;
    while let Some(input) = inbox.blocking_recv() {
        match input {
            Input::Tick => {
                let now = now_ms();
                join.expire(now);
                let checks = promises.checks(&join);
                let other = metrics.publish(&mut join, &checks, &mut shown);
                let race_checks = races.checks(&join, now);
                metrics.publish_races(&race_checks, &mut shown_races);
                let confidence = races.confidence_checks(&join);
                metrics.publish_confidence(&confidence, &mut shown_confidence);
                metrics.race_dropped.inc_by(join.take_race_dropped());
                let (invalid_shadows, why) = join.take_invalid_shadows();
                metrics.invalid_shadows.inc_by(invalid_shadows);
                if let Some(error) = why {
                    warn!(%error, shadows = invalid_shadows, total = metrics.invalid_shadows.get(), "Shadow predictions ignored by the label join (the champion's were taken).");
                }
                if other > 0 {
                    warn!(
                        labels = other,
                        max = limits.max_unknown_classes,
                        total = metrics.other_class.get(),
                        "Late labels counted as class \"other\": their version holds retrain.join_max_unknown_classes classes outside its label set already."
                    );
                }
                if let Some(error) = invalid_prediction.take() {
                    warn!(%error, total = metrics.invalid_predictions.get(), "Prediction records skipped by the label join.");
                }
            }
            Input::Prediction(r) => {
                let now = now_ms();
                let payload = r.payload.as_deref().unwrap_or_default();
                if let Err(err) = join.prediction(payload, r.timestamp_ms.unwrap_or(now), now) {
                    debug!(partition = r.partition, offset = r.offset, error = %err, "Prediction skipped.");
                    metrics.invalid_predictions.inc();
                    invalid_prediction = Some(err.to_string());
                }
            }
            Input::Label(r) => {
                let outcome = join.label(
                    r.key.as_deref(),
                    r.payload.as_deref().unwrap_or_default(),
                    now_ms(),
                );
                debug!(
                    partition = r.partition,
                    offset = r.offset,
                    ?outcome,
                    "Label."
                );
            }
        }
    }
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
