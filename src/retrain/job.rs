//! The retraining job: recent labelled feature records (plus, as configured, the
//! original training data) -> a challenger fitted by the training pipeline ->
//! champion and challenger scored on the same held-out slice of the recent rows ->
//! promoted only if the challenger passed every gate and beats the champion by
//! `retrain.min_improvement`. Every run, whatever its end, leaves a [`Decision`] in
//! the registry; a failed run leaves the champion untouched and says why.
//!
//! Synchronous (Kafka reads block, embedding is CPU work): the CLI calls [`run`]
//! directly, an async caller from `spawn_blocking`.
//!
//! Files of a run, kept for audit and for `triage models compare --data`:
//! ```text
//! <registry_dir>/retrain/<id>/train.jsonl      {"id","text","label"}: the challenger's data
//! <registry_dir>/retrain/<id>/held-out.jsonl   the slice both models were scored on
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use super::collect::{
    Classes, Example, JoinCounts, RecentJoin, parse_feature, parse_label, split_recent,
    without_held_out,
};
use super::error::RetrainError;
use super::verdict::{Standing, judge};
use super::workdir::{JobLock, prune, run_folder, write_examples};
use crate::clock::now_ms;
use crate::config::{DataFormat, LabelRuleKind, Rollout, Settings};
use crate::embed::Embedder;
use crate::feature::label_rule::LabelRule;
use crate::feature::read_labelled;
use crate::kafka::TopicError;
use crate::kafka::client::{RangeReadError, for_each_in_time_range};
use crate::registry::decision::{
    AlertRef, Contender, Decision, Inputs, Rows, Scores, Source, Step, Trigger, Verdict,
};
use crate::registry::{Actor, Registry};
use crate::training::{TrainOptions, evaluate_versions, train};

/// Where the original training data comes from (`retrain.training_data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginalData {
    /// The champion card's data file, if it still exists (setting `""`).
    ChampionData,
    /// Recent rows only (setting `"none"`).
    None,
    /// A labelled file, read with the [data] and [labels] settings.
    File(PathBuf),
}

impl OriginalData {
    /// Reads the `retrain.training_data` setting (or `--training-data`).
    pub fn from_setting(value: &Path) -> Self {
        match value.to_str().map(str::trim) {
            Some("") => Self::ChampionData,
            Some(none) if none.eq_ignore_ascii_case("none") => Self::None,
            _ => Self::File(value.to_path_buf()),
        }
    }
}

/// What a caller may override for one run.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// Take the records of this long before the run instead of `retrain.window_s`.
    pub since: Option<Duration>,
    /// Instead of `retrain.training_data`.
    pub training_data: Option<OriginalData>,
    /// The whole read of each topic, at most (a broker that does not answer is
    /// given up on after 10 s of this).
    pub read_timeout: Duration,
    /// The alerts that asked for the run, recorded in its decision (a rollback of
    /// what it produced answers them).
    pub alerts: Vec<AlertRef>,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            since: None,
            training_data: None,
            read_timeout: Duration::from_secs(120),
            alerts: Vec::new(),
        }
    }
}

/// Runs one retraining job and records its decision in the registry (a recording
/// failure is logged; the decision is returned either way).
pub fn run(
    settings: &Settings,
    embedder: &mut dyn Embedder,
    trigger: Trigger,
    options: &JobOptions,
) -> Decision {
    let registry = match crate::registry::Registry::from_settings(settings) {
        Ok(registry) => registry,
        Err(e) => return failed_to_start(settings, trigger, e.to_string()),
    };
    let mut job = Job::new(settings, &registry, trigger);
    job.decision.alerts = options.alerts.clone();
    let work = job.retrain_dir();
    let lock = match JobLock::acquire(&work) {
        Ok(lock) => lock,
        Err(reason) => return job.finish(Err(reason)),
    };
    // The work-folder lock is this machine's; retrainers on other machines share a
    // bucket registry, so there the job also holds a lease in the bucket.
    let lease = if registry.is_bucket() {
        let ttl = Duration::from_secs(settings.retrain.lease_s);
        match registry.take_lease("retrain", ttl) {
            Ok(lease) => Some(lease),
            Err(err) => return job.finish(Err(RetrainError::Locked(err.to_string()))),
        }
    } else {
        None
    };
    info!(target: "triage::retrain", id = %job.decision.id, trigger = %job.decision.trigger, "Retraining started.");
    let outcome = job.execute(embedder, options);
    let decision = job.finish(outcome);
    prune(
        &work,
        settings.retrain.keep_runs,
        &champions_data(&registry),
    );
    drop(lease);
    drop(lock);
    decision
}

/// The training data files of the champion and the previous champion: a later job
/// reads the champion's back, a rollback makes the previous one champion.
fn champions_data(registry: &Registry) -> Vec<PathBuf> {
    let Ok(aliases) = registry.aliases() else {
        return Vec::new();
    };
    [aliases.champion, aliases.previous]
        .into_iter()
        .flatten()
        .filter_map(|v| registry.card(&v).ok())
        .map(|card| PathBuf::from(card.data.path))
        .collect()
}

/// Records a run that could not start (e.g. the embedder did not load): verdict
/// failed, champion untouched.
/// Should the registry itself not open, the decision goes to the local
/// `paths.registry_dir`, with that reason, rather than nowhere.
pub fn failed_to_start(settings: &Settings, trigger: Trigger, reason: String) -> Decision {
    let (registry, reason) = match crate::registry::Registry::from_settings(settings) {
        Ok(registry) => (registry, reason),
        Err(e) => (
            Registry::new(settings.registry_dir()),
            format!(
                "{reason}; the model registry did not open ({e}), so this decision is recorded in paths.registry_dir"
            ),
        ),
    };
    let job = Job::new(settings, &registry, trigger);
    job.finish(Err(RetrainError::Start(reason)))
}

/// The run's decision as it fills in, and what its steps share.
struct Job<'a> {
    settings: &'a Settings,
    registry: &'a Registry,
    started: Instant,
    decision: Decision,
}

fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// `retrain-20260102T030405123Z` (or `race-...`, `guard-...`: `kind`): sortable,
/// and unique unless two runs start in the same millisecond (the work folder then
/// gets a suffix).
pub fn run_id(kind: &str) -> String {
    let stamp: String = humantime::format_rfc3339_millis(SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    format!("{kind}-{stamp}")
}

impl<'a> Job<'a> {
    fn new(settings: &'a Settings, registry: &'a Registry, trigger: Trigger) -> Self {
        Self {
            settings,
            registry,
            started: Instant::now(),
            decision: Decision {
                id: run_id("retrain"),
                started_at: rfc3339_now(),
                finished_at: String::new(),
                trigger,
                inputs: Inputs::default(),
                rows: Rows::default(),
                champion: None,
                challenger: None,
                margin_required: settings.retrain.min_improvement,
                verdict: Verdict::Failed,
                reason: String::new(),
                cause: None,
                duration_seconds: 0.0,
                steps: Vec::new(),
                race: None,
                alerts: Vec::new(),
                answered_alerts: Vec::new(),
            },
        }
    }

    /// Runs `f` as the step `name`: timed, logged, added to the decision.
    fn step<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        let started = Instant::now();
        let out = f(self);
        let seconds = started.elapsed().as_secs_f64();
        info!(target: "triage::retrain", id = %self.decision.id, step = name, seconds = format!("{seconds:.2}"), "Step done.");
        self.decision.steps.push(Step {
            name: name.to_string(),
            seconds,
        });
        out
    }

    fn source(&mut self, description: String, rows: usize) {
        self.decision.inputs.sources.push(Source {
            description,
            rows: rows as u64,
        });
    }

    fn execute(
        &mut self,
        embedder: &mut dyn Embedder,
        options: &JobOptions,
    ) -> Result<(Verdict, String), RetrainError> {
        let settings = self.settings;
        let r = &settings.retrain;
        let window = options.since.unwrap_or(Duration::from_secs(r.window_s));
        let to_ms = now_ms();
        let from_ms = to_ms.saturating_sub(window.as_millis() as i64);
        self.decision.inputs.from_ms = Some(from_ms);
        self.decision.inputs.to_ms = Some(to_ms);
        let champion = self.registry.aliases()?.champion;

        let classes = Classes::new(LabelRule::new(&settings.labels));
        let Recent {
            examples,
            counts,
            malformed_features,
            malformed_labels,
            note: read_note,
        } = self.step("read", |_| {
            read_recent(settings, &classes, from_ms, to_ms, options.read_timeout)
        })?;
        let description = describe_recent(
            settings,
            &counts,
            malformed_features,
            malformed_labels,
            read_note,
        );
        if counts.sampled_away > 0 {
            warn!(target: "triage::retrain", id = %self.decision.id, kept = examples.len(), sampled_away = counts.sampled_away, max_rows = r.max_rows, "More labelled recent rows than retrain.max_rows: a stratified sample is kept.");
        }
        info!(target: "triage::retrain", id = %self.decision.id, rows = examples.len(), "{description}");
        self.source(description, examples.len());

        let split = self.step("split", |_| {
            split_recent(
                &examples,
                r.held_out_fraction,
                r.min_recent_rows,
                settings.training.min_rows_per_class,
                settings.training.seed,
            )
        });
        let split = split.map_err(|refusal| RetrainError::NotEnoughData(refusal.to_string()))?;

        let original = options
            .training_data
            .clone()
            .unwrap_or_else(|| OriginalData::from_setting(&r.training_data));
        let held_out: Vec<&Example> = split.held_out.iter().map(|&i| &examples[i]).collect();
        let original = self.step("original-data", |job| {
            let rows = job.original_rows(&original, champion.as_deref())?;
            let (rows, dropped) = without_held_out(rows, &held_out);
            if dropped > 0
                && let Some(source) = job.decision.inputs.sources.last_mut()
            {
                source.rows -= dropped as u64;
                source
                    .description
                    .push_str(&format!(" ({dropped} rows of the held-out slice left out)"));
            }
            Ok::<_, RetrainError>(rows)
        })?;

        let dir = self.work_dir()?;
        let train_path = dir.join("train.jsonl");
        let held_out_path = dir.join("held-out.jsonl");
        self.step("write", |_| {
            let train_rows = split.train.iter().map(|&i| &examples[i]).chain(&original);
            write_examples(&train_path, train_rows)?;
            write_examples(&held_out_path, held_out.iter().copied())
        })?;
        self.decision.rows = Rows {
            train: (split.train.len() + original.len()) as u64,
            held_out: split.held_out.len() as u64,
        };

        let neutral = neutral_settings(settings);
        let registry = self.registry;
        let outcome = self.step("train", |_| {
            train(
                &neutral,
                embedder,
                registry,
                &TrainOptions {
                    data: train_path.clone(),
                    promote: false,
                },
            )
        });
        let outcome = outcome.map_err(|e| RetrainError::Training(e.to_string()))?;

        let mut versions: Vec<&str> = champion.iter().map(String::as_str).collect();
        versions.push(&outcome.version);
        let scored = self.step("evaluate", |_| {
            evaluate_versions(&neutral, embedder, registry, &held_out_path, &versions)
        });
        let scored = scored.map_err(|e| RetrainError::Scoring {
            versions: versions.join(", "),
            reason: e.to_string(),
        })?;
        let contender = |i: usize| Contender {
            version: scored[i].version.clone(),
            metrics: Scores::from(&scored[i].metrics),
        };
        let challenger_scores = contender(scored.len() - 1);
        let champion_scores = champion.as_ref().map(|_| contender(0));
        self.decision.challenger = Some(challenger_scores.clone());
        self.decision.champion = champion_scores.clone();

        let (verdict, reason) = judge(
            champion_scores.as_ref().map(standing),
            standing(&challenger_scores),
            &outcome.gate_failures,
            r.min_improvement,
        );
        if verdict == Verdict::Promoted {
            // With a champion to race, a shadow rollout lets live traffic decide; a
            // first model has nothing to race and is promoted.
            if r.rollout == Rollout::Shadow && champion.is_some() {
                let reason = format!(
                    "{reason}; it now races the champion in shadow on live traffic (retrain.rollout = \"shadow\"): promoted or rejected on rollout.min_labelled late-labelled messages both scored"
                );
                self.step("shadow", |job| {
                    job.adopt(
                        &challenger_scores.version,
                        champion.as_deref(),
                        &reason,
                        true,
                    )
                })?;
                return Ok((Verdict::Shadow, reason));
            }
            self.step("promote", |job| {
                job.adopt(
                    &challenger_scores.version,
                    champion.as_deref(),
                    &reason,
                    false,
                )
            })?;
        }
        Ok((verdict, reason))
    }

    /// The original training rows, as configured.
    fn original_rows(
        &mut self,
        original: &OriginalData,
        champion: Option<&str>,
    ) -> Result<Vec<Example>, RetrainError> {
        let path = match original {
            OriginalData::None => return Ok(Vec::new()),
            OriginalData::File(path) => path.clone(),
            OriginalData::ChampionData => {
                let Some(champion) = champion else {
                    return Ok(Vec::new());
                };
                let card = self.registry.card(champion)?;
                let path = PathBuf::from(&card.data.path);
                if !path.is_file() {
                    warn!(target: "triage::retrain", path = %path.display(), "The champion's training data is gone: recent rows only.");
                    self.source(
                        format!(
                            "champion {champion}'s training data {} is gone: recent rows only",
                            path.display()
                        ),
                        0,
                    );
                    return Ok(Vec::new());
                }
                path
            }
        };
        // A challenger trained by an earlier run has its work file as data.
        let reader = if self.is_work_file(&path) {
            neutral_settings(self.settings)
        } else {
            self.settings.clone()
        };
        let data = read_labelled(&path, &reader).map_err(|e| {
            RetrainError::OriginalData(format!(
                "cannot read the original training data {} (retrain.training_data, or --training-data none for recent rows only): {e}",
                path.display()
            ))
        })?;
        let rows: Vec<Example> = data
            .examples
            .into_iter()
            .map(|e| Example {
                id: e.id,
                text: e.text,
                label: data.labels[e.label].clone(),
            })
            .collect();
        self.source(
            format!("original training data {}", path.display()),
            rows.len(),
        );
        Ok(rows)
    }

    fn retrain_dir(&self) -> PathBuf {
        self.registry.root().join("retrain")
    }

    fn is_work_file(&self, path: &Path) -> bool {
        path.starts_with(self.retrain_dir())
    }

    /// A new folder for this run's files, named by the decision (which takes the
    /// folder's name when the first was taken).
    fn work_dir(&mut self) -> Result<PathBuf, RetrainError> {
        let (name, dir) = run_folder(&self.retrain_dir(), &self.decision.id)?;
        self.decision.id = name;
        Ok(dir)
    }

    /// Promotes the challenger, or with `shadow` puts it under the `challenger`
    /// alias, unless someone moved the champion during the run (the comparison would
    /// then be against the wrong model).
    fn adopt(
        &self,
        challenger: &str,
        champion_at_start: Option<&str>,
        reason: &str,
        shadow: bool,
    ) -> Result<(), RetrainError> {
        let now = self.registry.aliases()?.champion;
        if now.as_deref() != champion_at_start {
            return Err(RetrainError::Promotion(format!(
                "the champion moved during the run ({} -> {}); {challenger} is stored, not promoted: run again to judge it against the new champion",
                champion_at_start.unwrap_or("none"),
                now.as_deref().unwrap_or("none")
            )));
        }
        let (moved, doing) = if shadow {
            let moved = self.registry.shadow(challenger, reason, Actor::Retrainer);
            (moved, "shadowing")
        } else {
            let moved = self.registry.promote(challenger, reason, Actor::Retrainer);
            (moved, "promoting")
        };
        moved
            .map(drop)
            .map_err(|e| RetrainError::Promotion(format!("{doing} {challenger} failed: {e}")))
    }

    /// Fills in the end of the decision and records it.
    fn finish(mut self, outcome: Result<(Verdict, String), RetrainError>) -> Decision {
        let d = &mut self.decision;
        match outcome {
            Ok((verdict, reason)) => {
                d.verdict = verdict;
                d.reason = reason;
            }
            Err(error) => {
                d.verdict = Verdict::Failed;
                d.cause = Some(error.cause().to_string());
                d.reason = format!("{error}; the champion is unchanged");
            }
        }
        d.finished_at = rfc3339_now();
        d.duration_seconds = self.started.elapsed().as_secs_f64();
        match d.verdict {
            Verdict::Failed => {
                warn!(target: "triage::retrain", id = %d.id, reason = %d.reason, seconds = format!("{:.1}", d.duration_seconds), "Retraining failed.")
            }
            verdict => {
                info!(target: "triage::retrain", id = %d.id, %verdict, reason = %d.reason, seconds = format!("{:.1}", d.duration_seconds), "Retraining done.")
            }
        }
        if let Err(e) = self.registry.record_decision(&self.decision) {
            tracing::error!(target: "triage::retrain", id = %self.decision.id, error = %e, "The decision could not be recorded.");
        }
        self.decision
    }
}

fn standing(c: &Contender) -> Standing<'_> {
    Standing {
        version: &c.version,
        macro_f1: c.metrics.macro_f1,
    }
}

/// The recent labelled examples (at most `retrain.max_rows`), what the join
/// counted, and a note for people when the labels topic is missing.
struct Recent {
    examples: Vec<Example>,
    counts: JoinCounts,
    malformed_features: u64,
    malformed_labels: u64,
    note: Option<String>,
}

/// Reads the labels topic over the range, then streams the features topic through
/// the join, which keeps at most `retrain.max_rows` labelled rows (a stratified
/// sample past that): the feature records, texts and all, are never all held. A
/// missing labels topic is a note, not a failure (labels may all ride in the
/// messages).
fn read_recent(
    settings: &Settings,
    classes: &Classes,
    from_ms: i64,
    to_ms: i64,
    timeout: Duration,
) -> Result<Recent, RetrainError> {
    let k = &settings.kafka;
    if k.features_topic.is_empty() {
        return Err(RetrainError::Read(
            "kafka.features_topic is empty, so triage run writes no feature records to learn from; set it (e.g. \"features\")"
                .into(),
        ));
    }
    let mut note = None;
    // Parsed as read: the raw records are not held.
    let mut labels = Vec::new();
    let mut malformed_labels = 0u64;
    if !k.labels_topic.is_empty() {
        let read = for_each_in_time_range(k, &k.labels_topic, from_ms, to_ms, timeout, |r| {
            match parse_label(r.key.as_deref(), r.payload.as_deref().unwrap_or_default()) {
                Ok(label) => labels.push(label),
                Err(why) => {
                    malformed_labels += 1;
                    if malformed_labels <= 3 {
                        warn!(target: "triage::retrain", partition = r.partition, offset = r.offset, why, "Skipped a malformed label record.");
                    }
                }
            }
        });
        match read {
            Ok(()) => {}
            Err(RangeReadError::Topic(TopicError::MissingTopic { topic, .. })) => {
                note = Some(format!("labels topic {topic} does not exist"));
            }
            Err(e) => return Err(RetrainError::Read(e.to_string())),
        }
    }
    let mut recent = RecentJoin::new(
        labels,
        classes,
        settings.retrain.max_rows,
        settings.training.seed,
    );
    let mut malformed_features = 0u64;
    for_each_in_time_range(k, &k.features_topic, from_ms, to_ms, timeout, |r| {
        match parse_feature(r.payload.as_deref().unwrap_or_default()) {
            Ok(row) => recent.offer(row),
            Err(why) => {
                malformed_features += 1;
                if malformed_features <= 3 {
                    warn!(target: "triage::retrain", partition = r.partition, offset = r.offset, why, "Skipped a malformed feature record.");
                }
            }
        }
    })
    .map_err(|e| RetrainError::Read(e.to_string()))?;
    let (examples, counts) = recent.finish();
    Ok(Recent {
        examples,
        counts,
        malformed_features,
        malformed_labels,
        note,
    })
}

fn describe_recent(
    settings: &Settings,
    c: &JoinCounts,
    malformed_features: u64,
    malformed_labels: u64,
    note: Option<String>,
) -> String {
    let k = &settings.kafka;
    let mut text = format!(
        "features topic {}: {} records ({} redelivered, {} malformed, {} unlabelled); labels: {} late, of which {} replaced the message's, {} carried in the message",
        k.features_topic,
        c.feature_records,
        c.duplicate_records,
        malformed_features,
        c.unlabelled,
        c.late_labels_used,
        c.late_labels_overriding,
        c.carried_labels_used,
    );
    if !k.labels_topic.is_empty() {
        text.push_str(&format!(
            "; labels topic {}: {} records ({} for unknown ids, {} not a class, {} malformed)",
            k.labels_topic, c.label_records, c.unknown_ids, c.unknown_classes, malformed_labels
        ));
    }
    if c.sampled_away > 0 {
        text.push_str(&format!(
            "; {} labelled rows sampled away (more than retrain.max_rows = {}; a sample stratified by label kept)",
            c.sampled_away, settings.retrain.max_rows
        ));
    }
    if let Some(note) = note {
        text.push_str(&format!("; {note}"));
    }
    text
}

/// The settings to read the run's own files (`{"id","text","label"}` lines) with.
/// The feature cache is off: each run's files are new, cached copies would only pile up.
pub fn neutral_settings(settings: &Settings) -> Settings {
    let mut s = settings.clone();
    s.data.format = DataFormat::Jsonl;
    s.data.text_field = "text".into();
    s.data.id_field = "id".into();
    s.labels.rule = LabelRuleKind::Column;
    s.labels.field = "label".into();
    s.labels.allowed = Vec::new();
    s.training.feature_cache = false;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_data_setting_reads_as_champion_none_or_file() {
        assert_eq!(
            OriginalData::from_setting(Path::new("")),
            OriginalData::ChampionData
        );
        assert_eq!(
            OriginalData::from_setting(Path::new("none")),
            OriginalData::None
        );
        assert_eq!(
            OriginalData::from_setting(Path::new("data/support.csv")),
            OriginalData::File("data/support.csv".into())
        );
    }

    #[test]
    fn the_run_files_read_back_with_the_neutral_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        let examples = [
            Example {
                id: "a".into(),
                text: "where is my parcel".into(),
                label: "DELIVERY".into(),
            },
            Example {
                id: "b".into(),
                text: "refund \"now\", please".into(),
                label: "REFUND".into(),
            },
        ];
        write_examples(&path, &examples).unwrap();
        let settings = neutral_settings(&crate::config::Settings::default());
        let data = read_labelled(&path, &settings).unwrap();
        let back: Vec<(String, String, String)> = data
            .examples
            .into_iter()
            .map(|e| (e.id, e.text, data.labels[e.label].clone()))
            .collect();
        let want: Vec<(String, String, String)> = examples
            .iter()
            .map(|e| (e.id.clone(), e.text.clone(), e.label.clone()))
            .collect();
        assert_eq!(back, want);
    }

    #[test]
    fn a_run_with_the_broker_away_fails_and_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = crate::config::Settings::default();
        settings.paths.registry_dir = dir.path().join("registry");
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        settings.kafka.brokers = format!("127.0.0.1:{port}");
        let registry = Registry::new(settings.registry_dir());
        let mut job = Job::new(&settings, &registry, Trigger::Cli);
        let options = JobOptions {
            read_timeout: Duration::from_secs(2),
            ..JobOptions::default()
        };
        let to = now_ms();
        let classes = Classes::new(LabelRule::new(&settings.labels));
        let outcome = read_recent(&settings, &classes, to - 1000, to, options.read_timeout)
            .map(|_| (Verdict::Promoted, String::new()));
        assert!(outcome.is_err());
        job.decision.inputs.from_ms = Some(to - 1000);
        let decision = job.finish(outcome);
        assert_eq!(decision.verdict, Verdict::Failed);
        assert!(
            decision.reason.contains("champion is unchanged"),
            "{}",
            decision.reason
        );
        let recorded = registry.decisions().unwrap();
        assert_eq!(recorded.entries.len(), 1);
        assert_eq!(recorded.entries[0].verdict, Verdict::Failed);
    }
}
