//! The Grafana dashboards (grafana/dashboards/*.json) and the alert rules
//! (deploy/prometheus/rules/triage.yml) against a real Prometheus that scrapes a live
//! `triage run` and a live `triage retrainer`: after traffic, dead letters, late labels,
//! a failed and a promoted retrain (both started by Alertmanager with the repository's
//! routing), the consumers' switch to the new champion and the guard's live race (the
//! replaced champion scored in shadow, on late labels), every panel, annotation and
//! variable query must parse and return series (but for the events listed in
//! `EVENTS_NOT_MADE`, with why).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::alertmanager::Alertmanager;
use common::broker::Broker;
use common::kafka::{Collector, Names, Out, http, produce, write_support_config};
use common::prometheus::Prometheus;
use common::server::Server;
use common::*;

/// Intents the first champion knows; the traffic then brings all eleven.
const NARROW: [&str; 4] = ["ACCOUNT", "PAYMENT", "REFUND", "SHIPPING"];

/// Dashboard queries whose event this test does not bring about, each with why. Such
/// a query has no series (it selects the event), so, as for the alert rules, it must
/// parse and every metric it reads must have series. An entry whose query does return
/// series (or is gone) fails the test: the list holds only what it must.
const EVENTS_NOT_MADE: [(&str, &str); 1] = [(
    "triage-retraining.json annotation \"Rollback\"",
    "a guard rolls back only when the champion a promotion replaced beats the new one on \
     rollout.min_labelled (200) late-labelled messages; here that is v1, which knows 4 of \
     the 11 intents, on 55 messages",
)];

/// Sends one firing alert to Alertmanager's API; its route decides where it goes.
fn fire(alertmanager: &str, alertname: &str) {
    let body = serde_json::json!([{
        "labels": {"alertname": alertname, "model_version": "v1", "severity": "warning"},
        "annotations": {"summary": "sent by tests/dashboards.rs"},
    }]);
    let (status, text) = http(
        alertmanager,
        "POST",
        "/api/v2/alerts",
        body.to_string().as_bytes(),
    )
    .expect("alertmanager answers");
    assert_eq!(status, 200, "{text}");
}

/// Every query of a dashboard: panels' targets, annotations and variables, each with
/// where it comes from. Variables are replaced by what Grafana sends for "All" (`.*`)
/// and the interval macros by spans that fit a 1 s scrape interval.
fn dashboard_queries(file: &Path, range: Duration) -> Vec<(String, String)> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let substitute = |expr: &str| {
        let expr = expr
            .replace("$__rate_interval", "10s")
            .replace("$__range", &format!("{}s", range.as_secs()))
            .replace("$instance", ".*")
            .replace("$model_version", ".*");
        assert!(
            !expr.contains('$'),
            "{name}: a variable the test does not know: {expr}"
        );
        expr
    };
    let mut queries = Vec::new();
    for panel in json["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let title = panel["title"].as_str().unwrap();
            queries.push((format!("{name} panel {title:?}"), substitute(expr)));
        }
    }
    for annotation in json["annotations"]["list"].as_array().unwrap() {
        if let Some(expr) = annotation["expr"].as_str() {
            let title = annotation["name"].as_str().unwrap();
            queries.push((format!("{name} annotation {title:?}"), substitute(expr)));
        }
    }
    for variable in json["templating"]["list"].as_array().unwrap() {
        if let Some(definition) = variable["definition"].as_str() {
            // label_values(METRIC, LABEL): the metric's series must carry the label.
            let inner = definition
                .strip_prefix("label_values(")
                .and_then(|d| d.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{name}: unknown variable query {definition}"));
            let (metric, label) = inner.split_once(',').unwrap();
            queries.push((
                format!("{name} variable {}", variable["name"]),
                format!("count by ({}) ({metric})", label.trim()),
            ));
        }
    }
    queries
}

/// The metric names an expression reads (`triage_...` outside quoted label values).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut quoted = false;
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if !quoted && (c.is_ascii_alphanumeric() || c == '_') {
            word.push(c);
            continue;
        }
        if word.starts_with("triage_") && !names.contains(&word) {
            names.push(word.clone());
        }
        word.clear();
        quoted ^= c == '"';
    }
    names
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Each scrape target (job and instance) with how many scrapes Prometheus has
/// recorded for it (samples of `up`) since `since`, in Unix seconds.
fn scrapes_since(prom: &Prometheus, since: f64) -> Vec<(String, usize)> {
    prom.query("up[1m]")
        .iter()
        .map(|series| {
            let label = |name: &str| series["metric"][name].as_str().unwrap_or("?").to_string();
            let target = format!("{}/{}", label("job"), label("instance"));
            let after = series["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v[0].as_f64().is_some_and(|t| t > since))
                .count();
            (target, after)
        })
        .collect()
}

#[test]
fn every_dashboard_query_and_alert_rule_returns_series_from_live_services() {
    let started = Instant::now();
    let dir = scratch("dashboards");
    let broker = Broker::start(&dir);
    let names = Names::new("dash");
    // The review queue on, with one reviewer: its series exist from the start.
    let account = reviewer_account(&dir, "ana", "dashboards-password");
    let config = write_support_config(
        &dir,
        &broker.address(),
        &names,
        &format!("review_topic = \"review-{}\"", names.group),
        &format!("[stream]\nmax_wait_ms = 200\nmax_message_bytes = 2000\n\n{account}"),
    );
    let cli = || {
        let mut cmd = triage(&dir);
        cmd.arg("--config").arg(&config);
        cmd
    };

    // The first champion (v1) knows four intents.
    let by_intent = questions_by_intent();
    let mut csv = csv::Writer::from_path(dir.join("narrow.csv")).unwrap();
    csv.write_record(["class_name", "question", "id"]).unwrap();
    for intent in NARROW {
        for (id, question) in &by_intent[intent][..40] {
            csv.write_record([intent, question, id]).unwrap();
        }
    }
    csv.flush().unwrap();
    for args in [
        vec!["train", "--data", dir.join("narrow.csv").to_str().unwrap()],
        vec!["topics", "create", "--partitions", "2"],
    ] {
        let (out, stdout, stderr) = run(cli().args(&args));
        assert!(out.status.success(), "{args:?}:\n{stdout}\n{stderr}");
    }

    // The retrainer (no cooldown, lower gates: this test is about series, not about
    // model quality), Alertmanager routing to it, the consumer, Prometheus on both.
    let token_file = dir.join("retrain.token");
    std::fs::write(&token_file, "d4c3b2a1f0e9d8c7b6a5948372615040\n").unwrap();
    let mut retrainer = cli();
    retrainer
        .env("TRIAGE__RETRAIN__WEBHOOK_TOKEN_FILE", &token_file)
        .env("TRIAGE__RETRAIN__TRAINING_DATA", "none")
        .env("TRIAGE__RETRAIN__COOLDOWN_S", "0")
        .env("TRIAGE__RETRAIN__ROLLOUT", "direct")
        .env("TRIAGE__TRAINING__MIN_MACRO_F1", "0.5")
        .env("TRIAGE__TRAINING__MIN_MACRO_RECALL", "0.5");
    let retrainer = Server::start(retrainer, "retrainer", dir.join("retrainer.log"));
    let am = Alertmanager::start(&dir, &retrainer.addr, &token_file, |c| {
        c.replace("group_wait: 1m", "group_wait: 1s")
    });
    let service = Server::start(cli(), "run", dir.join("run.log"));
    // The image's health check (`triage probe`) against both, a missing path and a
    // port nobody listens on.
    let closed = format!("127.0.0.1:{}", common::broker::free_port());
    for (listen, args, healthy) in [
        (&service.addr, vec!["probe", "/readyz"], true),
        (&retrainer.addr, vec!["probe", "--retrainer"], true),
        (&service.addr, vec!["probe", "/nope"], false),
        (&closed, vec!["probe"], false),
    ] {
        let (out, _, stderr) = run(cli()
            .env("TRIAGE__HTTP__LISTEN", listen)
            .env("TRIAGE__RETRAIN__LISTEN", listen)
            .args(&args));
        assert_eq!(
            out.status.success(),
            healthy,
            "{args:?} on {listen}: {stderr}"
        );
        assert!(
            healthy || stderr.contains("404") || stderr.contains("nothing answers"),
            "{stderr}"
        );
    }

    let prom = Prometheus::start_with(
        &dir,
        &service.addr,
        |rules| rules,
        |config| {
            config
                .replace("127.0.0.1:9465", &retrainer.addr)
                .replace("127.0.0.1:9093", &am.addr)
        },
    );
    let jobs = |verdict: &str| {
        prom.value(&format!(
            r#"triage_retrain_jobs_total{{verdict="{verdict}"}}"#
        ))
        .unwrap_or(0.0)
    };

    // Every counter scraped at zero before its first event, so increase() sees it.
    for counter in ["triage_retrain_jobs_total", "triage_model_swaps_total"] {
        assert!(
            prom.wait(counter, Duration::from_secs(30), |r| !r.is_empty()),
            "{counter} not scraped"
        );
    }
    // The HTTP surface: one good and one bad request.
    for (body, want) in [(r#"{"text": "where is my refund"}"#, 200), ("{}", 400)] {
        let (status, text) = http(&service.addr, "POST", "/v1/classify", body.as_bytes()).unwrap();
        assert_eq!(status, want, "{text}");
    }

    // A retrain before any recent traffic fails (too few labelled rows): a verdict
    // for the "rejected or failed" annotation.
    fire(&am.addr, "TriagePerformanceDrop");
    assert!(
        prom.wait("up", Duration::from_secs(120), |_| jobs("failed") >= 1.0),
        "no failed job:\n{}\n{}",
        retrainer.log(),
        am.log()
    );

    // Traffic of all eleven intents, labels in the messages and late on the labels
    // topic, and dead letters.
    let all: Vec<&str> = by_intent.keys().map(String::as_str).collect();
    let (messages, labels) = phase_with(&by_intent, &all, 40..70, "t", true);
    let brokers = broker.address();
    produce(&brokers, &names.input, &messages);
    produce(
        &brokers,
        &names.input,
        &[(Some(b"bad-1".to_vec()), Some(b"not json".to_vec()))],
    );
    let mut out = Collector::new(&brokers, &[&names.predictions, &names.dlq]);
    assert!(
        out.wait_count(&names.predictions, messages.len(), Duration::from_secs(180))
            && out.wait_count(&names.dlq, 1, Duration::from_secs(10)),
        "predictions or dead letter missing:\n{}",
        service.log()
    );
    produce(&brokers, "labels", &labels);
    assert!(
        prom.wait(
            "triage_performance_macro_f1",
            Duration::from_secs(60),
            |r| !r.is_empty()
        ),
        "no late-label scores:\n{}",
        retrainer.log()
    );

    // A retrain on that traffic promotes v2; the consumers switch at their next window.
    fire(&am.addr, "TriageDriftDetected");
    assert!(
        prom.wait("up", Duration::from_secs(300), |_| jobs("promoted") >= 1.0),
        "no promotion:\n{}",
        retrainer.log()
    );
    let (messages, _) = phase_with(&by_intent, &all, 70..75, "t", true);
    produce(&brokers, &names.input, &messages);
    assert!(
        prom.wait(
            r#"triage_model_swaps_total{result="swapped"} > 0"#,
            Duration::from_secs(60),
            |r| !r.is_empty()
        ),
        "the consumer did not switch:\n{}",
        service.log()
    );
    // The guard of that promotion: the retrainer puts v1 back into shadow, and the
    // consumer scores it beside v2 on the same messages; their late labels feed the
    // guard's live race, which the race panels read.
    let challenger = || {
        let (listed, stdout, stderr) = run(cli().args(["models", "list", "--json"]));
        assert!(listed.status.success(), "models list:\n{stderr}");
        let list: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        list["aliases"]["challenger"].as_str().map(str::to_string)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while challenger().as_deref() != Some("v1") {
        assert!(
            Instant::now() < deadline,
            "the guard did not put v1 in shadow within 30 s:\n{}",
            retrainer.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (messages, labels) = phase_with(&by_intent, &all, 75..80, "g", true);
    produce(&brokers, &names.input, &messages);
    let shadowed = |records: &[Out]| {
        records
            .iter()
            .filter(|o| o.topic == names.predictions)
            .map(|o| o.json())
            .filter(|v| v["id"].as_str().is_some_and(|id| id.starts_with("g-")))
            .filter(|v| v["shadow"]["model_version"] == "v1")
            .count()
    };
    assert!(
        out.until(Duration::from_secs(120), |r| shadowed(r) >= messages.len()),
        "{} of {} predictions carried v1's shadow:\n{}",
        shadowed(&out.records),
        messages.len(),
        service.log()
    );
    produce(&brokers, "labels", &labels);
    assert!(
        prom.wait(
            "triage_race_labelled_messages",
            Duration::from_secs(60),
            |r| !r.is_empty()
        ),
        "no live race on the late labels:\n{}",
        retrainer.log()
    );

    // Two scrapes more of every target, so every rate and increase spans the last events.
    let swapped_seen = unix_now();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scrapes = scrapes_since(&prom, swapped_seen);
        if !scrapes.is_empty() && scrapes.iter().all(|(_, n)| *n >= 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "waited 30 s for two scrapes of every target after the swap; scrapes per target: {scrapes:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // Every dashboard query over the whole test.
    let span = started.elapsed() + Duration::from_secs(5);
    let step = Duration::from_secs(1);
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut files: Vec<_> = std::fs::read_dir(repo().join("grafana/dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "overview, drift and retraining: {files:?}");
    let mut not_made = Vec::new();
    for file in &files {
        for (source, expr) in dashboard_queries(file, span) {
            checked += 1;
            match prom.query_range(&expr, span, step) {
                Ok(series) if series.is_empty() => {
                    if EVENTS_NOT_MADE.iter().any(|(s, _)| *s == source) {
                        not_made.push(source.clone());
                        for metric in metric_names(&expr) {
                            if prom.query_range(&metric, span, step).unwrap().is_empty() {
                                failures.push(format!("{source}: {metric} has no series"));
                            }
                        }
                    } else {
                        failures.push(format!("{source}: no series: {expr}"))
                    }
                }
                Ok(_) => {}
                Err(e) => failures.push(format!("{source}: {e}: {expr}")),
            }
        }
    }
    for (source, why) in EVENTS_NOT_MADE {
        if !not_made.iter().any(|s| s == source) {
            failures.push(format!(
                "{source} is in EVENTS_NOT_MADE ({why}) but returned series or is gone: remove it from the list"
            ));
        }
    }

    // Every alert rule: loaded and evaluated without error. An alert expression has
    // series only while it fires (a healthy service does not fire TriageNotReady), so
    // its series are asked of what it reads: every metric it names must have series.
    let rules = prom.rules();
    let in_file = std::fs::read_to_string(repo().join("deploy/prometheus/rules/triage.yml"))
        .unwrap()
        .matches("- alert:")
        .count();
    assert_eq!(rules.len(), in_file, "rules loaded: {rules:#?}");
    for rule in &rules {
        let name = rule["name"].as_str().unwrap();
        let expr = rule["query"].as_str().unwrap();
        checked += 1;
        if rule["health"] != "ok" {
            failures.push(format!(
                "alert {name}: health {} ({}): {expr}",
                rule["health"], rule["lastError"]
            ));
        }
        let (Ok(_), metrics) = (prom.query_range(expr, span, step), metric_names(expr)) else {
            failures.push(format!("alert {name}: does not parse: {expr}"));
            continue;
        };
        assert!(!metrics.is_empty(), "alert {name} reads no triage metric");
        for metric in metrics {
            if prom.query_range(&metric, span, step).unwrap().is_empty() {
                failures.push(format!("alert {name}: {metric} has no series"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 40, "only {checked} queries checked");
}

#[test]
fn metric_names_are_read_from_expressions_but_not_from_label_values() {
    assert_eq!(
        metric_names(
            r#"sum(rate(triage_dlq_messages_total{reason="triage_x"}[5m])) / triage_messages_in_total"#
        ),
        ["triage_dlq_messages_total", "triage_messages_in_total"]
    );
}
