//! Model validation gates: a model is promoted only if it passes every gate.

use crate::config::TrainingSettings;
use crate::model::evaluation::Evaluation;
use crate::registry::card::GateResult;

/// Checks the held-out evaluation against the configured minimums.
pub fn check(eval: &Evaluation, settings: &TrainingSettings) -> Vec<GateResult> {
    [
        (
            "training.min_macro_f1",
            settings.min_macro_f1,
            eval.macro_f1,
        ),
        (
            "training.min_macro_recall",
            settings.min_macro_recall,
            eval.macro_recall,
        ),
    ]
    .into_iter()
    .map(|(gate, threshold, value)| GateResult {
        gate: gate.into(),
        threshold,
        value,
        passed: value >= threshold,
    })
    .collect()
}

/// Gates that failed, as one line each.
pub fn failures(results: &[GateResult]) -> Vec<String> {
    results
        .iter()
        .filter(|g| !g.passed)
        .map(|g| format!("{}: {:.4} is under {:.4}", g.gate, g.value, g.threshold))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::evaluation::evaluate;

    #[test]
    fn failing_gate_is_named_with_value_and_threshold() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let eval = evaluate(&labels, &[0, 0, 1, 1], &[0, 0, 0, 1]);
        let settings = TrainingSettings {
            min_macro_f1: 0.9,
            min_macro_recall: 0.5,
            ..TrainingSettings::default()
        };
        let results = check(&eval, &settings);
        assert!(!results[0].passed);
        assert!(results[1].passed);
        let lines = failures(&results);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("training.min_macro_f1: 0.7333 is under 0.9000"),
            "{}",
            lines[0]
        );
    }
}
