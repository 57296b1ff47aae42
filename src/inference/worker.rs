//! The CPU workers: OS threads that each own an embedder and the model, fed by one
//! bounded channel. The bound is the backpressure: when every worker is busy and the
//! queue is full, senders wait, and the consumer stops reading. Before each job a
//! worker asks the shared champion follower which model to serve and which challenger
//! to score in shadow on the same embeddings (each is loaded once for all of them). The drift monitor is shared too: every classified
//! window feeds it, whichever worker ran it, except a window that a worker finishes
//! on a model the others have already swapped out.
//!
//! A worker that panics is not lost: the panic is caught, its job answered with an
//! error (the pipeline decides whether the message or the service is at fault), and
//! the worker rebuilds its embedder and goes on (`triage_worker_restarts_total`).
//! `triage_workers_alive` counts the workers able to take a job; `/readyz` needs one.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

pub use super::Classified;
use super::{InferenceError, Predictor, check_followable, shadow_refusal};
use crate::drift::{DriftMonitor, DriftReport, DriftSettings, Gather, WindowObservation};
use crate::embed::Embedder;
use crate::embed::{EmbeddingSpec, GraphCatalog};
use crate::metrics::Metrics;
use crate::registry::ModelVersion;
use crate::registry::Registry;

struct Job {
    texts: Vec<String>,
    /// For stream windows: what the drift monitor needs beyond the texts.
    observe: Option<Observe>,
    reply: oneshot::Sender<Result<Classified, WorkerError>>,
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
    Failed(#[source] InferenceError),
    #[error("the classification worker panicked ({0}) and is being restarted")]
    Panicked(String),
}

/// Makes a fresh embedder for a worker whose own died with a panic.
pub type Rebuild<E> = Arc<dyn Fn() -> Result<E, crate::embed::EmbedError> + Send + Sync>;

/// A cheap, cloneable handle to the worker.
#[derive(Clone)]
pub struct WorkerHandle {
    tx: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    workers: usize,
}

impl WorkerHandle {
    /// How many workers take jobs from the queue.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The metrics the workers report their health in.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

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
        rx.await.map_err(|_| WorkerError::Stopped)?
    }
}

/// What the workers serve: the champion, and the challenger scored in shadow.
#[derive(Clone)]
pub struct Followed {
    pub champion: Arc<ModelVersion>,
    /// Set only when its embedding spec is the champion's.
    pub shadow: Option<Arc<ModelVersion>>,
}

/// Follows the champion and challenger aliases for all workers: loads a new champion
/// once, refuses an incompatible or unreadable one (the model being served keeps
/// serving), loads a new challenger once and refuses one that cannot share the
/// champion's embeddings, and tells each worker, before each job, what to serve.
pub struct ModelFollower {
    registry: Registry,
    /// The alias value last acted on (swapped to, or refused).
    seen: Option<String>,
    /// The challenger scored in shadow, if one is.
    shadow: Option<Arc<ModelVersion>>,
    /// The challenger last acted on (loaded or refused) and the champion it was
    /// checked against: a new champion checks the challenger again.
    shadow_seen: Option<(String, String)>,
    /// Why the current challenger was refused for shadowing, if it was.
    refused: Option<String>,
    /// When the aliases were last read: a bucket registry is read at most once per
    /// `registry.follow_interval()` (one small GET), a folder before every job.
    last_read: Option<Instant>,
    serving: Arc<ModelVersion>,
    /// What every embedder of the service computes; a champion must match it but for
    /// its graph and token length, which each worker adopts on the swap.
    spec: EmbeddingSpec,
    /// Where the workers find a champion's graph: one they cannot find is refused here.
    graphs: Arc<GraphCatalog>,
    metrics: Arc<Metrics>,
}

impl ModelFollower {
    pub fn new(
        registry: Registry,
        serving: Arc<ModelVersion>,
        spec: EmbeddingSpec,
        graphs: Arc<GraphCatalog>,
        metrics: Arc<Metrics>,
    ) -> Self {
        set_model_info(&metrics, &serving.card.version, &spec.model_id);
        Self {
            registry,
            seen: Some(serving.card.version.clone()),
            shadow: None,
            shadow_seen: None,
            refused: None,
            last_read: None,
            serving,
            spec,
            graphs,
            metrics,
        }
    }

    /// What to serve: checks the aliases (a small file or object read), loads a new
    /// champion if it changed, and follows the challenger.
    pub fn poll(&mut self) -> Followed {
        let interval = self.registry.follow_interval();
        if self.last_read.is_some_and(|at| at.elapsed() < interval) {
            return self.followed();
        }
        self.last_read = Some(Instant::now());
        let aliases = match self.registry.aliases() {
            Ok(a) => a,
            Err(err) => {
                warn!(error = %err, "Cannot read the registry aliases; keeping the current model.");
                return self.followed();
            }
        };
        self.follow_champion(aliases.champion);
        self.follow_challenger(aliases.challenger);
        self.followed()
    }

    /// Why the challenger the alias names was refused for shadowing, if it was.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    fn followed(&self) -> Followed {
        Followed {
            champion: self.serving.clone(),
            shadow: self.shadow.clone(),
        }
    }

    fn follow_champion(&mut self, champion: Option<String>) {
        if champion.is_none() || champion == self.seen {
            return;
        }
        self.seen = champion.clone();
        let version = champion.unwrap_or_default();
        let old = self.serving.card.version.clone();
        let loaded = self
            .registry
            .load(&version)
            .map_err(InferenceError::from)
            .and_then(|model| check_followable(&self.spec, &self.graphs, &model).map(|()| model));
        match loaded {
            Ok(model) => {
                let (old_labels, new_labels) = (&self.serving.card.labels, &model.card.labels);
                if old_labels != new_labels {
                    info!(from = ?old_labels, to = ?new_labels, "The label set changed with the new champion.");
                }
                self.serving = Arc::new(model);
                self.metrics
                    .model_swaps
                    .with_label_values(&["swapped"])
                    .inc();
                set_model_info(&self.metrics, &version, &self.spec.model_id);
                // Serving what the champion alias names: no fallback any more (a series
                // stays: the alert rule reads it).
                self.metrics.model_fallback.reset();
                self.metrics
                    .model_fallback
                    .with_label_values(&[&version, &version])
                    .set(0);
                self.metrics.forget_drift();
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

    /// Scores `challenger` in shadow if it can share the serving champion's
    /// embeddings; otherwise (or when the alias is cleared) keeps no shadow. Each
    /// challenger is loaded once, and checked again when the champion changes.
    fn follow_challenger(&mut self, challenger: Option<String>) {
        let champion = self.serving.card.version.clone();
        let Some(version) = challenger.filter(|c| *c != champion) else {
            self.refused = None;
            if self.shadow_seen.take().is_some() {
                self.shadow = None;
                self.metrics.shadow_info.reset();
                info!("No challenger any more: shadow scoring stopped.");
            }
            return;
        };
        let key = (version.clone(), champion.clone());
        if self.shadow_seen.as_ref() == Some(&key) {
            return;
        }
        self.shadow_seen = Some(key);
        let loaded = match self.shadow.take() {
            // Only the champion changed: check the loaded challenger again.
            Some(shadow) if shadow.card.version == version => Ok(shadow),
            _ => self.registry.load(&version).map(Arc::new).map_err(|err| {
                format!("challenger {version} refused for shadowing: it will not load ({err})")
            }),
        };
        let checked = loaded.and_then(|model| match shadow_refusal(&self.serving, &model) {
            Some(reason) => Err(InferenceError::ShadowRefused {
                version: version.clone(),
                reason,
            }
            .to_string()),
            None => Ok(model),
        });
        self.metrics.shadow_info.reset();
        self.refused = None;
        match checked {
            Ok(model) => {
                self.shadow = Some(model);
                self.metrics
                    .shadow_info
                    .with_label_values(&[&version])
                    .set(1);
                info!(challenger = %version, %champion, "Scoring the challenger in shadow on the champion's embeddings; its predictions travel with the prediction records, never as labels.");
            }
            Err(reason) => {
                self.metrics.shadow_refusals.inc();
                error!(challenger = %version, %champion, error = %reason, "Challenger refused for shadowing; no shadow is scored. Fix: shadow a version trained on the champion's embedding settings (`triage models shadow VERSION`), or clear it (`triage models shadow --clear`).");
                self.refused = Some(reason);
            }
        }
    }
}

fn set_model_info(metrics: &Metrics, version: &str, model_id: &str) {
    metrics.model_info.reset();
    metrics
        .model_info
        .with_label_values(&[version, model_id])
        .set(1);
}

/// What feeds the drift monitor: its settings, and the bounds that gather the
/// stream's windows into drift windows ([`Gather`]): `stream.max_messages` and
/// `stream.max_wait_ms`, so that the statistics see windows as the window bounds
/// cut them, however small continuous batching makes the stream's windows.
#[derive(Debug, Clone)]
pub struct DriftFeed {
    pub settings: DriftSettings,
    pub window_messages: usize,
    pub window_wait: Duration,
}

impl DriftFeed {
    /// Windows passed to the monitor as they come (offline callers, tests).
    pub fn ungathered(settings: DriftSettings) -> Self {
        Self {
            settings,
            window_messages: 1,
            window_wait: Duration::ZERO,
        }
    }
}

/// The drift monitor of the serving model version, shared by the workers.
struct SharedDrift {
    settings: DriftSettings,
    /// The version the monitor's reference belongs to, and the monitor.
    monitor: Option<(String, DriftMonitor)>,
    /// Windows of the monitor's version waiting for their drift window to complete.
    gather: Gather,
    /// The monitor's version's class names, for its metrics.
    labels: Vec<String>,
}

impl SharedDrift {
    /// The monitor for a window classified by model `version` (of class names
    /// `labels`), made by `new` when the version changed: a new version has a new
    /// reference, so its statistics start afresh. `serving` is the version the service serves now (None: no follower).
    /// A window classified by a model already swapped out (another worker finishing
    /// its window during a hot swap) gets None: it says nothing about the new model,
    /// and observing it would restart the statistics a second time.
    fn monitor_for(
        &mut self,
        version: &str,
        labels: &[String],
        serving: Option<&str>,
        new: impl FnOnce(&DriftSettings) -> DriftMonitor,
    ) -> Option<&mut DriftMonitor> {
        if serving.is_some_and(|s| s != version) {
            return None;
        }
        if !matches!(&self.monitor, Some((v, _)) if v == version) {
            self.monitor = Some((version.to_string(), new(&self.settings)));
            self.labels = labels.to_vec();
            self.gather.clear();
        }
        self.monitor.as_mut().map(|(_, monitor)| monitor)
    }

    /// Observes the gathered drift window that waited its `stream.max_wait_ms` with
    /// no stream window to close it (an idle stream): its version and report.
    fn flush_due(&mut self, now: Instant) -> Option<(String, DriftReport)> {
        let gathered = self.gather.take_due(now);
        self.observe(gathered)
    }

    /// Adds a stream window; when that completes a drift window, observes it: its
    /// version and report.
    fn add(&mut self, window: WindowObservation, now: Instant) -> Option<(String, DriftReport)> {
        let gathered = self.gather.add(window, now);
        self.observe(gathered)
    }

    fn observe(&mut self, gathered: Option<WindowObservation>) -> Option<(String, DriftReport)> {
        let gathered = gathered?;
        let (version, monitor) = self.monitor.as_mut()?;
        Some((version.clone(), monitor.observe(gathered)))
    }
}

/// Completes the drift window an idle stream leaves open, every `wait` (the
/// workers complete the others); ends with the workers.
fn flush_idle_drift(drift: &Arc<Mutex<SharedDrift>>, metrics: &Metrics, wait: Duration) {
    // The workers hold the other references; when they are gone, so is this.
    while Arc::strong_count(drift) > 1 {
        thread::sleep(wait);
        let mut shared = lock(drift);
        if let Some((version, report)) = shared.flush_due(Instant::now()) {
            metrics.record_drift(&version, &shared.labels, &report);
        }
    }
}

/// What one classified stream window tells the drift monitor.
fn observation<E: Embedder>(
    predictor: &Predictor<E>,
    texts: &[String],
    classified: &Classified,
    observed: Observe,
) -> WindowObservation {
    let labels = predictor.model().classifier.labels();
    let index = |name: &str| labels.iter().position(|l| l == name);
    WindowObservation {
        labels: classified
            .labelled
            .iter()
            .map(|l| index(&l.label).unwrap_or(0))
            .collect(),
        // The model's own confidences, like the reference's (captured at training
        // from the uncalibrated predictions): a served calibration moves neither.
        confidences: classified
            .labelled
            .iter()
            .map(|l| l.raw_confidence)
            .collect(),
        embeddings: classified.embeddings.clone(),
        text_lengths: texts.iter().map(|t| t.chars().count()).collect(),
        truth: observed
            .truth
            .iter()
            .map(|t| t.as_deref().and_then(index))
            .collect(),
        invalid: observed.invalid,
    }
}

/// Starts one worker thread per predictor, all fed by one queue of `queue` jobs.
/// With a `follower`, every worker serves the champion it follows. A worker that
/// panics gets a fresh embedder from `rebuild` (without one, it keeps its own).
pub fn spawn<E: Embedder + Send + 'static>(
    predictors: Vec<Predictor<E>>,
    follower: Option<ModelFollower>,
    queue: usize,
    drift: DriftFeed,
    metrics: Arc<Metrics>,
    rebuild: Option<Rebuild<E>>,
) -> std::io::Result<WorkerHandle> {
    let (tx, rx) = mpsc::channel::<Job>(queue.max(1));
    let rx = Arc::new(Mutex::new(rx));
    let follower = follower.map(|f| Arc::new(Mutex::new(f)));
    let flush_every = drift.window_wait;
    let drift = Arc::new(Mutex::new(SharedDrift {
        settings: drift.settings,
        monitor: None,
        gather: Gather::new(drift.window_messages, drift.window_wait),
        labels: Vec::new(),
    }));
    if !flush_every.is_zero() {
        let (drift, metrics) = (drift.clone(), metrics.clone());
        // Never shorter than 50 ms: a tiny max_wait_ms must not spin this thread.
        let every = flush_every.max(Duration::from_millis(50));
        thread::Builder::new()
            .name("triage-drift-flush".into())
            .spawn(move || flush_idle_drift(&drift, &metrics, every))?;
    }
    let workers = predictors.len();
    metrics.workers_alive.set(workers as i64);
    for (i, predictor) in predictors.into_iter().enumerate() {
        let shared = Shared {
            jobs: rx.clone(),
            follower: follower.clone(),
            drift: drift.clone(),
            metrics: metrics.clone(),
        };
        let rebuild = rebuild.clone();
        thread::Builder::new()
            .name(format!("triage-worker-{i}"))
            .spawn(move || {
                work(predictor, &shared, rebuild.as_ref());
                shared.metrics.workers_alive.dec();
            })?;
    }
    Ok(WorkerHandle {
        tx,
        metrics,
        workers,
    })
}

/// What the workers share.
struct Shared {
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    follower: Option<Arc<Mutex<ModelFollower>>>,
    drift: Arc<Mutex<SharedDrift>>,
    metrics: Arc<Metrics>,
}

/// One worker's loop: takes the next job, serves the followed model, classifies,
/// feeds drift, replies. A panic while classifying is caught: the job gets an
/// error and the worker restarts with a fresh embedder.
fn work<E: Embedder>(mut predictor: Predictor<E>, shared: &Shared, rebuild: Option<&Rebuild<E>>) {
    loop {
        // Whoever holds the lock waits for the next job; the others wait for the lock.
        let job = lock(&shared.jobs).blocking_recv();
        let Some(job) = job else { break };
        if let Some(follower) = &shared.follower {
            let followed = lock(follower).poll();
            if followed.champion.card.version != predictor.version()
                && let Err(err) = predictor.swap(followed.champion)
            {
                error!(error = %err, "Cannot serve the followed champion; the current model keeps serving.");
            }
            let shadow = followed.shadow.as_ref().map(|s| s.card.version.as_str());
            if shadow != predictor.shadow_version()
                && let Err(err) = predictor.set_shadow(followed.shadow)
            {
                // The follower checked it against the champion this worker failed to
                // swap to: no shadow until the worker serves that champion.
                warn!(error = %err, "This worker scores no shadow for now.");
            }
        }
        let refs: Vec<&str> = job.texts.iter().map(String::as_str).collect();
        // The shadow only on stream windows: their records reach the label join.
        let window = job.observe.is_some();
        let result = match catch_unwind(AssertUnwindSafe(|| {
            if window {
                predictor.classify_with_embeddings(&refs)
            } else {
                predictor.classify_champion(&refs)
            }
        })) {
            Ok(result) => result.map_err(WorkerError::Failed),
            Err(panic) => {
                let why = panic_message(panic.as_ref());
                let _ = job.reply.send(Err(WorkerError::Panicked(why.clone())));
                restart(&mut predictor, shared, rebuild, &why);
                continue;
            }
        };
        if let Ok(classified) = &result {
            let shadowed = classified.labelled.iter().filter(|l| l.shadow.is_some());
            shared
                .metrics
                .shadow_predictions
                .inc_by(shadowed.count() as u64);
        }
        if let (Ok(classified), Some(observed)) = (&result, job.observe) {
            feed_drift(&predictor, shared, &job.texts, classified, observed);
        }
        // The requester may have given up (shutdown); nothing to do then.
        let _ = job.reply.send(result);
    }
}

/// After a panic: counts it, and replaces the worker's embedder with a fresh one
/// (retrying with backoff while that fails; the worker takes no job meanwhile and
/// does not count as alive).
fn restart<E: Embedder>(
    predictor: &mut Predictor<E>,
    shared: &Shared,
    rebuild: Option<&Rebuild<E>>,
    why: &str,
) {
    let metrics = &shared.metrics;
    metrics.worker_restarts.inc();
    metrics.workers_alive.dec();
    error!(
        panic = why,
        "A classification worker panicked; restarting it."
    );
    let Some(rebuild) = rebuild else {
        metrics.workers_alive.inc();
        return;
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let fresh = rebuild()
            .map_err(InferenceError::from)
            .and_then(|embedder| Predictor::new(embedder, predictor.model.clone()));
        match fresh {
            Ok(fresh) => {
                *predictor = fresh;
                metrics.workers_alive.inc();
                info!("Classification worker restarted.");
                return;
            }
            Err(err) => {
                error!(error = %err, retry_in_ms = backoff.as_millis() as u64, "Cannot restart the classification worker.");
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Feeds a classified stream window to the shared drift monitor, unless the model
/// that classified it was swapped out meanwhile.
fn feed_drift<E: Embedder>(
    predictor: &Predictor<E>,
    shared: &Shared,
    texts: &[String],
    classified: &Classified,
    observed: Observe,
) {
    let started = std::time::Instant::now();
    let serving = shared
        .follower
        .as_ref()
        .map(|f| lock(f).serving.card.version.clone());
    let new_monitor = |settings: &DriftSettings| {
        let model = predictor.model();
        let classes = model.classifier.labels().len();
        DriftMonitor::new(settings.clone(), model.reference.clone(), classes)
    };
    let window = observation(predictor, texts, classified, observed);
    let mut drift = lock(&shared.drift);
    let drift = &mut *drift;
    let labels = predictor.model().classifier.labels();
    if drift
        .monitor_for(predictor.version(), labels, serving.as_deref(), new_monitor)
        .is_none()
    {
        debug!(
            version = predictor.version(),
            "Window of a swapped-out model left out of the drift statistics."
        );
    } else if let Some((version, report)) = drift.add(window, Instant::now()) {
        shared.metrics.record_drift(&version, labels, &report);
    }
    shared
        .metrics
        .stage_seconds
        .with_label_values(&["drift"])
        .observe(started.elapsed().as_secs_f64());
}

/// A worker that panicked holding a lock left nothing half-written that matters
/// here (a queue, the follower, the monitor): the others go on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::tests::reference;

    fn shared_drift() -> SharedDrift {
        SharedDrift {
            settings: DriftSettings::default(),
            monitor: None,
            gather: Gather::new(1, Duration::ZERO),
            labels: Vec::new(),
        }
    }

    /// Counts the monitors made, so the test sees each restart of the statistics.
    fn monitor_for(
        drift: &mut SharedDrift,
        version: &str,
        serving: Option<&str>,
        made: &mut usize,
    ) -> bool {
        let new = |s: &DriftSettings| {
            *made += 1;
            DriftMonitor::new(s.clone(), reference(), 3)
        };
        drift.monitor_for(version, &[], serving, new).is_some()
    }

    #[test]
    fn the_drift_window_an_idle_stream_leaves_open_is_observed_after_its_wait() {
        let mut drift = shared_drift();
        drift.gather = Gather::new(64, Duration::from_millis(500));
        let t0 = Instant::now();
        // No monitor yet: nothing to observe with.
        assert!(drift.flush_due(t0).is_none());
        let mut made = 0;
        assert!(monitor_for(&mut drift, "v1", Some("v1"), &mut made));
        let three = crate::drift::tests::observation(3, 0);
        assert!(drift.gather.add(three, t0).is_none());
        assert!(drift.flush_due(t0 + Duration::from_millis(100)).is_none());
        let (version, report) = drift.flush_due(t0 + Duration::from_millis(500)).unwrap();
        assert_eq!((version.as_str(), report.messages), ("v1", 3));
        assert!(drift.flush_due(t0 + Duration::from_secs(5)).is_none());
    }

    #[test]
    fn a_hot_swap_restarts_the_drift_statistics_once() {
        let mut drift = shared_drift();
        let mut made = 0;
        assert!(monitor_for(&mut drift, "v1", Some("v1"), &mut made));
        assert!(monitor_for(&mut drift, "v1", Some("v1"), &mut made));
        assert_eq!(made, 1, "one monitor while v1 serves");
        // Worker A swapped to v2 and observed; worker B then finishes a v1 window.
        assert!(monitor_for(&mut drift, "v2", Some("v2"), &mut made));
        assert!(!monitor_for(&mut drift, "v1", Some("v2"), &mut made));
        assert!(monitor_for(&mut drift, "v2", Some("v2"), &mut made));
        assert_eq!(made, 2, "v2's statistics started once and kept");
        // A rollback to v1 is a swap like any other.
        assert!(monitor_for(&mut drift, "v1", Some("v1"), &mut made));
        assert_eq!(made, 3);
    }

    #[test]
    fn without_a_follower_every_window_is_observed() {
        let mut drift = shared_drift();
        let mut made = 0;
        assert!(monitor_for(&mut drift, "v1", None, &mut made));
        assert!(monitor_for(&mut drift, "v1", None, &mut made));
        assert_eq!(made, 1);
    }

    mod shadow {
        use super::super::*;
        use crate::inference::testing::{embed_spec_for_tests, settings, train_champion};
        use crate::registry::Actor;

        /// Registers `base` again with another token length: a challenger that cannot
        /// read embeddings made at `base`'s.
        fn register_with_max_length(registry: &Registry, base: &str, max_length: usize) -> String {
            let mut m = registry.load(base).unwrap();
            m.card.embedding.max_length = max_length;
            registry
                .register(&m.classifier, m.card, &m.reference)
                .unwrap()
        }

        fn shadow_of(f: &Followed) -> Option<&str> {
            f.shadow.as_ref().map(|s| s.card.version.as_str())
        }

        #[test]
        fn the_follower_scores_a_challenger_refuses_one_of_another_spec_and_drops_it_when_cleared()
        {
            let dir = tempfile::tempdir().unwrap();
            let s = settings(dir.path());
            train_champion(&s, 0);
            train_champion(&s, 1);
            let registry = Registry::new(s.registry_dir());
            registry.promote("v1", "t", Actor::Cli).unwrap();
            let v3 = register_with_max_length(&registry, "v2", 7);
            let v4 = register_with_max_length(&registry, "v1", 7);
            let metrics = Arc::new(Metrics::new());
            let mut follower = ModelFollower::new(
                registry.clone(),
                Arc::new(registry.load("v1").unwrap()),
                embed_spec_for_tests(),
                Arc::new(GraphCatalog::default()),
                metrics.clone(),
            );
            assert_eq!(shadow_of(&follower.poll()), None);

            registry.shadow("v2", "t", Actor::Cli).unwrap();
            let first = follower.poll();
            assert_eq!(first.champion.card.version, "v1");
            assert_eq!(shadow_of(&first), Some("v2"));
            let again = follower.poll();
            assert!(Arc::ptr_eq(
                first.shadow.as_ref().unwrap(),
                again.shadow.as_ref().unwrap()
            ));
            assert!(
                metrics
                    .render()
                    .contains("triage_shadow_info{model_version=\"v2\"} 1")
            );

            registry.shadow(&v3, "t", Actor::Cli).unwrap();
            assert_eq!(shadow_of(&follower.poll()), None);
            assert_eq!(shadow_of(&follower.poll()), None);
            assert_eq!(
                metrics.shadow_refusals.get(),
                1,
                "refused once, not per poll"
            );
            let reason = follower.refused().unwrap();
            let serving = registry.card("v1").unwrap().embedding.max_length;
            assert_eq!(
                reason,
                format!(
                    "challenger v3 refused for shadowing: embedding.max_length {serving} differs from the model's 7; retrain it on the champion's embedding settings"
                ),
            );
            assert!(!metrics.render().contains("triage_shadow_info{"));

            // A new champion of v3's spec: v3 is checked again, and now shadows.
            registry.promote(&v4, "t", Actor::Cli).unwrap();
            let followed = follower.poll();
            assert_eq!(followed.champion.card.version, v4);
            assert_eq!(shadow_of(&followed), Some(v3.as_str()));
            assert_eq!(follower.refused(), None);

            registry.unshadow("t", Actor::Cli).unwrap();
            assert_eq!(shadow_of(&follower.poll()), None);
            assert!(!metrics.render().contains("triage_shadow_info{"));
            assert_eq!(metrics.shadow_refusals.get(), 1);
        }
    }
}
