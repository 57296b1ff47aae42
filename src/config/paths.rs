//! The `[paths]` section: where triage keeps its files. Read by several modules above
//! `config` (`embed`'s cache, `feature`'s cache, `registry`), so it belongs to none
//! of them and is defined here; `Settings` derives the expanded paths.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::validate::{Checker, Problem};

/// Where triage keeps its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathSettings {
    /// Cache for the runtime, the model files and the feature cache.
    /// `~` is the home directory. `TRIAGE_CACHE_DIR` (the variable scripts/setup.sh
    /// reads) overrides the default when this key is not set explicitly.
    pub cache_dir: PathBuf,
    /// The model registry: a directory of immutable model versions and aliases.
    /// With `registry_url` set, it only keeps local work files (retraining data).
    pub registry_dir: PathBuf,
    /// The model registry on object storage, e.g. `s3://bucket/prefix`; wins over
    /// `registry_dir` when set. Credentials and endpoint: the `AWS_*` variables.
    pub registry_url: String,
    /// Cached training embeddings. Empty: `<cache_dir>/features`.
    pub feature_cache_dir: PathBuf,
}

impl Default for PathSettings {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::from("~/.cache/triage"),
            registry_dir: PathBuf::from(".triage/registry"),
            registry_url: String::new(),
            feature_cache_dir: PathBuf::new(),
        }
    }
}

impl PathSettings {
    /// Every problem with this section alone, each with the key and the fix.
    pub fn problems(&self) -> Vec<Problem> {
        let mut c = Checker::default();
        let url = self.registry_url.trim();
        let url_problem = if url.is_empty() {
            None
        } else {
            super::registry_url::parse(url).err()
        };
        c.check(
            url_problem.is_none(),
            "paths.registry_url",
            || url_problem.clone().unwrap_or_default(),
            "use s3://BUCKET/PREFIX (endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION), or leave it empty for the folder paths.registry_dir",
        );
        c.0
    }
}
