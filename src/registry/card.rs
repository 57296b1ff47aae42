//! The model card: everything needed to know what a model version is, where it came
//! from and how good it was when it was made.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::ClassBalance;
use crate::embed::EmbeddingSpec;
use crate::model::decision::{DecisionRule, Scored};
use crate::model::evaluation::Evaluation;
use crate::model::{FitParams, NgramSettings};
use crate::stats::Quantiles;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub version: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The champion when this version was trained, if there was one.
    pub parent_version: Option<String>,
    pub triage_version: String,
    pub labels: Vec<String>,
    pub embedding: EmbeddingSpec,
    pub data: DataCard,
    pub hyperparameters: Hyperparameters,
    /// How the model was chosen: balancing, cross-validation scores, blend, decision.
    /// Absent in cards written before triage 0.2.
    #[serde(default)]
    pub selection: Option<ModelSelection>,
    /// Held-out (test split) metrics.
    pub metrics: Evaluation,
    /// Training-split accuracy and macro-F1, to spot over-fitting.
    pub train_accuracy: f64,
    pub train_macro_f1: f64,
    pub gates: Vec<GateResult>,
    pub passed_gates: bool,
    pub timings: Timings,
    /// The calibration the model serves (fitted on out-of-fold predictions) and
    /// how it measured. Absent in cards of models trained before calibration, or
    /// without cross-validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<crate::model::calibration::Calibrated>,
    /// The routing threshold for `review.target_precision` and what it promises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<crate::model::routing::Routing>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataCard {
    pub path: String,
    /// sha256 of the training file: its fingerprint.
    pub sha256: String,
    pub bytes: u64,
    pub rows_read: u64,
    pub rows_malformed: u64,
    pub malformed_by_reason: BTreeMap<String, u64>,
    pub train_rows: u64,
    pub test_rows: u64,
    pub checks: DataReport,
}

/// What the data checks (`training::data_checks`) found before training.
/// `failures` stop training; `warnings` do not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataReport {
    pub rows_in: u64,
    pub duplicates_removed: u64,
    /// Texts seen with two or more different labels (the first label is kept).
    pub conflicting_duplicates: u64,
    pub rows_out: u64,
    pub rows_per_class: Vec<(String, u64)>,
    /// Largest class over smallest class.
    pub class_ratio: f64,
    pub text_chars: Quantiles,
    pub text_words: Quantiles,
    /// Share of texts whose estimated token count exceeds `embedding.max_length`.
    pub share_truncated_estimate: f64,
    pub failures: Vec<String>,
    pub warnings: Vec<String>,
}

/// One validation gate (`training::gates`): its threshold and the model's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// The setting that holds the threshold, e.g. `training.min_macro_f1`.
    pub gate: String,
    pub threshold: f64,
    pub value: f64,
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    #[serde(flatten)]
    pub fit: FitParams,
    pub test_fraction: f64,
    pub seed: u64,
}

/// What model selection chose, and the cross-validation scores behind each choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSelection {
    pub class_balance: ClassBalance,
    pub decision: DecisionRule,
    /// Folds of the cross-validation on the training split; 0 = none ran.
    pub cv_folds: usize,
    pub embedding: HeadSelection,
    /// The n-gram model, when it is part of the blend.
    pub ngrams: Option<NgramSelection>,
    /// Weight of the embedding model in the blend (1 = embedding only).
    pub embedding_weight: f64,
    /// Out-of-fold macro-F1 of each blend weight tried.
    pub weight_scores: Vec<Scored>,
    /// Per-label offsets on the log-probabilities (all 0 for `argmax`).
    pub offsets: Vec<f64>,
    /// Out-of-fold macro-F1 of the final model's rule (blend + offsets).
    pub cv_macro_f1: Option<f64>,
}

impl ModelSelection {
    /// A few lines for people: what was chosen and the cross-validation scores.
    pub fn render(&self) -> String {
        let mut out = format!(
            "selection: class balance {}, decision {}, {}\n",
            serde_json::to_string(&self.class_balance)
                .unwrap_or_default()
                .trim_matches('"'),
            serde_json::to_string(&self.decision)
                .unwrap_or_default()
                .trim_matches('"'),
            match self.cv_macro_f1 {
                Some(f1) => format!("{}-fold CV macro-F1 {f1:.4}", self.cv_folds),
                None => "no cross-validation".into(),
            }
        );
        out += &format!("  embedding model: {}\n", self.embedding.render());
        match &self.ngrams {
            Some(n) => {
                out += &format!(
                    "  n-gram model: {} word {}-{} grams, {}\n",
                    n.vocabulary_size,
                    n.features.min_n,
                    n.features.max_n,
                    n.fit.render()
                );
                out += &format!("  blend: embedding weight {}\n", self.embedding_weight);
            }
            None if !self.weight_scores.is_empty() => {
                out += "  n-gram model: dropped (did not raise CV macro-F1)\n";
            }
            None => {}
        }
        if self.offsets.iter().any(|&o| o != 0.0) {
            out += &format!("  decision offsets: {:?}\n", self.offsets);
        }
        out
    }
}

/// The alpha chosen for one model, and the out-of-fold macro-F1 of each alpha tried
/// (the grid: the configured `training.alphas`, extended when the best was at an
/// edge; from the smallest alpha up since triage 0.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadSelection {
    pub alpha: f64,
    pub cv_scores: Vec<Scored>,
    /// Alphas beyond the configured grid were tried. Absent (false) in older cards.
    #[serde(default)]
    pub grid_extended: bool,
}

impl HeadSelection {
    /// `alpha A (CV macro-F1 by alpha: a -> f, ...[; grid extended])`.
    fn render(&self) -> String {
        let scores = self
            .cv_scores
            .iter()
            .map(|s| format!("{} -> {:.4}", s.value, s.macro_f1))
            .collect::<Vec<_>>()
            .join(", ");
        let extended = if self.grid_extended {
            "; grid extended past the configured alphas"
        } else {
            ""
        };
        format!(
            "alpha {} (CV macro-F1 by alpha: {scores}{extended})",
            self.alpha
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NgramSelection {
    pub features: NgramSettings,
    pub vocabulary_size: usize,
    #[serde(flatten)]
    pub fit: HeadSelection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub embed_seconds: f64,
    pub embed_per_second: f64,
    pub embed_cached: bool,
    pub fit_seconds: f64,
}

#[cfg(test)]
pub(crate) mod fixture {
    use super::*;
    use crate::model::evaluation::evaluate;

    /// A small but complete card for registry tests.
    pub fn card(labels: &[&str], dimension: usize) -> ModelCard {
        let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        let truth: Vec<usize> = (0..labels.len()).collect();
        ModelCard {
            version: String::new(),
            created_at: "2026-11-22T00:00:00Z".into(),
            parent_version: None,
            triage_version: "test".into(),
            labels: labels.clone(),
            embedding: EmbeddingSpec {
                model_id: "test-model".into(),
                model_sha256: "0".repeat(64),
                max_length: 256,
                truncation: crate::config::Truncation::Head,
                dimension,
                pooling: "mean".into(),
            },
            data: DataCard {
                path: "data.jsonl".into(),
                sha256: "1".repeat(64),
                bytes: 10,
                rows_read: 3,
                rows_malformed: 0,
                malformed_by_reason: BTreeMap::new(),
                train_rows: 2,
                test_rows: 1,
                checks: DataReport {
                    rows_in: 3,
                    duplicates_removed: 0,
                    conflicting_duplicates: 0,
                    rows_out: 3,
                    rows_per_class: vec![],
                    class_ratio: 1.0,
                    text_chars: Quantiles::default(),
                    text_words: Quantiles::default(),
                    share_truncated_estimate: 0.0,
                    failures: vec![],
                    warnings: vec![],
                },
            },
            hyperparameters: Hyperparameters {
                fit: FitParams {
                    alpha: 0.1,
                    max_iterations: 10,
                    gradient_tolerance: 1e-4,
                },
                test_fraction: 0.2,
                seed: 42,
            },
            selection: None,
            metrics: evaluate(&labels, &truth, &truth),
            train_accuracy: 1.0,
            train_macro_f1: 1.0,
            gates: vec![],
            passed_gates: true,
            timings: Timings {
                embed_seconds: 0.0,
                embed_per_second: 0.0,
                embed_cached: false,
                fit_seconds: 0.0,
            },
            calibration: None,
            routing: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selection(ngrams: Option<NgramSelection>, weight: f64) -> ModelSelection {
        let scored = |v, f| Scored {
            value: v,
            macro_f1: f,
        };
        ModelSelection {
            class_balance: ClassBalance::Oversample,
            decision: DecisionRule::Argmax,
            cv_folds: 5,
            embedding: HeadSelection {
                alpha: 1.0,
                cv_scores: vec![scored(0.3, 0.61), scored(1.0, 0.64)],
                grid_extended: false,
            },
            ngrams,
            embedding_weight: weight,
            weight_scores: vec![scored(0.0, 0.6), scored(1.0, 0.64)],
            offsets: vec![0.0; 3],
            cv_macro_f1: Some(0.64),
        }
    }

    #[test]
    fn render_names_every_choice_and_its_scores() {
        let scored = |v, f| Scored {
            value: v,
            macro_f1: f,
        };
        let ngrams = NgramSelection {
            features: NgramSettings::default(),
            vocabulary_size: 1000,
            fit: HeadSelection {
                alpha: 3.0,
                cv_scores: vec![scored(1.0, 0.5), scored(3.0, 0.55), scored(9.0, 0.52)],
                grid_extended: true,
            },
        };
        let text = selection(Some(ngrams), 0.4).render();
        assert!(
            text.contains("class balance oversample, decision argmax, 5-fold CV macro-F1 0.6400"),
            "{text}"
        );
        assert!(
            text.contains("alpha 1 (CV macro-F1 by alpha: 0.3 -> 0.6100, 1 -> 0.6400)"),
            "{text}"
        );
        assert!(
            text.contains(
                "1000 word 1-2 grams, alpha 3 (CV macro-F1 by alpha: 1 -> 0.5000, 3 -> 0.5500, 9 -> 0.5200; grid extended past the configured alphas)"
            ),
            "{text}"
        );
        assert!(!text.contains("alpha 1 (CV macro-F1 by alpha: 0.3 -> 0.6100, 1 -> 0.6400; grid"));
        assert!(text.contains("embedding weight 0.4"), "{text}");
        let text = selection(None, 1.0).render();
        assert!(text.contains("n-gram model: dropped"), "{text}");
    }
}
