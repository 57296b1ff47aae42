//! `triage topics`: create the configured topics, send a data file to a topic,
//! print a topic.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::runtime;
use crate::config::Settings;
use crate::tools::tail;

pub(super) fn create_topics(
    settings: &Settings,
    partitions: i32,
    replication: i32,
) -> anyhow::Result<ExitCode> {
    let k = &settings.kafka;
    let mut names: Vec<String> = k.input_topics.clone();
    names.extend([k.predictions_topic.clone(), k.dlq_topic.clone()]);
    for optional in [&k.features_topic, &k.review_topic, &k.labels_topic] {
        if !optional.is_empty() {
            names.push(optional.clone());
        }
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

pub(super) fn send(
    settings: &Settings,
    data: &Path,
    topic: Option<String>,
    rows: usize,
) -> anyhow::Result<ExitCode> {
    let topic = topic.unwrap_or_else(|| settings.kafka.input_topics[0].clone());
    super::produce::send_rows(settings, data, topic, rows)
}

pub(super) fn tail(
    settings: &Settings,
    topic: Option<String>,
    count: usize,
    idle_s: u64,
) -> anyhow::Result<ExitCode> {
    let topic = topic.unwrap_or_else(|| settings.kafka.predictions_topic.clone());
    runtime()?.block_on(tail::tail(
        settings,
        &topic,
        count,
        Duration::from_secs(idle_s),
        |line| println!("{line}"),
    ))?;
    Ok(ExitCode::SUCCESS)
}
