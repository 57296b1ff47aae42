//! Label rules: how a row's raw label value becomes one of the model's labels.

use crate::config::{LabelRange, LabelRuleKind, LabelSettings};
use crate::feature::readers::LabelValue;

/// Why a raw label value maps to no label.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LabelError {
    #[error("stars {0:?} is not a number")]
    StarsNotANumber(String),
    #[error("stars {0} is in no range of labels.ranges")]
    StarsOutOfRange(f64),
    #[error("label {0:?} is not in labels.allowed")]
    NotAllowed(String),
}

/// A configured label rule (see `[labels]` in config/default.toml).
#[derive(Debug, Clone)]
pub struct LabelRule {
    kind: LabelRuleKind,
    ranges: Vec<LabelRange>,
    allowed: Vec<String>,
}

impl LabelRule {
    pub fn new(settings: &LabelSettings) -> Self {
        Self {
            kind: settings.rule,
            ranges: settings.ranges.clone(),
            allowed: settings.allowed.clone(),
        }
    }

    /// The labels this rule can produce, in configured order, when it knows them up front.
    pub fn known_labels(&self) -> Option<Vec<String>> {
        match self.kind {
            LabelRuleKind::Stars => Some(self.ranges.iter().map(|r| r.label.clone()).collect()),
            LabelRuleKind::Column if !self.allowed.is_empty() => Some(self.allowed.clone()),
            LabelRuleKind::Column => None,
        }
    }

    /// Maps a raw value to a label, or says why it cannot.
    pub fn apply(&self, value: &LabelValue) -> Result<String, LabelError> {
        match self.kind {
            LabelRuleKind::Stars => {
                let stars = match value {
                    LabelValue::Number(n) => *n,
                    // A label that already names a class (a reviewer's answer on the
                    // labels topic) is that class.
                    LabelValue::Text(s) if self.ranges.iter().any(|r| r.label == s.trim()) => {
                        return Ok(s.trim().to_string());
                    }
                    LabelValue::Text(s) => s
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| LabelError::StarsNotANumber(s.clone()))?,
                };
                self.ranges
                    .iter()
                    .find(|r| r.min <= stars && stars <= r.max)
                    .map(|r| r.label.clone())
                    .ok_or(LabelError::StarsOutOfRange(stars))
            }
            LabelRuleKind::Column => {
                let label = match value {
                    LabelValue::Text(s) => s.trim().to_string(),
                    LabelValue::Number(n) if n.fract() == 0.0 => format!("{n:.0}"),
                    LabelValue::Number(n) => n.to_string(),
                };
                if self.allowed.is_empty() || self.allowed.contains(&label) {
                    Ok(label)
                } else {
                    Err(LabelError::NotAllowed(label))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stars() -> LabelRule {
        LabelRule::new(&LabelSettings::default())
    }

    #[test]
    fn yelp_stars_default_mapping() {
        let rule = stars();
        let map = |n: f64| rule.apply(&LabelValue::Number(n));
        assert_eq!(map(1.0).unwrap(), "negative");
        assert_eq!(map(2.0).unwrap(), "negative");
        assert_eq!(map(3.0).unwrap(), "neutral");
        assert_eq!(map(4.0).unwrap(), "positive");
        assert_eq!(map(5.0).unwrap(), "positive");
        assert!(map(3.5).unwrap_err().to_string().contains("no range"));
        let text = |t: &str| rule.apply(&LabelValue::Text(t.into()));
        assert_eq!(text("4").unwrap(), "positive");
        assert_eq!(text(" neutral ").unwrap(), "neutral", "a class's own name");
        assert!(matches!(
            text("billing"),
            Err(LabelError::StarsNotANumber(_))
        ));
        assert!(map(0.0).is_err());
        assert_eq!(
            rule.known_labels().unwrap(),
            ["negative", "neutral", "positive"]
        );
    }

    #[test]
    fn stars_as_text_are_parsed() {
        let rule = stars();
        assert_eq!(
            rule.apply(&LabelValue::Text(" 4 ".into())).unwrap(),
            "positive"
        );
        assert!(rule.apply(&LabelValue::Text("four".into())).is_err());
    }

    #[test]
    fn column_rule_takes_any_label_set() {
        let settings = LabelSettings {
            rule: LabelRuleKind::Column,
            field: "class_name".into(),
            ranges: vec![],
            allowed: vec![],
        };
        let rule = LabelRule::new(&settings);
        assert_eq!(
            rule.apply(&LabelValue::Text("REFUND ".into())).unwrap(),
            "REFUND"
        );
        assert_eq!(rule.apply(&LabelValue::Number(7.0)).unwrap(), "7");
        assert_eq!(rule.known_labels(), None);
    }

    #[test]
    fn column_rule_enforces_allowed_labels() {
        let settings = LabelSettings {
            rule: LabelRuleKind::Column,
            field: "intent".into(),
            ranges: vec![],
            allowed: vec!["billing".into(), "refund".into()],
        };
        let rule = LabelRule::new(&settings);
        assert!(rule.apply(&LabelValue::Text("billing".into())).is_ok());
        let err = rule.apply(&LabelValue::Text("spam".into())).unwrap_err();
        assert!(err.to_string().contains("labels.allowed"));
    }
}
