//! `triage run`: the streaming service over Kafka until SIGINT or SIGTERM, or
//! with --input the batch mode over a file until it ends.

use std::process::ExitCode;

use anyhow::Context;

use super::runtime;
use crate::cli::args::{InputFormatArg, RunArgs};
use crate::config::Settings;

pub(super) fn run_service(settings: &Settings) -> anyhow::Result<ExitCode> {
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let rt = runtime()?;
    let result = rt.block_on(crate::service::run_kafka(
        settings.clone(),
        metrics,
        shutdown_signal(),
    ));
    // A close that timed out (broker gone) is still blocked in librdkafka: dropping
    // the runtime would wait for it forever.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Exit status of a batch run that dead-lettered some lines.
const EXIT_DEAD_LETTERS: u8 = 4;

pub(super) fn run_files(settings: &Settings, args: RunArgs) -> anyhow::Result<ExitCode> {
    use crate::config::DataFormat;
    use crate::file::{InputFormat, Outputs};

    let input = args.input.unwrap_or_else(|| "-".into());
    let predictions = args.output.unwrap_or_else(|| "-".into());
    let delimiter = settings.data.csv_delimiter.bytes().next().unwrap_or(b',');
    // The file says what it is; data.format (set for training files) decides
    // only for a file without a telling extension.
    let ext = input
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let csv = match (args.format, ext.as_str()) {
        (Some(InputFormatArg::Csv), _) => true,
        (Some(InputFormatArg::Jsonl), _) => false,
        (None, "csv" | "tsv") => true,
        (None, "jsonl" | "json" | "ndjson") => false,
        // Standard input is JSON lines unless --format says otherwise.
        (None, _) if input.as_os_str() == "-" => false,
        (None, _) => settings.data.format == DataFormat::Csv,
    };
    let format = if csv {
        InputFormat::Csv { delimiter }
    } else {
        InputFormat::Jsonl
    };
    let dead_letters = args
        .dead_letters
        .unwrap_or_else(|| Outputs::default_dead_letters(&predictions));
    let run = crate::service::FileRun {
        input,
        format,
        outputs: Outputs {
            predictions,
            dead_letters,
            features: args.features,
            review: args.review,
        },
    };
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let report = runtime()?.block_on(crate::service::run_files(
        settings.clone(),
        metrics.clone(),
        &run,
        shutdown_signal(),
    ))?;
    if let Some(path) = &args.metrics_file {
        std::fs::write(path, metrics.render())
            .with_context(|| format!("writing the metrics to {}", path.display()))?;
    }
    let t = &report.totals;
    if args.json {
        eprintln!("{}", serde_json::to_string(&report)?);
    } else {
        use prometheus::core::Collector;
        let mut reasons: Vec<String> = metrics
            .dlq
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter_map(|m| {
                let reason = m.get_label().first()?.value().to_string();
                Some(format!("{reason} {}", m.get_counter().get_value()))
            })
            .collect();
        reasons.sort();
        eprintln!(
            "{} messages: {} predicted -> {}, {} dead-lettered -> {}{}{}; {:.1} s, {:.1} messages/s",
            t.messages,
            t.predictions,
            run.outputs.predictions.display(),
            t.dead_letters,
            run.outputs.dead_letters.display(),
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join(", "))
            },
            if report.blank_lines > 0 {
                format!("; {} blank lines skipped", report.blank_lines)
            } else {
                String::new()
            },
            report.seconds,
            report.per_second
        );
    }
    Ok(if t.dead_letters > 0 {
        ExitCode::from(EXIT_DEAD_LETTERS)
    } else {
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGINT or SIGTERM (also `triage retrainer`'s shutdown).
pub(super) async fn shutdown_signal() {
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
