//! Late labels (the retrainer's console at `/`): how each model version scores on
//! the messages whose true label arrived after the prediction, as the retrainer's
//! label join exports it (`triage_performance_*`), and how the join is doing.

use std::collections::BTreeMap;

use maud::{Markup, html};
use prometheus::proto::MetricFamily;

use super::{named, series, svg};

/// One model version's rolling scores over its joined pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionScores {
    pub version: String,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub pairs: f64,
    /// The held-out macro-F1 its card promised (None: no card read).
    pub promised_macro_f1: Option<f64>,
    /// Whether its window is significantly below the card.
    pub below_card: bool,
    /// Share of its late labels naming classes it never learned, and whether that
    /// share is measurable.
    pub new_class_share: f64,
    pub new_class: bool,
    /// The labels it applied by itself (route auto) that a late label checked, and
    /// the share right: the review promise (None: its card has no routing threshold).
    pub auto_labelled: Option<f64>,
    pub auto_precision: Option<f64>,
    /// Significantly under the card's `review.target_precision`.
    pub promise_broken: bool,
}

/// A live race (or a guard: the same race the other way round) the join holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Race {
    /// The version publishing its labels, and the one scored in shadow.
    pub champion: String,
    pub challenger: String,
    pub labelled: f64,
    pub champion_macro_f1: f64,
    pub challenger_macro_f1: f64,
    /// P-value of "the challenger beats the champion by retrain.min_improvement".
    pub promote_p: f64,
    /// `triage_race_state`: 0 continue, 1 promote, 2 lost, 3 expired.
    pub state: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LateLabels {
    /// By version name.
    pub versions: Vec<VersionScores>,
    /// The live races, by (champion, challenger).
    pub races: Vec<Race>,
    /// Label records by result (joined, unknown id, ...).
    pub results: Vec<(String, f64)>,
    /// Predictions held for the join, and labels waiting for their prediction.
    pub held: f64,
    pub waiting: f64,
    pub champion: Option<String>,
}

/// The races the join exports (`triage_race_*`).
fn races(families: &[MetricFamily]) -> Vec<Race> {
    let of =
        |labels: &BTreeMap<String, String>, key: &str| labels.get(key).cloned().unwrap_or_default();
    let value = |name: &str, champion: &str, challenger: &str, extra: Option<(&str, &str)>| {
        named(families, name)
            .into_iter()
            .find(|(l, _)| {
                of(l, "champion") == champion
                    && of(l, "challenger") == challenger
                    && extra.is_none_or(|(k, v)| of(l, k) == v)
            })
            .map_or(0.0, |s| s.1)
    };
    let mut out: Vec<Race> = named(families, "triage_race_labelled_messages")
        .into_iter()
        .map(|(l, labelled)| {
            let (champion, challenger) = (of(&l, "champion"), of(&l, "challenger"));
            let f1 = |role| {
                value(
                    "triage_race_macro_f1",
                    &champion,
                    &challenger,
                    Some(("role", role)),
                )
            };
            Race {
                labelled,
                champion_macro_f1: f1("champion"),
                challenger_macro_f1: f1("challenger"),
                promote_p: value(
                    "triage_race_p_value",
                    &champion,
                    &challenger,
                    Some(("test", "promote")),
                ),
                state: value("triage_race_state", &champion, &challenger, None),
                champion,
                challenger,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.champion, &a.challenger).cmp(&(&b.champion, &b.challenger)));
    out
}

fn one(families: &[MetricFamily], name: &str) -> f64 {
    series(families, name).first().map_or(0.0, |s| s.1)
}

impl LateLabels {
    /// Reads the join's exported metrics from the retrainer's registry.
    pub fn from_metrics(families: &[MetricFamily], champion: Option<String>) -> Self {
        let found = |name: &str, version: &str| {
            series(families, name)
                .into_iter()
                .find(|(l, _)| l.first().map(String::as_str) == Some(version))
                .map(|s| s.1)
        };
        let value = |name: &str, version: &str| found(name, version).unwrap_or(0.0);
        let mut versions: Vec<VersionScores> = series(families, "triage_performance_accuracy")
            .into_iter()
            .filter_map(|(labels, accuracy)| labels.into_iter().next().map(|v| (v, accuracy)))
            .map(|(version, accuracy)| VersionScores {
                macro_f1: value("triage_performance_macro_f1", &version),
                pairs: value("triage_performance_labelled_predictions", &version),
                promised_macro_f1: found("triage_performance_promised_macro_f1", &version),
                below_card: value("triage_performance_below_card", &version) == 1.0,
                new_class_share: value("triage_performance_new_class_share", &version),
                new_class: value("triage_performance_new_class", &version) == 1.0,
                auto_labelled: found("triage_performance_auto_labelled", &version),
                auto_precision: found("triage_performance_auto_precision", &version),
                promise_broken: value("triage_performance_auto_promise_broken", &version) == 1.0,
                version,
                accuracy,
            })
            .collect();
        versions.sort_by(|a, b| a.version.cmp(&b.version));
        Self {
            versions,
            races: races(families),
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
                    tr { th { "version" } th.n { "accuracy" } th.n { "macro-F1" } th.n { "its card promised" } th.n { "labelled predictions" } th { "the promise" } th.n { "automatic labels checked" } th.n { "right" } }
                    @for v in &d.versions {
                        tr { td { (v.version) " " @if d.champion.as_deref() == Some(v.version.as_str()) { span.badge.ok { "champion" } } }
                            td.n { (format!("{:.3}", v.accuracy)) } td.n { (format!("{:.3}", v.macro_f1)) }
                            td.n { @if let Some(f1) = v.promised_macro_f1 { (format!("{f1:.3}")) } @else { "-" } }
                            td.n { (v.pairs) }
                            td {
                                @if v.below_card { span.badge.bad title="significantly below its model card (triage_performance_drop_p_value)" { "below its card" } " " }
                                @if v.new_class { span.badge.bad title="late labels name classes this version never learned" { (format!("new classes: {:.0}% of labels", v.new_class_share * 100.0)) } }
                                @if !v.below_card && !v.new_class { span.badge.ok { "kept" } }
                            }
                            td.n { @if let Some(n) = v.auto_labelled { (n) } @else { "-" } }
                            td.n {
                                @if let Some(p) = v.auto_precision {
                                    (format!("{:.1}%", p * 100.0)) " "
                                    @if v.promise_broken {
                                        span.badge.bad title="significantly under the card's review.target_precision (TriageReviewPromiseBroken)" { "promise broken" }
                                    }
                                } @else { "-" }
                            }
                        }
                    }
                }
                p.muted { "Automatic labels: those a version applied by itself (confidence at or above its card's routing threshold); the share right is the review promise, tested against "
                    code { "review.target_precision" } " (" code { "TriageReviewPromiseBroken" } ")." }
                p.muted { "A version is tested against its model card and for classes it never learned once "
                    code { "retrain.performance_min_labelled" } " labels stand behind it; either fires "
                    code { "TriagePerformanceDrop" } ", which retrains." }
                (svg::bars("Macro-F1 on late labels per version", &bars))
            }
        }
        @if !d.races.is_empty() {
            section.card.scroll #races {
                h2 { "Live races" }
                p.muted { "A challenger in shadow (or, after a promotion, the champion it replaced: the guard) scored on the same messages as the version publishing its labels; the late labels decide by a paired test." }
                table {
                    tr { th { "publishing" } th { "in shadow" } th.n { "labelled messages" } th.n { "macro-F1 publishing" } th.n { "macro-F1 in shadow" } th.n { "p (shadow wins)" } th { "verdict" } }
                    @for r in &d.races {
                        tr { td { (r.champion) } td { (r.challenger) } td.n { (r.labelled) }
                            td.n { (format!("{:.3}", r.champion_macro_f1)) } td.n { (format!("{:.3}", r.challenger_macro_f1)) }
                            td.n { (format!("{:.4}", r.promote_p)) }
                            td { (race_state(r.state)) } }
                    }
                }
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

fn race_state(state: f64) -> Markup {
    let (class, text) = match state as i64 {
        1 => ("ok", "shadow wins"),
        2 => ("bad", "shadow lost"),
        3 => ("warn", "expired"),
        _ => ("", "running"),
    };
    html! { span class=(format!("badge {class}")) { (text) } }
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
    fn the_promise_of_each_version_is_shown() {
        // The series the retrainer's label join exports (late_labels::metrics).
        let registry = Registry::new();
        for (name, v1, v2) in [
            ("triage_performance_accuracy", 0.3, 0.9),
            ("triage_performance_macro_f1", 0.3, 0.9),
            ("triage_performance_promised_macro_f1", 0.88, 0.88),
            ("triage_performance_below_card", 1.0, 0.0),
            ("triage_performance_new_class", 1.0, 0.0),
            ("triage_performance_new_class_share", 0.68, 0.0),
            ("triage_performance_auto_labelled", 120.0, 300.0),
            ("triage_performance_auto_precision", 0.9, 0.96),
            ("triage_performance_auto_promise_broken", 1.0, 0.0),
        ] {
            let g = GaugeVec::new(Opts::new(name, "h"), &["model_version"]).unwrap();
            registry.register(Box::new(g.clone())).unwrap();
            g.with_label_values(&["v1"]).set(v1);
            g.with_label_values(&["v2"]).set(v2);
        }
        let d = LateLabels::from_metrics(&registry.gather(), Some("v2".into()));
        assert!(d.versions[0].below_card && d.versions[0].new_class);
        assert_eq!(d.versions[1].promised_macro_f1, Some(0.88));
        let html = view(&d).into_string();
        assert!(html.contains("below its card"), "{html}");
        assert!(html.contains("new classes: 68% of labels"), "{html}");
        assert!(d.versions[0].promise_broken && !d.versions[1].promise_broken);
        assert!(
            html.contains("90.0% <span class=\"badge bad\"") && html.contains("promise broken"),
            "{html}"
        );
        assert!(html.contains(">96.0% <"), "{html}");
        assert!(
            html.contains(">kept<") && html.contains(">0.880<"),
            "{html}"
        );
    }

    #[test]
    fn live_races_are_shown_with_both_scores() {
        let registry = Registry::new();
        let vec = |name: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, "h"), labels).unwrap();
            registry.register(Box::new(g.clone())).unwrap();
            g
        };
        let race = ["champion", "challenger"];
        vec("triage_race_labelled_messages", &race)
            .with_label_values(&["v2", "v3"])
            .set(138.0);
        let f1 = vec("triage_race_macro_f1", &["champion", "challenger", "role"]);
        f1.with_label_values(&["v2", "v3", "champion"]).set(0.37);
        f1.with_label_values(&["v2", "v3", "challenger"]).set(0.535);
        vec("triage_race_p_value", &["champion", "challenger", "test"])
            .with_label_values(&["v2", "v3", "promote"])
            .set(0.0025);
        vec("triage_race_state", &race)
            .with_label_values(&["v2", "v3"])
            .set(1.0);
        let d = LateLabels::from_metrics(&registry.gather(), Some("v2".into()));
        assert_eq!(
            d.races,
            [Race {
                champion: "v2".into(),
                challenger: "v3".into(),
                labelled: 138.0,
                champion_macro_f1: 0.37,
                challenger_macro_f1: 0.535,
                promote_p: 0.0025,
                state: 1.0,
            }]
        );
        let html = view(&d).into_string();
        assert!(
            html.contains("Live races") && html.contains(">0.535<"),
            "{html}"
        );
        assert!(
            html.contains("shadow wins") && html.contains(">0.0025<"),
            "{html}"
        );
        // No race: no card.
        assert!(
            !view(&LateLabels::default())
                .into_string()
                .contains("Live races")
        );
    }

    #[test]
    fn nothing_joined_yet_is_said() {
        let html = view(&LateLabels::default()).into_string();
        assert!(html.contains("no-labels"));
    }
}
