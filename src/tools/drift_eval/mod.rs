//! `triage drift eval`: replays real traffic through the drift monitor the service
//! runs (same `[drift]` settings, same model reference) and measures, per detector,
//! false alarms on stationary traffic and how soon it fires on known shifts.
//! No broker needed; embeddings go through the feature cache.

pub mod replay;
pub mod scenarios;

use std::path::Path;

use crate::config::Settings;
use crate::embed::Embedder;
use crate::registry::ModelVersion;
use replay::{ReplayError, ReplaySources};
use scenarios::{ScenarioPlan, ScenarioReport};

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct EvalRequest<'a> {
    /// Labelled, in-distribution file the model was not trained on.
    pub data: &'a Path,
    /// The prior-shift class; default the model's first label.
    pub prior_label: Option<&'a str>,
    /// Messages from another source, and their text field (default `data.text_field`).
    pub inject: Option<&'a Path>,
    pub inject_text_field: Option<&'a str>,
    pub plan: ScenarioPlan,
}

/// The scenarios' report, and the prior-shift label that was used.
#[derive(Debug, Clone)]
pub struct EvalOutcome {
    pub report: ScenarioReport,
    pub prior_label: String,
}

/// Embeds and classifies the files with `model`, then runs the scenarios.
pub fn run(
    settings: &Settings,
    embedder: &mut dyn Embedder,
    model: &ModelVersion,
    request: &EvalRequest<'_>,
) -> Result<EvalOutcome, ReplayError> {
    let inject_field = request
        .inject_text_field
        .unwrap_or(settings.data.text_field.as_str());
    let sources = ReplaySources {
        data: request.data,
        prior_label: request.prior_label,
        inject: request.inject.map(|p| (p, inject_field)),
    };
    let replay = replay::load(settings, embedder, model, &sources)?;
    let report = scenarios::run(
        &replay.pools,
        &model.reference,
        model.classifier.labels().len(),
        &settings.drift,
        &request.plan,
    );
    Ok(EvalOutcome {
        report,
        prior_label: replay.prior_label,
    })
}
