//! The join of late labels with predictions: rolling accuracy and macro-F1 per
//! model version when ground truth arrives on its own (an agent re-tags a ticket
//! hours after triage labelled it). Pure: records in, scores and counts out; the
//! Kafka side is [`super::follow`].
//!
//! **Where and why here.** The join runs in `triage retrainer`, not in each
//! consumer: a label's message may have been predicted by any replica of the
//! consumer group, and one joiner that follows the whole predictions topic sees
//! every prediction.
//!
//! **Bounded and rebuildable, not persisted.** The state is what the two topics
//! say about the last `retrain.join_window_s`: on start the joiner re-reads the
//! predictions and the labels topics from `now - join_window_s` (predictions
//! first, then labels), so a restart loses nothing inside the window and there is
//! no state file to corrupt, migrate or share between replicas. The bounds:
//!
//! - predictions held: at most `retrain.join_max_predictions` (the oldest are
//!   forgotten first) and none older than `join_window_s`; a label for a forgotten
//!   prediction counts as `unknown_id`;
//! - a label whose prediction has not arrived yet (the consumers lag behind the
//!   agents) waits up to `retrain.join_pending_s`, at most
//!   `retrain.join_max_pending` of them (the oldest give up first); then it counts
//!   as `unknown_id`;
//! - scores per model version come from its last `retrain.performance_window`
//!   joined pairs, kept as running counts per class, so scoring costs one pass over
//!   the version's classes, never a k x k matrix;
//! - classes outside a version's label set met in its window: at most
//!   `retrain.join_max_unknown_classes`; further ones count as one class, `other`
//!   (`triage_performance_other_class_labels_total`). A class is forgotten when its
//!   last pair leaves the window (its support is its reference count);
//! - model versions: at most [`MAX_VERSIONS`] (the one predicted least recently is
//!   forgotten), each with at most [`MAX_CLASSES`] classes; ids and labels at most
//!   [`MAX_ID_BYTES`] and [`MAX_LABEL_BYTES`] (a longer one is `invalid`).
//!
//! **Every label is counted once by result** ([`LabelResult`]): `joined` (a new
//! pair in its version's window), `relabelled` (a later label for an id that already
//! had one: the last one wins; it replaces the pair's truth in place when the pair is
//! still in the window, so an id counts once there, or re-enters the window when its
//! pair had left it; a label that replaces a waiting one is counted here too),
//! `unknown_id`, `unknown_class` (not in the label set of the version that predicted
//! it: the keys of the prediction's `probabilities`; the pair still enters the window
//! as a miss, as `triage evaluate` scores such rows, so a model meeting new classes
//! shows it in its scores), `invalid` (not JSON, or no id,
//! or no label, or one too long). A waiting label is counted when it joins or gives up.
//!
//! **Shadow scoring and the live race.** A prediction record may carry a `shadow`:
//! what a challenger in shadow predicted for the same message (its `model_version`,
//! `label` and `probabilities`; the record's own fields stay the champion's). The
//! shadow version is held like any other (the same bounds: [`MAX_CLASSES`] in its
//! label set, [`MAX_VERSIONS`] versions), and a late label for the message enters
//! both versions' windows, so `triage_performance_*{model_version}` scores the
//! challenger on the same messages. It also feeds the **race** of the pair
//! (champion, challenger): one paired observation per message (truth, both
//! predictions), over the union of the two label sets (a truth neither knows is one
//! class, `other`, a miss for both), for [`super::race`]'s paired test. A relabel
//! replaces the observation's truth in place, as in the windows. Bounds: at most
//! `rollout.min_labelled * 4` observations per race (the oldest leave first,
//! counted), at most [`MAX_RACES`] races (the one fed least recently is forgotten).
//! A race starts at its first paired observation. A `shadow` that cannot be read
//! (not an object, no version or label, a label outside its set, the champion's own
//! version, too many classes, one too long) is ignored and counted
//! (`triage_performance_invalid_shadows_total`); the champion's prediction is
//! taken all the same. Labels are counted by result once, as the champion's.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

use super::confidence::{ConfidencePairs, above_chance};
use super::race::Paired;
use crate::config::{RetrainSettings, RolloutSettings};

/// Model versions held at most; the one predicted least recently is forgotten.
pub const MAX_VERSIONS: usize = 64;
/// Classes in a prediction's label set (its `probabilities`), at most.
pub const MAX_CLASSES: usize = 4096;
/// Bytes of a label's id, at most.
pub const MAX_ID_BYTES: usize = 1024;
/// Bytes of a label, at most.
pub const MAX_LABEL_BYTES: usize = 256;
/// The class late labels beyond `join_max_unknown_classes` count as.
pub const OTHER_CLASS: &str = "other";
/// Races (champion, challenger) held at most; the one fed least recently is forgotten.
pub const MAX_RACES: usize = 8;

/// The join's bounds (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinLimits {
    pub window_ms: i64,
    pub max_predictions: usize,
    pub pending_ms: i64,
    pub max_pending: usize,
    pub performance_window: usize,
    pub max_unknown_classes: usize,
    /// Paired observations per race, at most (`rollout.min_labelled * 4`).
    pub race_observations: usize,
    /// Paired confidences per race, at most (`rollout.guard_predictions * 4`).
    pub confidence_pairs: usize,
}

impl JoinLimits {
    pub fn from_settings(r: &RetrainSettings) -> Self {
        let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        Self {
            window_ms: ms(r.join_window_s),
            max_predictions: r.join_max_predictions.max(1),
            pending_ms: ms(r.join_pending_s),
            max_pending: r.join_max_pending.max(1),
            performance_window: r.performance_window.max(1),
            max_unknown_classes: r.join_max_unknown_classes,
            race_observations: RolloutSettings::default().max_race_observations(),
            confidence_pairs: RolloutSettings::default().max_confidence_pairs(),
        }
    }

    /// The races' bound from `[rollout]`.
    pub fn with_rollout(self, rollout: &RolloutSettings) -> Self {
        Self {
            race_observations: rollout.max_race_observations(),
            confidence_pairs: rollout.max_confidence_pairs(),
            ..self
        }
    }
}

/// What became of a label, as `triage_performance_labels_total{result}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabelResult {
    Joined,
    Relabelled,
    UnknownId,
    UnknownClass,
    Invalid,
}

impl LabelResult {
    pub const ALL: [Self; 5] = [
        Self::Joined,
        Self::Relabelled,
        Self::UnknownId,
        Self::UnknownClass,
        Self::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joined => "joined",
            Self::Relabelled => "relabelled",
            Self::UnknownId => "unknown_id",
            Self::UnknownClass => "unknown_class",
            Self::Invalid => "invalid",
        }
    }
}

/// What a label record did at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOutcome {
    /// Counted with this result.
    Counted(LabelResult),
    /// Its prediction has not arrived: it waits (and is counted when it joins or
    /// gives up).
    Waiting,
}

/// Why a prediction record was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PredictionError {
    #[error("prediction is not a JSON object")]
    NotJson,
    #[error("prediction has no {0} string")]
    Missing(&'static str),
    #[error("prediction's probabilities name no class")]
    NoLabelSet,
    #[error("prediction's probabilities name {0} classes, more than {MAX_CLASSES}")]
    TooManyClasses(usize),
    #[error("predicted label {label:?} is not in model {version}'s label set")]
    LabelOutsideSet { label: String, version: String },
    #[error("shadow is not an object")]
    ShadowNotObject,
    #[error("shadow names the champion's own version {0}")]
    ShadowIsChampion(String),
    #[error("shadow's label is longer than {MAX_LABEL_BYTES} bytes")]
    ShadowLabelTooLong,
}

/// Rolling scores of one model version.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionScore {
    pub model_version: String,
    /// Joined pairs in the window.
    pub pairs: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
}

/// One version's window as the promise check reads it ([`super::promise`]).
#[derive(Debug, Clone, PartialEq)]
pub struct VersionWindow {
    /// The label set: class `i < labels.len()` is `labels[i]`; a truth at or past
    /// `labels.len()` is a class outside it (a new class, or `other`).
    pub labels: Arc<[String]>,
    /// Classes the indices run over (the label set, the unknown slots, `other`).
    pub classes: usize,
    /// The joined pairs in the window, as (truth, predicted) class indices.
    pub pairs: Vec<(usize, usize)>,
    /// Pairs in the window whose label was applied automatically (`route: auto`),
    /// and of those the ones right: the review promise's precision.
    pub auto_labelled: u64,
    pub auto_right: u64,
    /// Changes whenever the window does: a check of an unchanged window can be kept.
    pub revision: u64,
}

/// What a challenger in shadow predicted for a held message.
#[derive(Clone)]
struct Shadow {
    version: Arc<str>,
    predicted: usize,
    /// Its top-class confidence, when the record gave a readable one.
    confidence: Option<f64>,
}

/// A prediction held for the join.
struct Held {
    version: Arc<str>,
    predicted: usize,
    /// The challenger's prediction for the same message, when one was shadowed.
    shadow: Option<Shadow>,
    ts_ms: i64,
    /// Insertion number: tells the live entry in `order` from stale ones.
    seq: u64,
    /// Whether a label was joined with it already (a later one is a relabel).
    labelled: bool,
    /// Whether its label was applied automatically (`route` is not `review`).
    auto: bool,
}

struct Pair {
    id: Arc<str>,
    predicted: usize,
    truth: usize,
    /// The label was applied automatically (never for a shadow's).
    auto: bool,
}

/// One model version: its label set, the true labels it has met outside that set,
/// its last joined pairs and their running counts.
///
/// Class indices: `0..labels.len()` the label set, then `max_unknown` slots for
/// classes outside it, then `other`. A slot's class is held while pairs in the
/// window name it (its support), and freed for another when the last one leaves.
struct Version {
    labels: Arc<[String]>,
    /// Label name -> index, for the label set.
    index: HashMap<String, usize>,
    /// Unknown class name -> slot (0-based, class `labels.len() + slot`).
    unknown: HashMap<String, usize>,
    /// Each slot's class name, if held.
    slots: Vec<Option<String>>,
    /// Free slots.
    free: Vec<usize>,
    pairs: VecDeque<Pair>,
    /// Pair number of `pairs[0]`: pair `n` is at `n - first_pair`.
    first_pair: u64,
    /// Id -> pair number, for the pairs in the window.
    pair_of: HashMap<Arc<str>, u64>,
    /// Per class: pairs whose truth it is, pairs that predicted it, pairs right.
    support: Vec<u64>,
    predicted: Vec<u64>,
    hits: Vec<u64>,
    /// Insertion number of its last prediction (the least recent is forgotten).
    last_seq: u64,
    /// Bumped whenever the window's counts change (a pair in or out, a relabel).
    revision: u64,
}

impl Version {
    fn new(labels: Arc<[String]>, max_unknown: usize, seq: u64) -> Self {
        let k = labels.len() + max_unknown + 1;
        Self {
            index: labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), i))
                .collect(),
            labels,
            unknown: HashMap::new(),
            slots: vec![None; max_unknown],
            free: (0..max_unknown).rev().collect(),
            pairs: VecDeque::new(),
            first_pair: 0,
            pair_of: HashMap::new(),
            support: vec![0; k],
            predicted: vec![0; k],
            hits: vec![0; k],
            last_seq: seq,
            revision: 0,
        }
    }

    fn other(&self) -> usize {
        self.labels.len() + self.slots.len()
    }

    /// The class index of a true label outside the label set: its slot, a free
    /// slot, or `other` (`true` then).
    fn unknown_class(&mut self, label: &str) -> (usize, bool) {
        if let Some(&slot) = self.unknown.get(label) {
            return (self.labels.len() + slot, false);
        }
        match self.free.pop() {
            Some(slot) => {
                self.unknown.insert(label.to_string(), slot);
                self.slots[slot] = Some(label.to_string());
                (self.labels.len() + slot, false)
            }
            None => (self.other(), true),
        }
    }

    fn tally(&mut self, truth: usize, predicted: usize) {
        self.revision += 1;
        self.support[truth] += 1;
        self.predicted[predicted] += 1;
        if truth == predicted {
            self.hits[truth] += 1;
        }
    }

    /// Takes a pair out of the counts; an unknown class no pair names any more is
    /// forgotten.
    fn untally(&mut self, truth: usize, predicted: usize) {
        self.revision += 1;
        self.support[truth] -= 1;
        self.predicted[predicted] -= 1;
        if truth == predicted {
            self.hits[truth] -= 1;
        }
        let slot = truth.wrapping_sub(self.labels.len());
        if slot < self.slots.len()
            && self.support[truth] == 0
            && let Some(name) = self.slots[slot].take()
        {
            self.unknown.remove(&name);
            self.free.push(slot);
        }
    }

    fn push(
        &mut self,
        id: Arc<str>,
        (predicted, auto): (usize, bool),
        truth: usize,
        window: usize,
    ) {
        let n = self.first_pair + self.pairs.len() as u64;
        self.pair_of.insert(id.clone(), n);
        self.tally(truth, predicted);
        self.pairs.push_back(Pair {
            id,
            predicted,
            truth,
            auto,
        });
        while self.pairs.len() > window {
            let Some(old) = self.pairs.pop_front() else {
                break;
            };
            if self.pair_of.get(&old.id) == Some(&self.first_pair) {
                self.pair_of.remove(&old.id);
            }
            self.first_pair += 1;
            self.untally(old.truth, old.predicted);
        }
    }

    /// Joins a label with the prediction `predicted` of `id`: a new pair, or for a
    /// relabel (`again`) of a pair still in the window its truth replaced in place.
    /// Returns whether the label is in the label set, and whether it counted as
    /// `other`.
    fn join(
        &mut self,
        id: &Arc<str>,
        label: &str,
        (predicted, auto): (usize, bool),
        again: bool,
        window: usize,
    ) -> (bool, bool) {
        // A relabel of a pair still in the window replaces its truth in place: out
        // of the counts first, so a class only it named is free for the new label.
        let in_window = if again {
            self.pair_of
                .get(id)
                .map(|&n| (n - self.first_pair) as usize)
        } else {
            None
        };
        if let Some(at) = in_window {
            let (truth, predicted) = (self.pairs[at].truth, self.pairs[at].predicted);
            self.untally(truth, predicted);
        }
        // A class the model does not know is a miss it could not avoid: it enters
        // the window (as in `triage evaluate`), so new intents pull the scores down,
        // and it is counted as unknown_class.
        let known = self.index.get(label).copied();
        let (truth, other) = match known {
            Some(i) => (i, false),
            None => self.unknown_class(label),
        };
        if let Some(at) = in_window {
            self.pairs[at].truth = truth;
            self.pairs[at].predicted = predicted;
            self.pairs[at].auto = auto;
            self.tally(truth, predicted);
        } else {
            self.push(id.clone(), (predicted, auto), truth, window);
        }
        (known.is_some(), other)
    }

    /// Accuracy and macro-F1 over the window, as [`crate::model::evaluation::evaluate`] would give them:
    /// the mean F1 of the classes that occur (as truth or prediction).
    fn score(&self) -> (f64, f64) {
        let n = self.pairs.len() as u64;
        let correct: u64 = self.hits.iter().sum();
        let accuracy = if n == 0 {
            0.0
        } else {
            correct as f64 / n as f64
        };
        (
            accuracy,
            macro_f1(&self.support, &self.predicted, &self.hits),
        )
    }
}

/// Macro-F1 from running counts per class (pairs whose truth it is, pairs that
/// predicted it, pairs right): the mean F1 of the classes that occur, as truth or
/// prediction, as [`crate::model::evaluation::evaluate`] gives it; 0 when none does.
pub fn macro_f1(support: &[u64], predicted: &[u64], hits: &[u64]) -> f64 {
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (mut f1_sum, mut active) = (0.0, 0u64);
    for ((&tp, &support), &predicted) in hits.iter().zip(support).zip(predicted) {
        if support == 0 && predicted == 0 {
            continue;
        }
        active += 1;
        let (precision, recall) = (ratio(tp, predicted), ratio(tp, support));
        if precision + recall > 0.0 {
            f1_sum += 2.0 * precision * recall / (precision + recall);
        }
    }
    if active == 0 {
        0.0
    } else {
        f1_sum / active as f64
    }
}

/// A race's key: (champion version, challenger version).
pub type RaceKey = (Arc<str>, Arc<str>);

/// One race: the paired observations of a (champion, challenger) pair, over the
/// union of their label sets and `other`.
struct Race {
    /// Class name -> index; `other` is `classes - 1`.
    index: HashMap<String, usize>,
    classes: usize,
    /// Each version's class index -> the race's.
    champion_map: Vec<usize>,
    challenger_map: Vec<usize>,
    observations: VecDeque<(Arc<str>, Paired)>,
    /// Observation number of `observations[0]`.
    first: u64,
    /// Id -> observation number, for the observations held.
    of: HashMap<Arc<str>, u64>,
    started_ms: i64,
    revision: u64,
    /// Insertion number of its last observation (the least recent is forgotten).
    last_seq: u64,
}

impl Race {
    fn new(champion: &[String], challenger: &[String], started_ms: i64, seq: u64) -> Self {
        let mut union: Vec<&String> = champion.iter().chain(challenger).collect();
        union.sort_unstable();
        union.dedup();
        let index: HashMap<String, usize> = union
            .iter()
            .enumerate()
            .map(|(i, l)| ((*l).clone(), i))
            .collect();
        let map = |labels: &[String]| labels.iter().map(|l| index[l]).collect();
        Self {
            champion_map: map(champion),
            challenger_map: map(challenger),
            classes: index.len() + 1,
            index,
            observations: VecDeque::new(),
            first: 0,
            of: HashMap::new(),
            started_ms,
            revision: 0,
            last_seq: seq,
        }
    }

    /// Feeds one labelled message; returns the observations dropped for room.
    fn feed(
        &mut self,
        id: &Arc<str>,
        label: &str,
        (champion, challenger): (usize, usize),
        again: bool,
        max: usize,
    ) -> u64 {
        let other = self.classes - 1;
        let paired = Paired {
            truth: self.index.get(label).copied().unwrap_or(other),
            champion: self.champion_map.get(champion).copied().unwrap_or(other),
            challenger: self
                .challenger_map
                .get(challenger)
                .copied()
                .unwrap_or(other),
        };
        self.revision += 1;
        if again && let Some(&n) = self.of.get(id) {
            self.observations[(n - self.first) as usize].1 = paired;
            return 0;
        }
        let n = self.first + self.observations.len() as u64;
        self.of.insert(id.clone(), n);
        self.observations.push_back((id.clone(), paired));
        let mut dropped = 0;
        while self.observations.len() > max {
            let Some((old, _)) = self.observations.pop_front() else {
                break;
            };
            if self.of.get(&old) == Some(&self.first) {
                self.of.remove(&old);
            }
            self.first += 1;
            dropped += 1;
        }
        dropped
    }
}

/// One race as the race check reads it ([`super::race`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RaceWindow {
    pub champion: String,
    pub challenger: String,
    /// Classes the indices run over (the union of the label sets, then `other`).
    pub classes: usize,
    pub observations: Vec<Paired>,
    /// When its first paired observation arrived.
    pub started_ms: i64,
    /// Changes whenever the observations do.
    pub revision: u64,
}

struct Waiting {
    label: String,
    received_ms: i64,
    seq: u64,
}

/// The join state; see the module documentation.
pub struct LabelJoin {
    limits: JoinLimits,
    held: HashMap<Arc<str>, Held>,
    /// Held ids, oldest first (with stale entries for replaced predictions).
    order: VecDeque<(Arc<str>, u64)>,
    waiting: HashMap<Arc<str>, Waiting>,
    waiting_order: VecDeque<(Arc<str>, u64)>,
    versions: HashMap<Arc<str>, Version>,
    seq: u64,
    /// Results since the last [`LabelJoin::take_counts`], indexed like [`LabelResult::ALL`].
    counts: [u64; 5],
    /// Labels counted as class `other` since the last [`LabelJoin::take_other_class`].
    other_class: u64,
    races: HashMap<RaceKey, Race>,
    /// Per (champion, challenger): both confidences above chance on each message
    /// both scored, labelled or not (the guard's confidence check).
    confidence: HashMap<RaceKey, ConfidencePairs>,
    /// Shadows ignored since the last [`LabelJoin::take_invalid_shadows`], and why
    /// the last one was.
    invalid_shadows: u64,
    invalid_shadow: Option<PredictionError>,
    /// Race observations dropped for room since the last [`LabelJoin::take_race_dropped`].
    race_dropped: u64,
}

impl LabelJoin {
    pub fn new(limits: JoinLimits) -> Self {
        Self {
            limits,
            held: HashMap::new(),
            order: VecDeque::new(),
            waiting: HashMap::new(),
            waiting_order: VecDeque::new(),
            versions: HashMap::new(),
            seq: 0,
            counts: [0; 5],
            other_class: 0,
            races: HashMap::new(),
            confidence: HashMap::new(),
            invalid_shadows: 0,
            invalid_shadow: None,
            race_dropped: 0,
        }
    }

    /// Takes one prediction record (JSON, as `src/inference/records.rs` writes it)
    /// stamped `ts_ms`. A label that waited for it joins now.
    pub fn prediction(
        &mut self,
        payload: &[u8],
        ts_ms: i64,
        now_ms: i64,
    ) -> Result<(), PredictionError> {
        let value: Value = serde_json::from_slice(payload).map_err(|_| PredictionError::NotJson)?;
        let Value::Object(map) = value else {
            return Err(PredictionError::NotJson);
        };
        let text = |field: &'static str| {
            map.get(field)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or(PredictionError::Missing(field))
        };
        let id = text("id")?;
        let label = text("label")?;
        let version = text("model_version")?;
        if ts_ms < now_ms.saturating_sub(self.limits.window_ms) {
            // Outside the window: it would be forgotten at once.
            return Ok(());
        }
        self.seq += 1;
        let seq = self.seq;
        let (version, predicted) = self.predicted_by(&map, version, label, seq)?;
        let shadow = match map.get("shadow") {
            None | Some(Value::Null) => None,
            Some(value) => match self.shadow(value, &version, seq) {
                Ok(shadow) => Some(shadow),
                Err(err) => {
                    self.invalid_shadows += 1;
                    self.invalid_shadow = Some(err);
                    None
                }
            },
        };
        if let Some(shadow) = &shadow {
            self.confidences(&version, confidence_of(&map), shadow, seq);
        }
        let id: Arc<str> = Arc::from(id);
        // A prediction again for the same id (redelivery, or another version):
        // the newest stands, and keeps the truth already joined.
        let labelled = self.held.get(&id).is_some_and(|h| h.labelled);
        self.held.insert(
            id.clone(),
            Held {
                version,
                predicted,
                shadow,
                ts_ms,
                seq,
                labelled,
                auto: map.get("route").and_then(Value::as_str) != Some("review"),
            },
        );
        self.order.push_back((id.clone(), seq));
        if let Some(w) = self.waiting.remove(&id) {
            let result = self.apply(&id, &w.label, now_ms);
            self.count(result);
        }
        self.forget_old(now_ms);
        Ok(())
    }

    /// The version `version` (held, or added with the label set named by `map`'s
    /// `probabilities`) and the index of `label` in its label set.
    fn predicted_by(
        &mut self,
        map: &serde_json::Map<String, Value>,
        version: &str,
        label: &str,
        seq: u64,
    ) -> Result<(Arc<str>, usize), PredictionError> {
        let (version, predicted) = match self.versions.get_key_value(version) {
            Some((name, v)) => (name.clone(), v.index.get(label).copied()),
            None => {
                let probabilities = map.get("probabilities").and_then(Value::as_object);
                let size = probabilities.map_or(0, |p| p.len());
                if size > MAX_CLASSES {
                    return Err(PredictionError::TooManyClasses(size));
                }
                let mut set: Vec<String> = probabilities
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default();
                set.sort_unstable();
                if set.is_empty() {
                    return Err(PredictionError::NoLabelSet);
                }
                if self.versions.len() >= MAX_VERSIONS {
                    self.forget_least_recent_version();
                }
                let name: Arc<str> = Arc::from(version);
                let v = Version::new(set.into(), self.limits.max_unknown_classes, seq);
                let predicted = v.index.get(label).copied();
                self.versions.insert(name.clone(), v);
                (name, predicted)
            }
        };
        let Some(predicted) = predicted else {
            return Err(PredictionError::LabelOutsideSet {
                label: label.to_string(),
                version: version.to_string(),
            });
        };
        if let Some(v) = self.versions.get_mut(&version) {
            v.last_seq = seq;
        }
        Ok((version, predicted))
    }

    /// A prediction's `shadow`, read as the prediction itself is.
    fn shadow(
        &mut self,
        value: &Value,
        champion: &Arc<str>,
        seq: u64,
    ) -> Result<Shadow, PredictionError> {
        let Value::Object(map) = value else {
            return Err(PredictionError::ShadowNotObject);
        };
        let text = |field: &'static str| {
            map.get(field)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or(PredictionError::Missing(field))
        };
        let label = text("label")?;
        let version = text("model_version")?;
        if label.len() > MAX_LABEL_BYTES {
            return Err(PredictionError::ShadowLabelTooLong);
        }
        if version == &**champion {
            return Err(PredictionError::ShadowIsChampion(version.to_string()));
        }
        let (version, predicted) = self.predicted_by(map, version, label, seq)?;
        Ok(Shadow {
            version,
            predicted,
            confidence: confidence_of(map),
        })
    }

    /// Takes one label record: `key` is the record's key (the message id), used
    /// when the value has no `id`.
    pub fn label(&mut self, key: Option<&[u8]>, payload: &[u8], now_ms: i64) -> LabelOutcome {
        let Some((id, label)) = parse_label(key, payload) else {
            self.count(LabelResult::Invalid);
            return LabelOutcome::Counted(LabelResult::Invalid);
        };
        if self.held.contains_key(id.as_str()) {
            let id: Arc<str> = Arc::from(id);
            let result = self.apply(&id, &label, now_ms);
            self.count(result);
            return LabelOutcome::Counted(result);
        }
        let id: Arc<str> = Arc::from(id);
        self.seq += 1;
        let seq = self.seq;
        match self.waiting.entry(id.clone()) {
            Entry::Occupied(mut e) => {
                // Last one wins; the one it replaces is counted now.
                e.get_mut().label = label;
                self.count(LabelResult::Relabelled);
                return LabelOutcome::Counted(LabelResult::Relabelled);
            }
            Entry::Vacant(e) => {
                e.insert(Waiting {
                    label,
                    received_ms: now_ms,
                    seq,
                });
            }
        }
        self.waiting_order.push_back((id, seq));
        while self.waiting.len() > self.limits.max_pending {
            self.give_up_oldest();
        }
        LabelOutcome::Waiting
    }

    /// Forgets predictions older than the window and gives up on labels that
    /// waited too long. Call it now and then (the joiner: every second).
    pub fn expire(&mut self, now_ms: i64) {
        self.forget_old(now_ms);
        while let Some((id, seq)) = self.waiting_order.front() {
            match self.waiting.get(id) {
                Some(w) if w.seq == *seq => {
                    if now_ms.saturating_sub(w.received_ms) < self.limits.pending_ms {
                        break;
                    }
                    self.give_up_oldest();
                }
                _ => {
                    self.waiting_order.pop_front();
                }
            }
        }
        // Labels that joined leave stale entries behind; keep them few.
        if self.waiting_order.len() > 2 * self.waiting.len() + 1024 {
            let waiting = &self.waiting;
            self.waiting_order
                .retain(|(id, seq)| waiting.get(id).is_some_and(|w| w.seq == *seq));
        }
    }

    /// Results since the last call, as `(result, count)` for every result.
    pub fn take_counts(&mut self) -> [(LabelResult, u64); 5] {
        let counts = std::mem::take(&mut self.counts);
        LabelResult::ALL.map(|r| (r, counts[r as usize]))
    }

    /// Labels counted as class `other` since the last call (past
    /// `join_max_unknown_classes`).
    pub fn take_other_class(&mut self) -> u64 {
        std::mem::take(&mut self.other_class)
    }

    /// Each model version's rolling scores, by version name. Costs one pass over
    /// each version's classes.
    pub fn scores(&self) -> Vec<VersionScore> {
        let mut out: Vec<VersionScore> = self
            .versions
            .iter()
            .map(|(name, v)| {
                let (accuracy, macro_f1) = v.score();
                VersionScore {
                    model_version: name.to_string(),
                    pairs: v.pairs.len(),
                    accuracy,
                    macro_f1,
                }
            })
            .collect();
        out.sort_by(|a, b| a.model_version.cmp(&b.model_version));
        out
    }

    /// Every version held, with its window's revision (it changes whenever the
    /// window does), sorted by name: what a caller needs to tell which windows to
    /// read again ([`LabelJoin::window`] copies one).
    pub fn revisions(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .versions
            .iter()
            .map(|(name, v)| (name.to_string(), v.revision))
            .collect();
        out.sort();
        out
    }

    /// A version's window, or None for a version not held.
    pub fn window(&self, version: &str) -> Option<VersionWindow> {
        self.versions.get(version).map(|v| VersionWindow {
            labels: v.labels.clone(),
            classes: v.support.len(),
            pairs: v.pairs.iter().map(|p| (p.truth, p.predicted)).collect(),
            auto_labelled: v.pairs.iter().filter(|p| p.auto).count() as u64,
            auto_right: v
                .pairs
                .iter()
                .filter(|p| p.auto && p.truth == p.predicted)
                .count() as u64,
            revision: v.revision,
        })
    }

    /// Classes outside its label set that a version holds now (not counting
    /// `other`), or None for a version not held.
    pub fn unknown_classes(&self, version: &str) -> Option<usize> {
        self.versions.get(version).map(|v| v.unknown.len())
    }

    /// Model versions held.
    pub fn versions(&self) -> usize {
        self.versions.len()
    }

    /// Predictions held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Labels waiting for their prediction.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn count(&mut self, result: LabelResult) {
        self.counts[result as usize] += 1;
    }

    /// Joins `label` with the held prediction of `id`: in its version's window, and
    /// when a challenger was shadowed, in the challenger's window and their race.
    fn apply(&mut self, id: &Arc<str>, label: &str, now_ms: i64) -> LabelResult {
        let Some(held) = self.held.get_mut(id) else {
            return LabelResult::UnknownId;
        };
        let Some(version) = self.versions.get_mut(&held.version) else {
            return LabelResult::UnknownId;
        };
        let again = std::mem::replace(&mut held.labelled, true);
        let window = self.limits.performance_window;
        let (known, other) = version.join(id, label, (held.predicted, held.auto), again, window);
        if other {
            self.other_class += 1;
        }
        let champion = (held.version.clone(), held.predicted);
        if let Some(shadow) = held.shadow.clone()
            && let Some(v) = self.versions.get_mut(&shadow.version)
        {
            // The label is counted once, as the champion's; `other` too.
            // A shadow's label is never applied: not in the review promise.
            v.join(id, label, (shadow.predicted, false), again, window);
            self.race(id, label, champion, shadow, again, now_ms);
        }
        match (known, again) {
            (false, _) => LabelResult::UnknownClass,
            (true, true) => LabelResult::Relabelled,
            (true, false) => LabelResult::Joined,
        }
    }

    /// Feeds the confidence pairs of (champion, challenger) one message both scored
    /// (when both confidences are readable), each above chance for its label set.
    fn confidences(
        &mut self,
        champion: &Arc<str>,
        confidence: Option<f64>,
        shadow: &Shadow,
        seq: u64,
    ) {
        let (Some(a), Some(b)) = (confidence, shadow.confidence) else {
            return;
        };
        let (Some(va), Some(vb)) = (
            self.versions.get(champion),
            self.versions.get(&shadow.version),
        ) else {
            return;
        };
        let (a, b) = (
            above_chance(a, va.labels.len()),
            above_chance(b, vb.labels.len()),
        );
        let key: RaceKey = (champion.clone(), shadow.version.clone());
        if !self.confidence.contains_key(&key) && self.confidence.len() >= MAX_RACES {
            forget_least_recent(&mut self.confidence, |p| p.last_seq);
        }
        let max = self.limits.confidence_pairs;
        self.race_dropped += self.confidence.entry(key).or_default().push(a, b, max, seq);
    }

    /// The confidence pairs held, each as (published, shadowed, revision), sorted.
    pub fn confidence_races(&self) -> Vec<(String, String, u64)> {
        let mut out: Vec<_> = self
            .confidence
            .iter()
            .map(|((a, b), p)| (a.to_string(), b.to_string(), p.revision))
            .collect();
        out.sort();
        out
    }

    /// The (published, shadowed) confidences above chance of a pair, oldest first.
    pub fn confidence_pairs(&self, champion: &str, challenger: &str) -> Option<Vec<(f32, f32)>> {
        let key: RaceKey = (Arc::from(champion), Arc::from(challenger));
        self.confidence.get(&key).map(ConfidencePairs::to_vec)
    }

    /// Feeds the race of (champion, challenger) one labelled message.
    fn race(
        &mut self,
        id: &Arc<str>,
        label: &str,
        (champion, predicted): (Arc<str>, usize),
        shadow: Shadow,
        again: bool,
        now_ms: i64,
    ) {
        let key: RaceKey = (champion, shadow.version);
        self.seq += 1;
        let seq = self.seq;
        if !self.races.contains_key(&key) {
            let (Some(a), Some(b)) = (self.versions.get(&key.0), self.versions.get(&key.1)) else {
                return;
            };
            let race = Race::new(&a.labels, &b.labels, now_ms, seq);
            if self.races.len() >= MAX_RACES {
                self.forget_least_recent_race();
            }
            self.races.insert(key.clone(), race);
        }
        if let Some(race) = self.races.get_mut(&key) {
            race.last_seq = seq;
            let max = self.limits.race_observations.max(1);
            self.race_dropped += race.feed(id, label, (predicted, shadow.predicted), again, max);
        }
    }

    fn forget_least_recent_race(&mut self) {
        if let Some(key) = forget_least_recent(&mut self.races, |r| r.last_seq) {
            tracing::info!(champion = %key.0, challenger = %key.1, max = MAX_RACES, "Label join: race forgotten for room.");
        }
    }

    /// The races held, each as (champion, challenger, revision), sorted.
    pub fn races(&self) -> Vec<(String, String, u64)> {
        let mut out: Vec<_> = self
            .races
            .iter()
            .map(|((a, b), r)| (a.to_string(), b.to_string(), r.revision))
            .collect();
        out.sort();
        out
    }

    /// The race of (champion, challenger), or None when not held.
    pub fn race_window(&self, champion: &str, challenger: &str) -> Option<RaceWindow> {
        let key: RaceKey = (Arc::from(champion), Arc::from(challenger));
        self.races.get(&key).map(|r| RaceWindow {
            champion: champion.to_string(),
            challenger: challenger.to_string(),
            classes: r.classes,
            observations: r.observations.iter().map(|(_, o)| *o).collect(),
            started_ms: r.started_ms,
            revision: r.revision,
        })
    }

    /// Shadows ignored since the last call (unreadable), and why the last one was.
    pub fn take_invalid_shadows(&mut self) -> (u64, Option<PredictionError>) {
        (
            std::mem::take(&mut self.invalid_shadows),
            self.invalid_shadow.take(),
        )
    }

    /// Race observations dropped for room since the last call.
    pub fn take_race_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.race_dropped)
    }

    /// Makes room for a new version: forgets the one predicted least recently (its
    /// held predictions' labels then count as `unknown_id`).
    fn forget_least_recent_version(&mut self) {
        if let Some(name) = forget_least_recent(&mut self.versions, |v| v.last_seq) {
            tracing::info!(version = %name, max = MAX_VERSIONS, "Label join: model version forgotten for room.");
        }
    }

    fn forget_old(&mut self, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(self.limits.window_ms);
        while let Some((id, seq)) = self.order.front() {
            let live = self.held.get(id).filter(|h| h.seq == *seq);
            if let Some(h) = live
                && self.held.len() <= self.limits.max_predictions
                && h.ts_ms >= cutoff
            {
                break;
            }
            let live = live.is_some();
            if let Some((id, _)) = self.order.pop_front()
                && live
            {
                self.held.remove(&id);
            }
        }
        // Replaced predictions leave stale entries behind; keep them few.
        if self.order.len() > 2 * self.held.len() + 1024 {
            let held = &self.held;
            self.order
                .retain(|(id, seq)| held.get(id).is_some_and(|h| h.seq == *seq));
        }
    }

    fn give_up_oldest(&mut self) {
        while let Some((id, seq)) = self.waiting_order.pop_front() {
            if self.waiting.get(&id).is_some_and(|w| w.seq == seq) {
                self.waiting.remove(&id);
                self.count(LabelResult::UnknownId);
                return;
            }
        }
    }
}

/// Removes the entry of `map` fed least recently (the smallest `seq`); its key.
fn forget_least_recent<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    seq: impl Fn(&V) -> u64,
) -> Option<K> {
    let oldest = map
        .iter()
        .min_by_key(|(_, v)| seq(v))
        .map(|(key, _)| key.clone())?;
    map.remove(&oldest);
    Some(oldest)
}

/// A prediction's (or shadow's) top-class confidence as the model gave it, when it
/// is a number in [0, 1]: `raw_confidence` (uncalibrated: the guard's scale, which a
/// served calibration does not move), or `confidence` in records from before it.
fn confidence_of(map: &serde_json::Map<String, Value>) -> Option<f64> {
    map.get("raw_confidence")
        .or_else(|| map.get("confidence"))
        .and_then(Value::as_f64)
        .filter(|c| (0.0..=1.0).contains(c))
}

/// `(id, label)` of a label record, or None when it is not one.
fn parse_label(key: Option<&[u8]>, payload: &[u8]) -> Option<(String, String)> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    let label = value
        .get("label")?
        .as_str()
        .filter(|l| !l.is_empty() && l.len() <= MAX_LABEL_BYTES)?;
    let id = match value.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(Value::Null) | None => std::str::from_utf8(key?)
            .ok()
            .filter(|k| !k.is_empty())?
            .to_string(),
        Some(_) => return None,
    };
    if id.len() > MAX_ID_BYTES {
        return None;
    }
    Some((id, label.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABELS: [&str; 3] = ["negative", "neutral", "positive"];

    fn limits() -> JoinLimits {
        JoinLimits {
            window_ms: 60_000,
            max_predictions: 100,
            pending_ms: 5_000,
            max_pending: 10,
            performance_window: 200,
            max_unknown_classes: 4,
            race_observations: 800,
            confidence_pairs: 8,
        }
    }

    fn prediction(id: &str, label: &str, version: &str) -> Vec<u8> {
        let probabilities: serde_json::Map<String, Value> = LABELS
            .iter()
            .map(|l| {
                (
                    l.to_string(),
                    Value::from(if *l == label { 0.8 } else { 0.1 }),
                )
            })
            .collect();
        serde_json::json!({
            "id": id, "label": label, "model_version": version,
            "confidence": 0.8, "probabilities": probabilities, "window_id": 1,
        })
        .to_string()
        .into_bytes()
    }

    fn label(id: &str, label: &str) -> Vec<u8> {
        serde_json::json!({"id": id, "label": label})
            .to_string()
            .into_bytes()
    }

    fn counts(j: &mut LabelJoin) -> Vec<(&'static str, u64)> {
        j.take_counts()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.as_str(), n))
            .collect()
    }

    fn score(j: &LabelJoin, version: &str) -> VersionScore {
        j.scores()
            .into_iter()
            .find(|s| s.model_version == version)
            .expect("version scored")
    }

    #[test]
    fn a_late_label_joins_its_prediction() {
        let mut j = LabelJoin::new(limits());
        j.prediction(&prediction("m1", "positive", "v1"), 1_000, 1_000)
            .unwrap();
        j.prediction(&prediction("m2", "negative", "v1"), 1_000, 1_000)
            .unwrap();
        assert_eq!(
            j.label(None, &label("m1", "positive"), 2_000),
            LabelOutcome::Counted(LabelResult::Joined)
        );
        assert_eq!(
            j.label(None, &label("m2", "neutral"), 2_000),
            LabelOutcome::Counted(LabelResult::Joined)
        );
        assert_eq!(counts(&mut j), vec![("joined", 2)]);
        let s = score(&j, "v1");
        assert_eq!(s.pairs, 2);
        assert_eq!(s.accuracy, 0.5);
        // positive: f1 1; negative: predicted once, never true -> 0; neutral: 0.
        assert!((s.macro_f1 - 1.0 / 3.0).abs() < 1e-12, "{}", s.macro_f1);
        assert_eq!(counts(&mut j), vec![], "counts are taken once");
    }

    #[test]
    fn an_early_label_waits_for_its_prediction() {
        let mut j = LabelJoin::new(limits());
        assert_eq!(
            j.label(Some(b"m1"), br#"{"label": "neutral"}"#, 1_000),
            LabelOutcome::Waiting,
            "the key stands in for a missing id"
        );
        assert_eq!(j.waiting(), 1);
        assert_eq!(counts(&mut j), vec![]);
        j.prediction(&prediction("m1", "neutral", "v1"), 2_000, 2_000)
            .unwrap();
        assert_eq!(j.waiting(), 0);
        assert_eq!(counts(&mut j), vec![("joined", 1)]);
        assert_eq!(score(&j, "v1").accuracy, 1.0);
    }

    #[test]
    fn a_label_for_an_unknown_id_gives_up_after_the_wait() {
        let mut j = LabelJoin::new(limits());
        assert_eq!(
            j.label(None, &label("ghost", "neutral"), 1_000),
            LabelOutcome::Waiting
        );
        j.expire(5_999);
        assert_eq!(counts(&mut j), vec![]);
        j.expire(6_000);
        assert_eq!(counts(&mut j), vec![("unknown_id", 1)]);
        assert_eq!(j.waiting(), 0);
    }

    #[test]
    fn too_many_waiting_labels_give_up_oldest_first() {
        let mut j = LabelJoin::new(limits());
        for i in 0..12 {
            j.label(None, &label(&format!("g{i}"), "neutral"), 1_000);
        }
        assert_eq!(j.waiting(), 10);
        assert_eq!(counts(&mut j), vec![("unknown_id", 2)]);
        // g0 gave up: its prediction now finds nothing waiting.
        j.prediction(&prediction("g0", "neutral", "v1"), 1_000, 1_000)
            .unwrap();
        j.prediction(&prediction("g2", "neutral", "v1"), 1_000, 1_000)
            .unwrap();
        assert_eq!(counts(&mut j), vec![("joined", 1)]);
    }

    #[test]
    fn a_label_outside_the_versions_label_set_is_an_unknown_class() {
        let mut j = LabelJoin::new(limits());
        j.prediction(&prediction("m1", "positive", "v1"), 1_000, 1_000)
            .unwrap();
        assert_eq!(
            j.label(None, &label("m1", "refund"), 1_000),
            LabelOutcome::Counted(LabelResult::UnknownClass)
        );
        // A miss the model could not avoid: in the window, scored as wrong.
        let s = score(&j, "v1");
        assert_eq!((s.pairs, s.accuracy), (1, 0.0));
    }

    #[test]
    fn invalid_labels_are_counted() {
        let mut j = LabelJoin::new(limits());
        for bad in [
            &b"not json"[..],
            br#"{"id": "m1"}"#,
            br#"{"id": "m1", "label": ""}"#,
            br#"{"id": 7, "label": "neutral"}"#,
            br#"{"label": "neutral"}"#,
            br#"["m1", "neutral"]"#,
        ] {
            assert_eq!(
                j.label(None, bad, 1_000),
                LabelOutcome::Counted(LabelResult::Invalid),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(counts(&mut j), vec![("invalid", 6)]);
    }

    #[test]
    fn invalid_predictions_are_refused() {
        let mut j = LabelJoin::new(limits());
        assert_eq!(j.prediction(b"{", 0, 0), Err(PredictionError::NotJson));
        assert_eq!(
            j.prediction(br#"{"id": "m1", "label": "x"}"#, 0, 0),
            Err(PredictionError::Missing("model_version"))
        );
        let outside =
            br#"{"id": "m1", "label": "x", "model_version": "v1", "probabilities": {"a": 1.0}}"#;
        assert!(matches!(
            j.prediction(outside, 0, 0),
            Err(PredictionError::LabelOutsideSet { .. })
        ));
        assert_eq!(j.held(), 0);
    }

    #[test]
    fn the_oldest_predictions_are_forgotten_for_room() {
        let mut j = LabelJoin::new(JoinLimits {
            max_predictions: 3,
            ..limits()
        });
        for i in 0..5 {
            j.prediction(&prediction(&format!("m{i}"), "neutral", "v1"), 1_000, 1_000)
                .unwrap();
        }
        assert_eq!(j.held(), 3);
        assert_eq!(
            j.label(None, &label("m1", "neutral"), 1_000),
            LabelOutcome::Waiting
        );
        assert_eq!(
            j.label(None, &label("m2", "neutral"), 1_000),
            LabelOutcome::Counted(LabelResult::Joined)
        );
    }

    #[test]
    fn predictions_older_than_the_window_are_forgotten() {
        let mut j = LabelJoin::new(limits());
        j.prediction(&prediction("old", "neutral", "v1"), 1_000, 1_000)
            .unwrap();
        j.prediction(&prediction("new", "neutral", "v1"), 50_000, 50_000)
            .unwrap();
        j.expire(61_001);
        assert_eq!(j.held(), 1);
        assert_eq!(
            j.label(None, &label("old", "neutral"), 61_001),
            LabelOutcome::Waiting
        );
        // Read again at start-up, a prediction already outside the window is not held.
        j.prediction(&prediction("older", "neutral", "v1"), 0, 61_001)
            .unwrap();
        assert_eq!(j.held(), 1);
    }

    #[test]
    fn each_version_has_its_own_rolling_window() {
        let mut j = LabelJoin::new(JoinLimits {
            performance_window: 4,
            ..limits()
        });
        for i in 0..6 {
            j.prediction(
                &prediction(&format!("a{i}"), "positive", "v1"),
                1_000,
                1_000,
            )
            .unwrap();
            j.prediction(
                &prediction(&format!("b{i}"), "negative", "v2"),
                1_000,
                1_000,
            )
            .unwrap();
        }
        // v1: the first two wrong, the last four right: the window keeps the last four.
        for i in 0..6 {
            let truth = if i < 2 { "negative" } else { "positive" };
            j.label(None, &label(&format!("a{i}"), truth), 2_000);
            j.label(None, &label(&format!("b{i}"), "positive"), 2_000);
        }
        let v1 = score(&j, "v1");
        assert_eq!((v1.pairs, v1.accuracy, v1.macro_f1), (4, 1.0, 1.0));
        let v2 = score(&j, "v2");
        assert_eq!((v2.pairs, v2.accuracy, v2.macro_f1), (4, 0.0, 0.0));
        assert_eq!(counts(&mut j), vec![("joined", 12)]);
    }

    #[test]
    fn a_repeated_label_replaces_the_first_and_counts_once_in_the_window() {
        let mut j = LabelJoin::new(limits());
        j.prediction(&prediction("m1", "positive", "v1"), 1_000, 1_000)
            .unwrap();
        j.label(None, &label("m1", "negative"), 2_000);
        assert_eq!(score(&j, "v1").accuracy, 0.0);
        assert_eq!(
            j.label(None, &label("m1", "positive"), 3_000),
            LabelOutcome::Counted(LabelResult::Relabelled)
        );
        let s = score(&j, "v1");
        assert_eq!((s.pairs, s.accuracy), (1, 1.0));
        assert_eq!(counts(&mut j), vec![("joined", 1), ("relabelled", 1)]);
        // Waiting labels too: the last one wins, the replaced one is counted.
        j.label(None, &label("m2", "positive"), 3_000);
        j.label(None, &label("m2", "negative"), 3_000);
        j.prediction(&prediction("m2", "negative", "v1"), 3_000, 3_000)
            .unwrap();
        assert_eq!(counts(&mut j), vec![("joined", 1), ("relabelled", 1)]);
        let s = score(&j, "v1");
        assert_eq!((s.pairs, s.accuracy), (2, 1.0));
    }

    #[test]
    fn a_relabel_after_the_pair_left_the_window_enters_it_again() {
        let mut j = LabelJoin::new(JoinLimits {
            performance_window: 2,
            ..limits()
        });
        for id in ["m1", "m2", "m3"] {
            j.prediction(&prediction(id, "positive", "v1"), 1_000, 1_000)
                .unwrap();
            j.label(None, &label(id, "positive"), 1_000);
        }
        assert_eq!(
            j.label(None, &label("m1", "negative"), 2_000),
            LabelOutcome::Counted(LabelResult::Relabelled)
        );
        let s = score(&j, "v1");
        assert_eq!((s.pairs, s.accuracy), (2, 0.5));
    }

    #[test]
    fn a_flood_of_new_classes_holds_at_most_the_cap_and_counts_the_rest_as_other() {
        // One predicted id relabelled with 10,000 distinct new classes (the flood
        // that once took the retrainer to 4.47 GB), then 10,000 ids each with one.
        let mut j = LabelJoin::new(limits());
        j.prediction(&prediction("m1", "positive", "v1"), 1_000, 1_000)
            .unwrap();
        for i in 0..10_000 {
            j.label(None, &label("m1", &format!("new-{i}")), 2_000);
        }
        // A relabel replaces the pair in place: one class held, the one it names.
        assert_eq!(j.unknown_classes("v1"), Some(1));
        assert_eq!(score(&j, "v1").pairs, 1);
        assert_eq!(j.take_other_class(), 0);
        assert_eq!(counts(&mut j), vec![("unknown_class", 10_000)]);

        let mut j = LabelJoin::new(JoinLimits {
            max_predictions: 20_000,
            performance_window: 100,
            ..limits()
        });
        for i in 0..10_000 {
            let id = format!("m{i}");
            j.prediction(&prediction(&id, "positive", "v1"), 1_000, 1_000)
                .unwrap();
            j.label(None, &label(&id, &format!("new-{i}")), 2_000);
            assert!(j.unknown_classes("v1").unwrap() <= 4, "at label {i}");
        }
        // Full, but for the slot the last pair to leave the window just freed.
        assert_eq!(j.unknown_classes("v1"), Some(3));
        // The first four classes took the slots while their pairs were in the
        // window; each freed slot went to a later class; the rest were `other`.
        let other = j.take_other_class();
        assert!(other > 9_000, "{other} labels counted as other");
        let s = score(&j, "v1");
        assert_eq!((s.pairs, s.accuracy, s.macro_f1), (100, 0.0, 0.0));
        // Known labels push the unknown pairs out of the window: the classes go.
        for i in 0..100 {
            let id = format!("k{i}");
            j.prediction(&prediction(&id, "positive", "v1"), 3_000, 3_000)
                .unwrap();
            j.label(None, &label(&id, "positive"), 3_000);
        }
        assert_eq!(j.unknown_classes("v1"), Some(0));
        let s = score(&j, "v1");
        assert_eq!((s.pairs, s.accuracy, s.macro_f1), (100, 1.0, 1.0));
    }

    #[test]
    fn a_freed_unknown_class_makes_room_for_the_next() {
        let mut j = LabelJoin::new(JoinLimits {
            max_unknown_classes: 1,
            ..limits()
        });
        for id in ["a", "b"] {
            j.prediction(&prediction(id, "positive", "v1"), 1_000, 1_000)
                .unwrap();
        }
        j.label(None, &label("a", "refund"), 1_000);
        j.label(None, &label("b", "billing"), 1_000);
        assert_eq!(j.take_other_class(), 1, "no slot left for billing");
        // a's relabel frees refund's slot before the new class looks for one.
        j.label(None, &label("a", "shipping"), 1_000);
        assert_eq!(j.take_other_class(), 0);
        assert_eq!(j.unknown_classes("v1"), Some(1));
    }

    #[test]
    fn relabels_of_one_id_grow_nothing() {
        let mut j = LabelJoin::new(limits());
        j.prediction(&prediction("m1", "positive", "v1"), 1_000, 1_000)
            .unwrap();
        for i in 0..5_000 {
            let truth = LABELS[i % 3];
            j.label(None, &label("m1", truth), 2_000);
        }
        assert_eq!(score(&j, "v1").pairs, 1);
        assert_eq!((j.held(), j.waiting(), j.versions()), (1, 0, 1));
        assert_eq!(j.unknown_classes("v1"), Some(0));
        // Waiting relabels: one entry, and the order queue stays compact.
        for i in 0..5_000 {
            j.label(None, &label("ghost", LABELS[i % 3]), 2_000);
        }
        assert_eq!(j.waiting(), 1);
        j.expire(2_000);
        assert!(
            j.waiting_order.len() <= 1024 + 2,
            "{}",
            j.waiting_order.len()
        );
    }

    #[test]
    fn running_scores_match_a_full_evaluation() {
        use crate::model::evaluation::evaluate;
        let mut j = LabelJoin::new(JoinLimits {
            performance_window: 50,
            ..limits()
        });
        let truths = ["negative", "neutral", "positive", "refund", "billing"];
        let mut rng = 7u64;
        let mut next = |n: usize| {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) as usize % n
        };
        for i in 0..400 {
            let id = format!("m{}", next(120));
            let predicted = next(3);
            let truth = next(5);
            if j.held.contains_key(id.as_str()) && next(2) == 0 {
                j.label(None, &label(&id, truths[truth]), 1_000 + i);
            } else {
                j.prediction(
                    &prediction(&id, LABELS[predicted], "v1"),
                    1_000 + i,
                    1_000 + i,
                )
                .unwrap();
                j.label(None, &label(&id, truths[truth]), 1_000 + i);
            }
        }
        let v = &j.versions["v1"];
        let mut classes: Vec<String> = v.labels.to_vec();
        classes.extend(v.slots.iter().map(|s| s.clone().unwrap_or_default()));
        classes.push(OTHER_CLASS.into());
        let truth: Vec<usize> = v.pairs.iter().map(|p| p.truth).collect();
        let predicted: Vec<usize> = v.pairs.iter().map(|p| p.predicted).collect();
        let e = evaluate(&classes, &truth, &predicted);
        let s = score(&j, "v1");
        assert_eq!(s.pairs, 50);
        assert!(
            (s.accuracy - e.accuracy).abs() < 1e-12,
            "{} vs {}",
            s.accuracy,
            e.accuracy
        );
        assert!(
            (s.macro_f1 - e.macro_f1).abs() < 1e-12,
            "{} vs {}",
            s.macro_f1,
            e.macro_f1
        );
    }

    #[test]
    fn versions_labels_and_ids_are_bounded() {
        let mut j = LabelJoin::new(limits());
        for i in 0..MAX_VERSIONS + 10 {
            j.prediction(
                &prediction(&format!("m{i}"), "neutral", &format!("v{i}")),
                1_000,
                1_000,
            )
            .unwrap();
        }
        assert_eq!(j.versions(), MAX_VERSIONS);
        assert!(
            j.unknown_classes("v0").is_none(),
            "the least recent went first"
        );
        assert!(
            j.unknown_classes(&format!("v{}", MAX_VERSIONS + 9))
                .is_some()
        );
        // m0's version is gone: its label finds nothing to join.
        assert_eq!(
            j.label(None, &label("m0", "neutral"), 1_000),
            LabelOutcome::Counted(LabelResult::UnknownId)
        );
        let long = "x".repeat(MAX_LABEL_BYTES + 1);
        assert_eq!(
            j.label(None, &label("m1", &long), 1_000),
            LabelOutcome::Counted(LabelResult::Invalid)
        );
        let long_id = "i".repeat(MAX_ID_BYTES + 1);
        assert_eq!(
            j.label(None, &label(&long_id, "neutral"), 1_000),
            LabelOutcome::Counted(LabelResult::Invalid)
        );
        let many: serde_json::Map<String, Value> = (0..=MAX_CLASSES)
            .map(|i| (format!("c{i}"), Value::from(0.0)))
            .collect();
        let wide = serde_json::json!({"id": "w", "label": "c0", "model_version": "wide", "probabilities": many});
        assert_eq!(
            j.prediction(wide.to_string().as_bytes(), 1_000, 1_000),
            Err(PredictionError::TooManyClasses(MAX_CLASSES + 1))
        );
    }

    fn shadowed(id: &str, label: &str, version: &str, shadow: &str, by: &str) -> Vec<u8> {
        let mut v: Value = serde_json::from_slice(&prediction(id, label, version)).unwrap();
        let s: Value = serde_json::from_slice(&prediction(id, shadow, by)).unwrap();
        v["shadow"] = serde_json::json!({
            "model_version": by, "label": shadow, "confidence": 0.8,
            "probabilities": s["probabilities"],
        });
        v.to_string().into_bytes()
    }

    fn race(j: &LabelJoin, champion: &str, challenger: &str) -> RaceWindow {
        j.race_window(champion, challenger).expect("race held")
    }

    #[test]
    fn a_label_scores_the_champion_and_its_shadow_on_the_same_message() {
        let mut j = LabelJoin::new(limits());
        j.prediction(
            &shadowed("m1", "positive", "v1", "negative", "v2"),
            1_000,
            1_000,
        )
        .unwrap();
        j.prediction(
            &shadowed("m2", "neutral", "v1", "neutral", "v2"),
            1_000,
            1_000,
        )
        .unwrap();
        assert_eq!(
            j.label(None, &label("m1", "negative"), 2_000),
            LabelOutcome::Counted(LabelResult::Joined)
        );
        j.label(None, &label("m2", "neutral"), 3_000);
        // Counted once, as the champion's.
        assert_eq!(counts(&mut j), vec![("joined", 2)]);
        let (v1, v2) = (score(&j, "v1"), score(&j, "v2"));
        assert_eq!((v1.pairs, v1.accuracy), (2, 0.5));
        assert_eq!((v2.pairs, v2.accuracy), (2, 1.0));
        let r = race(&j, "v1", "v2");
        assert_eq!(j.races().len(), 1);
        assert_eq!((r.classes, r.started_ms), (4, 2_000));
        // Classes: negative 0, neutral 1, positive 2, other 3.
        let o = |truth, champion, challenger| Paired {
            truth,
            champion,
            challenger,
        };
        assert_eq!(r.observations, vec![o(0, 2, 0), o(1, 1, 1)]);
        // A relabel replaces the truth in place, in both windows and the race.
        j.label(None, &label("m1", "positive"), 4_000);
        let r2 = race(&j, "v1", "v2");
        assert_eq!(r2.observations, vec![o(2, 2, 0), o(1, 1, 1)]);
        assert!(r2.revision > r.revision);
        assert_eq!(score(&j, "v1").accuracy, 1.0);
        assert_eq!((score(&j, "v2").pairs, score(&j, "v2").accuracy), (2, 0.5));
        assert_eq!(
            r2.started_ms, 2_000,
            "the race started at its first observation"
        );
    }

    #[test]
    fn labels_applied_automatically_are_counted_for_the_review_promise() {
        let mut j = LabelJoin::new(limits());
        let routed = |id: &str, label: &str, route: Option<&str>| {
            let mut p: Value = serde_json::from_slice(&prediction(id, label, "v1")).unwrap();
            if let Some(route) = route {
                p["route"] = Value::from(route);
            }
            p.to_string().into_bytes()
        };
        j.prediction(&routed("a", "positive", Some("auto")), 1_000, 1_000)
            .unwrap();
        j.prediction(&routed("b", "negative", Some("auto")), 1_000, 1_000)
            .unwrap();
        j.prediction(&routed("c", "neutral", Some("review")), 1_000, 1_000)
            .unwrap();
        // Before routing existed, every label was applied.
        j.prediction(&routed("d", "neutral", None), 1_000, 1_000)
            .unwrap();
        for (id, truth) in [
            ("a", "positive"),
            ("b", "positive"),
            ("c", "neutral"),
            ("d", "neutral"),
        ] {
            j.label(None, &label(id, truth), 2_000);
        }
        let w = j.window("v1").unwrap();
        assert_eq!(w.pairs.len(), 4);
        assert_eq!((w.auto_labelled, w.auto_right), (3, 2), "c went to review");
    }

    #[test]
    fn both_confidences_are_paired_above_chance_without_labels_and_bounded() {
        let mut j = LabelJoin::new(limits());
        for i in 0..10 {
            let mut p: Value = serde_json::from_slice(&shadowed(
                &format!("m{i}"),
                "positive",
                "v2",
                "positive",
                "v1",
            ))
            .unwrap();
            p["confidence"] = Value::from(0.4);
            j.prediction(p.to_string().as_bytes(), 1_000, 1_000)
                .unwrap();
        }
        // No label, no race; the confidences are paired all the same.
        assert!(j.races().is_empty());
        assert_eq!(j.confidence_races().len(), 1);
        let pairs = j.confidence_pairs("v2", "v1").unwrap();
        // Bounded at confidence_pairs (8), the oldest gone and counted.
        assert_eq!(pairs.len(), 8);
        assert_eq!(j.take_race_dropped(), 2);
        // Three classes: 0.4 is 0.1 above chance, 0.8 is 0.7.
        let (a, b) = pairs[0];
        assert!((a - 0.1).abs() < 1e-6 && (b - 0.7).abs() < 1e-6, "{a} {b}");
        // A confidence that is not a number in [0, 1] pairs nothing.
        let mut p: Value =
            serde_json::from_slice(&shadowed("x", "positive", "v2", "positive", "v1")).unwrap();
        p["shadow"]["confidence"] = Value::from(7.0);
        j.prediction(p.to_string().as_bytes(), 1_000, 1_000)
            .unwrap();
        assert_eq!(j.take_race_dropped(), 0);
    }

    #[test]
    fn the_guard_pairs_the_models_own_confidences_when_a_calibration_served() {
        let mut j = LabelJoin::new(limits());
        let mut p: Value =
            serde_json::from_slice(&shadowed("m", "positive", "v2", "positive", "v1")).unwrap();
        // Both served calibrated (0.95, 0.9); their own confidences were 0.4 and 0.8.
        p["confidence"] = Value::from(0.95);
        p["raw_confidence"] = Value::from(0.4);
        p["shadow"]["confidence"] = Value::from(0.9);
        p["shadow"]["raw_confidence"] = Value::from(0.8);
        j.prediction(p.to_string().as_bytes(), 1_000, 1_000)
            .unwrap();
        let (a, b) = j.confidence_pairs("v2", "v1").unwrap()[0];
        assert!((a - 0.1).abs() < 1e-6 && (b - 0.7).abs() < 1e-6, "{a} {b}");
    }

    #[test]
    fn a_race_spans_both_label_sets_and_keeps_its_bound() {
        let mut j = LabelJoin::new(JoinLimits {
            race_observations: 3,
            ..limits()
        });
        // v2 knows a class v1 does not.
        let mut p: Value =
            serde_json::from_slice(&shadowed("m0", "neutral", "v1", "neutral", "v2")).unwrap();
        p["shadow"]["probabilities"]["refund"] = Value::from(0.0);
        p["shadow"]["label"] = Value::from("refund");
        j.prediction(p.to_string().as_bytes(), 1_000, 1_000)
            .unwrap();
        j.label(None, &label("m0", "refund"), 1_000);
        let r = race(&j, "v1", "v2");
        assert_eq!(r.classes, 5, "negative neutral positive refund, other");
        assert_eq!(
            r.observations[0],
            Paired {
                truth: 3,
                champion: 1,
                challenger: 3
            }
        );
        for i in 1..6 {
            let id = format!("m{i}");
            j.prediction(
                &shadowed(&id, "neutral", "v1", "neutral", "v2"),
                1_000,
                1_000,
            )
            .unwrap();
            j.label(None, &label(&id, "brand-new"), 1_000);
        }
        let r = race(&j, "v1", "v2");
        assert_eq!(r.observations.len(), 3);
        assert_eq!(
            r.observations[2],
            Paired {
                truth: 4,
                champion: 1,
                challenger: 1
            }
        );
        assert_eq!(j.take_race_dropped(), 3);
        assert_eq!(j.take_race_dropped(), 0, "taken once");
    }

    #[test]
    fn races_are_bounded_least_recently_fed_first() {
        let mut j = LabelJoin::new(limits());
        for i in 0..MAX_RACES + 2 {
            let id = format!("m{i}");
            j.prediction(
                &shadowed(&id, "neutral", "v0", "neutral", &format!("c{i}")),
                1_000,
                1_000,
            )
            .unwrap();
            j.label(None, &label(&id, "neutral"), 1_000 + i as i64);
        }
        assert_eq!(j.races().len(), MAX_RACES);
        assert!(j.race_window("v0", "c0").is_none() && j.race_window("v0", "c1").is_none());
        assert!(
            j.race_window("v0", &format!("c{}", MAX_RACES + 1))
                .is_some()
        );
    }

    #[test]
    fn a_malformed_shadow_is_ignored_and_counted_never_the_champion() {
        let mut j = LabelJoin::new(limits());
        let base: Value = serde_json::from_slice(&prediction("m1", "positive", "v1")).unwrap();
        let bad = [
            serde_json::json!("v2"),
            serde_json::json!({"label": "neutral"}),
            serde_json::json!({"model_version": "v2", "label": "neutral"}),
            serde_json::json!({"model_version": "v2", "label": "nope", "probabilities": {"neutral": 1.0}}),
            serde_json::json!({"model_version": "v1", "label": "neutral", "probabilities": {"neutral": 1.0}}),
            serde_json::json!({"model_version": "v3", "label": "x".repeat(MAX_LABEL_BYTES + 1), "probabilities": {"a": 1.0}}),
        ];
        let n = bad.len();
        for (i, shadow) in bad.into_iter().enumerate() {
            let mut p = base.clone();
            p["id"] = Value::from(format!("m{i}"));
            p["shadow"] = shadow;
            j.prediction(p.to_string().as_bytes(), 1_000, 1_000)
                .unwrap();
        }
        let (count, why) = j.take_invalid_shadows();
        assert_eq!(count, n as u64);
        assert!(why.is_some());
        assert_eq!(j.held(), n);
        j.label(None, &label("m0", "positive"), 1_000);
        assert_eq!(score(&j, "v1").pairs, 1);
        assert!(j.races().is_empty());
        // A null shadow is no shadow.
        let mut p = base.clone();
        p["shadow"] = Value::Null;
        j.prediction(p.to_string().as_bytes(), 1_000, 1_000)
            .unwrap();
        assert_eq!(j.take_invalid_shadows().0, 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any mix of predictions (shadowed or not, among a few versions and ids) and
        /// labels (known, new or garbage classes; relabels): no panic, every label
        /// counted once, every race within its bounds and its indices within its classes.
        #[test]
        fn shadows_and_races_stay_within_their_bounds(
            ops in proptest::collection::vec((0u8..4, 0usize..12, 0usize..12, 0usize..5), 1..300)
        ) {
            let mut j = LabelJoin::new(JoinLimits {
                race_observations: 7,
                max_predictions: 20,
                ..limits()
            });
            let classes = ["negative", "neutral", "positive", "refund", "x"];
            let mut labels_sent = 0u64;
            for (t, (kind, a, b, c)) in ops.into_iter().enumerate() {
                let now = 1_000 + t as i64;
                let id = format!("m{a}");
                let version = format!("v{}", b % 3);
                match kind {
                    0 => {
                        let _ = j.prediction(&prediction(&id, LABELS[c % 3], &version), now, now);
                    }
                    1 => {
                        let by = format!("v{}", 3 + b % 10);
                        let _ = j.prediction(&shadowed(&id, LABELS[c % 3], &version, LABELS[b % 3], &by), now, now);
                    }
                    _ => {
                        labels_sent += 1;
                        j.label(None, &label(&id, classes[c]), now);
                    }
                }
                proptest::prop_assert!(j.races().len() <= MAX_RACES);
                for (champion, challenger, _) in j.races() {
                    let r = j.race_window(&champion, &challenger).unwrap();
                    proptest::prop_assert!(r.observations.len() <= 7);
                    for o in &r.observations {
                        proptest::prop_assert!(o.truth < r.classes && o.champion < r.classes && o.challenger < r.classes);
                    }
                }
            }
            j.expire(i64::MAX / 2);
            let counted: u64 = j.take_counts().iter().map(|(_, n)| n).sum();
            proptest::prop_assert_eq!(counted, labels_sent);
        }
    }

    #[test]
    fn limits_come_from_the_settings() {
        let l = JoinLimits::from_settings(&RetrainSettings::default());
        assert_eq!(l.window_ms, 3 * 24 * 3600 * 1000);
        assert_eq!(l.performance_window, 200);
        assert_eq!(l.pending_ms, 600_000);
        assert_eq!(l.max_unknown_classes, 16);
    }
}
