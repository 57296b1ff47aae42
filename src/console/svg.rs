//! Charts drawn on the server as inline SVG (maud escapes every label): bars of
//! probabilities, a detector's recent values against its threshold, paired bars of
//! two shares, and a confusion-matrix heat map. Each scales to its container.

use maud::{Markup, html};

const BLUE: &str = "#2563eb";
const GREY: &str = "#9ca3af";
const RED: &str = "#dc2626";

/// A label cut to `max` characters, so long class names do not run over the bars.
fn short(label: &str, max: usize) -> String {
    if label.chars().count() <= max {
        label.to_string()
    } else {
        label.chars().take(max - 1).collect::<String>() + "…"
    }
}

fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// Horizontal bars, one per (label, share in 0..=1), in the given order.
pub fn bars(title: &str, rows: &[(String, f64)]) -> Markup {
    let height = rows.len() * 18 + 4;
    html! {
        svg.chart viewBox=(format!("0 0 360 {height}")) role="img" aria-label=(title) {
            title { (title) }
            @for (i, (label, share)) in rows.iter().enumerate() {
                @let y = i * 18 + 2;
                text x="118" y=(y + 12) text-anchor="end" font-size="11" { (short(label, 20)) }
                rect x="122" y=(y) width=(format!("{:.1}", 190.0 * share.clamp(0.0, 1.0))) height="14" fill=(BLUE) rx="2" {}
                text x=(format!("{:.1}", 126.0 + 190.0 * share.clamp(0.0, 1.0))) y=(y + 12) font-size="11" { (pct(*share)) }
            }
        }
    }
}

/// Two shares per label (e.g. reference and current class mix) as paired bars.
pub fn paired_bars(title: &str, names: (&str, &str), rows: &[(String, f64, f64)]) -> Markup {
    let height = rows.len() * 26 + 22;
    html! {
        svg.chart viewBox=(format!("0 0 360 {height}")) role="img" aria-label=(title) {
            title { (title) }
            rect x="122" y="3" width="10" height="10" fill=(GREY) {}
            text x="136" y="12" font-size="11" { (names.0) }
            rect x="222" y="3" width="10" height="10" fill=(BLUE) {}
            text x="236" y="12" font-size="11" { (names.1) }
            @for (i, (label, a, b)) in rows.iter().enumerate() {
                @let y = i * 26 + 20;
                text x="118" y=(y + 15) text-anchor="end" font-size="11" { (short(label, 20)) }
                rect x="122" y=(y) width=(format!("{:.1}", 190.0 * a.clamp(0.0, 1.0))) height="10" fill=(GREY) {}
                rect x="122" y=(y + 11) width=(format!("{:.1}", 190.0 * b.clamp(0.0, 1.0))) height="10" fill=(BLUE) {}
                text x=(format!("{:.1}", 126.0 + 190.0 * a.max(*b).clamp(0.0, 1.0))) y=(y + 15) font-size="10" {
                    (pct(*a)) " → " (pct(*b))
                }
            }
        }
    }
}

/// How a detector's values are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    Linear,
    /// log10, for p-values; values under `floor` are drawn at it.
    Log {
        floor: f64,
    },
}

/// One detector's recent values (oldest first; `None`: not computed for that
/// window), its threshold as a dashed line, and the windows where it fired in red.
pub struct Series<'a> {
    pub title: &'a str,
    pub values: &'a [Option<f64>],
    pub fired: &'a [bool],
    pub threshold: Option<f64>,
    pub scale: Scale,
}

pub fn line_chart(s: &Series<'_>) -> Markup {
    let (left, right, top, bottom) = (34.0, 296.0, 8.0, 78.0);
    let map = |v: f64| match s.scale {
        Scale::Linear => v,
        Scale::Log { floor } => v.max(floor).log10(),
    };
    let mapped: Vec<Option<f64>> = s.values.iter().map(|v| v.map(map)).collect();
    let known = mapped.iter().flatten().copied().chain(s.threshold.map(map));
    let (mut lo, mut hi) = known.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.08;
    let (lo, hi) = (lo - pad, hi + pad);
    let n = s.values.len().max(2) as f64;
    let x = |i: usize| left + (right - left) * i as f64 / (n - 1.0);
    let y = |v: f64| bottom - (bottom - top) * (v - lo) / (hi - lo);
    let axis = |v: f64| match s.scale {
        Scale::Linear => format!("{v:.3}"),
        Scale::Log { .. } => format!("{:.0e}", 10f64.powf(v)),
    };
    let points: Vec<String> = mapped
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x(i), y(v))))
        .collect();
    html! {
        svg.chart viewBox="0 0 300 92" role="img" aria-label=(s.title) {
            title { (s.title) }
            line x1=(left) y1=(bottom) x2=(right) y2=(bottom) stroke=(GREY) stroke-width="0.5" {}
            text x=(left - 3.0) y=(top + 4.0) text-anchor="end" font-size="8" { (axis(hi)) }
            text x=(left - 3.0) y=(bottom) text-anchor="end" font-size="8" { (axis(lo)) }
            text x=(left) y="90" font-size="8" fill="#6b7280" { (s.values.len()) " windows, oldest left" }
            @if let Some(t) = s.threshold {
                line x1=(left) y1=(format!("{:.1}", y(map(t)))) x2=(right) y2=(format!("{:.1}", y(map(t))))
                    stroke=(RED) stroke-width="1" stroke-dasharray="4 3" {}
                text x=(right) y=(format!("{:.1}", y(map(t)) - 2.0)) text-anchor="end" font-size="8" fill=(RED) {
                    "threshold " (axis(map(t)))
                }
            }
            polyline points=(points.join(" ")) fill="none" stroke=(BLUE) stroke-width="1.5" {}
            @for (i, v) in mapped.iter().enumerate() {
                @if let Some(v) = v {
                    @let fired = s.fired.get(i).copied().unwrap_or(false);
                    circle cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y(*v))) r=(if fired { "2.5" } else { "1.5" })
                        fill=(if fired { RED } else { BLUE }) {}
                }
            }
        }
    }
}

/// `confusion[truth][predicted]` as a heat map: each cell shaded by its share of
/// the truth row, the count written in it; rows and columns numbered like `labels`.
pub fn heat_map(title: &str, labels: &[String], confusion: &[Vec<u64>]) -> Markup {
    let n = labels.len();
    let cell = 24usize;
    let (left, top) = (130usize, 30usize);
    let size = (left + n * cell + 4, top + n * cell + 4);
    html! {
        svg.chart.heat viewBox=(format!("0 0 {} {}", size.0, size.1)) role="img" aria-label=(title) {
            title { (title) }
            text x=(left) y="10" font-size="9" fill="#6b7280" { "predicted →  (rows: truth)" }
            @for j in 0..n {
                text x=(left + j * cell + cell / 2) y=(top - 4) text-anchor="middle" font-size="9" { (j + 1) }
            }
            @for (i, row) in confusion.iter().enumerate().take(n) {
                @let total = row.iter().sum::<u64>().max(1) as f64;
                text x=(left - 4) y=(top + i * cell + 15) text-anchor="end" font-size="10" {
                    (i + 1) " " (short(&labels[i], 18))
                }
                @for (j, &count) in row.iter().enumerate().take(n) {
                    @let share = count as f64 / total;
                    rect x=(left + j * cell) y=(top + i * cell) width=(cell - 1) height=(cell - 1)
                        fill=(if i == j { BLUE } else { RED }) fill-opacity=(format!("{:.2}", 0.06 + 0.9 * share)) {
                        title { (labels[i]) " → " (labels.get(j).map_or("?", String::as_str)) ": " (count) }
                    }
                    @if count > 0 {
                        text x=(left + j * cell + cell / 2) y=(top + i * cell + 15) text-anchor="middle" font-size="9"
                            fill=(if share > 0.5 { "#fff" } else { "#111" }) { (count) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_escape_labels_and_scale_to_the_share() {
        let svg = bars("p", &[("<b>&".into(), 0.5), ("x".into(), 1.0)]).into_string();
        assert!(svg.contains("&lt;b&gt;&amp;"), "{svg}");
        assert!(!svg.contains("<b>"));
        assert!(svg.contains(r#"width="95.0""#) && svg.contains(r#"width="190.0""#));
        assert!(svg.contains("50.0%"));
    }

    #[test]
    fn line_chart_draws_the_threshold_and_marks_fired_windows() {
        let values = [Some(0.1), None, Some(0.4)];
        let svg = line_chart(&Series {
            title: "psi",
            values: &values,
            fired: &[false, false, true],
            threshold: Some(0.25),
            scale: Scale::Linear,
        })
        .into_string();
        assert!(svg.contains("threshold 0.250"), "{svg}");
        assert_eq!(
            svg.matches("<circle").count(),
            2,
            "no dot for a missing value"
        );
        assert_eq!(
            svg.matches(RED).count(),
            3,
            "threshold line, its text, one fired dot"
        );
    }

    #[test]
    fn log_scale_and_empty_series_do_not_break_the_chart() {
        let svg = line_chart(&Series {
            title: "p",
            values: &[Some(0.0), Some(0.5)],
            fired: &[true, false],
            threshold: Some(0.005),
            scale: Scale::Log { floor: 1e-3 },
        })
        .into_string();
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        let empty = line_chart(&Series {
            title: "none",
            values: &[],
            fired: &[],
            threshold: None,
            scale: Scale::Linear,
        })
        .into_string();
        assert!(!empty.contains("NaN"), "{empty}");
    }

    #[test]
    fn heat_map_has_a_cell_per_pair_and_writes_non_zero_counts() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let svg = heat_map("cm", &labels, &[vec![3, 1], vec![0, 4]]).into_string();
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains(">3</text>") && svg.contains(">4</text>"));
        assert!(!svg.contains(">0</text>"));
    }
}
