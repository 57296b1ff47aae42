//! The real [`RetrainJob`] behind `triage retrainer`: each alert-triggered run loads
//! the embedder, runs [`job::run`](super::job::run) off the async runtime, and turns
//! its recorded decision into the receiver's [`JobOutcome`]. The embedder is loaded
//! per run, not kept: retrains are rare, and between them the receiver stays small.

use futures::future::BoxFuture;

use super::metrics::DecisionScores;
use super::{JobOutcome, RetrainJob, Trigger};
use crate::config::Settings;
use crate::embed::{EmbedderPool, OnnxEmbedder};
use crate::registry::decision::{self, Decision, Verdict};
use crate::retrain::job::{self, JobOptions};

/// Fits, judges and (maybe) promotes a challenger for each trigger.
pub struct TrainingJob {
    settings: Settings,
    scores: DecisionScores,
}

impl TrainingJob {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            scores: DecisionScores::new(),
        }
    }
}

impl RetrainJob for TrainingJob {
    fn run(&self, trigger: Trigger) -> BoxFuture<'_, JobOutcome> {
        let settings = self.settings.clone();
        let recorded = recorded_trigger(&trigger);
        let options = JobOptions {
            alerts: trigger.alert_refs(),
            ..JobOptions::default()
        };
        let scores = self.scores.clone();
        Box::pin(async move {
            let ran = tokio::task::spawn_blocking(move || {
                let sessions = settings.stream.workers.max(1);
                match OnnxEmbedder::load_many(&settings, sessions) {
                    Ok(members) => job::run(
                        &settings,
                        &mut EmbedderPool::new(members),
                        recorded,
                        &options,
                    ),
                    Err(e) => job::failed_to_start(
                        &settings,
                        recorded,
                        format!("the embedder did not load: {e}"),
                    ),
                }
            })
            .await;
            match ran {
                Ok(decision) => {
                    scores.record(decision.champion.as_ref(), decision.challenger.as_ref());
                    if decision.verdict == Verdict::Failed {
                        scores.failed(decision.cause.as_deref());
                    }
                    outcome_of(&decision)
                }
                Err(e) => {
                    scores.failed(None);
                    JobOutcome::Failed {
                        reason: format!("the retrain job stopped: {e}"),
                    }
                }
            }
        })
    }

    fn decision_scores(&self) -> Option<DecisionScores> {
        Some(self.scores.clone())
    }

    fn rollout(&self) -> Option<crate::config::RolloutSettings> {
        Some(self.settings.rollout.clone())
    }
}

fn outcome_of(d: &Decision) -> JobOutcome {
    match d.verdict {
        Verdict::Promoted => JobOutcome::Promoted {
            version: d
                .challenger
                .as_ref()
                .map_or_else(String::new, |c| c.version.clone()),
        },
        Verdict::Shadow => JobOutcome::Shadow {
            version: d
                .challenger
                .as_ref()
                .map_or_else(String::new, |c| c.version.clone()),
        },
        Verdict::Rejected => JobOutcome::Rejected {
            reason: d.reason.clone(),
        },
        Verdict::Failed => JobOutcome::Failed {
            reason: d.reason.clone(),
        },
    }
}

/// The trigger as the decision records it: `schedule`, `alert:<names>`, or both
/// (`schedule+alert:<names>`, a scheduled run that alerts joined while it waited).
pub fn recorded_trigger(trigger: &Trigger) -> decision::Trigger {
    let names = trigger.names().join(",");
    match (trigger.scheduled, names.is_empty()) {
        (true, true) => decision::Trigger::Schedule,
        (true, false) => decision::Trigger::Other(format!("schedule+alert:{names}")),
        (false, _) => decision::Trigger::Alert(names),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrainer::TriggerAlert;

    #[test]
    fn the_decision_names_the_schedule_the_alerts_or_both() {
        assert_eq!(
            recorded_trigger(&Trigger::scheduled()),
            decision::Trigger::Schedule
        );
        let alert = TriggerAlert {
            name: "TriagePerformanceDrop".into(),
            fingerprint: "f".into(),
            labels: Default::default(),
            starts_at: String::new(),
        };
        let alerted = Trigger::new(vec![alert]);
        assert_eq!(
            recorded_trigger(&alerted).to_string(),
            "alert:TriagePerformanceDrop"
        );
        let mut both = Trigger::scheduled();
        both.merge(alerted);
        assert_eq!(
            recorded_trigger(&both).to_string(),
            "schedule+alert:TriagePerformanceDrop"
        );
    }
}
