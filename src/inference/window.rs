//! Windowing: a window closes at `max_messages` or `max_wait` after its first
//! message, whichever comes first, and, with continuous batching, as soon as a
//! worker is idle ([`dispatch_now`]): windows grow only while every worker is busy.
//! Pure: the caller passes the clock; [`AtWorkers`] counts the windows the workers
//! hold and wakes the window loop when one is handed back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Whether an open window of `open` messages goes to the workers now, before it is
/// full or its time is up: when a worker is idle (fewer windows at the workers than
/// workers). The upper bounds (`max_messages`, `max_wait`) close it regardless.
pub fn dispatch_now(open: usize, at_workers: usize, workers: usize) -> bool {
    open > 0 && at_workers < workers.max(1)
}

/// Windows handed to the workers and not yet classified, shared by the window loop
/// (which counts one in before the window's task starts, so that it never sees a
/// worker as idle that a window is on its way to) and the window tasks (whose
/// [`Held`] counts it out once the workers have classified it).
#[derive(Debug, Default)]
pub struct AtWorkers {
    count: AtomicUsize,
    freed: Notify,
}

impl AtWorkers {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Windows at the workers now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Counts a window in until the guard is dropped.
    pub fn hold(self: &Arc<Self>) -> Held {
        self.count.fetch_add(1, Ordering::SeqCst);
        Held(self.clone())
    }

    /// Resolves after a window was handed back (or at once if one was since the last
    /// wait: a hand-back is never missed, a spurious wake-up is possible).
    pub async fn freed(&self) {
        self.freed.notified().await
    }
}

/// One window at the workers; dropped when the workers are done with it.
#[derive(Debug)]
pub struct Held(Arc<AtWorkers>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
        self.0.freed.notify_one();
    }
}

/// Messages collected for one window.
#[derive(Debug)]
pub struct WindowBuffer<T> {
    items: Vec<T>,
    /// When each message arrived (the first: when the window opened).
    arrivals: Vec<Instant>,
    max_messages: usize,
    max_wait: Duration,
}

impl<T> WindowBuffer<T> {
    pub fn new(max_messages: usize, max_wait: Duration) -> Self {
        Self {
            items: Vec::new(),
            arrivals: Vec::new(),
            max_messages: max_messages.max(1),
            max_wait,
        }
    }

    /// Adds a message; true when the window is now full and must be flushed.
    pub fn push(&mut self, item: T, now: Instant) -> bool {
        self.items.push(item);
        self.arrivals.push(now);
        self.items.len() >= self.max_messages
    }

    /// When the open window's first message arrived, if one is open.
    pub fn opened_at(&self) -> Option<Instant> {
        self.arrivals.first().copied()
    }

    /// When the open window must close, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at().map(|t| t + self.max_wait)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Closes the window, returning its messages in arrival order and when each
    /// arrived. The next window's vectors grow as it fills: with continuous batching
    /// most windows hold a message or two, not `max_messages`.
    pub fn take(&mut self) -> (Vec<T>, Vec<Instant>) {
        (
            std::mem::take(&mut self.items),
            std::mem::take(&mut self.arrivals),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_on_size() {
        let now = Instant::now();
        let mut w = WindowBuffer::new(3, Duration::from_millis(500));
        assert!(!w.push(1, now));
        assert!(!w.push(2, now));
        assert!(w.push(3, now));
        assert_eq!(w.take().0, vec![1, 2, 3]);
        assert!(w.is_empty());
        assert_eq!(w.deadline(), None);
    }

    #[test]
    fn deadline_runs_from_the_first_message() {
        let t0 = Instant::now();
        let mut w = WindowBuffer::new(10, Duration::from_millis(500));
        assert_eq!(w.deadline(), None, "an empty window has no deadline");
        w.push("a", t0);
        w.push("b", t0 + Duration::from_millis(400));
        assert_eq!(w.deadline(), Some(t0 + Duration::from_millis(500)));
        w.take();
        let t1 = t0 + Duration::from_secs(2);
        w.push("c", t1);
        assert_eq!(w.deadline(), Some(t1 + Duration::from_millis(500)));
    }

    #[test]
    fn arrivals_come_back_with_their_messages() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(7);
        let mut w = WindowBuffer::new(10, Duration::from_millis(500));
        w.push("a", t0);
        w.push("b", t1);
        assert_eq!(w.take(), (vec!["a", "b"], vec![t0, t1]));
        assert_eq!(w.take(), (vec![], vec![]));
    }

    #[test]
    fn a_window_goes_at_once_while_a_worker_is_idle_and_grows_while_all_are_busy() {
        // Nothing to send: never.
        assert!(!dispatch_now(0, 0, 2));
        // Two workers: the first two windows go at once, even of one message.
        assert!(dispatch_now(1, 0, 2));
        assert!(dispatch_now(1, 1, 2));
        // Both busy: the window keeps collecting, whatever its size (the upper
        // bounds close it, not this rule).
        assert!(!dispatch_now(1, 2, 2));
        assert!(!dispatch_now(63, 2, 2));
        // More at the workers than workers (full windows past the bound queue up).
        assert!(!dispatch_now(5, 3, 2));
        // No workers configured counts as one.
        assert!(dispatch_now(1, 0, 0));
        assert!(!dispatch_now(1, 1, 0));
    }

    #[test]
    fn a_held_window_counts_until_it_is_handed_back() {
        let at = AtWorkers::new();
        let a = at.hold();
        let b = at.hold();
        assert_eq!(at.count(), 2);
        assert!(!dispatch_now(1, at.count(), 2));
        drop(a);
        assert_eq!(at.count(), 1);
        assert!(dispatch_now(1, at.count(), 2));
        drop(b);
        assert_eq!(at.count(), 0);
    }

    #[tokio::test]
    async fn a_hand_back_before_the_wait_is_not_missed() {
        let at = AtWorkers::new();
        drop(at.hold());
        // The hand-back happened before anyone waited: the wait still ends.
        at.freed().await;
    }
}
