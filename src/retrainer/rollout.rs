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
//!
//! **The guard.** After any promotion (the race's, the retrainer's, `triage models
//! promote`), the champion it replaced goes back into shadow, by `guard`: the same
//! race, the other way round. If the replaced champion beats the new one on the same
//! messages by the same test (by `retrain.min_improvement`, at `rollout.alpha`),
//! triage rolls back by itself: a history entry by `guard`, a decision (trigger
//! `guard`, verdict rejected, both live scores), `triage_rollbacks_total{by="guard"}`
//! and the alert `TriageRolledBack`. The alerts that started the job behind the
//! rolled-back version (its decision's `alerts`) are recorded as the rollback's
//! `answered_alerts`: the webhook does not start a job for those firings again
//! (the same fingerprint and `startsAt`), so the restored champion's still-firing
//! alert does not fit the same challenger again. Once `rollout.guard_labelled` messages stand
//! behind the race without that verdict (or the old champion is significantly worse,
//! or `rollout.max_wait_s` passes), the guard ends and the shadow is cleared. A
//! rollback is not guarded in turn (no loop), and nor is a first model.

use std::future::Future;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::metrics::RetrainMetrics;
use super::webhook::Answered;
use crate::late_labels::race::{RaceCheck, RaceVerdict, Races, RejectReason};
use crate::registry::decision::{
    AlertRef, Contender, Decision, Inputs, RaceRecord, Rows, Scores, Source, Trigger, Verdict,
};
use crate::registry::history::{AliasAction, AliasChange};
use crate::registry::{Actor, Registry, RegistryError};
use crate::retrain::job::run_id;

/// How often the race is read.
const TICK: Duration = Duration::from_secs(2);

/// What [`settle`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The race settled: the challenger promoted or rejected, with its decision.
    Settled {
        verdict: Verdict,
        decision: Box<Decision>,
    },
    /// A promotion is guarded: the champion it replaced is in shadow.
    GuardStarted {
        champion: String,
        guarded_by: String,
    },
    /// The guard ended without a rollback, on this many labelled messages.
    GuardPassed { champion: String, labelled: usize },
    /// The guard rolled the new champion back, with its decision.
    RolledBack { decision: Box<Decision> },
}

/// The settings [`settle`] goes by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// `rollout.max_wait_s`.
    pub max_wait: Duration,
    /// `retrain.min_improvement`.
    pub margin: f64,
    /// `rollout.guard_labelled`.
    pub guard_labelled: usize,
    /// Alias changes numbered above this are guarded (the aliases' `seq` when the
    /// retrainer started): a promotion made while no retrainer ran is not raced after
    /// the fact. A guard in progress is in the aliases and goes on after a restart.
    pub guard_after_seq: u64,
}

/// One step of the rollout: settles the race between the champion and the
/// challenger on the aliases if its verdict is in, or guards a new champion, or
/// ends a guard; None when there is nothing to do.
pub fn settle(
    registry: &Registry,
    races: &Races,
    rules: &Rules,
    now: SystemTime,
) -> Result<Option<Action>, RegistryError> {
    let aliases = registry.aliases()?;
    // An alarm about a swap counts only for the guard running now: any step that
    // does not reach one drops it.
    let alarm = races.take_alarm();
    let Some(champion) = aliases.champion else {
        return Ok(None);
    };
    if aliases.challenger.is_none() && aliases.seq <= rules.guard_after_seq {
        // Nothing shadowed and no alias change since the retrainer started.
        return Ok(None);
    }
    // Read once per step; every helper below looks at this copy.
    let history = registry.history()?.entries;
    let replaced = aliases.history.last();
    let Some(challenger) = aliases.challenger else {
        return start_guard(registry, rules, &history, &champion, replaced);
    };
    let (max_wait, margin) = (rules.max_wait, rules.margin);
    let shadowing = last_shadowing(&history, &challenger);
    if shadowing
        .as_ref()
        .is_some_and(|(_, by)| *by == Actor::Guard)
    {
        if replaced.map(String::as_str) != Some(challenger.as_str()) {
            // Promoted again while a guard ran: guard the newest promotion instead.
            return start_guard(registry, rules, &history, &champion, replaced);
        }
        return guard(
            registry,
            (races, alarm),
            rules,
            &history,
            (&champion, &challenger),
            now,
        );
    }
    let check = races.get(&champion, &challenger);
    let verdict = match &check {
        Some(c) => c.verdict,
        None => {
            // No paired label yet: expired once max_wait has passed since the shadowing.
            let since = shadowing.map(|(at, _)| at);
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
        "race",
        (&champion, &challenger),
        check.as_ref(),
        margin,
        (recorded, reason),
        now,
    );
    registry.record_decision(&decision)?;
    Ok(Some(Action::Settled {
        verdict: recorded,
        decision: Box::new(decision),
    }))
}

/// When `challenger` was last put in shadow, and by whom, from the history.
fn last_shadowing(history: &[AliasChange], challenger: &str) -> Option<(SystemTime, Actor)> {
    history
        .iter()
        .rev()
        .find(|c| c.action == AliasAction::Shadow && c.to.as_deref() == Some(challenger))
        .and_then(|c| Some((humantime::parse_rfc3339_weak(&c.at).ok()?, c.by)))
}

/// Guards a promotion that nothing followed yet: the champion it replaced
/// (`replaced`, the one a rollback restores) goes into shadow, by `guard`.
fn start_guard(
    registry: &Registry,
    rules: &Rules,
    history: &[AliasChange],
    champion: &str,
    replaced: Option<&String>,
) -> Result<Option<Action>, RegistryError> {
    let Some(replaced) = replaced else {
        return Ok(None);
    };
    // The champion's promotion is the last change (nothing answered it yet), and it
    // happened while this retrainer ran.
    let promoted = history.last().is_some_and(|c| {
        c.action == AliasAction::Promote
            && c.to.as_deref() == Some(champion)
            && c.seq.is_some_and(|seq| seq > rules.guard_after_seq)
    });
    if !promoted || replaced == champion {
        return Ok(None);
    }
    let reason = format!(
        "guard: {replaced}, the champion {champion} replaced, scored in shadow until rollout.guard_labelled late-labelled messages show {champion} is not worse"
    );
    registry.shadow(replaced, &reason, Actor::Guard)?;
    Ok(Some(Action::GuardStarted {
        champion: champion.to_string(),
        guarded_by: replaced.clone(),
    }))
}

/// A guard's race (the new champion published, the replaced one in shadow): rolls
/// back when the replaced one wins, ends when enough messages say it does not.
/// `replaced` is the one a rollback restores (the caller checked).
fn guard(
    registry: &Registry,
    (races, alarm): (&Races, Option<String>),
    rules: &Rules,
    history: &[AliasChange],
    (champion, replaced): (&str, &str),
    now: SystemTime,
) -> Result<Option<Action>, RegistryError> {
    // Label-free first: they speak within minutes of the swap, labels take hours.
    if let Some(reason) = swap_alarm(races, alarm, champion, replaced) {
        let check = races.get(champion, replaced);
        return roll_back(
            registry,
            rules,
            (champion, replaced),
            check.as_ref(),
            reason,
            now,
        );
    }
    let Some(check) = races.get(champion, replaced) else {
        let since = last_shadowing(history, replaced).map(|(at, _)| at);
        let waited = since.map_or(Duration::ZERO, |at| {
            now.duration_since(at).unwrap_or_default()
        });
        if waited >= rules.max_wait {
            let reason = format!(
                "guard ended: no late label for a message both {champion} and {replaced} scored within rollout.max_wait_s; {champion} stays"
            );
            registry.unshadow(&reason, Actor::Guard)?;
            return Ok(Some(Action::GuardPassed {
                champion: champion.to_string(),
                labelled: 0,
            }));
        }
        return Ok(None);
    };
    if check.verdict == RaceVerdict::Promote {
        // The replaced champion beats the new one: roll back.
        let reason = format!(
            "guard: {champion} is worse than {replaced}, the champion it replaced, on the same {} late-labelled messages: macro-F1 {:.4} vs {:.4} ({:+.4}, paired bootstrap p = {:.4}); rolled back to {replaced}",
            check.labelled,
            check.champion_macro_f1,
            check.challenger_macro_f1,
            -check.difference,
            check.promote_p
        );
        return roll_back(
            registry,
            rules,
            (champion, replaced),
            Some(&check),
            reason,
            now,
        );
    }
    let held =
        check.labelled >= rules.guard_labelled || matches!(check.verdict, RaceVerdict::Reject(_));
    if !held {
        return Ok(None);
    }
    let reason = format!(
        "guard passed: {champion} is not worse than {replaced} on {} late-labelled messages (macro-F1 {:.4} vs {:.4})",
        check.labelled, check.champion_macro_f1, check.challenger_macro_f1
    );
    registry.unshadow(&reason, Actor::Guard)?;
    Ok(Some(Action::GuardPassed {
        champion: champion.to_string(),
        labelled: check.labelled,
    }))
}

/// Why the new champion must go without waiting for labels, if it must: its
/// confidence collapsed next to the replaced one's on the same messages, or an alert
/// about the swap (`TriageSwapDeadLetters`: model-caused dead letters after the
/// swap) reached the webhook while the guard ran.
fn swap_alarm(
    races: &Races,
    alarm: Option<String>,
    champion: &str,
    replaced: &str,
) -> Option<String> {
    if let Some(c) = races.confidence(champion, replaced).filter(|c| c.collapsed) {
        return Some(format!(
            "guard: {champion}'s confidence collapsed next to {replaced}, the champion it replaced, on the same {} messages: {:.3} vs {:.3} above chance, under rollout.confidence_collapse of the old one's (p = {:.4}); rolled back to {replaced}",
            c.predictions, c.published_mean, c.shadowed_mean, c.p_value
        ));
    }
    alarm.map(|alarm| {
        format!("guard: {alarm} while {champion} was guarded; rolled back to {replaced}")
    })
}

/// Rolls the guarded `champion` back to `replaced`, and records the decision (the
/// label race's figures when it has some) with the alerts it answers.
fn roll_back(
    registry: &Registry,
    rules: &Rules,
    (champion, replaced): (&str, &str),
    check: Option<&RaceCheck>,
    reason: String,
    now: SystemTime,
) -> Result<Option<Action>, RegistryError> {
    registry.rollback(&reason, Actor::Guard)?;
    let mut decision = race_decision(
        "guard",
        (champion, replaced),
        check,
        rules.margin,
        (Verdict::Rejected, reason),
        now,
    );
    decision.answered_alerts = alerts_behind(registry, champion)?;
    registry.record_decision(&decision)?;
    Ok(Some(Action::RolledBack {
        decision: Box::new(decision),
    }))
}

/// The alerts behind the job that fitted `version` (its decision's, the newest that
/// registered it): a rollback of `version` answers them.
fn alerts_behind(registry: &Registry, version: &str) -> Result<Vec<AlertRef>, RegistryError> {
    let decisions = registry.decisions()?.entries;
    Ok(decisions
        .into_iter()
        .rev()
        .find(|d| {
            d.challenger.as_ref().is_some_and(|c| c.version == version)
                && matches!(d.verdict, Verdict::Promoted | Verdict::Shadow)
                && d.race.is_none()
        })
        .map(|d| d.alerts)
        .unwrap_or_default())
}

/// The decision of a race (`kind` `race`) or a guard (`guard`): its id and trigger
/// say which; `versions` are the published one and the one in shadow.
fn race_decision(
    kind: &str,
    (champion, challenger): (&str, &str),
    check: Option<&RaceCheck>,
    margin: f64,
    (verdict, reason): (Verdict, String),
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
    Decision {
        id: run_id(kind),
        started_at: humantime::format_rfc3339_seconds(started).to_string(),
        finished_at: humantime::format_rfc3339_seconds(now).to_string(),
        trigger: Trigger::Other(kind.into()),
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
        alerts: Vec::new(),
        answered_alerts: Vec::new(),
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
    answered: Answered,
    rules: Rules,
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
        let settled =
            tokio::task::spawn_blocking(move || settle(&r, &races, &rules, SystemTime::now()))
                .await;
        match settled {
            Ok(Ok(Some(action))) => report(&action, &metrics, &answered),
            Ok(Ok(None)) => {}
            Ok(Err(err)) => {
                warn!(error = %err, "Live race: cannot read or write the registry; trying again.");
            }
            Err(err) => warn!(error = %err, "Live race: the check stopped."),
        }
    }
}

/// Logs an action and counts it.
fn report(action: &Action, metrics: &RetrainMetrics, answered: &Answered) {
    match action {
        Action::Settled { verdict, decision } => {
            metrics
                .jobs
                .with_label_values(&[&verdict.to_string()])
                .inc();
            info!(verdict = %verdict, id = %decision.id, reason = %decision.reason, "Live race settled.");
        }
        Action::GuardStarted {
            champion,
            guarded_by,
        } => {
            info!(champion = %champion, shadow = %guarded_by, "Guarding the new champion: the one it replaced is scored in shadow.");
        }
        Action::GuardPassed { champion, labelled } => {
            metrics.guards.with_label_values(&["passed"]).inc();
            info!(champion = %champion, labelled, "Guard passed: the new champion stays.");
        }
        Action::RolledBack { decision } => {
            answered.add(&decision.answered_alerts);
            metrics.guards.with_label_values(&["rolled_back"]).inc();
            metrics.rollbacks.with_label_values(&["guard"]).inc();
            warn!(id = %decision.id, reason = %decision.reason, "Guard rolled back the new champion.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::late_labels::confidence::ConfidenceCheck;
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

    const RULES: Rules = Rules {
        max_wait: Duration::from_secs(3600),
        margin: 0.01,
        guard_labelled: 200,
        guard_after_seq: 0,
    };

    fn decision_of(action: Option<Action>) -> (Verdict, Decision) {
        match action {
            Some(Action::Settled { verdict, decision }) => (verdict, *decision),
            other => panic!("not settled: {other:?}"),
        }
    }

    #[test]
    fn a_won_race_promotes_the_challenger_and_records_the_figures() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(dir.path());
        let races = Races::default();
        let now = SystemTime::now();
        // Still running: nothing happens.
        races.set("v1", "v2", check(RaceVerdict::Continue, 0.6, 0.7));
        assert_eq!(settle(&registry, &races, &RULES, now).unwrap(), None);
        races.set("v1", "v2", check(RaceVerdict::Promote, 0.6, 0.9));
        let (verdict, d) = decision_of(settle(&registry, &races, &RULES, now).unwrap());
        assert_eq!(verdict, Verdict::Promoted);
        let aliases = registry.aliases().unwrap();
        assert_eq!(aliases.champion.as_deref(), Some("v2"));
        assert_eq!(aliases.challenger, None);
        let recorded = registry.decisions().unwrap().entries;
        assert_eq!(recorded.last(), Some(&d));
        assert_eq!(d.trigger.to_string(), "race");
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
        // Next: the promotion is guarded, v1 back in shadow by the guard.
        assert_eq!(
            settle(&registry, &races, &RULES, now).unwrap(),
            Some(Action::GuardStarted {
                champion: "v2".into(),
                guarded_by: "v1".into()
            })
        );
        assert_eq!(
            registry.aliases().unwrap().challenger.as_deref(),
            Some("v1")
        );
    }

    #[test]
    fn a_lost_or_silent_race_clears_the_shadow_and_keeps_the_champion() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(dir.path());
        let races = Races::default();
        let now = SystemTime::now();
        races.set(
            "v1",
            "v2",
            check(RaceVerdict::Reject(RejectReason::Lost), 0.8, 0.6),
        );
        let (verdict, d) = decision_of(settle(&registry, &races, &RULES, now).unwrap());
        assert_eq!(verdict, Verdict::Rejected);
        assert!(d.reason.contains("significantly worse"));
        let aliases = registry.aliases().unwrap();
        assert_eq!(aliases.champion.as_deref(), Some("v1"));
        assert_eq!(aliases.challenger, None);

        // Shadowed again, and no paired label ever comes: expired after max_wait
        // from the shadowing, not before.
        registry.shadow("v2", "again", Actor::Cli).unwrap();
        let races = Races::default();
        assert_eq!(settle(&registry, &races, &RULES, now).unwrap(), None);
        let later = now + RULES.max_wait + Duration::from_secs(5);
        let (verdict, d) = decision_of(settle(&registry, &races, &RULES, later).unwrap());
        assert_eq!(verdict, Verdict::Rejected);
        assert!(d.reason.contains("no late label"), "{}", d.reason);
        assert!(d.race.is_none());
        assert_eq!(registry.aliases().unwrap().challenger, None);
        // A rejection is no promotion: nothing to guard.
        assert_eq!(settle(&registry, &races, &RULES, later).unwrap(), None);
    }

    fn alert() -> AlertRef {
        AlertRef {
            name: "TriagePerformanceDrop".into(),
            fingerprint: "5b1e0c7f2a9d3e11".into(),
            starts_at: "2026-12-06T17:00:00Z".into(),
        }
    }

    /// v1 champion, v2 (fitted by a job an alert started) promoted by hand, and its
    /// guard started (v1 in shadow).
    fn guarded(dir: &std::path::Path) -> (Registry, Races) {
        let registry = Registry::new(dir);
        crate::registry::testing::two_versions(&registry);
        let mut job = crate::registry::decision::fixture::decision("retrain-1", Verdict::Shadow);
        job.challenger.as_mut().unwrap().version = "v2".into();
        job.alerts = vec![alert()];
        registry.record_decision(&job).unwrap();
        registry.promote("v2", "by hand", Actor::Cli).unwrap();
        let races = Races::default();
        let started = settle(&registry, &races, &RULES, SystemTime::now()).unwrap();
        assert!(
            matches!(started, Some(Action::GuardStarted { .. })),
            "{started:?}"
        );
        (registry, races)
    }

    #[test]
    fn the_guard_rolls_back_a_champion_worse_than_the_one_it_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, races) = guarded(dir.path());
        let now = SystemTime::now();
        // The race runs the other way round: v2 published, v1 in shadow.
        let mut running = check(RaceVerdict::Continue, 0.7, 0.8);
        running.labelled = 150;
        races.set("v2", "v1", running);
        assert_eq!(settle(&registry, &races, &RULES, now).unwrap(), None);
        races.set("v2", "v1", check(RaceVerdict::Promote, 0.55, 0.85));
        let Some(Action::RolledBack { decision }) = settle(&registry, &races, &RULES, now).unwrap()
        else {
            panic!("no rollback");
        };
        // The alert behind v2's job is answered by the rollback.
        assert_eq!(decision.answered_alerts, vec![alert()]);
        assert_eq!(decision.trigger.to_string(), "guard");
        assert_eq!(decision.verdict, Verdict::Rejected);
        assert!(
            decision.reason.contains("v2 is worse than v1") && decision.reason.contains("-0.3000"),
            "{}",
            decision.reason
        );
        let aliases = registry.aliases().unwrap();
        assert_eq!(aliases.champion.as_deref(), Some("v1"));
        assert_eq!(aliases.challenger, None);
        let history = registry.history().unwrap().entries;
        let last = history.last().unwrap();
        assert_eq!(
            (last.action, last.by),
            (AliasAction::Rollback, Actor::Guard)
        );
        // A rollback is not guarded in turn.
        assert_eq!(settle(&registry, &races, &RULES, now).unwrap(), None);
    }

    #[test]
    fn the_guard_rolls_back_on_a_confidence_collapse_before_any_label() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, races) = guarded(dir.path());
        let now = SystemTime::now();
        let collapse = |collapsed| ConfidenceCheck {
            predictions: 120,
            published_mean: 0.04,
            shadowed_mean: 0.61,
            p_value: if collapsed { 1e-9 } else { 0.3 },
            collapsed,
        };
        races.set_confidence("v2", "v1", collapse(false));
        assert_eq!(settle(&registry, &races, &RULES, now).unwrap(), None);
        races.set_confidence("v2", "v1", collapse(true));
        let Some(Action::RolledBack { decision }) = settle(&registry, &races, &RULES, now).unwrap()
        else {
            panic!("no rollback");
        };
        assert!(
            decision.reason.contains("confidence collapsed")
                && decision.reason.contains("0.040 vs 0.610"),
            "{}",
            decision.reason
        );
        assert!(decision.race.is_none(), "no label race yet");
        assert_eq!(decision.answered_alerts, vec![alert()]);
        assert_eq!(registry.aliases().unwrap().champion.as_deref(), Some("v1"));
    }

    #[test]
    fn a_swap_alarm_rolls_back_a_guarded_champion_and_is_dropped_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, races) = guarded(dir.path());
        let now = SystemTime::now();
        races.raise_alarm("alert TriageSwapDeadLetters (fingerprint f)".into());
        let Some(Action::RolledBack { decision }) = settle(&registry, &races, &RULES, now).unwrap()
        else {
            panic!("no rollback");
        };
        assert!(
            decision.reason.contains("TriageSwapDeadLetters"),
            "{}",
            decision.reason
        );
        // Nothing guarded now: a later alarm is dropped, not kept for the next guard.
        races.raise_alarm("alert TriageSwapDeadLetters (fingerprint g)".into());
        assert_eq!(settle(&registry, &races, &RULES, now).unwrap(), None);
        assert_eq!(races.take_alarm(), None);
    }

    #[test]
    fn a_promotion_during_a_guard_is_guarded_instead_and_an_old_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, races) = guarded(dir.path());
        // v2 guarded by v1; v1 promoted back by hand: now v1 is guarded by v2.
        registry.promote("v1", "by hand again", Actor::Cli).unwrap();
        assert_eq!(
            settle(&registry, &races, &RULES, SystemTime::now()).unwrap(),
            Some(Action::GuardStarted {
                champion: "v1".into(),
                guarded_by: "v2".into()
            })
        );
        // A retrainer started after the last promotion does not guard it.
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        crate::registry::testing::two_versions(&registry);
        registry
            .promote("v2", "before the start", Actor::Cli)
            .unwrap();
        let later = Rules {
            guard_after_seq: registry.aliases().unwrap().seq,
            ..RULES
        };
        assert_eq!(
            settle(&registry, &races, &later, SystemTime::now()).unwrap(),
            None
        );
    }

    #[test]
    fn the_guard_ends_once_enough_messages_say_the_new_champion_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, races) = guarded(dir.path());
        let now = SystemTime::now();
        let mut c = check(RaceVerdict::Continue, 0.8, 0.79);
        c.labelled = 150;
        races.set("v2", "v1", c.clone());
        assert_eq!(settle(&registry, &races, &RULES, now).unwrap(), None);
        c.labelled = 200;
        races.set("v2", "v1", c);
        assert_eq!(
            settle(&registry, &races, &RULES, now).unwrap(),
            Some(Action::GuardPassed {
                champion: "v2".into(),
                labelled: 200
            })
        );
        let aliases = registry.aliases().unwrap();
        assert_eq!(
            (aliases.champion.as_deref(), aliases.challenger),
            (Some("v2"), None)
        );
        assert_eq!(settle(&registry, &races, &RULES, now).unwrap(), None);
    }
}
