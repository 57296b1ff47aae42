//! Windowing: a window closes at `max_messages` or `max_wait` after its first
//! message, whichever comes first. Pure: the caller passes the clock.

use std::time::{Duration, Instant};

/// Messages collected for one window.
#[derive(Debug)]
pub struct WindowBuffer<T> {
    items: Vec<T>,
    opened_at: Option<Instant>,
    max_messages: usize,
    max_wait: Duration,
}

impl<T> WindowBuffer<T> {
    pub fn new(max_messages: usize, max_wait: Duration) -> Self {
        Self {
            items: Vec::with_capacity(max_messages),
            opened_at: None,
            max_messages: max_messages.max(1),
            max_wait,
        }
    }

    /// Adds a message; true when the window is now full and must be flushed.
    pub fn push(&mut self, item: T, now: Instant) -> bool {
        if self.items.is_empty() {
            self.opened_at = Some(now);
        }
        self.items.push(item);
        self.items.len() >= self.max_messages
    }

    /// When the open window's first message arrived, if one is open.
    pub fn opened_at(&self) -> Option<Instant> {
        self.opened_at
    }

    /// When the open window must close, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + self.max_wait)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Closes the window, returning its messages in arrival order.
    pub fn take(&mut self) -> Vec<T> {
        self.opened_at = None;
        std::mem::replace(&mut self.items, Vec::with_capacity(self.max_messages))
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
        assert_eq!(w.take(), vec![1, 2, 3]);
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
}
