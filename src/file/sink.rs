//! Files as the pipeline's sink: predictions as JSON lines to the output (a file
//! or standard output), dead letters as JSON lines with their reason, detail and
//! line to the dead-letter file, feature records to a file when asked for. Each
//! window's records are flushed before the window counts as written.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::json;

use super::FileError;
use crate::stream::{Record, RecordKind, Sink, SinkError};

/// Where the records of a batch run go.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Predictions; `-` is standard output.
    pub predictions: PathBuf,
    pub dead_letters: PathBuf,
    /// Feature records (id, embedding, label); None: not written.
    pub features: Option<PathBuf>,
    /// Review records (the messages whose label goes to a person); None: not written.
    pub review: Option<PathBuf>,
}

impl Outputs {
    /// The dead-letter file beside `predictions` (`out.jsonl` -> `out.jsonl.dlq.jsonl`),
    /// or `triage-dead-letters.jsonl` when predictions go to standard output.
    pub fn default_dead_letters(predictions: &Path) -> PathBuf {
        if predictions == Path::new("-") {
            PathBuf::from("triage-dead-letters.jsonl")
        } else {
            let mut name = predictions.as_os_str().to_owned();
            name.push(".dlq.jsonl");
            PathBuf::from(name)
        }
    }
}

/// Writes a window's records; cheap to clone (one set of files behind a lock).
#[derive(Clone)]
pub struct FileSink {
    files: Arc<Mutex<Files>>,
}

struct Files {
    predictions: Output,
    dead_letters: Output,
    features: Option<Output>,
    review: Option<Output>,
}

struct Output {
    name: String,
    out: Box<dyn Write + Send>,
}

impl Output {
    fn create(path: &Path) -> Result<Self, FileError> {
        let name = path.to_string_lossy().into_owned();
        let out: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            let file = File::create(path).map_err(|source| FileError::Create {
                path: name.clone(),
                source,
            })?;
            Box::new(BufWriter::with_capacity(1 << 16, file))
        };
        Ok(Self { name, out })
    }

    fn line(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self.out
            .write_all(bytes)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| self.error(e))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.error(e))
    }

    fn error(&self, source: std::io::Error) -> SinkError {
        SinkError {
            context: format!("cannot write {}", self.name),
            source: Box::new(source),
        }
    }
}

impl FileSink {
    pub fn create(outputs: &Outputs) -> Result<Self, FileError> {
        let files = Files {
            predictions: Output::create(&outputs.predictions)?,
            dead_letters: Output::create(&outputs.dead_letters)?,
            features: outputs
                .features
                .as_deref()
                .map(Output::create)
                .transpose()?,
            review: outputs.review.as_deref().map(Output::create).transpose()?,
        };
        Ok(Self {
            files: Arc::new(Mutex::new(files)),
        })
    }

    fn write_now(&self, records: &[Record]) -> Result<(), SinkError> {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        for r in records {
            let payload = r.payload.as_deref().unwrap_or_default();
            match &r.kind {
                RecordKind::Prediction => files.predictions.line(payload)?,
                RecordKind::Feature => {
                    if let Some(f) = files.features.as_mut() {
                        f.line(payload)?;
                    }
                }
                RecordKind::Review => {
                    if let Some(f) = files.review.as_mut() {
                        f.line(payload)?;
                    }
                }
                RecordKind::DeadLetter {
                    reason,
                    detail,
                    position,
                } => {
                    let line = json!({
                        "reason": reason,
                        "detail": detail,
                        "source": position.to_json(),
                        "payload": String::from_utf8_lossy(payload),
                    });
                    files.dead_letters.line(line.to_string().as_bytes())?;
                }
            }
        }
        files.predictions.flush()?;
        files.dead_letters.flush()?;
        let files = &mut *files;
        for f in [files.features.as_mut(), files.review.as_mut()]
            .into_iter()
            .flatten()
        {
            f.flush()?;
        }
        Ok(())
    }
}

impl Sink for FileSink {
    async fn write(&self, records: Vec<Record>) -> Result<(), SinkError> {
        let sink = self.clone();
        tokio::task::spawn_blocking(move || sink.write_now(&records))
            .await
            .map_err(|e| SinkError {
                context: "the file writer stopped".into(),
                source: Box::new(e),
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Position;

    #[tokio::test]
    async fn predictions_and_dead_letters_go_to_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let outputs = Outputs {
            predictions: dir.path().join("out.jsonl"),
            dead_letters: Outputs::default_dead_letters(&dir.path().join("out.jsonl")),
            features: None,
            review: Some(dir.path().join("review.jsonl")),
        };
        assert!(outputs.dead_letters.ends_with("out.jsonl.dlq.jsonl"));
        let sink = FileSink::create(&outputs).unwrap();
        let prediction = Record {
            kind: RecordKind::Prediction,
            key: None,
            payload: Some(b"{\"id\":\"a\"}".to_vec()),
            headers: Vec::new(),
        };
        let dead = Record {
            kind: RecordKind::DeadLetter {
                reason: "not_json",
                detail: "payload is not JSON".into(),
                position: Position::Line {
                    file: "in.jsonl".into(),
                    line: 3,
                },
            },
            key: None,
            payload: Some(b"oops".to_vec()),
            headers: Vec::new(),
        };
        let feature = Record {
            kind: RecordKind::Feature,
            ..prediction.clone()
        };
        let review = Record {
            kind: RecordKind::Review,
            payload: Some(b"{\"id\":\"b\"}".to_vec()),
            ..prediction.clone()
        };
        sink.write(vec![prediction, dead, feature, review])
            .await
            .unwrap();
        let reviews = std::fs::read_to_string(dir.path().join("review.jsonl")).unwrap();
        assert_eq!(reviews, "{\"id\":\"b\"}\n", "and no feature file asked for");
        let out = std::fs::read_to_string(&outputs.predictions).unwrap();
        assert_eq!(out, "{\"id\":\"a\"}\n");
        let dlq = std::fs::read_to_string(&outputs.dead_letters).unwrap();
        let v: serde_json::Value = serde_json::from_str(dlq.trim()).unwrap();
        assert_eq!(v["reason"], "not_json");
        assert_eq!(v["source"]["line"], 3);
        assert_eq!(v["payload"], "oops");
    }

    #[test]
    fn dead_letters_of_standard_output_go_to_a_named_file() {
        assert_eq!(
            Outputs::default_dead_letters(Path::new("-")),
            PathBuf::from("triage-dead-letters.jsonl")
        );
    }
}
