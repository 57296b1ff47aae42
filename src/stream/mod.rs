//! The vocabulary of a streaming pipeline, below everything that uses it:
//! messages with their positions, the records a window produces, and the small
//! traits at the pipeline's edges: a [`Source`] of messages and a [`Sink`] for
//! records. The inference pipeline runs over them; Kafka (`src/kafka/`) and files
//! (`src/file/`) implement them; the core's tests use in-memory ones. Nothing
//! here knows which is which, and nothing here reads configuration: the
//! `[stream]` section is defined and checked here (`settings.rs`), and `config`
//! loads it.

pub mod envelope;
mod settings;
pub mod state;

pub use settings::StreamSettings;

use std::future::Future;
use std::sync::Arc;

use serde_json::{Value, json};

/// Why a message goes to the dead-letter topic: a stable reason key and a detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: &'static str,
    pub detail: String,
}

/// Where a message sits in its source: enough to name it, to say where a dead
/// letter came from, and to acknowledge it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Position {
    /// A partitioned log (a Kafka topic).
    Log {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    },
    /// A line of a file (1-based; `-` is standard input).
    Line { file: Arc<str>, line: u64 },
}

impl Position {
    /// The stream (topic or file) this position belongs to.
    pub fn stream(&self) -> &str {
        match self {
            Position::Log { topic, .. } => topic,
            Position::Line { file, .. } => file,
        }
    }

    /// A stable id for a message without one: the same after redelivery.
    pub fn fallback_id(&self) -> String {
        match self {
            Position::Log {
                topic,
                partition,
                offset,
            } => format!("{topic}/{partition}/{offset}"),
            Position::Line { file, line } => format!("{file}:{line}"),
        }
    }

    /// As it appears in prediction and feature records.
    pub fn to_json(&self) -> Value {
        match self {
            Position::Log {
                topic,
                partition,
                offset,
            } => json!({ "topic": &**topic, "partition": partition, "offset": offset }),
            Position::Line { file, line } => json!({ "file": &**file, "line": line }),
        }
    }

    /// Dead-letter headers naming the origin.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Position::Log {
                topic,
                partition,
                offset,
            } => vec![
                ("triage.source.topic", topic.to_string()),
                ("triage.source.partition", partition.to_string()),
                ("triage.source.offset", offset.to_string()),
            ],
            Position::Line { file, line } => vec![
                ("triage.source.file", file.to_string()),
                ("triage.source.line", line.to_string()),
            ],
        }
    }

    /// Of several positions, the last one per stream and partition: what a source
    /// acknowledges once a window is written.
    pub fn last_per_partition(positions: impl IntoIterator<Item = Position>) -> Vec<Position> {
        let mut last: std::collections::BTreeMap<(Arc<str>, i32), Position> = Default::default();
        for p in positions {
            let key = match &p {
                Position::Log {
                    topic, partition, ..
                } => (topic.clone(), *partition),
                Position::Line { file, .. } => (file.clone(), 0),
            };
            match last.get(&key) {
                Some(seen) if seen >= &p => {}
                _ => {
                    last.insert(key, p);
                }
            }
        }
        last.into_values().collect()
    }
}

/// One message from a source.
#[derive(Debug, Clone)]
pub struct Message {
    pub position: Position,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// (name, value) as the source gave them: a name need not be UTF-8, and nothing
    /// here is bounded yet (the pipeline core checks the envelope).
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// When the message was written (ms since the epoch), if the source knows.
    pub timestamp_ms: Option<i64>,
    /// Set by a source that could not even frame the message (a malformed CSV
    /// row): it goes to the dead letters with this reason.
    pub rejected: Option<Rejection>,
}

impl Message {
    /// A message with a payload and nothing else known.
    pub fn new(position: Position, payload: Vec<u8>) -> Self {
        Self {
            position,
            key: None,
            payload: Some(payload),
            headers: Vec::new(),
            timestamp_ms: None,
            rejected: None,
        }
    }
}

/// What a record is; sinks route by it.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordKind {
    Prediction,
    Feature,
    /// A message whose label goes to a person: its text and the model's view.
    Review,
    /// The message unchanged, with why and where from (also in the headers).
    DeadLetter {
        reason: &'static str,
        detail: String,
        position: Position,
    },
}

/// A record a window produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub kind: RecordKind,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A source failed for good (an unreadable file); the pipeline stops with it.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct SourceError {
    pub context: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// A sink cannot write a record and retrying cannot help. The pipeline stops,
/// and the window (with every later one) is not acknowledged: after a restart it
/// is read again. Nothing is lost, nothing stalls in silence.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct SinkError {
    pub context: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Messages in, one at a time; the pipeline windows them.
pub trait Source: Send + 'static {
    type Ack: Acknowledge;

    /// The handle that acknowledges written windows (window tasks hold clones).
    fn acknowledger(&self) -> Self::Ack;

    /// The next message; `Ok(None)` once the source is exhausted (a file; a Kafka
    /// source never is). Transient trouble is the source's to retry.
    fn next(&mut self) -> impl Future<Output = Result<Option<Message>, SourceError>> + Send;
}

/// Acknowledges positions whose window was durably written.
pub trait Acknowledge: Clone + Send + Sync + 'static {
    /// Everything up to and including each position (the last per partition of a
    /// window) is done. Called in window order.
    fn ack(&self, last: &[Position]);
}

/// Where a window's records go.
pub trait Sink: Clone + Send + Sync + 'static {
    /// Writes a window's records; resolves once every one is durable.
    fn write(&self, records: Vec<Record>) -> impl Future<Output = Result<(), SinkError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(topic: &str, partition: i32, offset: i64) -> Position {
        Position::Log {
            topic: topic.into(),
            partition,
            offset,
        }
    }

    #[test]
    fn last_position_per_partition() {
        let got = Position::last_per_partition([
            log("in", 0, 5),
            log("in", 1, 3),
            log("in", 0, 7),
            log("in", 0, 6),
            log("x", 0, 1),
        ]);
        assert_eq!(got, vec![log("in", 0, 7), log("in", 1, 3), log("x", 0, 1)]);
    }

    #[test]
    fn positions_name_their_origin() {
        let line = Position::Line {
            file: "in.jsonl".into(),
            line: 12,
        };
        assert_eq!(line.fallback_id(), "in.jsonl:12");
        assert_eq!(line.to_json(), json!({"file": "in.jsonl", "line": 12}));
        assert_eq!(log("t", 1, 9).fallback_id(), "t/1/9");
        assert_eq!(
            log("t", 1, 9).headers()[2],
            ("triage.source.offset", "9".to_string())
        );
    }
}
