//! `triage produce`: replay a file into a topic, with a drift scenario and late labels.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::{print_json, runtime};
use crate::cli::args::{ProduceArgs, ScenarioArg};
use crate::config::Settings;
use crate::tools::produce::{ProduceOptions, ProduceSummary, Scenario};

pub(super) fn produce(settings: &Settings, args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let scenario = match args.scenario {
        ScenarioArg::Stationary => Scenario::Stationary,
        ScenarioArg::PriorShift => Scenario::PriorShift { keep: args.keep },
        ScenarioArg::CovariateShift => Scenario::CovariateShift { share: args.share },
        ScenarioArg::GradualShift => Scenario::GradualShift {
            from: args.from,
            to: args.to,
        },
    };
    anyhow::ensure!(
        args.labels_delay_s >= 0.0 && args.labels_delay_s.is_finite(),
        "--labels-delay-s {} is not a delay: give seconds, 0 or more",
        args.labels_delay_s
    );
    let labels_topic = args.labels_topic.map(|t| {
        if t.is_empty() {
            settings.kafka.labels_topic.clone()
        } else {
            t
        }
    });
    anyhow::ensure!(
        labels_topic.as_ref().is_none_or(|t| !t.is_empty()),
        "--labels-topic without a name needs kafka.labels_topic set (it is empty): name the topic"
    );
    let topic = args
        .topic
        .unwrap_or_else(|| settings.kafka.input_topics[0].clone());
    let options = ProduceOptions {
        scenario,
        mix: args.mix,
        rows: args.rows,
        rate: args.rate,
        labels_topic,
        labels_delay: Duration::from_secs_f64(args.labels_delay_s),
        strip_labels: args.strip_labels,
        seed: args.seed,
        progress: !args.json,
        ..ProduceOptions::stationary(args.file, topic)
    };
    let summary = runtime()?.block_on(crate::tools::produce::produce(settings, &options))?;
    if args.json {
        print_json(&summary)?;
    } else {
        report(&summary);
    }
    Ok(if summary.failed + summary.labels_failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `triage topics send`: the first `rows` rows of a file, as they are.
pub(super) fn send_rows(
    settings: &Settings,
    data: &Path,
    topic: String,
    rows: usize,
) -> anyhow::Result<ExitCode> {
    let options = ProduceOptions {
        rows: Some(rows),
        ..ProduceOptions::stationary(data.to_path_buf(), topic)
    };
    let summary = runtime()?.block_on(crate::tools::produce::produce(settings, &options))?;
    report(&summary);
    anyhow::ensure!(
        summary.failed == 0,
        "{} messages were not delivered",
        summary.failed
    );
    Ok(ExitCode::SUCCESS)
}

fn report(summary: &ProduceSummary) {
    for read in summary.read.iter().filter(|r| r.malformed > 0) {
        eprintln!("skipped malformed rows: {read}");
    }
    println!("{summary}");
}
