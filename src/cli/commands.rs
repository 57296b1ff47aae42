//! Subcommand handlers: call the library, print for people or for scripts (--json).

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use super::args::{
    BenchArgs, ClassifyArgs, Command, DriftCommand, EvaluateArgs, InspectArgs, ModelsCommand,
    TopicsCommand, TrainArgs,
};
use super::drift::drift_eval;
use crate::config::Settings;
use crate::embed::{EmbedderPool, OnnxEmbedder};
use crate::inference::Predictor;
use crate::registry::{Aliases, ModelCard, Registry};
use crate::training::{self, TrainOptions};

/// Exit status of `train` when the model was stored but failed a gate.
const EXIT_GATE_FAILED: u8 = 3;

pub fn run(command: Command, settings: &Settings) -> anyhow::Result<ExitCode> {
    let registry = Registry::new(settings.registry_dir());
    match command {
        Command::Train(args) => train(settings, &registry, args),
        Command::Evaluate(args) => evaluate(settings, &registry, args),
        Command::Classify(args) => classify(settings, &registry, args),
        Command::Models(cmd) => models(&registry, cmd),
        Command::Inspect(args) => inspect(settings, args),
        Command::Run => run_service(settings),
        Command::Bench(args) => bench(settings, args),
        Command::Drift(DriftCommand::Eval(args)) => drift_eval(settings, &registry, args),
        Command::Topics(TopicsCommand::Create {
            partitions,
            replication,
        }) => create_topics(settings, partitions, replication),
        Command::Topics(TopicsCommand::Send { data, topic, rows }) => {
            let topic = topic.unwrap_or_else(|| settings.kafka.input_topics[0].clone());
            let sent = runtime()?.block_on(crate::tools::console::send_file(
                settings, &data, &topic, rows,
            ))?;
            println!("sent {sent} messages to {topic}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Topics(TopicsCommand::Tail {
            topic,
            count,
            idle_s,
        }) => {
            let topic = topic.unwrap_or_else(|| settings.kafka.predictions_topic.clone());
            runtime()?.block_on(crate::tools::console::tail(
                settings,
                &topic,
                count,
                std::time::Duration::from_secs(idle_s),
                |line| println!("{line}"),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config => {
            print!("{}", toml_of(settings)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn toml_of(settings: &Settings) -> anyhow::Result<String> {
    Ok(toml::to_string(settings)?)
}

pub(super) fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// The offline commands' embedder: `sessions` ONNX sessions sharing each call, as the
/// service's `stream.workers` share the stream. Many texts: `stream.workers` (measured
/// on 2 cores, 1,000 reviews: 2 sessions embed 41.5 texts/s, 1 session 32-37); a few:
/// 1 (a second session costs 0.2-0.3 s to load).
pub(super) fn load_embedder(
    settings: &Settings,
    sessions: usize,
) -> anyhow::Result<EmbedderPool<OnnxEmbedder>> {
    let members = OnnxEmbedder::load_many(settings, sessions)?;
    Ok(EmbedderPool::new(members))
}

fn train(settings: &Settings, registry: &Registry, args: TrainArgs) -> anyhow::Result<ExitCode> {
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // More workers than cores: a rebalance callback may block one worker while it
    // waits for in-flight windows, which other workers must finish.
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .thread_name("triage-io")
        .build()?)
}

fn bench(settings: &Settings, args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(f) = args.overload {
        anyhow::ensure!(
            f.is_finite() && f > 1.0,
            "--overload {f}: the factor multiplies the measured throughput and must be above 1 (e.g. 2)"
        );
    }
    let options = crate::tools::bench::BenchOptions {
        rows: args.rows,
        repeat: args.repeat as usize,
        rate: args.rate,
        latency_rows: args.latency_rows,
        overload: args.overload,
        overload_secs: args.overload_secs,
    };
    let report = runtime()?.block_on(crate::tools::bench::run(settings, &args.data, &options))?;
    if args.json {
        print_json(&report)?;
    } else {
        print_bench(settings, &report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_bench(settings: &Settings, r: &crate::tools::bench::BenchReport) {
    println!("rows                     {}", r.rows);
    println!(
        "window                   {} messages / {} ms",
        r.window_max_messages, settings.stream.max_wait_ms
    );
    for (i, round) in r.rounds.iter().enumerate() {
        println!(
            "round {:<2}                 bound {:.1}, end to end {:.1} messages/s ({:.0}%)",
            i + 1,
            round.embed_only_per_second,
            round.throughput_per_second,
            round.vs_bound * 100.0
        );
    }
    println!(
        "embedding-only bound     {:.1} messages/s (median)",
        r.embed_only_per_second
    );
    println!(
        "end-to-end throughput    {:.1} messages/s (median), {:.0}% of the bound (lowest round {:.0}%)",
        r.throughput_per_second,
        r.throughput_vs_bound * 100.0,
        r.throughput_vs_bound_min * 100.0
    );
    println!(
        "batch plan               {:.0} tokens per message, padding adds {:.1}% ({:?}, budget {})",
        r.tokens_per_message,
        r.padding_overhead * 100.0,
        settings.embedding.batching,
        settings.embedding.batch_budget()
    );
    let s = &r.stages_ms_per_message;
    println!(
        "ms per message           worker: embed {:.2}, classify {:.3}, drift {:.3}; \
         beside it: decode {:.3}, produce {:.2} (wall); tokenising alone {:.3}",
        s.embed, s.classify, s.drift, s.decode, s.produce, r.tokenize_ms_per_message
    );
    println!(
        "while draining           workers busy {:.0}% of the time; CPU: service {:.0}%, bench client {:.0}% of all cores",
        r.workers_busy * 100.0,
        r.cpu_while_draining.service * 100.0,
        r.cpu_while_draining.bench * 100.0
    );
    println!(
        "latency at {:.1} msg/s    p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} messages)",
        r.offered_rate_per_second,
        r.latency_p50_ms,
        r.latency_p99_ms,
        r.latency_max_ms,
        r.latency_rows
    );
    if let Some(o) = &r.overload {
        println!(
            "overload x{:.1}            offered {:.1} msg/s for {:.0} s: {} produced, {} predicted ({:.1} msg/s)",
            o.factor,
            o.offered_rate_per_second,
            o.seconds,
            o.produced,
            o.predicted,
            o.throughput_per_second
        );
        println!(
            "  RSS                    {:.0} MB in the first quarter, {:.0} MB in the last",
            o.rss_first_quarter_mb, o.rss_last_quarter_mb
        );
        println!(
            "  backlog                {:.0} messages in the first quarter, {:.0} in the last (consumer lag {:.0} -> {:.0})",
            o.backlog_first_quarter,
            o.backlog_last_quarter,
            o.lag_first_quarter,
            o.lag_last_quarter
        );
        println!(
            "  time in the service    p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; p99 first half {:.0} ms, second half {:.0} ms",
            o.in_service_p50_ms,
            o.in_service_p99_ms,
            o.in_service_max_ms,
            o.in_service_p99_first_half_ms,
            o.in_service_p99_second_half_ms
        );
    }
    println!(
        "peak RSS                 {:.0} MB (triage run; the bench process itself: {:.0} MB)",
        r.service_peak_rss_mb, r.bench_peak_rss_mb
    );
}

fn run_service(settings: &Settings) -> anyhow::Result<ExitCode> {
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

fn create_topics(
    settings: &Settings,
    partitions: i32,
    replication: i32,
) -> anyhow::Result<ExitCode> {
    let k = &settings.kafka;
    let mut names: Vec<String> = k.input_topics.clone();
    names.extend([k.predictions_topic.clone(), k.dlq_topic.clone()]);
    if !k.features_topic.is_empty() {
        names.push(k.features_topic.clone());
    }
    let created = runtime()?.block_on(crate::kafka::create_topics(
        k,
        &names,
        partitions,
        replication,
    ))?;
    for (name, outcome) in created {
        println!("{name:<30} {outcome}");
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(settings: &Settings, args: InspectArgs) -> anyhow::Result<ExitCode> {
    let mut per_label: std::collections::BTreeMap<String, u64> = Default::default();
    let summary = crate::feature::scan_labelled(&args.data, settings, |_, label| {
        *per_label.entry(label).or_default() += 1;
    })?;
    if args.json {
        print_json(&serde_json::json!({ "read": summary, "rows_per_label": per_label }))?;
    } else {
        println!("{summary}\n\nrows per label:");
        for (label, n) in &per_label {
            println!("  {label:<20} {n:>10}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn evaluate(
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

fn classify(
    settings: &Settings,
    registry: &Registry,
    args: ClassifyArgs,
) -> anyhow::Result<ExitCode> {
    registry.resolve(&args.model)?;
    let sessions = if args.texts.is_empty() {
        settings.stream.workers
    } else {
        1
    };
    let embedder = load_embedder(settings, sessions)?;
    let mut predictor = Predictor::load(embedder, registry, &args.model)?;
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

fn models(registry: &Registry, cmd: ModelsCommand) -> anyhow::Result<ExitCode> {
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
            let aliases = registry.promote(&model, "promoted by hand")?;
            report_aliases(&aliases, json)?;
        }
        ModelsCommand::Rollback { json } => {
            let aliases = registry.rollback("rolled back by hand")?;
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
