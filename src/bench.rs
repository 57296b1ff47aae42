//! `triage bench`: measures the streaming service end to end through a real broker.
//!
//! 1. Rounds (`--repeat`), each a pair measured back to back, so that both halves
//!    see the same machine: the embedding-only bound (the same texts embedded
//!    in-process in windows of `stream.max_messages`, by `stream.workers`
//!    embedders side by side, same settings), then
//!    sustained throughput (the messages are written first, then a fresh service
//!    drains them; the clock runs from its first to its last prediction). The
//!    report gives medians, every round, and where the service's time went.
//! 2. Latency at an offered rate (default: half the measured throughput): messages
//!    are produced at that rate to a running service; latency is the time from
//!    producing a message to reading its prediction back.
//! 3. Optionally, overload (`--overload F`): F times the measured throughput for a
//!    while, sampling memory, consumer lag and the time messages spend inside the
//!    service once read, every second.
//! 4. Peak RSS of the service processes (and, apart, of the bench's own).
//!
//! The service runs as a child `triage run` process, as users run it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::Serialize;

use crate::config::Settings;
use crate::embed::{Embedder, OnnxEmbedder};
use crate::feature::readers::{ReaderSpec, read_file};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub rows: usize,
    /// Bound-then-service pairs; the report gives medians.
    pub repeat: usize,
    /// Offered rate for the latency run, messages/s; `None`: half the throughput.
    pub rate: Option<f64>,
    /// Messages in the latency run.
    pub latency_rows: usize,
    /// Overload run: this multiple of the measured throughput; `None`: no overload run.
    pub overload: Option<f64>,
    pub overload_secs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub rows: usize,
    pub window_max_messages: usize,
    /// Medians over the rounds.
    pub embed_only_per_second: f64,
    pub throughput_per_second: f64,
    /// Median of the rounds' ratios, and the lowest.
    pub throughput_vs_bound: f64,
    pub throughput_vs_bound_min: f64,
    pub rounds: Vec<Round>,
    /// Tokenising alone, per message (part of the bound: the share of the work that
    /// does not run in ONNX Runtime).
    pub tokenize_ms_per_message: f64,
    /// Tokens per message after truncation, and the padding the batch plan adds
    /// (padded tokens / real tokens - 1; windows of `stream.max_messages`).
    pub tokens_per_message: f64,
    pub padding_overhead: f64,
    /// Per message in the throughput runs, from the service's stage histograms.
    pub stages_ms_per_message: StageCosts,
    /// Share of the time the workers were embedding, classifying or feeding drift
    /// (1.0: they never waited for Kafka, decoding or producing).
    pub workers_busy: f64,
    pub cpu_while_draining: CpuShares,
    pub offered_rate_per_second: f64,
    pub latency_rows: usize,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub overload: Option<OverloadReport>,
    /// Peak RSS of the `triage run` processes (the highest of them).
    pub service_peak_rss_mb: f64,
    /// Peak RSS of the bench process itself (the bound's embedder, producer, reader).
    pub bench_peak_rss_mb: f64,
}

/// One bound-then-service pair.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub embed_only_per_second: f64,
    pub throughput_per_second: f64,
    pub vs_bound: f64,
}

/// Milliseconds per message in each stage of the service. `embed`, `classify` and
/// `drift` run on the worker thread, one after another; `decode` and `produce` (wall
/// time until the broker acknowledged) run in the window tasks, beside them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageCosts {
    pub decode: f64,
    pub embed: f64,
    pub classify: f64,
    pub drift: f64,
    pub produce: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OverloadSample {
    pub second: f64,
    pub produced: usize,
    pub predicted: usize,
    /// From librdkafka's statistics: messages on the broker not yet committed.
    pub consumer_lag: i64,
    pub rss_mb: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OverloadReport {
    pub factor: f64,
    pub offered_rate_per_second: f64,
    pub seconds: f64,
    pub produced: usize,
    pub predicted: usize,
    pub throughput_per_second: f64,
    /// Medians over the first and the last quarter of the samples.
    pub rss_first_quarter_mb: f64,
    pub rss_last_quarter_mb: f64,
    pub lag_first_quarter: f64,
    pub lag_last_quarter: f64,
    /// Produced but not yet predicted (in Kafka or in the service), same quarters.
    pub backlog_first_quarter: f64,
    pub backlog_last_quarter: f64,
    /// From a window's first message read to its predictions ready (`timings_ms.in_service`).
    pub in_service_p50_ms: f64,
    pub in_service_p99_ms: f64,
    pub in_service_max_ms: f64,
    /// p99 of the time in the service over the first and the second half of the
    /// predictions: bounded means the second is no larger than the first.
    pub in_service_p99_first_half_ms: f64,
    pub in_service_p99_second_half_ms: f64,
    pub peak_rss_mb: f64,
    pub samples: Vec<OverloadSample>,
}

fn texts_of(path: &Path, settings: &Settings, rows: usize) -> anyhow::Result<Vec<String>> {
    let spec = ReaderSpec::new(&settings.data, None);
    let mut texts = Vec::with_capacity(rows);
    read_file(path, &spec, |r| {
        if texts.len() < rows {
            texts.push(r.text);
        }
        Ok(())
    })?;
    anyhow::ensure!(!texts.is_empty(), "{} has no usable rows", path.display());
    Ok(texts)
}

fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("triage-bench-{tag}-{}-{n}", std::process::id())
}

/// A memory figure from a /proc status file (Linux), in MB: `VmHWM` (peak
/// resident set) or `VmRSS` (now).
fn status_mb(status: &str, field: &str) -> f64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat (Linux;
/// clock ticks of 1/100 s, the USER_HZ every Linux architecture triage runs on uses).
fn cpu_seconds(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) in parentheses.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

/// Peak resident set size of this process.
pub fn peak_rss_mb() -> f64 {
    status_mb("/proc/self/status", "VmHWM")
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Lane {
    settings: Settings,
    input: String,
    predictions: String,
}

async fn lane(settings: &Settings, tag: &str) -> anyhow::Result<Lane> {
    let mut s = settings.clone();
    let input = unique(&format!("{tag}-in"));
    let predictions = unique(&format!("{tag}-pred"));
    s.kafka.input_topics = vec![input.clone()];
    s.kafka.predictions_topic = predictions.clone();
    s.kafka.dlq_topic = unique(&format!("{tag}-dlq"));
    s.kafka.features_topic = String::new();
    s.kafka.group_id = unique(&format!("{tag}-group"));
    s.http.listen = String::new();
    let names = vec![
        input.clone(),
        predictions.clone(),
        s.kafka.dlq_topic.clone(),
    ];
    for (name, outcome) in crate::kafka::create_topics(&s.kafka, &names, 1, 1).await? {
        anyhow::ensure!(
            !outcome.starts_with("failed"),
            "creating topic {name}: {outcome}"
        );
    }
    Ok(Lane {
        settings: s,
        input,
        predictions,
    })
}

fn reader(settings: &Settings, topic: &str) -> anyhow::Result<StreamConsumer> {
    let c: StreamConsumer = crate::kafka::base_config(&settings.kafka)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    c.subscribe(&[topic])?;
    Ok(c)
}

fn producer(settings: &Settings) -> anyhow::Result<FutureProducer> {
    let mut c: ClientConfig = crate::kafka::base_config(&settings.kafka);
    c.set("linger.ms", "1");
    Ok(c.create()?)
}

/// `triage run` in a child process, as users run it: the bench's effective
/// settings go to a config file (the child ignores TRIAGE_* variables, so the file
/// is the whole truth), `/metrics` listens on a free port, and memory is read from
/// the child's /proc entry.
struct Service {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Service {
    fn start(settings: &Settings) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut s = settings.clone();
        s.http.listen = format!("127.0.0.1:{port}");
        let dir = std::env::temp_dir().join(unique("service"));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("triage.toml");
        std::fs::write(&config, toml::to_string(&s)?)?;
        let log = std::fs::File::create(dir.join("service.log"))?;
        let mut cmd = Command::new(std::env::current_exe()?);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRIAGE_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Self { child, port, dir })
    }

    /// An error with the end of the service's log if it has exited.
    fn check(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => {
                let log = std::fs::read_to_string(self.dir.join("service.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                anyhow::bail!(
                    "the benchmarked `triage run` exited ({status}); its log ends:\n{}",
                    tail.join("\n")
                )
            }
        }
    }

    fn memory_mb(&self, field: &str) -> f64 {
        status_mb(&format!("/proc/{}/status", self.child.id()), field)
    }

    /// The service's Prometheus exposition.
    async fn metrics(&self) -> anyhow::Result<String> {
        let port = self.port;
        tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(
                b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response
                .split_once("\r\n\r\n")
                .map(|(_, body)| body.to_string())
                .unwrap_or_default())
        })
        .await?
    }

    /// SIGTERM, as an operator would; SIGKILL if it has not stopped after its drain.
    /// Returns the service's peak RSS.
    async fn stop(mut self) -> f64 {
        let peak = self.memory_mb("VmHWM");
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        peak
    }
}

/// The sum of a Prometheus metric's samples whose labels include every `labels` pair.
fn metric_sum(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A prediction read back: when, and how long its window had been in the service.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    at: Instant,
    in_service: Duration,
}

impl Arrival {
    /// When the service read its window's first message (from this process's clock).
    fn read_at(&self) -> Instant {
        self.at.checked_sub(self.in_service).unwrap_or(self.at)
    }
}

/// Reads predictions until `n` distinct ids arrived; returns the first arrival per id.
/// Fails early if the service exits.
async fn collect(
    consumer: &StreamConsumer,
    n: usize,
    timeout: Duration,
    service: &mut Service,
) -> anyhow::Result<HashMap<String, Arrival>> {
    let mut seen = HashMap::with_capacity(n);
    let deadline = Instant::now() + timeout;
    while seen.len() < n {
        service.check()?;
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(
            !left.is_zero(),
            "only {} of {n} predictions within {timeout:?}",
            seen.len()
        );
        let wait = left.min(Duration::from_secs(1));
        if let Ok(Ok(m)) = tokio::time::timeout(wait, consumer.recv()).await {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
            if let Some(id) = v["id"].as_str() {
                let in_service = v["timings_ms"]["in_service"].as_f64().unwrap_or(0.0);
                seen.entry(id.to_string()).or_insert_with(|| Arrival {
                    at: Instant::now(),
                    in_service: Duration::from_secs_f64(in_service.max(0.0) / 1e3),
                });
            }
        }
    }
    Ok(seen)
}

fn payload(id: &str, text: &str) -> Vec<u8> {
    serde_json::json!({ "id": id, "text": text })
        .to_string()
        .into_bytes()
}

/// Embeds `texts` in windows in-process, as the service would: `stream.workers`
/// embedders side by side, with the same threads each, taking windows in turn.
/// Returns messages/s (from the first window to the last, like the service's
/// clock), and tokenising alone in ms per message.
fn embedding_bound(settings: &Settings, texts: &[String]) -> anyhow::Result<Bound> {
    let window = settings.stream.max_messages;
    let workers = settings.stream.workers.max(1);
    let mut s = settings.clone();
    s.embedding.threads = settings.threads_per_embedder(workers);
    let windows: Vec<Vec<&str>> = texts
        .chunks(window)
        .map(|c| c.iter().map(String::as_str).collect())
        .collect();
    let mut embedders = Vec::with_capacity(workers);
    for _ in 0..workers {
        embedders.push(OnnxEmbedder::load(&s)?);
    }
    let timed = &windows[..];
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = embedders
            .iter_mut()
            .map(|e| {
                let next = &next;
                scope.spawn(move || -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(w) = timed.get(i) else { return Ok(()) };
                        e.embed(w)?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("an embedding thread panicked"))??;
        }
        Ok(())
    })?;
    let messages: usize = timed.iter().map(Vec::len).sum();
    let per_second = messages as f64 / started.elapsed().as_secs_f64();
    let embedder = &embedders[0];
    let started = Instant::now();
    for w in &windows {
        embedder.token_lengths(w)?;
    }
    let tokenize_ms = started.elapsed().as_secs_f64() * 1e3 / texts.len() as f64;
    let (mut real, mut padded) = (0, 0);
    for w in &windows {
        let (r, p) = embedder.padding(w)?;
        real += r;
        padded += p;
    }
    Ok(Bound {
        per_second,
        tokenize_ms,
        tokens_per_message: real as f64 / texts.len() as f64,
        padding: padded as f64 / real.max(1) as f64 - 1.0,
    })
}

struct Bound {
    per_second: f64,
    tokenize_ms: f64,
    tokens_per_message: f64,
    /// Padded tokens over real tokens, minus one, with the configured batch plan.
    padding: f64,
}

struct Drained {
    /// Messages/s from the service reading its first message to the last prediction.
    throughput: f64,
    stages: StageCosts,
    peak_rss: f64,
    cpu: CpuShares,
}

/// Shares of the machine's CPU time (all cores) while a backlog drained: the
/// service's (model loading included), and this bench process's (the prediction
/// reader). The rest went to the broker when it runs here, and to idling.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuShares {
    pub service: f64,
    pub bench: f64,
}

/// Writes `texts` to a fresh topic, then lets a fresh service drain them.
async fn drain_backlog(
    settings: &Settings,
    texts: &[String],
    round: usize,
) -> anyhow::Result<Drained> {
    let rows = texts.len();
    let l = lane(settings, &format!("tp{round}")).await?;
    let prod = producer(&l.settings)?;
    for (i, text) in texts.iter().enumerate() {
        let id = format!("b-{i}");
        let body = payload(&id, text);
        prod.send(
            FutureRecord::to(&l.input).key(&id).payload(&body),
            Timeout::Never,
        )
        .await
        .map_err(|(e, _)| e)?;
    }
    let preds = reader(&l.settings, &l.predictions)?;
    let mut service = Service::start(&l.settings)?;
    let (bench_cpu, started) = (cpu_seconds("self"), Instant::now());
    let arrivals = collect(&preds, rows, Duration::from_secs(3600), &mut service).await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let wall = started.elapsed().as_secs_f64() * cores;
    let cpu = CpuShares {
        service: cpu_seconds(&service.child.id().to_string()) / wall,
        bench: (cpu_seconds("self") - bench_cpu) / wall,
    };
    let exposition = service.metrics().await?;
    let per_message = |stage: &str| {
        metric_sum(
            &exposition,
            "triage_stage_duration_seconds_sum",
            &[("stage", stage)],
        ) * 1e3
            / rows as f64
    };
    let stages = StageCosts {
        decode: per_message("decode"),
        embed: per_message("embed"),
        classify: per_message("classify"),
        drift: per_message("drift"),
        produce: per_message("produce"),
    };
    let peak_rss = service.stop().await;
    // The clock runs from the service reading its first message (the earliest
    // arrival less its time in the service) to the last prediction read back.
    let start = arrivals.values().map(Arrival::read_at).min();
    let end = arrivals.values().map(|a| a.at).max();
    let span = start
        .zip(end)
        .map_or(0.0, |(s, e)| e.duration_since(s).as_secs_f64());
    let throughput = if span > 0.0 { rows as f64 / span } else { 0.0 };
    Ok(Drained {
        throughput,
        stages,
        peak_rss,
        cpu,
    })
}

/// A fresh lane with a producer, a prediction reader and a running service, warmed
/// up by one message through it (so it is loaded and assigned).
struct Rig {
    lane: Lane,
    prod: FutureProducer,
    preds: StreamConsumer,
    service: Service,
}

async fn rig(settings: &Settings, tag: &str) -> anyhow::Result<Rig> {
    let lane = lane(settings, tag).await?;
    let prod = producer(&lane.settings)?;
    let preds = reader(&lane.settings, &lane.predictions)?;
    let mut service = Service::start(&lane.settings)?;
    prod.send(
        FutureRecord::to(&lane.input)
            .key("warm")
            .payload(&payload("warm", "hello")),
        Timeout::Never,
    )
    .await
    .map_err(|(e, _)| e)?;
    collect(&preds, 1, Duration::from_secs(120), &mut service).await?;
    Ok(Rig {
        lane,
        prod,
        preds,
        service,
    })
}

/// Latencies (ms, sorted) of `n` messages produced at `rate` to a running service,
/// and the service's peak RSS.
async fn latencies(
    settings: &Settings,
    texts: &[String],
    rate: f64,
    n: usize,
) -> anyhow::Result<(Vec<f64>, f64)> {
    let Rig {
        lane: l,
        prod,
        preds,
        mut service,
    } = rig(settings, "lat").await?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut sent = HashMap::with_capacity(n);
    let producing = async {
        for (i, text) in texts.iter().take(n).enumerate() {
            tokio::time::sleep_until((start + interval * i as u32).into()).await;
            let id = format!("l-{i}");
            sent.insert(id.clone(), Instant::now());
            let body = payload(&id, text);
            let _ = prod.send_result(FutureRecord::to(&l.input).key(&id).payload(&body));
        }
        anyhow::Ok(())
    };
    let reading = collect(&preds, n, Duration::from_secs(3600), &mut service);
    let (produced, arrivals) = tokio::join!(producing, reading);
    produced?;
    let arrivals = arrivals?;
    let peak_rss = service.stop().await;
    let mut latencies: Vec<f64> = sent
        .iter()
        .filter_map(|(id, t)| {
            arrivals
                .get(id)
                .map(|a| a.at.duration_since(*t).as_secs_f64() * 1e3)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    Ok((latencies, peak_rss))
}

/// Offers `rate` messages/s for `secs` seconds and samples the service every second.
async fn overload(
    settings: &Settings,
    texts: &[String],
    factor: f64,
    rate: f64,
    secs: u64,
) -> anyhow::Result<OverloadReport> {
    let Rig {
        lane: l,
        prod,
        preds,
        mut service,
    } = rig(settings, "over").await?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut produced, mut predicted) = (0usize, 0usize);
    let mut in_service = Vec::new();
    let mut samples = Vec::new();
    loop {
        let next_send = start + interval * produced as u32;
        tokio::select! {
            biased;
            _ = tick.tick() => {
                service.check()?;
                let exposition = service.metrics().await?;
                samples.push(OverloadSample {
                    second: start.elapsed().as_secs_f64(),
                    produced,
                    predicted,
                    consumer_lag: metric_sum(
                        &exposition,
                        "triage_consumer_lag_messages",
                        &[("topic", &l.input)],
                    ) as i64,
                    rss_mb: service.memory_mb("VmRSS"),
                });
                if Instant::now() >= end {
                    break;
                }
            }
            _ = tokio::time::sleep_until(next_send.into()), if next_send < end => {
                let id = format!("o-{produced}");
                let body = payload(&id, &texts[produced % texts.len()]);
                if prod.send_result(FutureRecord::to(&l.input).key(&id).payload(&body)).is_ok() {
                    produced += 1;
                }
            }
            received = preds.recv() => {
                let Ok(m) = received else { continue };
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
                if v["id"].as_str().is_some_and(|id| id.starts_with("o-")) {
                    predicted += 1;
                    if let Some(ms) = v["timings_ms"]["in_service"].as_f64() {
                        in_service.push(ms);
                    }
                }
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let peak_rss = service.stop().await;
    let p99_of = |part: &[f64]| {
        let mut v = part.to_vec();
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.99)
    };
    let (first_half, second_half) = in_service.split_at(in_service.len() / 2);
    let halves = (p99_of(first_half), p99_of(second_half));
    in_service.sort_by(f64::total_cmp);
    let quarter = (samples.len() / 4).max(1);
    let over = |part: &[OverloadSample], f: fn(&OverloadSample) -> f64| {
        median(&part.iter().map(f).collect::<Vec<_>>())
    };
    let first = &samples[..quarter.min(samples.len())];
    let last = &samples[samples.len().saturating_sub(quarter)..];
    Ok(OverloadReport {
        factor,
        offered_rate_per_second: rate,
        seconds,
        produced,
        predicted,
        throughput_per_second: predicted as f64 / seconds,
        rss_first_quarter_mb: over(first, |s| s.rss_mb),
        rss_last_quarter_mb: over(last, |s| s.rss_mb),
        lag_first_quarter: over(first, |s| s.consumer_lag as f64),
        lag_last_quarter: over(last, |s| s.consumer_lag as f64),
        backlog_first_quarter: over(first, |s| (s.produced - s.predicted.min(s.produced)) as f64),
        backlog_last_quarter: over(last, |s| (s.produced - s.predicted.min(s.produced)) as f64),
        in_service_p50_ms: percentile(&in_service, 0.50),
        in_service_p99_ms: percentile(&in_service, 0.99),
        in_service_max_ms: in_service.last().copied().unwrap_or(0.0),
        in_service_p99_first_half_ms: halves.0,
        in_service_p99_second_half_ms: halves.1,
        peak_rss_mb: peak_rss,
        samples,
    })
}

pub async fn run(
    settings: &Settings,
    data: &Path,
    options: &BenchOptions,
) -> anyhow::Result<BenchReport> {
    let texts = Arc::new(texts_of(data, settings, options.rows)?);
    // The benchmark's own messages are {"id", "text"}, whatever the file's fields.
    let mut settings = settings.clone();
    settings.data.format = crate::config::DataFormat::Jsonl;
    settings.data.id_field = "id".into();
    settings.data.text_field = "text".into();
    let rows = texts.len();

    let mut rounds = Vec::new();
    let mut tokenize_ms = Vec::new();
    let mut stages = StageCosts::default();
    let mut service_peak = 0.0f64;
    let mut plan = (0.0, 0.0);
    let mut cpu = CpuShares::default();
    let repeat = options.repeat.max(1);
    for round in 0..repeat {
        let (s, t) = (settings.clone(), texts.clone());
        // The bound's embedder is dropped before the service loads its own.
        let b = tokio::task::spawn_blocking(move || embedding_bound(&s, &t)).await??;
        let bound = b.per_second;
        let Drained {
            throughput,
            stages: costs,
            peak_rss,
            cpu: shares,
        } = drain_backlog(&settings, &texts, round).await?;
        cpu.service += shares.service / repeat as f64;
        cpu.bench += shares.bench / repeat as f64;
        service_peak = service_peak.max(peak_rss);
        tracing::info!(
            round = round + 1,
            of = repeat,
            bound = format!("{bound:.1}"),
            throughput = format!("{throughput:.1}"),
            "Bound and throughput measured (messages/s)."
        );
        tokenize_ms.push(b.tokenize_ms);
        plan = (b.tokens_per_message, b.padding);
        for (sum, add) in [
            (&mut stages.decode, costs.decode),
            (&mut stages.embed, costs.embed),
            (&mut stages.classify, costs.classify),
            (&mut stages.drift, costs.drift),
            (&mut stages.produce, costs.produce),
        ] {
            *sum += add / repeat as f64;
        }
        rounds.push(Round {
            embed_only_per_second: bound,
            throughput_per_second: throughput,
            vs_bound: if bound > 0.0 { throughput / bound } else { 0.0 },
        });
    }
    let of = |f: fn(&Round) -> f64| rounds.iter().map(f).collect::<Vec<_>>();
    let throughput = median(&of(|r| r.throughput_per_second));

    let rate = options.rate.unwrap_or(throughput / 2.0).max(0.1);
    let n = options.latency_rows.min(rows).max(1);
    let (latencies, peak_rss) = latencies(&settings, &texts, rate, n).await?;
    service_peak = service_peak.max(peak_rss);

    let overload = match options.overload {
        Some(factor) => Some(
            overload(
                &settings,
                &texts,
                factor,
                (throughput * factor).max(0.1),
                options.overload_secs,
            )
            .await?,
        ),
        None => None,
    };

    Ok(BenchReport {
        rows,
        window_max_messages: settings.stream.max_messages,
        embed_only_per_second: median(&of(|r| r.embed_only_per_second)),
        throughput_per_second: throughput,
        throughput_vs_bound: median(&of(|r| r.vs_bound)),
        throughput_vs_bound_min: of(|r| r.vs_bound).into_iter().fold(f64::INFINITY, f64::min),
        rounds,
        tokenize_ms_per_message: median(&tokenize_ms),
        tokens_per_message: plan.0,
        padding_overhead: plan.1,
        // Worker time per message times messages per second, over the workers.
        workers_busy: (stages.embed + stages.classify + stages.drift) * throughput
            / 1e3
            / settings.stream.workers.max(1) as f64,
        stages_ms_per_message: stages,
        cpu_while_draining: cpu,
        offered_rate_per_second: rate,
        latency_rows: latencies.len(),
        latency_p50_ms: percentile(&latencies, 0.50),
        latency_p99_ms: percentile(&latencies, 0.99),
        latency_max_ms: latencies.last().copied().unwrap_or(0.0),
        service_peak_rss_mb: service_peak.max(overload.as_ref().map_or(0.0, |o| o.peak_rss_mb)),
        overload,
        bench_peak_rss_mb: peak_rss_mb(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn metric_sums_pick_the_series_with_every_label() {
        let text = "# HELP x\n\
            triage_stage_duration_seconds_sum{stage=\"embed\"} 2.5\n\
            triage_stage_duration_seconds_sum{stage=\"embedding\"} 9\n\
            triage_consumer_lag_messages{partition=\"0\",topic=\"in\"} 3\n\
            triage_consumer_lag_messages{partition=\"1\",topic=\"in\"} 4\n\
            triage_consumer_lag_messages{partition=\"0\",topic=\"other\"} 100\n";
        let stage = "triage_stage_duration_seconds_sum";
        assert_eq!(metric_sum(text, stage, &[("stage", "embed")]), 2.5);
        let lag = "triage_consumer_lag_messages";
        assert_eq!(metric_sum(text, lag, &[("topic", "in")]), 7.0);
        assert_eq!(metric_sum(text, "absent", &[]), 0.0);
    }

    #[test]
    fn cpu_time_of_this_process_grows_with_work() {
        let before = cpu_seconds("self");
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds("self") > before, "{before} s did not grow");
    }

    #[test]
    fn memory_figures_come_from_proc_status() {
        let (now, peak) = (status_mb("/proc/self/status", "VmRSS"), peak_rss_mb());
        assert!(now > 0.0 && peak >= now, "VmRSS {now} MB, VmHWM {peak} MB");
    }
}
