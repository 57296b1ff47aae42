//! The inference pipeline over any [`Source`] and [`Sink`]: one loop windows the
//! messages, and each closed window becomes a task that decodes and validates,
//! classifies on the workers, encodes the records, and then, in window order,
//! writes them and acknowledges the window's positions. Acknowledgements follow
//! writes, so a crash anywhere means duplicates after a restart, never loss.
//!
//! Our own failures are not data: when classification fails, each message is tried
//! alone, and a known-good text with it. A message that fails alone twice while that
//! text classifies is at fault and goes to the dead letters (`classification_failed`);
//! when the known-good text fails too, no worker can classify, and the
//! window waits for them (unacknowledged, nothing read meanwhile) up to
//! `stream.worker_outage_timeout_ms`, then the pipeline stops with an error.
//!
//! The loop has clear priorities (`select! { biased; }`): shutdown, then a sink
//! failure, then the window timer, then a worker handing a window back, then new
//! messages. Waiting for a free window slot (`max_in_flight_windows`) is the
//! backpressure: meanwhile nothing is read.
//!
//! Continuous batching (`stream.continuous_batching`, on by default): an open window
//! goes to the workers as soon as one of them is idle (fewer windows at the workers
//! than workers), so at light load a message is embedded as soon as it is read; while
//! every worker is busy the window keeps collecting, up to `max_messages` or
//! `max_wait`, the upper bounds either way. Off, a window waits for one of those.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::decode::{Decoded, Decoder, Rejection};
use super::records::{self, Timings};
use super::window::{AtWorkers, Held, WindowBuffer, dispatch_now};
use super::worker::{self, Classified, WorkerError, WorkerHandle};
use crate::clock::WallClock;
use crate::metrics::Metrics;
use crate::stream::envelope;
use crate::stream::state::{PipelineState, Totals};
use crate::stream::{Acknowledge, Message, Position, Record, Sink, SinkError, Source, SourceError};

/// How windows are cut and how many may be in flight.
#[derive(Debug, Clone)]
pub struct WindowSettings {
    pub max_messages: usize,
    pub max_wait: Duration,
    pub max_in_flight: usize,
    /// Hand an open window to the workers as soon as one is idle (continuous
    /// batching); false: only when it is full or its time is up.
    pub continuous: bool,
    /// On shutdown, how long in-flight windows may take to be written.
    pub drain_timeout: Duration,
}

/// Why a pipeline stopped before its source ended or shutdown was asked for.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}; the window was not acknowledged and will be read again after a restart")]
    Sink(#[from] SinkError),
    #[error(
        "no classification worker could classify for {waited_s:.0} s (stream.worker_outage_timeout_ms): {last}; the window was not acknowledged and will be read again after a restart"
    )]
    Workers { waited_s: f64, last: String },
}

/// What every window task shares: the decoder, the workers, metrics and state.
pub struct Pipeline {
    pub worker: WorkerHandle,
    pub decoder: Decoder,
    pub metrics: Arc<Metrics>,
    pub state: Arc<PipelineState>,
    /// Write a feature record per prediction.
    pub features: bool,
    /// Write a review record per prediction routed to review.
    pub review: bool,
    /// How long a window waits for the workers when none can classify.
    pub worker_outage: Duration,
}

/// Runs until the source ends (every window written), `shutdown` resolves (in-flight
/// windows drained within the deadline), or a sink fails for good.
pub async fn run<S: Source, K: Sink>(
    pipeline: Arc<Pipeline>,
    settings: &WindowSettings,
    source: &mut S,
    sink: K,
    shutdown: impl Future<Output = ()>,
) -> Result<Totals, PipelineError> {
    let (fatal, mut failed) = mpsc::channel::<PipelineError>(1);
    let mut windows = Windows {
        pipeline: pipeline.clone(),
        sink,
        ack: source.acknowledger(),
        permits: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
        next_id: 0,
        last: None,
        fatal,
        tasks: JoinSet::new(),
        at_workers: AtWorkers::new(),
    };
    let workers = pipeline.worker.workers();
    let mut buffer: WindowBuffer<Message> =
        WindowBuffer::new(settings.max_messages, settings.max_wait);
    tokio::pin!(shutdown);
    // Borrowed by the select below while `windows` flushes.
    let at_workers = windows.at_workers.clone();

    let stopped: Result<Ending, PipelineError> = loop {
        if settings.continuous && dispatch_now(buffer.len(), windows.at_workers.count(), workers) {
            windows.flush(&mut buffer).await;
            continue;
        }
        // Only while all workers are busy with an open window: wake when one is free.
        let waiting = settings.continuous && !buffer.is_empty();
        let deadline = buffer.deadline();
        let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(
            deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
        ));
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(Ending::Shutdown),
            Some(err) = failed.recv() => break Err(err),
            _ = timer, if deadline.is_some() => windows.flush(&mut buffer).await,
            // Checked again at the top of the loop.
            _ = at_workers.freed(), if waiting => {}
            next = source.next() => match next {
                Ok(Some(message)) => {
                    pipeline
                        .metrics
                        .messages_in
                        .with_label_values(&[message.position.stream()])
                        .inc();
                    if buffer.push(message, Instant::now()) {
                        windows.flush(&mut buffer).await;
                    }
                }
                Ok(None) => break Ok(Ending::Exhausted),
                Err(err) => break Err(err.into()),
            },
        }
    };

    match &stopped {
        Ok(ending) => {
            info!(open_window = buffer.len(), reason = ?ending, "Draining in-flight windows.");
            windows.flush(&mut buffer).await;
        }
        Err(err) => {
            warn!(error = %err, "Pipeline failed; nothing more is written or acknowledged.")
        }
    }
    let drained = match (&stopped, windows.last.take()) {
        (_, None) => true,
        // A file is done when its last window is written, however long that takes.
        (Ok(Ending::Exhausted), Some(last)) => last.await.is_ok(),
        (_, Some(last)) => matches!(
            tokio::time::timeout(settings.drain_timeout, last).await,
            Ok(Ok(()))
        ),
    };
    if !drained && stopped.is_ok() && failed.is_empty() {
        warn!("Drain deadline passed; unacknowledged windows will be read again after restart.");
    }
    // Windows still running (after a failure, or past the drain deadline) stop here,
    // unacknowledged: none outlives the pipeline (waiting for workers, counted in
    // triage_worker_outage, or holding a permit).
    windows.tasks.shutdown().await;
    let stopped = match (stopped, failed.try_recv()) {
        (Ok(_), Ok(err)) => Err(err),
        (stopped, _) => stopped,
    };
    stopped.map(|_| pipeline.state.totals())
}

#[derive(Debug)]
enum Ending {
    Shutdown,
    Exhausted,
}

/// Hands closed windows to tasks and chains them, so that they are written and
/// acknowledged in window order.
struct Windows<K, A> {
    pipeline: Arc<Pipeline>,
    sink: K,
    ack: A,
    permits: Arc<Semaphore>,
    next_id: u64,
    /// Resolves when the newest window is written: Err if it, or one before it, failed.
    last: Option<oneshot::Receiver<()>>,
    fatal: mpsc::Sender<PipelineError>,
    /// The window tasks; finished ones are reaped at each flush.
    tasks: JoinSet<()>,
    /// Windows at the workers, not yet classified.
    at_workers: Arc<AtWorkers>,
}

impl<K: Sink, A: Acknowledge> Windows<K, A> {
    async fn flush(&mut self, buffer: &mut WindowBuffer<Message>) {
        let opened = buffer.opened_at().unwrap_or_else(Instant::now);
        let (messages, arrivals) = buffer.take();
        if messages.is_empty() {
            return;
        }
        // Waiting here is the backpressure: no new messages are read meanwhile.
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        self.next_id += 1;
        let (done, next) = oneshot::channel();
        let task = WindowTask {
            id: self.next_id,
            messages,
            arrivals,
            opened,
            held: self.at_workers.hold(),
            previous: self.last.replace(next),
            done,
            _permit: permit,
            _in_flight: InFlight::start(self.pipeline.state.clone()),
        };
        while self.tasks.try_join_next().is_some() {}
        self.tasks.spawn(task.run(
            self.pipeline.clone(),
            self.sink.clone(),
            self.ack.clone(),
            self.fatal.clone(),
        ));
    }
}

/// Counts a window in flight until it is dropped, however its task ends.
struct InFlight(Arc<PipelineState>);

impl InFlight {
    fn start(state: Arc<PipelineState>) -> Self {
        state.window_started();
        Self(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.window_finished();
    }
}

struct WindowTask {
    id: u64,
    messages: Vec<Message>,
    /// When each message was read.
    arrivals: Vec<Instant>,
    opened: Instant,
    /// Counts the window at the workers until they have classified it.
    held: Held,
    previous: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
    _permit: OwnedSemaphorePermit,
    _in_flight: InFlight,
}

impl WindowTask {
    async fn run<K: Sink, A: Acknowledge>(
        self,
        pipeline: Arc<Pipeline>,
        sink: K,
        ack: A,
        fatal: mpsc::Sender<PipelineError>,
    ) {
        let window = Window {
            id: self.id,
            opened: self.opened,
            arrivals: &self.arrivals,
            dispatched: Instant::now(),
        };
        let produced = match pipeline
            .process(&self.messages, window, Some(self.held))
            .await
        {
            Ok(produced) => produced,
            Err(err) => {
                let _ = fatal.try_send(err);
                return;
            }
        };
        // Workers may finish windows out of order: records are written, and
        // positions acknowledged, in window order, so a partition keeps its order.
        if let Some(previous) = self.previous
            && previous.await.is_err()
        {
            debug!(
                window = self.id,
                "An earlier window failed; this one is not written."
            );
            return;
        }
        let started = Instant::now();
        if let Err(err) = sink.write(produced.records).await {
            let _ = fatal.try_send(err.into());
            return;
        }
        pipeline.stage("produce", started.elapsed());
        let positions = self.messages.iter().map(|m| m.position.clone());
        ack.ack(&Position::last_per_partition(positions));
        pipeline.written(&self.messages, &produced.labels, &produced.dead_letters);
        debug!(
            window = self.id,
            messages = self.messages.len(),
            predictions = produced.labels.len(),
            "Window acknowledged."
        );
        let _ = self.done.send(());
    }
}

/// What a window produced, before it is written.
struct Produced {
    records: Vec<Record>,
    /// (label, model version) per prediction.
    labels: Vec<(String, String, super::Route)>,
    /// Reason per dead letter.
    dead_letters: Vec<&'static str>,
}

type Rows = Vec<(usize, Decoded)>;

/// A window's identity and clock: what its records report of it.
struct Window<'a> {
    id: u64,
    /// When its first message was read.
    opened: Instant,
    /// When each message was read (empty: not known, e.g. in tests).
    arrivals: &'a [Instant],
    /// When the loop closed it and handed it on.
    dispatched: Instant,
}

impl Pipeline {
    fn stage(&self, name: &str, d: Duration) {
        self.metrics
            .stage_seconds
            .with_label_values(&[name])
            .observe(d.as_secs_f64());
    }

    /// Decodes, classifies and encodes one window; fails only when no worker can
    /// classify for `worker_outage`.
    async fn process(
        &self,
        messages: &[Message],
        window: Window<'_>,
        held: Option<Held>,
    ) -> Result<Produced, PipelineError> {
        let (window_id, opened) = (window.id, window.opened);
        let started = Instant::now();
        let (valid, mut rejected) = self.decode(messages);
        let decode = started.elapsed();
        self.stage("decode", decode);

        let (classified, failed) =
            classify_all(&self.worker, valid, rejected.len(), self.worker_outage).await?;
        // The workers are done with it: the loop may hand them the next window.
        drop(held);
        // Instants as wall-clock time (µs since the epoch), for the latency breakdown.
        let wall = WallClock::now();
        let ready = Instant::now();
        let ready_at_us = wall.us(ready);
        // From the window's first message read to predictions ready: what the
        // service adds, whatever the backlog. Under overload it stays bounded while
        // the backlog grows (stream.max_in_flight_windows, stream.worker_queue).
        let in_service = opened.elapsed();
        self.stage("in_service", in_service);

        let mut produced = Produced {
            records: Vec::with_capacity(messages.len() * (1 + usize::from(self.features))),
            labels: Vec::with_capacity(messages.len()),
            dead_letters: Vec::new(),
        };
        let limits = self.decoder.limits();
        for (batch, rows) in &classified {
            self.stage("embed", batch.times.embed);
            self.stage("classify", batch.times.classify);
            let mut timings = Timings {
                decode,
                embed: batch.times.embed,
                classify: batch.times.classify,
                in_service,
                ..Timings::default()
            };
            for (row, (i, decoded)) in rows.iter().enumerate() {
                let message = &messages[*i];
                if let Some(&read) = window.arrivals.get(*i) {
                    timings.read = Some(crate::inference::records::MessageClock {
                        window: window.dispatched.saturating_duration_since(read),
                        since_read: ready.duration_since(read),
                        read_at_us: wall.us(read),
                        ready_at_us,
                    });
                }
                let labelled = &batch.labelled[row];
                let mut outputs = vec![records::prediction(
                    message, decoded, labelled, window_id, &timings,
                )];
                if self.review && labelled.route == super::Route::Review {
                    outputs.push(records::review(message, decoded, labelled, window_id));
                }
                if self.features {
                    outputs.push(records::feature(
                        message,
                        decoded,
                        &batch.embeddings[row],
                        &batch.model_version,
                    ));
                }
                // Config validation leaves room for a valid message's outputs; this is
                // the guarantee: no record the sink is given can be refused as too large.
                if let Some(big) = outputs.iter().find(|r| !limits.fits(r)) {
                    rejected.push((
                        *i,
                        Rejection {
                            reason: "output_too_large",
                            detail: format!(
                                "its {:?} record would be {} bytes, over the producer's limit of {} (message.max.bytes)",
                                big.kind,
                                envelope::record_bytes(big),
                                limits.max_record_bytes
                            ),
                        },
                    ));
                    continue;
                }
                produced.labels.push((
                    labelled.label.clone(),
                    batch.model_version.clone(),
                    labelled.route,
                ));
                produced.records.extend(outputs);
            }
        }
        let now = SystemTime::now();
        for (i, why) in rejected.into_iter().chain(failed) {
            produced.dead_letters.push(why.reason);
            let (record, bounded) = records::dead_letter(&messages[i], &why, now, limits);
            for (part, was) in [("key", bounded.key), ("headers", bounded.headers)] {
                if was {
                    self.metrics.dlq_bounded.with_label_values(&[part]).inc();
                }
            }
            if bounded.payload {
                self.metrics.dlq_truncated.inc();
            }
            produced.records.push(record);
        }
        Ok(produced)
    }

    /// Valid messages (with their index in the window) and rejected ones.
    fn decode(&self, messages: &[Message]) -> (Rows, Vec<(usize, Rejection)>) {
        let mut valid = Vec::with_capacity(messages.len());
        let mut rejected = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            match self.decoder.decode_message(m) {
                Ok(d) => valid.push((i, d)),
                Err(why) => rejected.push((i, why)),
            }
        }
        (valid, rejected)
    }

    /// Metrics and totals of a written window.
    fn written(
        &self,
        messages: &[Message],
        labels: &[(String, String, super::Route)],
        dead: &[&'static str],
    ) {
        let m = &self.metrics;
        let now_ms = crate::clock::now_ms();
        for ts in messages.iter().filter_map(|m| m.timestamp_ms) {
            m.end_to_end_seconds
                .observe(((now_ms - ts).max(0) as f64) / 1e3);
        }
        for (label, version, route) in labels {
            m.predictions.with_label_values(&[label, version]).inc();
            m.routes.with_label_values(&[route.as_str(), version]).inc();
        }
        for reason in dead {
            m.dlq.with_label_values(&[reason]).inc();
        }
        m.windows.inc();
        m.window_size.observe(messages.len() as f64);
        self.state.count(messages.len(), labels.len(), dead.len());
    }
}

/// A text any working model classifies: the probe that tells a message at fault
/// from workers that cannot classify at all.
const KNOWN_GOOD: &str = "hello, this is a short message";
/// A message is dead-lettered after failing alone this many times, each time while
/// the known-good text classified.
const POISON_AFTER: u32 = 2;

/// Classifies a window's valid messages. If the whole batch fails, each message is
/// tried alone, so one bad message goes to the dead letters instead of stalling
/// its partition; but a message is dead-lettered only when it fails alone twice
/// while a known-good text classifies. Otherwise the workers are down: the message is tried
/// again once they are back, and after `outage` the window fails.
async fn classify_all(
    worker: &WorkerHandle,
    valid: Rows,
    invalid: usize,
    outage: Duration,
) -> Result<(Vec<(Classified, Rows)>, Vec<(usize, Rejection)>), PipelineError> {
    if valid.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let texts: Vec<String> = valid.iter().map(|(_, d)| d.text.clone()).collect();
    let observe = worker::Observe {
        truth: valid.iter().map(|(_, d)| d.label.clone()).collect(),
        invalid,
    };
    let err = match worker.classify_window(texts, observe).await {
        Ok(c) => return Ok((vec![(c, valid)], Vec::new())),
        Err(err) => err,
    };
    warn!(error = %err, messages = valid.len(), "Window classification failed; retrying one message at a time.");
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (i, d) in valid {
        // Failures of this message alone while a known-good text classified: one
        // can be a worker dying just then; two are the message.
        let mut its_own = 0;
        loop {
            let err = match worker.classify(vec![d.text.clone()]).await {
                Ok(c) => {
                    ok.push((c, vec![(i, d)]));
                    break;
                }
                Err(err) => err,
            };
            if worker.classify(vec![KNOWN_GOOD.into()]).await.is_err() {
                wait_for_workers(worker, outage, &err).await?;
                continue;
            }
            its_own += 1;
            if its_own == POISON_AFTER {
                failed.push((
                    i,
                    Rejection {
                        reason: "classification_failed",
                        detail: err.to_string(),
                    },
                ));
                break;
            }
        }
    }
    Ok((ok, failed))
}

/// Waits until a known-good text classifies again, at most `outage`; meanwhile
/// the window counts in `triage_worker_outage` (and `/readyz` says not ready).
async fn wait_for_workers(
    worker: &WorkerHandle,
    outage: Duration,
    first: &WorkerError,
) -> Result<(), PipelineError> {
    let metrics = worker.metrics();
    let started = Instant::now();
    // A count, not a flag: several windows may wait at once, and the outage lasts
    // until the last of them is through. Held by a guard: a window dropped while it
    // waits (the pipeline stopping on another window's error) leaves the count too.
    let _waiting = OutageWait::start(&metrics.worker_outage);
    error!(error = %first, wait_s = outage.as_secs_f64(), "No worker can classify a known-good text; the window waits for the workers, unacknowledged.");
    let mut backoff = Duration::from_millis(100);
    let mut last = first.to_string();
    loop {
        if started.elapsed() >= outage {
            break Err(PipelineError::Workers {
                waited_s: started.elapsed().as_secs_f64(),
                last,
            });
        }
        tokio::time::sleep(backoff.min(outage.saturating_sub(started.elapsed()))).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        match worker.classify(vec![KNOWN_GOOD.into()]).await {
            Ok(_) => {
                info!(
                    waited_s = started.elapsed().as_secs_f64(),
                    "The workers classify again."
                );
                break Ok(());
            }
            Err(err) => last = err.to_string(),
        }
    }
}

/// One window in `triage_worker_outage` for as long as it lives.
struct OutageWait(prometheus::IntGauge);

impl OutageWait {
    fn start(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for OutageWait {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tokio::sync::mpsc::UnboundedSender;

    use super::*;
    use crate::inference::testing::{self, Event, Log, MemorySink, MemorySource};
    use crate::stream::RecordKind;

    fn offset(p: &Position) -> i64 {
        match p {
            Position::Log { offset, .. } => *offset,
            Position::Line { line, .. } => *line as i64,
        }
    }

    /// The offsets written so far, and each acknowledgement with the offsets that
    /// had been written before it.
    fn replay(log: &Log) -> (Vec<i64>, Vec<(i64, Vec<i64>)>) {
        let mut written: Vec<i64> = Vec::new();
        let mut acks = Vec::new();
        for event in log.lock().unwrap().iter() {
            match event {
                Event::Wrote(records) => {
                    written.extend(records.iter().filter_map(|r| match &r.kind {
                        RecordKind::Prediction => {
                            let v: serde_json::Value =
                                serde_json::from_slice(r.payload.as_deref()?).ok()?;
                            v["source"]["offset"].as_i64()
                        }
                        RecordKind::DeadLetter { position, .. } => Some(offset(position)),
                        RecordKind::Feature | RecordKind::Review => None,
                    }))
                }
                Event::Acked(last) => acks.push((offset(&last[0]), written.clone())),
            }
        }
        (written, acks)
    }

    fn kinds(log: &Log) -> HashMap<&'static str, usize> {
        let mut n = HashMap::new();
        for event in log.lock().unwrap().iter() {
            if let Event::Wrote(records) = event {
                for r in records {
                    let k = match r.kind {
                        RecordKind::Prediction => "prediction",
                        RecordKind::Feature => "feature",
                        RecordKind::Review => "review",
                        RecordKind::DeadLetter { reason, .. } => reason,
                    };
                    *n.entry(k).or_default() += 1;
                }
            }
        }
        n
    }

    fn predictions(log: &Log) -> Vec<serde_json::Value> {
        let log = log.lock().unwrap();
        log.iter()
            .filter_map(|e| match e {
                Event::Wrote(r) => Some(r),
                Event::Acked(_) => None,
            })
            .flatten()
            .filter(|r| r.kind == RecordKind::Prediction)
            .map(|r| serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap())
            .collect()
    }

    /// A trained champion in a temporary registry, and the event log of a run.
    struct Rig {
        _dir: tempfile::TempDir,
        settings: crate::config::Settings,
        log: Log,
        faults: Arc<testing::Faults>,
        /// The pipeline of the last run.
        ran: std::sync::Mutex<Option<Arc<Pipeline>>>,
    }

    impl Rig {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let settings = testing::settings(dir.path());
            testing::train_champion(&settings, 0);
            Self {
                _dir: dir,
                settings,
                log: Log::default(),
                faults: Arc::default(),
                ran: Default::default(),
            }
        }

        fn metrics(&self) -> Arc<Metrics> {
            self.ran.lock().unwrap().as_ref().unwrap().metrics.clone()
        }

        /// A source holding `payloads` at offsets 0.., open until the sender drops.
        fn source(&self, payloads: &[String]) -> (UnboundedSender<Message>, MemorySource) {
            let (tx, source) = MemorySource::new(self.log.clone());
            for (i, payload) in payloads.iter().enumerate() {
                tx.send(testing::message(i as i64, payload)).unwrap();
            }
            (tx, source)
        }

        async fn run(
            &self,
            source: &mut MemorySource,
            windows_of: usize,
            fail_on: Option<usize>,
        ) -> Result<Totals, PipelineError> {
            self.run_with(source, &testing::windows(windows_of), fail_on)
                .await
        }

        async fn run_with(
            &self,
            source: &mut MemorySource,
            windows: &WindowSettings,
            fail_on: Option<usize>,
        ) -> Result<Totals, PipelineError> {
            let sink = MemorySink::new(self.log.clone(), fail_on);
            let pipeline = testing::pipeline_with(&self.settings, self.faults.clone());
            *self.ran.lock().unwrap() = Some(pipeline.clone());
            run(pipeline, windows, source, sink, std::future::pending()).await
        }

        /// Runs `payloads` to the end of the source.
        async fn run_all(&self, payloads: &[String], windows_of: usize) -> Totals {
            let (tx, mut source) = self.source(payloads);
            drop(tx);
            self.run(&mut source, windows_of, None).await.unwrap()
        }
    }

    fn reviews(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| testing::review(i).0).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_message_is_written_once_and_acknowledged_only_after_its_window() {
        let rig = Rig::new();
        let mut payloads = reviews(1000..1040);
        let expected_labels: Vec<&str> = (1000..1040)
            .filter(|i| ![1007, 1013, 1021].contains(i))
            .map(|i| testing::review(i).1)
            .collect();
        payloads[7] = "not json".into();
        payloads[13] = r#"{"text": "   "}"#.into();
        payloads[21] = r#"{"stars": 5}"#.into();
        let totals = rig.run_all(&payloads, 4).await;
        assert_eq!(
            (totals.messages, totals.predictions, totals.dead_letters),
            (40, 37, 3)
        );

        let log = &rig.log;
        let k = kinds(log);
        assert_eq!(k["prediction"], 37);
        assert_eq!(k["feature"], 37);
        assert_eq!(
            (k["not_json"], k["empty_text"], k["missing_text"]),
            (1, 1, 1)
        );
        // In order, and each acknowledgement only after its messages were written.
        let (written, acks) = replay(log);
        let mut sorted = written.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..40).collect::<Vec<_>>(), "each message once");
        assert_eq!(acks.len(), 10, "one acknowledgement per window of 4");
        let mut previous = -1;
        for (acked, before) in &acks {
            assert!(*acked > previous, "acknowledged in order");
            assert!(
                (0..=*acked).all(|o| before.contains(&o)),
                "offset {acked} acknowledged before everything up to it was written"
            );
            previous = *acked;
        }
        let got: Vec<String> = predictions(log)
            .iter()
            .map(|p| p["label"].as_str().unwrap().to_string())
            .collect();
        let right = got
            .iter()
            .zip(&expected_labels)
            .filter(|(a, b)| a == *b)
            .count();
        assert!(right >= 35, "{right}/37 labels right: {got:?}");
    }

    /// Continuous windows of up to `max_messages`, with a time limit no test reaches.
    fn continuous(max_messages: usize) -> WindowSettings {
        WindowSettings {
            continuous: true,
            max_wait: Duration::from_secs(3600),
            ..testing::windows(max_messages)
        }
    }

    /// Each prediction's window id, in the order written.
    fn window_ids(log: &Log) -> Vec<u64> {
        predictions(log)
            .iter()
            .map(|p| p["window_id"].as_u64().unwrap())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_continuous_batching_every_message_is_written_once_and_acknowledged_in_order() {
        let rig = Rig::new();
        let mut payloads = reviews(2000..2050);
        payloads[9] = "not json".into();
        let (tx, mut source) = rig.source(&payloads);
        drop(tx);
        let totals = rig
            .run_with(&mut source, &continuous(8), None)
            .await
            .unwrap();
        assert_eq!(
            (totals.messages, totals.predictions, totals.dead_letters),
            (50, 49, 1)
        );
        let (written, acks) = replay(&rig.log);
        let mut sorted = written.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>(), "each message once");
        let mut previous = -1;
        for (acked, before) in &acks {
            assert!(*acked > previous, "acknowledged in order");
            assert!((0..=*acked).all(|o| before.contains(&o)));
            previous = *acked;
        }
        assert_eq!(previous, 49, "everything acknowledged");
        // Windows are cut by the workers' pace, never past max_messages, and written
        // in window order.
        let ids = window_ids(&rig.log);
        assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");
        let mut sizes: HashMap<u64, usize> = HashMap::new();
        for id in &ids {
            *sizes.entry(*id).or_default() += 1;
        }
        assert!(sizes.values().all(|&n| n <= 8), "{sizes:?}");
        // Each prediction says how long its message waited in its window.
        for p in predictions(&rig.log) {
            let t = &p["timings_ms"];
            assert!(t["window"].as_f64().unwrap() >= 0.0, "{t}");
            assert!(t["since_read"].as_f64().unwrap() >= t["window"].as_f64().unwrap());
            assert!(t["ready_at_us"].as_i64().unwrap() >= t["read_at_us"].as_i64().unwrap());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_continuous_batching_a_message_read_while_a_worker_is_idle_does_not_wait_for_its_window_to_fill()
     {
        let rig = Arc::new(Rig::new());
        // Windows of up to 64 or an hour: only the idle worker can close them.
        let (tx, mut source) = rig.source(&[]);
        let running = {
            let rig = rig.clone();
            tokio::spawn(async move { rig.run_with(&mut source, &continuous(64), None).await })
        };
        for (i, payload) in reviews(0..3).iter().enumerate() {
            tx.send(testing::message(i as i64, payload)).unwrap();
            let waiting = Instant::now();
            while predictions(&rig.log).len() <= i {
                assert!(
                    waiting.elapsed() < Duration::from_secs(60) && !running.is_finished(),
                    "message {i} was not classified while the worker was idle"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        drop(tx);
        let totals = running.await.unwrap().unwrap();
        assert_eq!(totals.predictions, 3);
        let ids = window_ids(&rig.log);
        assert_eq!(ids.len(), 3);
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "a window each: {ids:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sink_failure_stops_the_pipeline_and_nothing_after_it_is_acknowledged() {
        let rig = Rig::new();
        // The source stays open: only the failure can end the run.
        let (_tx, mut source) = rig.source(&reviews(0..20));
        let err = rig.run(&mut source, 4, Some(2)).await.unwrap_err();
        assert!(matches!(err, PipelineError::Sink(_)), "{err}");
        assert!(
            err.to_string().contains("read again after a restart"),
            "{err}"
        );
        let (_, acks) = replay(&rig.log);
        let acked: Vec<i64> = acks.iter().map(|(o, _)| *o).collect();
        assert_eq!(acked, vec![3], "only the window before the failed one");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_that_fails_classification_is_dead_lettered_alone() {
        let rig = Rig::new();
        let mut payloads = reviews(0..6);
        payloads[2] = r#"{"review_id": "p", "text": "a POISON message"}"#.into();
        let totals = rig.run_all(&payloads, 6).await;
        assert_eq!((totals.predictions, totals.dead_letters), (5, 1));
        let dead: Vec<(i64, String)> = rig
            .log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Wrote(r) => Some(r.clone()),
                Event::Acked(_) => None,
            })
            .flatten()
            .filter_map(|r| match r.kind {
                RecordKind::DeadLetter {
                    reason,
                    detail,
                    position,
                } => Some((offset(&position), format!("{reason}: {detail}"))),
                _ => None,
            })
            .collect();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].0, 2);
        assert!(
            dead[0].1.starts_with("classification_failed: "),
            "{:?}",
            dead[0]
        );
        assert!(
            dead[0].1.contains("POISON"),
            "the detail says why: {:?}",
            dead[0]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_champion_is_served_without_a_restart() {
        let rig = Arc::new(Rig::new());
        let first = "v1".to_string();
        let (tx, mut source) = rig.source(&reviews(0..8));
        let running = {
            let rig = rig.clone();
            tokio::spawn(async move { rig.run(&mut source, 4, None).await })
        };
        let waiting = Instant::now();
        while predictions(&rig.log).len() < 8 {
            assert!(
                waiting.elapsed() < Duration::from_secs(60) && !running.is_finished(),
                "waited for the first 8 predictions: {} after {:?}, the run {}; records: {:?}",
                predictions(&rig.log).len(),
                waiting.elapsed(),
                if running.is_finished() {
                    "ended"
                } else {
                    "still runs"
                },
                kinds(&rig.log)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let settings = rig.settings.clone();
        let second = tokio::task::spawn_blocking(move || testing::train_champion(&settings, 500))
            .await
            .unwrap();
        assert_ne!(first, second);
        for (i, payload) in reviews(8..16).iter().enumerate() {
            tx.send(testing::message(8 + i as i64, payload)).unwrap();
        }
        drop(tx);
        let totals = running.await.unwrap().unwrap();
        assert_eq!(totals.predictions, 16);
        let versions: Vec<String> = predictions(&rig.log)
            .iter()
            .map(|p| p["model_version"].as_str().unwrap().to_string())
            .collect();
        assert!(versions[..8].iter().all(|v| *v == first), "{versions:?}");
        assert!(versions[8..].iter().all(|v| *v == second), "{versions:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_that_panics_is_restarted_and_nothing_is_dead_lettered_for_it() {
        let rig = Rig::new();
        // Two panics in a row: the most that any interleaving of windows, retries and
        // known-good probes can put on one message is its window's and one try alone.
        rig.faults
            .panics
            .store(2, std::sync::atomic::Ordering::SeqCst);
        let totals = rig.run_all(&reviews(0..20), 4).await;
        assert_eq!((totals.predictions, totals.dead_letters), (20, 0));
        let m = rig.metrics();
        assert_eq!(m.worker_restarts.get(), 2);
        assert_eq!(m.workers_alive.get(), 1, "the worker is back");
        assert_eq!(m.worker_outage.get(), 0);
        let (written, _) = replay(&rig.log);
        let mut sorted = written;
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>(), "each message once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_that_panics_its_worker_is_dead_lettered_alone() {
        let rig = Rig::new();
        let mut payloads = reviews(0..6);
        payloads[4] = r#"{"review_id": "p", "text": "this text makes it PANIC"}"#.into();
        let totals = rig.run_all(&payloads, 6).await;
        assert_eq!((totals.predictions, totals.dead_letters), (5, 1));
        assert_eq!(kinds(&rig.log)["classification_failed"], 1);
        assert!(rig.metrics().worker_restarts.get() >= 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn while_no_worker_can_classify_nothing_is_acknowledged_or_dead_lettered() {
        let mut rig = Rig::new();
        rig.settings.stream.worker_outage_timeout_ms = 400;
        rig.faults
            .down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let (_tx, mut source) = rig.source(&reviews(0..8));
        let started = Instant::now();
        let err = rig.run(&mut source, 4, None).await.unwrap_err();
        assert!(matches!(err, PipelineError::Workers { .. }), "{err}");
        assert!(
            err.to_string().contains("read again after a restart"),
            "{err}"
        );
        assert!(started.elapsed() >= Duration::from_millis(400));
        let (written, acks) = replay(&rig.log);
        assert!(written.is_empty(), "nothing written: {written:?}");
        assert!(acks.is_empty(), "nothing acknowledged");
        assert_eq!(rig.metrics().worker_outage.get(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn windows_wait_out_a_short_outage_and_are_then_classified() {
        let rig = Rig::new();
        let faults = rig.faults.clone();
        faults.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let healer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            faults
                .down
                .store(false, std::sync::atomic::Ordering::SeqCst);
        });
        let totals = rig.run_all(&reviews(0..12), 4).await;
        healer.await.unwrap();
        assert_eq!((totals.predictions, totals.dead_letters), (12, 0));
        assert_eq!(rig.metrics().worker_outage.get(), 0);
    }

    mod record_path {
        //! The property: whatever bytes a record carries in its key, header names and
        //! values and payload, and however many headers, the core produces exactly
        //! one prediction or one dead letter for it, never panics, and every record
        //! it gives the sink fits the producer's limit.

        use std::sync::OnceLock;

        use proptest::prelude::*;

        use super::*;
        use crate::stream::envelope::{EnvelopeLimits, record_bytes};

        struct Core {
            _rig: Rig,
            runtime: tokio::runtime::Runtime,
            pipeline: Arc<Pipeline>,
        }

        /// One trained pipeline for every case, with small limits so that cases
        /// cross them: payload 4 KiB, key 256 B, 16 headers of 2 KiB in all, and a
        /// producer limit of 24,000 bytes.
        fn core() -> &'static Core {
            static CORE: OnceLock<Core> = OnceLock::new();
            CORE.get_or_init(|| {
                let mut rig = Rig::new();
                let st = &mut rig.settings.stream;
                st.max_message_bytes = 4096;
                st.max_key_bytes = 256;
                st.max_headers = 16;
                st.max_header_bytes = 2048;
                rig.settings
                    .kafka
                    .librdkafka_options
                    .insert("message.max.bytes".into(), "24000".into());
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                let pipeline = testing::pipeline(&rig.settings);
                Core {
                    _rig: rig,
                    runtime,
                    pipeline,
                }
            })
        }

        fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..32),
                prop::collection::vec(any::<u8>(), 0..max),
            ]
        }

        fn payload() -> impl Strategy<Value = Option<Vec<u8>>> {
            let review = (any::<String>(), 0..6i32, any::<Option<String>>()).prop_map(
                |(text, stars, id)| {
                    Some(
                        serde_json::json!({"review_id": id, "text": format!("great {text}"), "stars": stars})
                            .to_string()
                            .into_bytes(),
                    )
                },
            );
            prop_oneof![
                4 => review,
                1 => Just(None),
                2 => bytes(30_000).prop_map(Some),
                1 => "[ -~]{4000,5000}".prop_map(|t| Some(
                    serde_json::json!({"text": t}).to_string().into_bytes()
                )),
            ]
        }

        /// A record's key, headers and payload.
        type Parts = (Option<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>, Option<Vec<u8>>);

        fn message() -> impl Strategy<Value = Parts> {
            (
                prop::option::of(prop_oneof![
                    4 => bytes(400),
                    1 => prop::collection::vec(any::<u8>(), 20_000..30_000),
                ]),
                prop_oneof![
                    3 => prop::collection::vec((bytes(40), bytes(600)), 0..8),
                    1 => prop::collection::vec((bytes(8), bytes(8)), 0..40),
                ],
                payload(),
            )
        }

        fn cases() -> u32 {
            std::env::var("TRIAGE_PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(256)
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: cases(),
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn every_record_gets_one_output_that_fits(window in prop::collection::vec(message(), 1..6)) {
                let core = core();
                let messages: Vec<Message> = window
                    .into_iter()
                    .enumerate()
                    .map(|(i, (key, headers, payload))| Message {
                        position: Position::Log { topic: "in".into(), partition: 0, offset: i as i64 },
                        key,
                        payload,
                        headers,
                        timestamp_ms: None,
                        rejected: None,
                    })
                    .collect();
                let produced = core
                    .runtime
                    .block_on(core.pipeline.process(&messages, Window { id: 1, opened: Instant::now(), arrivals: &[], dispatched: Instant::now() }, None))
                    .unwrap();
                let limits: &EnvelopeLimits = core.pipeline.decoder.limits();
                let mut outputs: HashMap<i64, Vec<&'static str>> = HashMap::new();
                for r in &produced.records {
                    prop_assert!(
                        limits.fits(r),
                        "a {:?} record of {} bytes (key {:?} bytes, payload {:?} bytes, {} headers)",
                        r.kind,
                        record_bytes(r),
                        r.key.as_ref().map(Vec::len),
                        r.payload.as_ref().map(Vec::len),
                        r.headers.len()
                    );
                    let plain = r.key.as_ref().map_or(0, Vec::len)
                        + r.payload.as_ref().map_or(0, Vec::len)
                        + r.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
                    prop_assert!(plain <= limits.max_record_bytes);
                    let (offset, kind) = match &r.kind {
                        RecordKind::Prediction => {
                            let v: serde_json::Value =
                                serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
                            (v["source"]["offset"].as_i64().unwrap(), "prediction")
                        }
                        RecordKind::DeadLetter { position, .. } => (offset(position), "dead_letter"),
                        RecordKind::Feature | RecordKind::Review => continue,
                    };
                    outputs.entry(offset).or_default().push(kind);
                }
                for i in 0..messages.len() as i64 {
                    let got = outputs.get(&i).cloned().unwrap_or_default();
                    prop_assert_eq!(got.len(), 1, "message {} got {:?}", i, got);
                }
                prop_assert_eq!(outputs.len(), messages.len());
            }
        }
    }
}
