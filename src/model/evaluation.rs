//! Classification metrics: accuracy, per-class precision / recall / F1, macro
//! averages and the confusion matrix. Conventions follow scikit-learn: a ratio
//! with a zero denominator is 0, and macro averages run over the classes that
//! occur in the truth or the predictions.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Rows of this class in the truth.
    pub support: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub rows: u64,
    pub accuracy: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[truth][predicted]`, indexed like `per_class`.
    pub confusion: Vec<Vec<u64>>,
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Evaluates predictions against the truth; both hold indices into `labels`.
pub fn evaluate(labels: &[String], truth: &[usize], predicted: &[usize]) -> Evaluation {
    assert_eq!(
        truth.len(),
        predicted.len(),
        "truth and predictions differ in length"
    );
    let k = labels.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for (&t, &p) in truth.iter().zip(predicted) {
        confusion[t][p] += 1;
    }
    let correct: u64 = (0..k).map(|i| confusion[i][i]).sum();
    let mut per_class = Vec::with_capacity(k);
    let mut active = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        let tp = confusion[i][i];
        let support: u64 = confusion[i].iter().sum();
        let predicted_i: u64 = confusion.iter().map(|row| row[i]).sum();
        let precision = ratio(tp, predicted_i);
        let recall = ratio(tp, support);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        if support > 0 || predicted_i > 0 {
            active.push(i);
        }
        per_class.push(ClassMetrics {
            label: label.clone(),
            precision,
            recall,
            f1,
            support,
        });
    }
    let mean = |f: fn(&ClassMetrics) -> f64| {
        if active.is_empty() {
            0.0
        } else {
            active.iter().map(|&i| f(&per_class[i])).sum::<f64>() / active.len() as f64
        }
    };
    Evaluation {
        rows: truth.len() as u64,
        accuracy: ratio(correct, truth.len() as u64),
        macro_precision: mean(|c| c.precision),
        macro_recall: mean(|c| c.recall),
        macro_f1: mean(|c| c.f1),
        per_class,
        confusion,
    }
}

/// Width of a class-name column: the longest label, at least `min`.
pub(crate) fn label_width<'a>(labels: impl IntoIterator<Item = &'a str>, min: usize) -> usize {
    labels.into_iter().map(str::len).max().unwrap_or(5).max(min)
}

impl Evaluation {
    /// A human-readable report: summary, per-class table, confusion matrix.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "rows {}  accuracy {:.4}  macro-F1 {:.4}  macro-precision {:.4}  macro-recall {:.4}",
            self.rows, self.accuracy, self.macro_f1, self.macro_precision, self.macro_recall
        );
        let width = label_width(self.per_class.iter().map(|c| c.label.as_str()), 9);
        let _ = writeln!(
            s,
            "\n{:<width$}  {:>9}  {:>9}  {:>9}  {:>7}",
            "class", "precision", "recall", "f1", "support"
        );
        for c in &self.per_class {
            let _ = writeln!(
                s,
                "{:<width$}  {:>9.4}  {:>9.4}  {:>9.4}  {:>7}",
                c.label, c.precision, c.recall, c.f1, c.support
            );
        }
        let cell = self
            .confusion
            .iter()
            .flatten()
            .map(|v| v.to_string().len())
            .max()
            .unwrap_or(1)
            .max(
                self.per_class
                    .iter()
                    .map(|c| c.label.len().min(10))
                    .max()
                    .unwrap_or(1),
            );
        let _ = write!(
            s,
            "\nconfusion (rows: truth, columns: predicted)\n{:<width$}",
            ""
        );
        for c in &self.per_class {
            let name: String = c.label.chars().take(10).collect();
            let _ = write!(s, "  {name:>cell$}");
        }
        for (c, row) in self.per_class.iter().zip(&self.confusion) {
            let _ = write!(s, "\n{:<width$}", c.label);
            for v in row {
                let _ = write!(s, "  {v:>cell$}");
            }
        }
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        ["neg", "neu", "pos", "x"][..n]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn hand_computed_three_class_example() {
        // truth:     neg neg neg neu neu pos pos pos pos pos
        // predicted: neg neg pos neg neu pos pos pos pos neu
        let truth = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2];
        let pred = [0, 0, 2, 0, 1, 2, 2, 2, 2, 1];
        let e = evaluate(&labels(3), &truth, &pred);
        assert_eq!(
            e.confusion,
            vec![vec![2, 0, 1], vec![1, 1, 0], vec![0, 1, 4]]
        );
        close(e.accuracy, 7.0 / 10.0);
        // neg: tp 2, predicted 3, support 3 -> p 2/3, r 2/3, f1 2/3
        close(e.per_class[0].precision, 2.0 / 3.0);
        close(e.per_class[0].recall, 2.0 / 3.0);
        close(e.per_class[0].f1, 2.0 / 3.0);
        // neu: tp 1, predicted 2, support 2 -> p 1/2, r 1/2, f1 1/2
        close(e.per_class[1].f1, 0.5);
        // pos: tp 4, predicted 5, support 5 -> p 4/5, r 4/5, f1 4/5
        close(e.per_class[2].precision, 0.8);
        close(e.per_class[2].recall, 0.8);
        close(e.macro_f1, (2.0 / 3.0 + 0.5 + 0.8) / 3.0);
        close(e.macro_recall, (2.0 / 3.0 + 0.5 + 0.8) / 3.0);
        assert_eq!(e.per_class[2].support, 5);
    }

    #[test]
    fn asymmetric_precision_and_recall() {
        // class 0: tp 1, fp 2, fn 0 -> p 1/3, r 1, f1 = 2*(1/3)/(4/3) = 0.5
        let e = evaluate(&labels(2), &[0, 1, 1, 1], &[0, 0, 0, 1]);
        close(e.per_class[0].precision, 1.0 / 3.0);
        close(e.per_class[0].recall, 1.0);
        close(e.per_class[0].f1, 0.5);
        // class 1: tp 1, fp 0, fn 2 -> p 1, r 1/3, f1 0.5
        close(e.per_class[1].f1, 0.5);
        close(e.accuracy, 0.5);
    }

    #[test]
    fn never_predicted_class_scores_zero_not_nan() {
        let e = evaluate(&labels(2), &[0, 1], &[0, 0]);
        assert_eq!(e.per_class[1].precision, 0.0);
        assert_eq!(e.per_class[1].f1, 0.0);
        assert!(e.macro_f1.is_finite());
    }

    #[test]
    fn absent_class_is_left_out_of_macro_average() {
        // Label "x" never occurs: macro over neg/neu/pos only.
        let e = evaluate(&labels(4), &[0, 1, 2], &[0, 1, 2]);
        close(e.macro_f1, 1.0);
        assert_eq!(e.per_class[3].support, 0);
    }

    #[test]
    fn render_shows_table_and_matrix() {
        let e = evaluate(&labels(3), &[0, 1, 2], &[0, 2, 2]);
        let text = e.render();
        assert!(text.contains("macro-F1"));
        assert!(text.contains("confusion"));
        assert!(
            text.lines()
                .any(|l| l.starts_with("neu") && l.contains("0.0000"))
        );
    }
}
