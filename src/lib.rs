//! triage: a streaming classifier for customer messages.
//!
//! The code follows the Feature / Training / Inference split:
//! - [`feature`]: readers, label rules, the feature cache and the feature pipeline;
//! - [`training`]: data checks, stratified split, gates, the training pipeline;
//! - [`inference`]: the Kafka-free pipeline core (windows, decoding, classifying
//!   on workers, drift, record encoding) over a [`stream`] source and sink;
//! - [`retrain`]: the retraining loop (recent labelled feature records -> a
//!   challenger -> judged against the champion on the same held-out slice);
//!
//! its edges: [`kafka`] (the production source and sink), [`file`] (the batch
//! mode), [`http`] (the HTTP surface), wired together by [`service`];
//! and the parts they share: [`config`], [`embed`] (the sentence embedder),
//! [`model`] (logistic regressions over the embedding and word n-grams, blended, and
//! the evaluation metrics), [`registry`] (model versions, cards and aliases),
//! [`drift`] (the monitor and the reference it compares against), [`metrics`],
//! [`review`] (the queue of messages waiting for a person, and who may answer it),
//! and the pure leaves [`stats`], [`checksum`] and [`clock`]. [`retrain`] is `triage
//! retrainer`, Alertmanager's webhook receiver that runs retraining jobs one at a
//! time, in a process of its own. [`tools`] holds what runs
//! around the service (`triage bench`, `triage drift eval`, the console producer
//! and consumer); [`cli`] is the binary's edge.
//!
//! Dependencies run one way, from the binary down to the pure core: `cli` ->
//! `tools`, `retrainer`, `service` -> `retrain`, `late_labels` -> `console` -> `review` -> `http` -> `file` -> `inference` ->
//! `training` -> `registry` -> `feature` -> `embed` -> `config` -> `kafka` -> `stream`
//! -> `metrics` -> `drift` -> `model`; any of them may use the leaves `stats`,
//! `checksum` and `clock`. A module uses only modules below it (not its peers), unit
//! tests included: `tests/dependencies.rs` reads this sentence and checks every
//! `crate::` path in `src/` against it.

pub mod checksum;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod drift;
pub mod embed;
pub mod feature;
pub mod file;
pub mod http;
pub mod inference;
pub mod kafka;
pub mod late_labels;
pub mod metrics;
pub mod model;
pub mod registry;
pub mod retrain;
pub mod retrainer;
pub mod review;
pub mod service;
pub mod stats;
pub mod stream;
pub mod tools;
pub mod training;
