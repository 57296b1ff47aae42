//! `triage retrain`: run the retraining job once and print its decision.

use std::fmt::Write as _;
use std::process::ExitCode;

use super::{load_embedder, print_json};
use crate::cli::args::RetrainArgs;
use crate::config::Settings;
use crate::registry::decision::{Decision, Trigger, Verdict};
use crate::retrain::job::{self, JobOptions, OriginalData};

/// Exit status when the challenger was stored but not promoted.
const EXIT_REJECTED: u8 = 3;

pub(super) fn retrain(settings: &Settings, args: RetrainArgs) -> anyhow::Result<ExitCode> {
    let options = JobOptions {
        since: args.since,
        training_data: args
            .training_data
            .as_deref()
            .map(OriginalData::from_setting),
        ..JobOptions::default()
    };
    let decision = match load_embedder(settings, settings.stream.workers) {
        Ok(mut embedder) => job::run(settings, &mut embedder, Trigger::Cli, &options),
        // Recorded too: a run that could not start is a decision people look for.
        Err(e) => job::failed_to_start(
            settings,
            Trigger::Cli,
            format!("the embedder did not load: {e:#}"),
        ),
    };
    if args.json {
        print_json(&decision)?;
    } else {
        print!("{}", render(&decision));
    }
    Ok(match decision.verdict {
        // A challenger racing in shadow won its held-out comparison: a success.
        Verdict::Promoted | Verdict::Shadow => ExitCode::SUCCESS,
        Verdict::Rejected => ExitCode::from(EXIT_REJECTED),
        Verdict::Failed => ExitCode::from(1),
    })
}

fn time_of(ms: Option<i64>) -> String {
    ms.and_then(|ms| u64::try_from(ms).ok())
        .map(|ms| {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            humantime::format_rfc3339_seconds(at).to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// The decision for people: inputs, rows, both models side by side, verdict, why,
/// and where the time went.
fn render(d: &Decision) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({}): {} after {:.1} s",
        d.id,
        d.trigger,
        d.verdict.to_string().to_uppercase(),
        d.duration_seconds
    );
    let _ = writeln!(
        out,
        "recent records from {} to {}",
        time_of(d.inputs.from_ms),
        time_of(d.inputs.to_ms)
    );
    for s in &d.inputs.sources {
        let _ = writeln!(out, "  {:>6} rows  {}", s.rows, s.description);
    }
    if d.rows.train + d.rows.held_out > 0 {
        let _ = writeln!(
            out,
            "rows: {} to train on, {} held out to judge both models",
            d.rows.train, d.rows.held_out
        );
    }
    if let Some(challenger) = &d.challenger {
        let name = |c: Option<&crate::registry::decision::Contender>, role: &str| {
            c.map_or_else(|| format!("{role} -"), |c| format!("{role} {}", c.version))
        };
        let champion = d.champion.as_ref();
        let _ = writeln!(
            out,
            "\nheld-out slice        {:>16}  {:>16}",
            name(champion, "champion"),
            name(Some(challenger), "challenger")
        );
        let score = |value: Option<f64>| value.map_or_else(|| "-".into(), |v| format!("{v:.4}"));
        let mut line = |metric: &str, a: Option<f64>, b: f64| {
            let gain = a.map(|a| format!("  {:+.4}", b - a)).unwrap_or_default();
            let _ = writeln!(
                out,
                "{metric:<20}  {:>16}  {:>16}{gain}",
                score(a),
                score(Some(b))
            );
        };
        line(
            "macro-F1",
            champion.map(|c| c.metrics.macro_f1),
            challenger.metrics.macro_f1,
        );
        line(
            "accuracy",
            champion.map(|c| c.metrics.accuracy),
            challenger.metrics.accuracy,
        );
        let mut labels: Vec<&String> = challenger.metrics.per_class_f1.keys().collect();
        if let Some(c) = champion {
            labels.extend(c.metrics.per_class_f1.keys());
        }
        labels.sort();
        labels.dedup();
        for label in labels {
            let a = champion.map(|c| c.metrics.per_class_f1.get(label).copied().unwrap_or(0.0));
            let b = challenger
                .metrics
                .per_class_f1
                .get(label)
                .copied()
                .unwrap_or(0.0);
            line(&format!("  F1 {label}"), a, b);
        }
        let _ = writeln!(out, "required margin       {:+}", d.margin_required);
    }
    let _ = writeln!(out, "\n{}: {}", d.verdict, d.reason);
    if !d.steps.is_empty() {
        let steps: Vec<String> = d
            .steps
            .iter()
            .map(|s| format!("{} {:.1} s", s.name, s.seconds))
            .collect();
        let _ = writeln!(out, "steps: {}", steps.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::decision::fixture;

    #[test]
    fn a_decision_shows_both_models_the_verdict_and_the_steps() {
        let text = render(&fixture::decision("retrain-1", Verdict::Promoted));
        assert!(
            text.starts_with("retrain-1 (alert:TriageDriftDetected): PROMOTED"),
            "{text}"
        );
        assert!(text.contains("champion v3"), "{text}");
        assert!(text.contains("challenger v4"), "{text}");
        assert!(text.contains("+0.0300"), "{text}");
        assert!(text.contains("F1 refund"), "{text}");
        assert!(text.contains("steps: train 50.0 s"), "{text}");
        assert!(text.contains("2880 to train on, 320 held out"), "{text}");
    }

    #[test]
    fn a_failed_run_shows_why_and_no_table() {
        let mut d = fixture::decision("retrain-2", Verdict::Failed);
        d.champion = None;
        d.challenger = None;
        d.reason = "cannot reach the broker; the champion is unchanged".into();
        let text = render(&d);
        assert!(!text.contains("held-out slice"), "{text}");
        assert!(text.contains("failed: cannot reach the broker"), "{text}");
    }
}
