//! A file (or standard input) as a message source. A reader thread frames the
//! input into messages, so blocking reads (a pipe that waits) never hold up the
//! pipeline's window timer; a bounded channel is the backpressure.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use super::FileError;
use crate::stream::Rejection;
use crate::stream::{Acknowledge, Message, Position, Source, SourceError};

/// How the input is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// One JSON object per line (a Yelp review line is one as it is).
    Jsonl,
    /// A header row, then one message per row; each row becomes a JSON object of
    /// column -> value, so the same field settings apply.
    Csv { delimiter: u8 },
}

/// Messages framed from a file, in order.
pub struct FileSource {
    rx: mpsc::Receiver<Result<Message, SourceError>>,
    progress: ProgressBar,
    /// Lines with nothing but white space: skipped, counted.
    blank: Arc<AtomicU64>,
}

impl FileSource {
    /// Opens `path` (`-`: standard input) and starts reading it.
    pub fn open(path: &Path, format: InputFormat) -> Result<Self, FileError> {
        let name: Arc<str> = path.to_string_lossy().into();
        let (input, length): (Box<dyn Read + Send>, Option<u64>) = if name.as_ref() == "-" {
            (Box::new(std::io::stdin()), None)
        } else {
            let file = File::open(path).map_err(|source| FileError::Open {
                path: name.to_string(),
                source,
            })?;
            let length = file.metadata().ok().map(|m| m.len());
            (Box::new(file), length)
        };
        let progress = match length {
            Some(len) => ProgressBar::new(len).with_style(
                ProgressStyle::with_template(
                    "classifying {bar:40} {bytes}/{total_bytes}  {binary_bytes_per_sec}  eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner(),
        };
        let counted = CountingReader {
            inner: input,
            progress: progress.clone(),
        };
        let (tx, rx) = mpsc::channel(1024);
        let blank = Arc::new(AtomicU64::new(0));
        let reader = Reader {
            name,
            tx,
            blank: blank.clone(),
        };
        match format {
            InputFormat::Csv { delimiter } => {
                let mut csv = csv::ReaderBuilder::new()
                    .delimiter(delimiter)
                    .flexible(true)
                    .from_reader(counted);
                let header = csv.headers().map_err(|source| FileError::CsvHeader {
                    path: reader.name.to_string(),
                    source,
                })?;
                let header: Vec<String> = header.iter().map(str::to_string).collect();
                spawn(move || reader.csv(csv, header))?;
            }
            InputFormat::Jsonl => spawn(move || reader.jsonl(BufReader::new(counted)))?,
        }
        Ok(Self {
            rx,
            progress,
            blank,
        })
    }

    /// Blank lines skipped so far.
    pub fn blank_lines(&self) -> u64 {
        self.blank.load(Ordering::Relaxed)
    }

    /// Ends the progress bar.
    pub fn finish(&self) {
        self.progress.finish_and_clear();
    }
}

fn spawn(f: impl FnOnce() + Send + 'static) -> Result<(), FileError> {
    std::thread::Builder::new()
        .name("triage-file-reader".into())
        .spawn(f)
        .map(|_| ())
        .map_err(FileError::Thread)
}

impl Source for FileSource {
    type Ack = NoAck;

    fn acknowledger(&self) -> NoAck {
        NoAck
    }

    async fn next(&mut self) -> Result<Option<Message>, SourceError> {
        self.rx.recv().await.transpose()
    }
}

/// A file needs no acknowledgement: a rerun reads it from the start.
#[derive(Debug, Clone, Copy)]
pub struct NoAck;

impl Acknowledge for NoAck {
    fn ack(&self, _last: &[Position]) {}
}

struct CountingReader {
    inner: Box<dyn Read + Send>,
    progress: ProgressBar,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

/// The reader thread: frames messages and sends them; stops when the pipeline
/// has gone (the receiver dropped) or the input ends.
struct Reader {
    name: Arc<str>,
    tx: mpsc::Sender<Result<Message, SourceError>>,
    blank: Arc<AtomicU64>,
}

impl Reader {
    fn position(&self, line: u64) -> Position {
        Position::Line {
            file: self.name.clone(),
            line,
        }
    }

    fn send(&self, item: Result<Message, SourceError>) -> bool {
        self.tx.blocking_send(item).is_ok()
    }

    fn failed(&self, line: u64, source: impl std::error::Error + Send + Sync + 'static) {
        self.send(Err(SourceError {
            context: format!("cannot read {} at line {line}", self.name),
            source: Box::new(source),
        }));
    }

    fn jsonl(self, mut input: impl BufRead) {
        let mut line = 0u64;
        loop {
            let mut bytes = Vec::new();
            match input.read_until(b'\n', &mut bytes) {
                Ok(0) => return,
                Ok(_) => {}
                Err(err) => return self.failed(line + 1, err),
            }
            line += 1;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                self.blank.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if !self.send(Ok(Message::new(self.position(line), bytes))) {
                return;
            }
        }
    }

    fn csv(self, mut input: csv::Reader<CountingReader>, header: Vec<String>) {
        let mut record = csv::ByteRecord::new();
        loop {
            let line = input.position().line();
            match input.read_byte_record(&mut record) {
                Ok(false) => return,
                Ok(true) => {}
                Err(err) if err.is_io_error() => return self.failed(line, err),
                Err(err) => {
                    let mut m = Message::new(self.position(line), Vec::new());
                    m.payload = None;
                    m.rejected = Some(Rejection {
                        reason: "malformed_csv",
                        detail: err.to_string(),
                    });
                    if !self.send(Ok(m)) {
                        return;
                    }
                    continue;
                }
            }
            let line = record.position().map_or(line, |p| p.line());
            let message = match csv_row(&header, &record) {
                Ok(payload) => Message::new(self.position(line), payload),
                Err(why) => {
                    let raw = record.as_slice().to_vec();
                    let mut m = Message::new(self.position(line), raw);
                    m.rejected = Some(why);
                    m
                }
            };
            if !self.send(Ok(message)) {
                return;
            }
        }
    }
}

/// A CSV row as a JSON object of column -> value.
fn csv_row(header: &[String], record: &csv::ByteRecord) -> Result<Vec<u8>, Rejection> {
    if record.len() != header.len() {
        return Err(Rejection {
            reason: "malformed_csv",
            detail: format!(
                "row has {} fields, the header {}",
                record.len(),
                header.len()
            ),
        });
    }
    let mut object = serde_json::Map::with_capacity(header.len());
    for (name, field) in header.iter().zip(record.iter()) {
        let value = std::str::from_utf8(field).map_err(|_| Rejection {
            reason: "not_utf8",
            detail: format!("column {name} is not valid UTF-8"),
        })?;
        object.insert(name.clone(), value.into());
    }
    Ok(serde_json::Value::Object(object).to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(content: &str, format: InputFormat) -> Vec<Message> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, content).unwrap();
        let mut source = FileSource::open(&path, format).unwrap();
        let mut out = Vec::new();
        while let Some(m) = source.next().await.unwrap() {
            out.push(m);
        }
        out
    }

    fn line(m: &Message) -> u64 {
        match m.position {
            Position::Line { line, .. } => line,
            _ => unreachable!(),
        }
    }

    #[tokio::test]
    async fn json_lines_keep_their_line_numbers_and_skip_blank_lines() {
        let got = read_all(
            "{\"text\":\"a\"}\n\n  \nnot json\r\n{\"text\":\"b\"}",
            InputFormat::Jsonl,
        )
        .await;
        let lines: Vec<u64> = got.iter().map(line).collect();
        assert_eq!(lines, vec![1, 4, 5]);
        assert_eq!(got[1].payload.as_deref(), Some(&b"not json"[..]));
        assert_eq!(got[2].payload.as_deref(), Some(&b"{\"text\":\"b\"}"[..]));
    }

    #[tokio::test]
    async fn csv_rows_become_objects_and_a_short_row_is_rejected() {
        let got = read_all(
            "class_name,question\nREFUND,\"where is\nmy money\"\nSHIPPING\nORDER,ok\n",
            InputFormat::Csv { delimiter: b',' },
        )
        .await;
        assert_eq!(got.len(), 3);
        let first: serde_json::Value =
            serde_json::from_slice(got[0].payload.as_deref().unwrap()).unwrap();
        assert_eq!(first["question"], "where is\nmy money");
        assert_eq!(line(&got[0]), 2);
        assert_eq!(got[1].rejected.as_ref().unwrap().reason, "malformed_csv");
        assert_eq!(line(&got[1]), 4);
        assert_eq!(line(&got[2]), 5);
        assert!(got[2].rejected.is_none());
    }
}
