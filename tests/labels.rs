//! Late labels on a real broker: `triage retrainer` joins them with the
//! predictions topic and exports rolling accuracy and macro-F1 per model version,
//! and a restarted retrainer rebuilds the same figures from the topics; with a
//! challenger in shadow, the live race of the two on the same messages.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::broker::{Broker, free_port};
use common::kafka::{
    Names, http, label_record, prediction_record, produce, shadowed_prediction_record,
};

const LABELS: [&str; 3] = common::kafka::SENTIMENTS;
const TOKEN: &str = "labels-test-token-0123456789";

struct Topics {
    names: Names,
    labels: String,
}

fn env(cmd: &mut std::process::Command, broker: &Broker, t: &Topics) {
    cmd.env("TRIAGE__KAFKA__BROKERS", broker.address())
        .env("TRIAGE__KAFKA__INPUT_TOPICS", &t.names.input)
        .env("TRIAGE__KAFKA__PREDICTIONS_TOPIC", &t.names.predictions)
        .env("TRIAGE__KAFKA__DLQ_TOPIC", &t.names.dlq)
        .env("TRIAGE__KAFKA__FEATURES_TOPIC", "")
        .env("TRIAGE__KAFKA__LABELS_TOPIC", &t.labels);
}

fn retrainer(dir: &std::path::Path, broker: &Broker, t: &Topics, port: u16) -> Child {
    retrainer_with(dir, broker, t, port, &[])
}

fn retrainer_with(
    dir: &std::path::Path,
    broker: &Broker,
    t: &Topics,
    port: u16,
    extra: &[(&str, &str)],
) -> Child {
    let mut cmd = common::triage(dir);
    env(&mut cmd, broker, t);
    cmd.envs(extra.iter().copied());
    cmd.env("TRIAGE__RETRAIN__WEBHOOK_TOKEN", TOKEN)
        .env("TRIAGE__RETRAIN__LISTEN", format!("127.0.0.1:{port}"))
        .env("TRIAGE__RETRAIN__JOIN_PENDING_S", "1")
        .env("TRIAGE__LOG__LEVEL", "info")
        .arg("retrainer")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("retrainer-{port}.log"))).unwrap());
    cmd.spawn().expect("triage retrainer starts")
}

/// `name{labels}` -> value of every sample on the retrainer's /metrics.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let Some((200, body)) = http(addr, "GET", "/metrics", b"") else {
        return BTreeMap::new();
    };
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Polls /metrics until every `expected` sample has its value (within 1e-9);
/// returns the last scrape and whether they all matched.
fn wait_for(
    addr: &str,
    expected: &[(String, f64)],
    timeout: Duration,
) -> (BTreeMap<String, f64>, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = scrape(addr);
        let all = expected
            .iter()
            .all(|(k, v)| got.get(k).is_some_and(|g| (g - v).abs() < 1e-9));
        if all || Instant::now() > deadline {
            return (got, all);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A scratch folder, a broker, and this test's topics (labels included), created.
fn setup(tag: &str) -> (std::path::PathBuf, Broker, Topics) {
    let dir = common::scratch(tag);
    let broker = Broker::start(&dir);
    let names = Names::new(tag);
    let t = Topics {
        labels: format!("labels-{}", names.group),
        names,
    };
    let mut create = common::triage(&dir);
    env(&mut create, &broker, &t);
    let (out, _, stderr) = common::run(create.args(["topics", "create", "--partitions", "2"]));
    assert!(out.status.success(), "topics create failed: {stderr}");
    (dir, broker, t)
}

fn f1(tp: f64, predicted: f64, support: f64) -> f64 {
    2.0 * tp / (predicted + support)
}

#[test]
fn late_labels_give_accuracy_and_macro_f1_per_version_and_a_restart_rebuilds_them() {
    let started = Instant::now();
    let (dir, broker, t) = setup("labels");

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = common::Killed(retrainer(&dir, &broker, &t, port));

    // 60 predictions: v1 predicts p0..p29 and v2 q0..q29, each cycling through the classes.
    let mut predictions = Vec::new();
    for i in 0..30 {
        predictions.push(prediction_record(&format!("p{i}"), LABELS[i % 3], "v1"));
        predictions.push(prediction_record(&format!("q{i}"), LABELS[i % 3], "v2"));
    }
    produce(&broker.address(), &t.names.predictions, &predictions);
    let (got, ok) = wait_for(
        &addr,
        &[("triage_performance_join_size".into(), 60.0)],
        Duration::from_secs(20),
    );
    assert!(ok, "the join did not hold the 60 predictions: {got:?}");

    // v1: all 30 labelled; p1..p5 wrong (the truth is the next class). p0 is first
    // labelled wrong, then relabelled right: the last label wins.
    let mut labels = vec![label_record("p0", "neutral")];
    for i in 0..30 {
        let truth = if (1..=5).contains(&i) {
            LABELS[(i + 1) % 3]
        } else {
            LABELS[i % 3]
        };
        labels.push(label_record(&format!("p{i}"), truth));
    }
    // v2: q0..q19 labelled, all truly positive; q25 with a class no model knows.
    for i in 0..20 {
        labels.push(label_record(&format!("q{i}"), "positive"));
    }
    labels.push(label_record("q25", "refund"));
    // Ids nobody predicted, and a record that is no label at all.
    for i in 0..3 {
        labels.push(label_record(&format!("ghost{i}"), "neutral"));
    }
    labels.push((Some(b"bad".to_vec()), Some(b"not json".to_vec())));
    produce(&broker.address(), &t.labels, &labels);

    // v1: 25 of 30 right. negative: predicted 10, 9 right, 11 true; neutral: 10, 8, 9;
    // positive: 10, 8, 10.
    let v1_f1 = (f1(9.0, 10.0, 11.0) + f1(8.0, 10.0, 9.0) + f1(8.0, 10.0, 10.0)) / 3.0;
    // v2: 6 of 21 right (the positives); negative and neutral score 0, and so does
    // refund, the class it cannot know (q25 is in its window as a miss).
    let v2_f1 = f1(6.0, 6.0, 20.0) / 4.0;
    let sample = |name: &str, key: &str, value: &str| format!("{name}{{{key}=\"{value}\"}}");
    let expected: Vec<(String, f64)> = vec![
        (
            sample("triage_performance_accuracy", "model_version", "v1"),
            25.0 / 30.0,
        ),
        (
            sample("triage_performance_macro_f1", "model_version", "v1"),
            v1_f1,
        ),
        (
            sample(
                "triage_performance_labelled_predictions",
                "model_version",
                "v1",
            ),
            30.0,
        ),
        (
            sample("triage_performance_accuracy", "model_version", "v2"),
            6.0 / 21.0,
        ),
        (
            sample("triage_performance_macro_f1", "model_version", "v2"),
            v2_f1,
        ),
        (
            sample(
                "triage_performance_labelled_predictions",
                "model_version",
                "v2",
            ),
            21.0,
        ),
        (
            sample("triage_performance_labels_total", "result", "joined"),
            50.0,
        ),
        (
            sample("triage_performance_labels_total", "result", "relabelled"),
            1.0,
        ),
        (
            sample("triage_performance_labels_total", "result", "unknown_id"),
            3.0,
        ),
        (
            sample("triage_performance_labels_total", "result", "unknown_class"),
            1.0,
        ),
        (
            sample("triage_performance_labels_total", "result", "invalid"),
            1.0,
        ),
        ("triage_performance_join_size".into(), 60.0),
        ("triage_performance_waiting_labels".into(), 0.0),
    ];
    let (got, ok) = wait_for(&addr, &expected, Duration::from_secs(20));
    let log = |p: u16| {
        std::fs::read_to_string(dir.join(format!("retrainer-{p}.log"))).unwrap_or_default()
    };
    assert!(
        ok,
        "live join: expected {expected:#?}\ngot {got:#?}\nlog:\n{}",
        log(port)
    );
    let live_s = started.elapsed().as_secs_f64();

    // A restart (killed, as a crash would) rebuilds the same figures from the topics.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let port2 = free_port();
    let addr2 = format!("127.0.0.1:{port2}");
    let restarted = Instant::now();
    let mut child = common::Killed(retrainer(&dir, &broker, &t, port2));
    let (got, ok) = wait_for(&addr2, &expected, Duration::from_secs(20));
    let rebuild_s = restarted.elapsed().as_secs_f64();
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert!(
        ok,
        "rebuilt join: expected {expected:#?}\ngot {got:#?}\nlog:\n{}",
        log(port2)
    );
    common::assert_no_panic(&log(port2));
    eprintln!(
        "v1 accuracy {:.4} macro-F1 {v1_f1:.4}; v2 accuracy {:.4} macro-F1 {v2_f1:.4}; live join in {live_s:.1} s, rebuilt after restart in {rebuild_s:.1} s",
        25.0 / 30.0,
        6.0 / 21.0
    );
}

/// Macro-F1 over the three sentiments as triage scores it: the mean F1 of the
/// classes that occur as truth or prediction.
fn macro_f1(pairs: &[(usize, usize)]) -> f64 {
    let (mut sum, mut active) = (0.0, 0.0);
    for c in 0..LABELS.len() {
        let tp = pairs.iter().filter(|&&(t, p)| t == c && p == c).count() as f64;
        let predicted = pairs.iter().filter(|&&(_, p)| p == c).count() as f64;
        let support = pairs.iter().filter(|&&(t, _)| t == c).count() as f64;
        if predicted + support > 0.0 {
            active += 1.0;
            sum += f1(tp, predicted, support);
        }
    }
    sum / active
}

/// The value of the sample of `name` whose labels include every `(key, value)`.
fn sample_with(got: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    got.iter()
        .find(|(k, _)| {
            k.split_once('{').is_some_and(|(n, rest)| {
                n == name
                    && labels
                        .iter()
                        .all(|(key, value)| rest.contains(&format!("{key}=\"{value}\"")))
            })
        })
        .map(|(_, v)| *v)
}

#[test]
fn a_better_challenger_in_shadow_wins_the_live_race_and_an_equal_one_does_not() {
    let started = Instant::now();
    let (dir, broker, t) = setup("labels-race");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _child = common::Killed(retrainer_with(
        &dir,
        &broker,
        &t,
        port,
        &[("TRIAGE__ROLLOUT__MIN_LABELLED", "100")],
    ));

    // 300 messages, the truth cycling through the classes. Race 1: v1 (champion)
    // right on 60% (wrong where i % 5 is 1 or 2), v2 in its shadow on 90% (wrong
    // where i % 10 is 0); a miss predicts the next class. Race 2: v3 and its shadow
    // v4 predict alike, right on 70%.
    let n = 300;
    let miss = |t: usize, right: bool| if right { t } else { (t + 1) % 3 };
    let (mut v1, mut v2, mut v3) = (Vec::new(), Vec::new(), Vec::new());
    let mut predictions = Vec::new();
    for i in 0..n {
        let truth = i % 3;
        let (p1, p2, p3) = (
            miss(truth, !matches!(i % 5, 1 | 2)),
            miss(truth, i % 10 != 0),
            miss(truth, i % 10 >= 3),
        );
        v1.push((truth, p1));
        v2.push((truth, p2));
        v3.push((truth, p3));
        predictions.push(shadowed_prediction_record(
            &format!("a{i}"),
            LABELS[p1],
            "v1",
            LABELS[p2],
            "v2",
        ));
        predictions.push(shadowed_prediction_record(
            &format!("b{i}"),
            LABELS[p3],
            "v3",
            LABELS[p3],
            "v4",
        ));
    }
    produce(&broker.address(), &t.names.predictions, &predictions);
    let (got, ok) = wait_for(
        &addr,
        &[("triage_performance_join_size".into(), 2.0 * n as f64)],
        Duration::from_secs(30),
    );
    assert!(ok, "the join did not hold the predictions: {got:?}");
    let mut labels = Vec::new();
    for i in 0..n {
        labels.push(label_record(&format!("a{i}"), LABELS[i % 3]));
        labels.push(label_record(&format!("b{i}"), LABELS[i % 3]));
    }
    produce(&broker.address(), &t.labels, &labels);

    let (f1_v1, f1_v2, f1_v3) = (macro_f1(&v1), macro_f1(&v2), macro_f1(&v3));
    let deadline = Instant::now() + Duration::from_secs(30);
    let race = |got: &BTreeMap<String, f64>, name: &str, champion: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("champion", champion)];
        labels.push(("challenger", if champion == "v1" { "v2" } else { "v4" }));
        labels.extend_from_slice(extra);
        sample_with(got, name, &labels)
    };
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
    let (got, done) = loop {
        let got = scrape(&addr);
        let done = close(
            race(&got, "triage_race_labelled_messages", "v1", &[]),
            n as f64,
        ) && close(
            race(&got, "triage_race_labelled_messages", "v3", &[]),
            n as f64,
        ) && close(
            race(&got, "triage_race_macro_f1", "v1", &[("role", "champion")]),
            f1_v1,
        ) && close(
            race(
                &got,
                "triage_race_macro_f1",
                "v1",
                &[("role", "challenger")],
            ),
            f1_v2,
        ) && close(
            race(&got, "triage_race_macro_f1", "v3", &[("role", "champion")]),
            f1_v3,
        ) && close(
            race(
                &got,
                "triage_race_macro_f1",
                "v3",
                &[("role", "challenger")],
            ),
            f1_v3,
        ) && close(race(&got, "triage_race_state", "v1", &[]), 1.0)
            && close(race(&got, "triage_race_state", "v3", &[]), 0.0)
            && sample_with(
                &got,
                "triage_performance_macro_f1",
                &[("model_version", "v2")],
            )
            .is_some();
        if done || Instant::now() > deadline {
            break (got, done);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log =
        std::fs::read_to_string(dir.join(format!("retrainer-{port}.log"))).unwrap_or_default();
    let races: BTreeMap<&String, &f64> = got
        .iter()
        .filter(|(k, _)| k.starts_with("triage_race"))
        .collect();
    assert!(
        done,
        "expected v1/v2 promote (macro-F1 {f1_v1:.4} / {f1_v2:.4}) and v3/v4 continue ({f1_v3:.4}), 300 labelled each; got {races:#?}\nlog:\n{log}"
    );
    common::assert_no_panic(&log);
    eprintln!(
        "live race: v1 {f1_v1:.4} vs v2 {f1_v2:.4} -> promote (p {:?}); v3 = v4 {f1_v3:.4} -> continue; {:.1} s",
        race(&got, "triage_race_p_value", "v1", &[("test", "promote")]),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_broker_that_cannot_be_reached_delays_the_join_not_the_webhook() {
    let dir = common::scratch("labels-nobroker");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = common::triage(&dir);
    let log_path = dir.join("retrainer.log");
    cmd.env(
        "TRIAGE__KAFKA__BROKERS",
        format!("127.0.0.1:{}", free_port()),
    )
    .env("TRIAGE__RETRAIN__WEBHOOK_TOKEN", TOKEN)
    .env("TRIAGE__RETRAIN__LISTEN", &addr)
    .env("TRIAGE__LOG__LEVEL", "info")
    .arg("retrainer")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log_path).unwrap());
    let mut child = common::Killed(cmd.spawn().expect("triage retrainer starts"));
    let healthy =
        common::kafka::wait_http(&addr, "/healthz", Duration::from_secs(5), |s, _| s == 200);
    let metrics = scrape(&addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    while !log().contains("Label join cannot start") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGTERM: the retrainer stops promptly even with a broker request pending.
    let stop = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    let stopped = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break Some(status);
        }
        if stop.elapsed() > Duration::from_secs(10) {
            let _ = child.0.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = log();
    assert!(
        healthy,
        "the webhook did not answer while the broker was away:\n{log}"
    );
    assert_eq!(
        metrics.get("triage_performance_join_size"),
        Some(&0.0),
        "the join's metrics are there from the start"
    );
    assert!(
        log.contains("Label join cannot start"),
        "no retry logged:\n{log}"
    );
    assert!(
        stopped.is_some_and(|s| s.success()),
        "not stopped cleanly within 10 s of SIGTERM ({:?}):\n{log}",
        stop.elapsed()
    );
    common::assert_no_panic(&log);
}
