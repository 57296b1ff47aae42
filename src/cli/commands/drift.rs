//! `triage drift eval`: the drift scenarios on replayed real traffic
//! (`tools::drift_eval`), printed as a table or as JSON.

use std::process::ExitCode;

use super::{load_embedder, print_json};
use crate::cli::args::DriftEvalArgs;
use crate::config::Settings;
use crate::registry::Registry;
use crate::tools::drift_eval::scenarios::ScenarioPlan;
use crate::tools::drift_eval::{self, EvalRequest};

pub(super) fn drift_eval(
    settings: &Settings,
    registry: &Registry,
    args: DriftEvalArgs,
) -> anyhow::Result<ExitCode> {
    let model = registry.load(&args.model)?;
    let mut embedder = load_embedder(settings, settings.stream.workers)?;
    let request = EvalRequest {
        data: &args.data,
        prior_label: args.prior_label.as_deref(),
        inject: args.inject.as_deref(),
        inject_text_field: args.inject_text_field.as_deref(),
        plan: ScenarioPlan {
            window: args.window.unwrap_or(settings.stream.max_messages),
            stationary_windows: args.stationary_windows,
            covariate_share: args.covariate_share,
            gradual_max_share: args.gradual_max_share,
            runs: args.runs,
            seed: args.seed,
            ..ScenarioPlan::default()
        },
    };
    let outcome = drift_eval::run(settings, &mut embedder, &model, &request)?;
    let report = &outcome.report;
    if args.json {
        print_json(report)?;
    } else {
        println!(
            "model {}: {} in-distribution messages ({} labelled {:?}), {} injected",
            model.card.version,
            report.base_messages,
            report.prior_messages,
            outcome.prior_label,
            report.inject_messages
        );
        print!("{}", report.render());
    }
    Ok(ExitCode::SUCCESS)
}
