//! A small in-memory ring of the latest drift reports, newest last: what the
//! console charts against each detector's threshold. Prometheus keeps the long
//! history; this keeps the last [`RecentDrift::CAPACITY`] windows of this process.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use super::DriftReport;

/// One window's report, for the model version that served it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentPoint {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub version: String,
    pub report: DriftReport,
}

/// Shared ring of recent reports; clones share the ring.
#[derive(Debug, Clone, Default)]
pub struct RecentDrift {
    ring: Arc<Mutex<VecDeque<RecentPoint>>>,
}

impl RecentDrift {
    /// Windows kept: at the default 1 s windows, the last two minutes of traffic.
    pub const CAPACITY: usize = 120;

    pub fn push(&self, version: &str, report: &DriftReport) {
        let at_ms = crate::clock::now_ms();
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() == Self::CAPACITY {
            ring.pop_front();
        }
        ring.push_back(RecentPoint {
            at_ms,
            version: version.to_string(),
            report: report.clone(),
        });
    }

    /// The points of the newest version, oldest first (after a hot swap the old
    /// model's windows describe a model that no longer serves).
    pub fn latest_version(&self) -> Vec<RecentPoint> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(version) = ring.back().map(|p| p.version.clone()) else {
            return Vec::new();
        };
        ring.iter()
            .filter(|p| p.version == version)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_points_of_the_newest_version() {
        let recent = RecentDrift::default();
        for i in 0..RecentDrift::CAPACITY + 5 {
            let report = DriftReport {
                messages: i,
                ..DriftReport::default()
            };
            recent.push(if i < 10 { "v1" } else { "v2" }, &report);
        }
        let points = recent.latest_version();
        assert_eq!(points.len(), RecentDrift::CAPACITY - 5);
        assert!(points.iter().all(|p| p.version == "v2"));
        assert_eq!(
            points.last().unwrap().report.messages,
            RecentDrift::CAPACITY + 4
        );
        assert!(RecentDrift::default().latest_version().is_empty());
    }
}
