//! Retraining: the latest runs from the registry's decision journal, newest first:
//! what started each, the data it took, champion and challenger on the same
//! held-out slice, and the verdict with its reason.

use maud::{Markup, html};

use super::layout::num;
use crate::registry::decision::{Contender, Decision, Verdict};

/// Runs shown, newest first.
pub const SHOWN: usize = 20;

fn when(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "–".into(),
        |ms| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
            )
            .to_string()
        },
    )
}

fn verdict(v: Verdict) -> Markup {
    let class = match v {
        Verdict::Promoted | Verdict::Shadow => "ok",
        Verdict::Rejected => "warn",
        Verdict::Failed => "bad",
    };
    html! { span class=(format!("badge verdict {class}")) { (v.to_string()) } }
}

/// `decisions`: newest first; `skipped`: journal lines that could not be read.
pub fn view(decisions: &[Decision], skipped: usize) -> Markup {
    html! {
        @if skipped > 0 { p.notice { (skipped) " line(s) of the decision journal could not be read and are left out." } }
        @if decisions.is_empty() {
            p.muted #no-runs { "No retraining run recorded yet: runs start from " code { "triage retrain" }
                ", the schedule, or a drift alert through the retrainer." }
        }
        @for d in decisions.iter().take(SHOWN) { (run(d)) }
    }
}

fn run(d: &Decision) -> Markup {
    let contenders: [(&str, Option<&Contender>); 2] = [
        ("champion", d.champion.as_ref()),
        ("challenger", d.challenger.as_ref()),
    ];
    let labels: Vec<&String> = {
        let mut l: Vec<&String> = contenders
            .iter()
            .flat_map(|(_, c)| c.iter().flat_map(|c| c.metrics.per_class_f1.keys()))
            .collect();
        l.sort();
        l.dedup();
        l
    };
    html! {
        section.card.scroll.run {
            h2 { (d.id) " " (verdict(d.verdict)) }
            p { (d.reason) }
            p.muted { "Trigger " code { (d.trigger.to_string()) } " · started " (d.started_at) " · "
                (format!("{:.1}", d.duration_seconds)) " s · margin required " (format!("{:+.3}", d.margin_required)) " macro-F1" }
            div.cols {
                div {
                    h3 { "Inputs" }
                    table {
                        @for s in &d.inputs.sources { tr { td { (s.description) } td.n { (s.rows) } } }
                        tr { th { "records from / to" } td.nowrap { (when(d.inputs.from_ms)) br; (when(d.inputs.to_ms)) } }
                        tr { th { "train / held-out rows" } td.n { (d.rows.train) " / " (d.rows.held_out) } }
                    }
                    @if !d.steps.is_empty() {
                        h3 { "Steps" }
                        table { @for s in &d.steps { tr { td { (s.name) } td.n { (format!("{:.1} s", s.seconds)) } } } }
                    }
                }
                div {
                    h3 { "Held-out scores" }
                    table {
                        tr { th {} @for (role, c) in &contenders { th.n { (role) br; span.muted { (c.map_or("none", |c| c.version.as_str())) } } } }
                        tr { th { "accuracy" } @for (_, c) in &contenders { td.n { (num(c.map(|c| c.metrics.accuracy))) } } }
                        tr { th { "macro-F1" } @for (_, c) in &contenders { td.n { (num(c.map(|c| c.metrics.macro_f1))) } } }
                        @for label in &labels {
                            tr { td { "F1 " (label) } @for (_, c) in &contenders {
                                td.n { (num(c.and_then(|c| c.metrics.per_class_f1.get(*label).copied()))) } } }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::decision::fixture::decision;

    #[test]
    fn a_run_shows_inputs_both_models_and_the_verdict() {
        let html = view(&[decision("retrain-1", Verdict::Promoted)], 0).into_string();
        assert!(
            html.contains("retrain-1") && html.contains("verdict ok\">promoted"),
            "{html}"
        );
        assert!(html.contains("alert:TriageDriftDetected"));
        assert!(html.contains("F1 billing") && html.contains("F1 refund"));
    }

    #[test]
    fn no_runs_and_skipped_lines_are_said() {
        let html = view(&[], 2).into_string();
        assert!(html.contains("no-runs") && html.contains("2 line(s)"));
    }
}
