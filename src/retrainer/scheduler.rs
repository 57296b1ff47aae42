//! One retrain job at a time, a cooldown after each, and coalescing.
//!
//! The rule: an alert that arrives while the retrainer is idle starts a job at
//! once. An alert that arrives while a job runs or cools down is **coalesced**:
//! its alerts join the one pending follow-up trigger, and that follow-up starts
//! when the cooldown ends. So however many notifications arrive, jobs start at most
//! once per (job + `retrain.cooldown_s`), and an alert is never silently lost while
//! the retrainer runs: a drift that outlives a rejected challenger gets another try.
//! (Dropping instead would lean on Alertmanager's `repeat_interval` to ask again,
//! hours later.) A follow-up may find the drift already gone with a newly promoted
//! champion; the job then fits a challenger that does not beat it, which costs CPU
//! but changes nothing.
//!
//! On shutdown a running job is waited for, and a pending follow-up is dropped
//! (logged): Alertmanager notifies again while the alert still fires.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::metrics::RetrainMetrics;
use super::{JobOutcome, RetrainJob, Trigger};

/// What the scheduler is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No job and no cooldown: the next alert starts a job at once.
    Idle,
    /// A job is running (or about to: accepted, not yet picked up).
    Running,
    /// A job has finished; the next may start when `retrain.cooldown_s` has passed.
    CoolingDown,
}

/// What [`Scheduler::submit`] did with a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// A job starts now for it.
    Started,
    /// A job runs or cools down; the trigger joined the follow-up job.
    Coalesced,
}

/// The scheduler's state, for `/healthz` and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub phase: Phase,
    /// Whether a follow-up job is waiting for the cooldown.
    pub follow_up: bool,
    pub jobs_started: u64,
    pub last_outcome: Option<JobOutcome>,
}

struct State {
    phase: Phase,
    pending: Option<Trigger>,
    jobs_started: u64,
    last_outcome: Option<JobOutcome>,
}

struct Inner {
    state: Mutex<State>,
    wake: Notify,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    job: Arc<dyn RetrainJob>,
    cooldown: Duration,
    metrics: RetrainMetrics,
}

/// Runs [`RetrainJob`]s one at a time on a task of its own. Cloning shares it.
#[derive(Clone)]
pub struct Scheduler(Arc<Inner>);

impl Scheduler {
    /// Starts the scheduler's task on the current Tokio runtime.
    pub fn start(job: Arc<dyn RetrainJob>, cooldown: Duration, metrics: RetrainMetrics) -> Self {
        let (stop, stopped) = watch::channel(false);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                phase: Phase::Idle,
                pending: None,
                jobs_started: 0,
                last_outcome: None,
            }),
            wake: Notify::new(),
            stop,
            task: Mutex::new(None),
            job,
            cooldown,
            metrics,
        });
        let task = tokio::spawn(inner.clone().run(stopped));
        *lock(&inner.task) = Some(task);
        Self(inner)
    }

    /// Starts a job for `trigger` if idle; otherwise folds it into the follow-up.
    /// Never waits for the job.
    pub fn submit(&self, trigger: Trigger) -> Admission {
        let mut state = lock(&self.0.state);
        match state.phase {
            Phase::Idle => {
                state.phase = Phase::Running;
                state.pending = Some(trigger);
                self.0.wake.notify_one();
                Admission::Started
            }
            Phase::Running | Phase::CoolingDown => {
                match &mut state.pending {
                    Some(pending) => pending.merge(trigger),
                    None => state.pending = Some(trigger),
                }
                Admission::Coalesced
            }
        }
    }

    pub fn status(&self) -> Status {
        let state = lock(&self.0.state);
        Status {
            phase: state.phase,
            follow_up: state.pending.is_some() && state.phase != Phase::Idle,
            jobs_started: state.jobs_started,
            last_outcome: state.last_outcome.clone(),
        }
    }

    /// Stops the scheduler: waits for a running job to finish, ends a cooldown,
    /// and drops a pending follow-up.
    pub async fn shutdown(&self) {
        let _ = self.0.stop.send(true);
        if self.status().phase == Phase::Running {
            info!("Waiting for the running retrain job to finish.");
        }
        let task = lock(&self.0.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        if let Some(dropped) = lock(&self.0.state).pending.take() {
            warn!(
                alerts = ?dropped.names(),
                notifications = dropped.notifications,
                "Retrainer stopped with a follow-up job pending; it is dropped (Alertmanager repeats alerts that still fire)."
            );
        }
    }
}

impl Inner {
    async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                biased;
                _ = stopped.wait_for(|stop| *stop) => return,
                _ = self.wake.notified() => {}
            }
            while let Some(trigger) = self.next_trigger() {
                // Not raced against `stopped`: a job is waited for, not abandoned.
                self.run_job(trigger).await;
                lock(&self.state).phase = Phase::CoolingDown;
                tokio::select! {
                    biased;
                    _ = stopped.wait_for(|stop| *stop) => return,
                    _ = tokio::time::sleep(self.cooldown) => {}
                }
            }
        }
    }

    /// The pending trigger, marking the job running; or none, marking the
    /// scheduler idle (under one lock, so a concurrent submit sees either).
    fn next_trigger(&self) -> Option<Trigger> {
        let mut state = lock(&self.state);
        match state.pending.take() {
            Some(trigger) => {
                state.phase = Phase::Running;
                state.jobs_started += 1;
                Some(trigger)
            }
            None => {
                state.phase = Phase::Idle;
                None
            }
        }
    }

    async fn run_job(&self, trigger: Trigger) {
        let alerts = trigger.names().join(",");
        info!(
            alerts = %alerts,
            notifications = trigger.notifications,
            "Retrain job started."
        );
        self.metrics.running.set(1);
        let started = Instant::now();
        let job = self.job.clone();
        // A task of its own, so that a panicking job is a failed job, not a dead
        // scheduler.
        let outcome = match tokio::spawn(async move { job.run(trigger).await }).await {
            Ok(outcome) => outcome,
            Err(err) => JobOutcome::Failed {
                reason: format!("the job panicked: {err}"),
            },
        };
        let seconds = started.elapsed().as_secs_f64();
        let m = &self.metrics;
        m.jobs.with_label_values(&[outcome.verdict()]).inc();
        m.job_duration.observe(seconds);
        m.running.set(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        m.last_job_timestamp.set(now);
        match &outcome {
            JobOutcome::Promoted { version } => {
                info!(alerts = %alerts, version = %version, seconds, "Retrain job promoted a new champion.");
            }
            JobOutcome::Shadow { version } => {
                info!(alerts = %alerts, version = %version, seconds, "Retrain job put its challenger in shadow: it races the champion on live traffic.");
            }
            JobOutcome::Rejected { reason } => {
                info!(alerts = %alerts, reason = %reason, seconds, "Retrain job kept the champion.");
            }
            JobOutcome::Failed { reason } => {
                warn!(alerts = %alerts, reason = %reason, seconds, "Retrain job failed.");
            }
        }
        lock(&self.state).last_outcome = Some(outcome);
    }
}

/// Locks a mutex; a panic elsewhere while holding it leaves plain data that is
/// still consistent (every update is one assignment), so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::future::BoxFuture;
    use tokio::sync::mpsc;

    use super::*;
    use crate::retrainer::TriggerAlert;

    /// A job the test drives: it reports each trigger it is given, then waits
    /// for the outcome the test sends it.
    pub(crate) struct FakeJob {
        started: mpsc::UnboundedSender<Trigger>,
        outcomes: tokio::sync::Mutex<mpsc::UnboundedReceiver<JobOutcome>>,
        active: AtomicUsize,
        most_active: AtomicUsize,
    }

    pub(crate) struct FakeJobControl {
        pub started: mpsc::UnboundedReceiver<Trigger>,
        pub outcomes: mpsc::UnboundedSender<JobOutcome>,
        pub job: Arc<FakeJob>,
    }

    impl FakeJob {
        pub(crate) fn control() -> FakeJobControl {
            let (started_tx, started) = mpsc::unbounded_channel();
            let (outcomes, outcomes_rx) = mpsc::unbounded_channel();
            let job = Arc::new(FakeJob {
                started: started_tx,
                outcomes: tokio::sync::Mutex::new(outcomes_rx),
                active: AtomicUsize::new(0),
                most_active: AtomicUsize::new(0),
            });
            FakeJobControl {
                started,
                outcomes,
                job,
            }
        }

        pub(crate) fn most_active(&self) -> usize {
            self.most_active.load(Ordering::SeqCst)
        }
    }

    impl RetrainJob for FakeJob {
        fn run(&self, trigger: Trigger) -> BoxFuture<'_, JobOutcome> {
            Box::pin(async move {
                let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
                self.most_active.fetch_max(now, Ordering::SeqCst);
                let _ = self.started.send(trigger);
                let outcome = self.outcomes.lock().await.recv().await;
                self.active.fetch_sub(1, Ordering::SeqCst);
                outcome.unwrap_or(JobOutcome::Failed {
                    reason: "test ended".into(),
                })
            })
        }
    }

    pub(crate) fn trigger(fingerprint: &str) -> Trigger {
        Trigger::new(vec![TriggerAlert {
            name: "TriageDriftDetected".into(),
            fingerprint: fingerprint.into(),
            labels: BTreeMap::from([("detector".to_string(), fingerprint.to_string())]),
            starts_at: String::new(),
        }])
    }

    fn promoted() -> JobOutcome {
        JobOutcome::Promoted {
            version: "v4".into(),
        }
    }

    async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time")
            .expect("open")
    }

    async fn wait_until(scheduler: &Scheduler, want: impl Fn(&Status) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !want(&scheduler.status()) {
            assert!(Instant::now() < deadline, "{:?}", scheduler.status());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn metrics() -> RetrainMetrics {
        RetrainMetrics::new(&["TriageDriftDetected".to_string()])
    }

    #[tokio::test]
    async fn alerts_during_a_job_coalesce_into_one_follow_up() {
        let mut c = FakeJob::control();
        let s = Scheduler::start(c.job.clone(), Duration::from_millis(20), metrics());

        assert_eq!(s.submit(trigger("a")), Admission::Started);
        let first = recv(&mut c.started).await;
        assert_eq!(first.alerts[0].fingerprint, "a");
        assert_eq!(s.submit(trigger("b")), Admission::Coalesced);
        assert_eq!(s.submit(trigger("c")), Admission::Coalesced);
        assert_eq!(s.submit(trigger("b")), Admission::Coalesced);
        assert!(s.status().follow_up);

        c.outcomes.send(promoted()).unwrap();
        let second = recv(&mut c.started).await;
        let fingerprints: Vec<&str> = second
            .alerts
            .iter()
            .map(|a| a.fingerprint.as_str())
            .collect();
        assert_eq!(fingerprints, vec!["b", "c"]);
        assert_eq!(second.notifications, 3);

        c.outcomes.send(promoted()).unwrap();
        wait_until(&s, |st| st.phase == Phase::Idle).await;
        assert_eq!(s.status().jobs_started, 2);
        assert_eq!(c.job.most_active(), 1);
        assert!(c.started.try_recv().is_err(), "no third job");
        s.shutdown().await;
    }

    #[tokio::test]
    async fn an_alert_during_the_cooldown_waits_for_it_to_end() {
        let mut c = FakeJob::control();
        let cooldown = Duration::from_millis(300);
        let m = metrics();
        let s = Scheduler::start(c.job.clone(), cooldown, m.clone());
        s.submit(trigger("a"));
        recv(&mut c.started).await;
        c.outcomes.send(promoted()).unwrap();
        wait_until(&s, |st| st.phase == Phase::CoolingDown).await;
        let cooling_since = Instant::now();

        assert_eq!(s.submit(trigger("b")), Admission::Coalesced);
        let follow_up = recv(&mut c.started).await;
        // The cooldown began a little before `cooling_since`; allow for that.
        assert!(cooling_since.elapsed() >= cooldown - Duration::from_millis(50));
        assert_eq!(follow_up.alerts[0].fingerprint, "b");
        c.outcomes.send(promoted()).unwrap();
        wait_until(&s, |st| st.phase == Phase::Idle).await;
        assert_eq!(m.jobs.with_label_values(&["promoted"]).get(), 2);
        s.shutdown().await;
    }

    #[tokio::test]
    async fn after_the_cooldown_the_next_alert_starts_a_job_at_once() {
        let mut c = FakeJob::control();
        let s = Scheduler::start(c.job.clone(), Duration::from_millis(10), metrics());
        s.submit(trigger("a"));
        recv(&mut c.started).await;
        c.outcomes
            .send(JobOutcome::Rejected {
                reason: "no better".into(),
            })
            .unwrap();
        wait_until(&s, |st| st.phase == Phase::Idle).await;
        assert!(matches!(
            s.status().last_outcome,
            Some(JobOutcome::Rejected { .. })
        ));
        assert_eq!(s.submit(trigger("b")), Admission::Started);
        recv(&mut c.started).await;
        c.outcomes.send(promoted()).unwrap();
        s.shutdown().await;
    }

    struct Panics;

    impl RetrainJob for Panics {
        fn run(&self, _: Trigger) -> BoxFuture<'_, JobOutcome> {
            Box::pin(async { panic!("boom") })
        }
    }

    #[tokio::test]
    async fn a_panicking_job_counts_as_failed_and_the_scheduler_goes_on() {
        let m = metrics();
        let s = Scheduler::start(Arc::new(Panics), Duration::ZERO, m.clone());
        s.submit(trigger("a"));
        wait_until(&s, |st| st.phase == Phase::Idle && st.jobs_started == 1).await;
        assert_eq!(s.submit(trigger("b")), Admission::Started);
        wait_until(&s, |st| st.phase == Phase::Idle && st.jobs_started == 2).await;
        assert_eq!(m.jobs.with_label_values(&["failed"]).get(), 2);
        assert_eq!(m.running.get(), 0);
        assert_eq!(m.job_duration.get_sample_count(), 2);
        assert!(m.last_job_timestamp.get() > 1.7e9);
        match s.status().last_outcome {
            Some(JobOutcome::Failed { reason }) => assert!(reason.contains("panicked"), "{reason}"),
            other => panic!("{other:?}"),
        }
        s.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_waits_for_the_running_job_and_drops_the_follow_up() {
        let mut c = FakeJob::control();
        let m = metrics();
        let s = Scheduler::start(c.job.clone(), Duration::from_secs(3600), m.clone());
        s.submit(trigger("a"));
        recv(&mut c.started).await;
        assert_eq!(m.running.get(), 1);
        s.submit(trigger("b"));

        let stopping = tokio::spawn({
            let s = s.clone();
            async move { s.shutdown().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!stopping.is_finished(), "shutdown must wait for the job");
        c.outcomes.send(promoted()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), stopping)
            .await
            .expect("shutdown ends the hour-long cooldown")
            .unwrap();
        assert_eq!(m.jobs.with_label_values(&["promoted"]).get(), 1);
        assert!(c.started.try_recv().is_err(), "the follow-up never ran");
        assert!(!s.status().follow_up);
    }
}
