//! The training pipeline: labelled file -> data checks -> embeddings -> stratified
//! split -> cross-validated logistic regressions (embedding, n-grams) with class
//! balancing and a decision rule -> held-out evaluation -> gates -> registry.

pub mod balance;
pub mod cv;
pub mod data_checks;
pub mod fit;
pub mod gates;
mod pipeline;
pub mod split;
#[cfg(test)]
pub(crate) mod testing;

pub use pipeline::{
    Embedded, EvaluateOutcome, TrainError, TrainOptions, TrainOutcome, evaluate_file,
    evaluate_versions, read_and_embed, train,
};
