//! The CPU worker: one OS thread owns the embedder and the model, fed by a bounded
//! channel. The bound is the backpressure: when the worker is busy and the queue is
//! full, senders wait, and the consumer stops reading. Between jobs the worker
//! follows the registry's champion alias and hot-swaps the model.

use std::sync::Arc;
use std::thread;

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

pub use super::Classified;
use super::{InferenceError, Predictor};
use crate::drift::{DriftMonitor, DriftSettings, WindowObservation};
use crate::embed::Embedder;
use crate::metrics::Metrics;
use crate::registry::Registry;

struct Job {
    texts: Vec<String>,
    /// For stream windows: what the drift monitor needs beyond the texts.
    observe: Option<Observe>,
    reply: oneshot::Sender<Result<Classified, String>>,
}

/// A stream window's ground truth (per text, when known) and dead-letter count.
#[derive(Debug, Clone, Default)]
pub struct Observe {
    pub truth: Vec<Option<String>>,
    pub invalid: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the classification worker has stopped")]
    Stopped,
    #[error("classification failed: {0}")]
    Failed(String),
}

/// A cheap, cloneable handle to the worker.
#[derive(Clone)]
pub struct WorkerHandle {
    tx: mpsc::Sender<Job>,
}

impl WorkerHandle {
    /// Classifies `texts`; waits while the queue is full (backpressure).
    pub async fn classify(&self, texts: Vec<String>) -> Result<Classified, WorkerError> {
        self.submit(texts, None).await
    }

    /// Classifies a stream window and feeds the drift monitor with it.
    pub async fn classify_window(
        &self,
        texts: Vec<String>,
        observe: Observe,
    ) -> Result<Classified, WorkerError> {
        self.submit(texts, Some(observe)).await
    }

    async fn submit(
        &self,
        texts: Vec<String>,
        observe: Option<Observe>,
    ) -> Result<Classified, WorkerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                texts,
                observe,
                reply,
            })
            .await
            .map_err(|_| WorkerError::Stopped)?;
        rx.await
            .map_err(|_| WorkerError::Stopped)?
            .map_err(WorkerError::Failed)
    }
}

/// Follows the champion alias: loads a new champion between jobs, refuses an
/// incompatible or unreadable one (the old model keeps serving).
pub struct ModelFollower {
    registry: Registry,
    /// The alias value last acted on (swapped to, or refused).
    seen: Option<String>,
    metrics: Arc<Metrics>,
}

impl ModelFollower {
    pub fn new(registry: Registry, serving: &str, metrics: Arc<Metrics>) -> Self {
        Self {
            registry,
            seen: Some(serving.to_string()),
            metrics,
        }
    }

    /// Checks the alias (a small file read) and swaps if the champion changed.
    pub fn poll<E: Embedder>(&mut self, predictor: &mut Predictor<E>) {
        let champion = match self.registry.aliases() {
            Ok(a) => a.champion,
            Err(err) => {
                warn!(error = %err, "Cannot read the registry aliases; keeping the current model.");
                return;
            }
        };
        if champion.is_none() || champion == self.seen {
            return;
        }
        self.seen = champion.clone();
        let version = champion.unwrap_or_default();
        let old = predictor.version().to_string();
        let outcome = self
            .registry
            .load(&version)
            .map_err(InferenceError::from)
            .and_then(|model| {
                let old_labels = predictor.model().card.labels.clone();
                let new_labels = model.card.labels.clone();
                predictor.swap(model)?;
                if old_labels != new_labels {
                    info!(from = ?old_labels, to = ?new_labels, "The label set changed with the new champion.");
                }
                Ok(())
            });
        match outcome {
            Ok(()) => {
                self.metrics
                    .model_swaps
                    .with_label_values(&["swapped"])
                    .inc();
                set_model_info(&self.metrics, predictor);
                info!(from = %old, to = %version, "Hot-swapped to the new champion.");
            }
            Err(err) => {
                self.metrics
                    .model_swaps
                    .with_label_values(&["refused"])
                    .inc();
                error!(version = %version, serving = %old, error = %err, "New champion refused; the current model keeps serving.");
            }
        }
    }
}

fn set_model_info<E: Embedder>(metrics: &Metrics, predictor: &Predictor<E>) {
    metrics.model_info.reset();
    metrics
        .model_info
        .with_label_values(&[predictor.version(), &predictor.embedder_spec().model_id])
        .set(1);
}

fn monitor_for<E: Embedder>(predictor: &Predictor<E>, drift: &DriftSettings) -> DriftMonitor {
    let model = predictor.model();
    DriftMonitor::new(
        drift.clone(),
        model.reference.clone(),
        model.classifier.labels().len(),
    )
}

/// Feeds one classified stream window to the monitor and exports the report.
fn observe<E: Embedder>(
    predictor: &Predictor<E>,
    monitor: &mut DriftMonitor,
    metrics: &Metrics,
    texts: &[String],
    classified: &Classified,
    observed: Observe,
) {
    let labels = predictor.model().classifier.labels();
    let index = |name: &str| labels.iter().position(|l| l == name);
    let window = WindowObservation {
        labels: classified
            .labelled
            .iter()
            .map(|l| index(&l.label).unwrap_or(0))
            .collect(),
        confidences: classified.labelled.iter().map(|l| l.confidence).collect(),
        embeddings: classified.embeddings.clone(),
        text_lengths: texts.iter().map(|t| t.chars().count()).collect(),
        truth: observed
            .truth
            .iter()
            .map(|t| t.as_deref().and_then(index))
            .collect(),
        invalid: observed.invalid,
    };
    let report = monitor.observe(window);
    metrics.record_drift(predictor.version(), labels, &report);
}

/// Starts the worker thread. `follower`, when given, is polled before every job.
pub fn spawn<E: Embedder + Send + 'static>(
    mut predictor: Predictor<E>,
    mut follower: Option<ModelFollower>,
    queue: usize,
    drift: DriftSettings,
    metrics: Arc<Metrics>,
) -> std::io::Result<WorkerHandle> {
    let (tx, mut rx) = mpsc::channel::<Job>(queue.max(1));
    set_model_info(&metrics, &predictor);
    thread::Builder::new()
        .name("triage-worker".into())
        .spawn(move || {
            let mut monitor = monitor_for(&predictor, &drift);
            let mut monitored = predictor.version().to_string();
            while let Some(job) = rx.blocking_recv() {
                if let Some(f) = follower.as_mut() {
                    f.poll(&mut predictor);
                }
                if predictor.version() != monitored {
                    // A new model has a new reference: start the statistics afresh.
                    monitor = monitor_for(&predictor, &drift);
                    monitored = predictor.version().to_string();
                }
                let refs: Vec<&str> = job.texts.iter().map(String::as_str).collect();
                let result = predictor.classify_with_embeddings(&refs);
                if let (Ok(classified), Some(observed)) = (&result, job.observe) {
                    observe(
                        &predictor,
                        &mut monitor,
                        &metrics,
                        &job.texts,
                        classified,
                        observed,
                    );
                }
                let result = result.map_err(|e| e.to_string());
                // The requester may have given up (shutdown); nothing to do then.
                let _ = job.reply.send(result);
            }
        })?;
    Ok(WorkerHandle { tx })
}
