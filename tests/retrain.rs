//! The retraining job end to end, through the binary: a tansu broker, the real
//! embedder, a champion trained on a narrow slice of the support intents, recent
//! traffic of every intent whose labels arrive late on their own topic.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::broker::Broker;
use common::kafka::{Msg, Names, produce, write_support_config};
use common::*;
use serde_json::Value;

/// The intents the first champion knows.
const NARROW: [&str; 4] = ["ORDER", "REFUND", "SHIPPING", "ACCOUNT"];

/// config/support.toml with this test's broker and topics.
fn write_config(dir: &Path, broker: &Broker, names: &Names, labels_topic: &str) -> PathBuf {
    write_support_config(
        dir,
        &broker.address(),
        names,
        &format!("labels_topic = \"{labels_topic}\""),
        // The job's own verdicts: a winner promoted at once (shadow races are
        // tests/stream.rs's).
        "[retrain]\nwindow_s = 3600\nrollout = \"direct\"",
    )
}

/// Writes a CSV file with a header.
fn write_csv(path: &Path, header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> usize {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(header).unwrap();
    let mut n = 0;
    for row in rows {
        w.write_record(&row).unwrap();
        n += 1;
    }
    w.flush().unwrap();
    n
}

fn triage_with(dir: &Path, config: &Path) -> std::process::Command {
    let mut cmd = triage(dir);
    cmd.arg("--config").arg(config);
    cmd
}

fn champion(dir: &Path) -> String {
    let aliases: Value =
        serde_json::from_slice(&std::fs::read(dir.join("registry/aliases.json")).unwrap()).unwrap();
    aliases["champion"].as_str().unwrap().to_string()
}

fn decisions(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("registry/decisions.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn retrain(dir: &Path, config: &Path, extra: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
    let mut cmd = triage_with(dir, config);
    cmd.args(["retrain", "--json"]).args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let (out, stdout, stderr) = run(&mut cmd);
    assert_no_panic(&stderr);
    let decision: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("retrain printed no decision ({e}):\n{stdout}\n{stderr}"));
    eprintln!(
        "retrain {extra:?} {env:?}: exit {:?} in {:.1} s, verdict {}",
        out.status.code(),
        started.elapsed().as_secs_f64(),
        decision["verdict"]
    );
    (out.status.code().unwrap_or(-1), decision)
}

/// Held-out macro-F1 of the champion and the challenger in a decision.
fn macro_f1s(d: &Value) -> (f64, f64) {
    let f1 = |who: &str| d[who]["metrics"]["macro_f1"].as_f64().unwrap();
    (f1("champion"), f1("challenger"))
}

/// A run that trained a challenger and kept the champion (v2): exit 3, verdict
/// rejected, `reason` in the decision's reason.
fn assert_rejected(dir: &Path, code: i32, d: &Value, reason: &str) {
    assert_eq!(code, 3, "{d:#}");
    assert_eq!(d["verdict"], "rejected");
    assert!(
        d["reason"].as_str().unwrap().contains(reason),
        "{}",
        d["reason"]
    );
    assert_eq!(champion(dir), "v2");
}

fn print_figures(d: &Value) {
    let f1 = |c: &Value| {
        if c.is_null() {
            "-".to_string()
        } else {
            format!(
                "{} macro-F1 {:.4}",
                c["version"].as_str().unwrap(),
                c["metrics"]["macro_f1"].as_f64().unwrap()
            )
        }
    };
    eprintln!(
        "  rows: train {} held-out {}; sources: {}",
        d["rows"]["train"], d["rows"]["held_out"], d["inputs"]["sources"]
    );
    eprintln!(
        "  champion {} | challenger {}",
        f1(&d["champion"]),
        f1(&d["challenger"])
    );
    let steps: Vec<String> = d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {:.2} s",
                s["name"].as_str().unwrap(),
                s["seconds"].as_f64().unwrap()
            )
        })
        .collect();
    eprintln!(
        "  steps: {}; total {:.2} s",
        steps.join(", "),
        d["duration_seconds"].as_f64().unwrap()
    );
    eprintln!("  reason: {}", d["reason"].as_str().unwrap());
}

#[test]
fn late_labels_train_a_challenger_that_replaces_a_narrow_champion_and_a_weak_one_is_rejected() {
    let test_started = Instant::now();
    let dir = scratch("retrain");
    let broker = Broker::start(&dir);
    let names = Names::new("retrain");
    let labels_topic = format!("labels-{}", names.group);
    let config = write_config(&dir, &broker, &names, &labels_topic);

    let (out, stdout, stderr) =
        run(triage_with(&dir, &config).args(["topics", "create", "-p", "2"]));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&labels_topic),
        "topics create made no labels topic:\n{stdout}"
    );

    // The champion knows 4 of the 11 intents, 40 questions each.
    let rows = support_rows();
    let narrow_path = dir.join("narrow.csv");
    let narrow = write_csv(
        &narrow_path,
        &["class_name", "question", "id"],
        rows.iter()
            .step_by(5)
            .filter(|(class, _, _)| NARROW.contains(&class.as_str()))
            .map(|(class, q, id)| vec![class.clone(), q.clone(), id.clone()]),
    );
    let t = Instant::now();
    let (out, stdout, stderr) = run(triage_with(&dir, &config)
        .args(["train", "--data"])
        .arg(&narrow_path));
    assert!(
        out.status.success(),
        "champion training failed:\n{stdout}{stderr}"
    );
    eprintln!(
        "champion v1 trained on {} rows in {:.1} s",
        narrow,
        t.elapsed().as_secs_f64()
    );
    assert_eq!(champion(&dir), "v1");

    // Recent traffic of every intent (rows the champion never saw), without labels:
    // the batch mode writes the feature records `triage run` would write.
    let recent: Vec<&(String, String, String)> = rows.iter().skip(1).step_by(5).collect();
    let messages_path = dir.join("messages.csv");
    write_csv(
        &messages_path,
        &["question", "id"],
        recent.iter().map(|(_, q, id)| vec![q.clone(), id.clone()]),
    );
    let features_path = dir.join("features.jsonl");
    let t = Instant::now();
    let (out, stdout, stderr) = run(triage_with(&dir, &config)
        .args(["run", "--input"])
        .arg(&messages_path)
        .arg("--output")
        .arg(dir.join("predictions.jsonl"))
        .arg("--features")
        .arg(&features_path));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let feature_lines: Vec<Msg> = std::fs::read_to_string(&features_path)
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let id = v["id"].as_str().unwrap().as_bytes().to_vec();
            (Some(id), Some(line.as_bytes().to_vec()))
        })
        .collect();
    assert_eq!(feature_lines.len(), recent.len());
    produce(&broker.address(), &names.features, &feature_lines);
    eprintln!(
        "{} feature records written and produced in {:.1} s",
        feature_lines.len(),
        t.elapsed().as_secs_f64()
    );

    // The labels arrive later, on their own; a few for messages never seen.
    let mut labels: Vec<Msg> = recent
        .iter()
        .map(|(class, _, id)| {
            let value = serde_json::json!({"id": id, "label": class}).to_string();
            (Some(id.as_bytes().to_vec()), Some(value.into_bytes()))
        })
        .collect();
    for ghost in ["ghost-1", "ghost-2", "ghost-3"] {
        let value = serde_json::json!({"id": ghost, "label": "REFUND"}).to_string();
        labels.push((Some(ghost.as_bytes().to_vec()), Some(value.into_bytes())));
    }
    produce(&broker.address(), &labels_topic, &labels);

    // 1. On recent data only, the challenger learns every intent and is promoted.
    let (code, d) = retrain(&dir, &config, &["--training-data", "none"], &[]);
    print_figures(&d);
    assert_eq!(code, 0, "{d:#}");
    assert_eq!(d["verdict"], "promoted");
    assert_eq!(d["trigger"], "cli");
    assert_eq!(d["inputs"]["sources"][0]["rows"], recent.len());
    let description = d["inputs"]["sources"][0]["description"].as_str().unwrap();
    assert!(description.contains("3 for unknown ids"), "{description}");
    let held_out = d["rows"]["held_out"].as_u64().unwrap();
    assert_eq!(
        d["rows"]["train"].as_u64().unwrap() + held_out,
        recent.len() as u64
    );
    let (champion_f1, challenger_f1) = macro_f1s(&d);
    assert_eq!(d["champion"]["version"], "v1");
    assert_eq!(d["challenger"]["version"], "v2");
    assert!(
        challenger_f1 > champion_f1 + 0.3,
        "challenger {challenger_f1} vs champion {champion_f1}"
    );
    let per_class: BTreeMap<String, f64> =
        serde_json::from_value(d["challenger"]["metrics"]["per_class_f1"].clone()).unwrap();
    assert_eq!(per_class.len(), 11, "{per_class:?}");
    assert_eq!(champion(&dir), "v2");
    let history = std::fs::read_to_string(dir.join("registry/events.jsonl")).unwrap();
    assert!(
        history.lines().last().unwrap().contains("\"retrainer\""),
        "{history}"
    );
    let first_run = d["id"].as_str().unwrap().to_string();
    let work = dir.join("registry/retrain").join(&first_run);
    assert!(work.join("train.jsonl").is_file() && work.join("held-out.jsonl").is_file());

    // 2. A challenger that cannot beat the champion by the margin is stored, not promoted.
    let (code, d) = retrain(
        &dir,
        &config,
        &["--training-data", "none"],
        &[("TRIAGE__RETRAIN__MIN_IMPROVEMENT", "0.9")],
    );
    print_figures(&d);
    assert_rejected(&dir, code, &d, "short of");
    assert_eq!(d["champion"]["version"], "v2");
    assert_eq!(d["challenger"]["version"], "v3");

    // 2b. A challenger that scores below the champion on the same held-out slice
    // (a fit stopped after one L-BFGS iteration, no n-grams, gates off so only the
    // comparison decides) is rejected, and the decision says by how much.
    let (code, d) = retrain(
        &dir,
        &config,
        &["--training-data", "none"],
        &[
            ("TRIAGE__TRAINING__MAX_ITERATIONS", "1"),
            ("TRIAGE__FEATURES__NGRAMS__ENABLED", "false"),
            ("TRIAGE__TRAINING__MIN_MACRO_F1", "0"),
            ("TRIAGE__TRAINING__MIN_MACRO_RECALL", "0"),
            ("TRIAGE__RETRAIN__MIN_IMPROVEMENT", "0"),
        ],
    );
    print_figures(&d);
    assert_rejected(&dir, code, &d, ": -0.");
    let (champion_f1, challenger_f1) = macro_f1s(&d);
    assert!(
        challenger_f1 < champion_f1,
        "a worse challenger: {challenger_f1} vs champion {champion_f1}"
    );

    // 3. By default the champion's own training data is added: v2's is the first
    // run's train.jsonl, read back with the run files' own fields.
    let (code, d) = retrain(
        &dir,
        &config,
        &[],
        &[("TRIAGE__RETRAIN__MIN_IMPROVEMENT", "0.9")],
    );
    print_figures(&d);
    assert_eq!(code, 3, "{d:#}");
    assert_eq!(d["challenger"]["version"], "v5");
    let original = &d["inputs"]["sources"][1];
    let description = original["description"].as_str().unwrap();
    assert!(
        description.starts_with("original training data") && description.contains("train.jsonl"),
        "{description}"
    );
    // Its rows, less any whose text is also in this run's held-out slice (the
    // support questions repeat a few texts).
    let first_train = recent.len() as u64 - held_out;
    let original_rows = original["rows"].as_u64().unwrap();
    assert!(
        (first_train - 3..=first_train).contains(&original_rows),
        "{original_rows} of {first_train}"
    );
    assert_eq!(champion(&dir), "v2");

    // 3b. One job at a time on a machine: while another process holds the job lock
    // (an advisory flock: this test's own process stands in for a running `triage
    // retrainer`), a `triage retrain` by hand is refused and recorded, and trains
    // nothing.
    let lock = dir.join("registry/retrain/.job.lock");
    std::fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
    let held = std::fs::File::open(&lock).unwrap();
    held.try_lock().unwrap();
    let (code, d) = retrain(&dir, &config, &[], &[]);
    drop(held);
    assert_eq!(code, 1, "{d:#}");
    assert_eq!(d["verdict"], "failed");
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.contains("another retraining job") && reason.contains(".job.lock"),
        "{reason}"
    );
    assert!(d["challenger"].is_null());
    assert!(lock.is_file(), "the holder's lock is left alone");
    std::fs::remove_file(&lock).unwrap();

    // 4. Too few recent rows: the run fails without training, and says why. With
    // retrain.keep_runs = 1 the older runs' files go, but not the champion's (v2 was
    // trained on the first run's train.jsonl).
    let runs = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("registry/retrain"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            // The job lock's file stays (an flock is released, its file kept).
            .filter(|name| name.starts_with("retrain-"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(runs().len(), 4, "{:?}", runs());
    let (code, d) = retrain(
        &dir,
        &config,
        &["--since", "1ms"],
        &[("TRIAGE__RETRAIN__KEEP_RUNS", "1")],
    );
    let kept = runs();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.contains(&first_run), "{kept:?} lost {first_run}");
    eprintln!("  reason: {}", d["reason"].as_str().unwrap());
    assert_eq!(code, 1, "{d:#}");
    assert_eq!(d["verdict"], "failed");
    assert!(d["challenger"].is_null());
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("retrain.min_recent_rows"),
        "{}",
        d["reason"]
    );
    assert_eq!(champion(&dir), "v2");

    let recorded = decisions(&dir);
    let verdicts: Vec<&str> = recorded
        .iter()
        .map(|d| d["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(
        verdicts,
        [
            "promoted", "rejected", "rejected", "rejected", "failed", "failed"
        ]
    );

    // 5. A schedule as well as alerts: `triage retrainer` with retrain.every = 10s
    // runs the same job by itself, due 10 s after the registry's last decision (the
    // failed run just above), and records the trigger `schedule`.
    let port = common::broker::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = triage_with(&dir, &config);
    cmd.env("TRIAGE__RETRAIN__EVERY", "10s")
        .env("TRIAGE__RETRAIN__LISTEN", &addr)
        .env(
            "TRIAGE__RETRAIN__WEBHOOK_TOKEN",
            "schedule-test-token-0123456789",
        )
        .env("TRIAGE__RETRAIN__COOLDOWN_S", "3600")
        .arg("retrainer");
    let last_decided = Instant::now();
    let retrainer = common::daemon::Daemon::start(
        "triage retrainer",
        cmd,
        dir.join("retrainer-schedule.log"),
        "build triage first",
        std::time::Duration::from_secs(30),
        common::daemon::answers_200(&addr, "/healthz"),
    );
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    while decisions(&dir).len() < 7 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let scheduled = decisions(&dir);
    assert_eq!(scheduled.len(), 7, "no scheduled run:\n{}", retrainer.log());
    let d = &scheduled[6];
    eprintln!(
        "scheduled run: trigger {}, verdict {}, {:.1} s after the last decision",
        d["trigger"],
        d["verdict"],
        last_decided.elapsed().as_secs_f64()
    );
    assert_eq!(d["trigger"], "schedule", "{d:#}");
    assert!(
        d["verdict"] == "promoted" || d["verdict"] == "rejected",
        "{d:#}"
    );
    assert!(last_decided.elapsed() >= std::time::Duration::from_secs(9));
    let metrics = common::kafka::http(&addr, "GET", "/metrics", b"")
        .map(|(_, body)| body)
        .unwrap_or_default();
    assert!(
        metrics.contains("triage_retrain_scheduled_total{action=\"started\"} 1"),
        "{metrics}"
    );
    // The next is due 10 s after this one: the gauge says when.
    assert!(
        metrics.lines().any(
            |l| l.starts_with("triage_retrain_next_scheduled_timestamp_seconds ")
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    drop(retrainer);
    eprintln!("whole test: {:.1} s", test_started.elapsed().as_secs_f64());
}

/// A retrainer restarted as PID 1 (a container restarted: the new process has the
/// process id of the job that died) runs its next job. The job lock is the kernel's
/// flock, released when its holder died, not a process id, which would now name the
/// new process itself. Each job runs as PID 1 of a new PID namespace (`unshare`).
#[test]
fn a_job_restarted_as_pid_1_takes_the_lock_its_killed_predecessor_held() {
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: `unshare --pid` is not available here");
        return;
    }
    let dir = scratch("retrain-pid1");
    // No broker: the job blocks reading the topics, holding its lock, until killed.
    let config = write_support_config(
        &dir,
        "127.0.0.1:1",
        &Names::new("pid1"),
        "labels_topic = \"labels-pid1\"",
        "[retrain]\nwindow_s = 3600",
    );
    let start = |name: &str| {
        let inner = triage_with(&dir, &config);
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc"])
            .arg(inner.get_program())
            .args(["--config"])
            .arg(&config)
            .arg("retrain")
            .env("TRIAGE__LOG__LEVEL", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap());
        for (key, value) in inner.get_envs() {
            match value {
                Some(v) if key != "TRIAGE__LOG__LEVEL" => cmd.env(key, v),
                Some(_) => &mut cmd,
                None => cmd.env_remove(key),
            };
        }
        cmd.spawn().expect("unshare runs")
    };
    let log = |name: &str| std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap();
    let started = |name: &str| {
        let deadline = Instant::now() + std::time::Duration::from_secs(90);
        while Instant::now() < deadline {
            let text = log(name);
            if text.contains("Retraining started") || text.contains("another retraining job") {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let mut first = start("first");
    started("first");
    let lock = dir.join("registry/retrain/.job.lock");
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap().trim(),
        "1",
        "the first job ran as PID 1:\n{}",
        log("first")
    );
    first.kill().unwrap();
    first.wait().unwrap();

    let mut second = start("second");
    started("second");
    let _ = second.kill();
    second.wait().unwrap();
    let second_log = log("second");
    assert!(
        second_log.contains("Retraining started") && !second_log.contains("another retraining job"),
        "the job restarted as PID 1 did not take the lock:\n{second_log}"
    );
}
