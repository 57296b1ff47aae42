//! The measurements: the embedding bound, draining a backlog, latency at an offered
//! rate, and overload.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::child::{Service, cpu_seconds};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::lane::{Arrival, Rig, collect, lane, payload, producer, reader, rig};
use super::{Breakdown, CpuShares, Floors, OverloadReport, OverloadSample, Spread, StageCosts};
use crate::clock::WallClock;
use crate::config::Settings;
use crate::embed::{Embedder, EmbeddingSpec, OnnxEmbedder};
use crate::kafka::client::{Producer, TopicReader};
use crate::stats::{median, percentile};
use crate::tools::common::metric_sum;

/// Embeds `texts` in windows in-process, as the service would: `stream.workers`
/// embedders side by side, with the same threads each, taking windows in turn.
/// Returns messages/s (from the first window to the last, like the service's
/// clock), and tokenising alone in ms per message.
pub(super) fn embedding_bound(
    settings: &Settings,
    champion: &EmbeddingSpec,
    texts: &[String],
) -> anyhow::Result<Bound> {
    let window = settings.stream.max_messages;
    let windows: Vec<Vec<&str>> = texts
        .chunks(window)
        .map(|c| c.iter().map(String::as_str).collect())
        .collect();
    let mut embedders = OnnxEmbedder::load_many(settings, settings.stream.workers)?;
    for e in &mut embedders {
        e.adopt(champion)?;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = embedders
            .iter_mut()
            .map(|e| {
                let (next, windows) = (&next, &windows);
                scope.spawn(move || -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(w) = windows.get(i) else {
                            return Ok(());
                        };
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
    let per_second = texts.len() as f64 / started.elapsed().as_secs_f64();
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

pub(super) struct Profiled {
    pub(super) texts: usize,
    pub(super) tokens: usize,
    pub(super) trace: crate::embed::profile::TraceTotals,
    pub(super) peak: crate::embed::profile::Peak,
    pub(super) peak_one: crate::embed::profile::Peak,
}

/// ONNX Runtime's profile of up to 200 of `texts` embedded one per call with one
/// worker's session settings, and the machine's fp32 and int8 matrix rates at the
/// feed-forward's shape (`[tokens, 384] x [384, 1536]`, tokens the mean per text
/// rounded up to 16), with `stream.workers` sessions side by side as the service
/// runs them.
pub(super) fn profile(
    settings: &Settings,
    champion: &EmbeddingSpec,
    texts: &[String],
) -> anyhow::Result<Profiled> {
    let workers = settings.stream.workers.max(1);
    let mut embedder = OnnxEmbedder::load_one_of(settings, workers)?;
    embedder.adopt(champion)?;
    let sample: Vec<&str> = texts.iter().take(200).map(String::as_str).collect();
    let dir = std::env::temp_dir().join(super::unique("profile"));
    std::fs::create_dir_all(&dir)?;
    let profiled = embedder.profile(&sample, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let (trace, tokens) = profiled?;
    let m = (tokens / sample.len().max(1)).div_ceil(16).max(1) * 16;
    let threads = settings.threads_per_embedder(workers);
    let peak_at = |sessions| {
        crate::embed::profile::measure_peak(
            embedder.environment(),
            (m, 384, 1536),
            sessions,
            threads,
            Duration::from_secs(2),
        )
    };
    // One session alone, as the profile ran; then the workers' sessions side by side.
    let peak_one = peak_at(1)?;
    let peak = peak_at(workers)?;
    Ok(Profiled {
        peak_one,
        texts: sample.len(),
        tokens,
        trace,
        peak,
    })
}

pub(super) struct Bound {
    pub(super) per_second: f64,
    pub(super) tokenize_ms: f64,
    pub(super) tokens_per_message: f64,
    /// Padded tokens over real tokens, minus one, with the configured batch plan.
    pub(super) padding: f64,
}

pub(super) struct Drained {
    /// Messages/s from the service reading its first message to the last prediction.
    pub(super) throughput: f64,
    pub(super) stages: StageCosts,
    pub(super) peak_rss: f64,
    pub(super) cpu: CpuShares,
    /// Texts the service scored with a challenger in shadow
    /// (`triage_shadow_predictions_total`), and prediction records read back with a
    /// `shadow` field.
    pub(super) shadow_scored: u64,
    pub(super) shadow_records: usize,
}

/// Writes `texts` to a fresh topic (named after `tag`), then lets a fresh service
/// drain them.
pub(super) async fn drain_backlog(
    settings: &Settings,
    texts: &[String],
    tag: &str,
) -> anyhow::Result<Drained> {
    let rows = texts.len();
    let l = lane(settings, tag).await?;
    let prod = producer(&l.settings)?;
    for (i, text) in texts.iter().enumerate() {
        let id = format!("b-{i}");
        let body = payload(&id, text);
        prod.send(&l.input, &id, &body).await?;
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
    let shadow_scored = metric_sum(&exposition, "triage_shadow_predictions_total", &[]) as u64;
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
        shadow_scored,
        shadow_records: arrivals.values().filter(|a| a.shadow).count(),
    })
}

pub(super) struct Latencies {
    /// Produce to prediction read back, ms, sorted.
    pub(super) sorted_ms: Vec<f64>,
    pub(super) breakdown: Breakdown,
    pub(super) peak_rss: f64,
}

/// Latencies of `n` messages produced at `rate` to a running service, where each
/// message's time went, and the service's peak RSS.
pub(super) async fn latencies(
    settings: &Settings,
    texts: &[String],
    rate: f64,
    n: usize,
) -> anyhow::Result<Latencies> {
    let Rig {
        lane: l,
        prod,
        preds,
        mut service,
    } = rig(settings, "lat").await?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let wall = WallClock::now();
    let start = Instant::now();
    let mut sent = HashMap::with_capacity(n);
    let mut acked = HashMap::with_capacity(n);
    let producing = async {
        // Each send is awaited beside the pacing: its acknowledgement time is the
        // produce -> broker share.
        let mut acks = FuturesUnordered::new();
        let mut i = 0;
        while i < n || !acks.is_empty() {
            let next_at = start + interval * i as u32;
            tokio::select! {
                biased;
                Some((id, result)) = acks.next(), if !acks.is_empty() => {
                    let result: Result<(), crate::kafka::KafkaError> = result;
                    result?;
                    acked.insert(id, Instant::now());
                }
                _ = tokio::time::sleep_until(next_at.into()), if i < n => {
                    let id = format!("l-{i}");
                    sent.insert(id.clone(), Instant::now());
                    let body = payload(&id, &texts[i % texts.len()]);
                    let (prod, input) = (&prod, &l.input);
                    acks.push(async move {
                        let result = prod.send(input, &id, &body).await;
                        (id, result)
                    });
                    i += 1;
                }
            }
        }
        anyhow::Ok(())
    };
    let reading = collect(&preds, n, Duration::from_secs(3600), &mut service);
    let (produced, arrivals) = tokio::join!(producing, reading);
    produced?;
    let arrivals = arrivals?;
    let exposition = service.metrics().await?;
    let peak_rss = service.stop().await;
    let mut latencies: Vec<f64> = Vec::with_capacity(sent.len());
    let mut parts: [Vec<f64>; 7] = Default::default();
    for (id, t) in &sent {
        let Some(a) = arrivals.get(id) else { continue };
        let total = a.at.duration_since(*t).as_secs_f64() * 1e3;
        latencies.push(total);
        // The breakdown: messages whose send was acknowledged and whose prediction
        // carries the service's clock.
        let (Some(ack), Some(c)) = (acked.get(id), a.clock) else {
            continue;
        };
        let ms = |us: i64| us as f64 / 1e3;
        let ack_us = wall.us(*ack);
        let worked = c.embed_ms + c.classify_ms;
        for (part, v) in parts.iter_mut().zip([
            ack.duration_since(*t).as_secs_f64() * 1e3,
            ms(c.read_at_us - ack_us),
            c.window_ms,
            (c.since_read_ms - c.window_ms - worked).max(0.0),
            worked,
            ms(wall.us(a.at) - c.ready_at_us),
            total,
        ]) {
            part.push(v);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let windows = metric_sum(&exposition, "triage_windows_total", &[]);
    let written = metric_sum(&exposition, "triage_window_size_messages_sum", &[]);
    let produce_sum = metric_sum(
        &exposition,
        "triage_stage_duration_seconds_sum",
        &[("stage", "produce")],
    );
    let produce_count = metric_sum(
        &exposition,
        "triage_stage_duration_seconds_count",
        &[("stage", "produce")],
    );
    let [
        produce,
        broker_to_read,
        window,
        to_worker,
        embed,
        ready_to_read_back,
        total,
    ] = parts.map(|v| Spread::of(&v));
    Ok(Latencies {
        sorted_ms: latencies,
        breakdown: Breakdown {
            messages: total.count,
            produce,
            broker_to_read,
            window,
            to_worker,
            embed,
            ready_to_read_back,
            total,
            service_produce_mean_ms: if produce_count > 0.0 {
                produce_sum * 1e3 / produce_count
            } else {
                0.0
            },
            mean_window_messages: if windows > 0.0 {
                written / windows
            } else {
                0.0
            },
        },
        peak_rss,
    })
}

/// When each of the records `0..n` (payload: the number) was read.
async fn read_numbered(reader: &TopicReader, n: usize) -> anyhow::Result<HashMap<usize, Instant>> {
    let mut at = HashMap::with_capacity(n);
    while at.len() < n {
        let payload = tokio::time::timeout(Duration::from_secs(60), reader.next_payload())
            .await
            .map_err(|_| anyhow::anyhow!("a floor reader read nothing for 60 s"))??;
        if let Some(i) = std::str::from_utf8(&payload)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&i| i < n)
        {
            at.entry(i).or_insert_with(Instant::now);
        }
    }
    Ok(at)
}

/// The floors the clients and the broker set, each measured on its own with no
/// service between: `n` messages, one every `gap`, produced by the bench's producer
/// (each acknowledgement awaited) and read back by a reader configured as the
/// service's consumer and by one configured as the bench's prediction reader; then
/// `n` records produced by a producer configured as the service's.
pub(super) async fn floors(settings: &Settings, n: usize, gap: Duration) -> anyhow::Result<Floors> {
    let l = lane(settings, "floor").await?;
    let prod = producer(&l.settings)?;
    // Configured as the service's consumer (the bench's prediction reader is too).
    let as_service = reader(&l.settings, &l.input)?;
    // librdkafka's own defaults (fetch.wait.max.ms 500), without the escape hatch.
    let as_default =
        TopicReader::from_beginning(&l.settings.kafka, &l.input, &super::unique("plain-reader"))?;
    // Warm: both readers assigned and fetching before the clock runs.
    prod.send(&l.input, "warm", b"warm").await?;
    for r in [&as_service, &as_default] {
        tokio::time::timeout(Duration::from_secs(60), r.next_payload()).await??;
    }
    let mut sent = Vec::with_capacity(n);
    let mut acked = Vec::with_capacity(n);
    let producing = async {
        for i in 0..n {
            let t = Instant::now();
            prod.send(&l.input, &i.to_string(), i.to_string().as_bytes())
                .await?;
            sent.push(t);
            acked.push(Instant::now());
            tokio::time::sleep(gap).await;
        }
        anyhow::Ok(())
    };
    let (produced, by_service, by_default) = tokio::join!(
        producing,
        read_numbered(&as_service, n),
        read_numbered(&as_default, n)
    );
    produced?;
    let (by_service, by_default) = (by_service?, by_default?);
    let ms = |a: Instant, b: Instant| a.saturating_duration_since(b).as_secs_f64() * 1e3;
    let spread =
        |f: &dyn Fn(usize) -> Option<f64>| Spread::of(&(0..n).filter_map(f).collect::<Vec<_>>());
    let bench_produce = spread(&|i| Some(ms(acked[i], sent[i])));
    let service_fetch = spread(&|i| by_service.get(&i).map(|&r| ms(r, acked[i])));
    let default_fetch = spread(&|i| by_default.get(&i).map(|&r| ms(r, acked[i])));
    // The service's producer: idempotent, acks=all, its linger.ms.
    let service_prod = Producer::like_service(&l.settings.kafka)?;
    service_prod
        .send(&l.settings.kafka.dlq_topic, "warm", b"warm")
        .await?;
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        service_prod
            .send(&l.settings.kafka.dlq_topic, &i.to_string(), b"floor")
            .await?;
        acks.push(ms(Instant::now(), t));
        tokio::time::sleep(gap).await;
    }
    let service_produce = Spread::of(&acks);
    // In, out, and read back by a reader configured like the service's consumer.
    let sum = bench_produce.p50 + service_fetch.p50 + service_produce.p50 + service_fetch.p50;
    Ok(Floors {
        messages: n,
        bench_produce,
        service_fetch,
        service_produce,
        default_fetch,
        path_p50_ms: sum,
    })
}

/// Offers `rate` messages/s for `secs` seconds and samples the service every second.
pub(super) async fn overload(
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
                if prod.enqueue(&l.input, &id, &body).is_ok() {
                    produced += 1;
                }
            }
            received = preds.next_payload() => {
                let Ok(payload) = received else { continue };
                let v: serde_json::Value = serde_json::from_slice(&payload)?;
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
