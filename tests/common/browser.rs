//! A headless Chromium driven through chromedriver's W3C WebDriver API (plain JSON
//! over HTTP), for the tests of the console's pages. Needs Debian's `chromium` and
//! `chromium-driver`: `bash scripts/install-debian.sh chromium:chromium
//! chromium-driver:chromedriver` (scripts/test.sh runs it).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use super::Killed;
use super::broker::free_port;

/// Where the screenshots go: `<target>/console-screenshots`.
pub fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One request to chromedriver, which keeps the connection open after its answer:
/// the body is read by its Content-Length. Returns status and body.
pub fn driver_http(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
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
pub struct Browser {
    _driver: Killed,
    driver: String,
    session: String,
}

impl Browser {
    pub fn start(dir: &Path) -> Self {
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
    pub fn command(&self, method: &str, path: &str, body: Value) -> Value {
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

    pub fn open(&self, url: &str) {
        self.command("POST", "/url", json!({ "url": url }));
    }

    pub fn element(&self, css: &str) -> String {
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

    pub fn count(&self, css: &str) -> usize {
        let found = self.command(
            "POST",
            "/elements",
            json!({"using": "css selector", "value": css}),
        );
        found.as_array().map_or(0, Vec::len)
    }

    pub fn text(&self, css: &str) -> String {
        let id = self.element(css);
        let text = self.command("GET", &format!("/element/{id}/text"), Value::Null);
        text.as_str().unwrap_or_default().to_string()
    }

    /// An attribute of the element `css` finds.
    pub fn attribute(&self, css: &str, name: &str) -> String {
        let id = self.element(css);
        let value = self.command(
            "GET",
            &format!("/element/{id}/attribute/{name}"),
            Value::Null,
        );
        value.as_str().unwrap_or_default().to_string()
    }

    /// The value of the browser's cookie `name` for the open page.
    pub fn cookie(&self, name: &str) -> String {
        let c = self.command("GET", &format!("/cookie/{name}"), Value::Null);
        c["value"].as_str().unwrap_or_default().to_string()
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.command(
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        );
    }

    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.command("POST", &format!("/element/{id}/click"), json!({}));
    }

    /// Clicks `css`, a link or a form's submit button, and waits until the page it
    /// leads to has loaded: a lookup right after a bare click can find an element of
    /// the page being left (one both pages have), which then goes stale.
    pub fn follow(&self, css: &str) {
        const MARK: &str = "__triage_page_left";
        self.script(&format!("window.{MARK} = true; return null;"));
        self.click(css);
        let url = format!("/session/{}/execute/sync", self.session);
        let check = json!({
            "script": format!("return window.{MARK} === undefined && document.readyState === 'complete';"),
            "args": [],
        })
        .to_string();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // While the page changes the script may fail (no document to run in): ask again.
            let loaded = driver_http(&self.driver, "POST", &url, &check)
                .filter(|(status, _)| *status == 200)
                .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                .is_some_and(|reply| reply["value"] == Value::Bool(true));
            if loaded {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "clicking {css} led to no new page within 15 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn script(&self, js: &str) -> Value {
        self.command("POST", "/execute/sync", json!({"script": js, "args": []}))
    }

    /// Emulates a phone's screen: `width` CSS pixels, touch, the viewport meta obeyed.
    pub fn phone(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": "Emulation.setDeviceMetricsOverride",
                   "params": {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": true}}),
        );
    }

    /// The whole page (beyond the viewport) as a PNG; returns its size in bytes.
    pub fn screenshot(&self, name: &str) -> usize {
        self.capture(name, true)
    }

    /// What the window shows, as a PNG (a long page's first screen); its size in bytes.
    pub fn screenshot_viewport(&self, name: &str) -> usize {
        self.capture(name, false)
    }

    fn capture(&self, name: &str, whole_page: bool) -> usize {
        let shot = self.command(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": "Page.captureScreenshot",
                   "params": {"format": "png", "captureBeyondViewport": whole_page}}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
        std::fs::write(screenshots().join(name), &png).unwrap();
        png.len()
    }

    /// Page wider than the window: a phone would scroll sideways.
    pub fn overflows(&self) -> bool {
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
