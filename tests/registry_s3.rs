//! The model registry through the binary, on a folder and on S3 (moto's S3-compatible
//! server on loopback, started here): the same cases on both, writers that race, and
//! two services plus the retrainer following a promotion made on one shared bucket.
//! Needs `make setup` (the real embedder) and scripts/install-moto.sh.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::broker::{Broker, free_port};
use common::kafka::{Names, http, wait_http, write_support_config};
use common::moto::Moto;
use common::*;
use serde_json::Value;

/// The support subset, and a feature cache filled by training on it once, so every
/// later training in this suite reads its embeddings from the cache.
struct Trained {
    data: PathBuf,
    features: PathBuf,
}

fn trained() -> &'static Trained {
    static FIXTURE: OnceLock<Trained> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = scratch("registry-data");
        let data = support_subset(&dir);
        let features = dir.join("features");
        let (out, stdout, stderr) = run(triage(&dir)
            .arg("--config")
            .arg(repo().join("config/support.toml"))
            .env("TRIAGE__PATHS__FEATURE_CACHE_DIR", &features)
            .args(["train", "--no-promote", "--data"])
            .arg(&data));
        assert!(out.status.success(), "{stdout}\n{stderr}");
        Trained { data, features }
    })
}

/// Where a test's registry lives.
enum Backend {
    Folder,
    S3(Moto),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Self::Folder => "folder",
            Self::S3(_) => "s3",
        }
    }

    /// `triage --config support.toml` with this backend's registry and the shared cache.
    fn triage(&self, dir: &Path) -> Command {
        self.triage_with(dir, &repo().join("config/support.toml"))
    }

    /// `triage --config <config>` with this backend's registry and the shared cache.
    fn triage_with(&self, dir: &Path, config: &Path) -> Command {
        let mut cmd = triage(dir);
        cmd.arg("--config")
            .arg(config)
            .env("TRIAGE__PATHS__FEATURE_CACHE_DIR", &trained().features);
        if let Self::S3(moto) = self {
            moto.registry(&mut cmd, "triage/registry");
        }
        cmd
    }
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// Runs `cmd` and returns its stdout as JSON, failing with its stderr.
fn ok_json(cmd: &mut Command) -> Value {
    let (out, stdout, stderr) = run(cmd);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    json(&stdout)
}

/// Starts a training on the shared data, without promotion.
fn train(backend: &Backend, dir: &Path) -> Child {
    backend
        .triage(dir)
        .args(["train", "--no-promote", "--json", "--data"])
        .arg(&trained().data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn version_of(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&stdout)["version"].as_str().unwrap().to_string()
}

/// The registry cases, through the CLI: versions numbered without gaps by concurrent
/// trainings, promote and rollback, the history, loading the champion to classify,
/// promotions racing from four processes without a lost alias change, and the
/// challenger alias cleared by its promotion.
fn registry_cases(backend: &Backend) {
    let dir = scratch(&format!("registry-{}", backend.name()));
    let started = Instant::now();
    assert_eq!(version_of(train(backend, &dir)), "v1");
    // Two trainings at once: each gets a version of its own.
    let racing = [train(backend, &dir), train(backend, &dir)];
    let mut versions: Vec<String> = racing.into_iter().map(version_of).collect();
    versions.sort();
    assert_eq!(versions, ["v2", "v3"], "{}", backend.name());
    let list = ok_json(backend.triage(&dir).args(["models", "list", "--json"]));
    let listed: Vec<&str> = list["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["v1", "v2", "v3"]);
    assert_eq!(list["aliases"]["champion"], Value::Null);

    ok_json(
        backend
            .triage(&dir)
            .args(["models", "promote", "v1", "--json"]),
    );
    let a = ok_json(
        backend
            .triage(&dir)
            .args(["models", "promote", "v2", "--json"]),
    );
    assert_eq!(
        (a["champion"].as_str(), a["previous"].as_str()),
        (Some("v2"), Some("v1"))
    );
    let a = ok_json(backend.triage(&dir).args(["models", "rollback", "--json"]));
    assert_eq!(
        (a["champion"].as_str(), a["previous"].as_str()),
        (Some("v1"), None)
    );

    // The champion loads from the registry and classifies.
    let labelled =
        ok_json(
            backend
                .triage(&dir)
                .args(["classify", "--json", "I want a refund for my order"]),
        );
    assert!(labelled["label"].is_string(), "{labelled}");

    // Four processes promote three times each, all at once.
    let promoters: Vec<Child> = (0..12)
        .map(|i| {
            backend
                .triage(&dir)
                .args(["models", "promote", ["v1", "v2", "v3"][i % 3]])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in promoters {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let history = ok_json(backend.triage(&dir).args(["models", "history", "--json"]));
    let changes = history["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 3 + 12, "{history}");
    // Replaying the journal gives the alias file: no change was lost or torn.
    let mut stack: Vec<String> = Vec::new();
    let mut champion: Option<String> = None;
    for c in changes {
        let to = c["to"].as_str().map(String::from);
        assert_eq!(c["from"].as_str().map(String::from), champion, "{history}");
        match c["action"].as_str().unwrap() {
            "rollback" => {
                stack.pop();
            }
            _ if to != champion => stack.extend(champion.clone()),
            _ => {}
        }
        champion = to;
    }
    let list = ok_json(backend.triage(&dir).args(["models", "list", "--json"]));
    assert_eq!(list["aliases"]["champion"].as_str(), champion.as_deref());
    let kept: Vec<String> = serde_json::from_value(list["aliases"]["history"].clone()).unwrap();
    assert_eq!(kept, stack, "{}", backend.name());
    // The challenger alias: set and listed, then cleared by promoting it.
    let challenger = ["v1", "v2", "v3"]
        .into_iter()
        .find(|v| Some(*v) != champion.as_deref())
        .unwrap();
    let a = ok_json(
        backend
            .triage(&dir)
            .args(["models", "shadow", challenger, "--json"]),
    );
    assert_eq!(a["challenger"].as_str(), Some(challenger), "{a}");
    let list = ok_json(backend.triage(&dir).args(["models", "list", "--json"]));
    assert_eq!(list["aliases"]["challenger"].as_str(), Some(challenger));
    let a = ok_json(
        backend
            .triage(&dir)
            .args(["models", "promote", challenger, "--json"]),
    );
    assert_eq!(a["champion"].as_str(), Some(challenger), "{a}");
    assert_eq!(a["challenger"], Value::Null, "{a}");
    let history = ok_json(backend.triage(&dir).args(["models", "history", "--json"]));
    let actions: Vec<&str> = history["changes"].as_array().unwrap()[15..]
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["shadow", "promote"], "{history}");
    println!(
        "{}: registry cases in {:.1} s",
        backend.name(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn the_registry_cases_pass_on_a_folder_and_on_s3() {
    registry_cases(&Backend::Folder);
    let dir = scratch("moto");
    registry_cases(&Backend::S3(Moto::start(&dir, "triage-models")));
}

#[test]
fn a_bad_registry_url_is_refused_at_load_naming_the_key() {
    let dir = scratch("bad-url");
    let (out, _, stderr) = run(triage(&dir)
        .env("TRIAGE__PATHS__REGISTRY_URL", "bucket/registry")
        .args(["models", "list"]));
    assert!(!out.status.success());
    assert!(stderr.contains("paths.registry_url"), "{stderr}");
    assert!(stderr.contains("s3://BUCKET/PREFIX"), "{stderr}");
}

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` with its log in `dir/<name>.log`.
fn start(mut cmd: Command, dir: &Path, name: &str) -> Killed {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Killed(
        cmd.env("TRIAGE__LOG__LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// The model version a service's /v1/classify answers with.
fn serving(addr: &str) -> String {
    let (status, body) = http(
        addr,
        "POST",
        "/v1/classify",
        br#"{"text": "where is my parcel"}"#,
    )
    .unwrap_or((0, String::new()));
    assert_eq!(status, 200, "{body}");
    json(&body)["model_version"].as_str().unwrap().to_string()
}

#[test]
fn two_services_and_the_retrainer_follow_a_promotion_on_one_s3_registry() {
    let dir = scratch("s3-follow");
    let s3 = Backend::S3(Moto::start(&dir, "triage-shared"));
    assert_eq!(version_of(train(&s3, &dir)), "v1");
    assert_eq!(version_of(train(&s3, &dir)), "v2");
    ok_json(s3.triage(&dir).args(["models", "promote", "v1", "--json"]));

    let broker = Broker::start(&dir);
    let names = Names::new("s3follow");
    let config = write_support_config(
        &dir,
        &broker.address(),
        &names,
        "",
        "[stream]\nmax_wait_ms = 200\n",
    );
    let with_config = |extra: &[(&str, String)]| {
        let mut cmd = s3.triage_with(&dir, &config);
        cmd.envs(extra.iter().cloned());
        cmd
    };
    let (out, stdout, stderr) =
        run(with_config(&[]).args(["topics", "create", "--partitions", "2"]));
    assert!(out.status.success(), "{stdout}\n{stderr}");

    // Two replicas in one consumer group, with no registry folder of their own.
    let services: Vec<(Killed, String)> = ["a", "b"]
        .iter()
        .map(|name| {
            let addr = format!("127.0.0.1:{}", free_port());
            let mut cmd = with_config(&[
                ("TRIAGE__HTTP__LISTEN", addr.clone()),
                (
                    "TRIAGE__PATHS__REGISTRY_DIR",
                    dir.join(name).display().to_string(),
                ),
            ]);
            cmd.arg("run");
            (start(cmd, &dir, name), addr)
        })
        .collect();
    for (name, (_, addr)) in ["a", "b"].iter().zip(&services) {
        assert!(
            wait_http(addr, "/readyz", Duration::from_secs(90), |s, _| s == 200),
            "service {name} did not become ready:\n{}",
            log(&dir, name)
        );
        assert_eq!(serving(addr), "v1");
    }
    let token = "5a4b3c2d1e0f5a4b3c2d1e0f5a4b3c2d";
    let retrainer_addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = with_config(&[
        ("TRIAGE__RETRAIN__LISTEN", retrainer_addr.clone()),
        ("TRIAGE__RETRAIN__WEBHOOK_TOKEN", token.to_string()),
        ("TRIAGE__RETRAIN__TRAINING_DATA", "none".to_string()),
    ]);
    cmd.arg("retrainer");
    let _retrainer = start(cmd, &dir, "retrainer");
    assert!(
        wait_http(
            &retrainer_addr,
            "/metrics",
            Duration::from_secs(30),
            |s, _| s == 200
        ),
        "retrainer did not start:\n{}",
        log(&dir, "retrainer")
    );

    let promoted = Instant::now();
    let a = ok_json(s3.triage(&dir).args(["models", "promote", "v2", "--json"]));
    assert_eq!(a["champion"], "v2");
    for (name, (_, addr)) in ["a", "b"].iter().zip(&services) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while serving(addr) != "v2" {
            assert!(
                Instant::now() < deadline,
                "service {name} still serves v1 20 s after the promotion:\n{}",
                log(&dir, name)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        println!(
            "service {name} serves v2 {:.1} s after the promotion",
            promoted.elapsed().as_secs_f64()
        );
    }
    // The retrainer reads the champion from the bucket: a drift alert about v1, the
    // replaced champion, is superseded and starts no job.
    let alert = r#"{"version":"4","status":"firing","receiver":"triage-retrainer","groupKey":"{}:{alertname=\"TriageDriftDetected\"}","alerts":[{"status":"firing","labels":{"alertname":"TriageDriftDetected","detector":"embedding_mmd","model_version":"v1"},"annotations":{},"startsAt":"2026-11-29T00:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"0123456789abcdef"}],"groupLabels":{},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://test"}"#;
    let answer = post(&retrainer_addr, token, alert);
    assert!(answer.contains("superseded"), "{answer}");
    assert!(answer.contains(r#""job":"none""#), "{answer}");
}

/// POSTs an alert notification with the bearer token; returns the whole response.
fn post(addr: &str, token: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /v1/alerts HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}
