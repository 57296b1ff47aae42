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
//! 5. Optionally (`--shadow`), the cost of scoring a challenger in shadow: each round
//!    drains the same messages once more, with a copy of the champion in shadow,
//!    right before or after the plain run (alternating), and reports shadowed over
//!    plain throughput (see [`shadow`]).
//!
//! The service runs as a child `triage run` process, as users run it.

mod child;
mod lane;
mod phases;
mod shadow;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::config::Settings;
use crate::feature::readers::{ReaderSpec, read_file};
use crate::stats::{median, percentile};
pub use child::peak_rss_mb;
use phases::{Drained, Latencies, drain_backlog, embedding_bound, floors, latencies, overload};

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
    /// Each round also drains the messages with a challenger in shadow.
    pub shadow: bool,
    /// Profile the embedding per operator and measure the machine's matrix rates.
    pub profile: bool,
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
    /// Where a message's time went in the latency run.
    pub latency_breakdown: Breakdown,
    /// What the broker and the clients cost on their own, with no service between.
    pub floors: Floors,
    pub overload: Option<OverloadReport>,
    /// With `--profile`: the embedding per operator, and the share of the
    /// machine's int8 and fp32 matrix rates reached.
    pub profile: Option<ProfileReport>,
    /// Peak RSS of the `triage run` processes (the highest of them).
    pub service_peak_rss_mb: f64,
    /// Peak RSS of the bench process itself (the bound's embedder, producer, reader).
    pub bench_peak_rss_mb: f64,
    /// With `--shadow`: throughput without and with a challenger in shadow. The
    /// fields above then describe the runs without one.
    pub shadow: Option<ShadowReport>,
}

/// The cost of scoring a challenger in shadow: the same messages drained by a
/// service with the champion alone and by one with a challenger in shadow, back to
/// back in each round.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    /// The challenger's version in the bench's own registry: a copy of the champion.
    pub challenger: String,
    /// Medians over the rounds, messages/s.
    pub plain_per_second: f64,
    pub shadowed_per_second: f64,
    /// Shadowed over plain throughput: the median of the rounds' ratios, and the lowest.
    pub ratio: f64,
    pub ratio_min: f64,
    /// The geometric mean of the rounds' ratios: with as many rounds of each order
    /// (an even `--repeat`), a slowdown of whichever drain runs second cancels out.
    pub ratio_geometric_mean: f64,
    /// Per message in the shadowed runs (means over the rounds); `classify` holds
    /// both models' predictions. The plain runs' are `stages_ms_per_message`.
    pub stages_ms_per_message: StageCosts,
    /// What the shadow adds to a worker's time per message (classifying, shadowed
    /// less plain), in ms and as a share of the plain runs' worker time (embed,
    /// classify, drift). Throughput is bound by the workers, so 1 / (1 + share) is
    /// the ratio the stage clocks predict; unlike the measured ratio it does not
    /// move with the machine's speed between two drains.
    pub added_classify_ms_per_message: f64,
    pub added_worker_share: f64,
    pub rounds: Vec<ShadowRound>,
}

/// One round's pair of drains.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowRound {
    /// Which drained first: `plain` (rounds 1, 3, ...) or `shadowed` (2, 4, ...).
    pub first: &'static str,
    pub plain_per_second: f64,
    pub shadowed_per_second: f64,
    /// shadowed / plain.
    pub ratio: f64,
    /// Texts the challenger scored in the shadowed run (`triage_shadow_predictions_total`).
    pub shadow_predictions: u64,
}

/// The embedding, operator by operator, against the machine's matrix rates.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileReport {
    pub texts: usize,
    pub tokens_per_text: f64,
    /// Whole session runs, as ONNX Runtime timed them, ms per text.
    pub run_ms_per_text: f64,
    /// Kernel time per operator type, most expensive first; `share` of all kernel time.
    pub ops: Vec<ProfiledOp>,
    /// Arithmetic of the matrix products per text: int8 (`MatMulInteger`,
    /// `QAttention`'s projection) and fp32 (attention's scores and context).
    pub int8_ops_per_text: f64,
    pub fp32_flops_per_text: f64,
    /// The workers' sessions side by side: the machine's rate as the service runs.
    pub peak: crate::embed::profile::Peak,
    /// One session alone, as the profile ran.
    pub peak_one_session: crate::embed::profile::Peak,
    /// The profiled kernels' rate over one session's peak: the int8 and the fp32
    /// matrix products (operators that are one kind of product alone; fused
    /// attention mixes both and is left out of the rates).
    /// None where no such operator ran (the fused graph's fp32 products are all
    /// inside its attention nodes).
    pub int8_kernel_share: Option<f64>,
    pub fp32_kernel_share: Option<f64>,
    /// The service's end-to-end throughput times the arithmetic per text: ops/s,
    /// and over the whole machine's peak.
    pub service_int8_ops: f64,
    pub service_int8_share: f64,
    pub service_fp32_flops: f64,
    pub service_fp32_share: f64,
    /// A text's matrix arithmetic at both peaks, ms of the whole machine.
    pub ms_per_text_at_peak: f64,
}

/// An operator type's cost (its fields inline in the JSON) and share of kernel time.
#[derive(Debug, Clone, Serialize)]
pub struct ProfiledOp {
    #[serde(flatten)]
    pub cost: crate::embed::profile::OpCost,
    pub share: f64,
}

/// Median, 99th percentile and mean of a set of times, ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Spread {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Self {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Self {
            count: v.len(),
            p50: percentile(&v, 0.50),
            p99: percentile(&v, 0.99),
            mean: if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            },
        }
    }
}

/// Where a message's time went in the latency run, per message, in order:
/// produce (the bench's producer until the broker acknowledged), broker to read
/// (from that acknowledgement to the service reading it: the consumer's fetch),
/// window (read to its window handed on), to worker (the window's decode, queue,
/// drift and hand-offs: the rest of read to ready), embed (the window's embedding
/// and classifying on its worker), ready to read back (the service producing the
/// window after the windows before it, the broker acknowledging, the bench's reader
/// fetching it), and the total (produce to read back). The wall-clock times come
/// from the service's records and this process, on one machine's clock.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Breakdown {
    pub messages: usize,
    pub produce: Spread,
    pub broker_to_read: Spread,
    pub window: Spread,
    pub to_worker: Spread,
    pub embed: Spread,
    pub ready_to_read_back: Spread,
    pub total: Spread,
    /// The service's own produce: mean wall time of a window's write until the
    /// broker acknowledged it (its `produce` stage), ms.
    pub service_produce_mean_ms: f64,
    /// Messages per window in the latency run.
    pub mean_window_messages: f64,
}

/// The floors, each measured with no service between (ms): the bench's producer
/// until the broker acknowledges (its linger.ms 1); from that acknowledgement to a
/// reader configured as the service's consumer reading it (fetch.wait.max.ms,
/// fetch.min.bytes and the broker's answer to an empty fetch; the bench's
/// prediction reader is configured the same way); the service's producer until
/// acknowledged (its linger.ms, idempotence, acks=all); and, for comparison, the
/// fetch of a reader with librdkafka's defaults (fetch.wait.max.ms 500).
/// `path_p50_ms`: produce, fetch, the service's produce, fetch (medians): what a
/// message's round trip costs without any work.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Floors {
    pub messages: usize,
    pub bench_produce: Spread,
    pub service_fetch: Spread,
    pub service_produce: Spread,
    pub default_fetch: Spread,
    pub path_p50_ms: f64,
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
    /// From the service's consumer-lag gauge: messages on the broker not yet committed.
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

/// Shares of the machine's CPU time (all cores) while a backlog drained: the
/// service's (model loading included), and this bench process's (the prediction
/// reader). The rest went to the broker when it runs here, and to idling.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuShares {
    pub service: f64,
    pub bench: f64,
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
    // The service embeds as its champion was trained (graph and token length),
    // whatever the config says: so does the bound.
    let registry = crate::registry::Registry::from_settings(&settings)?;
    let champion = Arc::new(registry.card("champion")?.embedding);
    let rows = texts.len();
    let registries = if options.shadow {
        Some(shadow::Registries::copy(&settings)?)
    } else {
        if let Ok(aliases) = registry.aliases()
            && let Some(challenger) = aliases.challenger
        {
            tracing::warn!(
                %challenger,
                "The registry has a challenger: the benchmarked service scores it in shadow, and the figures include that cost. `--shadow` measures with and without one."
            );
        }
        None
    };
    let mut shadow_pairs = Vec::new();
    let mut shadow_stages = StageCosts::default();

    let mut rounds = Vec::new();
    let mut tokenize_ms = Vec::new();
    let mut stages = StageCosts::default();
    let mut service_peak = 0.0f64;
    let mut plan = (0.0, 0.0);
    let mut cpu = CpuShares::default();
    let repeat = options.repeat.max(1);
    for round in 0..repeat {
        let (s, t, c) = (settings.clone(), texts.clone(), champion.clone());
        // The bound's embedder is dropped before the service loads its own.
        let b = tokio::task::spawn_blocking(move || embedding_bound(&s, &c, &t)).await??;
        let bound = b.per_second;
        let drained = match &registries {
            None => drain_backlog(&settings, &texts, &format!("tp{round}")).await?,
            Some(r) => {
                let (plain, shadowed) = r.drain_pair(&texts, round).await?;
                tracing::info!(
                    round = round + 1,
                    of = repeat,
                    plain = format!("{:.1}", plain.throughput),
                    shadowed = format!("{:.1}", shadowed.throughput),
                    first = if shadow::plain_first(round) {
                        "plain"
                    } else {
                        "shadowed"
                    },
                    "Throughput without and with a challenger in shadow measured (messages/s)."
                );
                shadow_pairs.push((
                    plain.throughput,
                    shadowed.throughput,
                    shadowed.shadow_scored,
                ));
                add_mean(&mut shadow_stages, &shadowed.stages, repeat);
                service_peak = service_peak.max(shadowed.peak_rss);
                plain
            }
        };
        let Drained {
            throughput,
            stages: costs,
            peak_rss,
            cpu: shares,
            ..
        } = drained;
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
        add_mean(&mut stages, &costs, repeat);
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
    let Latencies {
        sorted_ms: latencies,
        breakdown,
        peak_rss,
    } = latencies(&settings, &texts, rate, n).await?;
    service_peak = service_peak.max(peak_rss);
    let floors = floors(&settings, 100, std::time::Duration::from_millis(20)).await?;
    let profile = if options.profile {
        let (s, t, c) = (settings.clone(), texts.clone(), champion.clone());
        let p = tokio::task::spawn_blocking(move || phases::profile(&s, &c, &t)).await??;
        Some(profile_report(p, throughput))
    } else {
        None
    };

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

    let shadow = registries
        .as_ref()
        .map(|r| shadow::report(&r.challenger, &shadow_pairs, &stages, shadow_stages));
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
        latency_breakdown: breakdown,
        floors,
        service_peak_rss_mb: service_peak.max(overload.as_ref().map_or(0.0, |o| o.peak_rss_mb)),
        overload,
        profile,
        bench_peak_rss_mb: peak_rss_mb(),
        shadow,
    })
}

fn profile_report(p: phases::Profiled, throughput: f64) -> ProfileReport {
    let n = p.texts.max(1) as f64;
    let kernel_us: f64 = p.trace.ops.iter().map(|o| o.us).sum();
    use crate::embed::profile::{OpCost, is_fp32_matmul, is_int8_matmul};
    // The arithmetic per text counts every product, fused attention's too; the
    // kernels' rates only the operators that are one kind of product alone.
    let int8_per_text = p.trace.ops.iter().map(|o| o.int8_ops).sum::<f64>() / n;
    let fp32_per_text = p.trace.ops.iter().map(|o| o.fp32_flops).sum::<f64>() / n;
    let kernel_rate = |keep: fn(&str) -> bool, flops: fn(&OpCost) -> f64| {
        let (f, us) = p
            .trace
            .ops
            .iter()
            .filter(|o| keep(&o.op))
            .fold((0.0, 0.0), |(f, us), o| (f + flops(o), us + o.us));
        (us > 0.0).then(|| f / (us / 1e6))
    };
    let share = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let at_peak = share(int8_per_text, p.peak.int8_ops) + share(fp32_per_text, p.peak.fp32_flops);
    ProfileReport {
        texts: p.texts,
        tokens_per_text: p.tokens as f64 / n,
        run_ms_per_text: p.trace.run_us / 1e3 / n,
        ops: p
            .trace
            .ops
            .iter()
            .map(|o| ProfiledOp {
                cost: o.clone(),
                share: share(o.us, kernel_us),
            })
            .collect(),
        int8_ops_per_text: int8_per_text,
        fp32_flops_per_text: fp32_per_text,
        int8_kernel_share: kernel_rate(is_int8_matmul, |o| o.int8_ops)
            .map(|rate| share(rate, p.peak_one.int8_ops)),
        fp32_kernel_share: kernel_rate(is_fp32_matmul, |o| o.fp32_flops)
            .map(|rate| share(rate, p.peak_one.fp32_flops)),
        service_int8_ops: throughput * int8_per_text,
        service_int8_share: share(throughput * int8_per_text, p.peak.int8_ops),
        service_fp32_flops: throughput * fp32_per_text,
        service_fp32_share: share(throughput * fp32_per_text, p.peak.fp32_flops),
        ms_per_text_at_peak: at_peak * 1e3,
        peak: p.peak,
        peak_one_session: p.peak_one,
    }
}

/// Adds one of `rounds` runs' stage costs to their mean.
fn add_mean(mean: &mut StageCosts, run: &StageCosts, rounds: usize) {
    for (sum, add) in [
        (&mut mean.decode, run.decode),
        (&mut mean.embed, run.embed),
        (&mut mean.classify, run.classify),
        (&mut mean.drift, run.drift),
        (&mut mean.produce, run.produce),
    ] {
        *sum += add / rounds as f64;
    }
}

/// `triage-bench-{tag}-...`: a name no other run uses (topics, groups, folders).
fn unique(tag: &str) -> String {
    crate::tools::common::unique(&format!("bench-{tag}"))
}
