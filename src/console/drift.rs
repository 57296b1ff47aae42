//! Drift and quality: each detector's values over the last windows against its
//! threshold, the class mix against the training reference, confidence, and the
//! accuracy of late-labelled messages when traffic carries labels.

use maud::{Markup, html};

use super::layout::num;
use super::svg::{self, Scale, Series};
use crate::drift::DriftSettings;
use crate::drift::recent::RecentPoint;

/// What the model's training reference says, for the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceSummary {
    pub class_mix: Vec<f64>,
    pub mean_confidence: f64,
}

pub struct DriftData {
    /// The serving version's recent windows, oldest first.
    pub points: Vec<RecentPoint>,
    pub settings: DriftSettings,
    /// The serving version's labels and reference, when readable.
    pub labels: Vec<String>,
    pub reference: Option<ReferenceSummary>,
    pub problems: Vec<String>,
}

fn status(fired: bool, enough: bool) -> Markup {
    html! {
        @if fired { span.badge.bad { "drift" } }
        @else if enough { span.badge.ok { "ok" } }
        @else { span.badge.warn { "too few messages" } }
    }
}

pub fn view(d: &DriftData) -> Markup {
    let s = &d.settings;
    let Some(last) = d.points.last() else {
        return html! {
            @for p in &d.problems { p.notice { (p) } }
            p.notice #no-windows { "No window has been classified since this instance started: the charts fill as traffic arrives on the input topics." }
        };
    };
    let r = &last.report;
    let enough = r.messages >= s.min_messages;
    let series = |f: fn(&RecentPoint) -> Option<f64>| d.points.iter().map(f).collect::<Vec<_>>();
    let fired = |f: fn(&RecentPoint) -> bool| d.points.iter().map(f).collect::<Vec<_>>();
    let confidence_floor = d
        .reference
        .as_ref()
        .map(|r| r.mean_confidence - s.confidence_drop);
    let charts = [
        (
            "Prediction drift: PSI of the class mix",
            series(|p| Some(p.report.prediction_psi)),
            fired(|p| p.report.prediction_drift),
            Some(s.prediction_psi),
            Scale::Linear,
            r.prediction_drift,
            format!(
                "PSI {:.3}, fires above {} (or a class outside {}–{} of predictions)",
                r.prediction_psi, s.prediction_psi, s.class_share_min, s.class_share_max
            ),
        ),
        (
            "Embedding drift: MMD² p-value",
            series(|p| Some(p.report.mmd_p_value)),
            fired(|p| p.report.embedding_drift),
            Some(s.mmd_p_value),
            Scale::Log {
                floor: 1.0 / (s.mmd_null_draws as f64 + 1.0),
            },
            r.embedding_drift,
            format!(
                "p {:.4} (MMD² {:.5}), fires below {}",
                r.mmd_p_value, r.mmd2, s.mmd_p_value
            ),
        ),
        (
            "Confidence drift: mean confidence",
            series(|p| Some(p.report.mean_confidence)),
            fired(|p| p.report.confidence_drift),
            confidence_floor,
            Scale::Linear,
            r.confidence_drift,
            format!(
                "mean {:.3}, fires below {}",
                r.mean_confidence,
                num(confidence_floor)
            ),
        ),
        (
            "Data quality: PSI of text lengths",
            series(|p| Some(p.report.text_length_psi)),
            fired(|p| p.report.text_length_drift),
            Some(s.text_length_psi),
            Scale::Linear,
            r.text_length_drift,
            format!(
                "PSI {:.3}, fires above {}",
                r.text_length_psi, s.text_length_psi
            ),
        ),
    ];
    let mix: Vec<(String, f64, f64)> = d
        .labels
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let reference = d
                .reference
                .as_ref()
                .and_then(|r| r.class_mix.get(i))
                .copied()
                .unwrap_or(0.0);
            (
                label.clone(),
                reference,
                r.class_mix.get(i).copied().unwrap_or(0.0),
            )
        })
        .collect();
    let labelled = d.points.iter().any(|p| p.report.accuracy.is_some());
    html! {
        @for p in &d.problems { p.notice { (p) } }
        p.muted #summary { "Model " b { (last.version) } " · last " (d.points.len()) " windows of this instance · the latest pools "
            (r.messages) " messages over " (s.sliding_windows) " windows (detectors speak from " (s.min_messages) ")" }
        div.grid #detectors {
            @for (title, values, fired, threshold, scale, now, caption) in &charts {
                section.card {
                    h3 { (title) " " (status(*now, enough)) }
                    (svg::line_chart(&Series { title, values, fired, threshold: *threshold, scale: *scale }))
                    p.muted { (caption) }
                }
            }
        }
        div.grid {
            section.card #class-mix {
                h3 { "Class mix: training reference against the recent windows" }
                (svg::paired_bars("Class mix", ("reference", "recent"), &mix))
            }
            section.card {
                h3 { "Confidence and input quality" }
                table {
                    tr { th { "mean confidence" } td.n { (format!("{:.3}", r.mean_confidence)) } }
                    tr { th { "reference mean confidence" } td.n { (num(d.reference.as_ref().map(|r| r.mean_confidence))) } }
                    tr { th { "share under " (s.low_confidence) } td.n { (format!("{:.1}%", r.low_confidence_share * 100.0)) } }
                    tr { th { "dead-lettered share" } td.n { (format!("{:.1}%", r.invalid_share * 100.0)) } }
                }
                (svg::line_chart(&Series { title: "Share of low-confidence predictions",
                    values: &series(|p| Some(p.report.low_confidence_share)), fired: &[], threshold: None, scale: Scale::Linear }))
            }
            section.card #late-labels {
                h3 { "Accuracy of labelled messages" }
                @if labelled {
                    table {
                        tr { th { "accuracy" } td.n { (num(r.accuracy)) } }
                        tr { th { "macro-F1" } td.n { (num(r.macro_f1)) } }
                    }
                    (svg::line_chart(&Series { title: "Macro-F1 of messages that carried a label",
                        values: &series(|p| p.report.macro_f1), fired: &[], threshold: None, scale: Scale::Linear }))
                } @else {
                    p.muted { "No recent message carried a label. Labels that arrive later are joined by the retrainer: see its console." }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::DriftReport;

    fn point(psi: f64, fired: bool) -> RecentPoint {
        RecentPoint {
            at_ms: 0,
            version: "v1".into(),
            report: DriftReport {
                messages: 100,
                class_mix: vec![0.9, 0.1],
                prediction_psi: psi,
                prediction_drift: fired,
                mmd_p_value: 0.5,
                mean_confidence: 0.8,
                ..DriftReport::default()
            },
        }
    }

    fn data(points: Vec<RecentPoint>) -> DriftData {
        DriftData {
            points,
            settings: DriftSettings::default(),
            labels: vec!["billing".into(), "refund".into()],
            reference: Some(ReferenceSummary {
                class_mix: vec![0.5, 0.5],
                mean_confidence: 0.85,
            }),
            problems: vec![],
        }
    }

    #[test]
    fn each_detector_has_a_chart_and_the_firing_one_says_drift() {
        let html = view(&data(vec![point(0.1, false), point(0.6, true)])).into_string();
        assert_eq!(
            html.matches("<svg").count(),
            6,
            "4 detectors, class mix, low confidence"
        );
        assert_eq!(
            html.matches(r#"<span class="badge bad">drift</span>"#)
                .count(),
            1
        );
        assert!(
            html.contains("50.0% → 90.0%"),
            "class mix against the reference"
        );
        assert!(
            html.contains("fires below 0.750"),
            "confidence floor from the reference"
        );
        assert!(html.contains("No recent message carried a label"));
    }

    #[test]
    fn late_label_accuracy_is_charted_when_present() {
        let mut p = point(0.1, false);
        p.report.accuracy = Some(0.9);
        p.report.macro_f1 = Some(0.8);
        let html = view(&data(vec![p])).into_string();
        assert!(html.contains("Macro-F1 of messages that carried a label"));
        assert!(html.contains(">0.800<"));
    }

    #[test]
    fn no_windows_yet_is_said_plainly() {
        let html = view(&data(vec![])).into_string();
        assert!(html.contains("no-windows") && !html.contains("<svg"));
    }
}
