//! Configuration: typed settings with defaults in code, layered as
//! defaults -> `--config FILE` -> `TRIAGE__SECTION__KEY` environment variables,
//! and validated as a whole at start-up.
//!
//! `config/default.toml` documents every key; a test checks that it matches the
//! defaults here, so the documentation cannot drift from the code.

//!
//! Each section is defined and checked in one place: the module that owns it when
//! that module sits below `config` in the dependency order (`kafka`, `stream`,
//! `drift`, `model`'s n-grams), otherwise a file here named after it (`log.rs`,
//! `paths.rs`, `embedding.rs`, `data.rs`, `training.rs`, `http.rs`, `retrain.rs`,
//! `rollout.rs`, `review.rs`).
//! This module composes them and `validate.rs` dispatches to their checks.

mod data;
mod embedding;
mod http;
mod load;
mod log;
mod paths;
pub mod registry_url;
mod retrain;
mod review;
mod rollout;
mod training;
mod validate;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use data::{DataFormat, DataSettings, LabelRange, LabelRuleKind, LabelSettings};
pub use embedding::{BatchingKind, EmbeddingSettings, PoolingKind, Truncation};
pub use http::HttpSettings;
pub use load::{ConfigError, load, load_with_env};
pub use log::{LogFormat, LogSettings};
pub use paths::PathSettings;
pub use retrain::{MIN_TOKEN_CHARS, RetrainSettings, Rollout};
pub use review::{MIN_SESSION_SECRET_CHARS, ReviewSettings, Reviewer, valid_reviewer_name};
pub use rollout::RolloutSettings;
pub use training::{ClassBalance, TrainingSettings};
pub use validate::{Problem, ValidationError};

/// Every setting triage reads. Sections mirror `config/default.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub log: LogSettings,
    pub paths: PathSettings,
    pub embedding: EmbeddingSettings,
    pub data: DataSettings,
    pub labels: LabelSettings,
    pub training: TrainingSettings,
    pub features: FeatureSettings,
    pub kafka: crate::kafka::KafkaSettings,
    pub stream: crate::stream::StreamSettings,
    pub http: HttpSettings,
    pub drift: crate::drift::DriftSettings,
    pub retrain: RetrainSettings,
    pub rollout: RolloutSettings,
    pub review: ReviewSettings,
}

/// Features beside the sentence embedding. Only a frame: its one section,
/// `features.ngrams`, is defined and checked in `model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureSettings {
    pub ngrams: crate::model::NgramSettings,
}

/// A secret string from configuration. `Debug` and `Serialize` (so `triage config`
/// and any log of the settings) show `***` instead of the value; empty means unset.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// The embedding model folder under the cache when `embedding.model_dir` is empty.
pub const DEFAULT_MODEL_DIR: &str = "models/all-MiniLM-L6-v2-int8-fused";

impl Settings {
    /// The cache directory with `~` expanded.
    pub fn cache_dir(&self) -> PathBuf {
        expand_home(&self.paths.cache_dir)
    }

    /// The registry directory with `~` expanded.
    pub fn registry_dir(&self) -> PathBuf {
        expand_home(&self.paths.registry_dir)
    }

    /// ONNX Runtime threads per embedder when `workers` embedders share the machine:
    /// `embedding.threads`, or else the cores split between them (at least one).
    pub fn threads_per_embedder(&self, workers: usize) -> usize {
        if self.embedding.threads > 0 {
            return self.embedding.threads;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / workers.max(1)).max(1)
    }

    /// The embedding model folder, derived from the cache when not set: the int8 graph
    /// with fused attention (`scripts/setup.sh` makes it from the fp32 one), 1.4x the
    /// int8 graph as exported end to end at the same macro-F1 (docs/performance.md).
    pub fn model_dir(&self) -> PathBuf {
        if self.embedding.model_dir.as_os_str().is_empty() {
            self.cache_dir().join(DEFAULT_MODEL_DIR)
        } else {
            expand_home(&self.embedding.model_dir)
        }
    }

    /// The ONNX Runtime library, derived from the cache when not set.
    pub fn onnx_runtime_path(&self) -> PathBuf {
        if self.embedding.onnx_runtime_path.as_os_str().is_empty() {
            self.cache_dir()
                .join("onnxruntime/1.31.1/libonnxruntime.so.1.31.1")
        } else {
            expand_home(&self.embedding.onnx_runtime_path)
        }
    }

    /// Directory of cached training features.
    pub fn feature_cache_dir(&self) -> PathBuf {
        if self.paths.feature_cache_dir.as_os_str().is_empty() {
            self.cache_dir().join("features")
        } else {
            expand_home(&self.paths.feature_cache_dir)
        }
    }
}

/// Expands a leading `~` to `$HOME`.
pub fn expand_home(path: &std::path::Path) -> PathBuf {
    let Ok(rest) = path.strip_prefix("~") else {
        return path.to_path_buf();
    };
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(rest),
        None => path.to_path_buf(),
    }
}
