//! `triage train`: fit a model on a labelled file, store it, promote it if it passes.

use std::process::ExitCode;

use super::{load_embedder, print_json};
use crate::cli::args::TrainArgs;
use crate::config::Settings;
use crate::registry::Registry;
use crate::training::{self, TrainOptions};

/// Exit status of `train` when the model was stored but failed a gate.
const EXIT_GATE_FAILED: u8 = 3;

pub(super) fn train(
    settings: &Settings,
    registry: &Registry,
    args: TrainArgs,
) -> anyhow::Result<ExitCode> {
    let mut embedder = load_embedder(settings, settings.stream.workers)?;
    let options = TrainOptions {
        data: args.data,
        promote: !args.no_promote,
    };
    let outcome = training::train(settings, &mut embedder, registry, &options)?;
    if args.json {
        print_json(&outcome)?;
    } else {
        let card = &outcome.card;
        let t = &card.timings;
        println!(
            "model {} trained on {} (sha256 {}): {} train / {} test rows, {} malformed rows skipped, {} duplicates removed",
            outcome.version,
            card.data.path,
            &card.data.sha256[..12],
            card.data.train_rows,
            card.data.test_rows,
            card.data.rows_malformed,
            card.data.checks.duplicates_removed,
        );
        if t.embed_cached {
            println!(
                "embedding: from the feature cache   fit: {:.2} s",
                t.fit_seconds
            );
        } else {
            println!(
                "embedding: {:.1} s ({:.1} texts/s)   fit: {:.2} s",
                t.embed_seconds, t.embed_per_second, t.fit_seconds
            );
        }
        if let Some(selection) = &card.selection {
            print!("{}", selection.render());
        }
        println!(
            "train split: accuracy {:.4}, macro-F1 {:.4}\n\nheld-out split:",
            card.train_accuracy, card.train_macro_f1
        );
        print!("{}", card.metrics.render());
        println!();
        if let Some(c) = &card.calibration {
            println!("calibration ({} out-of-fold rows): {}", c.rows, c.reason);
            if let Some(h) = &c.held_out {
                println!(
                    "calibration held-out: ECE {:.4} before, {:.4} tempered ({} rows)",
                    h.ece_before, h.ece_after, h.rows
                );
            }
        }
        if let Some(r) = &card.routing {
            let on = match &card.calibration {
                Some(c) if c.served => "calibrated",
                _ => "uncalibrated",
            };
            print!(
                "routing: threshold {:.4} ({on} confidence) for precision {}: out-of-fold coverage {:.3}, precision {:.4}",
                r.global.threshold, r.target_precision, r.global.coverage, r.global.precision
            );
            match &r.held_out {
                Some(h) => println!(
                    "; held-out coverage {:.3}, precision {:.4}",
                    h.coverage, h.precision
                ),
                None => println!(),
            }
        }
        println!();
        for g in &card.gates {
            println!(
                "gate {:<28} {:.4} >= {:.4}  {}",
                g.gate,
                g.value,
                g.threshold,
                if g.passed { "passed" } else { "FAILED" }
            );
        }
        if outcome.promoted {
            println!("\n{} is now the champion", outcome.version);
        } else if outcome.gate_failures.is_empty() {
            println!("\n{} stored, not promoted (--no-promote)", outcome.version);
        }
    }
    if outcome.gate_failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: model {} failed a gate and was stored but not promoted:\n  - {}",
            outcome.version,
            outcome.gate_failures.join("\n  - ")
        );
        Ok(ExitCode::from(EXIT_GATE_FAILED))
    }
}
