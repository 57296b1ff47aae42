//! The process-wide ONNX Runtime: loaded once from a file, shared by every session.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;

/// Why ONNX Runtime could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library not found at {path}; run `make setup` (scripts/setup.sh) to install it, or set embedding.onnx_runtime_path (TRIAGE__EMBEDDING__ONNX_RUNTIME_PATH)"
    )]
    Missing { path: PathBuf },
    #[error(
        "cannot load ONNX Runtime from {path}: {reason}; it must be ONNX Runtime 1.24 or newer for this platform (`make setup` installs 1.31.1)"
    )]
    Load { path: PathBuf, reason: String },
}

static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);

/// The shared environment, loading the library at `path` on first use. A failed load
/// can be retried with another path; a successful one is kept for the process.
pub fn environment(path: &Path) -> Result<Environment, RuntimeError> {
    let mut slot = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(env) = slot.as_ref() {
        return Ok(env.clone());
    }
    // ort panics when it loads a library that is not there; check first.
    if !path.is_file() {
        return Err(RuntimeError::Missing {
            path: path.to_path_buf(),
        });
    }
    let load = |reason: String| RuntimeError::Load {
        path: path.to_path_buf(),
        reason,
    };
    let env = ort::init_from(path)
        .map_err(|e| load(e.to_string()))?
        .with_name("triage")
        .with_telemetry(false)
        .build()
        .map_err(|e| load(e.to_string()))?;
    *slot = Some(env.clone());
    Ok(env)
}
