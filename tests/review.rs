//! The review queue with real parts: the tansu broker, two `triage run` replicas
//! serving a champion trained on real Yelp reviews (so many messages fall under its
//! routing threshold), the console's Review page driven by headless Chromium, and
//! the retrainer.
//!
//! - A reviewer signs in (after a refused wrong password and a refused unknown
//!   name, told the same), labels five messages; the five labels are on the labels
//!   topic with source and reviewer, and the queue shrinks on both replicas. Form
//!   posts without a session, or without the CSRF token, are refused. Screenshots
//!   of the page at desktop and phone width go to `<target>/console-screenshots/`.
//! - The loop with a person in it: labels come only from the review queue,
//!   answered by a script that knows the truth (signing in and posting the forms
//!   as a person would); the retrainer's scheduled job trains on them, promotes a
//!   challenger, and the replica hot-swaps to it. The timeline is printed.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test.sh installs them).

mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::broker::{Broker, free_port};
use common::browser::Browser;
use common::daemon::{Daemon, answers_200};
use common::kafka::{
    Collector, Msg, Names, Reply, http, http_with, kafka_table, produce, wait_http,
};
use common::*;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
const SECRET: &str = "review-test-secret-0123456789abcdef-0123456789";
const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// One Yelp review: id, text, its true label (stars through the default rule).
struct Review {
    id: String,
    text: String,
    truth: String,
}

fn reviews(range: std::ops::Range<usize>) -> Vec<Review> {
    std::fs::read_to_string(shared("yelp/reviews-5k.jsonl"))
        .unwrap()
        .lines()
        .skip(range.start)
        .take(range.len())
        .map(|line| {
            let r: Value = serde_json::from_str(line).unwrap();
            let stars = r["stars"].as_f64().unwrap();
            let truth = match stars {
                s if s <= 2.0 => "negative",
                s if s < 4.0 => "neutral",
                _ => "positive",
            };
            Review {
                id: r["review_id"].as_str().unwrap().to_string(),
                text: r["text"].as_str().unwrap().to_string(),
                truth: truth.to_string(),
            }
        })
        .collect()
}

/// The messages of `reviews`, without their stars: the truth reaches triage only
/// through a person.
fn messages(reviews: &[Review]) -> Vec<Msg> {
    reviews
        .iter()
        .map(|r| {
            let payload = json!({"review_id": r.id, "text": r.text});
            (
                Some(r.id.clone().into_bytes()),
                Some(payload.to_string().into_bytes()),
            )
        })
        .collect()
}

/// A broker, topics, a champion trained on `train` reviews, and a configuration
/// with the review queue, one reviewer and `retrain` (lines of `[retrain]`).
struct Rig {
    dir: PathBuf,
    broker: Broker,
    names: Names,
    review_topic: String,
    labels_topic: String,
    config: PathBuf,
}

impl Rig {
    fn new(tag: &str, train: std::ops::Range<usize>, retrain: &str) -> Self {
        let dir = scratch(tag);
        let data = dir.join("train.jsonl");
        slice_lines(&shared("yelp/reviews-5k.jsonl"), &data, train, false);
        let account = reviewer_account(&dir, "ana", PASSWORD);
        let broker = Broker::start(&dir);
        let names = Names::new(tag);
        let review_topic = format!("review-{}", names.group);
        let labels_topic = format!("labels-{}", names.group);
        let config = dir.join("triage.toml");
        std::fs::write(
            &config,
            format!(
                r#"{kafka}
[stream]
max_wait_ms = 200
max_messages = 32

[training]
cv_folds = 2
min_macro_f1 = 0.3
min_macro_recall = 0.3

[retrain]
training_data = "{data}"
{retrain}

[review]
session_secret = "{SECRET}"

{account}"#,
                kafka = kafka_table(
                    &broker.address(),
                    &names,
                    &format!(
                        "review_topic = \"{review_topic}\"\nlabels_topic = \"{labels_topic}\""
                    ),
                ),
                data = data.display(),
            ),
        )
        .unwrap();
        let rig = Self {
            dir,
            broker,
            names,
            review_topic,
            labels_topic,
            config,
        };
        let (out, stdout, stderr) = run(rig.triage().args(["train", "--data"]).arg(&data));
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let (out, stdout, stderr) =
            run(rig.triage().args(["topics", "create", "--partitions", "2"]));
        assert!(out.status.success(), "{stdout}\n{stderr}");
        rig
    }

    fn triage(&self) -> Command {
        let mut cmd = triage(&self.dir);
        cmd.arg("--config").arg(&self.config);
        cmd
    }

    /// A `triage run` replica with its HTTP surface on a free port; its address.
    /// `member` is its static group member id, as a StatefulSet pod's name is in
    /// the deployment: a replica restarted under the same id takes its partitions
    /// back at once. (With dynamic ids, tansu 0.6 can leave a killed group leader's
    /// partitions unassigned for good; docs/development.md.) `log` names its log.
    fn replica(&self, member: &str, log: &str) -> (Daemon, String) {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = self.triage();
        cmd.env("TRIAGE__HTTP__LISTEN", &addr)
            .env("TRIAGE__LOG__LEVEL", "info")
            .env("TRIAGE__KAFKA__GROUP_INSTANCE_ID", member)
            .arg("run");
        let daemon = Daemon::start(
            "triage run",
            cmd,
            self.dir.join(format!("{log}.log")),
            "cargo build",
            Duration::from_secs(90),
            answers_200(&addr, "/readyz"),
        );
        (daemon, addr)
    }

    fn collector(&self) -> Collector {
        Collector::new(
            &self.broker.address(),
            &[
                &self.names.predictions,
                &self.review_topic,
                &self.labels_topic,
            ],
        )
    }
}

/// A metric's value on a replica's /metrics (0 when absent).
fn metric(addr: &str, series: &str) -> f64 {
    let (_, body) = http(addr, "GET", "/metrics", b"").unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn queue_length(addr: &str) -> f64 {
    metric(addr, "triage_review_queue_length ")
}

/// Waits until every replica's queue holds `n` messages.
fn wait_queue(addrs: &[&str], n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while addrs.iter().any(|a| queue_length(a) != n as f64) {
        assert!(
            Instant::now() < deadline,
            "{what}: the queues hold {:?}, not {n}",
            addrs.iter().map(|a| queue_length(a)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Publishes `reviews` and waits for their predictions; the ids routed to review.
fn publish(rig: &Rig, out: &mut Collector, reviews: &[Review]) -> HashSet<String> {
    produce(&rig.broker.address(), &rig.names.input, &messages(reviews));
    assert!(
        out.wait_count(
            &rig.names.predictions,
            reviews.len(),
            Duration::from_secs(180)
        ),
        "not every message was labelled"
    );
    out.on(&rig.names.predictions)
        .iter()
        .map(|o| o.json())
        .filter(|p| p["route"] == "review")
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

/// The value of the first `name="token"` field of a page.
fn form_token(html: &str) -> Option<String> {
    Some(
        html.split(r#"name="token" value=""#)
            .nth(1)?
            .split('"')
            .next()?
            .to_string(),
    )
}

/// Form-encodes `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let v: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A person's script: signs in on `addr` as a browser would (the sign-in form's
/// cookie and token, then the session cookie); returns the `Cookie` header.
fn sign_in(addr: &str) -> String {
    let page = http_with(addr, "GET", "/review/sign-in", &[], b"").unwrap();
    let pre = page.cookie("triage_sign_in").expect("a pre-session cookie");
    let token = form_token(&page.body).unwrap();
    let body = form(&[("name", "ana"), ("password", PASSWORD), ("token", &token)]);
    let reply = http_with(
        addr,
        "POST",
        "/review/sign-in",
        &[FORM, ("Cookie", &pre)],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(reply.status, 303, "{}", reply.body);
    reply.cookie("triage_session").expect("a session cookie")
}

fn post_answer(addr: &str, cookie: Option<&str>, body: &str) -> Reply {
    let mut headers = vec![FORM];
    if let Some(c) = cookie {
        headers.push(("Cookie", c));
    }
    http_with(addr, "POST", "/review/answer", &headers, body.as_bytes()).unwrap()
}

#[test]
fn a_reviewer_signs_in_labels_five_messages_and_the_queue_shrinks_on_both_replicas() {
    let rig = Rig::new("review-page", 0..300, "");
    let (_a, a) = rig.replica("a", "a");
    let (b_process, b) = rig.replica("b", "b");
    let mut out = rig.collector();
    let unseen = reviews(1000..1080);
    let truth: HashMap<&str, &str> = unseen
        .iter()
        .map(|r| (r.id.as_str(), r.truth.as_str()))
        .collect();
    let routed = publish(&rig, &mut out, &unseen);
    assert!(
        routed.len() >= 8,
        "only {} of {} reviews went to review",
        routed.len(),
        unseen.len()
    );
    wait_queue(&[&a, &b], routed.len(), "before any answer");

    let dir = rig.dir.join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    let browser = Browser::start(&dir);
    browser.open(&format!("http://{a}/review"));
    assert!(browser.text("#read-only").contains("Read-only"));
    assert_eq!(
        browser.count("form.answer"),
        0,
        "no forms without a sign-in"
    );
    assert_eq!(browser.count("section.item"), routed.len().min(20));

    // A wrong password, then a name that has no account: the same refusal.
    browser.follow("#sign-in");
    let refusal = |name: &str, password: &str| {
        browser.type_into("#name", name);
        browser.type_into("#password", password);
        browser.follow("#submit");
        browser.text("#refused")
    };
    let wrong_password = refusal("ana", "not the password");
    let unknown_name = refusal("nobody", PASSWORD);
    assert_eq!(wrong_password, "Wrong name or password.");
    assert_eq!(unknown_name, wrong_password);
    browser.type_into("#name", "ana");
    browser.type_into("#password", PASSWORD);
    browser.follow("#submit");
    assert_eq!(browser.text("#reviewer"), "ana");
    assert!(browser.count("form.answer") > 0);
    let shots = [browser.screenshot_viewport("review.png"), {
        browser.phone(390, 844);
        browser.open(&format!("http://{a}/review"));
        let size = browser.screenshot_viewport("review-phone.png");
        assert!(
            !browser.overflows(),
            "the Review page scrolls sideways on a phone"
        );
        browser.command(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": "Emulation.clearDeviceMetricsOverride", "params": {}}),
        );
        size
    }];
    assert!(shots.iter().all(|&s| s > 10_000), "{shots:?}");

    // Five answers, each the truth, by the button of that class.
    let mut answered = HashMap::new();
    for _ in 0..5 {
        browser.open(&format!("http://{a}/review"));
        let id = browser.attribute("#item-0", "data-id");
        let label = truth[id.as_str()];
        browser.follow(&format!("#item-0 button.choice[value=\"{label}\"]"));
        assert!(browser.text("#answered").contains(&id));
        answered.insert(id, label.to_string());
    }
    assert!(
        out.wait_count(&rig.labels_topic, 5, Duration::from_secs(30)),
        "the answers are not on the labels topic"
    );
    let labels: Vec<Value> = out.on(&rig.labels_topic).iter().map(|o| o.json()).collect();
    assert_eq!(labels.len(), 5, "{labels:?}");
    for l in &labels {
        let id = l["id"].as_str().unwrap();
        assert_eq!(
            answered.get(id).map(String::as_str),
            l["label"].as_str(),
            "{l}"
        );
        assert_eq!(l["source"], "review", "{l}");
        assert_eq!(l["reviewer"], "ana", "{l}");
    }
    // Gone from the queue on the replica that took the answers and on the other.
    wait_queue(&[&a, &b], routed.len() - 5, "after five answers");
    assert_eq!(
        metric(&a, "triage_review_answers_total{reviewer=\"ana\"}"),
        5.0
    );

    // Posts that are not the page's: no session, or a session without the token.
    let waiting = browser.attribute("#item-0", "data-id");
    let body = form(&[("id", &waiting), ("label", "neutral")]);
    assert_eq!(post_answer(&b, None, &body).status, 401);
    let session = format!("triage_session={}", browser.cookie("triage_session"));
    assert!(session.len() > 40, "{session}");
    assert_eq!(post_answer(&b, Some(&session), &body).status, 403);
    let forged = form(&[
        ("id", &waiting),
        ("label", "neutral"),
        ("token", &"0".repeat(64)),
    ]);
    assert_eq!(post_answer(&b, Some(&session), &forged).status, 403);
    // The session signed on replica a holds on replica b (the shared secret), with
    // the page's token.
    let page = http_with(&b, "GET", "/review", &[("Cookie", &session)], b"").unwrap();
    assert!(page.body.contains(r#"<b id="reviewer">ana</b>"#));
    // Replica b counts the answers a gave: it read them on the labels topic.
    assert!(page.body.contains(r#"<b id="answers-hour">5</b> answered"#));
    assert!(wait_http(&b, "/metrics", Duration::from_secs(5), |_, m| m
        .contains(
            "triage_review_refused_total{reason=\"bad_token\"} 2"
        )));
    assert!(
        out.on(&rig.labels_topic).len() == 5,
        "a refused post wrote a label"
    );

    // The queue survives a restart (kill -9, then the same member at once): it is
    // the review topic less the labels given.
    drop(b_process);
    let (_b, b) = rig.replica("b", "b-again");
    wait_queue(&[&b], routed.len() - 5, "after a restart");
    let page = http_with(&b, "GET", "/review", &[("Cookie", &session)], b"").unwrap();
    for id in answered.keys() {
        assert!(
            !page.body.contains(&format!("data-id=\"{id}\"")),
            "{id} is back"
        );
    }
}

#[test]
fn labels_from_the_review_queue_alone_drive_a_promoted_retraining() {
    let started = Instant::now();
    let mut timeline: Vec<(f64, String)> = Vec::new();
    let mut mark = |what: String| {
        let t = started.elapsed().as_secs_f64();
        eprintln!("[{t:6.1} s] {what}");
        timeline.push((t, what));
    };
    // A champion trained on 150 reviews: unsure of many, and beatable.
    let rig = Rig::new(
        "review-loop",
        0..150,
        "rollout = \"direct\"\nevery = \"10s\"\ncooldown_s = 10",
    );
    mark("v1 trained on 150 reviews".into());
    let (_a, a) = rig.replica("a", "a");
    let mut out = rig.collector();
    let unseen = reviews(2000..2500);
    let truth: HashMap<&str, &str> = unseen
        .iter()
        .map(|r| (r.id.as_str(), r.truth.as_str()))
        .collect();
    let routed = publish(&rig, &mut out, &unseen);
    wait_queue(&[&a], routed.len(), "the replay's queue");
    mark(format!(
        "{} unlabelled reviews classified; {} routed to the review queue",
        unseen.len(),
        routed.len()
    ));
    assert!(routed.len() >= 150, "only {} went to review", routed.len());

    // The person: signs in, answers the most useful message first, with the truth.
    let cookie = sign_in(&a);
    let mut answers = 0;
    while answers < 150 {
        let page = http_with(&a, "GET", "/review", &[("Cookie", &cookie)], b"").unwrap();
        let id = page
            .body
            .split("data-id=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a waiting message")
            .to_string();
        let token = form_token(&page.body).unwrap();
        let body = form(&[
            ("id", &id),
            ("label", truth[id.as_str()]),
            ("token", &token),
        ]);
        let reply = post_answer(&a, Some(&cookie), &body);
        assert_eq!(reply.status, 303, "{}", reply.body);
        answers += 1;
    }
    mark(format!("{answers} messages answered on the Review page"));
    assert!(out.wait_count(&rig.labels_topic, answers, Duration::from_secs(30)));

    // The retrainer: its schedule is due (v1 is older than retrain.every).
    let retrainer_addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = rig.triage();
    cmd.env("TRIAGE__RETRAIN__LISTEN", &retrainer_addr)
        .env("TRIAGE__LOG__LEVEL", "info")
        .env(
            "TRIAGE__RETRAIN__WEBHOOK_TOKEN",
            "review-loop-token-0123456789abcdef",
        )
        .arg("retrainer");
    let _retrainer = Daemon::start(
        "triage retrainer",
        cmd,
        rig.dir.join("retrainer.log"),
        "cargo build",
        Duration::from_secs(60),
        answers_200(&retrainer_addr, "/healthz"),
    );
    mark("retrainer started".into());
    let decision = {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let (_, stdout, _) = run(rig.triage().args(["models", "decisions", "--json"]));
            let all: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
            if let Some(d) = all["decisions"].as_array().and_then(|d| d.last()).cloned() {
                break d;
            }
            assert!(
                Instant::now() < deadline,
                "no retraining decision:\n{}",
                std::fs::read_to_string(rig.dir.join("retrainer.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    mark(format!(
        "decision: trigger {}, verdict {}, v1 {:.3} -> {} {:.3} macro-F1 on {} held-out answered rows",
        decision["trigger"],
        decision["verdict"],
        decision["champion"]["metrics"]["macro_f1"]
            .as_f64()
            .unwrap_or(f64::NAN),
        decision["challenger"]["version"],
        decision["challenger"]["metrics"]["macro_f1"]
            .as_f64()
            .unwrap_or(f64::NAN),
        decision["rows"]["held_out"],
    ));
    assert_eq!(decision["trigger"], "schedule", "{decision:#}");
    assert_eq!(decision["verdict"], "promoted", "{decision:#}");
    let held_out = decision["rows"]["held_out"].as_u64().unwrap();
    assert!(
        held_out > 0 && held_out <= answers as u64,
        "the held-out rows are answered ones: {decision:#}"
    );
    // The replica labels the next messages with the new champion (it reads the
    // registry's alias before each window).
    let next = reviews(2500..2520);
    produce(&rig.broker.address(), &rig.names.input, &messages(&next));
    assert!(out.wait_count(
        &rig.names.predictions,
        unseen.len() + next.len(),
        Duration::from_secs(60)
    ));
    let next_ids: HashSet<&str> = next.iter().map(|r| r.id.as_str()).collect();
    let versions: Vec<String> = out
        .on(&rig.names.predictions)
        .iter()
        .map(|o| o.json())
        .filter(|p| next_ids.contains(p["id"].as_str().unwrap_or_default()))
        .map(|p| p["model_version"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(versions.iter().all(|v| v == "v2"), "{versions:?}");
    let auto = out
        .on(&rig.names.predictions)
        .iter()
        .map(|o| o.json())
        .filter(|p| next_ids.contains(p["id"].as_str().unwrap_or_default()) && p["route"] == "auto")
        .count();
    mark(format!(
        "the next {} messages are labelled by v2 ({auto} automatically)",
        next.len()
    ));
    eprintln!("timeline:");
    for (t, what) in &timeline {
        eprintln!("  {t:6.1} s  {what}");
    }
}
