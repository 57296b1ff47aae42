//! `triage classify`: label texts given as arguments or read from standard input.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::load_embedder;
use crate::cli::args::ClassifyArgs;
use crate::config::Settings;
use crate::inference::Predictor;
use crate::registry::{Alias, Registry};

pub(super) fn classify(
    settings: &Settings,
    registry: &Registry,
    args: ClassifyArgs,
) -> anyhow::Result<ExitCode> {
    // The model before the embedder: a bad name or a damaged version is the error
    // the user hears, not a missing runtime. The champion falls back to the previous
    // champion when it will not load (logged as an error), as `triage run` does.
    let model = match Alias::parse(&args.model) {
        Some(Alias::Champion) => {
            let serving = registry.load_serving()?;
            if let Some(fallback) = &serving.fallback {
                fallback.log(&serving.model.card.version);
            }
            serving.model
        }
        _ => registry.load(&args.model)?,
    };
    let sessions = if args.texts.is_empty() {
        settings.stream.workers
    } else {
        1
    };
    let embedder = load_embedder(settings, sessions)?;
    let mut predictor = Predictor::new(embedder, Arc::new(model))?;
    let mut out = std::io::stdout().lock();
    let mut emit = |texts: &[String]| -> anyhow::Result<()> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for (text, labelled) in texts.iter().zip(predictor.classify(&refs)?) {
            if args.json {
                serde_json::to_writer(&mut out, &labelled)?;
                writeln!(out)?;
            } else {
                let shown: String = text.chars().take(70).collect();
                let ellipsis = if text.chars().count() > 70 { "..." } else { "" };
                writeln!(
                    out,
                    "{:<10} {:.3}  {shown}{ellipsis}",
                    labelled.label, labelled.confidence
                )?;
            }
        }
        out.flush()?;
        Ok(())
    };
    if !args.texts.is_empty() {
        emit(&args.texts)?;
        return Ok(ExitCode::SUCCESS);
    }
    let stdin = std::io::stdin().lock();
    let mut batch = Vec::with_capacity(args.batch);
    let mut skipped = 0u64;
    for line in stdin.lines() {
        let line = line.context("reading standard input")?;
        if line.trim().is_empty() {
            skipped += 1;
            continue;
        }
        batch.push(line);
        if batch.len() >= args.batch.max(1) {
            emit(&batch)?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        emit(&batch)?;
    }
    if skipped > 0 {
        tracing::warn!(lines = skipped, "Blank input lines skipped.");
    }
    Ok(ExitCode::SUCCESS)
}
