//! Subcommand handlers, one module per command: call the library, print for people
//! or for scripts (--json). Here: the dispatch and what several commands share.

mod bench;
mod classify;
mod config;
mod drift;
mod evaluate;
mod inspect;
mod models;
mod probe;
mod produce;
mod retrain;
mod retrainer;
mod review_order;
mod reviewer;
mod run;
mod topics;
mod train;

use std::io::Write;
use std::process::ExitCode;

use serde::Serialize;

use super::args::{Command, DriftCommand, TopicsCommand};
use crate::config::Settings;
use crate::embed::{EmbedderPool, OnnxEmbedder};

pub fn run(command: Command, settings: &Settings) -> anyhow::Result<ExitCode> {
    let registry = crate::registry::Registry::from_settings(settings)?;
    match command {
        Command::Train(args) => train::train(settings, &registry, args),
        Command::Evaluate(args) => evaluate::evaluate(settings, &registry, args),
        Command::Classify(args) => classify::classify(settings, &registry, args),
        Command::Models(cmd) => models::models(settings, &registry, cmd),
        Command::Inspect(args) => inspect::inspect(settings, args),
        Command::Retrain(args) => retrain::retrain(settings, args),
        Command::Run(args) => match args.input {
            Some(_) => run::run_files(settings, args),
            None => run::run_service(settings),
        },
        Command::Retrainer => retrainer::retrainer(settings),
        Command::Bench(args) => bench::bench(settings, args),
        Command::Produce(args) => produce::produce(settings, args),
        Command::ReviewOrder(args) => review_order::review_order(settings, args),
        Command::Drift(DriftCommand::Eval(args)) => drift::drift_eval(settings, &registry, args),
        Command::Topics(TopicsCommand::Create {
            partitions,
            replication,
        }) => topics::create_topics(settings, partitions, replication),
        Command::Topics(TopicsCommand::Send { data, topic, rows }) => {
            topics::send(settings, &data, topic, rows)
        }
        Command::Topics(TopicsCommand::Tail {
            topic,
            count,
            idle_s,
        }) => topics::tail(settings, topic, count, idle_s),
        Command::Config => config::config(settings),
        Command::Probe(args) => probe::probe(settings, &args),
        Command::Reviewer(args) => reviewer::reviewer(&args),
    }
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // More workers than cores: a rebalance callback may block one worker while it
    // waits for in-flight windows, which other workers must finish.
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .thread_name("triage-io")
        .build()?)
}
