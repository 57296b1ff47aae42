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
        let recorded = decision::Trigger::Alert(trigger.names().join(","));
        let scores = self.scores.clone();
        Box::pin(async move {
            let ran = tokio::task::spawn_blocking(move || {
                let sessions = settings.stream.workers.max(1);
                match OnnxEmbedder::load_many(&settings, sessions) {
                    Ok(members) => job::run(
                        &settings,
                        &mut EmbedderPool::new(members),
                        recorded,
                        &JobOptions::default(),
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
}

fn outcome_of(d: &Decision) -> JobOutcome {
    match d.verdict {
        Verdict::Promoted => JobOutcome::Promoted {
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
