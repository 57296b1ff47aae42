//! `triage produce` (and `triage topics send`): replay a JSON-lines or CSV file into
//! a topic as messages keyed by id, at a target rate or as fast as the broker takes
//! them, following a drift [`Scenario`]; optionally send the ground truth of what it
//! sent to the labels topic after a delay, as agents' late labels (`{"id","label"}`,
//! keyed by id: what the retrainer's join reads), and strip the label from the
//! messages so that ground truth only arrives late.

pub mod scenario;

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

pub use scenario::{Pick, Scenario, ScenarioError, plan};

use crate::config::Settings;
use crate::feature::label_rule::LabelRule;
use crate::feature::readers::{LabelValue, ReadSummary, ReaderSpec, read_file};
use crate::kafka::client::Producer;

/// Messages waiting for the broker's acknowledgement at once, at most.
const MAX_IN_FLIGHT: usize = 1000;

/// One replay.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub file: PathBuf,
    pub topic: String,
    pub scenario: Scenario,
    /// The second file of covariate and gradual shift.
    pub mix: Option<PathBuf>,
    /// Messages to send, at most (default: the file's rows).
    pub rows: Option<usize>,
    /// Messages per second; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Where the late labels go; `None`: nowhere.
    pub labels_topic: Option<String>,
    pub labels_delay: Duration,
    /// Leave the label out of the messages.
    pub strip_labels: bool,
    pub seed: u64,
    /// Draw a progress bar (on a terminal only).
    pub progress: bool,
}

impl ProduceOptions {
    /// The whole file, as it is, as fast as possible, no late labels.
    pub fn stationary(file: PathBuf, topic: String) -> Self {
        Self {
            file,
            topic,
            scenario: Scenario::Stationary,
            mix: None,
            rows: None,
            rate: None,
            labels_topic: None,
            labels_delay: Duration::ZERO,
            strip_labels: false,
            seed: 0,
            progress: false,
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProduceSummary {
    pub topic: String,
    pub scenario: String,
    pub sent: u64,
    pub failed: u64,
    pub from_mix: u64,
    pub labels_sent: u64,
    pub labels_failed: u64,
    /// Sent rows without a label the label rule maps (no late label for them).
    pub unlabelled: u64,
    pub elapsed_s: f64,
    pub rate_per_s: f64,
    /// The first delivery error, when any failed.
    pub first_error: Option<String>,
    pub read: Vec<ReadSummary>,
}

impl std::fmt::Display for ProduceSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{scenario}: sent {sent} messages to {topic} ({mix} from the mix file), {failed} failed, in {elapsed:.1} s ({rate:.0}/s)",
            scenario = self.scenario,
            sent = self.sent,
            topic = self.topic,
            mix = self.from_mix,
            failed = self.failed,
            elapsed = self.elapsed_s,
            rate = self.rate_per_s,
        )?;
        if self.labels_sent + self.labels_failed > 0 {
            write!(
                f,
                "; late labels: {} sent, {} failed",
                self.labels_sent, self.labels_failed
            )?;
        }
        if self.unlabelled > 0 {
            write!(f, "; {} sent without a known label", self.unlabelled)?;
        }
        if let Some(e) = &self.first_error {
            write!(f, "\nfirst error: {e}")?;
        }
        Ok(())
    }
}

/// Why a replay could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Read(#[from] crate::feature::readers::ReadError),
    #[error("--rate {0} is not a rate: give messages per second above 0 (e.g. --rate 50/s)")]
    BadRate(f64),
    #[error("{path} has no well-formed rows ({summary})")]
    Empty { path: PathBuf, summary: String },
    #[error("cannot create a Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// A row ready to send: its key, its message and its late label.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub key: String,
    pub message: String,
    pub class: Option<String>,
}

/// Reads `path` into messages with the configured id, text and label fields (so
/// `triage run` reads them as they are), each with its class by the label rule.
pub fn load(
    settings: &Settings,
    path: &Path,
    strip_labels: bool,
) -> Result<(Vec<Outgoing>, ReadSummary), ProduceError> {
    let spec = ReaderSpec::new(&settings.data, Some(&settings.labels.field));
    let rule = LabelRule::new(&settings.labels);
    let mut rows = Vec::new();
    let summary = read_file(path, &spec, |r| {
        let mut obj = serde_json::Map::new();
        obj.insert(settings.data.id_field.clone(), r.id.clone().into());
        obj.insert(settings.data.text_field.clone(), r.text.into());
        let class = r.label.as_ref().and_then(|l| rule.apply(l).ok());
        if !strip_labels {
            let value = match r.label {
                Some(LabelValue::Number(n)) => Some(n.into()),
                Some(LabelValue::Text(t)) => Some(t.into()),
                None => None,
            };
            if let Some(v) = value {
                obj.insert(settings.labels.field.clone(), v);
            }
        }
        rows.push(Outgoing {
            key: r.id,
            message: serde_json::Value::Object(obj).to_string(),
            class,
        });
        Ok(())
    })?;
    if rows.is_empty() {
        return Err(ProduceError::Empty {
            path: path.to_path_buf(),
            summary: summary.to_string(),
        });
    }
    Ok((rows, summary))
}

/// The late label of a sent message: `{"id","label"}`.
pub fn label_record(id: &str, class: &str) -> String {
    serde_json::json!({ "id": id, "label": class }).to_string()
}

/// Replays `options.file` as `options` say; returns what it did. Delivery failures
/// are counted, not fatal: the summary says how many and the first reason.
pub async fn produce(
    settings: &Settings,
    options: &ProduceOptions,
) -> Result<ProduceSummary, ProduceError> {
    options.scenario.check(options.mix.is_some())?;
    if let Some(rate) = options.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        return Err(ProduceError::BadRate(rate));
    }
    let (main, main_read) = load(settings, &options.file, options.strip_labels)?;
    let mut read = vec![main_read];
    let mix = match &options.mix {
        Some(path) => {
            let (rows, summary) = load(settings, path, options.strip_labels)?;
            read.push(summary);
            rows
        }
        None => Vec::new(),
    };
    let classes: Vec<Option<String>> = main.iter().map(|r| r.class.clone()).collect();
    let picks = plan(
        &options.scenario,
        &classes,
        mix.len(),
        options.rows,
        options.seed,
    );
    let producer = Producer::new(&settings.kafka)?;
    let progress = progress_bar(picks.len() as u64, options.progress);
    let mut summary = ProduceSummary {
        topic: options.topic.clone(),
        scenario: options.scenario.name().to_string(),
        read,
        ..Default::default()
    };
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut labels: VecDeque<(Instant, &Outgoing)> = VecDeque::new();
    let mut label_sends = FuturesUnordered::new();
    for (i, pick) in picks.iter().enumerate() {
        let row = match *pick {
            Pick::Main(j) => &main[j],
            Pick::Mix(j) => {
                summary.from_mix += 1;
                &mix[j]
            }
        };
        if let Some(rate) = options.rate {
            tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / rate)).into())
                .await;
        }
        while labels
            .front()
            .is_some_and(|(due, _)| *due <= Instant::now())
        {
            if let Some((_, sent)) = labels.pop_front() {
                label_sends.push(send_label(&producer, options, sent));
            }
        }
        let producer = &producer;
        in_flight.push(async move {
            let result = producer
                .send(&options.topic, &row.key, row.message.as_bytes())
                .await;
            (result, row)
        });
        while in_flight.len() >= MAX_IN_FLIGHT {
            if let Some(done) = in_flight.next().await {
                acknowledged(done, &mut summary, &mut labels, options, &progress);
            }
        }
    }
    while let Some(done) = in_flight.next().await {
        acknowledged(done, &mut summary, &mut labels, options, &progress);
    }
    let sending = started.elapsed();
    progress.finish_and_clear();
    for (due, sent) in labels.drain(..) {
        tokio::time::sleep_until(due.into()).await;
        label_sends.push(send_label(&producer, options, sent));
    }
    while let Some(result) = label_sends.next().await {
        match result {
            Ok(()) => summary.labels_sent += 1,
            Err(e) => {
                summary.labels_failed += 1;
                summary.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    summary.elapsed_s = sending.as_secs_f64();
    summary.rate_per_s = summary.sent as f64 / summary.elapsed_s.max(1e-9);
    Ok(summary)
}

type Sent<'a> = (Result<(), rdkafka::error::KafkaError>, &'a Outgoing);

/// Counts one acknowledgement; a delivered labelled message's label is due after
/// the delay.
fn acknowledged<'a>(
    (result, row): Sent<'a>,
    summary: &mut ProduceSummary,
    labels: &mut VecDeque<(Instant, &'a Outgoing)>,
    options: &ProduceOptions,
    progress: &ProgressBar,
) {
    progress.inc(1);
    match result {
        Ok(()) => {
            summary.sent += 1;
            if row.class.is_none() {
                summary.unlabelled += 1;
            } else if options.labels_topic.is_some() {
                labels.push_back((Instant::now() + options.labels_delay, row));
            }
        }
        Err(e) => {
            summary.failed += 1;
            summary.first_error.get_or_insert_with(|| e.to_string());
        }
    }
}

async fn send_label(
    producer: &Producer,
    options: &ProduceOptions,
    row: &Outgoing,
) -> Result<(), rdkafka::error::KafkaError> {
    let (Some(topic), Some(class)) = (&options.labels_topic, &row.class) else {
        return Ok(());
    };
    producer
        .send(topic, &row.key, label_record(&row.key, class).as_bytes())
        .await
}

/// A bar on stderr when it is a terminal and `wanted`; hidden otherwise.
fn progress_bar(len: u64, wanted: bool) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    }
    ProgressBar::new(len).with_style(
        ProgressStyle::with_template("producing {bar:40} {pos}/{len}  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_the_configured_fields_and_lose_the_label_when_stripped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        std::fs::write(
            &path,
            "{\"review_id\":\"r1\",\"text\":\"cold soup\",\"stars\":1}\n{\"review_id\":\"r2\",\"text\":\"ok\"}\nnot json\n",
        )
        .unwrap();
        let settings = Settings::default();
        let (rows, summary) = load(&settings, &path, false).unwrap();
        assert_eq!(summary.malformed, 1);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].key, "r1");
        assert_eq!(rows[0].class.as_deref(), Some("negative"));
        let m: serde_json::Value = serde_json::from_str(&rows[0].message).unwrap();
        assert_eq!(m["stars"], 1.0);
        assert_eq!(m["text"], "cold soup");
        assert_eq!(rows[1].class, None);
        let (stripped, _) = load(&settings, &path, true).unwrap();
        let m: serde_json::Value = serde_json::from_str(&stripped[0].message).unwrap();
        assert!(m.get("stars").is_none(), "{m}");
        assert_eq!(stripped[0].class.as_deref(), Some("negative"));
        assert_eq!(
            label_record("r1", "negative"),
            r#"{"id":"r1","label":"negative"}"#
        );
    }

    #[test]
    fn a_file_without_rows_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.jsonl");
        std::fs::write(&path, "\n").unwrap();
        let err = load(&Settings::default(), &path, false).unwrap_err();
        assert!(err.to_string().contains("empty.jsonl"), "{err}");
    }
}
