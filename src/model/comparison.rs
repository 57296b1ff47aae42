//! Two evaluations side by side: each metric for A and B and the difference B - A,
//! overall and per class. Models with different label sets compare over the union
//! of their labels; a metric a model has no class for is absent, not zero.

use std::fmt::Write;

use serde::Serialize;

use super::evaluation::{ClassMetrics, Evaluation, label_width};

/// One metric for both models; `difference` is `b - a` when both have it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Delta {
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub difference: Option<f64>,
}

impl Delta {
    fn new(a: Option<f64>, b: Option<f64>) -> Self {
        let difference = a.zip(b).map(|(a, b)| b - a);
        Self { a, b, difference }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassComparison {
    pub label: String,
    pub precision: Delta,
    pub recall: Delta,
    pub f1: Delta,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Rows each evaluation scored (the same file gives the same count).
    pub rows: (u64, u64),
    pub accuracy: Delta,
    pub macro_f1: Delta,
    pub macro_precision: Delta,
    pub macro_recall: Delta,
    /// A's labels in A's order, then labels only B has.
    pub per_class: Vec<ClassComparison>,
}

/// Compares B against A.
pub fn compare(a: &Evaluation, b: &Evaluation) -> Comparison {
    let both = |f: fn(&Evaluation) -> f64| Delta::new(Some(f(a)), Some(f(b)));
    let mut labels: Vec<&str> = a.per_class.iter().map(|c| c.label.as_str()).collect();
    for c in &b.per_class {
        if !labels.contains(&c.label.as_str()) {
            labels.push(&c.label);
        }
    }
    let find = |e: &'_ Evaluation, label: &str| -> Option<ClassMetrics> {
        e.per_class.iter().find(|c| c.label == label).cloned()
    };
    let per_class = labels
        .into_iter()
        .map(|label| {
            let (ca, cb) = (find(a, label), find(b, label));
            let side =
                |f: fn(&ClassMetrics) -> f64| Delta::new(ca.as_ref().map(f), cb.as_ref().map(f));
            ClassComparison {
                label: label.to_string(),
                precision: side(|c| c.precision),
                recall: side(|c| c.recall),
                f1: side(|c| c.f1),
            }
        })
        .collect();
    Comparison {
        rows: (a.rows, b.rows),
        accuracy: both(|e| e.accuracy),
        macro_f1: both(|e| e.macro_f1),
        macro_precision: both(|e| e.macro_precision),
        macro_recall: both(|e| e.macro_recall),
        per_class,
    }
}

fn value(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

fn signed(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:+.4}"))
}

impl Comparison {
    /// Tables for people; `a` and `b` name the two models in the headers.
    pub fn render(&self, a: &str, b: &str) -> String {
        let mut s = String::new();
        let diff = format!("{b}-{a}");
        let w = a.len().max(b.len()).max(diff.len()).max(7);
        let _ = writeln!(s, "{:<15}  {a:>w$}  {b:>w$}  {diff:>w$}", "");
        let _ = writeln!(
            s,
            "{:<15}  {:>w$}  {:>w$}",
            "rows", self.rows.0, self.rows.1
        );
        for (name, d) in [
            ("accuracy", self.accuracy),
            ("macro-F1", self.macro_f1),
            ("macro-precision", self.macro_precision),
            ("macro-recall", self.macro_recall),
        ] {
            let _ = writeln!(
                s,
                "{name:<15}  {:>w$}  {:>w$}  {:>w$}",
                value(d.a),
                value(d.b),
                signed(d.difference)
            );
        }
        let width = label_width(self.per_class.iter().map(|c| c.label.as_str()), 5);
        let group = 3 * w + 4;
        let _ = write!(s, "\n{:<width$}", "class");
        for metric in ["precision", "recall", "f1"] {
            let _ = write!(s, "  | {metric:^group$}");
        }
        let _ = write!(s, "\n{:<width$}", "");
        for _ in 0..3 {
            let _ = write!(s, "  | {a:>w$}  {b:>w$}  {:>w$}", "diff");
        }
        for c in &self.per_class {
            let _ = write!(s, "\n{:<width$}", c.label);
            for d in [c.precision, c.recall, c.f1] {
                let _ = write!(
                    s,
                    "  | {:>w$}  {:>w$}  {:>w$}",
                    value(d.a),
                    value(d.b),
                    signed(d.difference)
                );
            }
        }
        // Centred headers pad the right edge; no line should end in spaces.
        s.lines().map(|l| l.trim_end().to_string() + "\n").collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::evaluation::evaluate;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn close(a: Option<f64>, b: f64) {
        let a = a.expect("a value");
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn differences_are_b_minus_a_overall_and_per_class() {
        let l = labels(&["neg", "pos"]);
        let a = evaluate(&l, &[0, 0, 1, 1], &[0, 1, 1, 1]);
        let b = evaluate(&l, &[0, 0, 1, 1], &[0, 0, 1, 1]);
        let c = compare(&a, &b);
        close(c.accuracy.difference, 0.25);
        close(c.macro_f1.difference, b.macro_f1 - a.macro_f1);
        assert_eq!(c.per_class.len(), 2);
        // neg: A recall 1/2, B recall 1.
        close(c.per_class[0].recall.a, 0.5);
        close(c.per_class[0].recall.difference, 0.5);
        // pos: A precision 2/3, B precision 1.
        close(c.per_class[1].precision.difference, 1.0 / 3.0);
        assert_eq!(c.rows, (4, 4));
    }

    #[test]
    fn labels_only_one_model_knows_have_no_difference() {
        let a = evaluate(&labels(&["neg", "pos"]), &[0, 1], &[0, 1]);
        let b = evaluate(&labels(&["neg", "pos", "neu"]), &[0, 1, 2], &[0, 1, 2]);
        let c = compare(&a, &b);
        let names: Vec<&str> = c.per_class.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(names, ["neg", "pos", "neu"]);
        let neu = &c.per_class[2];
        assert_eq!((neu.f1.a, neu.f1.difference), (None, None));
        close(neu.f1.b, 1.0);
        let table = c.render("v1", "v2");
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("neu") && l.contains(" - ")),
            "{table}"
        );
    }

    #[test]
    fn render_shows_both_versions_and_signed_differences() {
        let l = labels(&["neg", "pos"]);
        let a = evaluate(&l, &[0, 0, 1, 1], &[0, 1, 1, 1]);
        let b = evaluate(&l, &[0, 0, 1, 1], &[0, 0, 1, 1]);
        let table = compare(&a, &b).render("v1", "v2");
        let header = table.lines().next().unwrap();
        assert!(header.contains("v1") && header.contains("v2") && header.contains("v2-v1"));
        let accuracy = table.lines().find(|l| l.starts_with("accuracy")).unwrap();
        assert!(
            accuracy.contains("0.7500") && accuracy.contains("1.0000"),
            "{accuracy}"
        );
        assert!(accuracy.contains("+0.2500"), "{accuracy}");
        assert!(
            table.contains("precision") && table.contains("recall"),
            "{table}"
        );
    }
}
