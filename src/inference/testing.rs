//! Test doubles for the pipeline core: an in-memory source, sink and
//! acknowledger that log what happens in order, and a pipeline on a fake worker;
//! with the deterministic embedder (`embed::testing`) and the registry with a model
//! trained on it (`training::testing`), re-exported. No broker, no ONNX Runtime.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

pub use crate::embed::testing::{FakeEmbedder, Faults, embed_spec_for_tests};
pub use crate::training::testing::{review, settings, train_champion};

use super::Predictor;
use super::decode::Decoder;
use super::pipeline::{Pipeline, WindowSettings};
use super::worker::{self, ModelFollower};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::stream::state::PipelineState;
use crate::stream::{Acknowledge, Message, Position, Record, Sink, SinkError, Source, SourceError};

/// A pipeline over the champion of `settings`' registry, on one fake worker.
pub fn pipeline(settings: &Settings) -> Arc<Pipeline> {
    pipeline_with(settings, Arc::default())
}

/// [`pipeline`] on a fake worker with `faults`, restarted with the same faults.
pub fn pipeline_with(settings: &Settings, faults: Arc<Faults>) -> Arc<Pipeline> {
    let metrics = Arc::new(Metrics::new());
    let registry = Registry::new(settings.registry_dir());
    let champion = Arc::new(registry.load("champion").unwrap());
    let predictor =
        Predictor::new(FakeEmbedder::with_faults(faults.clone()), champion.clone()).unwrap();
    let rebuild: worker::Rebuild<FakeEmbedder> =
        Arc::new(move || Ok(FakeEmbedder::with_faults(faults.clone())));
    let follower = ModelFollower::new(
        registry,
        champion,
        embed_spec_for_tests(),
        Arc::new(crate::embed::GraphCatalog::default()),
        metrics.clone(),
    );
    let worker = worker::spawn(
        vec![predictor],
        Some(follower),
        4,
        // Each window observed as it comes: tests see a drift report per window.
        worker::DriftFeed::ungathered(settings.drift.clone()),
        metrics.clone(),
        Some(rebuild),
    )
    .unwrap();
    Arc::new(Pipeline {
        worker,
        decoder: Decoder::new(settings),
        metrics: metrics.clone(),
        state: Arc::new(PipelineState::new(
            metrics,
            std::time::Duration::from_secs(5),
        )),
        features: true,
        review: true,
        worker_outage: std::time::Duration::from_millis(settings.stream.worker_outage_timeout_ms),
    })
}

/// Windows that close only when full or after 50 ms: the window count is known.
pub fn windows(max_messages: usize) -> WindowSettings {
    WindowSettings {
        max_messages,
        max_wait: std::time::Duration::from_millis(50),
        max_in_flight: 3,
        continuous: false,
        drain_timeout: std::time::Duration::from_secs(5),
    }
}

/// What happened, in order: records written (per window) and acknowledgements.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Wrote(Vec<Record>),
    Acked(Vec<Position>),
}

pub type Log = Arc<Mutex<Vec<Event>>>;

/// Messages fed through a channel; ends when the sender is dropped.
pub struct MemorySource {
    rx: mpsc::UnboundedReceiver<Message>,
    log: Log,
}

impl MemorySource {
    pub fn new(log: Log) -> (mpsc::UnboundedSender<Message>, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Self { rx, log })
    }
}

impl Source for MemorySource {
    type Ack = MemoryAck;

    fn acknowledger(&self) -> MemoryAck {
        MemoryAck(self.log.clone())
    }

    async fn next(&mut self) -> Result<Option<Message>, SourceError> {
        Ok(self.rx.recv().await)
    }
}

#[derive(Clone)]
pub struct MemoryAck(Log);

impl Acknowledge for MemoryAck {
    fn ack(&self, last: &[Position]) {
        self.0.lock().unwrap().push(Event::Acked(last.to_vec()));
    }
}

/// Logs each window's records; fails the `fail_on`-th write (1-based), if set.
#[derive(Clone)]
pub struct MemorySink {
    pub log: Log,
    pub fail_on: Option<usize>,
    writes: Arc<Mutex<usize>>,
}

impl MemorySink {
    pub fn new(log: Log, fail_on: Option<usize>) -> Self {
        Self {
            log,
            fail_on,
            writes: Arc::default(),
        }
    }
}

impl Sink for MemorySink {
    async fn write(&self, records: Vec<Record>) -> Result<(), SinkError> {
        let n = {
            let mut w = self.writes.lock().unwrap();
            *w += 1;
            *w
        };
        if self.fail_on == Some(n) {
            return Err(SinkError {
                context: "the test sink refuses this window".into(),
                source: "refused".into(),
            });
        }
        self.log.lock().unwrap().push(Event::Wrote(records));
        Ok(())
    }
}

/// Message `i` of a test stream, at offset `i` of partition 0 of topic `in`.
pub fn message(i: i64, payload: &str) -> Message {
    Message::new(
        Position::Log {
            topic: "in".into(),
            partition: 0,
            offset: i,
        },
        payload.as_bytes().to_vec(),
    )
}
