//! The training pipeline: labelled file -> data checks -> embeddings -> stratified
//! split -> logistic regression -> held-out evaluation -> gates -> registry.

pub mod data_checks;
pub mod gates;
pub mod metrics;
mod pipeline;
pub mod split;

pub use pipeline::{EvaluateOutcome, TrainError, TrainOptions, TrainOutcome, evaluate_file, train};
