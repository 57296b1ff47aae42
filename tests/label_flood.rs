//! A flood of late labels against a real `triage retrainer`: one predicted id
//! relabelled with thousands of classes no model knows, and hundreds of ids each
//! with a new class. The retrainer must keep answering, keep its memory bounded and
//! still join the valid labels sent after the flood.
//!
//! `TRIAGE_FLOOD_LABELS` sets the flood's size (default 5,000; the issue measured
//! 100,000), `TRIAGE_FLOOD_MAX_RSS_MB` the growth allowed over the RSS before the
//! flood (default 100). The figures are printed: run with `--nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::broker::Broker;
use common::kafka::{Msg, Names, http, label_record, prediction_record, produce};
use common::server::Server;

const TOKEN: &str = "flood-test-token-0123456789";
const LABELS: [&str; 3] = common::kafka::SENTIMENTS;
/// Ids each labelled with a class of its own: past retrain.join_max_unknown_classes.
const SPREAD: usize = 200;
/// Valid ids labelled after the flood.
const VALID: usize = 10;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

/// `VmRSS` or `VmHWM` (peak) of a process, in MiB.
fn memory_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kb / 1024.0
}

#[test]
fn a_flood_of_unknown_classes_leaves_the_retrainer_answering_bounded_and_joining() {
    let flood = env_number("TRIAGE_FLOOD_LABELS", 5_000) as usize;
    let max_growth_mb = env_number("TRIAGE_FLOOD_MAX_RSS_MB", 100) as f64;
    let dir = common::scratch("label-flood");
    let broker = Broker::start(&dir);
    let names = Names::new("flood");
    let labels_topic = format!("labels-{}", names.group);
    let with_env = |cmd: &mut std::process::Command| {
        cmd.env("TRIAGE__KAFKA__BROKERS", broker.address())
            .env("TRIAGE__KAFKA__INPUT_TOPICS", &names.input)
            .env("TRIAGE__KAFKA__PREDICTIONS_TOPIC", &names.predictions)
            .env("TRIAGE__KAFKA__DLQ_TOPIC", &names.dlq)
            .env("TRIAGE__KAFKA__FEATURES_TOPIC", "")
            .env("TRIAGE__KAFKA__LABELS_TOPIC", &labels_topic)
            .env("TRIAGE__RETRAIN__WEBHOOK_TOKEN", TOKEN);
    };
    let mut create = common::triage(&dir);
    with_env(&mut create);
    let (out, _, stderr) = common::run(create.args(["topics", "create", "--partitions", "1"]));
    assert!(out.status.success(), "topics create failed: {stderr}");

    let mut cmd = common::triage(&dir);
    with_env(&mut cmd);
    let retrainer = Server::start(cmd, "retrainer", dir.join("retrainer.log"));
    let pid = retrainer.child.id();

    let mut predictions = vec![prediction_record("flood", "positive", "v1")];
    predictions.extend((0..SPREAD).map(|i| prediction_record(&format!("s{i}"), "neutral", "v1")));
    predictions
        .extend((0..VALID).map(|i| prediction_record(&format!("ok{i}"), LABELS[i % 3], "v1")));
    produce(&broker.address(), &names.predictions, &predictions);
    let held = (1 + SPREAD + VALID) as f64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while retrainer.metric("triage_performance_join_size") < held {
        assert!(
            Instant::now() < deadline,
            "the join did not hold the {held} predictions:\n{}",
            retrainer.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss_before = memory_mb(pid, "VmRSS");

    // The flood: one id relabelled `flood` times with a new class each (every tenth
    // time with a known one), then SPREAD ids with a new class each.
    let mut msgs: Vec<Msg> = Vec::with_capacity(flood + flood / 10 + SPREAD);
    for i in 0..flood {
        msgs.push(label_record("flood", &format!("new-class-{i}")));
        if i % 10 == 9 {
            msgs.push(label_record("flood", "neutral"));
        }
    }
    msgs.extend((0..SPREAD).map(|i| label_record(&format!("s{i}"), &format!("spread-class-{i}"))));
    let sent = msgs.len();
    let flood_started = Instant::now();
    let brokers = broker.address();
    let topic = labels_topic.clone();
    let producer = std::thread::spawn(move || produce(&brokers, &topic, &msgs));

    // While the flood is read: /healthz answers, each within 5 s.
    let total = || {
        [
            "joined",
            "relabelled",
            "unknown_id",
            "unknown_class",
            "invalid",
        ]
        .iter()
        .map(|r| {
            retrainer.metric(&format!(
                "triage_performance_labels_total{{result=\"{r}\"}}"
            ))
        })
        .sum::<f64>()
    };
    let mut slowest_health = Duration::ZERO;
    let mut health_checks = 0;
    let flood_deadline = Instant::now() + Duration::from_secs(60 + (sent / 500) as u64);
    while total() < sent as f64 {
        let asked = Instant::now();
        let answer = http(&retrainer.addr, "GET", "/healthz", b"");
        let took = asked.elapsed();
        assert!(
            answer.as_ref().is_some_and(|(s, _)| *s == 200) && took < Duration::from_secs(5),
            "/healthz during the flood: {answer:?} after {took:?}\n{}",
            retrainer.log()
        );
        slowest_health = slowest_health.max(took);
        health_checks += 1;
        assert!(
            Instant::now() < flood_deadline,
            "the join read {} of {sent} labels in {:?}:\n{}",
            total(),
            flood_started.elapsed(),
            retrainer.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    producer.join().unwrap();
    let flood_s = flood_started.elapsed().as_secs_f64();

    // Valid labels after the flood still join.
    let valid: Vec<Msg> = (0..VALID)
        .map(|i| label_record(&format!("ok{i}"), LABELS[i % 3]))
        .collect();
    produce(&broker.address(), &labels_topic, &valid);
    let deadline = Instant::now() + Duration::from_secs(30);
    let joined = "triage_performance_labels_total{result=\"joined\"}";
    while retrainer.metric(joined) < VALID as f64 {
        assert!(
            Instant::now() < deadline,
            "{} of {VALID} valid labels joined after the flood:\n{}",
            retrainer.metric(joined),
            retrainer.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss_after = memory_mb(pid, "VmRSS");
    let rss_peak = memory_mb(pid, "VmHWM");
    let unknown = retrainer.metric("triage_performance_labels_total{result=\"unknown_class\"}");
    let other = retrainer.metric("triage_performance_other_class_labels_total");
    eprintln!(
        "label flood: {sent} labels ({flood} new classes on one id, {SPREAD} on ids of their own) read in {flood_s:.1} s; \
         RSS {rss_before:.1} MiB before, {rss_after:.1} MiB after, peak {rss_peak:.1} MiB; \
         /healthz answered {health_checks} times, slowest {slowest_health:?}; {other} labels counted as class other"
    );
    assert_eq!(unknown, (flood + SPREAD) as f64);
    // retrain.join_max_unknown_classes = 16 slots, one of them still held by the
    // flood id's pair when its last label was a new class: the rest are `other`.
    let free_slots = if flood.is_multiple_of(10) { 16 } else { 15 };
    assert_eq!(
        other,
        (SPREAD - free_slots) as f64,
        "labels counted as other"
    );
    assert!(
        rss_peak < rss_before + max_growth_mb,
        "RSS peaked at {rss_peak:.1} MiB, more than {max_growth_mb} MiB over {rss_before:.1} MiB before the flood"
    );
    let log = retrainer.stop();
    common::assert_no_panic(&log);
}
