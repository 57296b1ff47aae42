//! `triage evaluate`: a stored model's metrics on a labelled file.

use std::process::ExitCode;

use super::{load_embedder, print_json};
use crate::cli::args::EvaluateArgs;
use crate::config::Settings;
use crate::registry::Registry;
use crate::training;

pub(super) fn evaluate(
    settings: &Settings,
    registry: &Registry,
    args: EvaluateArgs,
) -> anyhow::Result<ExitCode> {
    // Resolve first: a missing model should not cost loading the embedder.
    registry.resolve(&args.model)?;
    let mut embedder = load_embedder(settings, settings.stream.workers)?;
    let outcome =
        training::evaluate_file(settings, &mut embedder, registry, &args.data, &args.model)?;
    if args.json {
        print_json(&outcome)?;
    } else {
        println!(
            "model {} on {}: {} rows ({} malformed skipped)\n",
            outcome.version, outcome.data.path, outcome.metrics.rows, outcome.data.malformed
        );
        print!("{}", outcome.metrics.render());
        if !outcome.unknown_labels.is_empty() {
            println!(
                "\nlabels unknown to the model (their rows count as misses): {}",
                outcome.unknown_labels.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
