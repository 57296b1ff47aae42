//! Readers for labelled files: Yelp reviews, generic JSON lines, CSV.
//!
//! A reader streams the file: one row in memory at a time, whatever the file size.
//! A malformed row is counted under its reason and remembered (the first
//! [`MAX_EXAMPLES`]) with its line number; it never stops the read. Only I/O
//! failures and a file that cannot be read at all (a CSV without the text column)
//! are errors. The file's sha256 is computed on the way, for the model card and
//! the feature cache.

mod csv;
pub(crate) mod jsonl;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::checksum::hex;
use crate::config::{DataFormat, DataSettings};

/// Malformed rows remembered in full (line and reason) in a summary.
pub const MAX_EXAMPLES: usize = 20;

/// A label as found in the data, before the label rule maps it.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelValue {
    Number(f64),
    Text(String),
}

/// One well-formed row.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// 1-based line in the file (for CSV: the line where the row starts).
    pub line: u64,
    pub id: String,
    pub text: String,
    pub label: Option<LabelValue>,
}

/// Why a row was rejected. The `kind` is a stable key for counting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowError {
    pub line: u64,
    pub kind: &'static str,
    pub detail: String,
}

impl RowError {
    pub fn new(line: u64, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            line,
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {} ({})", self.line, self.detail, self.kind)
    }
}

/// A failure that stops the whole read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} has no column {column:?} (columns: {available}); set {key} to one of them, or check data.csv_delimiter"
    )]
    MissingColumn {
        path: PathBuf,
        column: String,
        key: &'static str,
        available: String,
    },
    #[error("{path} is empty: it has no header row")]
    NoHeader { path: PathBuf },
}

/// What a read saw: counts, reasons, the first malformed rows, the file's checksum.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReadSummary {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
    pub rows: u64,
    pub accepted: u64,
    pub malformed: u64,
    pub malformed_by_reason: BTreeMap<String, u64>,
    pub examples: Vec<RowError>,
}

impl ReadSummary {
    fn reject(&mut self, err: RowError) {
        self.malformed += 1;
        *self
            .malformed_by_reason
            .entry(err.kind.to_string())
            .or_default() += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(err);
        }
    }

    /// Counts one parsed row: accepted when `outcome` is Ok.
    pub(crate) fn record(&mut self, outcome: Result<(), RowError>) {
        self.rows += 1;
        match outcome {
            Ok(()) => self.accepted += 1,
            Err(e) => self.reject(e),
        }
    }
}

impl fmt::Display for ReadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} rows, {} accepted, {} malformed",
            self.path, self.rows, self.accepted, self.malformed
        )?;
        if !self.malformed_by_reason.is_empty() {
            let reasons: Vec<String> = self
                .malformed_by_reason
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            write!(f, " ({})", reasons.join(", "))?;
        }
        for e in &self.examples {
            write!(f, "\n  {e}")?;
        }
        if self.malformed as usize > self.examples.len() {
            write!(
                f,
                "\n  ... and {} more",
                self.malformed as usize - self.examples.len()
            )?;
        }
        Ok(())
    }
}

/// Which fields to read. Built from [`DataSettings`] plus the label field.
#[derive(Debug, Clone)]
pub struct ReaderSpec {
    pub format: DataFormat,
    pub text_field: String,
    pub id_field: String,
    /// The label (or stars) field; `None` when labels are not wanted.
    pub label_field: Option<String>,
    pub csv_delimiter: u8,
    pub max_text_bytes: usize,
}

impl ReaderSpec {
    pub fn new(data: &DataSettings, label_field: Option<&str>) -> Self {
        Self {
            format: data.format,
            text_field: data.text_field.clone(),
            id_field: data.id_field.clone(),
            label_field: label_field.map(str::to_string),
            csv_delimiter: data.csv_delimiter.bytes().next().unwrap_or(b','),
            max_text_bytes: data.max_text_bytes,
        }
    }

    /// The concrete format for `path` (`auto` decides by extension).
    pub fn format_for(&self, path: &Path) -> DataFormat {
        match self.format {
            DataFormat::Auto => {
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                if ext.eq_ignore_ascii_case("csv") || ext.eq_ignore_ascii_case("tsv") {
                    DataFormat::Csv
                } else {
                    DataFormat::Jsonl
                }
            }
            other => other,
        }
    }

    /// A stable fingerprint of everything that decides which rows a file yields.
    pub fn fingerprint(&self, path: &Path) -> String {
        format!(
            "{:?}|{}|{}|{:?}|{}|{}",
            self.format_for(path),
            self.text_field,
            self.id_field,
            self.label_field,
            self.csv_delimiter,
            self.max_text_bytes
        )
    }

    /// Checks the text; shared by every format.
    fn check_text(&self, line: u64, text: &str) -> Result<(), RowError> {
        if text.trim().is_empty() {
            return Err(RowError::new(line, "empty_text", "text is empty"));
        }
        if text.len() > self.max_text_bytes {
            return Err(RowError::new(
                line,
                "text_too_long",
                format!(
                    "text is {} bytes, over data.max_text_bytes = {}",
                    text.len(),
                    self.max_text_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// Streams `path`, calling `accept` for each well-formed row. `accept` may reject a
/// row (for example, a label the rule cannot map): it is then counted as malformed.
pub fn read_file(
    path: &Path,
    spec: &ReaderSpec,
    mut accept: impl FnMut(Record) -> Result<(), RowError>,
) -> Result<ReadSummary, ReadError> {
    let io_err = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let mut summary = ReadSummary {
        path: path.display().to_string(),
        ..Default::default()
    };
    let hashing = HashingReader::new(file);
    let hashing = match spec.format_for(path) {
        DataFormat::Csv => csv::read(path, hashing, spec, &mut summary, &mut accept)?,
        format => jsonl::read(
            path,
            hashing,
            spec,
            format == DataFormat::Yelp,
            &mut summary,
            &mut accept,
        )?,
    };
    let (sha256, bytes) = hashing.finish();
    summary.sha256 = sha256;
    summary.bytes = bytes;
    Ok(summary)
}

/// Passes bytes through while hashing them.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Drains what is left, then returns the hex sha256 and byte count.
    fn finish(mut self) -> (String, u64) {
        let _ = io::copy(&mut self, &mut io::sink());
        (hex(&self.hasher.finalize()), self.bytes)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Writes `content` to a temporary file with `suffix` and reads it back.
    pub fn read_str(content: &[u8], suffix: &str, spec: &ReaderSpec) -> (Vec<Record>, ReadSummary) {
        let file = tempfile::Builder::new().suffix(suffix).tempfile().unwrap();
        std::fs::write(file.path(), content).unwrap();
        let mut out = Vec::new();
        let summary = read_file(file.path(), spec, |r| {
            out.push(r);
            Ok(())
        })
        .unwrap();
        (out, summary)
    }

    pub fn spec(format: DataFormat, text: &str, id: &str, label: Option<&str>) -> ReaderSpec {
        ReaderSpec {
            format,
            text_field: text.into(),
            id_field: id.into(),
            label_field: label.map(str::to_string),
            csv_delimiter: b',',
            max_text_bytes: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn sha256_of_known_content() {
        let spec = spec(DataFormat::Jsonl, "text", "id", None);
        let (_, summary) = read_str(b"abc", ".jsonl", &spec);
        assert_eq!(
            summary.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(summary.bytes, 3);
    }

    #[test]
    fn auto_format_goes_by_extension() {
        let spec = spec(DataFormat::Auto, "text", "id", None);
        assert_eq!(spec.format_for(Path::new("a/b.CSV")), DataFormat::Csv);
        assert_eq!(spec.format_for(Path::new("a/b.jsonl")), DataFormat::Jsonl);
        assert_eq!(spec.format_for(Path::new("a/b")), DataFormat::Jsonl);
    }

    #[test]
    fn rejection_by_the_caller_counts_as_malformed() {
        let spec = spec(DataFormat::Jsonl, "text", "id", None);
        let file = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .unwrap();
        std::fs::write(file.path(), "{\"text\":\"a\"}\n{\"text\":\"b\"}\n").unwrap();
        let summary = read_file(file.path(), &spec, |r| {
            if r.text == "b" {
                Err(RowError::new(r.line, "unknown_label", "no"))
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(
            (summary.rows, summary.accepted, summary.malformed),
            (2, 1, 1)
        );
        assert_eq!(summary.examples[0].line, 2);
        assert_eq!(summary.malformed_by_reason["unknown_label"], 1);
    }

    #[test]
    fn missing_file_is_an_io_error_naming_the_path() {
        let spec = spec(DataFormat::Jsonl, "text", "id", None);
        let err = read_file(Path::new("/nonexistent/x.jsonl"), &spec, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.jsonl"));
    }

    #[test]
    fn summary_lists_reasons_and_examples() {
        let spec = spec(DataFormat::Jsonl, "text", "id", None);
        let (_, summary) = read_str(b"nope\n{\"text\":\"\"}\n", ".jsonl", &spec);
        let text = summary.to_string();
        assert!(text.contains("2 malformed"), "{text}");
        assert!(text.contains("line 1"), "{text}");
        assert!(text.contains("empty_text=1"), "{text}");
    }
}
