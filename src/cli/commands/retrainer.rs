//! `triage retrainer`: Alertmanager's webhook receiver, until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use super::run::shutdown_signal;
use super::runtime;
use crate::config::Settings;
use crate::retrain::alert_job::TrainingJob;

pub(super) fn retrainer(settings: &Settings) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(crate::retrain::run(
        &settings.retrain,
        Arc::new(TrainingJob::new(settings.clone())),
        shutdown_signal(),
    ))?;
    Ok(ExitCode::SUCCESS)
}
