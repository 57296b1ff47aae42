//! Models: the registry's versions and which is champion, one version's card in
//! full (data, held-out metrics per class, confusion heat map, gates), the
//! promotion history, and two versions' held-out metrics side by side.

use maud::{Markup, html};

use super::layout::num;
use super::svg;
use crate::model::comparison::{Comparison, Delta};
use crate::registry::card::ModelCard;
use crate::registry::history::AliasChange;

/// Everything the view shows, read from the registry by the handler.
#[derive(Default)]
pub struct ModelsData {
    /// Newest first.
    pub cards: Vec<ModelCard>,
    pub champion: Option<String>,
    /// Newest first.
    pub history: Vec<AliasChange>,
    /// The card shown in full: `?v=` or the champion.
    pub selected: Option<ModelCard>,
    /// `?a=&b=`: the two versions and their comparison.
    pub compare: Option<(String, String, Comparison)>,
    /// What could not be read or found, for the person to see.
    pub problems: Vec<String>,
}

pub fn view(d: &ModelsData) -> Markup {
    html! {
        @for p in &d.problems { p.notice { (p) } }
        section.card.scroll {
            h2 { "Versions" }
            @if d.cards.is_empty() { p { "The registry holds no model yet: train one with " code { "triage train" } "." } }
            @else {
                table #versions {
                    tr { th { "version" } th { "created" } th.n { "rows" } th.n { "accuracy" } th.n { "macro-F1" } th { "gates" } th {} }
                    @for c in &d.cards {
                        tr {
                            td { a href=(format!("/models?v={}", c.version)) { (c.version) } " "
                                @if d.champion.as_deref() == Some(c.version.as_str()) { span.badge.ok { "champion" } } }
                            td { (c.created_at) }
                            td.n { (c.data.rows_read) }
                            td.n { (format!("{:.3}", c.metrics.accuracy)) }
                            td.n { (format!("{:.3}", c.metrics.macro_f1)) }
                            td { @if c.passed_gates { span.badge.ok { "passed" } } @else { span.badge.bad { "failed" } } }
                            td { @if let Some(champ) = &d.champion { @if champ != &c.version {
                                a href=(format!("/models?a={champ}&b={}", c.version)) { "compare with champion" } } } }
                        }
                    }
                }
            }
        }
        @if let Some(card) = &d.selected { (card_view(card, d.champion.as_deref())) }
        (compare_form(d))
        @if let Some((a, b, c)) = &d.compare { (comparison(a, b, c)) }
        section.card.scroll {
            h2 { "Promotion history" }
            @if d.history.is_empty() { p.muted { "No promotion or rollback recorded yet." } }
            @else {
                table #history {
                    tr { th { "when" } th { "action" } th { "from" } th { "to" } th { "by" } th { "why" } }
                    @for h in &d.history {
                        tr { td { (h.at) } td { (h.action.as_str()) } td { (h.from.as_deref().unwrap_or("–")) }
                            td { (h.to.as_deref().unwrap_or("–")) } td { (h.by.as_str()) } td { (h.reason) } }
                    }
                }
            }
        }
    }
}

fn card_view(c: &ModelCard, champion: Option<&str>) -> Markup {
    let m = &c.metrics;
    html! {
        section.card #card {
            h2 { "Model " (c.version) " "
                @if champion == Some(c.version.as_str()) { span.badge.ok { "champion" } } }
            p.muted { "Created " (c.created_at) " by triage " (c.triage_version)
                @if let Some(p) = &c.parent_version { " · parent " (p) }
                " · embedding " (c.embedding.model_id) " (" (c.embedding.dimension) " dimensions)" }
            div.cols {
                div {
                    h3 { "Data" }
                    table {
                        tr { th { "file" } td.text { (c.data.path) } }
                        tr { th { "sha256" } td { code { (c.data.sha256.get(..12).unwrap_or(&c.data.sha256)) "…" } } }
                        tr { th { "rows read" } td.n { (c.data.rows_read) } }
                        tr { th { "malformed" } td.n { (c.data.rows_malformed) } }
                        tr { th { "train / held-out" } td.n { (c.data.train_rows) " / " (c.data.test_rows) } }
                        tr { th { "duplicates removed" } td.n { (c.data.checks.duplicates_removed) } }
                    }
                    h3 { "Held-out metrics" }
                    table {
                        tr { th { "accuracy" } td.n #accuracy { (format!("{:.3}", m.accuracy)) } }
                        tr { th { "macro-F1" } td.n #macro-f1 { (format!("{:.3}", m.macro_f1)) } }
                        tr { th { "macro precision / recall" } td.n { (format!("{:.3} / {:.3}", m.macro_precision, m.macro_recall)) } }
                        tr { th { "train accuracy / macro-F1" } td.n { (format!("{:.3} / {:.3}", c.train_accuracy, c.train_macro_f1)) } }
                    }
                    (routing_view(c))
                    h3 { "Gates" }
                    table #gates {
                        tr { th { "gate" } th.n { "threshold" } th.n { "value" } th {} }
                        @for g in &c.gates {
                            tr { td { code { (g.gate) } } td.n { (format!("{:.3}", g.threshold)) } td.n { (format!("{:.3}", g.value)) }
                                td { @if g.passed { span.badge.ok { "pass" } } @else { span.badge.bad { "fail" } } } }
                        }
                    }
                }
                div {
                    h3 { "Per class (held-out)" }
                    table #per-class {
                        tr { th { "#" } th { "class" } th.n { "precision" } th.n { "recall" } th.n { "F1" } th.n { "rows" } }
                        @for (i, k) in m.per_class.iter().enumerate() {
                            tr { td { (i + 1) } td { (k.label) } td.n { (format!("{:.3}", k.precision)) } td.n { (format!("{:.3}", k.recall)) }
                                td.n { (format!("{:.3}", k.f1)) } td.n { (k.support) } }
                        }
                    }
                }
            }
            h3 { "Confusion matrix (held-out)" }
            div.scroll { (svg::heat_map(&format!("Confusion matrix of {}", c.version), &c.labels, &m.confusion)) }
        }
    }
}

/// The review promise the card makes, and its calibration: what share of labels
/// the model applies by itself, how often they are right, measured where.
fn routing_view(c: &ModelCard) -> Markup {
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    html! {
        @if let Some(r) = &c.routing {
            h3 { "Routing (review promise)" }
            table #routing {
                tr { th { "target precision" } td.n { (pct(r.target_precision)) } }
                tr { th { "confidence threshold" } td.n #threshold {
                    @if r.global.threshold > 1.0 { "none (everything to review)" }
                    @else { (format!("{:.3}", r.global.threshold)) } } }
                tr { th { "automatic, out-of-fold" } td.n { (pct(r.global.coverage)) " at " (pct(r.global.precision)) " right" } }
                @if let Some(h) = &r.held_out {
                    tr { th { "automatic, held-out" } td.n #held-out-routing { (pct(h.coverage)) " at " (pct(h.precision)) " right" } }
                }
            }
            p.muted { "Labels at or above the threshold are applied by themselves (route auto); the rest go to a person (route review)." }
        }
        @if let Some(k) = &c.calibration {
            h3 { @if k.served { "Calibration (served: temperature " (format!("{:.2}", k.temperature)) ")" } @else { "Calibration (measured, not served)" } }
            table #calibration {
                tr { th { "expected calibration error, out-of-fold" } td.n { (format!("{:.3}", k.ece_before)) } }
                tr { th { "after temperature " (format!("{:.2}", k.temperature)) } td.n { (format!("{:.3}", k.ece_temperature)) } }
                tr { th { "after isotonic" } td.n { (format!("{:.3}", k.ece_isotonic)) } }
                @if let Some(h) = &k.held_out {
                    tr { th { "held-out (" (h.rows) " rows), before / after" } td.n { (format!("{:.3} / {:.3}", h.ece_before, h.ece_after)) } }
                }
            }
            @if !k.reason.is_empty() { p.muted #calibration-reason { (k.reason) } }
        }
    }
}

fn compare_form(d: &ModelsData) -> Markup {
    // Preselected: the pair compared, else the champion against the newest other.
    let champion = d.champion.as_deref().unwrap_or_default();
    let other = d
        .cards
        .iter()
        .map(|c| c.version.as_str())
        .find(|v| *v != champion);
    let (a, b) = d
        .compare
        .as_ref()
        .map(|(a, b, _)| (a.as_str(), b.as_str()))
        .unwrap_or((champion, other.unwrap_or_default()));
    html! {
        section.card {
            h2 { "Compare two versions" }
            form method="get" action="/models" {
                select name="a" aria-label="version A" {
                    @for c in &d.cards { option value=(c.version) selected[c.version == a] { (c.version) } }
                }
                " against "
                select name="b" aria-label="version B" {
                    @for c in &d.cards { option value=(c.version) selected[c.version == b] { (c.version) } }
                }
                " " input type="submit" value="Compare";
            }
        }
    }
}

fn signed(d: &Delta) -> Markup {
    html! {
        @match d.difference {
            Some(x) if x > 0.0005 => span.badge.ok { (format!("{x:+.3}")) },
            Some(x) if x < -0.0005 => span.badge.bad { (format!("{x:+.3}")) },
            Some(x) => span.badge { (format!("{x:+.3}")) },
            None => "–",
        }
    }
}

fn comparison(a: &str, b: &str, c: &Comparison) -> Markup {
    html! {
        section.card.scroll #comparison {
            h2 { (a) " and " (b) " side by side" }
            p.muted { "Each card's own held-out split (" (c.rows.0) " and " (c.rows.1)
                " rows): " code { "triage models compare" } " scores both on one file." }
            table {
                tr { th {} th.n { (a) } th.n { (b) } th.n { (b) " − " (a) } }
                @for (name, d) in [("accuracy", &c.accuracy), ("macro-F1", &c.macro_f1),
                        ("macro precision", &c.macro_precision), ("macro recall", &c.macro_recall)] {
                    tr { th { (name) } td.n { (num(d.a)) } td.n { (num(d.b)) } td.n { (signed(d)) } }
                }
            }
            h3 { "F1 per class" }
            table {
                tr { th { "class" } th.n { (a) } th.n { (b) } th.n { "difference" } }
                @for k in &c.per_class {
                    tr { td { (k.label) } td.n { (num(k.f1.a)) } td.n { (num(k.f1.b)) } td.n { (signed(&k.f1)) } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::comparison::compare;
    use crate::registry::card::fixture::card;

    fn versioned(v: &str) -> ModelCard {
        let mut c = card(&["billing", "<refund>"], 4);
        c.version = v.into();
        c
    }

    #[test]
    fn lists_versions_marks_the_champion_and_shows_its_card() {
        let d = ModelsData {
            cards: vec![versioned("v2"), versioned("v1")],
            champion: Some("v1".into()),
            selected: Some(versioned("v1")),
            ..ModelsData::default()
        };
        let html = view(&d).into_string();
        assert_eq!(html.matches("champion</span>").count(), 2, "list and card");
        assert!(html.contains(r#"href="/models?a=v1&amp;b=v2""#), "{html}");
        assert!(html.contains("&lt;refund&gt;") && !html.contains("<refund>"));
        assert!(html.contains("Confusion matrix of v1"));
        assert!(
            !html.contains("Routing (review promise)"),
            "no routing in this card"
        );
        assert!(html.contains("No promotion"));
        assert!(html.contains(r#"<option value="v1" selected>v1</option></select> against"#));
        assert!(html.contains(r#"<option value="v2" selected>v2</option><option value="v1">"#));
    }

    #[test]
    fn comparison_shows_both_and_the_signed_difference() {
        let (a, mut b) = (versioned("v1"), versioned("v2"));
        b.metrics.macro_f1 = a.metrics.macro_f1 - 0.25;
        let d = ModelsData {
            cards: vec![b.clone(), a.clone()],
            compare: Some(("v1".into(), "v2".into(), compare(&a.metrics, &b.metrics))),
            ..ModelsData::default()
        };
        let html = view(&d).into_string();
        assert!(
            html.contains(r#"<span class="badge bad">-0.250</span>"#),
            "{html}"
        );
        assert!(html.contains(r#"<option value="v2" selected>v2</option>"#));
    }

    #[test]
    fn an_empty_registry_says_how_to_fill_it() {
        let html = view(&ModelsData::default()).into_string();
        assert!(html.contains("triage train"));
    }

    #[test]
    fn the_card_shows_its_review_promise_measured_out_of_fold_and_held_out() {
        use crate::model::routing::{Routing, Threshold};
        let mut c = versioned("v3");
        let t = |threshold, coverage, precision| Threshold {
            threshold,
            coverage,
            precision,
        };
        c.routing = Some(Routing {
            target_precision: 0.95,
            rows: 4000,
            global: t(0.7496, 0.64025, 0.95),
            per_class: vec![],
            per_class_coverage: 0.692,
            per_class_precision: 0.9505,
            held_out: Some(t(0.7496, 0.649, 0.9414)),
        });
        let d = ModelsData {
            cards: vec![c.clone()],
            selected: Some(c),
            ..ModelsData::default()
        };
        let html = view(&d).into_string();
        assert!(html.contains("Routing (review promise)"), "{html}");
        assert!(html.contains("0.750"), "the threshold");
        assert!(html.contains("64.9% at 94.1% right"), "held-out: {html}");
    }
}
