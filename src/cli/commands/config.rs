//! `triage config`: print the effective configuration as TOML.

use std::process::ExitCode;

use crate::config::Settings;

pub(super) fn config(settings: &Settings) -> anyhow::Result<ExitCode> {
    print!("{}", toml::to_string(settings)?);
    Ok(ExitCode::SUCCESS)
}
