//! The model registry: immutable model versions and the `champion`, `previous` and
//! `challenger` aliases, in a folder or in a bucket on object storage (see [`store`]).
//!
//! ```text
//! <registry_dir or registry_url>/
//!   versions/v1/{model.json, reference.json, card.json}
//!   versions/v2/...
//!   aliases.json      {"champion": "v2", "previous": "v1", "challenger": "v3", "history": ["v1"]}
//!   .lock             a folder's read-modify-write lock (flock; never a key)
//!   events.jsonl      one line per alias change: when, what, from, to, why, by whom
//!   decisions.jsonl   one line per retraining decision (see [`decision::Decision`])
//! ```
//! A version's files are each created only if absent (`model.json` first: creating it
//! claims the number, so two writers never share one), and its `card.json` last: a
//! version without a card is unfinished and invisible. Nothing is ever overwritten.
//! Aliases and journals are changed by read-modify-write that cannot lose a
//! concurrent change (a lock file in a folder, conditional puts in a bucket).
//!
//! Every name that picks a version is checked where it enters ([`name`]): a version
//! name is `v` and a number, an alias is `champion` or `previous`, and nothing else
//! becomes part of a key or a path. The card records the sha256 of the version's other
//! files (`model.json`, `reference.json`), and every load checks them (the service's
//! hot swap loads through [`Registry::load`] too). The card cannot hold its own hash:
//! it is created once and never overwritten, its `version` must be the folder it is
//! in, its checksums must be well-formed, and the model it names must agree with its
//! labels and dimension, so a damaged card fails to load rather than serving.

pub mod card;
pub mod decision;
pub mod history;
pub mod lease;
pub mod name;
pub mod store;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::drift::DriftReference;
use crate::model::Model;
pub use card::ModelCard;
pub use decision::Decision;
pub use history::{Actor, AliasAction, AliasChange, Journal, SkippedLine};
pub use name::{Alias, BadName, VersionName};
use store::Store;

const ALIASES: &str = "aliases.json";
const EVENTS: &str = "events.jsonl";
const DECISIONS: &str = "decisions.jsonl";
const CARD: &str = "card.json";
const MODEL: &str = "model.json";
const REFERENCE: &str = "reference.json";

/// How often a service following a bucket registry reads its aliases (one small GET);
/// a folder's alias file is read before every window, as it is cheap.
const BUCKET_FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registry object {location}: {source}")]
    Store {
        location: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error(
        "paths.registry_url {url:?}: {reason}; fix the URL (e.g. s3://BUCKET/PREFIX) or unset it to use paths.registry_dir"
    )]
    BadUrl { url: String, reason: String },
    #[error("cannot start the registry's I/O runtime: {0}")]
    Runtime(String),
    #[error("{path} is not a valid {what}: {reason}; {}", corrupt_fix(.what))]
    Corrupt {
        path: String,
        what: &'static str,
        reason: String,
    },
    #[error("no model version {0:?} in the registry; `triage models list` shows the versions")]
    UnknownVersion(String),
    #[error(transparent)]
    BadName(#[from] BadName),
    #[error(
        "{path} has sha256 {actual}, but the card of {version} recorded {expected}: the file changed after it was registered; restore it, or promote another version (`triage models promote VERSION`)"
    )]
    Checksum {
        version: String,
        path: String,
        expected: String,
        actual: String,
    },
    #[error(
        "the champion {champion} will not load ({reason}), and {fallback}; promote a version that loads (`triage models list`, `triage models promote VERSION`) or train one"
    )]
    Unloadable {
        champion: String,
        reason: Box<RegistryError>,
        /// Why the previous champion could not stand in.
        fallback: String,
    },
    #[error(
        "version {version} already has {location}: versions are immutable; register a new version instead"
    )]
    VersionExists { version: String, location: String },
    #[error(
        "no champion yet in {0}; train one with `triage train --data FILE`, or promote one with `triage models promote VERSION`"
    )]
    NoChampion(String),
    #[error("there is no previous champion to roll back to")]
    NothingToRollBack,
    #[error(
        "{0} is the champion: a version cannot shadow itself; shadow another version (`triage models list`)"
    )]
    ShadowingChampion(String),
    #[error(
        "registry {path} stayed locked by another running triage for {seconds} s (lock file {lock}); the lock is released when that process ends: find it with `fuser {lock}`"
    )]
    Locked {
        path: PathBuf,
        lock: PathBuf,
        seconds: u64,
    },
    #[error(
        "{location} kept changing under {attempts} attempts to update it; other writers are busy, try again"
    )]
    Contended { location: String, attempts: u32 },
    #[error(
        "{location} is held by {holder} for {seconds_left} s more: another triage is running this work; the lease is released when it ends, and expires if that process died"
    )]
    Leased {
        location: String,
        holder: String,
        seconds_left: u64,
    },
}

/// What to do about a damaged file, by what it is.
fn corrupt_fix(what: &str) -> &'static str {
    match what {
        "alias file" => {
            "the file is damaged: fix it by hand (champion, previous and history name versions v1, v2, ...; `triage models history` shows the changes)"
        }
        _ => "the file is damaged, promote or train another version",
    }
}

/// Where the aliases point, and the champions before the current one (most recent last).
/// Every name is a version name (checked on read: a file naming anything else is
/// refused as damaged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Aliases {
    #[serde(default, deserialize_with = "name::optional")]
    pub champion: Option<String>,
    #[serde(default, deserialize_with = "name::optional")]
    pub previous: Option<String>,
    /// The version every consumer scores in shadow beside the champion (never
    /// published as a label); never the champion itself.
    #[serde(default, deserialize_with = "name::optional")]
    pub challenger: Option<String>,
    #[serde(default, deserialize_with = "name::list")]
    pub history: Vec<String>,
    /// How many times the aliases changed: numbers the history's events, whose
    /// appends may land out of order when two writers race.
    #[serde(default)]
    pub seq: u64,
}

/// A loaded model version.
#[derive(Debug, Clone)]
pub struct ModelVersion {
    pub card: ModelCard,
    pub classifier: Model,
    pub reference: DriftReference,
}

/// The model a consumer serves at start, and whether it stands in for the champion.
#[derive(Debug)]
pub struct Serving {
    pub model: ModelVersion,
    /// Set when the champion would not load and the previous champion serves instead.
    pub fallback: Option<Fallback>,
}

/// A champion that would not load, and why.
#[derive(Debug)]
pub struct Fallback {
    pub champion: String,
    pub reason: RegistryError,
}

impl Fallback {
    /// Logs the fallback: an error, as the champion is unusable until someone acts.
    pub fn log(&self, serving: &str) {
        error!(target: "triage::registry", champion = %self.champion, serving, reason = %self.reason, "The champion will not load; serving the previous champion instead. Fix or replace the champion (`triage models promote VERSION`).");
    }
}

/// The sha256 of a version's files but the card, recorded in its card at registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checksums {
    #[serde(rename = "model.json", deserialize_with = "sha256_hex")]
    pub model: String,
    #[serde(rename = "reference.json", deserialize_with = "sha256_hex")]
    pub reference: String,
}

fn sha256_hex<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let hex = String::deserialize(d)?;
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(hex)
    } else {
        Err(serde::de::Error::custom(
            "a checksum is 64 lower-case hex digits (sha256)",
        ))
    }
}

fn sha256(bytes: &[u8]) -> String {
    crate::checksum::hex(&Sha256::digest(bytes))
}

/// `card.json`: the card, and the checksums of the files it describes (absent in cards
/// written before checksums were recorded).
#[derive(Serialize, Deserialize)]
struct StoredCard {
    #[serde(flatten)]
    card: ModelCard,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checksums: Option<Checksums>,
}

/// A model registry in a folder (created on first write) or a bucket.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Store,
    /// A folder on this machine: the registry itself, or for a bucket registry the
    /// place for local work files (the retraining job's data).
    root: PathBuf,
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, RegistryError> {
    serde_json::to_vec_pretty(value).map_err(|e| RegistryError::Runtime(e.to_string()))
}

#[cfg(test)]
fn version_key(version: &str, file: &str) -> String {
    VersionName::parse(version)
        .expect("a version name")
        .key(file)
}

impl Registry {
    /// A registry in a folder.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            store: Store::folder(root.clone()),
            root,
        }
    }

    /// The model registry of `settings`: `paths.registry_url` when set, else
    /// `paths.registry_dir`.
    pub fn from_settings(settings: &crate::config::Settings) -> Result<Self, RegistryError> {
        let url = settings.paths.registry_url.trim();
        Self::open((!url.is_empty()).then_some(url), settings.registry_dir())
    }

    /// The registry at `url` when one is given (`paths.registry_url`), else the folder
    /// `dir` (`paths.registry_dir`, which for a bucket registry keeps local work files).
    pub fn open(url: Option<&str>, dir: PathBuf) -> Result<Self, RegistryError> {
        match url {
            Some(url) => Ok(Self {
                store: Store::bucket(url)?,
                root: dir,
            }),
            None => Ok(Self::new(dir)),
        }
    }

    #[cfg(test)]
    fn in_memory(work_dir: &Path) -> Self {
        Self {
            store: Store::memory(),
            root: work_dir.to_path_buf(),
        }
    }

    /// The local folder: the registry itself, or local work files for a bucket registry.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder or the bucket URL, for messages.
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// Whether the registry is a bucket (shared across machines) rather than a folder.
    pub fn is_bucket(&self) -> bool {
        self.store.is_bucket()
    }

    /// How often a service should read the aliases to follow the champion.
    pub fn follow_interval(&self) -> Duration {
        if self.store.is_bucket() {
            BUCKET_FOLLOW_INTERVAL
        } else {
            Duration::ZERO
        }
    }

    /// Where the champion's history lives (`events.jsonl`), for messages.
    pub fn events_location(&self) -> String {
        self.store.describe(EVENTS)
    }

    /// Where the retraining decisions live (`decisions.jsonl`), for messages.
    pub fn decisions_location(&self) -> String {
        self.store.describe(DECISIONS)
    }

    fn read_json<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>, RegistryError> {
        let Some(bytes) = self.store.get(key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RegistryError::Corrupt {
                path: self.store.describe(key),
                what,
                reason: e.to_string(),
            })
    }

    /// The bytes of a file of a version that must be there.
    fn read_bytes(
        &self,
        version: VersionName,
        file: &str,
        what: &'static str,
    ) -> Result<Vec<u8>, RegistryError> {
        let key = version.key(file);
        self.store.get(&key)?.ok_or_else(|| RegistryError::Corrupt {
            path: self.store.describe(&key),
            what,
            reason: "the file is missing".into(),
        })
    }

    fn parse<T: for<'de> Deserialize<'de>>(
        &self,
        bytes: &[u8],
        key: &str,
        what: &'static str,
    ) -> Result<T, RegistryError> {
        serde_json::from_slice(bytes).map_err(|e| RegistryError::Corrupt {
            path: self.store.describe(key),
            what,
            reason: e.to_string(),
        })
    }

    /// A version's card and checksums; the card must say it is this version.
    fn read_card(&self, version: VersionName) -> Result<StoredCard, RegistryError> {
        let key = version.key(CARD);
        let stored: StoredCard = self.parse(
            &self.read_bytes(version, CARD, "model card")?,
            &key,
            "model card",
        )?;
        if stored.card.version != version.to_string() {
            return Err(RegistryError::Corrupt {
                path: self.store.describe(&key),
                what: "model card",
                reason: format!(
                    "it says it is version {:?}, but it is the card of {version}",
                    stored.card.version
                ),
            });
        }
        Ok(stored)
    }

    /// `(name, finished)` of every version folder; names that are not version names
    /// (a stray folder, a hand-made copy) are not versions.
    fn version_entries(&self) -> Result<Vec<(VersionName, bool)>, RegistryError> {
        let mut found: std::collections::BTreeMap<VersionName, bool> = Default::default();
        for key in self.store.list("versions")? {
            let mut parts = key.split('/').skip(1);
            if let (Some(version), Some(file)) = (parts.next(), parts.next())
                && let Ok(version) = VersionName::parse(version)
            {
                *found.entry(version).or_default() |= file == CARD;
            }
        }
        Ok(found.into_iter().collect())
    }

    /// All finished versions, oldest first.
    pub fn versions(&self) -> Result<Vec<String>, RegistryError> {
        Ok(self
            .version_entries()?
            .into_iter()
            .filter(|(_, done)| *done)
            .map(|(v, _)| v.to_string())
            .collect())
    }

    /// Stores a new immutable version and returns its name (`v1`, `v2`, ...). The
    /// card's `version` field is set here, and the checksums of the files it describes
    /// are recorded with it.
    pub fn register(
        &self,
        classifier: &Model,
        mut card: ModelCard,
        reference: &DriftReference,
    ) -> Result<String, RegistryError> {
        let model = to_json(classifier)?;
        let reference = to_json(reference)?;
        let checksums = Checksums {
            model: sha256(&model),
            reference: sha256(&reference),
        };
        let mut version = self
            .version_entries()?
            .last()
            .map_or(VersionName::first(), |(v, _)| v.next());
        // Creating model.json claims the number; another writer may have taken it.
        while !self.store.create(&version.key(MODEL), model.clone())? {
            version = version.next();
        }
        card.version = version.to_string();
        let stored = StoredCard {
            card,
            checksums: Some(checksums),
        };
        for (file, bytes) in [(REFERENCE, reference), (CARD, to_json(&stored)?)] {
            let key = version.key(file);
            if !self.store.create(&key, bytes)? {
                return Err(RegistryError::VersionExists {
                    version: version.to_string(),
                    location: self.store.describe(&key),
                });
            }
        }
        Ok(version.to_string())
    }

    /// Resolves `champion`, `previous`, `v3` or `3` to a version name that exists.
    pub fn resolve(&self, name: &str) -> Result<String, RegistryError> {
        self.resolve_name(name).map(String::from)
    }

    fn resolve_name(&self, name: &str) -> Result<VersionName, RegistryError> {
        let version = match Alias::parse(name) {
            Some(alias) => self.alias_target(&self.aliases()?, alias)?,
            None => VersionName::parse_typed(name)?,
        };
        if self.store.get(&version.key(CARD))?.is_some() {
            Ok(version)
        } else {
            Err(RegistryError::UnknownVersion(version.to_string()))
        }
    }

    /// The version an alias names (the alias file's names were checked on read).
    fn alias_target(&self, aliases: &Aliases, alias: Alias) -> Result<VersionName, RegistryError> {
        let target = match alias {
            Alias::Champion => aliases
                .champion
                .as_deref()
                .ok_or_else(|| RegistryError::NoChampion(self.location()))?,
            Alias::Previous => aliases
                .previous
                .as_deref()
                .ok_or_else(|| RegistryError::UnknownVersion(alias.to_string()))?,
        };
        Ok(VersionName::parse(target)?)
    }

    pub fn card(&self, version: &str) -> Result<ModelCard, RegistryError> {
        let version = self.resolve_name(version)?;
        Ok(self.read_card(version)?.card)
    }

    /// Loads a whole version, checks its files against the checksums its card
    /// recorded, and checks that its parts agree.
    pub fn load(&self, version: &str) -> Result<ModelVersion, RegistryError> {
        self.load_version(self.resolve_name(version)?)
    }

    fn load_version(&self, version: VersionName) -> Result<ModelVersion, RegistryError> {
        let StoredCard { card, checksums } = self.read_card(version)?;
        let model = self.read_bytes(version, MODEL, "model")?;
        let reference = self.read_bytes(version, REFERENCE, "drift reference")?;
        match &checksums {
            Some(sums) => {
                for (file, bytes, expected) in [
                    (MODEL, &model, &sums.model),
                    (REFERENCE, &reference, &sums.reference),
                ] {
                    let actual = sha256(bytes);
                    if &actual != expected {
                        return Err(RegistryError::Checksum {
                            version: version.to_string(),
                            path: self.store.describe(&version.key(file)),
                            expected: expected.clone(),
                            actual,
                        });
                    }
                }
            }
            None => warn!(
                target: "triage::registry",
                %version,
                "The card of {version} records no checksums (it was registered before triage recorded them); its model and reference are loaded unverified."
            ),
        }
        let stored: serde_json::Value = self.parse(&model, &version.key(MODEL), "model")?;
        let reference: DriftReference =
            self.parse(&reference, &version.key(REFERENCE), "drift reference")?;
        let corrupt = |reason: String| RegistryError::Corrupt {
            path: self.store.describe(&version.key(MODEL)),
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

    /// The model a consumer starts with: the champion, or, when the champion will not
    /// load (damaged, a checksum that does not match, unreadable), the previous
    /// champion, with the reason in [`Serving::fallback`]. An error when there is no
    /// champion, when the alias file cannot be read, or when neither loads.
    pub fn load_serving(&self) -> Result<Serving, RegistryError> {
        let aliases = self.aliases()?;
        let champion = self.alias_target(&aliases, Alias::Champion)?;
        let reason = match self.load_version(champion) {
            Ok(model) => {
                return Ok(Serving {
                    model,
                    fallback: None,
                });
            }
            Err(e) => e,
        };
        let unloadable = |fallback: String, reason: RegistryError| RegistryError::Unloadable {
            champion: champion.to_string(),
            reason: Box::new(reason),
            fallback,
        };
        let previous = match self.alias_target(&aliases, Alias::Previous) {
            Ok(previous) if previous != champion => previous,
            _ => return Err(unloadable("there is no previous champion".into(), reason)),
        };
        match self.load_version(previous) {
            Ok(model) => Ok(Serving {
                model,
                fallback: Some(Fallback {
                    champion: champion.to_string(),
                    reason,
                }),
            }),
            Err(e) => Err(unloadable(
                format!("the previous champion {previous} will not load either ({e})"),
                reason,
            )),
        }
    }

    pub fn aliases(&self) -> Result<Aliases, RegistryError> {
        Ok(self.read_json(ALIASES, "alias file")?.unwrap_or_default())
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

    /// Makes `version` the challenger: consumers score it in shadow beside the
    /// champion. Refused for an unknown version and for the champion itself.
    pub fn shadow(&self, version: &str, reason: &str, by: Actor) -> Result<Aliases, RegistryError> {
        let version = self.resolve(version)?;
        self.update_aliases(AliasAction::Shadow, reason, by, |aliases| {
            if aliases.champion.as_deref() == Some(version.as_str()) {
                return Err(RegistryError::ShadowingChampion(version.clone()));
            }
            aliases.challenger = Some(version.clone());
            Ok(())
        })
    }

    /// Clears the challenger alias: consumers stop scoring a shadow.
    pub fn unshadow(&self, reason: &str, by: Actor) -> Result<Aliases, RegistryError> {
        self.update_aliases(AliasAction::Unshadow, reason, by, |aliases| {
            aliases.challenger = None;
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
        let mut journal: Journal<AliasChange> = self.read_journal(EVENTS)?;
        // In the order the aliases changed (lines from before `seq` first, as written).
        journal.entries.sort_by_key(|c| c.seq.unwrap_or(0));
        Ok(journal)
    }

    /// Appends a retraining decision to `decisions.jsonl`.
    pub fn record_decision(&self, decision: &Decision) -> Result<(), RegistryError> {
        self.append(DECISIONS, decision)?;
        info!(target: "triage::registry", id = %decision.id, verdict = %decision.verdict, "Retraining decision recorded.");
        Ok(())
    }

    /// Every retraining decision, oldest first; unreadable lines are skipped and
    /// listed in the journal's `skipped`.
    pub fn decisions(&self) -> Result<Journal<Decision>, RegistryError> {
        self.read_journal(DECISIONS)
    }

    fn read_journal<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Journal<T>, RegistryError> {
        let bytes = self.store.get(key)?.unwrap_or_default();
        Ok(history::parse_journal(
            &String::from_utf8_lossy(&bytes),
            &self.store.describe(key),
        ))
    }

    /// Appends `entry` as one JSON line; no line of a concurrent writer is lost.
    fn append<T: Serialize>(&self, key: &str, entry: &T) -> Result<(), RegistryError> {
        let line = history::json_line(entry)?;
        self.store.update(key, |current| {
            let mut text = current.map(<[u8]>::to_vec).unwrap_or_default();
            if text.last().is_some_and(|b| *b != b'\n') {
                // A torn last line stays a line of its own (and is skipped on read).
                text.push(b'\n');
            }
            text.extend_from_slice(line.as_bytes());
            Ok((Some(text), ()))
        })
    }

    fn update_aliases(
        &self,
        action: AliasAction,
        reason: &str,
        by: Actor,
        change: impl Fn(&mut Aliases) -> Result<(), RegistryError>,
    ) -> Result<Aliases, RegistryError> {
        let (aliases, before) = self.store.update(ALIASES, |current| {
            let mut aliases: Aliases = match current {
                Some(bytes) => {
                    serde_json::from_slice(bytes).map_err(|e| RegistryError::Corrupt {
                        path: self.store.describe(ALIASES),
                        what: "alias file",
                        reason: e.to_string(),
                    })?
                }
                None => Aliases::default(),
            };
            let before = action.moved(&aliases).clone();
            change(&mut aliases)?;
            aliases.previous = aliases.history.last().cloned();
            // A challenger that became the champion (promoted, or rolled back to) is
            // no longer a challenger.
            if aliases.challenger.is_some() && aliases.challenger == aliases.champion {
                aliases.challenger = None;
            }
            aliases.seq += 1;
            Ok((Some(to_json(&aliases)?), (aliases, before)))
        })?;
        let event = AliasChange {
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            action,
            from: before,
            to: action.moved(&aliases).clone(),
            reason: reason.to_string(),
            by,
            seq: Some(aliases.seq),
        };
        self.append(EVENTS, &event)?;
        info!(target: "triage::registry", %action, alias = action.alias(), from = ?event.from, to = ?event.to, reason, %by, "Alias moved.");
        Ok(aliases)
    }

    /// Replaces an object as is, bypassing every rule: for tests that damage a registry.
    #[cfg(test)]
    fn overwrite(&self, key: &str, bytes: &[u8]) {
        self.store.overwrite(key, bytes.to_vec());
    }
}

/// Registry fixtures for other modules' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Actor, Registry};

    /// Registers two small versions (v1, v2) and makes v1 the champion.
    pub fn two_versions(registry: &Registry) {
        let (classifier, card, reference) = super::tests::model();
        for _ in 0..2 {
            registry
                .register(&classifier, card.clone(), &reference)
                .unwrap();
        }
        registry.promote("v1", "fixture", Actor::Training).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Classifier, FitParams};
    use ndarray::array;

    pub(super) fn model() -> (Model, ModelCard, DriftReference) {
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

    /// Runs `test` on a folder registry and on a bucket registry (object_store's
    /// in-memory store: the bucket code path; tests/registry_s3.rs runs it on S3).
    fn each_backend(test: impl Fn(&Registry)) {
        let dir = tempfile::tempdir().unwrap();
        test(&Registry::new(dir.path().join("registry")));
        test(&Registry::in_memory(dir.path()));
    }

    #[test]
    fn versions_round_trip_exactly() {
        each_backend(|registry| {
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
        });
    }

    #[test]
    fn versions_sort_numerically() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            for _ in 0..11 {
                registry
                    .register(&classifier, card.clone(), &reference)
                    .unwrap();
            }
            let versions = registry.versions().unwrap();
            assert_eq!(versions.last().unwrap(), "v11");
            assert_eq!(versions[1], "v2");
        });
    }

    #[test]
    fn a_version_is_never_overwritten_and_an_unfinished_one_is_invisible() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            registry
                .register(&classifier, card.clone(), &reference)
                .unwrap();
            // Another writer claimed v2 and has not finished it (no card yet).
            assert!(
                registry
                    .store
                    .create("versions/v2/model.json", b"{}".to_vec())
                    .unwrap()
            );
            assert_eq!(registry.versions().unwrap(), ["v1"]);
            assert!(matches!(
                registry.resolve("v2"),
                Err(RegistryError::UnknownVersion(_))
            ));
            // The next version takes the next free number; v1's files stay as they were.
            let before = registry.store.get("versions/v1/model.json").unwrap();
            assert!(
                !registry
                    .store
                    .create("versions/v1/model.json", b"{}".to_vec())
                    .unwrap()
            );
            assert_eq!(
                registry.store.get("versions/v1/model.json").unwrap(),
                before
            );
            let v = registry.register(&classifier, card, &reference).unwrap();
            assert_eq!(v, "v3");
            assert_eq!(registry.versions().unwrap(), ["v1", "v3"]);
        });
    }

    #[test]
    fn concurrent_registrations_get_distinct_versions() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            let names: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            registry
                                .register(&classifier, card.clone(), &reference)
                                .unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let mut sorted = names.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 4, "{names:?}");
            assert_eq!(registry.versions().unwrap(), ["v1", "v2", "v3", "v4"]);
        });
    }

    #[test]
    fn concurrent_promotions_lose_no_alias_change_and_no_event() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            for _ in 0..4 {
                registry
                    .register(&classifier, card.clone(), &reference)
                    .unwrap();
            }
            std::thread::scope(|s| {
                for v in ["v1", "v2", "v3", "v4"] {
                    s.spawn(move || {
                        for _ in 0..3 {
                            registry.promote(v, "race", Actor::Cli).unwrap();
                        }
                    });
                }
            });
            // Every promotion that changed the champion pushed the old one to history.
            let history = registry.history().unwrap();
            assert_eq!(history.entries.len(), 12);
            // In seq order the events form one chain: each starts where the last ended.
            for pair in history.entries.windows(2) {
                assert_eq!(pair[1].from, pair[0].to, "{:?}", history.entries);
            }
            let changes = history.entries.iter().filter(|c| c.from != c.to).count();
            let aliases = registry.aliases().unwrap();
            assert_eq!(aliases.history.len(), changes - 1, "{aliases:?}");
        });
    }

    #[test]
    fn promote_and_rollback_move_champion_and_previous() {
        each_backend(|registry| {
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

            let events = registry.store.get(EVENTS).unwrap().unwrap();
            assert_eq!(String::from_utf8(events).unwrap().lines().count(), 5);
        });
    }

    #[test]
    fn history_records_every_alias_change_with_who_and_why_oldest_first() {
        each_backend(|registry| {
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
        });
    }

    #[test]
    fn history_keeps_old_lines_and_skips_a_damaged_one() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            registry.register(&classifier, card, &reference).unwrap();
            // A line from before `by` existed, then a torn line without its newline.
            registry.overwrite(
                EVENTS,
                concat!(
                    r#"{"at":"2026-01-01T00:00:00Z","action":"promote","from":null,"to":"v1","reason":"old"}"#,
                    "\n",
                    r#"{"at":"2026-01-01T00:00:01Z","act"#,
                )
                .as_bytes(),
            );
            registry.promote("v1", "again", Actor::Cli).unwrap();
            let history = registry.history().unwrap();
            assert_eq!(history.entries.len(), 2);
            assert_eq!(history.entries[0].by, Actor::Unknown);
            assert_eq!(history.entries[1].by, Actor::Cli);
            assert_eq!(history.skipped.len(), 1);
            assert_eq!(history.skipped[0].line, 2);
        });
    }

    #[test]
    fn decisions_are_appended_and_read_back_in_order() {
        each_backend(|registry| {
            assert!(registry.decisions().unwrap().entries.is_empty());
            let first = decision::fixture::decision("r-1", decision::Verdict::Rejected);
            let second = decision::fixture::decision("r-2", decision::Verdict::Promoted);
            registry.record_decision(&first).unwrap();
            registry.record_decision(&second).unwrap();
            let read = registry.decisions().unwrap();
            assert_eq!(read.entries, [first, second]);
            assert!(read.skipped.is_empty());
        });
    }

    #[test]
    fn shadow_sets_the_challenger_and_unshadow_clears_it_both_in_the_history() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            for _ in 0..3 {
                registry
                    .register(&classifier, card.clone(), &reference)
                    .unwrap();
            }
            registry.promote("v1", "t", Actor::Training).unwrap();
            let a = registry.shadow("v2", "try it", Actor::Cli).unwrap();
            assert_eq!(
                (a.champion.as_deref(), a.challenger.as_deref()),
                (Some("v1"), Some("v2"))
            );
            assert_eq!(registry.aliases().unwrap(), a);
            let a = registry.shadow("3", "another", Actor::Retrainer).unwrap();
            assert_eq!(a.challenger.as_deref(), Some("v3"));
            let a = registry.unshadow("enough", Actor::Cli).unwrap();
            assert_eq!(a.challenger, None);
            assert_eq!(a.champion.as_deref(), Some("v1"));
            let summary: Vec<_> = registry
                .history()
                .unwrap()
                .entries
                .into_iter()
                .map(|c| (c.action, c.from, c.to, c.by))
                .collect();
            let v = |s: &str| Some(s.to_string());
            assert_eq!(
                summary[1..],
                [
                    (AliasAction::Shadow, None, v("v2"), Actor::Cli),
                    (AliasAction::Shadow, v("v2"), v("v3"), Actor::Retrainer),
                    (AliasAction::Unshadow, v("v3"), None, Actor::Cli),
                ]
            );
        });
    }

    #[test]
    fn shadowing_the_champion_or_an_unknown_version_is_refused_and_changes_nothing() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            registry.register(&classifier, card, &reference).unwrap();
            registry.promote("v1", "t", Actor::Cli).unwrap();
            let err = registry.shadow("v1", "t", Actor::Cli).unwrap_err();
            assert!(
                matches!(err, RegistryError::ShadowingChampion(_)),
                "{err:?}"
            );
            assert!(err.to_string().contains("v1 is the champion"), "{err}");
            let err = registry.shadow("champion", "t", Actor::Cli).unwrap_err();
            assert!(
                matches!(err, RegistryError::ShadowingChampion(_)),
                "{err:?}"
            );
            let err = registry.shadow("v9", "t", Actor::Cli).unwrap_err();
            assert!(matches!(err, RegistryError::UnknownVersion(_)), "{err:?}");
            assert_eq!(registry.aliases().unwrap().challenger, None);
            assert_eq!(registry.history().unwrap().entries.len(), 1);
        });
    }

    #[test]
    fn promoting_or_rolling_back_to_the_challenger_clears_it() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            for _ in 0..3 {
                registry
                    .register(&classifier, card.clone(), &reference)
                    .unwrap();
            }
            registry.promote("v1", "t", Actor::Cli).unwrap();
            registry.shadow("v2", "t", Actor::Cli).unwrap();
            // Promoting another version keeps the challenger.
            let a = registry.promote("v3", "t", Actor::Cli).unwrap();
            assert_eq!(a.challenger.as_deref(), Some("v2"));
            let a = registry
                .promote("v2", "won the race", Actor::Retrainer)
                .unwrap();
            assert_eq!(
                (a.champion.as_deref(), a.challenger.as_deref()),
                (Some("v2"), None)
            );
            // A rollback onto the challenger clears it too.
            registry.shadow("v3", "t", Actor::Cli).unwrap();
            let a = registry.rollback("t", Actor::Cli).unwrap();
            assert_eq!(
                (a.champion.as_deref(), a.challenger.as_deref()),
                (Some("v3"), None)
            );
        });
    }

    #[test]
    fn promoting_the_champion_again_changes_nothing() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            registry.register(&classifier, card, &reference).unwrap();
            registry.promote("v1", "t", Actor::Cli).unwrap();
            let a = registry.promote("v1", "t", Actor::Cli).unwrap();
            assert_eq!(a.previous, None);
        });
    }

    #[test]
    fn unknown_version_is_named() {
        each_backend(|registry| {
            let err = registry.promote("v9", "t", Actor::Cli).unwrap_err();
            assert!(err.to_string().contains("v9"), "{err}");
            assert!(registry.resolve("latest").is_err());
        });
    }

    /// Rewrites a version's card as a triage before checksums wrote it.
    fn forget_checksums(registry: &Registry, version: &str) {
        let key = version_key(version, CARD);
        let mut card: serde_json::Value =
            serde_json::from_slice(&registry.store.get(&key).unwrap().unwrap()).unwrap();
        assert!(card.as_object_mut().unwrap().remove("checksums").is_some());
        registry.overwrite(&key, card.to_string().as_bytes());
    }

    #[test]
    fn corrupt_model_file_is_refused_with_its_path() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            let v = registry.register(&classifier, card, &reference).unwrap();
            registry.overwrite(&version_key(&v, "model.json"), b"{\"labels\": [\"a\"");
            let err = registry.load(&v).unwrap_err();
            assert!(matches!(err, RegistryError::Checksum { .. }), "{err:?}");
            assert!(err.to_string().contains("v1/model.json"), "{err}");
            // Without checksums (an old card) the parser still refuses it.
            forget_checksums(registry, &v);
            let err = registry.load(&v).unwrap_err();
            assert!(matches!(err, RegistryError::Corrupt { .. }), "{err:?}");
            assert!(err.to_string().contains("v1/model.json"), "{err}");
        });
    }

    #[test]
    fn model_whose_classes_do_not_match_its_labels_is_refused_at_load() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            let v = registry.register(&classifier, card, &reference).unwrap();
            // An old card: the model's own checks are what stands between it and serving.
            forget_checksums(registry, &v);
            let key = version_key(&v, "model.json");
            // Three classes for the two labels "a" and "b".
            let mut stored: serde_json::Value =
                serde_json::from_slice(&registry.store.get(&key).unwrap().unwrap()).unwrap();
            stored["embedding"]["model"]["classes"] = serde_json::json!([0, 1, 2]);
            registry.overwrite(&key, stored.to_string().as_bytes());
            let err = registry.load(&v).unwrap_err();
            assert!(matches!(err, RegistryError::Corrupt { .. }), "{err:?}");
            assert!(
                err.to_string().contains(
                    "the embedding model: 3 classes but 2 intercepts and 2 weight columns"
                ),
                "{err}"
            );
        });
    }

    #[test]
    fn a_tampered_model_or_reference_is_refused_on_load_with_the_checksum_error() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            let v = registry.register(&classifier, card, &reference).unwrap();
            registry.load(&v).unwrap();
            for file in [MODEL, REFERENCE] {
                let key = version_key(&v, file);
                let original = registry.store.get(&key).unwrap().unwrap();
                // Valid JSON, same model: only the checksum can tell.
                let mut tampered = original.clone();
                tampered.push(b'\n');
                registry.overwrite(&key, &tampered);
                let err = registry.load(&v).unwrap_err();
                let text = err.to_string();
                assert!(matches!(err, RegistryError::Checksum { .. }), "{err:?}");
                assert!(text.contains(&format!("v1/{file} has sha256 ")), "{text}");
                assert!(text.contains("but the card of v1 recorded"), "{text}");
                registry.overwrite(&key, &original);
            }
            registry.load(&v).unwrap();
        });
    }

    #[test]
    fn an_old_card_without_checksums_still_loads() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            let v = registry.register(&classifier, card, &reference).unwrap();
            forget_checksums(registry, &v);
            let loaded = registry.load(&v).unwrap();
            assert_eq!(loaded.classifier, classifier);
            assert_eq!(registry.card(&v).unwrap().version, "v1");
        });
    }

    #[test]
    fn a_card_with_malformed_checksums_or_another_versions_name_is_refused() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            let v = registry.register(&classifier, card, &reference).unwrap();
            let key = version_key(&v, CARD);
            let good = registry.store.get(&key).unwrap().unwrap();
            let mut card: serde_json::Value = serde_json::from_slice(&good).unwrap();
            card["checksums"]["model.json"] = "../x".into();
            registry.overwrite(&key, card.to_string().as_bytes());
            let err = registry.load(&v).unwrap_err().to_string();
            assert!(err.contains("64 lower-case hex digits"), "{err}");

            let mut card: serde_json::Value = serde_json::from_slice(&good).unwrap();
            card["version"] = "v7".into();
            registry.overwrite(&key, card.to_string().as_bytes());
            let err = registry.load(&v).unwrap_err().to_string();
            assert!(
                err.contains(r#"it says it is version "v7", but it is the card of v1"#),
                "{err}"
            );
        });
    }

    #[test]
    fn registration_records_the_checksum_of_every_other_file_of_the_version() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            let v = registry.register(&classifier, card, &reference).unwrap();
            let card: serde_json::Value = serde_json::from_slice(
                &registry.store.get(&version_key(&v, CARD)).unwrap().unwrap(),
            )
            .unwrap();
            for file in [MODEL, REFERENCE] {
                let bytes = registry.store.get(&version_key(&v, file)).unwrap().unwrap();
                assert_eq!(card["checksums"][file], sha256(&bytes), "{file}");
            }
            let files: Vec<String> = registry
                .store
                .list(&format!("versions/{v}"))
                .unwrap()
                .into_iter()
                .filter(|k| !k.ends_with(CARD))
                .collect();
            assert_eq!(files.len(), card["checksums"].as_object().unwrap().len());
        });
    }

    #[test]
    fn an_alias_file_naming_a_path_is_refused_everywhere_with_the_reason() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            registry.register(&classifier, card, &reference).unwrap();
            for aliases in [
                r#"{"champion": "../../../elsewhere", "previous": null, "history": []}"#,
                r#"{"champion": "v1", "previous": "v1/../../x", "history": ["v1/../../x"]}"#,
                r#"{"champion": "v1", "previous": null, "history": ["/etc"]}"#,
            ] {
                registry.overwrite(ALIASES, aliases.as_bytes());
                let errors = [
                    registry.load("champion").err(),
                    registry.resolve("previous").err(),
                    registry.card("champion").err(),
                    registry.load_serving().err(),
                    registry.aliases().err(),
                    registry.promote("v1", "t", Actor::Cli).err(),
                    registry.rollback("t", Actor::Cli).err(),
                    registry.shadow("v1", "t", Actor::Cli).err(),
                    registry.unshadow("t", Actor::Cli).err(),
                ];
                for err in errors {
                    let err = err.unwrap_or_else(|| panic!("{aliases} was accepted"));
                    let text = err.to_string();
                    assert!(
                        matches!(
                            err,
                            RegistryError::Corrupt {
                                what: "alias file",
                                ..
                            }
                        ),
                        "{err:?}"
                    );
                    assert!(text.contains("is not a version name"), "{text}");
                    assert!(text.contains("aliases.json"), "{text}");
                    assert!(text.contains("fix it by hand"), "{text}");
                }
            }
        });
    }

    #[test]
    fn a_typed_name_that_is_not_a_version_or_an_alias_is_refused_before_any_read() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            registry.register(&classifier, card, &reference).unwrap();
            for name in ["../../etc", "v1/../v1", "v01", "v+1", "latest", "", "v1 "] {
                for err in [
                    registry.load(name).unwrap_err(),
                    registry.resolve(name).unwrap_err(),
                    registry.card(name).unwrap_err(),
                    registry.promote(name, "t", Actor::Cli).unwrap_err(),
                ] {
                    assert!(
                        matches!(err, RegistryError::BadName(_)),
                        "{name:?}: {err:?}"
                    );
                    assert!(err.to_string().contains("triage models list"), "{err}");
                }
            }
            assert_eq!(registry.resolve("1").unwrap(), "v1");
            assert_eq!(registry.resolve("v1").unwrap(), "v1");
        });
    }

    #[test]
    fn folders_that_are_not_version_names_are_not_versions() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            registry
                .register(&classifier, card.clone(), &reference)
                .unwrap();
            for key in [
                "versions/v01/card.json",
                "versions/x/card.json",
                "versions/v2x/card.json",
            ] {
                registry.overwrite(key, b"{}");
            }
            assert_eq!(registry.versions().unwrap(), ["v1"]);
            assert_eq!(
                registry.register(&classifier, card, &reference).unwrap(),
                "v2"
            );
        });
    }

    #[test]
    fn a_champion_that_will_not_load_falls_back_to_the_previous_one() {
        each_backend(|registry| {
            let (classifier, card, reference) = model();
            for _ in 0..2 {
                registry
                    .register(&classifier, card.clone(), &reference)
                    .unwrap();
            }
            assert!(matches!(
                registry.load_serving(),
                Err(RegistryError::NoChampion(_))
            ));
            registry.promote("v1", "t", Actor::Cli).unwrap();
            registry.promote("v2", "t", Actor::Cli).unwrap();
            let serving = registry.load_serving().unwrap();
            assert_eq!(serving.model.card.version, "v2");
            assert!(serving.fallback.is_none());

            registry.overwrite(&version_key("v2", MODEL), b"{}");
            let serving = registry.load_serving().unwrap();
            assert_eq!(serving.model.card.version, "v1");
            let fallback = serving.fallback.unwrap();
            assert_eq!(fallback.champion, "v2");
            assert!(matches!(fallback.reason, RegistryError::Checksum { .. }));
            // An explicit load of the champion still fails: only start-up falls back.
            assert!(registry.load("champion").is_err());

            registry.overwrite(&version_key("v1", CARD), b"{");
            let err = registry.load_serving().unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, RegistryError::Unloadable { .. }), "{err:?}");
            assert!(text.contains("the champion v2 will not load"), "{text}");
            assert!(
                text.contains("the previous champion v1 will not load either"),
                "{text}"
            );
            assert!(text.contains("triage models promote"), "{text}");
        });
    }

    #[test]
    fn model_disagreeing_with_its_card_is_refused() {
        each_backend(|registry| {
            let (classifier, _, reference) = model();
            let card = card::fixture::card(&["a", "b"], 3);
            let v = registry.register(&classifier, card, &reference).unwrap();
            let err = registry.load(&v).unwrap_err();
            assert!(err.to_string().contains("card says 3"), "{err}");
        });
    }

    #[test]
    fn a_bucket_registry_is_followed_once_a_second_and_a_folder_at_every_window() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Registry::new(dir.path()).follow_interval(), Duration::ZERO);
        assert_eq!(
            Registry::in_memory(dir.path()).follow_interval(),
            BUCKET_FOLLOW_INTERVAL
        );
    }
}
