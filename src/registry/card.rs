//! The model card: everything needed to know what a model version is, where it came
//! from and how good it was when it was made.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::classifier::FitParams;
use crate::embed::EmbeddingSpec;
use crate::training::data_checks::DataReport;
use crate::training::gates::GateResult;
use crate::training::metrics::Evaluation;

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
    /// Held-out (test split) metrics.
    pub metrics: Evaluation,
    /// Training-split accuracy and macro-F1, to spot over-fitting.
    pub train_accuracy: f64,
    pub train_macro_f1: f64,
    pub gates: Vec<GateResult>,
    pub passed_gates: bool,
    pub timings: Timings,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    #[serde(flatten)]
    pub fit: FitParams,
    pub test_fraction: f64,
    pub seed: u64,
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
    use crate::training::data_checks::Quantiles;
    use crate::training::metrics::evaluate;

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
        }
    }
}
