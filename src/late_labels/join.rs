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

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

use crate::config::RetrainSettings;

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

/// The join's bounds (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinLimits {
    pub window_ms: i64,
    pub max_predictions: usize,
    pub pending_ms: i64,
    pub max_pending: usize,
    pub performance_window: usize,
    pub max_unknown_classes: usize,
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
    /// Changes whenever the window does: a check of an unchanged window can be kept.
    pub revision: u64,
}

/// A prediction held for the join.
struct Held {
    version: Arc<str>,
    predicted: usize,
    ts_ms: i64,
    /// Insertion number: tells the live entry in `order` from stale ones.
    seq: u64,
    /// Whether a label was joined with it already (a later one is a relabel).
    labelled: bool,
}

struct Pair {
    id: Arc<str>,
    predicted: usize,
    truth: usize,
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

    fn push(&mut self, id: Arc<str>, predicted: usize, truth: usize, window: usize) {
        let n = self.first_pair + self.pairs.len() as u64;
        self.pair_of.insert(id.clone(), n);
        self.tally(truth, predicted);
        self.pairs.push_back(Pair {
            id,
            predicted,
            truth,
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
        let id: Arc<str> = Arc::from(id);
        // A prediction again for the same id (redelivery, or another version):
        // the newest stands, and keeps the truth already joined.
        let labelled = self.held.get(&id).is_some_and(|h| h.labelled);
        self.held.insert(
            id.clone(),
            Held {
                version,
                predicted,
                ts_ms,
                seq,
                labelled,
            },
        );
        self.order.push_back((id.clone(), seq));
        if let Some(w) = self.waiting.remove(&id) {
            let result = self.apply(&id, &w.label);
            self.count(result);
        }
        self.forget_old(now_ms);
        Ok(())
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
            let result = self.apply(&id, &label);
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

    /// A version's window, or None for a version not held.
    pub fn window(&self, version: &str) -> Option<VersionWindow> {
        self.versions.get(version).map(|v| VersionWindow {
            labels: v.labels.clone(),
            classes: v.support.len(),
            pairs: v.pairs.iter().map(|p| (p.truth, p.predicted)).collect(),
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

    /// Joins `label` with the held prediction of `id`.
    fn apply(&mut self, id: &Arc<str>, label: &str) -> LabelResult {
        let Some(held) = self.held.get_mut(id) else {
            return LabelResult::UnknownId;
        };
        let Some(version) = self.versions.get_mut(&held.version) else {
            return LabelResult::UnknownId;
        };
        let again = std::mem::replace(&mut held.labelled, true);
        // A relabel of a pair still in the window replaces its truth in place: out
        // of the counts first, so a class only it named is free for the new label.
        let in_window = if again {
            version
                .pair_of
                .get(id)
                .map(|&n| (n - version.first_pair) as usize)
        } else {
            None
        };
        if let Some(at) = in_window {
            let (truth, predicted) = (version.pairs[at].truth, version.pairs[at].predicted);
            version.untally(truth, predicted);
        }
        // A class the model does not know is a miss it could not avoid: it enters
        // the window (as in `triage evaluate`), so new intents pull the scores down,
        // and it is counted as unknown_class.
        let known = version.index.get(label).copied();
        let truth = match known {
            Some(i) => i,
            None => {
                let (class, other) = version.unknown_class(label);
                if other {
                    self.other_class += 1;
                }
                class
            }
        };
        let predicted = held.predicted;
        if let Some(at) = in_window {
            version.pairs[at].truth = truth;
            version.pairs[at].predicted = predicted;
            version.tally(truth, predicted);
        } else {
            version.push(id.clone(), predicted, truth, self.limits.performance_window);
        }
        match (known, again) {
            (None, _) => LabelResult::UnknownClass,
            (Some(_), true) => LabelResult::Relabelled,
            (Some(_), false) => LabelResult::Joined,
        }
    }

    /// Makes room for a new version: forgets the one predicted least recently (its
    /// held predictions' labels then count as `unknown_id`).
    fn forget_least_recent_version(&mut self) {
        let oldest = self
            .versions
            .iter()
            .min_by_key(|(_, v)| v.last_seq)
            .map(|(name, _)| name.clone());
        if let Some(name) = oldest {
            self.versions.remove(&name);
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

    #[test]
    fn limits_come_from_the_settings() {
        let l = JoinLimits::from_settings(&RetrainSettings::default());
        assert_eq!(l.window_ms, 3 * 24 * 3600 * 1000);
        assert_eq!(l.performance_window, 200);
        assert_eq!(l.pending_ms, 600_000);
        assert_eq!(l.max_unknown_classes, 16);
    }
}
