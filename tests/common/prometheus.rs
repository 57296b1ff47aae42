//! A Prometheus server for one test (the Debian package's binary), on loopback, with
//! the repository's scrape config and alert rules pointed at the service under test.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::broker::free_port;
use super::daemon::{Daemon, answers_200};
use super::kafka::http;

pub struct Prometheus {
    pub addr: String,
    daemon: Daemon,
}

/// Form-encodes a PromQL expression for a query string.
fn encode(expr: &str) -> String {
    expr.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second with deploy/prometheus's
    /// config and rules; `rules` may rewrite the rules file (e.g. shorter `for`).
    pub fn start(dir: &Path, target: &str, rules: impl Fn(String) -> String) -> Self {
        Self::start_with(dir, target, rules, |config| config)
    }

    /// Like [`Prometheus::start`], with `config` applied to prometheus.yml too
    /// (e.g. the Alertmanager's address, another scrape target).
    pub fn start_with(
        dir: &Path,
        target: &str,
        rules: impl Fn(String) -> String,
        config: impl Fn(String) -> String,
    ) -> Self {
        let bin = std::env::var("TRIAGE_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let deploy = super::repo().join("deploy/prometheus");
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(dir.join("rules")).unwrap();
        let rule_text = std::fs::read_to_string(deploy.join("rules/triage.yml")).unwrap();
        std::fs::write(dir.join("rules/triage.yml"), rules(rule_text)).unwrap();
        let text = std::fs::read_to_string(deploy.join("prometheus.yml"))
            .unwrap()
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
            .replace("127.0.0.1:9464", target);
        assert!(text.contains(target), "prometheus.yml has no triage target");
        std::fs::write(dir.join("prometheus.yml"), config(text)).unwrap();

        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(&bin);
        cmd.arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"));
        let daemon = Daemon::start(
            "prometheus",
            cmd,
            dir.join("prometheus.log"),
            "run scripts/install-prometheus.sh, or set TRIAGE_PROMETHEUS",
            Duration::from_secs(30),
            answers_200(&addr, "/-/ready"),
        );
        Self { addr, daemon }
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// An instant query's result vector (empty when nothing matches).
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", encode(expr));
        let (status, body) = http(&self.addr, "GET", &path, b"").expect("prometheus answers");
        assert_eq!(status, 200, "{expr}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// A range query over the last `span` at `step`: the series, or Prometheus's
    /// error (e.g. a parse error) as text.
    pub fn query_range(
        &self,
        expr: &str,
        span: Duration,
        step: Duration,
    ) -> Result<Vec<serde_json::Value>, String> {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let path = format!(
            "/api/v1/query_range?query={}&start={:.3}&end={end:.3}&step={}",
            encode(expr),
            end - span.as_secs_f64(),
            step.as_secs_f64()
        );
        let (status, body) = http(&self.addr, "GET", &path, b"").expect("prometheus answers");
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if status != 200 {
            return Err(v["error"].as_str().unwrap_or(&body).to_string());
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Every loaded rule as Prometheus reports it (/api/v1/rules): name, query,
    /// health and last error.
    pub fn rules(&self) -> Vec<serde_json::Value> {
        let (_, body) = http(&self.addr, "GET", "/api/v1/rules", b"").expect("prometheus answers");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The first sample's value of `expr`, if any.
    pub fn value(&self, expr: &str) -> Option<f64> {
        self.query(expr)
            .first()
            .and_then(|s| s["value"][1].as_str().and_then(|v| v.parse().ok()))
    }

    /// Polls `expr` until `want(result)` or timeout.
    pub fn wait(
        &self,
        expr: &str,
        timeout: Duration,
        want: impl Fn(&[serde_json::Value]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if want(&self.query(expr)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    }
}
