//! `triage run`: the streaming service until SIGINT or SIGTERM.

use std::process::ExitCode;

use super::runtime;
use crate::config::Settings;

pub(super) fn run_service(settings: &Settings) -> anyhow::Result<ExitCode> {
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    runtime()?.block_on(crate::inference::service::run(
        settings.clone(),
        metrics,
        shutdown_signal(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            tracing::warn!(error = %err, "Cannot watch SIGTERM; only SIGINT stops triage.");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received."),
        _ = term.recv() => tracing::info!("SIGTERM received."),
    }
}
