//! Helpers for black-box tests that drive the `triage` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the shared data sets beside the repository.
pub fn shared(rel: &str) -> PathBuf {
    let path = repo().join("../shared/data").join(rel);
    assert!(
        path.is_file(),
        "{} is missing: the tests need ../shared beside the repository",
        path.display()
    );
    path
}

/// A fresh, empty directory under cargo's target tmp dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `triage` with its registry and feature cache in `dir`, and no configuration
/// leaking in from the environment the tests run in.
pub fn triage(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_triage"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TRIAGE__") || key == "TRIAGE_CONFIG" || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.env("TRIAGE__PATHS__REGISTRY_DIR", dir.join("registry"))
        .env("TRIAGE__PATHS__FEATURE_CACHE_DIR", dir.join("features"))
        .env("TRIAGE__LOG__LEVEL", "warn")
        .stdin(Stdio::null());
    cmd
}

/// A tool the tests run: the path in `$env`, or the one `scripts/<script>` installs
/// (it prints the binary's path; a cached install is reused).
pub fn tool(env: &str, script: &str) -> PathBuf {
    if let Some(bin) = std::env::var_os(env) {
        return PathBuf::from(bin);
    }
    let out = Command::new("bash")
        .arg(repo().join("scripts").join(script))
        .output()
        .unwrap_or_else(|e| panic!("scripts/{script} does not run: {e}"));
    assert!(
        out.status.success(),
        "scripts/{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Runs and returns the output; stdout and stderr as text.
pub fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("triage runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// Writes lines `range` of `src` (plus the first line when `keep_header`) to `dst`.
pub fn slice_lines(src: &Path, dst: &Path, range: std::ops::Range<usize>, keep_header: bool) {
    let text = std::fs::read_to_string(src).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    if keep_header {
        out.push(lines[0]);
    }
    let start = range.start + usize::from(keep_header);
    let end = (range.end + usize::from(keep_header)).min(lines.len());
    out.extend_from_slice(&lines[start..end]);
    std::fs::write(dst, out.join("\n") + "\n").unwrap();
}

/// The shared support CSV's rows as (class, question, id), in file order.
pub fn support_rows() -> Vec<(String, String, String)> {
    csv::Reader::from_path(shared("support/customer-support-2200.csv"))
        .unwrap()
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_string(), r[1].to_string(), r[2].to_string())
        })
        .collect()
}

/// Every 5th row of the shared support CSV (40 questions per intent, 440 in all),
/// written to `dir/support-440.csv`.
pub fn support_subset(dir: &Path) -> PathBuf {
    let src = std::fs::read_to_string(shared("support/customer-support-2200.csv")).unwrap();
    let mut lines = src.lines();
    let mut subset = vec![lines.next().unwrap().to_string()];
    subset.extend(lines.step_by(5).map(str::to_string));
    let data = dir.join("support-440.csv");
    std::fs::write(&data, subset.join("\n") + "\n").unwrap();
    data
}

/// Support questions by intent, in file order: (id, question).
pub fn questions_by_intent() -> std::collections::BTreeMap<String, Vec<(String, String)>> {
    let mut by: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
    for (class, question, id) in support_rows() {
        by.entry(class).or_default().push((id, question));
    }
    by
}

/// Messages (without their label) and the late labels for `rows` of each intent.
pub fn phase(
    by: &std::collections::BTreeMap<String, Vec<(String, String)>>,
    intents: &[&str],
    rows: std::ops::Range<usize>,
    tag: &str,
) -> (Vec<kafka::Msg>, Vec<kafka::Msg>) {
    phase_with(by, intents, rows, tag, false)
}

/// Like [`phase`]; with `carry_label` each message also carries its label in
/// `class_name` (config/support.toml's label field), as well as the late label.
pub fn phase_with(
    by: &std::collections::BTreeMap<String, Vec<(String, String)>>,
    intents: &[&str],
    rows: std::ops::Range<usize>,
    tag: &str,
    carry_label: bool,
) -> (Vec<kafka::Msg>, Vec<kafka::Msg>) {
    let mut messages = Vec::new();
    let mut labels = Vec::new();
    for i in rows {
        for intent in intents {
            let (_, question) = &by[*intent][i];
            let id = format!("{tag}-{intent}-{i}");
            let mut message = serde_json::json!({ "id": id, "question": question });
            if carry_label {
                message["class_name"] = serde_json::json!(intent);
            }
            let label = serde_json::json!({ "id": id, "label": intent });
            messages.push((
                Some(id.clone().into_bytes()),
                Some(message.to_string().into_bytes()),
            ));
            labels.push((Some(id.into_bytes()), Some(label.to_string().into_bytes())));
        }
    }
    (messages, labels)
}

/// Trains a support-intent champion (v1) on [`support_subset`] into `dir`'s
/// registry, as `triage train` with config/support.toml does (`env`: settings
/// over it, e.g. fewer cross-validation folds).
pub fn train_support(dir: &Path, env: &[(&str, &str)]) {
    let data = support_subset(dir);
    let (out, stdout, stderr) = run(triage(dir)
        .envs(env.iter().copied())
        .arg("--config")
        .arg(repo().join("config/support.toml"))
        .args(["train", "--data"])
        .arg(&data));
    assert!(out.status.success(), "{stdout}\n{stderr}");
}

/// A `[[review.reviewers]]` block for `name` with `password`, as `triage reviewer`
/// prints it (the password on its standard input).
pub fn reviewer_account(dir: &Path, name: &str, password: &str) -> String {
    let mut reviewer = triage(dir)
        .args(["reviewer", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut reviewer.stdin.take().unwrap(),
        format!("{password}\n").as_bytes(),
    )
    .unwrap();
    let account = reviewer.wait_with_output().unwrap();
    assert!(account.status.success(), "triage reviewer {name} failed");
    let account = String::from_utf8(account.stdout).unwrap();
    assert!(account.contains("$argon2id$") && !account.contains(password));
    account
}

pub mod alertmanager;
pub mod broker;
pub mod browser;
pub mod daemon;
pub mod kafka;
pub mod moto;
pub mod prometheus;
pub mod server;

pub fn assert_no_panic(stderr: &str) {
    assert!(
        !stderr.contains("panicked"),
        "the binary panicked:\n{stderr}"
    );
}

/// A child process killed when dropped, so a failed assertion leaves nothing running.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child's exit status, if it exits within `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}
