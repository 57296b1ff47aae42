//! The `[log]` section. Owned by `cli`, which sets up tracing from it; defined here
//! because `cli` sits above `config` in the dependency order.

use serde::{Deserialize, Serialize};

use super::validate::{Checker, Problem};

/// How triage logs (always to stderr).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` (human-readable) or `json` (one object per line, for log shippers).
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `triage=debug,info`. `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl LogSettings {
    /// Every problem with this section alone, each with the key and the fix.
    pub fn problems(&self) -> Vec<Problem> {
        let mut c = Checker::default();
        let level = &self.level;
        c.check(
            tracing_subscriber::EnvFilter::try_new(level).is_ok(),
            "log.level",
            || format!("{level:?} is not a tracing filter"),
            "use a level such as \"info\" or a filter such as \"triage=debug,info\"",
        );
        c.0
    }
}
