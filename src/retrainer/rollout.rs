//! The live race acted on. With `retrain.rollout = "shadow"` a job puts a challenger
//! that beat the champion on its held-out slice under the `challenger` alias; every
//! consumer then scores it beside the champion on the same windows, and the label
//! join races the two on the late-labelled messages both scored
//! ([`crate::late_labels::race`]). This task reads that race every few seconds and
//! settles it:
//!
//! - **promote**: the challenger beat the champion by `retrain.min_improvement`
//!   (the paired bootstrap, at `rollout.alpha`, after `rollout.min_labelled`
//!   messages): it becomes the champion (which clears the `challenger` alias);
//! - **lost**: it is significantly worse: the alias is cleared, the champion stays;
//! - **expired**: no verdict within `rollout.max_wait_s` of the race's first paired
//!   label, or no paired label at all within `max_wait_s` of the shadowing (the
//!   traffic's labels never came): the alias is cleared.
//!
//! Each outcome is a decision record (trigger `race`, both live scores, the test's
//! p-values and McNemar's figures, the verdict and its reason), a history entry by
//! `race` (the alias change) and `triage_retrain_jobs_total{verdict}`. A champion
//! moved by someone else while the race ran ends the race (the pair it scored is no
//! longer the pair on the aliases) without a decision.

use std::future::Future;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::metrics::RetrainMetrics;
use crate::late_labels::race::{RaceCheck, RaceVerdict, Races, RejectReason};
use crate::registry::decision::{
    Contender, Decision, Inputs, RaceRecord, Rows, Scores, Source, Trigger, Verdict,
};
use crate::registry::history::AliasAction;
use crate::registry::{Actor, Registry, RegistryError};

/// How often the race is read.
const TICK: Duration = Duration::from_secs(2);

/// What [`settle`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub verdict: Verdict,
    pub decision: Decision,
}

/// Settles the race between the champion and the challenger on the aliases, if its
/// verdict is in; None while it runs (or when no challenger is shadowed).
pub fn settle(
    registry: &Registry,
    races: &Races,
    max_wait: Duration,
    margin: f64,
    now: SystemTime,
) -> Result<Option<Settled>, RegistryError> {
    let aliases = registry.aliases()?;
    let (Some(champion), Some(challenger)) = (aliases.champion, aliases.challenger) else {
        return Ok(None);
    };
    let check = races.get(&champion, &challenger);
    let verdict = match &check {
        Some(c) => c.verdict,
        None => {
            // No paired label yet: expired once max_wait has passed since the shadowing.
            let since = shadowed_at(registry, &challenger)?;
            match since.map(|at| now.duration_since(at).unwrap_or_default()) {
                Some(waited) if waited >= max_wait => RaceVerdict::Reject(RejectReason::Expired),
                _ => return Ok(None),
            }
        }
    };
    let reason = match (verdict, &check) {
        (RaceVerdict::Continue, _) => return Ok(None),
        (RaceVerdict::Promote, Some(c)) => format!(
            "live race: challenger {challenger} macro-F1 {:.4} vs champion {champion} {:.4} on the same {} late-labelled messages: {:+.4}, beyond the required margin {margin} (paired bootstrap p = {:.4})",
            c.challenger_macro_f1, c.champion_macro_f1, c.labelled, c.difference, c.promote_p
        ),
        (RaceVerdict::Reject(RejectReason::Lost), Some(c)) => format!(
            "live race: challenger {challenger} macro-F1 {:.4} vs champion {champion} {:.4} on the same {} late-labelled messages: {:+.4}, significantly worse (paired bootstrap p = {:.4}); the champion stays",
            c.challenger_macro_f1, c.champion_macro_f1, c.labelled, c.difference, c.lose_p
        ),
        (RaceVerdict::Reject(RejectReason::Expired), Some(c)) => format!(
            "live race: no verdict within rollout.max_wait_s ({} s) on {} late-labelled messages (challenger {challenger} {:.4} vs champion {champion} {:.4}); the champion stays",
            max_wait.as_secs(),
            c.labelled,
            c.challenger_macro_f1,
            c.champion_macro_f1
        ),
        (_, None) => format!(
            "live race: no late label for a message both {champion} and {challenger} scored within rollout.max_wait_s ({} s) of the shadowing; the champion stays",
            max_wait.as_secs()
        ),
    };
    let recorded = if verdict == RaceVerdict::Promote {
        registry.promote(&challenger, &reason, Actor::Race)?;
        Verdict::Promoted
    } else {
        registry.unshadow(&reason, Actor::Race)?;
        Verdict::Rejected
    };
    let decision = race_decision(
        &champion,
        &challenger,
        check.as_ref(),
        margin,
        recorded,
        reason,
        now,
    );
    registry.record_decision(&decision)?;
    Ok(Some(Settled {
        verdict: recorded,
        decision,
    }))
}

/// When `challenger` was last put in shadow, from the history.
fn shadowed_at(registry: &Registry, challenger: &str) -> Result<Option<SystemTime>, RegistryError> {
    Ok(registry
        .history()?
        .entries
        .iter()
        .rev()
        .find(|c| c.action == AliasAction::Shadow && c.to.as_deref() == Some(challenger))
        .and_then(|c| humantime::parse_rfc3339_weak(&c.at).ok()))
}

fn race_decision(
    champion: &str,
    challenger: &str,
    check: Option<&RaceCheck>,
    margin: f64,
    verdict: Verdict,
    reason: String,
    now: SystemTime,
) -> Decision {
    let labelled = check.map_or(0, |c| c.labelled as u64);
    let started = check.map_or(now, |c| {
        SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(c.started_ms).unwrap_or(0))
    });
    let contender = |version: &str, macro_f1: f64, right: u64| Contender {
        version: version.to_string(),
        metrics: Scores {
            accuracy: if labelled == 0 {
                0.0
            } else {
                right as f64 / labelled as f64
            },
            macro_f1,
            per_class_f1: Default::default(),
        },
    };
    let stamp = humantime::format_rfc3339_millis(now).to_string();
    Decision {
        id: format!("race-{}", stamp.replace(['-', ':', '.'], "")),
        started_at: humantime::format_rfc3339_seconds(started).to_string(),
        finished_at: humantime::format_rfc3339_seconds(now).to_string(),
        trigger: Trigger::Other("race".into()),
        inputs: Inputs {
            sources: vec![Source {
                description: format!(
                    "late labels of the messages both {champion} (published) and {challenger} (in shadow) predicted"
                ),
                rows: labelled,
            }],
            from_ms: check.map(|c| c.started_ms),
            to_ms: check.map(|c| c.started_ms.saturating_add(c.elapsed_ms)),
        },
        rows: Rows {
            train: 0,
            held_out: labelled,
        },
        champion: check
            .map(|c| contender(champion, c.champion_macro_f1, c.mcnemar.both + c.mcnemar.c)),
        challenger: check.map(|c| {
            contender(
                challenger,
                c.challenger_macro_f1,
                c.mcnemar.both + c.mcnemar.b,
            )
        }),
        margin_required: margin,
        verdict,
        reason,
        cause: None,
        duration_seconds: now
            .duration_since(started)
            .unwrap_or_default()
            .as_secs_f64(),
        steps: Vec::new(),
        race: check.map(|c| RaceRecord {
            labelled,
            champion_macro_f1: c.champion_macro_f1,
            challenger_macro_f1: c.challenger_macro_f1,
            test: "paired bootstrap of the macro-F1 difference".into(),
            promote_p_value: c.promote_p,
            lose_p_value: c.lose_p,
            mcnemar_challenger_only: c.mcnemar.b,
            mcnemar_champion_only: c.mcnemar.c,
            mcnemar_p_value: c.mcnemar.p_value,
            seconds: c.elapsed_ms as f64 / 1000.0,
        }),
    }
}

/// Settles races until `shutdown` resolves.
pub async fn run(
    registry: Registry,
    races: Races,
    max_wait: Duration,
    margin: f64,
    metrics: RetrainMetrics,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    // A bucket registry's aliases are read no more often than the consumers read them.
    let tick = registry.follow_interval().max(TICK);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            () = tokio::time::sleep(tick) => {}
        }
        let (r, races) = (registry.clone(), races.clone());
        let settled = tokio::task::spawn_blocking(move || {
            settle(&r, &races, max_wait, margin, SystemTime::now())
        })
        .await;
        match settled {
            Ok(Ok(Some(s))) => {
                metrics
                    .jobs
                    .with_label_values(&[&s.verdict.to_string()])
                    .inc();
                info!(verdict = %s.verdict, id = %s.decision.id, reason = %s.decision.reason, "Live race settled.");
            }
            Ok(Ok(None)) => {}
            Ok(Err(err)) => {
                warn!(error = %err, "Live race: cannot read or write the registry; trying again.");
            }
            Err(err) => warn!(error = %err, "Live race: the check stopped."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::late_labels::race::McNemar;

    fn check(verdict: RaceVerdict, champion: f64, challenger: f64) -> RaceCheck {
        RaceCheck {
            labelled: 240,
            champion_macro_f1: champion,
            challenger_macro_f1: challenger,
            difference: challenger - champion,
            promote_p: if verdict == RaceVerdict::Promote {
                0.002
            } else {
                0.6
            },
            lose_p: 0.5,
            mcnemar: McNemar {
                both: 130,
                b: 80,
                c: 10,
                p_value: 1e-6,
            },
            started_ms: 1_767_225_600_000,
            elapsed_ms: 90_000,
            verdict,
        }
    }

    /// A folder registry with v1 champion and v2 in shadow.
    fn registry(dir: &std::path::Path) -> Registry {
        let registry = Registry::new(dir);
        crate::registry::testing::two_versions(&registry);
        registry
            .shadow("v2", "won its held-out slice", Actor::Retrainer)
            .unwrap();
        registry
    }

    #[test]
    fn a_won_race_promotes_the_challenger_and_records_the_figures() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(dir.path());
        let races = Races::default();
        let now = SystemTime::now();
        let week = Duration::from_secs(7 * 24 * 3600);
        // Still running: nothing happens.
        races.set("v1", "v2", check(RaceVerdict::Continue, 0.6, 0.7));
        assert_eq!(settle(&registry, &races, week, 0.01, now).unwrap(), None);
        races.set("v1", "v2", check(RaceVerdict::Promote, 0.6, 0.9));
        let s = settle(&registry, &races, week, 0.01, now).unwrap().unwrap();
        assert_eq!(s.verdict, Verdict::Promoted);
        let aliases = registry.aliases().unwrap();
        assert_eq!(aliases.champion.as_deref(), Some("v2"));
        assert_eq!(aliases.challenger, None);
        let recorded = registry.decisions().unwrap().entries;
        let d = recorded.last().unwrap();
        assert_eq!(d.trigger.to_string(), "race");
        assert_eq!(d.verdict, Verdict::Promoted);
        let race = d.race.as_ref().unwrap();
        assert_eq!((race.labelled, race.mcnemar_challenger_only), (240, 80));
        assert!(
            d.reason.contains("+0.3000") && d.reason.contains("p = 0.0020"),
            "{}",
            d.reason
        );
        // The challenger's live accuracy: (both + only it) / labelled.
        assert_eq!(
            d.challenger.as_ref().unwrap().metrics.accuracy,
            210.0 / 240.0
        );
        let history = registry.history().unwrap().entries;
        let last = history.last().unwrap();
        assert_eq!((last.action, last.by), (AliasAction::Promote, Actor::Race));
        // Settled: nothing more to do.
        assert_eq!(settle(&registry, &races, week, 0.01, now).unwrap(), None);
    }

    #[test]
    fn a_lost_or_silent_race_clears_the_shadow_and_keeps_the_champion() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(dir.path());
        let races = Races::default();
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        races.set(
            "v1",
            "v2",
            check(RaceVerdict::Reject(RejectReason::Lost), 0.8, 0.6),
        );
        let s = settle(&registry, &races, hour, 0.01, now).unwrap().unwrap();
        assert_eq!(s.verdict, Verdict::Rejected);
        assert!(s.decision.reason.contains("significantly worse"));
        let aliases = registry.aliases().unwrap();
        assert_eq!(aliases.champion.as_deref(), Some("v1"));
        assert_eq!(aliases.challenger, None);

        // Shadowed again, and no paired label ever comes: expired after max_wait
        // from the shadowing, not before.
        registry.shadow("v2", "again", Actor::Cli).unwrap();
        let races = Races::default();
        assert_eq!(settle(&registry, &races, hour, 0.01, now).unwrap(), None);
        let later = now + hour + Duration::from_secs(5);
        let s = settle(&registry, &races, hour, 0.01, later)
            .unwrap()
            .unwrap();
        assert_eq!(s.verdict, Verdict::Rejected);
        assert!(
            s.decision.reason.contains("no late label"),
            "{}",
            s.decision.reason
        );
        assert!(s.decision.race.is_none());
        assert_eq!(registry.aliases().unwrap().challenger, None);
    }
}
