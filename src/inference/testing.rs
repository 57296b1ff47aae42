//! Test doubles for the pipeline core: an in-memory source, sink and
//! acknowledger that log what happens in order, a deterministic embedder that
//! can be told to fail, and a registry with a model trained on it. No broker, no
//! ONNX Runtime.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::Predictor;
use super::decode::Decoder;
use super::pipeline::{Pipeline, WindowSettings};
use super::worker::{self, ModelFollower};
use crate::config::Settings;
use crate::embed::{EmbedError, Embedder, EmbeddingSpec};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::stream::state::PipelineState;
use crate::stream::{Acknowledge, Message, Position, Record, Sink, SinkError, Source, SourceError};
use crate::training::{TrainOptions, train};

/// What the fake embedder says it is.
pub fn embed_spec_for_tests() -> EmbeddingSpec {
    EmbeddingSpec {
        model_id: "fake-bag-of-words".into(),
        model_sha256: "0".repeat(64),
        max_length: 64,
        truncation: crate::config::Truncation::Head,
        dimension: 12,
        pooling: "sum".into(),
    }
}

/// Words that carry each class in the fake embedding.
const NEGATIVE: &[&str] = &["awful", "cold", "rude", "dirty", "slow"];
const POSITIVE: &[&str] = &["great", "lovely", "friendly", "tasty", "fast"];

/// Embeds by counting class words (two dimensions) plus a hashed word spread
/// (the rest) among the first `max_length` words, so a logistic regression
/// separates the classes. A text containing
/// `POISON` fails, as a corrupt input can fail a real embedder, and one containing
/// `PANIC` panics its worker; [`Faults`] make every call fail or panic, as a broken
/// runtime would.
pub struct FakeEmbedder {
    spec: EmbeddingSpec,
    loaded: EmbeddingSpec,
    faults: Arc<Faults>,
}

/// Failures of our own, shared by the fake embedders of a test.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next this many calls panic.
    pub panics: AtomicUsize,
    /// While set, every call fails.
    pub down: AtomicBool,
}

impl FakeEmbedder {
    pub fn new() -> Self {
        Self::with_faults(Arc::default())
    }

    pub fn with_faults(faults: Arc<Faults>) -> Self {
        Self {
            spec: embed_spec_for_tests(),
            loaded: embed_spec_for_tests(),
            faults,
        }
    }
}

impl Embedder for FakeEmbedder {
    fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if self.faults.down.load(Ordering::SeqCst) {
            return Err(EmbedError::Inference("the runtime is down".into()));
        }
        let panic_now = self
            .faults
            .panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if panic_now || texts.iter().any(|t| t.contains("PANIC")) {
            panic!("the fake embedder panics (as a runtime fault would)");
        }
        texts
            .iter()
            .map(|t| {
                if t.contains("POISON") {
                    return Err(EmbedError::Inference(format!("cannot embed {t:?}")));
                }
                let mut v = vec![0.0f32; self.spec.dimension];
                // Truncated like a real embedder, at one token per word.
                for word in t.split_whitespace().take(self.spec.max_length) {
                    let w = word.to_lowercase();
                    if NEGATIVE.contains(&w.as_str()) {
                        v[0] += 1.0;
                    } else if POSITIVE.contains(&w.as_str()) {
                        v[1] += 1.0;
                    } else {
                        let h = w
                            .bytes()
                            .fold(7u32, |h, b| h.wrapping_mul(31) ^ u32::from(b));
                        v[2 + (h as usize) % (self.spec.dimension - 2)] += 0.5;
                    }
                }
                Ok(v)
            })
            .collect()
    }

    fn spec(&self) -> &EmbeddingSpec {
        &self.spec
    }

    fn loaded(&self) -> &EmbeddingSpec {
        &self.loaded
    }

    /// Takes any token length; has one graph only.
    fn adopt(&mut self, trained: &EmbeddingSpec) -> Result<(), EmbedError> {
        self.spec.check_servable(trained)?;
        if trained.model_sha256 != self.spec.model_sha256 {
            return Err(EmbedError::GraphNotFound {
                sha256: trained.model_sha256.clone(),
                searched: "the fake embedder".into(),
            });
        }
        self.spec.max_length = trained.max_length;
        self.spec.truncation = trained.truncation;
        Ok(())
    }
}

/// A review-like message of class `positive` (even `i`) or `negative` (odd).
pub fn review(i: usize) -> (String, &'static str) {
    let (words, stars) = if i.is_multiple_of(2) {
        (POSITIVE, 5)
    } else {
        (NEGATIVE, 1)
    };
    let text = format!(
        "visit {i} was {} and {} overall",
        words[i % words.len()],
        words[(i / 2 + 1) % words.len()]
    );
    let label = if stars == 5 { "positive" } else { "negative" };
    (
        serde_json::json!({ "review_id": format!("r{i}"), "text": text, "stars": stars })
            .to_string(),
        label,
    )
}

/// Settings for a registry and feature cache in `dir`.
pub fn settings(dir: &Path) -> Settings {
    let mut s = Settings::default();
    s.paths.registry_dir = dir.join("registry");
    s.paths.feature_cache_dir = dir.join("features");
    s.labels.ranges.retain(|r| r.label != "neutral");
    s.training.cv_folds = 3;
    s.training.alphas = vec![1.0];
    s.stream.workers = 1;
    s
}

/// Trains a model on 80 fake reviews and makes it the champion; returns its version.
pub fn train_champion(settings: &Settings, seed: usize) -> String {
    let dir = settings.paths.registry_dir.parent().unwrap().to_path_buf();
    let data = dir.join(format!("train-{seed}.jsonl"));
    let lines: Vec<String> = (seed..seed + 80).map(|i| review(i).0).collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let registry = Registry::new(settings.registry_dir());
    let options = TrainOptions {
        data,
        promote: true,
    };
    let outcome = train(settings, &mut FakeEmbedder::new(), &registry, &options).unwrap();
    assert!(outcome.promoted, "{:?}", outcome.gate_failures);
    outcome.version
}

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
        settings.drift.clone(),
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
        worker_outage: std::time::Duration::from_millis(settings.stream.worker_outage_timeout_ms),
    })
}

pub fn windows(max_messages: usize) -> WindowSettings {
    WindowSettings {
        max_messages,
        max_wait: std::time::Duration::from_millis(50),
        max_in_flight: 3,
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
