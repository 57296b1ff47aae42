//! `retrain.every`: a retrain at least this often, whatever the alerts say (the seed
//! project retrained weekly). The scheduled run is the same job as an alert's, through
//! the same [`Scheduler`] (one at a time, the cooldown, the job lock, the rollout and
//! the decision record), with the trigger `schedule` in its decision.
//!
//! **The clock is the registry's, not the process's.** A run is due `every` after the
//! latest of the last recorded decision (any trigger, any verdict) and the last
//! champion change (a promotion or a rollback, by anyone), so
//! - a restarted retrainer neither skips a run nor repeats one (a process timer would
//!   start from zero at each restart, and a retrainer restarted daily would never
//!   retrain weekly);
//! - an alert's retrain or a promotion by hand postpones the scheduled one: what it
//!   promises is "never longer than `every` without a fresh look at the model";
//! - an empty registry (no decision, no champion) waits `every` from the start.
//!
//! After a scheduled run the next one is at least `every` after the run ended, even
//! if the job recorded nothing (it panicked): no tight loop on a failing job.
//!
//! **A race comes first.** While a challenger is in shadow (a live race, or the guard
//! of a new champion) a due run waits, as alerts are ignored meanwhile: a job would
//! judge and replace a challenger the late labels are about to decide on. It starts
//! once the race or the guard has settled (counted once per wait as `held`).

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::Trigger;
use super::metrics::RetrainMetrics;
use super::scheduler::{Admission, Phase, Scheduler};
use crate::registry::{Registry, RegistryError};

/// The longest sleep before the registry is read again: a decision recorded by
/// another process (a `triage retrain` by hand) moves the due time.
const RECHECK: Duration = Duration::from_secs(600);
/// How often a submitted run is polled for its end.
const POLL: Duration = Duration::from_secs(2);
/// A registry that cannot be read is tried again after this long.
const RETRY: Duration = Duration::from_secs(60);
/// A due run held back by a race looks again after this long.
const RACE_RECHECK: Duration = Duration::from_secs(30);

/// The challenger in shadow, if one is: a due run waits for its race (or guard).
pub fn racing(registry: &Registry) -> Result<Option<String>, RegistryError> {
    Ok(registry.aliases()?.challenger)
}

/// When the next scheduled run is due: `every` after the latest of `last` (the
/// registry's last decision or champion change), `ran` (this process's last
/// scheduled run) and, when both are none, `started`.
pub fn next_due(
    last: Option<SystemTime>,
    ran: Option<SystemTime>,
    started: SystemTime,
    every: Duration,
) -> SystemTime {
    let anchor = match (last, ran) {
        (Some(a), Some(b)) => a.max(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => started,
    };
    anchor + every
}

/// The time of the registry's last decision or champion change, if any.
pub fn last_activity(registry: &Registry) -> Result<Option<SystemTime>, RegistryError> {
    let parse = |at: &str| humantime::parse_rfc3339_weak(at).ok();
    let decided = registry
        .decisions()?
        .entries
        .iter()
        .filter_map(|d| parse(&d.finished_at))
        .max();
    // Shadowing a challenger is not a champion change: it does not move the clock.
    let changed = registry
        .history()?
        .entries
        .iter()
        .filter(|c| c.action.moves_champion())
        .filter_map(|c| parse(&c.at))
        .max();
    Ok(decided.max(changed))
}

/// Runs the schedule until `shutdown` resolves.
pub async fn run(
    every: Duration,
    registry: Registry,
    scheduler: Scheduler,
    metrics: RetrainMetrics,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let started = SystemTime::now();
    let mut ran: Option<SystemTime> = None;
    // The challenger a due run is waiting for, while it waits.
    let mut held: Option<String> = None;
    info!(every = %humantime::format_duration(every), "Scheduled retraining on (retrain.every).");
    loop {
        let Some(last) = read(&registry, "decisions and history", last_activity).await else {
            if pause(RETRY, &mut shutdown).await {
                return;
            }
            continue;
        };
        let due = next_due(last, ran, started, every);
        metrics.next_scheduled.set(unix_seconds(due));
        match due.duration_since(SystemTime::now()) {
            Ok(wait) if !wait.is_zero() => {
                if pause(wait.min(RECHECK), &mut shutdown).await {
                    return;
                }
                continue;
            }
            _ => {}
        }
        let Some(challenger) = read(&registry, "aliases", racing).await else {
            if pause(RETRY, &mut shutdown).await {
                return;
            }
            continue;
        };
        if let Some(challenger) = challenger {
            if held.as_deref() != Some(challenger.as_str()) {
                metrics.scheduled.with_label_values(&["held"]).inc();
                info!(%challenger, "Scheduled retrain due, held back: a challenger races the champion in shadow (its race or the guard decides first).");
                held = Some(challenger);
            }
            if pause(RACE_RECHECK, &mut shutdown).await {
                return;
            }
            continue;
        }
        held = None;
        let before = scheduler.status().jobs_started;
        let admission = scheduler.submit(Trigger::scheduled());
        metrics
            .scheduled
            .with_label_values(&[match admission {
                Admission::Started => "started",
                Admission::Coalesced => "coalesced",
            }])
            .inc();
        info!(?admission, last = ?last.map(humantime::format_rfc3339_seconds), "Scheduled retrain due (retrain.every).");
        // Until the run that carries it has started and finished: a run in progress
        // takes the schedule into its follow-up, which starts after the cooldown.
        loop {
            let status = scheduler.status();
            if status.jobs_started > before && status.phase != Phase::Running {
                break;
            }
            if pause(POLL, &mut shutdown).await {
                return;
            }
        }
        ran = Some(SystemTime::now());
    }
}

/// `f` on the registry, off the async threads; None (after a warning naming `what`)
/// when it cannot be read: the caller pauses [`RETRY`] and tries again.
async fn read<T: Send + 'static>(
    registry: &Registry,
    what: &str,
    f: fn(&Registry) -> Result<T, RegistryError>,
) -> Option<T> {
    let reading = registry.clone();
    match tokio::task::spawn_blocking(move || f(&reading)).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(err)) => {
            warn!(error = %err, retry_in_s = RETRY.as_secs(), "Scheduled retraining: cannot read the registry's {what}; trying again.");
            None
        }
        Err(err) => {
            warn!(error = %err, retry_in_s = RETRY.as_secs(), "Scheduled retraining: the registry read stopped; trying again.");
            None
        }
    }
}

/// Sleeps `wait`; true when `shutdown` came first.
async fn pause(wait: Duration, shutdown: &mut (impl Future<Output = ()> + Unpin)) -> bool {
    tokio::select! {
        biased;
        () = shutdown => true,
        () = tokio::time::sleep(wait) => false,
    }
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn at(days: u32) -> SystemTime {
        UNIX_EPOCH + DAY * days
    }

    #[test]
    fn a_run_is_due_every_after_the_latest_activity() {
        let week = DAY * 7;
        // An empty registry: a week after the start.
        assert_eq!(next_due(None, None, at(100), week), at(107));
        // The last decision or promotion 3 days ago: 4 days from now.
        assert_eq!(next_due(Some(at(97)), None, at(100), week), at(104));
        // Long overdue: due at once (in the past).
        assert!(next_due(Some(at(80)), None, at(100), week) < at(100));
        // A scheduled run that recorded nothing still counts.
        assert_eq!(next_due(Some(at(80)), Some(at(100)), at(90), week), at(107));
    }

    #[test]
    fn the_registry_says_when_it_last_acted() {
        let dir = std::env::temp_dir().join(format!("triage-schedule-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let registry = Registry::new(&dir);
        assert_eq!(last_activity(&registry).unwrap(), None);
        let mut d = crate::registry::decision::fixture::decision(
            "retrain-1",
            crate::registry::decision::Verdict::Rejected,
        );
        d.finished_at = "2026-12-01T10:00:00Z".into();
        registry.record_decision(&d).unwrap();
        d.id = "retrain-2".into();
        d.finished_at = "2026-12-03T10:00:00Z".into();
        registry.record_decision(&d).unwrap();
        assert_eq!(
            last_activity(&registry).unwrap(),
            Some(humantime::parse_rfc3339("2026-12-03T10:00:00Z").unwrap())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_challenger_in_shadow_holds_a_due_run() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        crate::registry::testing::two_versions(&registry);
        assert_eq!(racing(&registry).unwrap(), None);
        registry
            .shadow("v2", "test", crate::registry::Actor::Retrainer)
            .unwrap();
        assert_eq!(racing(&registry).unwrap().as_deref(), Some("v2"));
        registry
            .unshadow("test", crate::registry::Actor::Race)
            .unwrap();
        assert_eq!(racing(&registry).unwrap(), None);
    }
}
