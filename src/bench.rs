//! `triage bench`: measures the streaming service end to end through a real broker.
//!
//! 1. Embedding-only bound: the same texts embedded in-process in windows of
//!    `stream.max_messages`, with the same settings.
//! 2. Sustained throughput: all messages are written first, then the service is
//!    started and the time from its first to its last prediction is measured.
//! 3. Latency at an offered rate (default: half the measured throughput): messages
//!    are produced at that rate to a running service; latency is the time from
//!    producing a message to reading its prediction back.
//! 4. Peak RSS of the whole process (service, producer and reader together).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::config::Settings;
use crate::embed::{Embedder, OnnxEmbedder};
use crate::feature::readers::{ReaderSpec, read_file};
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub rows: usize,
    /// Offered rate for the latency run, messages/s; `None`: half the throughput.
    pub rate: Option<f64>,
    /// Messages in the latency run.
    pub latency_rows: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub rows: usize,
    pub window_max_messages: usize,
    pub embed_only_per_second: f64,
    pub throughput_per_second: f64,
    pub throughput_vs_bound: f64,
    pub offered_rate_per_second: f64,
    pub latency_rows: usize,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub peak_rss_mb: f64,
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

/// Peak resident set size of this process, from /proc (Linux).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
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

fn start_service(settings: Settings) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(err) =
            crate::inference::service::run(settings, Arc::new(Metrics::new()), shutdown).await
        {
            tracing::error!(error = %err, "Benchmark service failed.");
        }
    });
    (stop, handle)
}

/// Reads predictions until `n` distinct ids arrived; returns arrival time per id.
async fn collect(
    consumer: &StreamConsumer,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<HashMap<String, Instant>> {
    let mut seen = HashMap::with_capacity(n);
    let deadline = Instant::now() + timeout;
    while seen.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(
            !left.is_zero(),
            "only {} of {n} predictions within {timeout:?}",
            seen.len()
        );
        if let Ok(Ok(m)) = tokio::time::timeout(left, consumer.recv()).await {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
            if let Some(id) = v["id"].as_str() {
                seen.entry(id.to_string()).or_insert_with(Instant::now);
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

pub async fn run(
    settings: &Settings,
    data: &Path,
    options: &BenchOptions,
) -> anyhow::Result<BenchReport> {
    let texts = texts_of(data, settings, options.rows)?;
    // The benchmark's own messages are {"id", "text"}, whatever the file's fields.
    let mut settings = settings.clone();
    settings.data.format = crate::config::DataFormat::Jsonl;
    settings.data.id_field = "id".into();
    settings.data.text_field = "text".into();
    let rows = texts.len();
    let window = settings.stream.max_messages;

    // 1. The bound: embedding alone, same settings, same window size.
    let embed_settings = settings.clone();
    let embed_texts = texts.clone();
    let embed_only = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let mut embedder = OnnxEmbedder::load(&embed_settings)?;
        let started = Instant::now();
        for chunk in embed_texts.chunks(window) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            embedder.embed(&refs)?;
        }
        Ok(embed_texts.len() as f64 / started.elapsed().as_secs_f64())
    })
    .await??;
    tracing::info!(
        per_second = format!("{embed_only:.1}"),
        "Embedding-only bound measured."
    );

    // 2. Sustained throughput: backlog first, then the service drains it.
    let l = lane(&settings, "tp").await?;
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
    let (stop, handle) = start_service(l.settings.clone());
    let arrivals = collect(&preds, rows, Duration::from_secs(3600)).await?;
    let _ = stop.send(());
    let _ = handle.await;
    let mut times: Vec<Instant> = arrivals.values().copied().collect();
    times.sort();
    let span = times
        .last()
        .zip(times.first())
        .map_or(0.0, |(l, f)| l.duration_since(*f).as_secs_f64());
    // The first window's predictions open the clock, so they are not counted.
    let counted = rows.saturating_sub(window.min(rows - 1)).max(1);
    let throughput = if span > 0.0 {
        counted as f64 / span
    } else {
        0.0
    };
    tracing::info!(
        per_second = format!("{throughput:.1}"),
        "Sustained throughput measured."
    );

    // 3. Latency at an offered rate.
    let rate = options.rate.unwrap_or(throughput / 2.0).max(0.1);
    let l = lane(&settings, "lat").await?;
    let prod = producer(&l.settings)?;
    let preds = reader(&l.settings, &l.predictions)?;
    let (stop, handle) = start_service(l.settings.clone());
    // Warm up: one message through, so the service is loaded and assigned.
    prod.send(
        FutureRecord::to(&l.input)
            .key("warm")
            .payload(&payload("warm", "hello")),
        Timeout::Never,
    )
    .await
    .map_err(|(e, _)| e)?;
    collect(&preds, 1, Duration::from_secs(120)).await?;
    let n = options.latency_rows.min(rows).max(1);
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
    let reading = collect(&preds, n, Duration::from_secs(3600));
    let (produced, arrivals) = tokio::join!(producing, reading);
    produced?;
    let arrivals = arrivals?;
    let _ = stop.send(());
    let _ = handle.await;
    let mut latencies: Vec<f64> = sent
        .iter()
        .filter_map(|(id, t)| {
            arrivals
                .get(id)
                .map(|a| a.duration_since(*t).as_secs_f64() * 1e3)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);

    Ok(BenchReport {
        rows,
        window_max_messages: window,
        embed_only_per_second: embed_only,
        throughput_per_second: throughput,
        throughput_vs_bound: if embed_only > 0.0 {
            throughput / embed_only
        } else {
            0.0
        },
        offered_rate_per_second: rate,
        latency_rows: latencies.len(),
        latency_p50_ms: percentile(&latencies, 0.50),
        latency_p99_ms: percentile(&latencies, 0.99),
        latency_max_ms: latencies.last().copied().unwrap_or(0.0),
        peak_rss_mb: peak_rss_mb(),
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
}
