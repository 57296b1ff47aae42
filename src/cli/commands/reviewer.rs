//! `triage reviewer NAME`: a reviewer account for `review.reviewers`, from a
//! password on standard input.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::cli::args::ReviewerArgs;
use crate::config::valid_reviewer_name;
use crate::review::auth::hash_password;

/// Passwords shorter than this are refused.
const MIN_PASSWORD_CHARS: usize = 10;

pub(super) fn reviewer(args: &ReviewerArgs) -> anyhow::Result<ExitCode> {
    if !valid_reviewer_name(&args.name) {
        bail!(
            "the name {:?} cannot name a reviewer; fix: use 1 to 64 letters, digits, '.', '_' or '-'",
            args.name
        );
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!(
            "Password for {} (shown as you type; pipe it in to avoid that), then Enter:",
            args.name
        );
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.chars().count() < MIN_PASSWORD_CHARS {
        bail!(
            "the password is {} characters; fix: use {MIN_PASSWORD_CHARS} or more (e.g. `openssl rand -base64 15`)",
            password.chars().count()
        );
    }
    let hash = hash_password(password).map_err(anyhow::Error::msg)?;
    println!(
        "[[review.reviewers]]\nname = \"{}\"\npassword_hash = \"{hash}\"",
        args.name
    );
    Ok(ExitCode::SUCCESS)
}
