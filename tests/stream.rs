//! `triage run` against a real broker (tansu, started per test on its own port) with
//! the real embedding model. Messages are customer-support questions (short, so the
//! suite stays fast); every test uses its own topics and consumer group.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::alertmanager::Alertmanager;
use common::broker::Broker;
use common::kafka::{
    Collector, Msg, Names, http, produce, produce_with, support_config, wait_http,
};
use common::prometheus::Prometheus;
use common::server::Server as Service;
use common::*;

/// A registry with one support-intent champion (v1), trained once for the suite.
fn trained_registry() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch("stream-model");
        train_support(&dir, &[]);
        dir
    })
}

/// Support questions as messages: {"id", "question", "class_name"}.
fn questions(range: std::ops::Range<usize>) -> Vec<(String, Vec<u8>)> {
    support_rows()
        .into_iter()
        .skip(range.start)
        .take(range.len())
        .enumerate()
        .map(|(i, (class, question, _))| {
            let id = format!("m-{}", range.start + i);
            let payload = serde_json::json!({"id": id, "question": question, "class_name": class});
            (id, payload.to_string().into_bytes())
        })
        .collect()
}

fn keyed(messages: &[(String, Vec<u8>)]) -> Vec<Msg> {
    messages
        .iter()
        .map(|(id, p)| (Some(id.clone().into_bytes()), Some(p.clone())))
        .collect()
}

/// The stream tests run one at a time: each starts a broker and one or two services
/// that load the model, which is all two cores can carry without timing out.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Setup {
    _serial: std::sync::MutexGuard<'static, ()>,
    dir: PathBuf,
    names: Names,
    broker: Broker,
    config: PathBuf,
}

impl Setup {
    fn new(tag: &str, partitions: u32, extra_toml: &str) -> Self {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = scratch(tag);
        let registry = dir.join("registry");
        copy_dir(&trained_registry().join("registry"), &registry);
        let broker = Broker::start(&dir);
        let names = Names::new(tag);
        let config = dir.join("triage.toml");
        let stream = format!(
            "[stream]\nmax_wait_ms = 200\nmax_message_bytes = 2000\ndrain_timeout_ms = 5000\n{extra_toml}"
        );
        std::fs::write(
            &config,
            support_config(&broker.address(), &names, "", &stream),
        )
        .unwrap();
        let setup = Self {
            _serial: serial,
            dir,
            names,
            broker,
            config,
        };
        let (out, stdout, stderr) =
            run(setup
                .triage()
                .args(["topics", "create", "--partitions", &partitions.to_string()]));
        assert!(out.status.success(), "{stdout}\n{stderr}");
        setup
    }

    fn triage(&self) -> Command {
        let mut cmd = triage(&self.dir);
        cmd.arg("--config").arg(&self.config);
        cmd
    }

    /// Starts `triage run` with its HTTP server on a free port.
    fn start(&self, name: &str) -> Service {
        self.start_with(name, &[])
    }

    /// Starts `triage run` with extra environment variables.
    fn start_with(&self, name: &str, env: &[(&str, &str)]) -> Service {
        let mut cmd = self.triage();
        cmd.envs(env.iter().copied());
        Service::start(cmd, "run", self.dir.join(format!("{name}.log")))
    }

    /// v2: the fixture's data again, from its feature cache, stored without
    /// promotion.
    fn train_second_version(&self) {
        let data = trained_registry().join("support-440.csv");
        let (out, _, stderr) = run(self
            .triage()
            .env(
                "TRIAGE__PATHS__FEATURE_CACHE_DIR",
                trained_registry().join("features"),
            )
            .args(["train", "--no-promote", "--data"])
            .arg(&data));
        assert!(out.status.success(), "{stderr}");
    }

    fn collector(&self) -> Collector {
        Collector::new(
            &self.broker.address(),
            &[&self.names.predictions, &self.names.dlq],
        )
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn ids(records: &[&common::kafka::Out]) -> Vec<String> {
    records
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_message_gets_a_prediction_or_a_dead_letter_with_its_reason() {
    // Small windows: many of them, so the two workers finish some out of order.
    let s = Setup::new("exact", 2, "max_messages = 6\n");
    let valid = questions(0..300);
    let mut messages = keyed(&valid);
    let poison: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("not_json", Some(b"this is not json".to_vec())),
        ("not_utf8", Some(b"\xff\xfe\xfd".to_vec())),
        ("not_object", Some(b"[1, 2, 3]".to_vec())),
        (
            "missing_text",
            Some(br#"{"id": "p-4", "body": "wrong field"}"#.to_vec()),
        ),
        (
            "empty_text",
            Some(br#"{"id": "p-5", "question": "   "}"#.to_vec()),
        ),
        (
            "wrong_type",
            Some(br#"{"id": "p-6", "question": 42}"#.to_vec()),
        ),
        (
            "too_large",
            Some(format!(r#"{{"id": "p-7", "question": "{}"}}"#, "x".repeat(3000)).into_bytes()),
        ),
        ("no_payload", None),
    ];
    for (i, (_, payload)) in poison.iter().enumerate() {
        messages.insert(
            i * 37,
            (Some(format!("p-{i}").into_bytes()), payload.clone()),
        );
    }
    produce(&s.broker.address(), &s.names.input, &messages);
    let service = s.start("a");

    let mut out = s.collector();
    let total = messages.len();
    let pred_topic = s.names.predictions.clone();
    let dlq_topic = s.names.dlq.clone();
    let complete = out.until(Duration::from_secs(120), |r| {
        let p: HashSet<_> = r
            .iter()
            .filter(|o| o.topic == pred_topic)
            .map(|o| o.json()["id"].to_string())
            .collect();
        let d = r.iter().filter(|o| o.topic == dlq_topic).count();
        p.len() + d >= total
    });
    // Drift statistics are exported per window for the serving model.
    let (_, metrics) = http(&service.addr, "GET", "/metrics", b"").unwrap();
    for name in [
        "triage_drift_statistic{",
        "triage_drift_detected{",
        "triage_drift_class_share{",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    assert!(service.metric("triage_dlq_messages_total{reason=\"not_json\"}") >= 1.0);
    let log = service.stop();
    assert!(complete, "not every message came out:\n{log}");

    let predicted: HashSet<String> = ids(&out.on(&s.names.predictions)).into_iter().collect();
    let expected: HashSet<String> = valid.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        predicted, expected,
        "predictions are exactly the valid messages"
    );
    // Workers embed windows side by side, but a partition's predictions keep its
    // order: within each output partition, source offsets per input partition rise.
    let mut last: HashMap<(i32, i64), i64> = HashMap::new();
    for o in out.on(&s.names.predictions) {
        let source = &o.json()["source"];
        let (partition, offset) = (
            source["partition"].as_i64().unwrap(),
            source["offset"].as_i64().unwrap(),
        );
        if let Some(previous) = last.insert((o.partition, partition), offset) {
            assert!(
                previous < offset,
                "offset {offset} of input partition {partition} came after {previous}"
            );
        }
    }
    let dead = out.on(&s.names.dlq);
    let reasons: BTreeMap<String, usize> = dead.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.headers["triage.error.reason"].clone())
            .or_default() += 1;
        m
    });
    let want: BTreeMap<String, usize> = poison.iter().map(|(r, _)| (r.to_string(), 1)).collect();
    assert_eq!(reasons, want);
    for d in &dead {
        assert_eq!(d.headers["triage.source.topic"], s.names.input);
        assert!(d.headers.contains_key("triage.source.offset"));
        assert!(d.headers.contains_key("triage.failed_at"));
    }
    let not_json = dead
        .iter()
        .find(|d| d.headers["triage.error.reason"] == "not_json")
        .unwrap();
    assert_eq!(
        not_json.payload.as_deref(),
        Some(&b"this is not json"[..]),
        "payload unchanged"
    );
    let p = &out.on(&s.names.predictions)[0].json();
    for key in [
        "label",
        "confidence",
        "probabilities",
        "model_version",
        "window_id",
        "timings_ms",
    ] {
        assert!(!p[key].is_null(), "prediction lacks {key}: {p}");
    }
    let t = &p["timings_ms"];
    for stage in ["decode", "embed", "classify", "in_service"] {
        assert!(t[stage].as_f64().is_some(), "timings_ms lacks {stage}: {t}");
    }
    assert!(
        t["in_service"].as_f64() >= t["embed"].as_f64(),
        "the time in the service includes the embedding: {t}"
    );
}

/// A record at Kafka's default broker limit (max.message.bytes 1,048,588), less room
/// for the batch around it.
const AT_BROKER_LIMIT: usize = 1_048_000;

#[test]
fn hostile_envelopes_are_dead_lettered_and_nothing_stalls_even_after_kill_9() {
    use common::kafka::{RawRecord, produce_raw};
    // Commits rarely, so the kill lands before the first service's offsets were
    // committed and the second reads the hostile records again.
    let s = Setup::new(
        "envelope",
        2,
        "[kafka.librdkafka_options]\n\"auto.commit.interval.ms\" = \"600000\"\n",
    );
    let valid = questions(0..300);
    let mut records: Vec<RawRecord> = valid
        .iter()
        .map(|(id, p)| RawRecord {
            key: Some(id.clone().into_bytes()),
            payload: Some(p.clone()),
            headers: vec![(b"trace".to_vec(), b"ok".to_vec())],
        })
        .collect();
    let review = |id: &str| {
        Some(
            serde_json::json!({"id": id, "question": "where is my refund?"})
                .to_string()
                .into_bytes(),
        )
    };
    let big = format!(
        r#"{{"id": "h-big", "question": "{}"}}"#,
        "z".repeat(AT_BROKER_LIMIT - 40)
    );
    // (what it is, the record, the dead-letter reason or None for a prediction)
    let hostile: Vec<(&str, RawRecord, Option<&str>)> = vec![
        (
            "header name not UTF-8",
            RawRecord {
                key: Some(b"h-0".to_vec()),
                payload: review("h-0"),
                headers: vec![(b"\xff\xfe\x80name".to_vec(), b"v".to_vec())],
            },
            Some("header_not_utf8"),
        ),
        (
            "1.2 MB key",
            RawRecord {
                key: Some(vec![b'k'; 1_200_000]),
                payload: review("h-1"),
                headers: vec![],
            },
            Some("key_too_large"),
        ),
        (
            "5,000 headers",
            RawRecord {
                key: Some(b"h-2".to_vec()),
                payload: review("h-2"),
                headers: (0..5_000)
                    .map(|i| (format!("x-{i}").into_bytes(), b"1".to_vec()))
                    .collect(),
            },
            Some("too_many_headers"),
        ),
        (
            "a 300 KB header value",
            RawRecord {
                key: Some(b"h-3".to_vec()),
                payload: review("h-3"),
                headers: vec![(b"blob".to_vec(), vec![b'b'; 300_000])],
            },
            Some("headers_too_large"),
        ),
        (
            "a null key",
            RawRecord {
                key: None,
                payload: review("h-4"),
                headers: vec![],
            },
            None,
        ),
        (
            "a record at the broker's size limit",
            RawRecord {
                key: Some(b"h-5".to_vec()),
                payload: Some(big.into_bytes()),
                headers: vec![],
            },
            Some("too_large"),
        ),
    ];
    for (i, (_, record, _)) in hostile.iter().enumerate() {
        records.insert(20 + i * 45, record.clone());
    }
    produce_raw(
        &s.broker.address(),
        &s.names.input,
        &records,
        &[("message.max.bytes", "4000000")],
    );
    let first = s.start("first");
    let mut out = s.collector();
    let pred = s.names.predictions.clone();
    let started = std::time::Instant::now();
    let some = out.wait_count(&pred, 60, Duration::from_secs(90));
    assert!(
        some,
        "no predictions from the first service:\n{}",
        first.stop()
    );
    first.kill();
    eprintln!(
        "envelope test: killed the first service (-9) after {} predictions",
        out.on(&pred).len()
    );
    std::thread::sleep(Duration::from_secs(11));

    let second = s.start("second");
    let mut expected: HashSet<String> = valid.iter().map(|(id, _)| id.clone()).collect();
    expected.insert("h-4".into());
    let dlq = s.names.dlq.clone();
    let want_dead = hostile.iter().filter(|h| h.2.is_some()).count();
    let complete = out.until(Duration::from_secs(120), |r| {
        let dead: HashSet<&str> = r
            .iter()
            .filter(|o| o.topic == dlq)
            .map(|o| o.headers["triage.error.reason"].as_str())
            .collect();
        expected.is_subset(&common::kafka::ids_of(r, &pred)) && dead.len() >= want_dead
    });
    let took = started.elapsed();
    let restarts = second.metric("triage_dlq_bounded_total{part=\"key\"}");
    let log = second.stop();
    assert!(
        complete,
        "not every message came out after the restart:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(restarts >= 1.0, "the key was bounded: {restarts}");

    // Valid messages: predicted (more than once only if redelivered), never dead.
    let dead = out.on(&s.names.dlq);
    let reasons: BTreeMap<String, usize> = dead.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d.headers["triage.error.reason"].clone())
            .or_default() += 1;
        m
    });
    for (what, _, reason) in &hostile {
        if let Some(reason) = reason {
            let n = reasons.get(*reason).copied().unwrap_or(0);
            assert!(
                (1..=2).contains(&n),
                "{what}: {n} dead letters ({reasons:?})"
            );
        }
    }
    assert_eq!(
        reasons.len(),
        want_dead,
        "only the hostile records are dead letters: {reasons:?}"
    );
    for d in &dead {
        let size = d.key.as_ref().map_or(0, Vec::len)
            + d.payload.as_ref().map_or(0, Vec::len)
            + d.headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        assert!(size < 1_000_000, "a dead letter of {size} bytes");
        assert!(d.headers.contains_key("triage.source.offset"));
    }
    let by_reason = |r: &str| {
        dead.iter()
            .find(|d| d.headers["triage.error.reason"] == r)
            .unwrap()
    };
    let key = by_reason("key_too_large");
    assert_eq!(key.headers["triage.original.key_size"], "1200000");
    assert_eq!(
        key.key.as_ref().map(Vec::len),
        Some(64),
        "the key's sha256 in hex"
    );
    assert_eq!(
        by_reason("too_many_headers").headers["triage.original.header_count"],
        "5000"
    );
    assert!(
        by_reason("header_not_utf8")
            .headers
            .contains_key("triage.original.headers_sha256")
    );
    let cut = by_reason("too_large");
    assert_eq!(cut.headers["triage.truncated"], "true");
    assert!(cut.payload.as_ref().unwrap().len() > 900_000);
    let null_key = out
        .on(&s.names.predictions)
        .into_iter()
        .find(|o| o.json()["id"] == "h-4")
        .unwrap();
    assert_eq!(null_key.key.as_deref(), Some(&b"h-4"[..]), "keyed by id");
    eprintln!(
        "envelope test: {} valid messages and {} hostile records, all out {:.1} s after the first start (one kill -9); {} predictions, dead letters {reasons:?}",
        valid.len(),
        hostile.len(),
        took.as_secs_f64(),
        out.on(&s.names.predictions).len(),
    );
}

#[test]
fn crash_between_produce_and_commit_loses_nothing() {
    // Commits rarely, so the SIGKILL lands after the first 100 predictions were
    // produced but before their offsets were committed. Only those 100 are on the
    // topic when the service dies, so the crash cannot land after all the work.
    let s = Setup::new(
        "crash",
        2,
        "[kafka.librdkafka_options]\n\"auto.commit.interval.ms\" = \"600000\"\n",
    );
    let messages = questions(0..400);
    let (before, after) = messages.split_at(100);
    produce(&s.broker.address(), &s.names.input, &keyed(before));
    let service = s.start("first");
    let mut out = s.collector();
    let pred = s.names.predictions.clone();
    assert!(out.wait_count(&pred, 100, Duration::from_secs(60)));
    service.kill();
    // Messages keep arriving while the service is down.
    produce(&s.broker.address(), &s.names.input, &keyed(after));
    // The dead member leaves the group when its session (10 s) expires; tansu does
    // not rebalance a group while a dead member is still in it.
    std::thread::sleep(Duration::from_secs(11));

    let service = s.start("second");
    // Nothing was committed: the first 100 are read and predicted again.
    let redelivered = out.wait_count(&pred, 500, Duration::from_secs(120));
    let log = service.stop();
    let all = ids(&out.on(&s.names.predictions));
    assert!(
        redelivered,
        "{} predictions, expected 400 + 100 redelivered:\n{log}",
        all.len()
    );
    let mut count: HashMap<&str, usize> = HashMap::new();
    for id in &all {
        *count.entry(id.as_str()).or_default() += 1;
    }
    for (i, (id, _)) in messages.iter().enumerate() {
        let expected = if i < 100 { 2 } else { 1 };
        assert_eq!(
            count.get(id.as_str()),
            Some(&expected),
            "predictions for {id}"
        );
    }
    eprintln!(
        "crash test: {} predictions for {} ids, {} duplicates",
        all.len(),
        messages.len(),
        all.len() - messages.len()
    );
}

#[test]
fn two_instances_share_partitions_and_one_takes_over() {
    let s = Setup::new("pair", 4, "");
    let a = s.start("a");
    let b = s.start("b");
    let assigned = |svc: &Service| svc.metric("triage_assigned_partitions") as u32;
    assert!(
        wait_http(
            &a.addr,
            "/readyz",
            Duration::from_secs(30),
            |_, _| assigned(&a) + assigned(&b) == 4 && assigned(&b) > 0 && assigned(&a) > 0
        ),
        "partitions not split: a={} b={}",
        assigned(&a),
        assigned(&b)
    );
    let first = questions(0..300);
    produce(&s.broker.address(), &s.names.input, &keyed(&first));
    let mut out = s.collector();
    let pred = s.names.predictions.clone();
    assert!(out.wait_count(&pred, 300, Duration::from_secs(90)));
    let a_count = a.metric("triage_windows_total");
    let b_count = b.metric("triage_windows_total");
    assert!(
        a_count > 0.0 && b_count > 0.0,
        "both instances worked: a={a_count} b={b_count}"
    );

    b.stop();
    assert!(
        wait_http(
            &a.addr,
            "/readyz",
            Duration::from_secs(30),
            |_, _| assigned(&a) == 4
        ),
        "a did not take over all partitions"
    );
    let second = questions(300..500);
    produce(&s.broker.address(), &s.names.input, &keyed(&second));
    let expected: HashSet<String> = first
        .iter()
        .chain(&second)
        .map(|(id, _)| id.clone())
        .collect();
    let complete = out.wait_ids(&pred, &expected, Duration::from_secs(90));
    let log = a.stop();
    assert!(complete, "ids missing after hand-over:\n{log}");
}

#[test]
fn broker_outage_is_survived_and_shown_in_readiness() {
    let mut s = Setup::new("outage", 2, "");
    let service = s.start("a");
    let before = questions(0..100);
    produce(&s.broker.address(), &s.names.input, &keyed(&before));
    let pred = s.names.predictions.clone();
    {
        let mut out = s.collector();
        assert!(out.wait_count(&pred, 100, Duration::from_secs(60)));
    }
    s.broker.stop();
    let started = std::time::Instant::now();
    assert!(
        wait_http(
            &service.addr,
            "/readyz",
            Duration::from_secs(30),
            |status, _| status == 503
        ),
        "readiness did not show the outage"
    );
    std::thread::sleep(
        Duration::from_secs(10).saturating_sub(started.elapsed()) + Duration::from_secs(1),
    );
    s.broker.resume();
    assert!(
        wait_http(
            &service.addr,
            "/readyz",
            Duration::from_secs(60),
            |status, _| status == 200
        ),
        "service did not recover:\n{}",
        service.log()
    );
    let after = questions(100..200);
    produce(&s.broker.address(), &s.names.input, &keyed(&after));
    let expected: HashSet<String> = before
        .iter()
        .chain(&after)
        .map(|(id, _)| id.clone())
        .collect();
    let mut out = s.collector();
    let complete = out.wait_ids(&pred, &expected, Duration::from_secs(90));
    let log = service.stop();
    assert!(complete, "ids missing after the outage:\n{log}");
}

#[test]
fn a_service_told_to_stop_while_the_broker_is_gone_stops_in_bounded_time() {
    let mut s = Setup::new("stop-outage", 2, "");
    let mut service = s.start("a");
    produce(
        &s.broker.address(),
        &s.names.input,
        &keyed(&questions(0..20)),
    );
    {
        let mut out = s.collector();
        assert!(out.wait_count(&s.names.predictions.clone(), 20, Duration::from_secs(60)));
    }
    s.broker.stop();
    // SIGINT once the service has seen the broker go (readiness says so), not after a
    // guessed pause.
    if let Err(last) = wait_readyz(&service.addr, 503, Duration::from_secs(30)) {
        panic!(
            "readiness did not show the outage within 30 s; last answer: {last}\n{}",
            service.log()
        );
    }
    let asked = std::time::Instant::now();
    service.signal("-INT");
    // drain_timeout_ms is 5 s here: the close gives up after it, the producer's flush
    // after 5 s more.
    let status =
        common::wait_exit(&mut service.child, Duration::from_secs(30)).unwrap_or_else(|| {
            panic!(
                "still running 30 s after SIGINT with the broker gone:\n{}",
                service.log()
            )
        });
    let log = service.log();
    assert!(status.success(), "exit {status}:\n{log}");
    assert!(log.contains("stopping anyway"), "{log}");
    eprintln!(
        "stopped {:.1} s after SIGINT",
        asked.elapsed().as_secs_f64()
    );
}

#[test]
fn new_champion_is_served_within_a_window_and_a_corrupt_one_is_refused() {
    let s = Setup::new("swap", 1, "");
    s.train_second_version();
    let service = s.start("a");
    let pred = s.names.predictions.clone();
    let mut out = s.collector();
    // Sends questions[range] and returns the model version of each of their predictions.
    let mut versions_for = |range: std::ops::Range<usize>| -> Vec<String> {
        produce(
            &s.broker.address(),
            &s.names.input,
            &keyed(&questions(range.clone())),
        );
        assert!(out.wait_count(&pred, range.end, Duration::from_secs(60)));
        out.on(&pred)[range]
            .iter()
            .map(|o| o.json()["model_version"].as_str().unwrap().to_string())
            .collect()
    };

    let first = versions_for(0..20);
    assert!(first.iter().all(|v| v == "v1"), "{first:?}");

    let (status, _, _) = run(s.triage().args(["models", "promote", "v2"]));
    assert!(status.status.success());
    let after = versions_for(20..40);
    assert!(
        after.iter().all(|v| v == "v2"),
        "first window after promotion: {after:?}"
    );
    assert_eq!(
        service.metric("triage_model_swaps_total{result=\"swapped\"}"),
        1.0
    );

    // v3: a damaged copy of v2. Promoting it must not interrupt serving.
    let versions = s.dir.join("registry/versions");
    copy_dir(&versions.join("v2"), &versions.join("v3"));
    std::fs::write(versions.join("v3/model.json"), b"{ not a model").unwrap();
    let (status, _, _) = run(s.triage().args(["models", "promote", "v3"]));
    assert!(status.status.success());
    let last = versions_for(40..60);
    assert!(
        last.iter().all(|v| v == "v2"),
        "the old model keeps serving: {last:?}"
    );
    assert_eq!(
        service.metric("triage_model_swaps_total{result=\"refused\"}"),
        1.0
    );
    let log = service.stop();
    assert!(log.contains("New champion refused"), "{log}");
}

#[test]
fn a_shadowed_challenger_travels_with_the_champions_predictions_until_cleared() {
    let s = Setup::new("shadow", 1, "");
    s.train_second_version();
    let service = s.start("a");
    let pred = s.names.predictions.clone();
    let mut out = s.collector();
    // Sends questions[range] and returns their prediction records.
    let mut records_for = |range: std::ops::Range<usize>| -> Vec<serde_json::Value> {
        produce(
            &s.broker.address(),
            &s.names.input,
            &keyed(&questions(range.clone())),
        );
        assert!(out.wait_count(&pred, range.end, Duration::from_secs(60)));
        out.on(&pred)[range].iter().map(|o| o.json()).collect()
    };
    let versions = |records: &[serde_json::Value]| -> Vec<(String, Option<String>)> {
        records
            .iter()
            .map(|r| {
                (
                    r["model_version"].as_str().unwrap().to_string(),
                    r.get("shadow")
                        .map(|s| s["model_version"].as_str().unwrap().to_string()),
                )
            })
            .collect()
    };
    let v = |champion: &str, shadow: Option<&str>| (champion.to_string(), shadow.map(String::from));

    // Mean ms per window of embed and classify (the shadow runs in classify), printed
    // as a rough measure of what shadowing costs.
    let stage_ms = |records: &[serde_json::Value], stage: &str| -> f64 {
        let ms: Vec<f64> = records
            .iter()
            .map(|r| r["timings_ms"][stage].as_f64().unwrap())
            .collect();
        ms.iter().sum::<f64>() / ms.len() as f64
    };
    let before = records_for(0..20);
    let first = versions(&before);
    assert!(first.iter().all(|r| *r == v("v1", None)), "{first:?}");

    let (status, _, stderr) = run(s.triage().args([
        "models",
        "shadow",
        "v2",
        "--reason",
        "try it on live traffic",
    ]));
    assert!(status.status.success(), "{stderr}");
    let shadowed = records_for(20..40);
    let seen = versions(&shadowed);
    assert!(
        seen.iter().all(|r| *r == v("v1", Some("v2"))),
        "first window after shadowing: {seen:?}"
    );
    for r in &shadowed {
        let shadow = &r["shadow"];
        assert!(shadow["label"].is_string(), "{r}");
        assert!(shadow["confidence"].as_f64().unwrap() > 0.0, "{r}");
        assert!(
            shadow["probabilities"].as_object().unwrap().len() > 1,
            "{r}"
        );
    }
    assert_eq!(
        service.metric("triage_shadow_info{model_version=\"v2\"}"),
        1.0
    );
    assert!(service.metric("triage_shadow_predictions_total") >= 20.0);

    let (status, _, stderr) = run(s.triage().args(["models", "shadow", "--clear"]));
    assert!(status.status.success(), "{stderr}");
    let after = records_for(40..60);
    let last = versions(&after);
    assert!(
        last.iter().all(|r| *r == v("v1", None)),
        "first window after clearing: {last:?}"
    );
    for (phase, records) in [
        ("no shadow", &before),
        ("shadow v2", &shadowed),
        ("cleared", &after),
    ] {
        println!(
            "{phase:<10} embed {:.2} ms, classify {:.3} ms per window",
            stage_ms(records, "embed"),
            stage_ms(records, "classify")
        );
    }
    assert_eq!(service.metric("triage_shadow_refusals_total"), 0.0);
    let log = service.stop();
    assert!(log.contains("Scoring the challenger in shadow"), "{log}");
    assert!(log.contains("shadow scoring stopped"), "{log}");
}

#[test]
fn http_classify_and_metrics_answer_with_clear_errors() {
    let s = Setup::new(
        "http",
        1,
        "[http]\nmax_request_bytes = 1024\nmax_texts_per_request = 3\n",
    );
    let service = s.start("a");
    let a = &service.addr;
    let (status, body) = http(
        a,
        "POST",
        "/v1/classify",
        br#"{"text": "I want my money back for this order"}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["model_version"], "v1");
    assert_eq!(v["predictions"][0]["label"], "REFUND");

    let (status, body) = http(a, "POST", "/v1/classify", b"{oops").unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("not JSON"), "{body}");
    let (status, _) = http(
        a,
        "POST",
        "/v1/classify",
        br#"{"texts": ["a", "b", "c", "d"]}"#,
    )
    .unwrap();
    assert_eq!(status, 400);
    let (status, _) = http(a, "POST", "/v1/classify", br#"{"text": 5}"#).unwrap();
    assert_eq!(status, 400);
    let big = format!(r#"{{"text": "{}"}}"#, "x".repeat(2000));
    let (status, _) = http(a, "POST", "/v1/classify", big.as_bytes()).unwrap();
    assert_eq!(status, 413);
    assert_eq!(http(a, "GET", "/healthz", b"").unwrap().0, 200);
    let (_, metrics) = http(a, "GET", "/metrics", b"").unwrap();
    for name in [
        "triage_windows_total 0",
        "triage_model_info",
        "triage_ready 1",
        "triage_assigned_partitions 1",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    service.stop();
}

#[test]
fn console_send_and_tail_round_trip_messages_in_the_configured_fields() {
    let s = Setup::new("console", 1, "");
    let data = support_subset(&s.dir);
    let (out, stdout, stderr) = run(s
        .triage()
        .args(["topics", "send", "--rows", "5", "--data"])
        .arg(&data));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("sent 5 messages"), "{stdout}");
    let (out, stdout, stderr) = run(s.triage().args([
        "topics",
        "tail",
        "--topic",
        &s.names.input,
        "--count",
        "5",
        "--idle-s",
        "20",
    ]));
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    for l in &lines {
        assert!(
            l["question"].is_string() && l["class_name"].is_string() && l["id"].is_string(),
            "{l}"
        );
    }
}

/// Support questions spread over the whole file (every fifth row from `offset`), as
/// messages: the training subset takes offset 0, so other offsets are unseen rows
/// from the same distribution.
fn spread_questions(offset: usize, count: usize) -> Vec<(String, Vec<u8>)> {
    questions(0..2200)
        .into_iter()
        .skip(offset)
        .step_by(5)
        .take(count)
        .collect()
}

/// Yelp reviews sent as support messages (text in the "question" field).
fn reviews_as_questions(count: usize) -> Vec<(String, Vec<u8>)> {
    std::fs::read_to_string(shared("yelp/reviews-5k.jsonl"))
        .unwrap()
        .lines()
        .take(count)
        .enumerate()
        .map(|(i, line)| {
            let review: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = format!("r-{i}");
            let payload = serde_json::json!({"id": id, "question": review["text"]});
            (id, payload.to_string().into_bytes())
        })
        .collect()
}

#[test]
fn prometheus_scrapes_the_service_and_the_drift_alert_follows_the_traffic() {
    let s = Setup::new("prometheus", 2, "");
    let service = s.start("a");
    // The repository's config and rules; only the drift alert's `for` is shortened
    // from 10 minutes to 2 seconds (and the intervals to 1 s) to fit a test.
    let prom = Prometheus::start(&s.dir, &service.addr, |rules| {
        let (head, tail) = rules.split_once("- alert: TriageDriftDetected").unwrap();
        let tail = tail.replacen("for: 10m", "for: 2s", 1);
        format!("{head}- alert: TriageDriftDetected{tail}")
    });
    assert!(
        prom.wait(r#"up{job="triage"}"#, Duration::from_secs(30), |r| r
            .first()
            .is_some_and(|s| s["value"][1] == "1")),
        "prometheus does not scrape triage:\n{}",
        prom.log()
    );
    let drift_alert = r#"ALERTS{alertname="TriageDriftDetected"}"#;
    let detectors = |p: &Prometheus| -> String {
        p.query("triage_drift_detected")
            .iter()
            .map(|s| format!("{}={}", s["metric"]["detector"], s["value"][1]))
            .collect::<Vec<_>>()
            .join(" ")
    };

    // Stationary: unseen questions from the training distribution.
    let mut collector = s.collector();
    let stationary = spread_questions(2, 320);
    produce(&s.broker.address(), &s.names.input, &keyed(&stationary));
    assert!(
        collector.wait_count(&s.names.predictions, 320, Duration::from_secs(120)),
        "stationary traffic not labelled:\n{}",
        service.log()
    );
    // Prometheus has scraped the full sliding window (5 x up to 64 messages)...
    assert!(
        prom.wait(
            r#"triage_drift_statistic{statistic="messages",model_version="v1"}"#,
            Duration::from_secs(30),
            |r| r.first().is_some_and(|s| s["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v >= 200.0))
        ),
        "drift statistics not scraped"
    );
    for statistic in [
        "prediction_psi",
        "mmd_p_value",
        "mean_confidence",
        "text_length_psi",
    ] {
        let expr = format!(r#"triage_drift_statistic{{statistic="{statistic}"}}"#);
        assert!(prom.value(&expr).is_some(), "{statistic} not in Prometheus");
    }
    assert_eq!(prom.query("triage_drift_class_share").len(), 11);
    // ...and evaluated the rule past its `for` (2 s, plus an interval): neither
    // pending nor firing.
    let scraped = std::time::SystemTime::now();
    if let Err(last) = wait_rule_evaluated(
        &prom,
        "TriageDriftDetected",
        scraped + Duration::from_secs(4),
        Duration::from_secs(30),
    ) {
        panic!("TriageDriftDetected not evaluated 4 s after the window was scraped: {last}");
    }
    let statistics: Vec<String> = prom
        .query("triage_drift_statistic")
        .iter()
        .map(|s| format!("{}={}", s["metric"]["statistic"], s["value"][1]))
        .collect();
    eprintln!("stationary: {}", statistics.join(" "));
    assert!(
        prom.query(drift_alert).is_empty(),
        "drift alert on stationary traffic: {:?}; detectors {}",
        prom.query(drift_alert),
        detectors(&prom)
    );

    // Drifted: Yelp reviews arrive on the support channel.
    produce(
        &s.broker.address(),
        &s.names.input,
        &keyed(&reviews_as_questions(200)),
    );
    assert!(
        prom.wait(
            r#"ALERTS{alertname="TriageDriftDetected",alertstate="firing"}"#,
            Duration::from_secs(120),
            |r| !r.is_empty()
        ),
        "drift alert did not fire; detectors {}\n{}",
        detectors(&prom),
        service.log()
    );
    let firing: Vec<String> = prom
        .query(r#"ALERTS{alertname="TriageDriftDetected",alertstate="firing"}"#)
        .iter()
        .map(|s| s["metric"]["detector"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        firing
            .iter()
            .any(|d| d == "embedding" || d == "text_length"),
        "{firing:?}"
    );
    service.stop();
}

#[test]
fn a_dead_letter_too_large_for_the_broker_is_truncated_and_nothing_stalls() {
    // The input topic takes a 1.5 MB message; the dead-letter topic keeps the
    // default limit (and so does triage's producer: about 1 MB).
    let s = Setup::new("big", 2, "");
    let valid = questions(0..100);
    let mut messages = keyed(&valid);
    let big = format!(
        r#"{{"id": "big-1", "question": "{}"}}"#,
        "y".repeat(1_500_000)
    );
    let big_len = big.len();
    messages.insert(50, (Some(b"big-1".to_vec()), Some(big.into_bytes())));
    produce_with(
        &s.broker.address(),
        &s.names.input,
        &messages,
        &[("message.max.bytes", "4000000")],
    );
    let started = std::time::Instant::now();
    let service = s.start("a");
    let mut out = s.collector();
    let expected: HashSet<String> = valid.iter().map(|(id, _)| id.clone()).collect();
    let pred = s.names.predictions.clone();
    let dlq = s.names.dlq.clone();
    let complete = out.until(Duration::from_secs(90), |r| {
        expected.is_subset(&common::kafka::ids_of(r, &pred)) && r.iter().any(|o| o.topic == dlq)
    });
    let took = started.elapsed();
    let truncated = service.metric("triage_dlq_truncated_total");
    let log = service.stop();
    assert!(complete, "not every message came out within 90 s:\n{log}");
    let dead = out.on(&s.names.dlq);
    assert_eq!(dead.len(), 1, "one dead letter");
    let d = dead[0];
    assert_eq!(d.key.as_deref(), Some(&b"big-1"[..]));
    assert_eq!(d.headers["triage.error.reason"], "too_large");
    assert_eq!(d.headers["triage.truncated"], "true");
    assert_eq!(d.headers["triage.original.size"], big_len.to_string());
    assert_eq!(d.headers["triage.original.sha256"].len(), 64);
    let kept = d.payload.as_ref().map_or(0, Vec::len);
    assert!(kept > 0 && kept < 1_000_000, "{kept} bytes kept");
    assert!(truncated >= 1.0, "triage_dlq_truncated_total = {truncated}");
    assert!(
        !log.contains("producing again"),
        "the too-large record was retried:\n{log}"
    );
    eprintln!(
        "big message: {} predictions and a dead letter truncated from {big_len} to {kept} bytes, all out {:.1} s after the start",
        expected.len(),
        took.as_secs_f64()
    );
}

#[test]
fn a_static_member_killed_and_restarted_at_once_gets_its_partitions_back() {
    let s = Setup::new("static", 2, "");
    // The instance id comes from the environment, as a StatefulSet pod's name would.
    let env = [
        (
            "TRIAGE__KAFKA__GROUP_INSTANCE_ID",
            "triage-{env:TRIAGE_TEST_POD}",
        ),
        ("TRIAGE_TEST_POD", "pod-0"),
    ];
    let messages = questions(0..300);
    let (before, after) = messages.split_at(100);
    produce(&s.broker.address(), &s.names.input, &keyed(before));
    let service = s.start_with("first", &env);
    let mut out = s.collector();
    let pred = s.names.predictions.clone();
    assert!(out.wait_count(&pred, 50, Duration::from_secs(60)));
    service.kill();
    // Restarted at once, while the killed member is still in the group.
    let restarted = std::time::Instant::now();
    let service = s.start_with("second", &env);
    let owns_all = wait_http(&service.addr, "/readyz", Duration::from_secs(15), |_, _| {
        service.metric("triage_assigned_partitions") as u32 == 2
    });
    let took = restarted.elapsed();
    produce(&s.broker.address(), &s.names.input, &keyed(after));
    let expected: HashSet<String> = messages.iter().map(|(id, _)| id.clone()).collect();
    let complete = out.wait_ids(&pred, &expected, Duration::from_secs(120));
    let log = service.stop();
    assert!(
        owns_all && took < Duration::from_secs(15),
        "the restarted instance did not own both partitions within 15 s ({:.1} s):\n{log}",
        took.as_secs_f64()
    );
    assert!(complete, "ids missing after the restart:\n{log}");
    let dead = out.on(&s.names.dlq).len();
    assert_eq!(dead, 0);
    eprintln!(
        "static membership: restarted instance owned 2/2 partitions {:.1} s after its start; {} predictions for {} messages",
        took.as_secs_f64(),
        out.on(&pred).len(),
        messages.len()
    );
}

#[test]
fn a_batch_run_over_a_file_predicts_every_valid_line_and_dead_letters_the_rest() {
    let dir = scratch("batch");
    let registry = dir.join("registry");
    copy_dir(&trained_registry().join("registry"), &registry);
    let input = dir.join("messages.jsonl");
    let mut lines: Vec<String> = questions(0..150)
        .into_iter()
        .map(|(_, p)| String::from_utf8(p).unwrap())
        .collect();
    let malformed = [
        (20, "this is not json", "not_json"),
        (60, r#"{"id": "x", "question": "   "}"#, "empty_text"),
        (90, r#"{"id": "y", "body": "no question"}"#, "missing_text"),
        (120, "[1, 2]", "not_object"),
    ];
    for (at, line, _) in malformed {
        lines.insert(at, line.to_string());
    }
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = dir.join("predictions.jsonl");
    let metrics = dir.join("metrics.prom");
    let (out, _, stderr) = run(triage(&dir)
        .arg("--config")
        .arg(repo().join("config/support.toml"))
        .args(["run", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .arg("--metrics-file")
        .arg(&metrics)
        .arg("--review")
        .arg(dir.join("review.jsonl")));
    assert_no_panic(&stderr);
    assert_eq!(
        out.status.code(),
        Some(4),
        "exit 4: some lines dead-lettered\n{stderr}"
    );
    let predictions = std::fs::read_to_string(&output).unwrap();
    let dead = std::fs::read_to_string(dir.join("predictions.jsonl.dlq.jsonl")).unwrap();
    assert_eq!(predictions.lines().count(), 150, "{stderr}");
    assert_eq!(dead.lines().count(), 4);
    assert_eq!(
        predictions.lines().count() + dead.lines().count(),
        lines.len()
    );
    for ((at, _, reason), line) in malformed.iter().zip(dead.lines()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["reason"], *reason);
        // Line numbers are 1-based; each earlier insert shifted the later ones.
        assert_eq!(v["source"]["line"], *at as u64 + 1, "{v}");
    }
    let first: serde_json::Value =
        serde_json::from_str(predictions.lines().next().unwrap()).unwrap();
    assert_eq!(first["id"], "m-0");
    assert!(first["label"].is_string() && first["model_version"] == "v1");
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("triage_dlq_messages_total{reason=\"not_json\"} 1"),
        "{prom}"
    );
    assert!(
        prom.contains("triage_drift_statistic{"),
        "drift statistics as in the service"
    );
    assert!(stderr.contains("154 messages: 150 predicted"), "{stderr}");
    // Every prediction is routed by the card's threshold; each one routed to a person
    // has its review record, with its text.
    let routed: Vec<serde_json::Value> = predictions
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        routed
            .iter()
            .all(|p| p["route"] == "auto" || p["route"] == "review"),
        "{:?}",
        routed.first()
    );
    let to_review: Vec<&serde_json::Value> =
        routed.iter().filter(|p| p["route"] == "review").collect();
    let reviews = std::fs::read_to_string(dir.join("review.jsonl")).unwrap();
    assert_eq!(reviews.lines().count(), to_review.len(), "{reviews}");
    for (line, p) in reviews.lines().zip(&to_review) {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["id"], p["id"]);
        assert!(r["text"].as_str().is_some_and(|t| !t.is_empty()), "{r}");
    }
    let auto = routed.len() - to_review.len();
    assert!(
        prom.contains(&format!(
            "triage_routes_total{{model_version=\"v1\",route=\"auto\"}} {auto}"
        )),
        "{prom}"
    );
    eprintln!(
        "batch routing: {auto} of {} automatic, {} to review",
        routed.len(),
        to_review.len()
    );
}

/// POSTs an Alertmanager notification to the retrainer; returns the status.
fn post_alert(addr: &str, token: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let body = br#"{"version":"4","status":"firing","receiver":"triage-retrainer","groupKey":"{}:{alertname=\"TriageDriftDetected\"}","alerts":[{"status":"firing","labels":{"alertname":"TriageDriftDetected","detector":"embedding"},"annotations":{},"startsAt":"2026-11-29T00:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"0123456789abcdef"}],"groupLabels":{},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://test"}"#;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /v1/alerts HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The value of the first metric line that starts with `name` and contains `labels`.
fn metric_value(body: &str, name: &str, labels: &str) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Writes the first 40 questions of each of `intents` as a training CSV.
fn write_intents_csv(path: &Path, by: &BTreeMap<String, Vec<(String, String)>>, intents: &[&str]) {
    let mut csv = String::from("class_name,question,id\n");
    for intent in intents {
        for (id, question) in &by[*intent][..40] {
            csv.push_str(&format!(
                "{intent},\"{}\",{id}\n",
                question.replace('"', "\"\"")
            ));
        }
    }
    std::fs::write(path, csv).unwrap();
}

/// The whole loop's processes on a real broker: a champion (v2) that knows 4 of the
/// 11 support intents, `triage retrainer` (with `retrainer_env`), Alertmanager
/// routing to it, `triage run` ("a") and Prometheus scraping it and the retrainer.
struct LoopRig {
    // Dropped in this order: the processes before the broker and its folder.
    prom: Prometheus,
    service: Service,
    am: Alertmanager,
    retrainer: Service,
    s: Setup,
    by: BTreeMap<String, Vec<(String, String)>>,
    narrow: [&'static str; 4],
    narrow_version: &'static str,
}

impl LoopRig {
    fn start(tag: &str, retrainer_env: &[(&str, &str)]) -> Self {
        let s = Setup::new(tag, 2, "");
        let by = questions_by_intent();
        // The champion knows 4 intents of 11: the traffic outgrows it.
        let narrow = ["ACCOUNT", "PAYMENT", "REFUND", "SHIPPING"];
        write_intents_csv(&s.dir.join("narrow.csv"), &by, &narrow);
        let (out, stdout, stderr) = run(s
            .triage()
            .args(["train", "--data"])
            .arg(s.dir.join("narrow.csv")));
        assert!(out.status.success(), "{stdout}\n{stderr}");

        // The retrainer, with its token; Alertmanager routing to it; Prometheus.
        let token = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978";
        let token_file = s.dir.join("retrain.token");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let mut retrainer_cmd = s.triage();
        retrainer_cmd
            .env("TRIAGE__RETRAIN__WEBHOOK_TOKEN_FILE", &token_file)
            .env("TRIAGE__RETRAIN__TRAINING_DATA", "none")
            .envs(retrainer_env.iter().copied());
        let retrainer = Service::start(retrainer_cmd, "retrainer", s.dir.join("retrainer.log"));
        // Without the token, or with a wrong one: refused, nothing starts.
        assert_eq!(post_alert(&retrainer.addr, None), 401);
        assert_eq!(
            post_alert(&retrainer.addr, Some("wrong-token-wrong-token")),
            401
        );
        let am = Alertmanager::start(&s.dir, &retrainer.addr, &token_file, |c| {
            c.replace("group_wait: 1m", "group_wait: 1s")
        });
        let service = s.start("a");
        let prom = Prometheus::start_with(
            &s.dir,
            &service.addr,
            |rules| {
                let (head, tail) = rules.split_once("- alert: TriageDriftDetected").unwrap();
                let tail = tail.replacen("for: 10m", "for: 2s", 1);
                format!("{head}- alert: TriageDriftDetected{tail}")
            },
            |config| {
                config
                    .replace("127.0.0.1:9093", &am.addr)
                    .replace("127.0.0.1:9465", &retrainer.addr)
            },
        );
        let rig = Self {
            prom,
            service,
            am,
            retrainer,
            s,
            by,
            narrow,
            narrow_version: "v2",
        };
        assert!(rig.retrainer_metrics().contains("triage_retrain_running 0"));
        rig
    }

    /// `triage models list --json`'s aliases.
    fn aliases(&self) -> serde_json::Value {
        let (_, list, _) = run(self.s.triage().args(["models", "list", "--json"]));
        serde_json::from_str::<serde_json::Value>(&list).unwrap()["aliases"].clone()
    }

    /// `triage models decisions --json`, oldest first.
    fn decisions(&self) -> Vec<serde_json::Value> {
        let (_, decisions, _) = run(self.s.triage().args(["models", "decisions", "--json"]));
        let decisions: serde_json::Value = serde_json::from_str(&decisions).unwrap();
        decisions["decisions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Produces `messages` and waits for their predictions; returns how many
    /// predictions `out` held before them.
    fn publish(&self, out: &mut Collector, messages: &[Msg]) -> usize {
        let pred = &self.s.names.predictions;
        let before = out.on(pred).len();
        produce(&self.s.broker.address(), &self.s.names.input, messages);
        assert!(out.wait_count(pred, before + messages.len(), Duration::from_secs(120)));
        before
    }

    /// The retrainer's log and its race metrics: what a stuck race says.
    fn race_state(&self) -> String {
        let metrics = self.retrainer_metrics();
        let race: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("triage_race"))
            .collect();
        format!("{}\n{}", self.retrainer.log(), race.join("\n"))
    }

    /// Waits up to 300 s for a job to end shadowing, rejecting or failing.
    fn wait_job_settled(&self) -> bool {
        self.prom.wait("up", Duration::from_secs(300), |_| {
            self.jobs("shadow") + self.jobs("rejected") + self.jobs("failed") >= 1.0
        })
    }

    /// Waits up to `secs` for the registry's `alias` to name `version`.
    fn wait_alias(&self, alias: &str, version: &str, secs: u64) -> bool {
        self.prom.wait("up", Duration::from_secs(secs), |_| {
            self.aliases()[alias] == version
        })
    }

    /// Produces `messages` and waits for their predictions: both consumers (both
    /// partitions) publish `champion`'s labels with `challenger`'s prediction in shadow
    /// beside each one.
    fn publish_with_shadow(
        &self,
        out: &mut Collector,
        messages: &[Msg],
        (champion, challenger): (&str, &str),
    ) {
        let pred = &self.s.names.predictions;
        let before = self.publish(out, messages);
        let shadowed: Vec<(i32, serde_json::Value)> = out.on(pred)[before..]
            .iter()
            .map(|o| (o.partition, o.json()))
            .collect();
        assert!(
            shadowed.iter().all(|(_, p)| p["model_version"] == champion
                && p["shadow"]["model_version"] == challenger),
            "{:?}",
            shadowed.iter().find(|(_, p)| p["shadow"].is_null())
        );
        let partitions: HashSet<i32> = shadowed.iter().map(|(p, _)| *p).collect();
        assert_eq!(partitions.len(), 2, "both consumers score the shadow");
    }

    /// Traffic like the recent traffic a challenger learns from: the four intents
    /// three times as often as the other seven, as in the stationary and drifted
    /// phases together; messages and their late labels.
    fn recovery(&self) -> (Vec<Msg>, Vec<Msg>) {
        let others: Vec<&str> = self
            .by
            .keys()
            .map(String::as_str)
            .filter(|i| !self.narrow.contains(i))
            .collect();
        let (mut messages, mut labels) = phase(&self.by, &self.narrow, 157..196, "rc");
        let (more, more_labels) = phase(&self.by, &others, 157..169, "rc");
        messages.extend(more);
        labels.extend(more_labels);
        (messages, labels)
    }

    fn retrainer_metrics(&self) -> String {
        http(&self.retrainer.addr, "GET", "/metrics", b"")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// `triage_retrain_jobs_total{verdict}`.
    fn jobs(&self, verdict: &str) -> f64 {
        metric_value(
            &self.retrainer_metrics(),
            "triage_retrain_jobs_total",
            &format!("verdict=\"{verdict}\""),
        )
        .unwrap_or(0.0)
    }

    /// The drift alerts firing for `version`.
    fn firing(&self, version: &str) -> Vec<serde_json::Value> {
        self.prom.query(&format!(
            r#"ALERTS{{alertname="TriageDriftDetected",alertstate="firing",model_version="{version}"}}"#
        ))
    }

    fn drift_messages(&self, version: &str) -> f64 {
        self.prom
            .value(&format!(
                r#"triage_drift_statistic{{statistic="messages",model_version="{version}"}}"#
            ))
            .unwrap_or(0.0)
    }
}

#[test]
fn drift_alert_retrains_promotes_and_the_consumers_switch() {
    let rig = LoopRig::start("loop", &[("TRIAGE__RETRAIN__ROLLOUT", "direct")]);
    let (s, by, narrow, narrow_version) = (&rig.s, &rig.by, rig.narrow, rig.narrow_version);
    let all: Vec<&str> = by.keys().map(String::as_str).collect();
    let (retrainer, am, service, prom) = (&rig.retrainer, &rig.am, &rig.service, &rig.prom);
    let retrainer_metrics = || rig.retrainer_metrics();
    let jobs = |verdict: &str| rig.jobs(verdict);
    let firing = |version: &str| rig.firing(version);
    let drift_messages = |version: &str| rig.drift_messages(version);
    let mut out = s.collector();
    let pred = s.names.predictions.clone();

    // Stationary: unseen questions of the four intents; labels arrive late.
    let (messages, labels) = phase(by, &narrow, 40..120, "st");
    produce(&s.broker.address(), &s.names.input, &messages);
    assert!(
        out.wait_count(&pred, 320, Duration::from_secs(120)),
        "{}",
        service.log()
    );
    produce(&s.broker.address(), "labels", &labels);
    assert!(prom.wait("up", Duration::from_secs(20), |_| drift_messages(
        narrow_version
    ) >= 200.0));
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        firing(narrow_version).is_empty(),
        "drift alert on stationary traffic"
    );
    // The late labels of stationary traffic keep the champion's promise: tested
    // against its card (enough labelled pairs), not below it, no class it never
    // learned.
    let promise = |name: &str, version: &str| {
        metric_value(
            &retrainer_metrics(),
            &format!("{name}{{"),
            &format!("model_version=\"{version}\""),
        )
    };
    assert!(
        prom.wait("up", Duration::from_secs(60), |_| promise(
            "triage_performance_labelled_predictions",
            narrow_version
        )
        .is_some_and(|n| n >= 200.0)),
        "late labels of the stationary traffic not joined:\n{}",
        retrainer.log()
    );
    let kept = [
        promise("triage_performance_below_card", narrow_version),
        promise("triage_performance_new_class", narrow_version),
    ];
    let promised = promise("triage_performance_promised_macro_f1", narrow_version);
    assert_eq!(
        kept,
        [Some(0.0), Some(0.0)],
        "stationary traffic broke the promise of {narrow_version} (card macro-F1 {promised:?}):\n{}",
        retrainer_metrics()
    );
    assert!(
        promised.is_some_and(|f| f > 0.8),
        "card macro-F1 {promised:?}"
    );
    assert_eq!(
        jobs("promoted") + jobs("rejected") + jobs("failed"),
        0.0,
        "no retrain"
    );

    // Drifted: all eleven intents; their labels arrive once they are predicted.
    let started = std::time::Instant::now();
    let (messages, labels) = phase(by, &all, 120..157, "dr");
    produce(&s.broker.address(), &s.names.input, &messages);
    assert!(out.wait_count(&pred, 320 + messages.len(), Duration::from_secs(120)));
    produce(&s.broker.address(), "labels", &labels);
    assert!(
        prom.wait("up", Duration::from_secs(120), |_| !firing(narrow_version)
            .is_empty()),
        "drift alert did not fire:\n{}\n{}",
        service.log(),
        http(&service.addr, "GET", "/metrics", b"")
            .map(|(_, body)| body)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("triage_drift"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let alert_at = started.elapsed();
    // The late labels name seven intents the champion never learned.
    assert!(
        prom.wait("up", Duration::from_secs(60), |_| promise(
            "triage_performance_new_class",
            narrow_version
        ) == Some(1.0)),
        "no new class measured for {narrow_version}:\n{}",
        retrainer_metrics()
    );
    let accepted = || {
        metric_value(
            &retrainer_metrics(),
            "triage_retrain_alerts_total",
            "action=\"accepted\"",
        )
        .unwrap_or(0.0)
    };
    assert!(
        prom.wait("up", Duration::from_secs(60), |_| accepted() >= 1.0),
        "no webhook:\n{}",
        am.log()
    );
    let webhook_at = started.elapsed();
    assert!(
        prom.wait("up", Duration::from_secs(300), |_| jobs("promoted")
            + jobs("rejected")
            + jobs("failed")
            >= 1.0),
        "the job did not finish:\n{}",
        retrainer.log()
    );
    let job_done_at = started.elapsed();
    assert_eq!(
        jobs("promoted"),
        1.0,
        "the challenger was not promoted:\n{}",
        retrainer.log()
    );

    // The consumers switch at their next window; the drift signals recover on
    // traffic like the recent traffic the challenger learnt from (the four intents
    // three times as often as the other seven, as in the stationary and drifted
    // phases together).
    let (messages, labels) = rig.recovery();
    produce(&s.broker.address(), &s.names.input, &messages);
    let new_version = "v3";
    assert!(
        out.until(Duration::from_secs(120), |r| r.iter().any(|o| o.topic
            == pred
            && o.json()["model_version"] == new_version)),
        "no prediction by {new_version}:\n{}",
        service.log()
    );
    let switched_at = started.elapsed();
    assert!(out.wait_count(&pred, 320 + 407 + messages.len(), Duration::from_secs(120)));
    assert!(prom.wait("up", Duration::from_secs(30), |_| drift_messages(
        new_version
    ) >= 200.0));
    std::thread::sleep(Duration::from_secs(5));
    // The replaced champion's drift series are gone, so its alert resolves and is
    // not sent again: the promotion answered it, and no second job starts.
    assert!(
        prom.wait("up", Duration::from_secs(30), |_| firing(narrow_version)
            .is_empty()),
        "the drift alert of {narrow_version} still fires after the swap"
    );
    // The late labels of the recovery traffic: the performance signal recovers too.
    produce(&s.broker.address(), "labels", &labels);
    let macro_f1 = |version: &str| {
        metric_value(
            &retrainer_metrics(),
            "triage_performance_macro_f1",
            &format!("model_version=\"{version}\""),
        )
    };
    assert!(
        prom.wait("up", Duration::from_secs(60), |_| macro_f1(new_version)
            .is_some_and(|f| f >= 0.9)),
        "rolling macro-F1 of {new_version}: {:?}",
        macro_f1(new_version)
    );
    let old_f1 = macro_f1(narrow_version).unwrap_or(f64::NAN);
    assert!(
        old_f1 < 0.5,
        "rolling macro-F1 of {narrow_version}: {old_f1}"
    );
    let detectors = prom.query(&format!(
        r#"triage_drift_detected{{model_version="{new_version}"}} == 1"#
    ));
    assert!(
        firing(new_version).is_empty() && detectors.is_empty(),
        "{new_version} drifts: {detectors:?}"
    );

    // The decision on record: both models on the same held-out recent rows.
    let (_, decisions, _) = run(s.triage().args(["models", "decisions", "--json"]));
    let decisions: serde_json::Value = serde_json::from_str(&decisions).unwrap();
    let d = decisions["decisions"]
        .as_array()
        .and_then(|e| e.last())
        .cloned()
        .unwrap_or_default();
    let champion_f1 = d["champion"]["metrics"]["macro_f1"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let challenger_f1 = d["challenger"]["metrics"]["macro_f1"]
        .as_f64()
        .unwrap_or(f64::NAN);
    assert_eq!(d["verdict"], "promoted", "{d}");
    assert!(challenger_f1 > champion_f1 + 0.2, "{d}");

    assert_eq!(
        jobs("promoted") + jobs("rejected") + jobs("failed"),
        1.0,
        "one job"
    );
    // A challenger that does not beat the champion by the margin is rejected.
    let (out_cli, stdout, stderr) = run(s
        .triage()
        .env("TRIAGE__RETRAIN__TRAINING_DATA", "none")
        .env("TRIAGE__RETRAIN__MIN_IMPROVEMENT", "0.5")
        .arg("retrain"));
    assert_eq!(
        out_cli.status.code(),
        Some(3),
        "rejected:\n{stdout}\n{stderr}"
    );
    let (_, history, _) = run(s.triage().args(["models", "history"]));
    assert!(
        history.lines().last().unwrap_or("").contains(new_version),
        "{history}"
    );

    eprintln!(
        "retraining loop: drift traffic at 0 s; alert firing at {:.1} s; webhook received by {:.1} s; job finished by {:.1} s (job {:.1} s: {}); consumers on {new_version} by {:.1} s; held-out macro-F1 champion {narrow_version} {champion_f1:.4}, challenger {new_version} {challenger_f1:.4}; rolling macro-F1 from late labels: {narrow_version} {old_f1:.4}, {new_version} {:.4}",
        alert_at.as_secs_f64(),
        webhook_at.as_secs_f64(),
        job_done_at.as_secs_f64(),
        d["duration_seconds"].as_f64().unwrap_or(f64::NAN),
        d["steps"],
        switched_at.as_secs_f64(),
        macro_f1(new_version).unwrap_or(f64::NAN),
    );
    rig.service.stop();
}

/// Issue 24's loop with `retrain.rollout = "shadow"` on two consumers: drift -> the
/// alert -> a challenger that wins its held-out slice goes into shadow (not
/// promoted) -> both consumers score it beside the champion -> the late labels of
/// the messages both scored race them -> the race promotes it -> the consumers serve
/// it. Every step is a real process.
#[test]
fn a_challenger_in_shadow_wins_the_live_race_and_both_consumers_switch() {
    let rig = LoopRig::start(
        "race",
        &[
            ("TRIAGE__RETRAIN__ROLLOUT", "shadow"),
            ("TRIAGE__ROLLOUT__MIN_LABELLED", "100"),
        ],
    );
    let (s, by) = (&rig.s, &rig.by);
    let (champion, challenger) = (rig.narrow_version, "v3");
    let all: Vec<&str> = by.keys().map(String::as_str).collect();
    let second = s.start("b");
    let mut out = s.collector();
    let pred = s.names.predictions.clone();

    // Drifted traffic of all eleven intents, then its late labels.
    let started = std::time::Instant::now();
    let (messages, labels) = phase(by, &all, 120..157, "dr");
    produce(&s.broker.address(), &s.names.input, &messages);
    assert!(out.wait_count(&pred, messages.len(), Duration::from_secs(120)));
    produce(&s.broker.address(), "labels", &labels);
    assert!(
        rig.prom.wait("up", Duration::from_secs(120), |_| !rig
            .firing(champion)
            .is_empty()),
        "drift alert did not fire:\n{}",
        rig.service.log()
    );
    let alert_at = started.elapsed();
    assert!(
        rig.wait_job_settled(),
        "the job did not finish:\n{}",
        rig.retrainer.log()
    );
    let job_at = started.elapsed();
    assert_eq!(rig.jobs("shadow"), 1.0, "{}", rig.retrainer.log());
    assert_eq!(rig.jobs("promoted"), 0.0);
    let aliases = || rig.aliases();
    assert_eq!(aliases()["champion"], champion);
    assert_eq!(aliases()["challenger"], challenger);

    // Traffic like the recent one: both consumers publish the champion's labels and
    // carry the challenger's prediction beside them, on both partitions.
    let (messages, labels) = rig.recovery();
    rig.publish_with_shadow(&mut out, &messages, (champion, challenger));
    let shadow_at = started.elapsed();
    produce(&s.broker.address(), "labels", &labels);

    // The race: promoted by the paired test on the labelled messages both scored.
    assert!(
        rig.prom
            .wait("up", Duration::from_secs(120), |_| rig.jobs("promoted")
                >= 1.0),
        "the race did not promote {challenger}:\n{}",
        rig.race_state()
    );
    let verdict_at = started.elapsed();
    assert_eq!(aliases()["champion"], challenger);
    assert!(aliases()["challenger"].is_null());
    let d = rig.decisions().pop().unwrap();
    assert_eq!(
        (d["trigger"].as_str(), d["verdict"].as_str()),
        (Some("race"), Some("promoted")),
        "{d}"
    );
    let race = &d["race"];
    let live = |role: &str| race[format!("{role}_macro_f1")].as_f64().unwrap();
    assert!(race["labelled"].as_u64().unwrap() >= 100, "{race}");
    assert!(live("challenger") > live("champion") + 0.2, "{race}");
    assert!(race["promote_p_value"].as_f64().unwrap() < 0.05, "{race}");
    let (_, history, _) = run(s.triage().args(["models", "history"]));
    assert!(
        history
            .lines()
            .any(|l| l.contains("promote") && l.contains("race") && l.contains(challenger)),
        "{history}"
    );
    // The guard: the champion it replaced goes back into shadow, by `guard`.
    assert!(
        rig.wait_alias("challenger", champion, 30),
        "no guard:\n{}",
        rig.retrainer.log()
    );

    // Both consumers serve the new champion at their next window.
    let (messages, _) = phase(by, &all, 169..172, "nw");
    let before = rig.publish(&mut out, &messages);
    let served: HashSet<String> = out.on(&pred)[before..]
        .iter()
        .map(|o| o.json()["model_version"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(served, HashSet::from([challenger.to_string()]));
    assert!(
        out.on(&pred)[before..]
            .iter()
            .all(|o| o.json()["shadow"]["model_version"] == champion),
        "the replaced champion is scored in shadow while the guard runs"
    );
    let switched_at = started.elapsed();
    eprintln!(
        "live race: drift traffic at 0 s; alert firing at {:.1} s; job done ({challenger} in shadow) by {:.1} s; shadow scored on both consumers by {:.1} s; race promoted {challenger} by {:.1} s on {} labelled messages (live macro-F1 {champion} {:.4}, {challenger} {:.4}; bootstrap p {:.4}, McNemar {} vs {} p {:.2e}); both consumers on {challenger} by {:.1} s",
        alert_at.as_secs_f64(),
        job_at.as_secs_f64(),
        shadow_at.as_secs_f64(),
        verdict_at.as_secs_f64(),
        race["labelled"],
        live("champion"),
        live("challenger"),
        race["promote_p_value"].as_f64().unwrap_or(f64::NAN),
        race["mcnemar_challenger_only"],
        race["mcnemar_champion_only"],
        race["mcnemar_p_value"].as_f64().unwrap_or(f64::NAN),
        switched_at.as_secs_f64(),
    );
    second.stop();
}

/// Issue 24's guard: a bad model promoted by hand (it learnt four other intents) is
/// raced against the champion it replaced, in shadow, on the late labels of the
/// messages both scored, and rolled back by itself; `TriageRolledBack` fires. Then
/// the same bad model put in shadow as a challenger loses its race: rejected,
/// recorded, the champion untouched.
#[test]
fn a_bad_champion_promoted_by_hand_is_rolled_back_by_the_guard() {
    // Jobs the drift alert may start fail at once (too few rows): only the guard acts.
    let rig = LoopRig::start(
        "guard",
        &[
            ("TRIAGE__ROLLOUT__MIN_LABELLED", "100"),
            ("TRIAGE__ROLLOUT__GUARD_LABELLED", "300"),
            ("TRIAGE__ROLLOUT__GUARD_PREDICTIONS", "40"),
            ("TRIAGE__RETRAIN__MIN_RECENT_ROWS", "100000"),
        ],
    );
    let (s, by, narrow) = (&rig.s, &rig.by, rig.narrow);
    let (good, bad, unsure) = (rig.narrow_version, "v3", "v4");
    // The bad model (v3): the champion's own intents, each labelled as the next one
    // (a labelling mix-up): as sure of itself as the champion, and wrong.
    let mut csv = String::from("class_name,question,id\n");
    for (i, intent) in narrow.iter().enumerate() {
        for (id, question) in &by[*intent][..40] {
            let label = narrow[(i + 1) % narrow.len()];
            csv.push_str(&format!(
                "{label},\"{}\",{id}\n",
                question.replace('"', "\"\"")
            ));
        }
    }
    std::fs::write(s.dir.join("mixed-up.csv"), csv).unwrap();
    // The unsure model (v4): four intents the traffic does not have; on this traffic
    // its answers are close to a guess.
    let wrong = ["CONTACT", "DELIVERY", "FEEDBACK", "INVOICE"];
    write_intents_csv(&s.dir.join("wrong.csv"), by, &wrong);
    for data in ["mixed-up.csv", "wrong.csv"] {
        let (out_train, stdout, stderr) = run(s
            .triage()
            .args(["train", "--no-promote", "--data"])
            .arg(s.dir.join(data)));
        assert!(out_train.status.success(), "{stdout}\n{stderr}");
    }
    let (promoted, stdout, stderr) = run(s.triage().args(["models", "promote", bad]));
    assert!(promoted.status.success(), "{stdout}\n{stderr}");
    let promoted_at = std::time::Instant::now();
    let aliases = || rig.aliases();
    // The guard: the replaced champion back in shadow.
    assert!(
        rig.wait_alias("challenger", good, 30),
        "no guard:\n{}",
        rig.retrainer.log()
    );

    // Traffic of the champion's own intents: the bad model publishes, the good one
    // is scored beside it; then the late labels.
    let mut out = s.collector();
    let pred = s.names.predictions.clone();
    let (messages, labels) = phase(by, &narrow, 40..120, "gd");
    produce(&s.broker.address(), &s.names.input, &messages);
    assert!(out.wait_count(&pred, messages.len(), Duration::from_secs(120)));
    let records: Vec<serde_json::Value> = out.on(&pred).iter().map(|o| o.json()).collect();
    assert!(
        records
            .iter()
            .all(|p| p["model_version"] == bad && p["shadow"]["model_version"] == good),
        "{:?}",
        records.first()
    );
    // The labels arrive 20 at a time, as agents tag tickets: how many does it take?
    let mut sent = 0;
    for chunk in labels.chunks(20) {
        produce(&s.broker.address(), "labels", chunk);
        sent += chunk.len();
        // Pacing, not synchronisation: the wait below has its own deadline.
        std::thread::sleep(Duration::from_millis(700));
        if aliases()["champion"] == good {
            break;
        }
    }

    // Rolled back by the guard: the champion, the history, the decision, the alert.
    assert!(
        rig.wait_alias("champion", good, 120),
        "no rollback:\n{}",
        rig.retrainer.log()
    );
    let rolled_back_after = promoted_at.elapsed();
    assert!(aliases()["challenger"].is_null());
    let (_, history, _) = run(s.triage().args(["models", "history"]));
    let last = history.lines().last().unwrap_or("");
    assert!(
        last.contains("rollback") && last.contains("guard") && last.contains(good),
        "{history}"
    );
    let decisions = rig.decisions();
    let d = decisions
        .iter()
        .rev()
        .find(|d| d["trigger"] == "guard")
        .cloned()
        .unwrap_or_else(|| panic!("no guard decision: {decisions:?}"));
    let race = &d["race"];
    assert!(
        race["challenger_macro_f1"].as_f64().unwrap()
            > race["champion_macro_f1"].as_f64().unwrap() + 0.3,
        "{race}"
    );
    assert!(
        rig.prom.wait("up", Duration::from_secs(30), |_| !rig
            .prom
            .query(r#"ALERTS{alertname="TriageRolledBack",alertstate="firing"}"#)
            .is_empty()),
        "TriageRolledBack did not fire"
    );
    assert_eq!(
        metric_value(
            &rig.retrainer_metrics(),
            "triage_rollbacks_total",
            "by=\"guard\""
        ),
        Some(1.0)
    );
    eprintln!(
        "guard: {bad} promoted by hand; rolled back to {good} {:.1} s later, {sent} late labels sent, {} late-labelled messages both scored behind the verdict (live macro-F1 {bad} {:.4}, {good} {:.4}; bootstrap p {:.4}; McNemar {} vs {}); history: {last}",
        rolled_back_after.as_secs_f64(),
        race["labelled"],
        race["champion_macro_f1"].as_f64().unwrap_or(f64::NAN),
        race["challenger_macro_f1"].as_f64().unwrap_or(f64::NAN),
        race["promote_p_value"].as_f64().unwrap_or(f64::NAN),
        race["mcnemar_champion_only"],
        race["mcnemar_challenger_only"],
    );

    // The same bad model as a challenger in shadow: it loses the live race.
    let (shadowed, stdout, stderr) = run(s.triage().args(["models", "shadow", bad]));
    assert!(shadowed.status.success(), "{stdout}\n{stderr}");
    let (messages, labels) = phase(by, &narrow, 120..150, "ls");
    let before = rig.publish(&mut out, &messages);
    assert!(
        out.on(&pred)[before..]
            .iter()
            .all(|o| o.json()["shadow"]["model_version"] == bad),
        "the challenger is scored in shadow"
    );
    produce(&s.broker.address(), "labels", &labels);
    assert!(
        rig.prom
            .wait("up", Duration::from_secs(120), |_| aliases()["challenger"]
                .is_null()),
        "the race did not end:\n{}",
        rig.retrainer.log()
    );
    let lost = rig.decisions().pop().unwrap();
    assert_eq!(
        (lost["trigger"].as_str(), lost["verdict"].as_str()),
        (Some("race"), Some("rejected")),
        "{lost}"
    );
    assert!(
        lost["reason"]
            .as_str()
            .unwrap_or("")
            .contains("significantly worse"),
        "{lost}"
    );
    assert_eq!(aliases()["champion"], good, "the champion untouched");
    eprintln!("lost race: {}", lost["reason"].as_str().unwrap_or(""));

    // The unsure model promoted by hand: its confidence collapses next to the
    // champion it replaced on the same messages, and the guard rolls it back
    // without a single late label.
    let (promoted, stdout, stderr) = run(s.triage().args(["models", "promote", unsure]));
    assert!(promoted.status.success(), "{stdout}\n{stderr}");
    let promoted_at = std::time::Instant::now();
    assert!(
        rig.wait_alias("challenger", good, 30),
        "no guard:\n{}",
        rig.retrainer.log()
    );
    let (messages, _) = phase(by, &narrow, 150..190, "cc");
    rig.publish(&mut out, &messages);
    assert!(
        rig.wait_alias("champion", good, 60),
        "no rollback on the collapse:\n{}",
        rig.retrainer.log()
    );
    let d = rig.decisions().pop().unwrap();
    let reason = d["reason"].as_str().unwrap_or("");
    assert_eq!(d["trigger"], "guard", "{d}");
    assert!(reason.contains("confidence collapsed"), "{reason}");
    assert!(d["race"].is_null(), "no late label behind it: {d}");
    assert_eq!(
        metric_value(
            &rig.retrainer_metrics(),
            "triage_rollbacks_total",
            "by=\"guard\""
        ),
        Some(2.0)
    );
    eprintln!(
        "confidence guard: {unsure} promoted by hand; rolled back to {good} {:.1} s later, {} messages, no late label: {reason}",
        promoted_at.elapsed().as_secs_f64(),
        messages.len()
    );
}

/// Issue 24: a challenger that wins its held-out slice but loses live. A batch of
/// late labels tagged under a stale mapping (ACCOUNT and SHIPPING swapped) is what
/// the retraining job learns from and judges on: its challenger beats the champion
/// on that held-out slice and goes into shadow. The traffic's late labels then
/// follow the current mapping, and the live race on the messages both models scored
/// finds the challenger significantly worse: rejected, recorded, the champion
/// untouched and still served by both consumers.
#[test]
fn a_challenger_that_wins_held_out_but_loses_live_is_rejected_in_shadow() {
    let rig = LoopRig::start(
        "lose",
        &[
            ("TRIAGE__RETRAIN__ROLLOUT", "shadow"),
            ("TRIAGE__ROLLOUT__MIN_LABELLED", "40"),
        ],
    );
    let (s, by, narrow) = (&rig.s, &rig.by, rig.narrow);
    let (champion, challenger) = (rig.narrow_version, "v3");
    let second = s.start("b");
    let pred = s.names.predictions.clone();
    let mut out = Collector::new(&s.broker.address(), &[&pred, &s.names.features]);
    let aliases = || rig.aliases();
    let history = || {
        let (_, json, _) = run(s.triage().args(["models", "history", "--json"]));
        serde_json::from_str::<serde_json::Value>(&json).unwrap()["changes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let changes_before = history().len();

    // Stale labels: the champion's own intents, tagged with ACCOUNT and SHIPPING
    // swapped. The job trains on them (retrain.training_data = "none": recent rows
    // only) and holds out a slice of the same rows.
    let started = std::time::Instant::now();
    let (messages, labels) = phase(by, &narrow, 40..80, "stale");
    let stale: Vec<Msg> = labels
        .iter()
        .map(|(key, payload)| {
            let mut label: serde_json::Value =
                serde_json::from_slice(payload.as_deref().unwrap()).unwrap();
            let swapped = match label["label"].as_str() {
                Some("ACCOUNT") => "SHIPPING",
                Some("SHIPPING") => "ACCOUNT",
                _ => return (key.clone(), payload.clone()),
            };
            label["label"] = swapped.into();
            (key.clone(), Some(label.to_string().into_bytes()))
        })
        .collect();
    produce(&s.broker.address(), &s.names.input, &messages);
    assert!(out.wait_count(&pred, messages.len(), Duration::from_secs(120)));
    assert!(out.wait_count(&s.names.features, messages.len(), Duration::from_secs(30)));
    produce(&s.broker.address(), "labels", &stale);
    // The cheapest honest trigger: the alert Alertmanager would send, posted to the
    // retrainer's webhook with its token.
    let token = std::fs::read_to_string(s.dir.join("retrain.token")).unwrap();
    assert_eq!(post_alert(&rig.retrainer.addr, Some(token.trim())), 200);
    assert!(
        rig.wait_job_settled(),
        "the job did not finish:\n{}",
        rig.retrainer.log()
    );
    let job_at = started.elapsed();
    let job = rig.decisions().pop().unwrap();
    assert_eq!(
        (job["trigger"].as_str(), job["verdict"].as_str()),
        (Some("alert:TriageDriftDetected"), Some("shadow")),
        "{job}\n{}",
        rig.retrainer.log()
    );
    let held_out = |role: &str| job[role]["metrics"]["macro_f1"].as_f64().unwrap();
    let margin = job["margin_required"].as_f64().unwrap();
    assert_eq!(
        (
            job["champion"]["version"].as_str(),
            job["challenger"]["version"].as_str()
        ),
        (Some(champion), Some(challenger)),
        "{job}"
    );
    assert!(
        held_out("challenger") > held_out("champion") + margin,
        "the challenger did not win its held-out slice: {job}"
    );
    assert_eq!(aliases()["champion"], champion);
    assert_eq!(aliases()["challenger"], challenger);

    // Current labels: the same intents, tagged as the traffic means them. Both
    // consumers carry the challenger's prediction beside the champion's.
    let (messages, labels) = phase(by, &narrow, 80..95, "live");
    rig.publish_with_shadow(&mut out, &messages, (champion, challenger));
    let shadow_at = started.elapsed();
    produce(&s.broker.address(), "labels", &labels);

    // The race: rejected, significantly worse on the same late-labelled messages.
    assert!(
        rig.prom
            .wait("up", Duration::from_secs(120), |_| rig.jobs("rejected")
                + rig.jobs("promoted")
                >= 1.0),
        "the race did not settle:\n{}",
        rig.race_state()
    );
    let verdict_at = started.elapsed();
    assert_eq!(
        [
            rig.jobs("shadow"),
            rig.jobs("rejected"),
            rig.jobs("promoted"),
            rig.jobs("failed")
        ],
        [1.0, 1.0, 0.0, 0.0],
        "triage_retrain_jobs_total"
    );
    let d = rig.decisions().pop().unwrap();
    assert_eq!(
        (d["trigger"].as_str(), d["verdict"].as_str()),
        (Some("race"), Some("rejected")),
        "{d}"
    );
    assert!(
        d["reason"]
            .as_str()
            .unwrap_or("")
            .contains("significantly worse"),
        "{d}"
    );
    assert_eq!(
        (
            d["champion"]["version"].as_str(),
            d["challenger"]["version"].as_str()
        ),
        (Some(champion), Some(challenger)),
        "{d}"
    );
    let race = &d["race"];
    let live = |role: &str| race[format!("{role}_macro_f1")].as_f64().unwrap();
    assert!(race["labelled"].as_u64().unwrap() >= 40, "{race}");
    assert!(live("champion") > live("challenger") + 0.2, "{race}");
    assert!(race["lose_p_value"].as_f64().unwrap() < 0.05, "{race}");

    // The champion untouched: the only alias changes are the shadowing and its end.
    let changes = history();
    let moves: Vec<(&str, &str, &str)> = changes[changes_before..]
        .iter()
        .map(|c| {
            (
                c["action"].as_str().unwrap_or(""),
                c["by"].as_str().unwrap_or(""),
                c["to"].as_str().or(c["from"].as_str()).unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            ("shadow", "retrainer", challenger),
            ("unshadow", "race", challenger)
        ],
        "{changes:?}"
    );
    assert_eq!(aliases()["champion"], champion);
    assert!(aliases()["challenger"].is_null());

    // Both consumers serve the champion, with no shadow beside it.
    let (messages, _) = phase(by, &narrow, 95..98, "after");
    let before = rig.publish(&mut out, &messages);
    let after: Vec<(i32, serde_json::Value)> = out.on(&pred)[before..]
        .iter()
        .map(|o| (o.partition, o.json()))
        .collect();
    assert!(
        after
            .iter()
            .all(|(_, p)| p["model_version"] == champion && p.get("shadow").is_none()),
        "{after:?}"
    );
    assert_eq!(
        after.iter().map(|(p, _)| *p).collect::<HashSet<_>>().len(),
        2,
        "both consumers serve {champion}"
    );
    eprintln!(
        "lost live race: stale-labelled traffic at 0 s; job done ({challenger} in shadow) by {:.1} s, held-out macro-F1 on {} stale-labelled rows {champion} {:.4}, {challenger} {:.4} (margin {margin}); shadow scored on both consumers by {:.1} s; race rejected {challenger} by {:.1} s on {} labelled messages (live macro-F1 {champion} {:.4}, {challenger} {:.4}; bootstrap lose p {:.4}; McNemar: only {challenger} right {}, only {champion} right {}, p {:.2e}); {champion} still served by both consumers at {:.1} s",
        job_at.as_secs_f64(),
        job["rows"]["held_out"],
        held_out("champion"),
        held_out("challenger"),
        shadow_at.as_secs_f64(),
        verdict_at.as_secs_f64(),
        race["labelled"],
        live("champion"),
        live("challenger"),
        race["lose_p_value"].as_f64().unwrap_or(f64::NAN),
        race["mcnemar_challenger_only"],
        race["mcnemar_champion_only"],
        race["mcnemar_p_value"].as_f64().unwrap_or(f64::NAN),
        started.elapsed().as_secs_f64(),
    );
    second.stop();
}

/// Polls `GET /readyz` until it answers `status`; past `timeout`, the last answer
/// (status and body, or that none came) as the error.
fn wait_readyz(addr: &str, status: u16, timeout: Duration) -> Result<(), String> {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = "no answer".to_string();
    while std::time::Instant::now() < deadline {
        match http(addr, "GET", "/readyz", b"") {
            Some((got, _)) if got == status => return Ok(()),
            Some((got, body)) => last = format!("{got} {body}"),
            None => last = "no answer".into(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

/// Polls Prometheus's rules until alert rule `name` was last evaluated at or after
/// `at`; past `timeout`, what the rule said last (its last evaluation and health).
fn wait_rule_evaluated(
    prom: &Prometheus,
    name: &str,
    at: std::time::SystemTime,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = format!("no rule named {name}");
    while std::time::Instant::now() < deadline {
        if let Some(rule) = prom.rules().into_iter().find(|r| r["name"] == name) {
            let evaluated = rule["lastEvaluation"].as_str().unwrap_or_default();
            match humantime::parse_rfc3339(evaluated) {
                Ok(t) if t >= at => return Ok(()),
                Ok(_) => {
                    last = format!(
                        "last evaluated {evaluated}, health {}, wanted at or after {}",
                        rule["health"],
                        humantime::format_rfc3339_millis(at)
                    )
                }
                // Not evaluated yet (year 1), or not in UTC.
                Err(e) => last = format!("lastEvaluation {evaluated:?}: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(last)
}
