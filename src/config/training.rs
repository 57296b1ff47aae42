//! The `[training]` section: data checks, split, classifier, gates. Owned by
//! `training`; defined here because `training` sits above `config` in the dependency
//! order.

use serde::{Deserialize, Serialize};

use super::validate::{Checker, Problem};

/// The training pipeline: data checks, split, classifier, gates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSettings {
    /// Share of rows held out for evaluation, per class (stratified).
    pub test_fraction: f64,
    /// Seed for the split and the reference sample: same seed, same split.
    pub seed: u64,
    /// L2 regularisation strengths to choose from by cross-validation (like 1/C in
    /// scikit-learn); one value skips the search. Extended past an edge that scores
    /// best (`training::cv::select_alpha`).
    pub alphas: Vec<f64>,
    /// Stratified folds of the cross-validation on the training split.
    pub cv_folds: usize,
    /// How unequal class sizes are handled.
    pub class_balance: ClassBalance,
    /// How probabilities become a label.
    pub decision: crate::model::decision::DecisionRule,
    /// L-BFGS iterations at most.
    pub max_iterations: u64,
    /// L-BFGS stops when every gradient component of the mean loss is below this.
    pub gradient_tolerance: f64,
    /// Data gate: every class needs at least this many rows.
    pub min_rows_per_class: usize,
    /// Data gate: largest class / smallest class may not exceed this.
    pub max_class_ratio: f64,
    /// Model gate: held-out macro-F1 at least this, or the model is not promoted.
    pub min_macro_f1: f64,
    /// Model gate: held-out macro-recall at least this, or the model is not promoted.
    pub min_macro_recall: f64,
    /// Held-out embeddings kept in the model's drift reference.
    pub reference_sample_size: usize,
    /// Cache embeddings of training files (keyed by file, reader settings, model, max length).
    pub feature_cache: bool,
}

impl Default for TrainingSettings {
    fn default() -> Self {
        Self {
            test_fraction: 0.2,
            seed: 42,
            alphas: vec![0.3, 1.0, 3.0],
            cv_folds: 5,
            class_balance: ClassBalance::None,
            decision: crate::model::decision::DecisionRule::MacroF1,
            max_iterations: 300,
            gradient_tolerance: 1e-4,
            min_rows_per_class: 10,
            max_class_ratio: 50.0,
            min_macro_f1: 0.55,
            min_macro_recall: 0.55,
            reference_sample_size: 512,
            feature_cache: true,
        }
    }
}

/// Class imbalance handling. linfa-logistic has no sample weights, so balancing
/// repeats rows: the effect of scikit-learn's `class_weight="balanced"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassBalance {
    /// Fit on the rows as they are: big classes dominate.
    None,
    /// Repeat rows of smaller classes (whole copies, then a seeded sample) until
    /// every class has as many rows as the largest.
    Oversample,
}

impl TrainingSettings {
    /// Every problem with this section alone, each with the key and the fix.
    pub fn problems(&self) -> Vec<Problem> {
        let mut c = Checker::default();
        let t = self;
        c.check(
            t.test_fraction > 0.0 && t.test_fraction <= 0.5,
            "training.test_fraction",
            || format!("{} is outside (0, 0.5]", t.test_fraction),
            "use 0.2 to hold out a fifth of each class",
        );
        let bad_alpha = t.alphas.iter().find(|a| !(a.is_finite() && **a >= 0.0));
        c.check(
            !t.alphas.is_empty() && bad_alpha.is_none(),
            "training.alphas",
            || match bad_alpha {
                Some(a) => format!("{a} is not a non-negative number"),
                None => "is empty".into(),
            },
            "list regularisation strengths such as [0.3, 1.0, 3.0]",
        );
        c.check(
            (2..=20).contains(&t.cv_folds),
            "training.cv_folds",
            || format!("{} is outside 2..=20", t.cv_folds),
            "use 5",
        );
        c.check(
            t.max_iterations >= 1,
            "training.max_iterations",
            || "is 0".into(),
            "use 100 to 1000",
        );
        c.check(
            t.gradient_tolerance > 0.0 && t.gradient_tolerance.is_finite(),
            "training.gradient_tolerance",
            || format!("{} is not positive", t.gradient_tolerance),
            "use 1e-4",
        );
        c.check(
            t.min_rows_per_class >= 2,
            "training.min_rows_per_class",
            || {
                format!(
                    "{} cannot fill both a training and a test split",
                    t.min_rows_per_class
                )
            },
            "use at least 2 (10 or more is wiser)",
        );
        c.check(
            t.max_class_ratio >= 1.0,
            "training.max_class_ratio",
            || {
                format!(
                    "{} is below 1, which no data set can meet",
                    t.max_class_ratio
                )
            },
            "use a ratio such as 50",
        );
        for (key, value) in [
            ("training.min_macro_f1", t.min_macro_f1),
            ("training.min_macro_recall", t.min_macro_recall),
        ] {
            c.check(
                (0.0..=1.0).contains(&value),
                key,
                || format!("{value} is outside [0, 1]"),
                "use a score between 0 and 1, e.g. 0.6",
            );
        }
        c.check(
            (1..=100_000).contains(&t.reference_sample_size),
            "training.reference_sample_size",
            || format!("{} is outside 1..=100000", t.reference_sample_size),
            "use 512",
        );
        c.0
    }
}
