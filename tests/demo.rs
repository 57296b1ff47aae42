//! `make demo` (scripts/demo.sh) leaves no process behind: interrupted as Ctrl-C in a
//! terminal does it (SIGINT to its whole process group) while messages stream, or
//! failing once every service runs, it stops the broker, `triage run`, the
//! retrainer, Prometheus and Alertmanager it started.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The demos run one at a time: each prefers the standard ports.
static SERIAL: Mutex<()> = Mutex::new(());

/// The demo on the shipped data set, in a process group of its own, with the test
/// build of triage; its stdout lines arrive on the returned channel.
fn demo(dir: &Path, env: &[(&str, &str)]) -> (Child, mpsc::Receiver<String>) {
    // As from a terminal, with SIGINT and SIGTERM at their defaults: a test runner
    // started in the background (nohup, some CI runners) hands its children SIGINT
    // ignored, and bash cannot trap a signal ignored on entry, so Ctrl-C would never
    // reach the demo's clean-up.
    let mut cmd = Command::new("env");
    cmd.args(["--default-signal=INT,TERM", "bash"])
        .arg(common::repo().join("scripts/demo.sh"))
        .env("TRIAGE_BIN", env!("CARGO_BIN_EXE_triage"))
        .env("TRIAGE_TANSU", common::broker::tansu_bin())
        .env("DEMO_DIR", dir)
        .env("DATA", common::repo().join("data/demo/messages.jsonl"))
        .env_remove("TRIAGE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("bash runs scripts/demo.sh");
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    (child, rx)
}

/// Reads lines until `marker`; returns everything read.
fn read_until(rx: &mpsc::Receiver<String>, marker: &str, timeout: Duration) -> (bool, String) {
    let deadline = Instant::now() + timeout;
    let mut seen = String::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(marker) {
                    return (true, seen);
                }
            }
            Err(_) => break,
        }
    }
    (false, seen)
}

/// Processes in the process group `pgid`, or whose command line names `dir` (one
/// that left the group still shows its demo folder in its arguments).
fn processes_of(pgid: u32, dir: &Path) -> Vec<String> {
    let out = Command::new("ps")
        .args(["-eo", "pgid=,pid=,args="])
        .output()
        .expect("ps runs");
    let dir = dir.display().to_string();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            let mut f = l.split_whitespace();
            let group = f.next().and_then(|g| g.parse::<u32>().ok());
            group == Some(pgid) || (l.contains(&dir) && !l.contains("ps -eo"))
        })
        .map(str::to_string)
        .collect()
}

/// Every service the demo starts, by a word of its command line.
const SERVICES: [&str; 5] = [
    "tansu",
    " run",
    " retrainer",
    "prometheus --config",
    "prometheus-alertmanager",
];

fn assert_all_running(pgid: u32, dir: &Path, output: &str) {
    let running = processes_of(pgid, dir);
    for service in SERVICES {
        assert!(
            running.iter().any(|p| p.contains(service)),
            "{service} is not running:\n{}\n{output}",
            running.join("\n")
        );
    }
}

fn assert_none_left(pgid: u32, dir: &Path, output: &str) {
    // Give a process that was told to stop a moment to be reaped by its parent.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = processes_of(pgid, dir);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = processes_of(pgid, dir);
    }
    assert!(
        left.is_empty(),
        "left running:\n{}\n{output}",
        left.join("\n")
    );
}

#[test]
fn an_interrupted_demo_stops_every_process_it_started() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::scratch("demo-int").join("demo");
    let (mut child, rx) = demo(&dir, &[]);
    let pgid = child.id();
    let (reached, output) = read_until(&rx, "demo-phase: streaming", Duration::from_secs(400));
    assert!(reached, "the demo did not start streaming:\n{output}");
    assert_all_running(pgid, &dir, &output);
    // Ctrl-C in a terminal: SIGINT to the foreground process group.
    let kill = Command::new("kill")
        .args(["-INT", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = common::wait_exit(&mut child, Duration::from_secs(60)).expect("the demo exits");
    let (_, rest) = read_until(&rx, "\u{0}", Duration::from_millis(500));
    assert!(!status.success(), "{status}\n{output}{rest}");
    assert!(
        format!("{output}{rest}").contains("stopping"),
        "{output}{rest}"
    );
    assert_none_left(pgid, &dir, &format!("{output}{rest}"));
}

#[test]
fn a_failing_demo_stops_every_process_it_started() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = common::scratch("demo-fail").join("demo");
    let (mut child, rx) = demo(&dir, &[("DEMO_FAIL_AT", "services")]);
    let pgid = child.id();
    let (reached, output) = read_until(&rx, "demo-phase: services", Duration::from_secs(400));
    assert!(reached, "the demo did not start its services:\n{output}");
    let status = common::wait_exit(&mut child, Duration::from_secs(60)).expect("the demo exits");
    let (_, rest) = read_until(&rx, "\u{0}", Duration::from_millis(500));
    assert_eq!(status.code(), Some(1), "{output}{rest}");
    // The failure may come in the same read as the phase line: look at all of it.
    let all = format!("{output}{rest}");
    assert!(all.contains("DEMO_FAIL_AT"), "{all}");
    // It had started them all, and stopped them.
    assert!(
        all.contains("stopping tansu retrainer triage-run alertmanager prometheus"),
        "{all}"
    );
    assert_none_left(pgid, &dir, &all);
}
