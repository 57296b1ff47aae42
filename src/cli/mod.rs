//! The binary's edge: command-line parsing, configuration, logging, and printing.
//! All the work happens in the library modules.

mod args;
mod commands;

use std::process::ExitCode;

use clap::Parser;

pub use args::{Cli, Command, LogFormatArg};

use crate::config::{self, LogFormat, Settings};

/// Runs the command line and returns the process exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match config::load(cli.config.as_deref()) {
        Ok(mut s) => {
            if let Some(format) = cli.log_format {
                s.log.format = match format {
                    LogFormatArg::Text => LogFormat::Text,
                    LogFormatArg::Json => LogFormat::Json,
                };
            }
            if let Some(level) = &cli.log_level {
                s.log.level = level.clone();
            }
            s
        }
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(1);
        }
    };
    if let Err(err) = init_tracing(&settings) {
        eprintln!("error: {err}");
        return ExitCode::from(1);
    }
    match commands::run(cli.command, &settings) {
        Ok(code) => code,
        Err(err) => {
            tracing::debug!(error = ?err, "Command failed.");
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(settings: &Settings) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::try_new(f)?,
        _ => EnvFilter::try_new(&settings.log.level)?,
    };
    use std::io::IsTerminal;
    // Colour codes only for a person at a terminal, never in a log file or a pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match settings.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}
