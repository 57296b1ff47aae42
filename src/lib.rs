//! triage: a streaming classifier for customer messages.
//!
//! The code follows the Feature / Training / Inference split:
//! - [`feature`]: readers, label rules, the feature cache and the feature pipeline;
//! - [`training`]: data checks, stratified split, gates, the training pipeline;
//! - [`inference`]: classifying with a registered model, and the streaming service;
//!
//! and the parts they share: [`config`], [`embed`] (the sentence embedder),
//! [`model`] (logistic regressions over the embedding and word n-grams, blended, and
//! the evaluation metrics), [`registry`] (model versions, cards and aliases),
//! [`drift`] (the monitor and the reference it compares against), [`kafka`],
//! [`http`] and [`metrics`] at the edges, and the pure leaves [`stats`] and
//! [`checksum`]. [`tools`] holds what runs around the service (`triage bench`,
//! `triage drift eval`, the console producer and consumer); [`cli`] is the
//! binary's edge.
//!
//! Dependencies run one way, from the binary down to the pure core: `cli` ->
//! `tools` -> `inference`, `http`, `training` -> `registry` -> `feature` -> `embed`
//! -> `config`, `kafka`, `metrics` -> `drift` -> `model`; any of them may use
//! `stats` and `checksum`, which use nothing.

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
