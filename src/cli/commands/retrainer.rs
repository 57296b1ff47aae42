//! `triage retrainer`: Alertmanager's webhook receiver, until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::run::shutdown_signal;
use super::runtime;
use crate::config::Settings;
use crate::retrainer::alert_job::TrainingJob;

pub(super) fn retrainer(settings: &Settings) -> anyhow::Result<ExitCode> {
    let registry = crate::registry::Registry::from_settings(settings)?;
    let rt = runtime()?;
    let served = rt.block_on(crate::retrainer::run(
        &settings.retrain,
        &settings.kafka,
        &settings.http,
        aliases_of(registry.clone()),
        registry,
        Arc::new(TrainingJob::new(settings.clone())),
        shutdown_signal(),
    ));
    // The label join may have left a broker request behind on a blocking thread
    // (up to its 10 s timeout while the broker is away): exit without it.
    rt.shutdown_timeout(Duration::from_secs(1));
    served?;
    Ok(ExitCode::SUCCESS)
}

/// The registry's champion and challenger, read at each notification (a small file
/// or object read).
fn aliases_of(registry: crate::registry::Registry) -> crate::retrainer::webhook::AliasLookup {
    Arc::new(move || {
        registry
            .aliases()
            .map_or((None, None), |a| (a.champion, a.challenger))
    })
}
