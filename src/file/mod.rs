//! Files as the pipeline's source and sink: the batch mode (`triage run --input
//! FILE|- --output FILE|-`). The same windows, validation, embedding, drift
//! statistics and metrics as the Kafka path; JSON lines or CSV in, one prediction
//! per valid line out, dead letters with their reason and line number.

mod sink;
mod source;

pub use sink::{FileSink, Outputs};
pub use source::{FileSource, InputFormat};

/// Why a file could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {path}: {source}; check the folder exists and is writable")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the CSV header of {path}: {source}")]
    CsvHeader {
        path: String,
        #[source]
        source: csv::Error,
    },
    #[error("cannot start the reader thread: {0}")]
    Thread(#[source] std::io::Error),
}
