//! `triage inspect`: what a labelled file holds, read as training would read it.

use std::process::ExitCode;

use super::print_json;
use crate::cli::args::InspectArgs;
use crate::config::Settings;

pub(super) fn inspect(settings: &Settings, args: InspectArgs) -> anyhow::Result<ExitCode> {
    let mut per_label: std::collections::BTreeMap<String, u64> = Default::default();
    let summary = crate::feature::scan_labelled(&args.data, settings, |_, label| {
        *per_label.entry(label).or_default() += 1;
    })?;
    if args.json {
        print_json(&serde_json::json!({ "read": summary, "rows_per_label": per_label }))?;
    } else {
        println!("{summary}\n\nrows per label:");
        for (label, n) in &per_label {
            println!("  {label:<20} {n:>10}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
