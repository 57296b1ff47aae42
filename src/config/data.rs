//! The `[data]` and `[labels]` sections: how labelled files are read and how a row's
//! label is found. Owned by `feature` (its readers and its label rule); defined here
//! because `feature` sits above `config` in the dependency order.

use serde::{Deserialize, Serialize};

use super::validate::{Checker, Problem};

/// How labelled files are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSettings {
    /// `auto` (by extension: .csv is CSV, anything else JSON lines), `yelp`, `jsonl` or `csv`.
    pub format: DataFormat,
    /// Field (JSON) or column (CSV) holding the message text.
    pub text_field: String,
    /// Field or column holding the message id. Missing ids become `line-<N>`.
    pub id_field: String,
    /// CSV only: the field delimiter, one ASCII character.
    pub csv_delimiter: String,
    /// Rows longer than this many bytes are rejected as malformed.
    pub max_text_bytes: usize,
}

impl Default for DataSettings {
    fn default() -> Self {
        Self {
            format: DataFormat::Auto,
            text_field: "text".into(),
            id_field: "review_id".into(),
            csv_delimiter: ",".into(),
            max_text_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Auto,
    Yelp,
    Jsonl,
    Csv,
}

impl DataSettings {
    /// Every problem with this section alone, each with the key and the fix.
    pub fn problems(&self) -> Vec<Problem> {
        let mut c = Checker::default();
        let d = self;
        c.check(
            !d.text_field.trim().is_empty(),
            "data.text_field",
            || "is empty".into(),
            "name the field or column that holds the message text",
        );
        c.check(
            d.csv_delimiter.len() == 1 && d.csv_delimiter.is_ascii(),
            "data.csv_delimiter",
            || format!("{:?} is not one ASCII character", d.csv_delimiter),
            "use \",\", \";\" or \"\\t\"",
        );
        c.check(
            d.max_text_bytes >= 1,
            "data.max_text_bytes",
            || "is 0, which rejects every row".into(),
            "use a limit such as 65536",
        );
        c.0
    }
}

/// How a row's ground-truth label is found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelSettings {
    /// `stars`: map the numeric `field` through `ranges`. `column`: the field's value is the label.
    pub rule: LabelRuleKind,
    /// Field or column that carries the stars or the label.
    pub field: String,
    /// For `rule = "stars"`: inclusive value ranges, one per label; they must not overlap.
    pub ranges: Vec<LabelRange>,
    /// For `rule = "column"`: the accepted labels. Empty accepts any value.
    pub allowed: Vec<String>,
}

impl Default for LabelSettings {
    fn default() -> Self {
        let range = |label: &str, min: f64, max: f64| LabelRange {
            label: label.into(),
            min,
            max,
        };
        Self {
            rule: LabelRuleKind::Stars,
            field: "stars".into(),
            ranges: vec![
                range("negative", 1.0, 2.0),
                range("neutral", 3.0, 3.0),
                range("positive", 4.0, 5.0),
            ],
            allowed: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelRuleKind {
    Stars,
    Column,
}

/// One inclusive range of a numeric field mapped to a label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelRange {
    pub label: String,
    pub min: f64,
    pub max: f64,
}

impl LabelSettings {
    /// Every problem with this section alone, each with the key and the fix.
    pub fn problems(&self) -> Vec<Problem> {
        let mut c = Checker::default();
        let l = self;
        c.check(
            !l.field.trim().is_empty(),
            "labels.field",
            || "is empty".into(),
            "name the field that carries the label or the stars",
        );
        match l.rule {
            LabelRuleKind::Stars => self.check_ranges(&mut c),
            LabelRuleKind::Column => {
                let mut seen = std::collections::HashSet::new();
                let dup = l.allowed.iter().find(|a| !seen.insert(a.as_str()));
                c.check(
                    dup.is_none(),
                    "labels.allowed",
                    || format!("label {:?} is listed twice", dup.unwrap_or(&String::new())),
                    "list each label once",
                );
                c.check(
                    l.allowed.is_empty() || l.allowed.len() >= 2,
                    "labels.allowed",
                    || "lists one label; a classifier needs at least two".into(),
                    "list every label, or leave it empty to accept any",
                );
            }
        }
        c.0
    }

    fn check_ranges(&self, c: &mut Checker) {
        let ranges = &self.ranges;
        let fix =
            "give each label one inclusive range, e.g. { label = \"negative\", min = 1, max = 2 }";
        c.check(
            ranges.len() >= 2,
            "labels.ranges",
            || {
                format!(
                    "has {} range(s); a classifier needs at least two labels",
                    ranges.len()
                )
            },
            fix,
        );
        for r in ranges {
            c.check(
                !r.label.trim().is_empty(),
                "labels.ranges",
                || "a range has an empty label".into(),
                fix,
            );
            c.check(
                r.min.is_finite() && r.max.is_finite() && r.min <= r.max,
                "labels.ranges",
                || format!("range for {:?} has min {} > max {}", r.label, r.min, r.max),
                fix,
            );
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                c.check(
                    a.label != b.label,
                    "labels.ranges",
                    || format!("label {:?} has two ranges", a.label),
                    fix,
                );
                c.check(
                    a.max < b.min || b.max < a.min,
                    "labels.ranges",
                    || format!("ranges for {:?} and {:?} overlap", a.label, b.label),
                    "make the ranges disjoint so every value has one label",
                );
            }
        }
    }
}
