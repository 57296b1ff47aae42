//! `triage review-order`: the review queue's orders measured on a replay
//! (`tools::review_order`).

use std::process::ExitCode;

use super::{load_embedder, print_json};
use crate::cli::args::ReviewOrderArgs;
use crate::config::Settings;
use crate::tools::review_order::{self, Plan};

pub(super) fn review_order(settings: &Settings, args: ReviewOrderArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.seed_rows > 0 && args.pool_rows > 0 && args.test_rows > 0,
        "--seed-rows, --pool-rows and --test-rows must be above 0"
    );
    let plan = Plan {
        seed_rows: args.seed_rows,
        pool_rows: args.pool_rows,
        test_rows: args.test_rows,
        budgets: args.budgets,
        seeds: args.seeds as usize,
    };
    let mut embedder = load_embedder(settings, settings.stream.workers)?;
    let report = review_order::run(settings, &mut embedder, &args.data, &plan)?;
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", review_order::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}
