//! Classify: a form (one message per line) and, after a submit, each line's label,
//! confidence and per-class probabilities as bars. A plain HTML form: GET with
//! `?text=` or POST form data, no JavaScript.

use maud::{Markup, html};

use super::svg;
use crate::inference::Labelled;

/// The non-blank lines of the form's text, trimmed: one message each.
pub fn messages(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// What a submit produced.
pub enum Outcome {
    /// Nothing submitted yet.
    Empty,
    /// Labels in input order, from `model_version`.
    Labelled {
        model_version: String,
        labelled: Vec<(String, Labelled)>,
    },
    /// A message for the person (too many lines, the worker stopped, ...).
    Refused(String),
}

pub fn view(text: &str, serving: Option<&str>, max_texts: usize, outcome: &Outcome) -> Markup {
    html! {
        section.card {
            form method="post" action="/" {
                label for="text" { "Messages, one per line (at most " (max_texts) ")" }
                textarea #text name="text" required placeholder="I was charged twice for my order" { (text) }
                p { button type="submit" #classify { "Classify" } " "
                    span.muted {
                        @if let Some(v) = serving { "Champion " b { (v) } } @else { "No champion in the registry" }
                    }
                }
            }
        }
        @match outcome {
            Outcome::Empty => {}
            Outcome::Refused(why) => { p.notice #refused { (why) } }
            Outcome::Labelled { model_version, labelled } => {
                p.muted { (labelled.len()) " message(s) classified by model " b #model-version { (model_version) } }
                div.grid {
                    @for (i, (message, l)) in labelled.iter().enumerate() {
                        section.card.result {
                            p.text.muted { (message) }
                            p { span.label id=(format!("label-{i}")) { (l.label) } " "
                                span.badge { "confidence " (format!("{:.1}%", l.confidence * 100.0)) } }
                            (svg::bars(&format!("Probabilities for message {}", i + 1), &by_probability(l)))
                        }
                    }
                }
            }
        }
    }
}

/// Classes by probability, highest first.
fn by_probability(l: &Labelled) -> Vec<(String, f64)> {
    let mut rows: Vec<(String, f64)> = l
        .probabilities
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(label: &str) -> Labelled {
        Labelled {
            label: label.into(),
            confidence: 0.7,
            probabilities: [("refund".to_string(), 0.7), ("<billing>".to_string(), 0.3)]
                .into_iter()
                .collect(),
            raw_confidence: 0.7,
            model_version: "v3".into(),
            shadow: None,
            route: crate::inference::Route::Auto,
        }
    }

    #[test]
    fn messages_are_the_trimmed_non_blank_lines() {
        assert_eq!(messages(" a \n\n\r\nb\r\n  "), vec!["a", "b"]);
        assert!(messages("  \n").is_empty());
    }

    #[test]
    fn each_message_gets_its_label_and_bars_highest_first_escaped() {
        let outcome = Outcome::Labelled {
            model_version: "v3".into(),
            labelled: vec![("<script>x</script>".into(), labelled("refund"))],
        };
        let html = view("<script>x</script>", Some("v3"), 8, &outcome).into_string();
        assert!(!html.contains("<script>"), "user text is escaped: {html}");
        assert!(html.contains(r#"<span class="label" id="label-0">refund</span>"#));
        assert!(html.contains("&lt;billing&gt;"));
        assert!(
            html.find(">refund</text>").unwrap() < html.find(">&lt;billing&gt;</text>").unwrap()
        );
        assert!(html.contains(r#"<b id="model-version">v3</b>"#));
    }

    #[test]
    fn a_refusal_is_shown_and_the_form_keeps_the_text() {
        let html = view("a\nb", None, 1, &Outcome::Refused("too many".into())).into_string();
        assert!(html.contains("too many") && html.contains(">a\nb</textarea>"));
        assert!(html.contains("No champion"));
    }
}
