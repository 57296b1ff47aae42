//! `triage models`: list, show, promote and roll back the registry's versions.

use std::process::ExitCode;

use serde::Serialize;

use super::print_json;
use crate::cli::args::ModelsCommand;
use crate::registry::{Actor, Aliases, ModelCard, Registry};

#[derive(Serialize)]
struct ModelRow {
    version: String,
    created_at: String,
    aliases: Vec<&'static str>,
    labels: Vec<String>,
    train_rows: u64,
    test_rows: u64,
    accuracy: f64,
    macro_f1: f64,
    passed_gates: bool,
    data: String,
}

fn row(card: &ModelCard, aliases: &Aliases) -> ModelRow {
    let mut tags = Vec::new();
    if aliases.champion.as_deref() == Some(card.version.as_str()) {
        tags.push("champion");
    }
    if aliases.previous.as_deref() == Some(card.version.as_str()) {
        tags.push("previous");
    }
    ModelRow {
        version: card.version.clone(),
        created_at: card.created_at.clone(),
        aliases: tags,
        labels: card.labels.clone(),
        train_rows: card.data.train_rows,
        test_rows: card.data.test_rows,
        accuracy: card.metrics.accuracy,
        macro_f1: card.metrics.macro_f1,
        passed_gates: card.passed_gates,
        data: card.data.path.clone(),
    }
}

pub(super) fn models(registry: &Registry, cmd: ModelsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelsCommand::List { json } => {
            let aliases = registry.aliases()?;
            let rows = registry
                .versions()?
                .iter()
                .map(|v| registry.card(v).map(|c| row(&c, &aliases)))
                .collect::<Result<Vec<_>, _>>()?;
            if json {
                print_json(&serde_json::json!({ "aliases": aliases, "versions": rows }))?;
            } else if rows.is_empty() {
                println!(
                    "no models in {}; train one with `triage train --data FILE`",
                    registry.root().display()
                );
            } else {
                println!(
                    "{:<8} {:<21} {:>8} {:>8} {:>6} {:>6} {:<18} data",
                    "version", "created", "macro-F1", "accuracy", "train", "test", "aliases"
                );
                for r in rows {
                    let gates = if r.passed_gates {
                        ""
                    } else {
                        " (failed gates)"
                    };
                    println!(
                        "{:<8} {:<21} {:>8.4} {:>8.4} {:>6} {:>6} {:<18} {}{gates}",
                        r.version,
                        r.created_at,
                        r.macro_f1,
                        r.accuracy,
                        r.train_rows,
                        r.test_rows,
                        r.aliases.join(","),
                        r.data
                    );
                }
            }
        }
        ModelsCommand::Show { model, json } => {
            let card = registry.card(&model)?;
            if json {
                print_json(&card)?;
            } else {
                println!(
                    "model {}  created {}  parent {}",
                    card.version,
                    card.created_at,
                    card.parent_version.as_deref().unwrap_or("-")
                );
                println!(
                    "embedding {} (sha256 {}), max_length {}, dimension {}, pooling {}",
                    card.embedding.model_id,
                    &card.embedding.model_sha256[..12.min(card.embedding.model_sha256.len())],
                    card.embedding.max_length,
                    card.embedding.dimension,
                    card.embedding.pooling
                );
                println!(
                    "data {} (sha256 {}): {} rows read, {} malformed, {} train, {} test",
                    card.data.path,
                    &card.data.sha256[..12.min(card.data.sha256.len())],
                    card.data.rows_read,
                    card.data.rows_malformed,
                    card.data.train_rows,
                    card.data.test_rows
                );
                let h = &card.hyperparameters;
                println!(
                    "alpha {}, max_iterations {}, test_fraction {}, seed {}",
                    h.fit.alpha, h.fit.max_iterations, h.test_fraction, h.seed
                );
                if let Some(selection) = &card.selection {
                    print!("{}", selection.render());
                }
                println!();
                print!("{}", card.metrics.render());
                println!("\nfull card: `triage models show {} --json`", card.version);
            }
        }
        ModelsCommand::Promote { model, json } => {
            let aliases = registry.promote(&model, "promoted by hand", Actor::Cli)?;
            report_aliases(&aliases, json)?;
        }
        ModelsCommand::Rollback { json } => {
            let aliases = registry.rollback("rolled back by hand", Actor::Cli)?;
            report_aliases(&aliases, json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report_aliases(aliases: &Aliases, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(aliases)
    } else {
        println!(
            "champion: {}   previous: {}",
            aliases.champion.as_deref().unwrap_or("-"),
            aliases.previous.as_deref().unwrap_or("-")
        );
        Ok(())
    }
}
