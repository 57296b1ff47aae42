//! Data validation before training: duplicates, rows per class, class balance,
//! text lengths. Pure functions over labelled examples.

use std::collections::HashMap;

use crate::config::TrainingSettings;
use crate::feature::LabelledExample;
use crate::registry::card::DataReport;
use crate::stats::Quantiles;

/// Drops exact duplicate texts (keeping the first), then checks what is left.
pub fn check(
    examples: Vec<LabelledExample>,
    labels: &[String],
    settings: &TrainingSettings,
    max_tokens: usize,
) -> (Vec<LabelledExample>, DataReport) {
    let rows_in = examples.len() as u64;
    let mut first_label: HashMap<String, usize> = HashMap::with_capacity(examples.len());
    let mut conflicts: HashMap<String, ()> = HashMap::new();
    let mut kept = Vec::with_capacity(examples.len());
    for ex in examples {
        let key = ex.text.trim().to_string();
        match first_label.get(&key) {
            Some(&label) => {
                if label != ex.label {
                    conflicts.insert(key, ());
                }
            }
            None => {
                first_label.insert(key, ex.label);
                kept.push(ex);
            }
        }
    }
    let mut counts = vec![0u64; labels.len()];
    for ex in &kept {
        counts[ex.label] += 1;
    }
    let mut chars: Vec<f64> = kept.iter().map(|e| e.text.chars().count() as f64).collect();
    let mut words: Vec<f64> = kept
        .iter()
        .map(|e| e.text.split_whitespace().count() as f64)
        .collect();
    // WordPiece averages about 1.3 tokens per English word, plus [CLS] and [SEP].
    let truncated = words
        .iter()
        .filter(|&&w| w * 1.3 + 2.0 > max_tokens as f64)
        .count();
    let share_truncated_estimate = if kept.is_empty() {
        0.0
    } else {
        truncated as f64 / kept.len() as f64
    };

    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    let present: Vec<u64> = counts.iter().copied().filter(|&c| c > 0).collect();
    if present.len() < 2 {
        failures.push(format!(
            "only {} class(es) have rows; a classifier needs at least two",
            present.len()
        ));
    }
    for (label, &count) in labels.iter().zip(&counts) {
        if (count as usize) < settings.min_rows_per_class {
            failures.push(format!(
                "class {label:?} has {count} rows, under training.min_rows_per_class = {}",
                settings.min_rows_per_class
            ));
        }
    }
    let max = present.iter().copied().max().unwrap_or(0) as f64;
    let min = present.iter().copied().min().unwrap_or(0) as f64;
    let class_ratio = if min > 0.0 { max / min } else { f64::INFINITY };
    if present.len() >= 2 && class_ratio > settings.max_class_ratio {
        failures.push(format!(
            "largest class is {class_ratio:.1}x the smallest, over training.max_class_ratio = {}",
            settings.max_class_ratio
        ));
    }
    let duplicates_removed = rows_in - kept.len() as u64;
    if duplicates_removed > 0 {
        warnings.push(format!("{duplicates_removed} duplicate text(s) removed"));
    }
    if !conflicts.is_empty() {
        warnings.push(format!(
            "{} text(s) appear with conflicting labels; the first label was kept",
            conflicts.len()
        ));
    }
    if share_truncated_estimate > 0.2 {
        warnings.push(format!(
            "about {:.0}% of texts exceed embedding.max_length = {max_tokens} tokens and are truncated",
            share_truncated_estimate * 100.0
        ));
    }

    let report = DataReport {
        rows_in,
        duplicates_removed,
        conflicting_duplicates: conflicts.len() as u64,
        rows_out: kept.len() as u64,
        rows_per_class: labels.iter().cloned().zip(counts).collect(),
        class_ratio,
        text_chars: Quantiles::of(&mut chars),
        text_words: Quantiles::of(&mut words),
        share_truncated_estimate,
        failures,
        warnings,
    };
    (kept, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(text: &str, label: usize) -> LabelledExample {
        LabelledExample {
            id: text.into(),
            text: text.into(),
            label,
        }
    }

    fn labels() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    fn settings(min_rows: usize, max_ratio: f64) -> TrainingSettings {
        TrainingSettings {
            min_rows_per_class: min_rows,
            max_class_ratio: max_ratio,
            ..TrainingSettings::default()
        }
    }

    #[test]
    fn duplicates_are_removed_and_conflicts_counted() {
        let data = vec![ex("x", 0), ex("x ", 0), ex("y", 1), ex("y", 0), ex("z", 1)];
        let (kept, r) = check(data, &labels(), &settings(1, 10.0), 256);
        assert_eq!(kept.len(), 3);
        assert_eq!(r.duplicates_removed, 2);
        assert_eq!(r.conflicting_duplicates, 1);
        assert_eq!(r.rows_per_class, vec![("a".into(), 1), ("b".into(), 2)]);
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        assert_eq!(r.warnings.len(), 2);
    }

    #[test]
    fn too_few_rows_in_a_class_fails_naming_it() {
        let data = vec![ex("1", 0), ex("2", 0), ex("3", 0), ex("4", 1)];
        let (_, r) = check(data, &labels(), &settings(2, 10.0), 256);
        assert_eq!(r.failures.len(), 1);
        assert!(r.failures[0].contains("\"b\" has 1 rows"));
    }

    #[test]
    fn imbalance_over_the_limit_fails() {
        let mut data: Vec<_> = (0..9).map(|i| ex(&format!("a{i}"), 0)).collect();
        data.push(ex("b", 1));
        let (_, r) = check(data, &labels(), &settings(1, 5.0), 256);
        assert_eq!(r.class_ratio, 9.0);
        assert!(r.failures[0].contains("9.0x"));
    }

    #[test]
    fn single_class_fails() {
        let data = vec![ex("1", 0), ex("2", 0)];
        let (_, r) = check(data, &labels(), &settings(1, 10.0), 256);
        assert!(r.failures.iter().any(|f| f.contains("at least two")));
    }

    #[test]
    fn length_quantiles_and_truncation_estimate() {
        let long = vec!["w"; 300].join(" ");
        let data = vec![ex("one", 0), ex("two words", 1), ex(&long, 1)];
        let (_, r) = check(data, &labels(), &settings(1, 10.0), 256);
        assert_eq!(r.text_words.min, 1.0);
        assert_eq!(r.text_words.p50, 2.0);
        assert_eq!(r.text_words.max, 300.0);
        assert!((r.share_truncated_estimate - 1.0 / 3.0).abs() < 1e-12);
    }
}
