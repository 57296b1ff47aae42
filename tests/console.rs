//! The console in a real browser: a live `triage run` (tansu broker, the real
//! embedder, a trained support-intent champion, some traffic and one retraining
//! run) driven by headless Chromium through chromedriver's W3C WebDriver API
//! (plain JSON over HTTP). Types messages into the Classify form, reads the labels
//! back from the page, opens every view at desktop and phone width, and saves the
//! screenshots under `<target>/console-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`:
//! `bash scripts/install-debian.sh chromium:chromium chromium-driver:chromedriver`
//! (scripts/test.sh runs it).

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::broker::{Broker, free_port};
use common::browser::{Browser, screenshots};
use common::kafka::{Msg, Names, http, produce, support_config, wait_http};
use common::*;
use serde_json::{Value, json};

/// A live service with a trained champion, traffic it has classified (so drift
/// has windows), one retraining run recorded, and the retrainer with the traffic's
/// labels joined.
struct Live {
    _service: Killed,
    _retrainer: Killed,
    _broker: Broker,
    addr: String,
    retrainer_addr: String,
    dir: PathBuf,
}

fn live_service() -> Live {
    let dir = scratch("console");
    // Two folds instead of five: the views need a model, not the best one.
    let fast = [("TRIAGE__TRAINING__CV_FOLDS", "2")];
    train_support(&dir, &fast);
    let broker = Broker::start(&dir);
    let names = Names::new("console");
    let config = dir.join("triage.toml");
    let stream = "[stream]\nmax_wait_ms = 200\nmax_messages = 64";
    std::fs::write(
        &config,
        support_config(&broker.address(), &names, "", stream),
    )
    .unwrap();
    let with_config = || {
        let mut cmd = triage(&dir);
        cmd.arg("--config").arg(&config);
        cmd
    };
    let (out, stdout, stderr) = run(with_config().args(["topics", "create"]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let addr = format!("127.0.0.1:{}", free_port());
    let log = dir.join("service.log");
    let service = Killed(
        with_config()
            .env("TRIAGE__HTTP__LISTEN", &addr)
            .env("TRIAGE__LOG__LEVEL", "info,triage::console=debug")
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let service_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_http(&addr, "/readyz", Duration::from_secs(90), |s, _| s == 200),
        "service not ready:\n{}",
        service_log()
    );
    // Unseen support questions (the champion trained on every 5th row), labelled.
    let traffic: Vec<Msg> = support_rows()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 5 == 2)
        .take(320)
        .map(|(i, (class, question, _))| {
            let id = format!("c-{i}");
            let payload = json!({"id": id, "question": question, "class_name": class});
            (
                Some(id.into_bytes()),
                Some(payload.to_string().into_bytes()),
            )
        })
        .collect();
    produce(&broker.address(), &names.input, &traffic);
    assert!(
        wait_http(&addr, "/metrics", Duration::from_secs(120), |_, body| {
            body.lines()
                .filter(|l| l.starts_with("triage_predictions_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
                >= traffic.len() as f64
        }),
        "the traffic was not classified:\n{}",
        service_log()
    );
    // One retraining run on that traffic, for the Retraining view and a second version.
    let (out, stdout, stderr) = run(with_config().envs(fast).args(["retrain", "--since", "1h"]));
    assert_no_panic(&stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "retrain: {stdout}\n{stderr}"
    );
    // The retrainer, joining the predictions with labels that arrive later.
    let labels: Vec<Msg> = traffic
        .iter()
        .filter_map(|(key, payload)| {
            let message: Value = serde_json::from_slice(payload.as_ref()?).ok()?;
            let label = json!({"id": message["id"], "label": message["class_name"]});
            Some((key.clone(), Some(label.to_string().into_bytes())))
        })
        .collect();
    produce(&broker.address(), "labels", &labels);
    let retrainer_addr = format!("127.0.0.1:{}", free_port());
    let retrainer_log = dir.join("retrainer.log");
    let retrainer = Killed(
        with_config()
            .env("TRIAGE__RETRAIN__LISTEN", &retrainer_addr)
            .env(
                "TRIAGE__RETRAIN__WEBHOOK_TOKEN",
                "console-test-token-0123456789abcdef",
            )
            .arg("retrainer")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&retrainer_log).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_http(&retrainer_addr, "/", Duration::from_secs(60), |s, body| s
            == 200
            && body.contains("labelled predictions")),
        "the retrainer's console shows no late-label accuracy:\n{}",
        std::fs::read_to_string(&retrainer_log).unwrap_or_default()
    );
    Live {
        _service: service,
        _retrainer: retrainer,
        _broker: broker,
        addr,
        retrainer_addr,
        dir,
    }
}

/// A view's HTML size, the part of it that is SVG, and the server's time for it
/// (the footer's figure), median of `n` requests.
fn measure(addr: &str, path: &str, n: usize) -> (usize, usize, f64) {
    let mut times = Vec::new();
    let mut sizes = (0, 0);
    for _ in 0..n {
        let (status, body) = http(addr, "GET", path, b"").unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        let svg: usize = body
            .split("<svg")
            .skip(1)
            .map(|s| "<svg".len() + s.find("</svg>").unwrap() + "</svg>".len())
            .sum();
        sizes = (body.len(), svg);
        let ms = body
            .split("id=\"elapsed\">")
            .nth(1)
            .and_then(|s| s.split('<').next())
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{path}: no render time in the footer"));
        times.push(ms);
    }
    times.sort_by(f64::total_cmp);
    (sizes.0, sizes.1, times[n / 2])
}

#[test]
fn console_classifies_in_a_browser_and_shows_models_drift_and_retraining() {
    let live = live_service();
    let base = format!("http://{}", live.addr);
    let browser = Browser::start(&live.dir);

    // Classify: two messages at once; the page's labels are the API's labels.
    let messages = [
        "I was charged twice for the same order, please refund me",
        "where is my package? it has not arrived yet",
    ];
    browser.open(&format!("{base}/"));
    browser.type_into("#text", &messages.join("\n"));
    browser.follow("#classify");
    let page_labels: Vec<String> = (0..2)
        .map(|i| browser.text(&format!("#label-{i}")))
        .collect();
    let api = json!({ "texts": messages }).to_string();
    let (status, body) = http(&live.addr, "POST", "/v1/classify", api.as_bytes()).unwrap();
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    let api_labels: Vec<String> = api["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(page_labels, api_labels, "the form and the API agree");
    assert_eq!(
        browser.text("#model-version"),
        api["model_version"].as_str().unwrap()
    );
    assert_eq!(browser.count(".result svg"), 2, "a bar chart per message");
    eprintln!("console: classified {messages:?} as {page_labels:?}");

    let views = [
        (
            "classify",
            "/?text=I%20was%20charged%20twice%0Awhere%20is%20my%20package",
            None,
        ),
        ("models", "/models", Some("#versions")),
        ("compare", "/models?a=v1&b=v2", Some("#comparison")),
        ("drift", "/drift", Some("#detectors")),
        ("retraining", "/retraining", Some(".run")),
    ];
    for (name, path, marker) in views {
        if name != "classify" {
            browser.open(&format!("{base}{path}"));
        }
        if let Some(marker) = marker {
            assert_eq!(browser.count(marker), 1, "{path} shows {marker}");
        }
        let bytes = browser.screenshot(&format!("{name}.png"));
        eprintln!("console: screenshot {name}.png ({bytes} bytes)");
    }
    assert_eq!(browser.count(".run .verdict"), 1, "one retraining run");
    browser.open(&format!("{base}/models"));
    assert!(
        browser.text("#versions").contains("champion"),
        "the champion is marked"
    );
    assert_eq!(
        browser.count("#card svg"),
        1,
        "the champion's confusion matrix"
    );
    browser.open(&format!("{base}/drift"));
    assert_eq!(browser.count("#detectors svg"), 4, "a chart per detector");
    assert!(browser.text("#late-labels").contains("accuracy"));

    // The retrainer's console: accuracy on the late labels, per model version.
    browser.open(&format!("http://{}/", live.retrainer_addr));
    assert!(
        browser.text("#late-labels").contains("v1"),
        "v1's late-label scores"
    );
    browser.screenshot("retrainer.png");

    // Phone width: every view fits without sideways scrolling.
    browser.phone(390, 844);
    for (name, path, _) in views {
        browser.open(&format!("{base}{path}"));
        assert!(!browser.overflows(), "{path} is wider than a phone");
        browser.screenshot(&format!("{name}-phone.png"));
    }

    // Sizes and server time per view; the form's result page too.
    let classify = format!(
        "/?text={}",
        "refund%20my%20order%0Awhere%20is%20my%20parcel"
    );
    for path in [
        "/",
        classify.as_str(),
        "/models",
        "/models?a=v1&b=v2",
        "/drift",
        "/retraining",
    ] {
        let started = Instant::now();
        let (html, svg, server_ms) = measure(&live.addr, path, 9);
        let wall = started.elapsed().as_secs_f64() * 1000.0 / 9.0;
        eprintln!(
            "console: {path}: {html} bytes of HTML, {svg} of them SVG; server {server_ms:.2} ms (median of 9), {wall:.1} ms per request end to end"
        );
        assert!(server_ms < 250.0, "{path} took {server_ms} ms");
    }
    let (_, metrics) = http(&live.addr, "GET", "/metrics", b"").unwrap();
    assert!(
        metrics.contains(r#"triage_http_requests_total{path="/drift",status="200"}"#),
        "console requests are counted"
    );
    eprintln!("console: screenshots in {}", screenshots().display());
}
