//! `triage models`: list, show, compare, promote and roll back the registry's
//! versions; the champion's history and the retraining decisions.

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use super::{load_embedder, print_json};
use crate::cli::args::ModelsCommand;
use crate::config::Settings;
use crate::model::comparison::{Comparison, compare};
use crate::model::evaluation::Evaluation;
use crate::registry::decision::Contender;
use crate::registry::{Actor, Aliases, ModelCard, Registry, SkippedLine};
use crate::training;

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
    if aliases.challenger.as_deref() == Some(card.version.as_str()) {
        tags.push("challenger");
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

pub(super) fn models(
    settings: &Settings,
    registry: &Registry,
    cmd: ModelsCommand,
) -> anyhow::Result<ExitCode> {
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
                    registry.location()
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
        ModelsCommand::Shadow {
            model,
            clear,
            reason,
            json,
        } => {
            let aliases = match model.filter(|_| !clear) {
                Some(model) => registry.shadow(
                    &model,
                    reason.as_deref().unwrap_or("shadowed by hand"),
                    Actor::Cli,
                )?,
                None => registry.unshadow(
                    reason.as_deref().unwrap_or("shadow cleared by hand"),
                    Actor::Cli,
                )?,
            };
            report_aliases(&aliases, json)?;
        }
        ModelsCommand::History { json } => history(registry, json)?,
        ModelsCommand::Compare { a, b, data, json } => {
            compare_versions(settings, registry, &a, &b, data.as_deref(), json)?
        }
        ModelsCommand::Decisions { json } => decisions(registry, json)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn history(registry: &Registry, json: bool) -> anyhow::Result<()> {
    let journal = registry.history()?;
    if json {
        return print_json(&serde_json::json!({
            "changes": journal.entries,
            "skipped": journal.skipped,
        }));
    }
    if journal.entries.is_empty() {
        println!(
            "no champion changes recorded in {} yet; `triage train --data FILE` promotes a model that passes the gates, `triage models promote VERSION` promotes one by hand",
            registry.events_location()
        );
    } else {
        let moves: Vec<String> = journal
            .entries
            .iter()
            .map(|c| {
                format!(
                    "{} -> {}",
                    c.from.as_deref().unwrap_or("-"),
                    c.to.as_deref().unwrap_or("-")
                )
            })
            .collect();
        let width = moves.iter().map(String::len).max().unwrap_or(0).max(10);
        println!(
            "{:<20}  {:<8}  {:<width$}  {:<9}  why",
            "when", "action", "from -> to", "by"
        );
        for (c, moved) in journal.entries.iter().zip(&moves) {
            println!(
                "{:<20}  {:<8}  {moved:<width$}  {:<9}  {}",
                c.at,
                c.action.as_str(),
                c.by.as_str(),
                c.reason
            );
        }
    }
    note_skipped(&journal.skipped, &registry.events_location());
    Ok(())
}

fn decisions(registry: &Registry, json: bool) -> anyhow::Result<()> {
    let journal = registry.decisions()?;
    if json {
        return print_json(&serde_json::json!({
            "decisions": journal.entries,
            "skipped": journal.skipped,
        }));
    }
    if journal.entries.is_empty() {
        println!(
            "no retraining decisions recorded in {} yet; the retraining job writes one per run, promoted or not",
            registry.decisions_location()
        );
    } else {
        let contender = |c: &Option<Contender>| match c {
            Some(c) => format!("{} {:.4}", c.version, c.metrics.macro_f1),
            None => "-".into(),
        };
        println!(
            "{:<20}  {:<28}  {:<8}  {:<18}  {:<18}  {:>6}  {:>15}  why",
            "finished",
            "trigger",
            "verdict",
            "champion macro-F1",
            "challenger",
            "margin",
            "train/held-out"
        );
        for d in &journal.entries {
            println!(
                "{:<20}  {:<28}  {:<8}  {:<18}  {:<18}  {:>6}  {:>15}  {}",
                d.finished_at,
                d.trigger.to_string(),
                d.verdict.to_string(),
                contender(&d.champion),
                contender(&d.challenger),
                d.margin_required,
                format!("{}/{}", d.rows.train, d.rows.held_out),
                d.reason
            );
        }
        println!(
            "\nevery field (inputs, time range, per-class F1): `triage models decisions --json`"
        );
    }
    note_skipped(&journal.skipped, &registry.decisions_location());
    Ok(())
}

fn note_skipped(skipped: &[SkippedLine], location: &str) {
    if skipped.is_empty() {
        return;
    }
    let lines: Vec<String> = skipped.iter().map(|s| s.line.to_string()).collect();
    println!(
        "\nnote: {} unreadable line(s) of {} skipped (line {}); the rest is shown",
        skipped.len(),
        location,
        lines.join(", ")
    );
}

/// One side of `models compare`.
#[derive(Serialize)]
struct Side {
    version: String,
    metrics: Evaluation,
    /// Labels in --data that the model does not know (their rows count as misses).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unknown_labels: Vec<String>,
}

#[derive(Serialize)]
struct CompareReport {
    /// `cards`: each card's own held-out split; `data`: both scored on `data`.
    source: &'static str,
    /// What the metrics were measured on, in words.
    measured_on: String,
    data: Option<String>,
    a: Side,
    b: Side,
    /// Differences are b - a.
    comparison: Comparison,
}

fn compare_versions(
    settings: &Settings,
    registry: &Registry,
    a: &str,
    b: &str,
    data: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    // Resolve both first: a wrong name should not cost loading the embedder.
    let (va, vb) = (registry.resolve(a)?, registry.resolve(b)?);
    let report = match data {
        None => {
            let (ca, cb) = (registry.card(&va)?, registry.card(&vb)?);
            CompareReport {
                source: "cards",
                measured_on: cards_measured_on(&ca, &cb),
                data: None,
                comparison: compare(&ca.metrics, &cb.metrics),
                a: Side {
                    version: va,
                    metrics: ca.metrics,
                    unknown_labels: Vec::new(),
                },
                b: Side {
                    version: vb,
                    metrics: cb.metrics,
                    unknown_labels: Vec::new(),
                },
            }
        }
        Some(path) => {
            let mut embedder = load_embedder(settings, settings.stream.workers)?;
            let mut outcomes = training::evaluate_versions(
                settings,
                &mut embedder,
                registry,
                path,
                &[va.as_str(), vb.as_str()],
            )?;
            let (ob, oa) = (outcomes.remove(1), outcomes.remove(0));
            CompareReport {
                source: "data",
                measured_on: format!(
                    "{}: the same {} rows for both ({} malformed skipped), embedded once",
                    oa.data.path, oa.metrics.rows, oa.data.malformed
                ),
                data: Some(oa.data.path.clone()),
                comparison: compare(&oa.metrics, &ob.metrics),
                a: Side {
                    version: oa.version,
                    metrics: oa.metrics,
                    unknown_labels: oa.unknown_labels,
                },
                b: Side {
                    version: ob.version,
                    metrics: ob.metrics,
                    unknown_labels: ob.unknown_labels,
                },
            }
        }
    };
    if json {
        return print_json(&report);
    }
    println!(
        "{} vs {} on {}\n",
        report.a.version, report.b.version, report.measured_on
    );
    print!(
        "{}",
        report
            .comparison
            .render(&report.a.version, &report.b.version)
    );
    for side in [&report.a, &report.b] {
        if !side.unknown_labels.is_empty() {
            println!(
                "\n{} does not know the labels {} (their rows count as misses)",
                side.version,
                side.unknown_labels.join(", ")
            );
        }
    }
    if report.source == "cards" {
        println!(
            "\nscore both on the same rows: `triage models compare {} {} --data FILE`",
            report.a.version, report.b.version
        );
    }
    Ok(())
}

/// Says which rows each card's metrics came from, and whether they are the same.
fn cards_measured_on(a: &ModelCard, b: &ModelCard) -> String {
    let same_split = a.data.sha256 == b.data.sha256
        && a.hyperparameters.seed == b.hyperparameters.seed
        && a.hyperparameters.test_fraction == b.hyperparameters.test_fraction;
    if same_split {
        format!(
            "their cards' held-out metrics: the same {} test rows of {} (same file, seed and test fraction)",
            a.data.test_rows, a.data.path
        )
    } else {
        format!(
            "their cards' held-out metrics, each on its own test split ({}: {} rows of {}; {}: {} rows of {}), so the difference is only indicative",
            a.version, a.data.test_rows, a.data.path, b.version, b.data.test_rows, b.data.path
        )
    }
}

fn report_aliases(aliases: &Aliases, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(aliases)
    } else {
        println!(
            "champion: {}   previous: {}   challenger: {}",
            aliases.champion.as_deref().unwrap_or("-"),
            aliases.previous.as_deref().unwrap_or("-"),
            aliases.challenger.as_deref().unwrap_or("-")
        );
        Ok(())
    }
}
