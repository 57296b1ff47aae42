//! What the pipeline loop, its window tasks, the source's callbacks (a Kafka
//! rebalance) and the HTTP surface share: windows in flight, readiness, totals.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::metrics::Metrics;

/// Shared state of one running pipeline.
pub struct PipelineState {
    pub metrics: Arc<Metrics>,
    /// Windows handed to a task and not yet written and acknowledged (or failed).
    in_flight: Mutex<usize>,
    drained: Condvar,
    /// Input partitions this instance owns (a file source: 1).
    pub assigned: AtomicUsize,
    /// Upstream brokers reachable (a file source: 1).
    pub brokers_up: AtomicUsize,
    /// How long a hand-over (rebalance, shutdown) waits for windows in flight.
    pub drain_timeout: Duration,
    messages: AtomicU64,
    predictions: AtomicU64,
    dead_letters: AtomicU64,
}

/// Totals of a run: every message read is either predicted or dead-lettered once
/// its window is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub messages: u64,
    pub predictions: u64,
    pub dead_letters: u64,
}

impl PipelineState {
    pub fn new(metrics: Arc<Metrics>, drain_timeout: Duration) -> Self {
        Self {
            metrics,
            in_flight: Mutex::new(0),
            drained: Condvar::new(),
            assigned: AtomicUsize::new(0),
            brokers_up: AtomicUsize::new(0),
            drain_timeout,
            messages: AtomicU64::new(0),
            predictions: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
        }
    }

    pub(crate) fn window_started(&self) {
        *self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
    }

    pub(crate) fn window_finished(&self) {
        let mut n = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.drained.notify_all();
        }
    }

    /// Blocks until no window is in flight or `timeout` passes; returns what is left.
    pub fn wait_drained(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut n = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            n = self
                .drained
                .wait_timeout(n, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *n
    }

    pub(crate) fn count(&self, messages: usize, predictions: usize, dead_letters: usize) {
        self.messages.fetch_add(messages as u64, Ordering::Relaxed);
        self.predictions
            .fetch_add(predictions as u64, Ordering::Relaxed);
        self.dead_letters
            .fetch_add(dead_letters as u64, Ordering::Relaxed);
    }

    /// A worker is alive and no outage is under way.
    pub fn workers_ok(&self) -> bool {
        self.metrics.workers_alive.get() > 0 && self.metrics.worker_outage.get() == 0
    }

    /// Messages of written windows so far.
    pub fn totals(&self) -> Totals {
        Totals {
            messages: self.messages.load(Ordering::Relaxed),
            predictions: self.predictions.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
        }
    }

    /// Ready: partitions are assigned, a broker is up, and a worker can classify
    /// (the model is loaded before the pipeline starts).
    pub fn ready(&self) -> bool {
        let ready = self.assigned.load(Ordering::Relaxed) > 0
            && self.brokers_up.load(Ordering::Relaxed) > 0
            && self.workers_ok();
        self.metrics.ready.set(i64::from(ready));
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drained_once_every_window_finished() {
        let state = Arc::new(PipelineState::new(
            Arc::new(Metrics::new()),
            Duration::from_secs(1),
        ));
        state.window_started();
        state.window_started();
        assert_eq!(state.wait_drained(Duration::from_millis(10)), 2);
        let s = state.clone();
        let t = std::thread::spawn(move || {
            s.window_finished();
            s.window_finished();
        });
        assert_eq!(state.wait_drained(Duration::from_secs(5)), 0);
        t.join().unwrap();
    }
}
