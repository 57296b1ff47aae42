//! The wall clock, read one way everywhere: milliseconds since the Unix epoch, the
//! unit of Kafka timestamps, decision records and leases. A leaf: it imports nothing
//! from the crate.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: 0 for a clock set before 1970, `i64::MAX`
/// past the year 292 million.
pub fn now_ms() -> i64 {
    ms_since_epoch(SystemTime::now())
}

/// Microseconds since the Unix epoch (0 before 1970): for latency breakdowns across
/// processes on one machine, where milliseconds are too coarse.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Instants of this process as wall-clock µs since the epoch, from one reading of
/// both clocks: for comparing a process's instants with times other processes on
/// the machine wrote.
pub struct WallClock {
    at: Instant,
    us: i64,
}

impl WallClock {
    pub fn now() -> Self {
        Self {
            at: Instant::now(),
            us: now_us(),
        }
    }

    /// `t` as µs since the epoch.
    pub fn us(&self, t: Instant) -> i64 {
        if t >= self.at {
            self.us + t.duration_since(self.at).as_micros() as i64
        } else {
            self.us - self.at.duration_since(t).as_micros() as i64
        }
    }
}

/// Milliseconds from the Unix epoch to `at`, with [`now_ms`]'s bounds.
pub fn ms_since_epoch(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn milliseconds_since_the_epoch_with_bounds() {
        assert_eq!(
            ms_since_epoch(UNIX_EPOCH + Duration::from_millis(1_234)),
            1_234
        );
        assert_eq!(ms_since_epoch(UNIX_EPOCH - Duration::from_secs(1)), 0);
        // 2026-01-01 and later: the clock this runs under is past it.
        assert!(now_ms() > 1_767_225_600_000);
    }
}
