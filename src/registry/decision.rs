//! The retraining decision record: what a retraining run took in, how champion and
//! challenger scored on the same held-out data, and what was decided and why. One
//! per run, promoted or not, appended to `decisions.jsonl` by
//! [`Registry::record_decision`](super::Registry::record_decision).
//!
//! Plain data: the retraining job fills it in; the registry stores it; the CLI and
//! the console show it. (Not to be confused with [`crate::model::decision`], the
//! classifier's decision rule.)

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::evaluation::Evaluation;

/// One retraining run's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Unique per run, e.g. `retrain-20260102T030405Z`.
    pub id: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// RFC 3339, UTC.
    pub finished_at: String,
    pub trigger: Trigger,
    pub inputs: Inputs,
    pub rows: Rows,
    /// The champion when the run started, scored on the held-out slice; none when
    /// there was no champion (or it could not be scored: `reason` says).
    pub champion: Option<Contender>,
    /// The model trained by the run; none when training failed.
    pub challenger: Option<Contender>,
    /// How much the challenger's held-out macro-F1 had to exceed the champion's.
    pub margin_required: f64,
    pub verdict: Verdict,
    /// Why, in a sentence for people ("challenger macro-F1 0.81 beat the champion's
    /// 0.78 by more than the 0.01 margin").
    pub reason: String,
    /// For a failed run, what failed, as a stable key (`read`, `not_enough_data`,
    /// `training`, ...: `retrain::error::RetrainError::cause`). Absent otherwise, and
    /// in decisions recorded before causes were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub duration_seconds: f64,
    /// Wall time of each step, in order (read, split, train, evaluate, ...): where
    /// the loop's latency goes. Empty in decisions recorded before steps were timed.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// For a live race's outcome (`retrain.rollout = "shadow"`): the paired test on
    /// the late-labelled messages both models scored. Absent for other runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub race: Option<RaceRecord>,
    /// The alerts that asked for the run (each distinct one, as Alertmanager named
    /// it). Empty for runs no alert started, and in decisions recorded before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertRef>,
    /// For a guard's rollback: the alerts behind the run that produced the version
    /// rolled back. They are answered: the retrainer does not start a job for them
    /// again; the same alert resolving and firing anew (a new `starts_at`) does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answered_alerts: Vec<AlertRef>,
}

/// One firing alert, as a decision names it: Alertmanager's fingerprint of its
/// label set and when it started firing tell this firing from a later one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertRef {
    pub name: String,
    pub fingerprint: String,
    pub starts_at: String,
}

/// A live race's figures, as its decision records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaceRecord {
    /// Late-labelled messages both models predicted.
    pub labelled: u64,
    pub champion_macro_f1: f64,
    pub challenger_macro_f1: f64,
    /// The test that decides: a paired bootstrap of the macro-F1 difference.
    pub test: String,
    /// P-value of "challenger - champion <= the required margin" (small: promote).
    pub promote_p_value: f64,
    /// P-value of "challenger >= champion" (small: it lost).
    pub lose_p_value: f64,
    /// McNemar beside it: messages only the challenger, only the champion got right,
    /// and its two-sided p-value.
    pub mcnemar_challenger_only: u64,
    pub mcnemar_champion_only: u64,
    pub mcnemar_p_value: f64,
    /// Seconds from the challenger's first paired label to the verdict.
    pub seconds: f64,
}

/// One step of a run and its wall time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub seconds: f64,
}

/// What started the run. Written as a string: `cli`, `schedule`, or
/// `alert:<alertname>` (e.g. `alert:TriageDriftDetected`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum Trigger {
    Cli,
    Schedule,
    /// An Alertmanager alert, by its `alertname`.
    Alert(String),
    /// Anything else (a newer triage's trigger, an orchestrator's name).
    Other(String),
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cli => f.write_str("cli"),
            Self::Schedule => f.write_str("schedule"),
            Self::Alert(name) => write!(f, "alert:{name}"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

impl From<Trigger> for String {
    fn from(trigger: Trigger) -> Self {
        trigger.to_string()
    }
}

impl From<String> for Trigger {
    fn from(s: String) -> Self {
        match s.as_str() {
            "cli" => Self::Cli,
            "schedule" => Self::Schedule,
            _ => match s.strip_prefix("alert:") {
                Some(name) => Self::Alert(name.to_string()),
                None => Self::Other(s),
            },
        }
    }
}

/// The data the run trained and judged on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    /// Each source and the rows it gave.
    pub sources: Vec<Source>,
    /// Time range of the recent records taken, milliseconds since the Unix epoch
    /// (none when a source is not time-bound, e.g. only the original training file).
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

/// One input source: a description for people and its row count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// e.g. `features topic, labelled records` or `original training set data/support.csv`.
    pub description: String,
    pub rows: u64,
}

/// Rows after the split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rows {
    pub train: u64,
    /// The held-out slice both models were scored on.
    pub held_out: u64,
}

/// A model version and its scores on the run's held-out slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contender {
    /// A version name: a line naming anything else is skipped as damaged.
    #[serde(deserialize_with = "super::name::one")]
    pub version: String,
    pub metrics: Scores,
}

/// The held-out scores a decision compares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub accuracy: f64,
    pub macro_f1: f64,
    /// F1 per label.
    pub per_class_f1: BTreeMap<String, f64>,
}

impl From<&Evaluation> for Scores {
    fn from(e: &Evaluation) -> Self {
        Self {
            accuracy: e.accuracy,
            macro_f1: e.macro_f1,
            per_class_f1: e
                .per_class
                .iter()
                .map(|c| (c.label.clone(), c.f1))
                .collect(),
        }
    }
}

/// What the run decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The challenger became the champion.
    Promoted,
    /// The challenger was stored but did not beat the champion (or failed a gate).
    Rejected,
    /// The run did not produce a challenger to judge (no data, training error).
    Failed,
    /// The challenger beat the champion on the held-out slice and now races it in
    /// shadow on live traffic (`retrain.rollout = "shadow"`); a later decision, by
    /// the race, promotes or rejects it.
    Shadow,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Promoted => "promoted",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Shadow => "shadow",
        })
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    use super::*;

    fn scores(macro_f1: f64) -> Scores {
        Scores {
            accuracy: macro_f1 + 0.02,
            macro_f1,
            per_class_f1: [
                ("billing".to_string(), macro_f1 - 0.05),
                ("refund".to_string(), macro_f1 + 0.05),
            ]
            .into_iter()
            .collect(),
        }
    }

    /// A complete decision for registry tests.
    pub fn decision(id: &str, verdict: Verdict) -> Decision {
        Decision {
            id: id.into(),
            started_at: "2026-01-02T03:04:05Z".into(),
            finished_at: "2026-01-02T03:05:10Z".into(),
            trigger: Trigger::Alert("TriageDriftDetected".into()),
            inputs: Inputs {
                sources: vec![
                    Source {
                        description: "features topic, labelled records".into(),
                        rows: 1200,
                    },
                    Source {
                        description: "original training set support.csv".into(),
                        rows: 2000,
                    },
                ],
                from_ms: Some(1_767_225_600_000),
                to_ms: Some(1_767_323_045_000),
            },
            rows: Rows {
                train: 2880,
                held_out: 320,
            },
            champion: Some(Contender {
                version: "v3".into(),
                metrics: scores(0.78),
            }),
            challenger: Some(Contender {
                version: "v4".into(),
                metrics: scores(0.81),
            }),
            margin_required: 0.01,
            verdict,
            reason: "challenger macro-F1 0.8100 vs champion 0.7800 (margin 0.01)".into(),
            cause: None,
            duration_seconds: 65.0,
            steps: vec![Step {
                name: "train".into(),
                seconds: 50.0,
            }],
            race: None,
            alerts: Vec::new(),
            answered_alerts: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_round_trips_through_json() {
        let decision = fixture::decision("retrain-1", Verdict::Promoted);
        let json = serde_json::to_string(&decision).unwrap();
        assert_eq!(serde_json::from_str::<Decision>(&json).unwrap(), decision);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["trigger"], "alert:TriageDriftDetected");
        assert_eq!(value["verdict"], "promoted");
        let refund = decision.challenger.as_ref().unwrap().metrics.per_class_f1["refund"];
        assert_eq!(
            value["challenger"]["metrics"]["per_class_f1"]["refund"],
            refund
        );
    }

    #[test]
    fn failed_run_has_no_challenger_and_round_trips() {
        let mut decision = fixture::decision("retrain-2", Verdict::Failed);
        decision.challenger = None;
        decision.reason = "training failed: no labelled records in the window".into();
        let json = serde_json::to_string(&decision).unwrap();
        assert!(json.contains(r#""challenger":null"#), "{json}");
        assert_eq!(serde_json::from_str::<Decision>(&json).unwrap(), decision);
    }

    #[test]
    fn decision_without_steps_still_reads() {
        let mut value =
            serde_json::to_value(fixture::decision("retrain-3", Verdict::Rejected)).unwrap();
        value.as_object_mut().unwrap().remove("steps");
        let decision: Decision = serde_json::from_value(value).unwrap();
        assert!(decision.steps.is_empty());
    }

    #[test]
    fn triggers_read_and_write_as_strings() {
        for (text, trigger) in [
            ("cli", Trigger::Cli),
            ("schedule", Trigger::Schedule),
            (
                "alert:TriageDriftDetected",
                Trigger::Alert("TriageDriftDetected".into()),
            ),
            ("airflow", Trigger::Other("airflow".into())),
        ] {
            assert_eq!(Trigger::from(text.to_string()), trigger);
            assert_eq!(trigger.to_string(), text);
        }
    }

    #[test]
    fn scores_take_f1_per_label_from_an_evaluation() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let e = crate::model::evaluation::evaluate(&labels, &[0, 0, 1, 1], &[0, 1, 1, 1]);
        let s = Scores::from(&e);
        assert_eq!(s.accuracy, 0.75);
        assert_eq!(s.macro_f1, e.macro_f1);
        assert_eq!(s.per_class_f1["a"], e.per_class[0].f1);
        assert_eq!(s.per_class_f1["b"], e.per_class[1].f1);
    }
}
