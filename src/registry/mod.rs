//! The model registry: a directory of immutable model versions and the `champion`
//! and `previous` aliases.
//!
//! ```text
//! <registry_dir>/
//!   versions/v1/{model.json, card.json, reference.json}
//!   versions/v2/...
//!   aliases.json      {"champion": "v2", "previous": "v1", "history": ["v1"]}
//!   events.jsonl      one line per champion change: when, what, from, to, why, by whom
//!   decisions.jsonl   one line per retraining decision (see [`decision::Decision`])
//! ```
//! A version is written to a temporary folder and renamed into place, so a reader
//! never sees half a version. Alias changes are written the same way, under a lock
//! file, so two writers cannot lose each other's change.

pub mod card;
pub mod decision;
pub mod history;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::drift::DriftReference;
use crate::model::Model;
pub use card::ModelCard;
pub use decision::Decision;
pub use history::{Actor, AliasAction, AliasChange, Journal, SkippedLine};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid {what}: {reason}; the file is damaged, promote or train another version"
    )]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("no model version {0:?} in the registry; `triage models list` shows the versions")]
    UnknownVersion(String),
    #[error(
        "no champion yet in {0}; train one with `triage train --data FILE`, or promote one with `triage models promote VERSION`"
    )]
    NoChampion(PathBuf),
    #[error("there is no previous champion to roll back to")]
    NothingToRollBack,
    #[error(
        "registry {path} is locked by another writer (lock file {lock}); if no triage is running, delete the lock file"
    )]
    Locked { path: PathBuf, lock: PathBuf },
}

/// Where the aliases point, and the champions before the current one (most recent last).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Aliases {
    pub champion: Option<String>,
    pub previous: Option<String>,
    pub history: Vec<String>,
}

/// A loaded model version.
#[derive(Debug, Clone)]
pub struct ModelVersion {
    pub card: ModelCard,
    pub classifier: Model,
    pub reference: DriftReference,
}

/// A model registry rooted at a directory (created on first write).
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(
    path: &Path,
    what: &'static str,
) -> Result<T, RegistryError> {
    let bytes = fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| RegistryError::Corrupt {
        path: path.to_path_buf(),
        what,
        reason: e.to_string(),
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RegistryError> {
    let mut file = fs::File::create(path).map_err(io(path))?;
    let json = serde_json::to_vec_pretty(value).map_err(|e| RegistryError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    file.write_all(&json).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// The version number of `v12` (or `12`).
fn version_number(name: &str) -> Option<u64> {
    name.strip_prefix('v').unwrap_or(name).parse().ok()
}

impl Registry {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn versions_dir(&self) -> PathBuf {
        self.root.join("versions")
    }

    /// The folder of a version.
    pub fn version_dir(&self, version: &str) -> PathBuf {
        self.versions_dir().join(version)
    }

    /// The file the champion alias lives in (watched by serving processes).
    pub fn aliases_path(&self) -> PathBuf {
        self.root.join("aliases.json")
    }

    /// All versions, oldest first.
    pub fn versions(&self) -> Result<Vec<String>, RegistryError> {
        let dir = self.versions_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut versions: Vec<(u64, String)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| name.starts_with('v'))
            .filter_map(|name| version_number(&name).map(|n| (n, name)))
            .collect();
        versions.sort();
        Ok(versions.into_iter().map(|(_, v)| v).collect())
    }

    /// Stores a new immutable version and returns its name (`v1`, `v2`, ...). The
    /// card's `version` field is set here.
    pub fn register(
        &self,
        classifier: &Model,
        mut card: ModelCard,
        reference: &DriftReference,
    ) -> Result<String, RegistryError> {
        let versions_dir = self.versions_dir();
        fs::create_dir_all(&versions_dir).map_err(io(&versions_dir))?;
        let tmp = versions_dir.join(format!(".tmp-{}-{}", std::process::id(), nanos()));
        fs::create_dir(&tmp).map_err(io(&tmp))?;
        let result = (|| {
            let mut next = self
                .versions()?
                .last()
                .and_then(|v| version_number(v))
                .unwrap_or(0)
                + 1;
            write_json(&tmp.join("model.json"), classifier)?;
            write_json(&tmp.join("reference.json"), reference)?;
            // Another writer may take the same number: rename fails, try the next one.
            loop {
                let version = format!("v{next}");
                card.version = version.clone();
                write_json(&tmp.join("card.json"), &card)?;
                let target = versions_dir.join(&version);
                if !target.exists() && fs::rename(&tmp, &target).is_ok() {
                    return Ok(version);
                }
                next += 1;
            }
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Resolves `champion`, `previous`, `v3` or `3` to a version name that exists.
    pub fn resolve(&self, name: &str) -> Result<String, RegistryError> {
        let aliases = self.aliases()?;
        let version = match name {
            "champion" => aliases
                .champion
                .ok_or_else(|| RegistryError::NoChampion(self.root.clone()))?,
            "previous" => aliases
                .previous
                .ok_or_else(|| RegistryError::UnknownVersion("previous".into()))?,
            other => match version_number(other) {
                Some(n) => format!("v{n}"),
                None => return Err(RegistryError::UnknownVersion(other.into())),
            },
        };
        if self.version_dir(&version).join("card.json").is_file() {
            Ok(version)
        } else {
            Err(RegistryError::UnknownVersion(version))
        }
    }

    pub fn card(&self, version: &str) -> Result<ModelCard, RegistryError> {
        let version = self.resolve(version)?;
        read_json(&self.version_dir(&version).join("card.json"), "model card")
    }

    /// Loads a whole version and checks that its parts agree.
    pub fn load(&self, version: &str) -> Result<ModelVersion, RegistryError> {
        let version = self.resolve(version)?;
        let dir = self.version_dir(&version);
        let card: ModelCard = read_json(&dir.join("card.json"), "model card")?;
        let model_path = dir.join("model.json");
        let stored: serde_json::Value = read_json(&model_path, "model")?;
        let reference: DriftReference = read_json(&dir.join("reference.json"), "drift reference")?;
        let corrupt = |reason: String| RegistryError::Corrupt {
            path: model_path.clone(),
            what: "model",
            reason,
        };
        let classifier = Model::from_json(stored).map_err(|e| corrupt(e.to_string()))?;
        if classifier.labels() != card.labels.as_slice() {
            return Err(corrupt(format!(
                "labels {:?} differ from the card's {:?}",
                classifier.labels(),
                card.labels
            )));
        }
        if classifier.dimension() != card.embedding.dimension {
            return Err(corrupt(format!(
                "{} features, the card says {}",
                classifier.dimension(),
                card.embedding.dimension
            )));
        }
        Ok(ModelVersion {
            card,
            classifier,
            reference,
        })
    }

    pub fn aliases(&self) -> Result<Aliases, RegistryError> {
        let path = self.aliases_path();
        if !path.exists() {
            return Ok(Aliases::default());
        }
        read_json(&path, "alias file")
    }

    /// The champion's history file (`events.jsonl`).
    pub fn events_path(&self) -> PathBuf {
        self.root.join("events.jsonl")
    }

    /// The retraining decisions file (`decisions.jsonl`).
    pub fn decisions_path(&self) -> PathBuf {
        self.root.join("decisions.jsonl")
    }

    /// Makes `version` the champion; the old champion becomes `previous`. `by` is
    /// recorded in the history with `reason`.
    pub fn promote(
        &self,
        version: &str,
        reason: &str,
        by: Actor,
    ) -> Result<Aliases, RegistryError> {
        let version = self.resolve(version)?;
        self.update_aliases(AliasAction::Promote, reason, by, |aliases| {
            if aliases.champion.as_deref() == Some(version.as_str()) {
                return Ok(());
            }
            if let Some(old) = aliases.champion.take() {
                aliases.history.push(old);
            }
            aliases.champion = Some(version.clone());
            Ok(())
        })
    }

    /// Puts the previous champion back; the one before it becomes `previous`.
    pub fn rollback(&self, reason: &str, by: Actor) -> Result<Aliases, RegistryError> {
        self.update_aliases(AliasAction::Rollback, reason, by, |aliases| {
            let back = aliases
                .history
                .pop()
                .ok_or(RegistryError::NothingToRollBack)?;
            aliases.champion = Some(back);
            Ok(())
        })
    }

    /// Every change of the champion alias, oldest first. Lines that cannot be read
    /// are skipped and listed in the journal's `skipped`, not an error.
    pub fn history(&self) -> Result<Journal<AliasChange>, RegistryError> {
        history::read_journal(&self.events_path())
    }

    /// Appends a retraining decision to `decisions.jsonl`.
    pub fn record_decision(&self, decision: &Decision) -> Result<(), RegistryError> {
        fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        history::append_line(&self.decisions_path(), decision)?;
        info!(target: "triage::registry", id = %decision.id, verdict = %decision.verdict, "Retraining decision recorded.");
        Ok(())
    }

    /// Every retraining decision, oldest first; unreadable lines are skipped and
    /// listed in the journal's `skipped`.
    pub fn decisions(&self) -> Result<Journal<Decision>, RegistryError> {
        history::read_journal(&self.decisions_path())
    }

    fn update_aliases(
        &self,
        action: AliasAction,
        reason: &str,
        by: Actor,
        change: impl FnOnce(&mut Aliases) -> Result<(), RegistryError>,
    ) -> Result<Aliases, RegistryError> {
        fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let _lock = LockFile::acquire(&self.root)?;
        let mut aliases = self.aliases()?;
        let before = aliases.champion.clone();
        change(&mut aliases)?;
        aliases.previous = aliases.history.last().cloned();
        let path = self.aliases_path();
        let tmp = self
            .root
            .join(format!(".aliases.{}.tmp", std::process::id()));
        write_json(&tmp, &aliases)?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        let event = AliasChange {
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            action,
            from: before,
            to: aliases.champion.clone(),
            reason: reason.to_string(),
            by,
        };
        history::append_line(&self.events_path(), &event)?;
        info!(target: "triage::registry", %action, from = ?event.from, to = ?event.to, reason, %by, "Champion alias moved.");
        Ok(aliases)
    }
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// An exclusive lock file, removed on drop.
struct LockFile(PathBuf);

impl LockFile {
    fn acquire(root: &Path) -> Result<Self, RegistryError> {
        let path = root.join(".lock");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Ok(Self(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if Instant::now() > deadline {
                        return Err(RegistryError::Locked {
                            path: root.to_path_buf(),
                            lock: path,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(io(&path)(e)),
            }
        }
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Classifier, FitParams};
    use ndarray::array;

    fn model() -> (Model, ModelCard, DriftReference) {
        let x = array![[1.0f32, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]];
        let labels = vec!["a".to_string(), "b".to_string()];
        let params = FitParams {
            alpha: 0.1,
            max_iterations: 50,
            gradient_tolerance: 1e-6,
        };
        let classifier = Classifier::fit(x.view(), &[0, 0, 1, 1], labels, &params).unwrap();
        let preds = classifier.predict(x.view()).unwrap();
        let plan = crate::drift::reference::ReferencePlan {
            sample_size: 2,
            mmd_sample: 2,
            mmd_null_draws: 3,
            seed: 1,
        };
        let texts = ["a", "b", "c", "d"];
        let training = crate::drift::reference::TrainingRows {
            predictions: &preds,
            features: x.view(),
        };
        let reference = DriftReference::build(&preds, 2, x.view(), &texts, training, &plan);
        let model = Model::new(classifier, None, 1.0, vec![0.0; 2]).unwrap();
        (model, card::fixture::card(&["a", "b"], 2), reference)
    }

    #[test]
    fn versions_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        let (classifier, card, reference) = model();
        let v1 = registry
            .register(&classifier, card.clone(), &reference)
            .unwrap();
        let v2 = registry.register(&classifier, card, &reference).unwrap();
        assert_eq!((v1.as_str(), v2.as_str()), ("v1", "v2"));
        assert_eq!(registry.versions().unwrap(), ["v1", "v2"]);
        let loaded = registry.load("v2").unwrap();
        assert_eq!(loaded.classifier, classifier);
        assert_eq!(loaded.reference, reference);
        assert_eq!(loaded.card.version, "v2");
        assert_eq!(registry.load("2").unwrap().card.version, "v2");
    }

    #[test]
    fn versions_sort_numerically() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        let (classifier, card, reference) = model();
        for _ in 0..11 {
            registry
                .register(&classifier, card.clone(), &reference)
                .unwrap();
        }
        let versions = registry.versions().unwrap();
        assert_eq!(versions.last().unwrap(), "v11");
        assert_eq!(versions[1], "v2");
    }

    #[test]
    fn promote_and_rollback_move_champion_and_previous() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        let (classifier, card, reference) = model();
        for _ in 0..3 {
            registry
                .register(&classifier, card.clone(), &reference)
                .unwrap();
        }
        assert!(matches!(
            registry.resolve("champion"),
            Err(RegistryError::NoChampion(_))
        ));
        registry.promote("v1", "test", Actor::Cli).unwrap();
        registry.promote("v2", "test", Actor::Cli).unwrap();
        let a = registry.promote("v3", "test", Actor::Cli).unwrap();
        assert_eq!(a.champion.as_deref(), Some("v3"));
        assert_eq!(a.previous.as_deref(), Some("v2"));
        assert_eq!(registry.resolve("previous").unwrap(), "v2");

        let a = registry.rollback("test", Actor::Cli).unwrap();
        assert_eq!(
            (a.champion.as_deref(), a.previous.as_deref()),
            (Some("v2"), Some("v1"))
        );
        let a = registry.rollback("test", Actor::Cli).unwrap();
        assert_eq!(
            (a.champion.as_deref(), a.previous.as_deref()),
            (Some("v1"), None)
        );
        assert!(matches!(
            registry.rollback("test", Actor::Cli),
            Err(RegistryError::NothingToRollBack)
        ));
        assert_eq!(registry.resolve("champion").unwrap(), "v1");

        let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
        assert_eq!(events.lines().count(), 5);
    }

    #[test]
    fn history_records_every_alias_change_with_who_and_why_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        let (classifier, card, reference) = model();
        for _ in 0..2 {
            registry
                .register(&classifier, card.clone(), &reference)
                .unwrap();
        }
        assert!(registry.history().unwrap().entries.is_empty());
        registry
            .promote("v1", "trained and passed every gate", Actor::Training)
            .unwrap();
        registry
            .promote("v2", "challenger beat the champion", Actor::Retrainer)
            .unwrap();
        registry.rollback("bad on Mondays", Actor::Cli).unwrap();
        let history = registry.history().unwrap();
        assert!(history.skipped.is_empty());
        let summary: Vec<_> = history
            .entries
            .iter()
            .map(|c| {
                (
                    c.action,
                    c.from.as_deref(),
                    c.to.as_deref(),
                    c.by,
                    c.reason.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    AliasAction::Promote,
                    None,
                    Some("v1"),
                    Actor::Training,
                    "trained and passed every gate"
                ),
                (
                    AliasAction::Promote,
                    Some("v1"),
                    Some("v2"),
                    Actor::Retrainer,
                    "challenger beat the champion"
                ),
                (
                    AliasAction::Rollback,
                    Some("v2"),
                    Some("v1"),
                    Actor::Cli,
                    "bad on Mondays"
                ),
            ]
        );
        for change in &history.entries {
            assert!(
                humantime::parse_rfc3339(&change.at).is_ok(),
                "{} is not RFC 3339",
                change.at
            );
        }
    }

    #[test]
    fn history_keeps_old_lines_and_skips_a_damaged_one() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        let (classifier, card, reference) = model();
        registry.register(&classifier, card, &reference).unwrap();
        // A line from before `by` existed, then a torn line.
        std::fs::write(
            registry.events_path(),
            concat!(
                r#"{"at":"2026-01-01T00:00:00Z","action":"promote","from":null,"to":"v1","reason":"old"}"#,
                "\n",
                r#"{"at":"2026-01-01T00:00:01Z","act"#,
                "\n",
            ),
        )
        .unwrap();
        registry.promote("v1", "again", Actor::Cli).unwrap();
        let history = registry.history().unwrap();
        assert_eq!(history.entries.len(), 2);
        assert_eq!(history.entries[0].by, Actor::Unknown);
        assert_eq!(history.entries[1].by, Actor::Cli);
        assert_eq!(history.skipped.len(), 1);
        assert_eq!(history.skipped[0].line, 2);
    }

    #[test]
    fn decisions_are_appended_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path().join("fresh"));
        assert!(registry.decisions().unwrap().entries.is_empty());
        let first = decision::fixture::decision("r-1", decision::Verdict::Rejected);
        let second = decision::fixture::decision("r-2", decision::Verdict::Promoted);
        registry.record_decision(&first).unwrap();
        registry.record_decision(&second).unwrap();
        let read = registry.decisions().unwrap();
        assert_eq!(read.entries, [first, second]);
        assert!(read.skipped.is_empty());
    }

    #[test]
    fn promoting_the_champion_again_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        let (classifier, card, reference) = model();
        registry.register(&classifier, card, &reference).unwrap();
        registry.promote("v1", "t", Actor::Cli).unwrap();
        let a = registry.promote("v1", "t", Actor::Cli).unwrap();
        assert_eq!(a.previous, None);
    }

    #[test]
    fn unknown_version_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        let err = registry.promote("v9", "t", Actor::Cli).unwrap_err();
        assert!(err.to_string().contains("v9"), "{err}");
        assert!(registry.resolve("latest").is_err());
    }

    #[test]
    fn corrupt_model_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        let (classifier, card, reference) = model();
        let v = registry.register(&classifier, card, &reference).unwrap();
        let path = registry.version_dir(&v).join("model.json");
        std::fs::write(&path, b"{\"labels\": [\"a\"").unwrap();
        let err = registry.load(&v).unwrap_err();
        assert!(matches!(err, RegistryError::Corrupt { .. }));
        assert!(err.to_string().contains("model.json"), "{err}");
    }

    #[test]
    fn model_whose_classes_do_not_match_its_labels_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        let (classifier, card, reference) = model();
        let v = registry.register(&classifier, card, &reference).unwrap();
        let path = registry.version_dir(&v).join("model.json");
        // Three classes for the two labels "a" and "b".
        let mut stored: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        stored["embedding"]["model"]["classes"] = serde_json::json!([0, 1, 2]);
        std::fs::write(&path, stored.to_string()).unwrap();
        let err = registry.load(&v).unwrap_err();
        assert!(matches!(err, RegistryError::Corrupt { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("the embedding model: 3 classes but 2 intercepts and 2 weight columns"),
            "{err}"
        );
    }

    #[test]
    fn model_disagreeing_with_its_card_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        let (classifier, _, reference) = model();
        let card = card::fixture::card(&["a", "b"], 3);
        let v = registry.register(&classifier, card, &reference).unwrap();
        let err = registry.load(&v).unwrap_err();
        assert!(err.to_string().contains("card says 3"), "{err}");
    }
}
