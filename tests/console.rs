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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::broker::{Broker, free_port};
use common::kafka::{Msg, Names, http, produce, support_config, wait_http};
use common::*;
use serde_json::{Value, json};

/// Where the screenshots go: `<target>/console-screenshots`.
fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One request to chromedriver, which keeps the connection open after its answer:
/// the body is read by its Content-Length. Returns status and body.
fn driver_http(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).ok()?;
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A chromedriver with one headless Chromium session; both end on drop.
struct Browser {
    _driver: Killed,
    driver: String,
    session: String,
}

impl Browser {
    fn start(dir: &Path) -> Self {
        let port = free_port();
        let driver = format!("127.0.0.1:{port}");
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("chromedriver.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start chromedriver ({e}): bash scripts/install-debian.sh chromium:chromium chromium-driver:chromedriver"
                )
            });
        let driver_process = Killed(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while driver_http(&driver, "GET", "/status", "").is_none_or(|(s, _)| s != 200) {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {driver}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let (status, body) = driver_http(&driver, "POST", "/session", &capabilities.to_string())
            .expect("chromedriver answers");
        assert_eq!(status, 200, "no browser session: {body}");
        let reply: Value = serde_json::from_str(&body).unwrap();
        let session = reply["value"]["sessionId"].as_str().unwrap().to_string();
        let browser = Self {
            _driver: driver_process,
            driver,
            session,
        };
        // Finding an element waits for it (a submitted form's answer page loads
        // while the next command is already asking for its label).
        browser.command("POST", "/timeouts", json!({"implicit": 15_000}));
        browser
    }

    /// One WebDriver command on the session; returns its `value`.
    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("/session/{}{path}", self.session);
        let payload = if method == "GET" {
            String::new()
        } else {
            body.to_string()
        };
        let (status, text) = driver_http(&self.driver, method, &url, &payload)
            .unwrap_or_else(|| panic!("chromedriver did not answer {method} {path}"));
        let reply: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        assert_eq!(status, 200, "{method} {path}: {reply}");
        reply["value"].clone()
    }

    fn open(&self, url: &str) {
        self.command("POST", "/url", json!({ "url": url }));
    }

    fn element(&self, css: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    fn count(&self, css: &str) -> usize {
        let found = self.command(
            "POST",
            "/elements",
            json!({"using": "css selector", "value": css}),
        );
        found.as_array().map_or(0, Vec::len)
    }

    fn text(&self, css: &str) -> String {
        let id = self.element(css);
        let text = self.command("GET", &format!("/element/{id}/text"), Value::Null);
        text.as_str().unwrap_or_default().to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.command(
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        );
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.command("POST", &format!("/element/{id}/click"), json!({}));
    }

    fn script(&self, js: &str) -> Value {
        self.command("POST", "/execute/sync", json!({"script": js, "args": []}))
    }

    /// Emulates a phone's screen: `width` CSS pixels, touch, the viewport meta obeyed.
    fn phone(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": "Emulation.setDeviceMetricsOverride",
                   "params": {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": true}}),
        );
    }

    /// The whole page (beyond the viewport) as a PNG; returns its size in bytes.
    fn screenshot(&self, name: &str) -> usize {
        let shot = self.command(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": "Page.captureScreenshot",
                   "params": {"format": "png", "captureBeyondViewport": true}}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
        std::fs::write(screenshots().join(name), &png).unwrap();
        png.len()
    }

    /// Page wider than the window: a phone would scroll sideways.
    fn overflows(&self) -> bool {
        let widths =
            self.script("return [document.documentElement.scrollWidth, window.innerWidth]");
        widths[0].as_i64() > widths[1].as_i64()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = driver_http(
            &self.driver,
            "DELETE",
            &format!("/session/{}", self.session),
            "",
        );
    }
}

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
    browser.click("#classify");
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
