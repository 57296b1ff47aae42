//! The feature pipeline: read and validate raw rows, map labels, embed (with a
//! cache for training files).

pub mod cache;
pub mod label_rule;
mod pipeline;
pub mod readers;

pub use pipeline::{
    EmbedStats, FeatureError, LabelledData, embed_texts, read_labelled, scan_labelled,
};

/// A row with its text and a label index into the data set's label set.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledExample {
    pub id: String,
    pub text: String,
    pub label: usize,
}
