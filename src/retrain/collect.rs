//! The retraining job's data, as plain functions: feature records and late labels
//! in, labelled examples out (with counts of what could not be used), then the
//! seeded, stratified split of those examples into a training part and the
//! held-out slice both models are judged on. No Kafka, no files, no clock.

use std::collections::{BTreeMap, HashMap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::feature::label_rule::LabelRule;
use crate::feature::readers::LabelValue;
use crate::training::split::stratified_split;

/// A feature record as the retraining job needs it (see
/// [`crate::inference::records::feature`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    pub id: String,
    pub text: String,
    /// The label the message carried, already mapped by the label rule.
    pub label: Option<String>,
}

/// A label that arrived on its own, after the message.
#[derive(Debug, Clone, PartialEq)]
pub struct LateLabel {
    pub id: String,
    pub label: LabelValue,
}

/// Reads a feature record's payload.
pub fn parse_feature(payload: &[u8]) -> Result<FeatureRow, String> {
    #[derive(Deserialize)]
    struct Raw {
        id: Option<String>,
        text: Option<String>,
        label: Option<String>,
    }
    let raw: Raw =
        serde_json::from_slice(payload).map_err(|e| format!("not a feature record: {e}"))?;
    let id = raw.id.filter(|id| !id.is_empty()).ok_or("no \"id\"")?;
    // Records written before feature records carried the text cannot be refitted on.
    let text = raw
        .text
        .filter(|t| !t.trim().is_empty())
        .ok_or("no \"text\"")?;
    Ok(FeatureRow {
        id,
        text,
        label: raw.label,
    })
}

/// Reads a label record: value `{"id": "...", "label": "..."}`; without an `id`
/// field the record's key is the id. A numeric label (e.g. stars) is kept as a
/// number for the label rule.
pub fn parse_label(key: Option<&[u8]>, payload: &[u8]) -> Result<LateLabel, String> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("not a label record: {e}"))?;
    let id = match value.get("id") {
        Some(serde_json::Value::String(id)) => id.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => key
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(str::to_string)
            .ok_or("no \"id\" and no key")?,
    };
    if id.is_empty() {
        return Err("empty \"id\"".into());
    }
    let label = match value.get("label") {
        Some(serde_json::Value::String(s)) => LabelValue::Text(s.clone()),
        Some(serde_json::Value::Number(n)) => {
            LabelValue::Number(n.as_f64().ok_or("label is not a finite number")?)
        }
        _ => return Err("no \"label\" string".into()),
    };
    Ok(LateLabel { id, label })
}

/// Which labels are classes: the configured label rule (`labels.allowed` for the
/// column rule, the ranges' labels for the stars rule). A class name is taken as it
/// is; anything else goes through the rule (so a late label may also be stars).
#[derive(Debug, Clone)]
pub struct Classes {
    rule: LabelRule,
    known: Option<Vec<String>>,
}

impl Classes {
    pub fn new(rule: LabelRule) -> Self {
        let known = rule.known_labels();
        Self { rule, known }
    }

    /// The class of a raw label, or None when it is not one.
    pub fn of(&self, raw: &LabelValue) -> Option<String> {
        if let (LabelValue::Text(text), Some(known)) = (raw, &self.known) {
            let text = text.trim();
            if known.iter().any(|k| k == text) {
                return Some(text.to_string());
            }
        }
        self.rule.apply(raw).ok()
    }
}

/// A labelled example for the challenger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    pub id: String,
    pub text: String,
    pub label: String,
}

/// What the join took and what it could not use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct JoinCounts {
    /// Feature records read (after dropping malformed ones).
    pub feature_records: u64,
    /// Feature records of an id seen before (redelivered): the last one is kept.
    pub duplicate_records: u64,
    /// Label records read (after dropping malformed ones).
    pub label_records: u64,
    /// Late labels for ids that no feature record in the range has.
    pub unknown_ids: u64,
    /// Late labels that are no class of the label rule.
    pub unknown_classes: u64,
    /// Examples labelled by a late label.
    pub late_labels_used: u64,
    /// ... of which the message carried another label.
    pub late_labels_overriding: u64,
    /// Examples labelled by the label their message carried.
    pub carried_labels_used: u64,
    /// Feature records left without a label.
    pub unlabelled: u64,
    /// Labelled rows left out of the sample (past `retrain.max_rows`).
    pub sampled_away: u64,
}

/// Joins feature records (in the order read) with late labels (in the order they
/// arrived) by message id. A late label wins over one carried in the message; of
/// several late labels for an id the last wins (the latest re-tag). Labels for
/// unknown ids or classes are counted, not fatal. Examples keep the order of their
/// ids' first records. No sampling: [`RecentJoin`] is the bounded form.
pub fn join(
    features: Vec<FeatureRow>,
    labels: Vec<LateLabel>,
    classes: &Classes,
) -> (Vec<Example>, JoinCounts) {
    let mut recent = RecentJoin::new(labels, classes, usize::MAX, 0);
    for row in features {
        recent.offer(row);
    }
    recent.finish()
}

/// What a late label said of an id.
struct Late {
    /// The last label that is a class.
    class: Option<String>,
    /// Label records for the id, and those that were no class.
    records: u64,
    not_a_class: u64,
    /// Whether a feature record of the id was read.
    matched: bool,
}

/// An example in the sample, with what it counted.
struct Sampled {
    /// Order of its id's first record.
    seq: u64,
    example: Example,
    late: bool,
    overriding: bool,
}

/// The join of [`join`], fed one feature record at a time and holding at most
/// `max_rows` labelled rows: past that, a sample stratified by label
/// ([`StratifiedSample`]), so a job's memory follows `retrain.max_rows`, not the
/// traffic. A record redelivered while its id is in the sample replaces it; one
/// whose id was sampled away is offered again like any record.
pub struct RecentJoin<'c> {
    classes: &'c Classes,
    late: HashMap<String, Late>,
    /// Ids in the sample, and their class there.
    sampled: HashMap<String, String>,
    sample: StratifiedSample<Sampled>,
    counts: JoinCounts,
    seq: u64,
}

impl<'c> RecentJoin<'c> {
    /// The late labels first (they are small: an id and a class), then the feature
    /// records through [`RecentJoin::offer`].
    pub fn new(labels: Vec<LateLabel>, classes: &'c Classes, max_rows: usize, seed: u64) -> Self {
        let mut late: HashMap<String, Late> = HashMap::new();
        let label_records = labels.len() as u64;
        for label in labels {
            let class = classes.of(&label.label);
            let entry = late.entry(label.id).or_insert(Late {
                class: None,
                records: 0,
                not_a_class: 0,
                matched: false,
            });
            entry.records += 1;
            match class {
                Some(class) => entry.class = Some(class),
                None => entry.not_a_class += 1,
            }
        }
        Self {
            classes,
            late,
            sampled: HashMap::new(),
            sample: StratifiedSample::new(max_rows, seed),
            counts: JoinCounts {
                label_records,
                ..JoinCounts::default()
            },
            seq: 0,
        }
    }

    /// Takes one feature record.
    pub fn offer(&mut self, row: FeatureRow) {
        self.counts.feature_records += 1;
        let late = self.late.get_mut(&row.id).and_then(|l| {
            l.matched = true;
            l.class.clone()
        });
        let carried = row
            .label
            .and_then(|l| self.classes.of(&LabelValue::Text(l)));
        let mut seq = self.seq;
        if let Some(class) = self.sampled.remove(&row.id) {
            // Redelivered: the last record stands, in its first record's place.
            self.counts.duplicate_records += 1;
            if let Some(old) = self.sample.remove(&class, |s| s.example.id == row.id) {
                seq = old.seq;
                self.forget(&old);
            }
        } else {
            self.seq += 1;
        }
        let (label, is_late, overriding) = match (late, carried) {
            (Some(late), carried) => {
                let overriding = carried.is_some_and(|c| c != late);
                (late, true, overriding)
            }
            (None, Some(carried)) => (carried, false, false),
            (None, None) => {
                self.counts.unlabelled += 1;
                return;
            }
        };
        let item = Sampled {
            seq,
            example: Example {
                id: row.id,
                text: row.text,
                label,
            },
            late: is_late,
            overriding,
        };
        self.count(&item);
        let (id, class) = (item.example.id.clone(), item.example.label.clone());
        match self.sample.offer(&class, item) {
            Offered::Kept { evicted } => {
                self.sampled.insert(id, class);
                if let Some(old) = evicted {
                    self.sampled.remove(&old.example.id);
                    self.uncount(&old);
                }
            }
            Offered::Dropped(old) => self.uncount(&old),
        }
    }

    fn count(&mut self, s: &Sampled) {
        if s.late {
            self.counts.late_labels_used += 1;
            self.counts.late_labels_overriding += u64::from(s.overriding);
        } else {
            self.counts.carried_labels_used += 1;
        }
    }

    /// A row that left the sample: it is counted as sampled away instead.
    fn uncount(&mut self, s: &Sampled) {
        self.forget(s);
        self.counts.sampled_away += 1;
    }

    fn forget(&mut self, s: &Sampled) {
        if s.late {
            self.counts.late_labels_used -= 1;
            self.counts.late_labels_overriding -= u64::from(s.overriding);
        } else {
            self.counts.carried_labels_used -= 1;
        }
    }

    /// Rows held now (at most `max_rows`).
    pub fn held(&self) -> usize {
        self.sample.held()
    }

    /// The examples, in the order of their ids' first records, and the counts.
    pub fn finish(mut self) -> (Vec<Example>, JoinCounts) {
        for l in self.late.values() {
            if l.matched {
                self.counts.unknown_classes += l.not_a_class;
            } else {
                self.counts.unknown_ids += l.records;
            }
        }
        let mut rows = self.sample.into_items();
        rows.sort_by_key(|s| s.seq);
        (rows.into_iter().map(|s| s.example).collect(), self.counts)
    }
}

/// What [`StratifiedSample::offer`] did with an item.
pub enum Offered<T> {
    /// Kept; to make room, this one left the sample.
    Kept { evicted: Option<T> },
    /// Not kept (its class has its share already, and the draw passed it by).
    Dropped(T),
}

/// At most `capacity` items, stratified by class: each class keeps about its share
/// of the items offered so far (`capacity * seen / offered`, at least one), and
/// within a class each item offered has the same chance to be kept (reservoir
/// sampling). Seeded: the same items in the same order give the same sample.
pub struct StratifiedSample<T> {
    capacity: usize,
    rng: ChaCha8Rng,
    strata: BTreeMap<String, Stratum<T>>,
    held: usize,
    offered: u64,
}

struct Stratum<T> {
    items: Vec<T>,
    seen: u64,
}

impl<T> StratifiedSample<T> {
    pub fn new(capacity: usize, seed: u64) -> Self {
        Self {
            capacity: capacity.max(1),
            rng: ChaCha8Rng::seed_from_u64(seed),
            strata: BTreeMap::new(),
            held: 0,
            offered: 0,
        }
    }

    fn quota(capacity: usize, offered: u64, seen: u64) -> usize {
        let share = capacity as u128 * u128::from(seen) / u128::from(offered.max(1));
        usize::try_from(share).unwrap_or(usize::MAX).max(1)
    }

    /// Offers one item of `class`.
    pub fn offer(&mut self, class: &str, item: T) -> Offered<T> {
        self.offered += 1;
        let stratum = self
            .strata
            .entry(class.to_string())
            .or_insert_with(|| Stratum {
                items: Vec::new(),
                seen: 0,
            });
        stratum.seen += 1;
        let quota = Self::quota(self.capacity, self.offered, stratum.seen);
        if stratum.items.len() < quota {
            stratum.items.push(item);
            self.held += 1;
            let evicted = if self.held > self.capacity {
                self.evict()
            } else {
                None
            };
            return Offered::Kept { evicted };
        }
        let draw = self.rng.random_range(0..stratum.seen);
        match usize::try_from(draw) {
            Ok(at) if at < stratum.items.len() => Offered::Kept {
                evicted: Some(std::mem::replace(&mut stratum.items[at], item)),
            },
            _ => Offered::Dropped(item),
        }
    }

    /// Takes a random item out of the class furthest over its share.
    fn evict(&mut self) -> Option<T> {
        let (capacity, offered) = (self.capacity, self.offered);
        let stratum = self
            .strata
            .values_mut()
            .filter(|s| !s.items.is_empty())
            .max_by_key(|s| {
                s.items.len() as i128 - Self::quota(capacity, offered, s.seen) as i128
            })?;
        let at = self.rng.random_range(0..stratum.items.len());
        self.held -= 1;
        Some(stratum.items.swap_remove(at))
    }

    /// Takes out the first item of `class` that `which` picks.
    pub fn remove(&mut self, class: &str, which: impl Fn(&T) -> bool) -> Option<T> {
        let stratum = self.strata.get_mut(class)?;
        let at = stratum.items.iter().position(which)?;
        self.held -= 1;
        Some(stratum.items.swap_remove(at))
    }

    /// Items held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Items held per class.
    pub fn per_class(&self) -> BTreeMap<&str, usize> {
        self.strata
            .iter()
            .map(|(c, s)| (c.as_str(), s.items.len()))
            .collect()
    }

    /// The items, class by class.
    pub fn into_items(self) -> Vec<T> {
        self.strata.into_values().flat_map(|s| s.items).collect()
    }
}

/// Drops the rows of `original` that are in the held-out slice (same id or same
/// text): a challenger trained on them would be judged on rows it has seen. The
/// original data can hold recent rows, e.g. when it is an earlier run's train file.
/// Returns the rows kept and how many were dropped.
pub fn without_held_out(original: Vec<Example>, held_out: &[&Example]) -> (Vec<Example>, usize) {
    let ids: std::collections::HashSet<&str> = held_out.iter().map(|e| e.id.as_str()).collect();
    let texts: std::collections::HashSet<&str> = held_out.iter().map(|e| e.text.as_str()).collect();
    let before = original.len();
    let kept: Vec<Example> = original
        .into_iter()
        .filter(|e| !ids.contains(e.id.as_str()) && !texts.contains(e.text.as_str()))
        .collect();
    let dropped = before - kept.len();
    (kept, dropped)
}

/// Row indices of the two parts of the recent examples.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentSplit {
    pub train: Vec<usize>,
    pub held_out: Vec<usize>,
}

/// Why the recent examples cannot make a fair comparison.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SplitRefusal {
    #[error(
        "{rows} recent labelled row(s), fewer than retrain.min_recent_rows = {min}; wait for more labels, take a longer range (--since, retrain.window_s), or lower retrain.min_recent_rows"
    )]
    TooFewRows { rows: usize, min: usize },
    #[error(
        "too few recent labelled rows in class(es) {}: each needs training.min_rows_per_class = {min} to be trained on and judged; wait for more labels, take a longer range (--since, retrain.window_s), or lower training.min_rows_per_class",
        .classes.iter().map(|(c, n)| format!("{c} ({n})")).collect::<Vec<_>>().join(", ")
    )]
    ThinClasses {
        classes: Vec<(String, usize)>,
        min: usize,
    },
}

/// Splits the recent examples into a training part and a held-out slice: each
/// class gives `held_out_fraction` of its rows (at least one) to the slice, chosen
/// with `seed`, so the same examples and seed give the same split. Refuses fewer
/// than `min_rows` rows, or a class with fewer than `min_per_class`.
pub fn split_recent(
    examples: &[Example],
    held_out_fraction: f64,
    min_rows: usize,
    min_per_class: usize,
    seed: u64,
) -> Result<RecentSplit, SplitRefusal> {
    if examples.len() < min_rows {
        return Err(SplitRefusal::TooFewRows {
            rows: examples.len(),
            min: min_rows,
        });
    }
    let mut names: Vec<&str> = examples.iter().map(|e| e.label.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let targets: Vec<usize> = examples
        .iter()
        .map(|e| names.binary_search(&e.label.as_str()).unwrap_or_default())
        .collect();
    let mut per_class = vec![0usize; names.len()];
    for &t in &targets {
        per_class[t] += 1;
    }
    let thin: Vec<(String, usize)> = names
        .iter()
        .zip(&per_class)
        .filter(|&(_, &n)| n < min_per_class.max(2))
        .map(|(name, &n)| (name.to_string(), n))
        .collect();
    if !thin.is_empty() {
        return Err(SplitRefusal::ThinClasses {
            classes: thin,
            min: min_per_class.max(2),
        });
    }
    // The split is drawn over the examples ordered by id, so it does not follow
    // the order the partitions delivered them in: a rerun over the same labelled
    // messages holds out the same ones, and an earlier run's train file (added as
    // original data) does not overlap this run's held-out slice.
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by(|&a, &b| examples[a].id.cmp(&examples[b].id));
    let ordered: Vec<usize> = order.iter().map(|&i| targets[i]).collect();
    let split = stratified_split(&ordered, held_out_fraction, seed);
    let back = |part: Vec<usize>| -> Vec<usize> {
        let mut rows: Vec<usize> = part.into_iter().map(|k| order[k]).collect();
        rows.sort_unstable();
        rows
    };
    Ok(RecentSplit {
        train: back(split.train),
        held_out: back(split.test),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LabelRuleKind, LabelSettings};

    fn classes(allowed: &[&str]) -> Classes {
        Classes::new(LabelRule::new(&LabelSettings {
            rule: LabelRuleKind::Column,
            field: "label".into(),
            ranges: Vec::new(),
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
        }))
    }

    fn row(id: &str, label: Option<&str>) -> FeatureRow {
        FeatureRow {
            id: id.into(),
            text: format!("text of {id}"),
            label: label.map(str::to_string),
        }
    }

    fn late(id: &str, label: &str) -> LateLabel {
        LateLabel {
            id: id.into(),
            label: LabelValue::Text(label.into()),
        }
    }

    #[test]
    fn a_late_label_wins_over_the_one_in_the_message() {
        let (examples, counts) = join(
            vec![row("a", Some("billing")), row("b", Some("refund"))],
            vec![late("a", "refund")],
            &classes(&["billing", "refund"]),
        );
        let labels: Vec<(&str, &str)> = examples
            .iter()
            .map(|e| (e.id.as_str(), e.label.as_str()))
            .collect();
        assert_eq!(labels, [("a", "refund"), ("b", "refund")]);
        assert_eq!(counts.late_labels_used, 1);
        assert_eq!(counts.late_labels_overriding, 1);
        assert_eq!(counts.carried_labels_used, 1);
    }

    #[test]
    fn the_last_of_several_late_labels_wins() {
        let (examples, _) = join(
            vec![row("a", None)],
            vec![late("a", "billing"), late("a", "refund")],
            &classes(&[]),
        );
        assert_eq!(examples[0].label, "refund");
    }

    #[test]
    fn labels_for_unknown_ids_and_classes_are_counted_not_fatal() {
        let (examples, counts) = join(
            vec![row("a", None), row("b", None), row("c", Some("spam"))],
            vec![
                late("zz", "billing"),
                late("a", "spam"),
                late("b", "billing"),
            ],
            &classes(&["billing", "refund"]),
        );
        assert_eq!(counts.unknown_ids, 1);
        assert_eq!(counts.unknown_classes, 1);
        // a: its only label is no class; c: carries one that is no class.
        assert_eq!(counts.unlabelled, 2);
        assert_eq!(examples.len(), 1);
        assert_eq!(examples[0].id, "b");
    }

    #[test]
    fn a_redelivered_record_counts_once() {
        let (examples, counts) = join(
            vec![
                row("a", Some("billing")),
                row("b", Some("refund")),
                row("a", Some("billing")),
            ],
            Vec::new(),
            &classes(&[]),
        );
        assert_eq!(examples.len(), 2);
        assert_eq!(counts.duplicate_records, 1);
        assert_eq!(counts.feature_records, 3);
    }

    #[test]
    fn past_max_rows_the_join_keeps_a_stratified_sample() {
        let classes = classes(&["billing", "refund", "spam"]);
        let mut recent = RecentJoin::new(vec![late("r7", "spam")], &classes, 1_000, 42);
        let mut most_held = 0;
        for i in 0..100_000 {
            let label = match i % 10 {
                0..=6 => "billing",
                7 | 8 => "refund",
                _ => "spam",
            };
            recent.offer(row(&format!("r{i}"), Some(label)));
            most_held = most_held.max(recent.held());
        }
        assert_eq!(most_held, 1_000, "never more than max_rows held");
        let (examples, counts) = recent.finish();
        assert_eq!(examples.len(), 1_000);
        assert_eq!(counts.sampled_away, 99_000);
        assert_eq!(counts.feature_records, 100_000);
        assert_eq!(
            counts.carried_labels_used + counts.late_labels_used,
            1_000,
            "{counts:?}"
        );
        let share =
            |label: &str| examples.iter().filter(|e| e.label == label).count() as f64 / 1_000.0;
        for (label, expected) in [("billing", 0.7), ("refund", 0.2), ("spam", 0.1)] {
            assert!(
                (share(label) - expected).abs() < 0.01,
                "{label}: {} of the sample",
                share(label)
            );
        }
        // In the order read, and drawn from the whole range, not its start.
        let at: Vec<usize> = examples
            .iter()
            .map(|e| e.id[1..].parse().unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]));
        let mean = at.iter().sum::<usize>() as f64 / at.len() as f64;
        assert!((35_000.0..65_000.0).contains(&mean), "mean position {mean}");
    }

    #[test]
    fn the_sample_is_seeded_and_keeps_a_rare_class() {
        let classes = classes(&[]);
        let sample = |seed: u64| {
            let mut recent = RecentJoin::new(Vec::new(), &classes, 100, seed);
            for i in 0..5_000 {
                let label = if i == 4_321 { "rare" } else { "common" };
                recent.offer(row(&format!("r{i}"), Some(label)));
            }
            recent.finish().0
        };
        let a = sample(1);
        assert_eq!(a, sample(1));
        assert_ne!(a, sample(2));
        assert_eq!(a.len(), 100);
        assert!(
            a.iter().any(|e| e.label == "rare"),
            "the rare class kept its row"
        );
    }

    #[test]
    fn a_stratified_sample_holds_at_most_its_capacity() {
        let mut s = StratifiedSample::new(10, 7);
        for i in 0..1_000u32 {
            let class = format!("c{}", i % 37);
            let _ = s.offer(&class, i);
            assert!(s.held() <= 10);
        }
        assert_eq!(s.held(), 10);
        assert!(s.per_class().values().all(|&n| n <= 1));
    }

    #[test]
    fn late_stars_go_through_the_stars_rule() {
        let stars = Classes::new(LabelRule::new(&LabelSettings::default()));
        assert_eq!(
            stars.of(&LabelValue::Number(5.0)).as_deref(),
            Some("positive")
        );
        assert_eq!(
            stars.of(&LabelValue::Text("negative".into())).as_deref(),
            Some("negative")
        );
        assert_eq!(stars.of(&LabelValue::Text("great".into())), None);
    }

    #[test]
    fn records_parse_with_their_ids_from_value_or_key() {
        let f = parse_feature(
            br#"{"id":"m1","timestamp_ms":1,"text":"hi","embedding":[0.1],"label":null}"#,
        )
        .unwrap();
        assert_eq!(f, row_text("m1", "hi", None));
        assert!(
            parse_feature(br#"{"id":"m1","embedding":[0.1]}"#)
                .unwrap_err()
                .contains("text")
        );
        let l = parse_label(Some(b"k1"), br#"{"label":"refund"}"#).unwrap();
        assert_eq!(l, late("k1", "refund"));
        let l = parse_label(Some(b"k1"), br#"{"id":"m2","label":4}"#).unwrap();
        assert_eq!(l.id, "m2");
        assert_eq!(l.label, LabelValue::Number(4.0));
        assert!(parse_label(None, br#"{"label":"x"}"#).is_err());
        assert!(parse_label(Some(b"k"), b"not json").is_err());
    }

    fn row_text(id: &str, text: &str, label: Option<&str>) -> FeatureRow {
        FeatureRow {
            id: id.into(),
            text: text.into(),
            label: label.map(str::to_string),
        }
    }

    fn examples(per_class: &[(&str, usize)]) -> Vec<Example> {
        per_class
            .iter()
            .flat_map(|&(label, n)| {
                (0..n).map(move |i| Example {
                    id: format!("{label}-{i}"),
                    text: format!("{label} text {i}"),
                    label: label.into(),
                })
            })
            .collect()
    }

    #[test]
    fn the_split_is_stratified_and_seeded() {
        let ex = examples(&[("a", 40), ("b", 20), ("c", 10)]);
        let split = split_recent(&ex, 0.3, 60, 10, 7).unwrap();
        let held = |label: &str| {
            split
                .held_out
                .iter()
                .filter(|&&i| ex[i].label == label)
                .count()
        };
        assert_eq!((held("a"), held("b"), held("c")), (12, 6, 3));
        assert_eq!(split.train.len() + split.held_out.len(), ex.len());
        assert_eq!(split, split_recent(&ex, 0.3, 60, 10, 7).unwrap());
        assert_ne!(split, split_recent(&ex, 0.3, 60, 10, 8).unwrap());
    }

    #[test]
    fn the_split_does_not_follow_the_delivery_order() {
        // Two partitions interleave differently from one read to the next: the
        // same messages must give the same held-out slice.
        let ex = examples(&[("a", 40), ("b", 20), ("c", 10)]);
        let mut reordered = ex.clone();
        reordered.reverse();
        reordered.rotate_left(17);
        let held = |rows: &[Example]| {
            let split = split_recent(rows, 0.3, 60, 10, 7).unwrap();
            let mut ids: Vec<String> = split.held_out.iter().map(|&i| rows[i].id.clone()).collect();
            ids.sort();
            ids
        };
        assert_eq!(held(&ex), held(&reordered));
    }

    #[test]
    fn original_rows_seen_in_the_held_out_slice_are_dropped() {
        let recent = examples(&[("a", 3)]);
        let held_out: Vec<&Example> = vec![&recent[0], &recent[1]];
        let mut same_text = recent[1].clone();
        same_text.id = "other-id".into();
        let original = vec![recent[0].clone(), same_text, recent[2].clone()];
        let (kept, dropped) = without_held_out(original, &held_out);
        assert_eq!(dropped, 2);
        assert_eq!(kept, vec![recent[2].clone()]);
    }

    #[test]
    fn the_split_refuses_too_few_rows_or_a_thin_class() {
        let ex = examples(&[("a", 30), ("b", 20)]);
        assert_eq!(
            split_recent(&ex, 0.3, 60, 10, 7),
            Err(SplitRefusal::TooFewRows { rows: 50, min: 60 })
        );
        let ex = examples(&[("a", 60), ("b", 4)]);
        let refusal = split_recent(&ex, 0.3, 60, 10, 7).unwrap_err();
        assert_eq!(
            refusal,
            SplitRefusal::ThinClasses {
                classes: vec![("b".into(), 4)],
                min: 10
            }
        );
        assert!(refusal.to_string().contains("b (4)"), "{refusal}");
        assert!(refusal.to_string().contains("training.min_rows_per_class"));
    }
}
