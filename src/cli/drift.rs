//! `triage drift eval`: the drift scenarios on replayed real traffic.

use std::process::ExitCode;

use super::args::DriftEvalArgs;
use super::commands::{load_embedder, print_json};
use crate::config::Settings;
use crate::drift::replay::{self, ReplaySources};
use crate::drift::scenarios::{self, ScenarioPlan};
use crate::registry::Registry;

pub(super) fn drift_eval(
    settings: &Settings,
    registry: &Registry,
    args: DriftEvalArgs,
) -> anyhow::Result<ExitCode> {
    let model = registry.load(&args.model)?;
    let mut embedder = load_embedder(settings, settings.stream.workers)?;
    let inject_field = args
        .inject_text_field
        .clone()
        .unwrap_or_else(|| settings.data.text_field.clone());
    let sources = ReplaySources {
        data: &args.data,
        prior_label: args.prior_label.as_deref(),
        inject: args.inject.as_deref().map(|p| (p, inject_field.as_str())),
    };
    let replay = replay::load(settings, &mut embedder, &model, &sources)?;
    let plan = ScenarioPlan {
        window: args.window.unwrap_or(settings.stream.max_messages),
        stationary_windows: args.stationary_windows,
        covariate_share: args.covariate_share,
        gradual_max_share: args.gradual_max_share,
        runs: args.runs,
        seed: args.seed,
        ..ScenarioPlan::default()
    };
    let report = scenarios::run(
        &replay.pools,
        &model.reference,
        model.classifier.labels().len(),
        &settings.drift,
        &plan,
    );
    if args.json {
        print_json(&report)?;
    } else {
        println!(
            "model {}: {} in-distribution messages ({} labelled {:?}), {} injected",
            model.card.version,
            report.base_messages,
            report.prior_messages,
            replay.prior_label,
            report.inject_messages
        );
        print!("{}", report.render());
    }
    Ok(ExitCode::SUCCESS)
}
