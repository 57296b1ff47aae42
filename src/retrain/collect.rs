//! The retraining job's data, as plain functions: feature records and late labels
//! in, labelled examples out (with counts of what could not be used), then the
//! seeded, stratified split of those examples into a training part and the
//! held-out slice both models are judged on. No Kafka, no files, no clock.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::feature::labels::LabelRule;
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
}

/// Joins feature records (in the order read) with late labels (in the order they
/// arrived) by message id. A late label wins over one carried in the message; of
/// several late labels for an id the last wins (the latest re-tag). Labels for
/// unknown ids or classes are counted, not fatal. Examples keep the order of their
/// ids' first records.
pub fn join(
    features: Vec<FeatureRow>,
    labels: Vec<LateLabel>,
    classes: &Classes,
) -> (Vec<Example>, JoinCounts) {
    let mut counts = JoinCounts {
        feature_records: features.len() as u64,
        label_records: labels.len() as u64,
        ..JoinCounts::default()
    };
    let mut rows: Vec<FeatureRow> = Vec::with_capacity(features.len());
    let mut index: HashMap<String, usize> = HashMap::new();
    for row in features {
        match index.get(&row.id) {
            Some(&i) => {
                counts.duplicate_records += 1;
                rows[i] = row;
            }
            None => {
                index.insert(row.id.clone(), rows.len());
                rows.push(row);
            }
        }
    }
    let mut late: Vec<Option<String>> = vec![None; rows.len()];
    for label in labels {
        let Some(&i) = index.get(&label.id) else {
            counts.unknown_ids += 1;
            continue;
        };
        match classes.of(&label.label) {
            Some(class) => late[i] = Some(class),
            None => counts.unknown_classes += 1,
        }
    }
    let mut examples = Vec::with_capacity(rows.len());
    for (row, late) in rows.into_iter().zip(late) {
        let carried = row.label.and_then(|l| classes.of(&LabelValue::Text(l)));
        let label = match (late, carried) {
            (Some(late), carried) => {
                counts.late_labels_used += 1;
                if carried.is_some_and(|c| c != late) {
                    counts.late_labels_overriding += 1;
                }
                late
            }
            (None, Some(carried)) => {
                counts.carried_labels_used += 1;
                carried
            }
            (None, None) => {
                counts.unlabelled += 1;
                continue;
            }
        };
        examples.push(Example {
            id: row.id,
            text: row.text,
            label,
        });
    }
    (examples, counts)
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
    let split = stratified_split(&targets, held_out_fraction, seed);
    Ok(RecentSplit {
        train: split.train,
        held_out: split.test,
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
