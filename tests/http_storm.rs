//! `triage run` under an HTTP storm while it consumes a topic: slow clients that send
//! half a header, and many classify requests at once. The stream's throughput during
//! the storm is compared with its throughput before it; the storm's classify requests
//! past `http.max_classify_in_flight` are answered 503 with Retry-After and counted,
//! the slow clients are disconnected, and /healthz answers throughout. The classify
//! clients honour Retry-After, so the HTTP side keeps one request always in flight;
//! a client that ignores it is bounded by the CPU its refusals cost, not by a queue.
//!
//! The counts are small by default; for the measurement in docs/operations.md:
//! `TRIAGE_STORM_SLOW_CLIENTS=500 TRIAGE_STORM_CLASSIFY=2000 TRIAGE_STORM_CONCURRENCY=300
//! TRIAGE_STORM_MESSAGES=400 cargo test --release --test http_storm -- --nocapture`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::broker::Broker;
use common::kafka::{Msg, Names, http, produce, write_support_config};
use common::server::Server;
use common::*;

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Support questions as input messages, ids from `from`.
fn messages(from: usize, n: usize) -> Vec<Msg> {
    let rows = support_rows();
    (0..n)
        .map(|i| {
            let (class, question, _) = &rows[(from + i) % rows.len()];
            let id = format!("m-{}", from + i);
            let payload = serde_json::json!({"id": id, "question": question, "class_name": class});
            (
                Some(id.into_bytes()),
                Some(payload.to_string().into_bytes()),
            )
        })
        .collect()
}

/// The sum of a counter's series in the service's exposition.
fn metric_sum(addr: &str, name: &str) -> f64 {
    let Some((_, body)) = http(addr, "GET", "/metrics", b"") else {
        return 0.0;
    };
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Seconds until the service has produced `total` predictions.
fn wait_predictions(addr: &str, total: usize, timeout: Duration) -> f64 {
    let started = Instant::now();
    loop {
        let done = metric_sum(addr, "triage_predictions_total");
        if done >= total as f64 {
            return started.elapsed().as_secs_f64();
        }
        assert!(
            started.elapsed() < timeout,
            "{done} of {total} predictions after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A classify request's status and whether it had `Retry-After: 1`; None: no answer.
type Answer = Option<(u16, bool)>;

/// One classify request on its own connection.
fn classify(addr: &str) -> Answer {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let body = r#"{"text": "I want my money back for this order"}"#;
    let head = format!(
        "POST /v1/classify HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, out.to_ascii_lowercase().contains("retry-after: 1")))
}

fn vm_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn an_http_storm_is_shed_and_starves_neither_the_stream_nor_the_probes() {
    let slow_clients = count("TRIAGE_STORM_SLOW_CLIENTS", 50);
    let classify_total = count("TRIAGE_STORM_CLASSIFY", 200);
    let concurrency = count("TRIAGE_STORM_CONCURRENCY", 50).max(1);
    let n = count("TRIAGE_STORM_MESSAGES", 200);

    let dir = scratch("storm");
    train_support(&dir, &[]);
    let broker = Broker::start(&dir);
    let names = Names::new("storm");
    let config = write_support_config(
        &dir,
        &broker.address(),
        &names,
        "",
        "[stream]\nmax_wait_ms = 200\n[http]\nheader_read_timeout_ms = 1000\n",
    );
    let cli = || {
        let mut cmd = triage(&dir);
        cmd.arg("--config").arg(&config);
        cmd
    };
    let (out, stdout, stderr) = run(cli().args(["topics", "create", "--partitions", "2"]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let service = Server::start(cli(), "run", dir.join("run.log"));
    let addr = service.addr.clone();
    let pid = service.child.id();

    // Warm up (first windows load lazily), then the stream alone.
    produce(&broker.address(), &names.input, &messages(0, 20));
    wait_predictions(&addr, 20, Duration::from_secs(120));
    produce(&broker.address(), &names.input, &messages(20, n));
    let alone = wait_predictions(&addr, 20 + n, Duration::from_secs(300));

    // The storm: slow clients first, then classify requests, while the stream runs.
    let slow: Vec<TcpStream> = (0..slow_clients)
        .filter_map(|_| {
            let mut s = TcpStream::connect(&addr).ok()?;
            s.write_all(b"POST /v1/classify HTTP/1.1\r\nHost: t\r\n")
                .ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(slow.len(), slow_clients, "slow clients could not connect");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let storm: Vec<_> = (0..concurrency)
        .map(|_| {
            let (addr, stop, sent, answers) =
                (addr.clone(), stop.clone(), sent.clone(), answers.clone());
            std::thread::spawn(move || {
                while sent.fetch_add(1, Ordering::Relaxed) < classify_total
                    || !stop.load(Ordering::Relaxed)
                {
                    let a = classify(&addr);
                    answers.lock().unwrap().push(a);
                    // Clients that honour Retry-After: the storm keeps the classify
                    // place always taken without spinning the CPUs on refusals.
                    if matches!(a, Some((503, true))) {
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            })
        })
        .collect();
    let probes = {
        let (addr, stop) = (addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let status = http(&addr, "GET", "/healthz", b"").map(|(s, _)| s);
                seen.push((status, started.elapsed()));
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    produce(&broker.address(), &names.input, &messages(20 + n, n));
    let during = wait_predictions(&addr, 20 + 2 * n, Duration::from_secs(300));
    let rss_mb = vm_kb(pid, "VmRSS:") as f64 / 1024.0;
    stop.store(true, Ordering::Relaxed);
    for t in storm {
        t.join().unwrap();
    }
    let probes = probes.join().unwrap();

    // The slow clients were disconnected by the header-read timeout.
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("a slow client is still connected: {e}"),
        }
    }
    let answers = answers.lock().unwrap();
    let ok = answers
        .iter()
        .filter(|a| matches!(a, Some((200, _))))
        .count();
    let shed = answers
        .iter()
        .filter(|a| matches!(a, Some((503, true))))
        .count();
    let other: Vec<_> = answers
        .iter()
        .filter(|a| !matches!(a, Some((200, _)) | Some((503, true))))
        .collect();
    let worst_probe = probes.iter().map(|(_, d)| *d).max().unwrap_or_default();
    let rate_alone = n as f64 / alone;
    let rate_during = n as f64 / during;
    eprintln!(
        "storm: {} slow clients, {} classify requests ({concurrency} at once): {ok} answered 200, {shed} shed 503; \
         stream {rate_alone:.1} msg/s alone, {rate_during:.1} msg/s during the storm ({n} messages each); \
         /healthz {} probes, slowest {:?}; RSS {rss_mb:.0} MB (peak {:.0} MB)",
        slow_clients,
        answers.len(),
        probes.len(),
        worst_probe,
        vm_kb(pid, "VmHWM:") as f64 / 1024.0,
    );
    assert!(
        other.is_empty(),
        "neither 200 nor 503 + Retry-After: {other:?}"
    );
    assert!(shed > 0 && ok > 0, "{ok} answered, {shed} shed");
    assert!(
        probes.iter().all(|(s, _)| *s == Some(200)),
        "/healthz failed during the storm: {probes:?}"
    );
    let counted = metric_sum(
        &addr,
        "triage_http_shed_total{limit=\"max_classify_in_flight\"}",
    );
    assert_eq!(
        counted as usize, shed,
        "503s counted in triage_http_shed_total"
    );
    let timeouts = metric_sum(
        &addr,
        "triage_http_timeouts_total{limit=\"header_read_timeout_ms\"}",
    );
    assert!(
        timeouts as usize >= slow_clients,
        "{timeouts} header-read timeouts for {slow_clients} slow clients"
    );
    // HTTP holds at most one worker job: the stream keeps most of its pace.
    assert!(
        rate_during >= 0.5 * rate_alone,
        "the stream fell from {rate_alone:.1} to {rate_during:.1} msg/s during the storm"
    );
    service.stop();
}
