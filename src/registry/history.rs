//! The registry's journals: the champion's history (`events.jsonl`, one line per alias
//! change) and, through the same reader, the retraining decisions (`decisions.jsonl`).
//! Both are append-only JSON lines; an append rewrites the object through the store's
//! read-modify-write, so concurrent writers cannot lose or tear each other's lines.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::RegistryError;

/// Who moved an alias (the `by` field of an alias change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Actor {
    /// A person, through `triage models promote` / `rollback`.
    Cli,
    /// The retraining job, after a challenger beat the champion.
    Retrainer,
    /// `triage train`, for a model that passed every gate.
    Training,
    /// The live race (`triage retrainer`): a challenger in shadow promoted or
    /// rejected on the late labels of the messages both models scored.
    Race,
    /// The guard after a promotion (`triage retrainer`): rolls a new champion back
    /// when the one it replaced beats it on the same late-labelled messages.
    Guard,
    /// Written before changes recorded who made them, or by a triage that knows an
    /// actor this one does not (such as `console`, which no release ever wrote).
    #[serde(other)]
    Unknown,
}

impl Actor {
    fn unknown() -> Self {
        Self::Unknown
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cli => "cli",
            Self::Retrainer => "retrainer",
            Self::Training => "training",
            Self::Race => "race",
            Self::Guard => "guard",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to the champion alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AliasAction {
    /// A version became the champion (by hand, by training or by the retrainer:
    /// `by` says which).
    Promote,
    /// The previous champion was put back.
    Rollback,
    /// A version became the challenger, scored in shadow beside the champion
    /// (`from` and `to` name the challenger, not the champion).
    Shadow,
    /// The challenger alias was cleared (`from` names the challenger it was).
    Unshadow,
    /// An action written by a newer triage.
    #[serde(other)]
    Other,
}

impl AliasAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::Rollback => "rollback",
            Self::Shadow => "shadow",
            Self::Unshadow => "unshadow",
            Self::Other => "other",
        }
    }

    /// The alias this action moves: its event's `from` and `to` name that alias's
    /// version before and after.
    pub fn alias(self) -> &'static str {
        if self.moves_champion() {
            "champion"
        } else {
            "challenger"
        }
    }

    /// Whether this action moves the champion (not only the challenger).
    pub fn moves_champion(self) -> bool {
        !matches!(self, Self::Shadow | Self::Unshadow)
    }

    /// The version the alias this action moves names in `aliases`.
    pub(super) fn moved(self, aliases: &super::Aliases) -> &Option<String> {
        if self.moves_champion() {
            &aliases.champion
        } else {
            &aliases.challenger
        }
    }
}

impl fmt::Display for AliasAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change of the champion alias (or, for `shadow` and `unshadow`, of the
/// challenger alias): a line of `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasChange {
    /// RFC 3339, UTC, whole seconds.
    pub at: String,
    pub action: AliasAction,
    /// The champion before (none for the first promotion). A line naming anything
    /// but a version is skipped as damaged.
    #[serde(default, deserialize_with = "super::name::optional")]
    pub from: Option<String>,
    /// The champion after.
    #[serde(default, deserialize_with = "super::name::optional")]
    pub to: Option<String>,
    /// Why, in a sentence.
    pub reason: String,
    /// Who; `unknown` for lines written before triage recorded it.
    #[serde(default = "Actor::unknown")]
    pub by: Actor,
    /// The alias file's `seq` after this change; orders the history when two
    /// writers' lines land out of order. None in lines written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// A line of a journal that could not be read; reading goes on without it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkippedLine {
    /// 1-based line number in the file.
    pub line: usize,
    pub reason: String,
}

/// The readable entries of a journal, oldest first, and the lines that were not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Journal<T> {
    pub entries: Vec<T>,
    /// Damaged lines (a torn write, a hand edit) are skipped, not fatal: one bad
    /// line must not hide the rest of the history.
    pub skipped: Vec<SkippedLine>,
}

impl<T> Default for Journal<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            skipped: Vec::new(),
        }
    }
}

/// Reads a JSON-lines journal (`location` names it in the log). Blank lines are
/// ignored, unreadable ones counted in `skipped` and logged once.
pub(super) fn parse_journal<T: DeserializeOwned>(text: &str, location: &str) -> Journal<T> {
    let mut journal = Journal::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(entry) => journal.entries.push(entry),
            Err(e) => journal.skipped.push(SkippedLine {
                line: i + 1,
                reason: e.to_string(),
            }),
        }
    }
    if !journal.skipped.is_empty() {
        let lines: Vec<usize> = journal.skipped.iter().map(|s| s.line).collect();
        warn!(target: "triage::registry", path = %location, skipped = journal.skipped.len(), ?lines, "Unreadable journal lines skipped.");
    }
    journal
}

/// `entry` as one JSON line, newline included.
pub(super) fn json_line<T: Serialize>(entry: &T) -> Result<String, RegistryError> {
    let mut line =
        serde_json::to_string(entry).map_err(|e| RegistryError::Runtime(e.to_string()))?;
    line.push('\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_event_lines_without_by_read_as_unknown() {
        let line = r#"{"at":"2026-01-02T03:04:05Z","action":"promote","from":null,"to":"v1","reason":"trained and passed every gate"}"#;
        let change: AliasChange = serde_json::from_str(line).unwrap();
        assert_eq!(change.by, Actor::Unknown);
        assert_eq!(change.action, AliasAction::Promote);
        assert_eq!(change.to.as_deref(), Some("v1"));
    }

    #[test]
    fn actors_and_actions_from_a_newer_triage_still_read() {
        let line =
            r#"{"at":"t","action":"canary","from":"v1","to":"v1","reason":"r","by":"scheduler"}"#;
        let change: AliasChange = serde_json::from_str(line).unwrap();
        assert_eq!(change.by, Actor::Unknown);
        assert_eq!(change.action, AliasAction::Other);
    }

    #[test]
    fn a_line_by_the_console_an_actor_no_longer_known_still_reads() {
        let line =
            r#"{"at":"t","action":"promote","from":"v1","to":"v2","reason":"r","by":"console"}"#;
        let change: AliasChange = serde_json::from_str(line).unwrap();
        assert_eq!(change.by, Actor::Unknown);
        assert_eq!(change.to.as_deref(), Some("v2"));
    }

    #[test]
    fn alias_change_round_trips_with_kebab_case_names() {
        let change = AliasChange {
            at: "2026-01-02T03:04:05Z".into(),
            action: AliasAction::Rollback,
            from: Some("v2".into()),
            to: Some("v1".into()),
            reason: "rolled back by hand".into(),
            by: Actor::Retrainer,
            seq: Some(7),
        };
        let json = serde_json::to_string(&change).unwrap();
        assert!(json.contains(r#""by":"retrainer""#), "{json}");
        assert!(json.contains(r#""action":"rollback""#), "{json}");
        assert_eq!(serde_json::from_str::<AliasChange>(&json).unwrap(), change);
    }

    #[test]
    fn shadow_lines_read_back_and_old_aliases_files_have_no_challenger() {
        let line =
            r#"{"at":"t","action":"unshadow","from":"v3","to":null,"reason":"r","by":"cli"}"#;
        let change: AliasChange = serde_json::from_str(line).unwrap();
        assert_eq!(change.action, AliasAction::Unshadow);
        assert!(!change.action.moves_champion());
        let old: super::super::Aliases =
            serde_json::from_str(r#"{"champion": "v2", "previous": "v1", "history": ["v1"]}"#)
                .unwrap();
        assert_eq!(old.challenger, None);
        let bad = serde_json::from_str::<super::super::Aliases>(
            r#"{"champion": "v2", "challenger": "../x"}"#,
        );
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("is not a version name")
        );
    }

    #[test]
    fn journal_skips_and_counts_unreadable_lines() {
        let good = r#"{"at":"t","action":"promote","from":null,"to":"v1","reason":"r","by":"cli"}"#;
        let text = format!("{good}\n{{\"at\": \"torn\n\n{good}\nnot json\n");
        let journal: Journal<AliasChange> = parse_journal(&text, "events.jsonl");
        assert_eq!(journal.entries.len(), 2);
        let lines: Vec<usize> = journal.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, [2, 5]);
    }

    #[test]
    fn a_line_naming_something_other_than_a_version_is_skipped_with_the_reason() {
        let text = concat!(
            r#"{"at":"t","action":"promote","from":null,"to":"../../etc","reason":"r"}"#,
            "\n",
            r#"{"at":"t","action":"promote","from":"v1/..","to":"v2","reason":"r"}"#,
            "\n",
            r#"{"at":"t","action":"promote","from":null,"to":"v2","reason":"r"}"#,
        );
        let journal: Journal<AliasChange> = parse_journal(text, "events.jsonl");
        assert_eq!(journal.entries.len(), 1);
        assert_eq!(journal.entries[0].to.as_deref(), Some("v2"));
        assert_eq!(journal.skipped.len(), 2);
        assert!(
            journal.skipped[0]
                .reason
                .contains("model version '../../etc' is not a version name"),
            "{:?}",
            journal.skipped
        );
    }

    #[test]
    fn missing_journal_is_empty() {
        let journal: Journal<AliasChange> = parse_journal("", "none.jsonl");
        assert_eq!(journal, Journal::default());
    }
}
