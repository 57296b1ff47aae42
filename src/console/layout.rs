//! The page around every view: navigation, inline CSS (nothing is fetched), a
//! viewport for phones, and a footer with the time the server spent on the view.

use std::time::Duration;

use maud::{DOCTYPE, Markup, PreEscaped, html};

/// A console's views, in navigation order: (path, name).
pub type Nav = &'static [(&'static str, &'static str)];

/// `triage run`'s console.
pub const SERVICE: Nav = &[
    ("/", "Classify"),
    ("/models", "Models"),
    ("/drift", "Drift & quality"),
    ("/retraining", "Retraining"),
    ("/review", "Review"),
];

/// `triage retrainer`'s console.
pub const RETRAINER: Nav = &[
    ("/", "Late labels"),
    ("/models", "Models"),
    ("/retraining", "Retraining"),
];

const CSS: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111;background:#f6f7f9}
header{background:#111827;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;align-items:center}
header b{font-size:1.1rem;margin-right:.5rem}
header a{color:#d1d5db;text-decoration:none;padding:.2rem 0}
header a.on{color:#fff;border-bottom:2px solid #60a5fa}
main{max-width:1100px;margin:0 auto;padding:1rem}
h1{font-size:1.35rem;margin:.2rem 0 .8rem}
h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
h3{font-size:1rem;margin:.8rem 0 .3rem}
section.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:.8rem 1rem;margin:.8rem 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:.8rem}
.grid>section.card{margin:0}
.cols{display:flex;flex-wrap:wrap;gap:0 2rem}
.cols>div{flex:1 1 auto;min-width:0;max-width:100%;overflow-x:auto}
td.n,th.n,td.nowrap{white-space:nowrap}
svg.chart{width:100%;height:auto;max-width:560px;display:block}
svg.heat{max-width:520px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.9rem;margin:.3rem 0}
th,td{padding:.25rem .6rem;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
textarea{width:100%;min-height:8rem;font:inherit;padding:.5rem;border:1px solid #d1d5db;border-radius:6px}
button,select,input[type=submit]{font:inherit;padding:.4rem 1rem;border-radius:6px;border:1px solid #2563eb;background:#2563eb;color:#fff}
select{background:#fff;color:#111;border-color:#d1d5db}
.badge{display:inline-block;padding:0 .45rem;border-radius:9px;font-size:.8rem;background:#e5e7eb}
.ok{background:#dcfce7;color:#166534}.bad{background:#fee2e2;color:#991b1b}.warn{background:#fef3c7;color:#92400e}
.label{font-size:1.15rem;font-weight:700}
.muted{color:#6b7280;font-size:.85rem}
.notice{background:#fef3c7;border:1px solid #fcd34d;border-radius:6px;padding:.5rem .8rem}
.text{white-space:pre-wrap;word-break:break-word}
footer{max-width:1100px;margin:0 auto;padding:0 1rem 1.5rem;color:#6b7280;font-size:.8rem}
form.inline{display:flex;flex-wrap:wrap;gap:.4rem;align-items:center;margin:.3rem 0}
button.secondary{background:#fff;color:#2563eb}
p.message{max-height:11rem;overflow-y:auto;margin-top:0}
.choices{display:flex;flex-wrap:wrap;gap:.4rem;margin:.4rem 0}
button.choice .pct{opacity:.8;font-size:.85em}
.new-label{display:flex;flex-wrap:wrap;gap:.4rem}
.new-label input{flex:1 1 10rem;min-width:0}
input[type=text],input[type=password]{font:inherit;padding:.4rem .5rem;border:1px solid #d1d5db;border-radius:6px;max-width:100%}
section.narrow{max-width:26rem}
@media (max-width:600px){main{padding:.6rem}th,td{padding:.2rem .35rem}.grid{grid-template-columns:1fr}}
"#;

/// A whole page: `body` under the navigation `nav` with `active` highlighted;
/// `elapsed` is the server time spent on the view, printed in the footer.
pub fn page(nav: Nav, active: &str, title: &str, body: Markup, elapsed: Duration) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · triage" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    b { "triage" }
                    nav {
                        @for &(path, name) in nav {
                            a.on[path == active] href=(path) { (name) } " "
                        }
                    }
                }
                main { h1 { (title) } (body) }
                footer {
                    "triage " (env!("CARGO_PKG_VERSION")) " · view rendered in "
                    span #elapsed { (format!("{:.2}", elapsed.as_secs_f64() * 1000.0)) } " ms"
                }
            }
        }
    }
}

/// A number with three decimals, or a dash when absent.
pub fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.3}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_has_a_viewport_inline_css_and_marks_the_active_view() {
        let html = page(
            SERVICE,
            "/models",
            "Models <x>",
            html! { p { "body" } },
            Duration::from_micros(1500),
        )
        .into_string();
        assert!(html.contains(r#"name="viewport""#));
        assert!(html.contains("<style>") && !html.contains("<link"));
        assert!(html.contains(r#"<a class="on" href="/models">"#), "{html}");
        assert!(html.contains("Models &lt;x&gt;"));
        assert!(html.contains(">1.50</span> ms"));
        assert!(!html.contains("<script"));
    }
}
