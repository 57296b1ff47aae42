//! `triage produce` against a real broker: a drift scenario's messages keyed by id,
//! their labels stripped, and the late labels arriving on the labels topic after
//! the delay.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::broker::Broker;
use common::kafka::{Collector, Names};

#[test]
fn produce_sends_a_mixed_replay_and_its_late_labels_after_the_delay() {
    let dir = common::scratch("produce");
    let broker = Broker::start(&dir);
    let names = Names::new("produce");
    let labels_topic = format!("labels-{}", names.group);
    let main = dir.join("main.jsonl");
    let mix = dir.join("mix.jsonl");
    let row = |id: &str, text: &str, label: &str| {
        serde_json::json!({ "id": id, "text": text, "label": label }).to_string() + "\n"
    };
    let main_rows: String = (0..30)
        .map(|i| row(&format!("m{i}"), &format!("order {i} arrived"), "positive"))
        .collect();
    // A malformed row is skipped and reported, not sent.
    std::fs::write(&main, main_rows + "not json\n").unwrap();
    let mix_rows: String = (0..30)
        .map(|i| row(&format!("x{i}"), &format!("refund {i} missing"), "negative"))
        .collect();
    std::fs::write(&mix, mix_rows).unwrap();

    let triage = || {
        let mut cmd = common::triage(&dir);
        cmd.env("TRIAGE__KAFKA__BROKERS", broker.address())
            .env("TRIAGE__KAFKA__INPUT_TOPICS", &names.input)
            .env("TRIAGE__KAFKA__LABELS_TOPIC", &labels_topic);
        cmd
    };
    let (out, stdout, stderr) = common::run(triage().args(["topics", "create", "-p", "2"]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let send = |seed: &str| {
        let started = Instant::now();
        let (out, stdout, stderr) = common::run(
            triage()
                .env("TRIAGE__DATA__FORMAT", "jsonl")
                .env("TRIAGE__DATA__ID_FIELD", "id")
                .env("TRIAGE__LABELS__RULE", "column")
                .env("TRIAGE__LABELS__FIELD", "label")
                .args(["produce", "--file"])
                .arg(&main)
                .arg("--mix")
                .arg(&mix)
                .args(["--topic", &names.input, "--scenario", "covariate-shift"])
                .args(["--share", "0.5", "--rows", "40", "--seed", seed])
                .args(["--labels-topic", "--labels-delay-s", "2"])
                .args(["--strip-labels", "--json"]),
        );
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        (summary, started.elapsed())
    };
    let (summary, took) = send("7");
    assert_eq!(summary["sent"], 40, "{summary}");
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["labels_sent"], 40);
    assert_eq!(summary["read"][0]["malformed"], 1);
    let from_mix = summary["from_mix"].as_u64().unwrap();
    assert!((10..=30).contains(&from_mix), "share 0.5 of 40: {from_mix}");
    assert!(
        took >= Duration::from_secs(2),
        "labels waited for the delay"
    );

    let mut out = Collector::new(&broker.address(), &[&names.input, &labels_topic]);
    assert!(out.wait_count(&labels_topic, 40, Duration::from_secs(30)));
    assert!(out.wait_count(&names.input, 40, Duration::from_secs(30)));
    let messages = out.on(&names.input);
    let mut ids = HashSet::new();
    for m in &messages {
        let json = m.json();
        let id = json["id"].as_str().unwrap().to_string();
        assert_eq!(m.key.as_deref(), Some(id.as_bytes()), "keyed by id");
        assert!(json.get("label").is_none(), "label stripped: {json}");
        ids.insert(id);
    }
    let mixed = ids.iter().filter(|i| i.starts_with('x')).count() as u64;
    assert_eq!(mixed, from_mix);
    for l in out.on(&labels_topic) {
        let json = l.json();
        let id = json["id"].as_str().unwrap();
        assert!(ids.contains(id), "a label for a sent message: {json}");
        assert_eq!(l.key.as_deref(), Some(id.as_bytes()));
        let want = if id.starts_with('x') {
            "negative"
        } else {
            "positive"
        };
        assert_eq!(json["label"], want);
    }
    // The same seed sends the same mix.
    let (again, _) = send("7");
    assert_eq!(again["from_mix"], summary["from_mix"]);
}
