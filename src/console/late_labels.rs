//! Late labels (the retrainer's console at `/`): how each model version scores on
//! the messages whose true label arrived after the prediction, as the retrainer's
//! label join exports it (`triage_performance_*`), and how the join is doing.

use maud::{Markup, html};
use prometheus::proto::{MetricFamily, MetricType};

use super::svg;

/// One model version's rolling scores over its joined pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionScores {
    pub version: String,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub pairs: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LateLabels {
    /// By version name.
    pub versions: Vec<VersionScores>,
    /// Label records by result (joined, unknown id, ...).
    pub results: Vec<(String, f64)>,
    /// Predictions held for the join, and labels waiting for their prediction.
    pub held: f64,
    pub waiting: f64,
    pub champion: Option<String>,
}

/// The value of each series of `name`, with its labels' values in order.
fn series(families: &[MetricFamily], name: &str) -> Vec<(Vec<String>, f64)> {
    families
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| {
            let counter = f.get_field_type() == MetricType::COUNTER;
            f.get_metric().iter().map(move |m| {
                let labels = m
                    .get_label()
                    .iter()
                    .map(|l| l.value().to_string())
                    .collect();
                let value = if counter {
                    m.get_counter().get_value()
                } else {
                    m.get_gauge().get_value()
                };
                (labels, value)
            })
        })
        .collect()
}

fn one(families: &[MetricFamily], name: &str) -> f64 {
    series(families, name).first().map_or(0.0, |s| s.1)
}

impl LateLabels {
    /// Reads the join's exported metrics from the retrainer's registry.
    pub fn from_metrics(families: &[MetricFamily], champion: Option<String>) -> Self {
        let value = |name: &str, version: &str| {
            series(families, name)
                .into_iter()
                .find(|(l, _)| l.first().map(String::as_str) == Some(version))
                .map_or(0.0, |s| s.1)
        };
        let mut versions: Vec<VersionScores> = series(families, "triage_performance_accuracy")
            .into_iter()
            .filter_map(|(labels, accuracy)| labels.into_iter().next().map(|v| (v, accuracy)))
            .map(|(version, accuracy)| VersionScores {
                macro_f1: value("triage_performance_macro_f1", &version),
                pairs: value("triage_performance_labelled_predictions", &version),
                version,
                accuracy,
            })
            .collect();
        versions.sort_by(|a, b| a.version.cmp(&b.version));
        Self {
            versions,
            results: series(families, "triage_performance_labels_total")
                .into_iter()
                .filter_map(|(l, v)| l.into_iter().next().map(|l| (l, v)))
                .collect(),
            held: one(families, "triage_performance_join_size"),
            waiting: one(families, "triage_performance_waiting_labels"),
            champion,
        }
    }
}

pub fn view(d: &LateLabels) -> Markup {
    let bars: Vec<(String, f64)> = d
        .versions
        .iter()
        .map(|v| (v.version.clone(), v.macro_f1))
        .collect();
    html! {
        section.card.scroll #late-labels {
            h2 { "Accuracy on late labels, per model version" }
            @if d.versions.is_empty() {
                p.muted #no-labels { "No label has been joined with its prediction yet: labels arrive on "
                    code { "kafka.labels_topic" } " (key = message id)." }
            } @else {
                table {
                    tr { th { "version" } th.n { "accuracy" } th.n { "macro-F1" } th.n { "labelled predictions" } }
                    @for v in &d.versions {
                        tr { td { (v.version) " " @if d.champion.as_deref() == Some(v.version.as_str()) { span.badge.ok { "champion" } } }
                            td.n { (format!("{:.3}", v.accuracy)) } td.n { (format!("{:.3}", v.macro_f1)) } td.n { (v.pairs) } }
                    }
                }
                (svg::bars("Macro-F1 on late labels per version", &bars))
            }
        }
        section.card {
            h2 { "The label join" }
            table #join {
                @for (result, n) in &d.results { tr { th { "labels " (result) } td.n { (n) } } }
                tr { th { "predictions held for the join" } td.n { (d.held) } }
                tr { th { "labels waiting for their prediction" } td.n { (d.waiting) } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{GaugeVec, Opts, Registry};

    #[test]
    fn scores_are_read_from_the_exported_metrics_and_shown() {
        let registry = Registry::new();
        for (name, v1, v2) in [
            ("triage_performance_accuracy", 0.9, 0.95),
            ("triage_performance_macro_f1", 0.8, 0.85),
            ("triage_performance_labelled_predictions", 100.0, 40.0),
        ] {
            let g = GaugeVec::new(Opts::new(name, "h"), &["model_version"]).unwrap();
            registry.register(Box::new(g.clone())).unwrap();
            g.with_label_values(&["v1"]).set(v1);
            g.with_label_values(&["v2"]).set(v2);
        }
        let d = LateLabels::from_metrics(&registry.gather(), Some("v2".into()));
        assert_eq!(d.versions.len(), 2);
        assert_eq!(d.versions[1].macro_f1, 0.85);
        assert_eq!(d.versions[0].pairs, 100.0);
        let html = view(&d).into_string();
        assert!(
            html.contains("champion") && html.contains(">0.850<"),
            "{html}"
        );
    }

    #[test]
    fn nothing_joined_yet_is_said() {
        let html = view(&LateLabels::default()).into_string();
        assert!(html.contains("no-labels"));
    }
}
