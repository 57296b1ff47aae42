//! triage: a streaming classifier for customer messages.
//!
//! The code follows the Feature / Training / Inference split:
//! - [`feature`]: readers, label rules, the feature cache and the feature pipeline;
//! - [`training`]: data checks, stratified split, metrics, gates, the training pipeline;
//! - [`inference`]: classifying with a registered model;
//!
//! and the parts they share: [`config`], [`embed`] (the sentence embedder),
//! [`model`] (logistic regressions over the embedding and word n-grams, blended) and
//! [`registry`] (model versions and aliases).

pub mod checksum;
pub mod cli;
pub mod config;
pub mod drift;
pub mod embed;
pub mod feature;
pub mod http;
pub mod inference;
pub mod kafka;
pub mod metrics;
pub mod model;
pub mod registry;
pub mod stats;
pub mod tools;
pub mod training;
