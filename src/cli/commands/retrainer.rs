//! `triage retrainer`: Alertmanager's webhook receiver, until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::run::shutdown_signal;
use super::runtime;
use crate::config::Settings;
use crate::retrain::{JobOutcome, RetrainJob, Trigger};

pub(super) fn retrainer(settings: &Settings) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let served = rt.block_on(crate::retrain::run(
        &settings.retrain,
        &settings.kafka,
        Arc::new(NotBuiltYet),
        shutdown_signal(),
    ));
    // The label join may have left a broker request behind on a blocking thread
    // (up to its 10 s timeout while the broker is away): exit without it.
    rt.shutdown_timeout(Duration::from_secs(1));
    served?;
    Ok(ExitCode::SUCCESS)
}

/// Stands in for the real job (fit, compare, promote) until it exists: it says
/// so and fails, so that nothing looks retrained when nothing was.
struct NotBuiltYet;

impl RetrainJob for NotBuiltYet {
    fn run(&self, trigger: Trigger) -> BoxFuture<'_, JobOutcome> {
        Box::pin(async move {
            tracing::info!(
                alerts = ?trigger.names(),
                "A retrain was asked for, but the retrain job is not built yet; the champion stays."
            );
            JobOutcome::Failed {
                reason: "the retrain job is not built yet".into(),
            }
        })
    }
}
