//! `triage bench`: run the benchmark (`tools::bench`) and print its report.

use std::process::ExitCode;

use super::{print_json, runtime};
use crate::cli::args::BenchArgs;
use crate::config::Settings;
use crate::tools::bench::{self, BenchOptions, BenchReport};

pub(super) fn bench(settings: &Settings, args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(f) = args.overload {
        anyhow::ensure!(
            f.is_finite() && f > 1.0,
            "--overload {f}: the factor multiplies the measured throughput and must be above 1 (e.g. 2)"
        );
    }
    let options = BenchOptions {
        rows: args.rows,
        repeat: args.repeat as usize,
        rate: args.rate,
        latency_rows: args.latency_rows,
        overload: args.overload,
        overload_secs: args.overload_secs,
        shadow: args.shadow,
        profile: args.profile,
    };
    let report = runtime()?.block_on(bench::run(settings, &args.data, &options))?;
    if args.json {
        print_json(&report)?;
    } else {
        print_bench(settings, &report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_profile(r: &BenchReport, p: &bench::ProfileReport) {
    println!(
        "profile                  {} texts one per call, {:.0} tokens each, {:.2} ms per text (session runs), {} session(s) x {} thread(s) at the peak",
        p.texts, p.tokens_per_text, p.run_ms_per_text, p.peak.sessions, p.peak.threads
    );
    println!("    operator              ms/text   share   G(FL)OP/s in kernel");
    for profiled in &p.ops {
        let op = &profiled.cost;
        let kind = match (op.int8_ops > 0.0, op.fp32_flops > 0.0) {
            (true, true) => Some("(int8 and fp32 together)"),
            (true, false) => Some("int8"),
            (false, true) => Some("fp32"),
            (false, false) => None,
        };
        let rate = match kind {
            Some(kind) if op.us > 0.0 => {
                format!("{:.1} {kind}", (op.int8_ops + op.fp32_flops) / op.us / 1e3)
            }
            _ => String::new(),
        };
        println!(
            "    {:<21} {:>7.3} {:>6.1}%   {rate}",
            op.op,
            op.us / 1e3 / p.texts.max(1) as f64,
            profiled.share * 100.0
        );
    }
    println!(
        "    peak at {}x{}x{}       fp32 MatMul {:.1} GFLOP/s, int8 MatMulInteger {:.1} GOP/s (whole machine, as the workers run)",
        p.peak.m,
        p.peak.k,
        p.peak.n,
        p.peak.fp32_flops / 1e9,
        p.peak.int8_ops / 1e9
    );
    println!(
        "    one session alone     fp32 MatMul {:.1} GFLOP/s, int8 MatMulInteger {:.1} GOP/s ({} thread(s))",
        p.peak_one_session.fp32_flops / 1e9,
        p.peak_one_session.int8_ops / 1e9,
        p.peak_one_session.threads
    );
    println!(
        "    per text              {:.1} M int8 ops, {:.1} M fp32 FLOP in matrix products ({:.1} M per token in all)",
        p.int8_ops_per_text / 1e6,
        p.fp32_flops_per_text / 1e6,
        (p.int8_ops_per_text + p.fp32_flops_per_text) / 1e6 / p.tokens_per_text.max(1.0)
    );
    // Fused attention mixes int8 and fp32 products in one kernel: it is in neither rate.
    let of_peak = |kind: &str, share: Option<f64>| {
        share.map_or(format!("{kind} ones: none outside fused attention"), |s| {
            format!("{kind} ones {:.0}% of the {kind} peak", s * 100.0)
        })
    };
    println!(
        "    kernels vs one session's peak  matrix products: {}, {}",
        of_peak("int8", p.int8_kernel_share),
        of_peak("fp32", p.fp32_kernel_share)
    );
    println!(
        "    the service at {:.1} msg/s    {:.1} GOP/s int8 = {:.1}% of the int8 peak, {:.1} GFLOP/s fp32 = {:.1}% of the fp32 peak; at both peaks a text would take {:.2} ms of the machine, it takes {:.2}",
        r.throughput_per_second,
        p.service_int8_ops / 1e9,
        p.service_int8_share * 100.0,
        p.service_fp32_flops / 1e9,
        p.service_fp32_share * 100.0,
        p.ms_per_text_at_peak,
        1e3 / r.throughput_per_second.max(1e-9)
    );
}

fn print_bench(settings: &Settings, r: &BenchReport) {
    println!("rows                     {}", r.rows);
    println!(
        "window                   {} messages / {} ms",
        r.window_max_messages, settings.stream.max_wait_ms
    );
    for (i, round) in r.rounds.iter().enumerate() {
        println!(
            "round {:<2}                 bound {:.1}, end to end {:.1} messages/s ({:.0}%)",
            i + 1,
            round.embed_only_per_second,
            round.throughput_per_second,
            round.vs_bound * 100.0
        );
    }
    println!(
        "embedding-only bound     {:.1} messages/s (median)",
        r.embed_only_per_second
    );
    println!(
        "end-to-end throughput    {:.1} messages/s (median), {:.0}% of the bound (lowest round {:.0}%)",
        r.throughput_per_second,
        r.throughput_vs_bound * 100.0,
        r.throughput_vs_bound_min * 100.0
    );
    if let Some(sh) = &r.shadow {
        for (i, round) in sh.rounds.iter().enumerate() {
            println!(
                "{:<25}{} first: without a challenger {:.1}, with {} in shadow {:.1} messages/s (x{:.3})",
                format!("shadow, round {}", i + 1),
                round.first,
                round.plain_per_second,
                sh.challenger,
                round.shadowed_per_second,
                round.ratio
            );
        }
        println!(
            "shadow cost              without {:.1}, with {:.1} messages/s (medians); with / without x{:.3} (median of the rounds; lowest x{:.3}; geometric mean x{:.3})",
            sh.plain_per_second,
            sh.shadowed_per_second,
            sh.ratio,
            sh.ratio_min,
            sh.ratio_geometric_mean
        );
        println!(
            "  ms per message         classify {:.3} without, {:.3} with (both models): +{:.3} ms, {:.2}% of a worker's time; produce {:.2} and {:.2} (wall)",
            r.stages_ms_per_message.classify,
            sh.stages_ms_per_message.classify,
            sh.added_classify_ms_per_message,
            sh.added_worker_share * 100.0,
            r.stages_ms_per_message.produce,
            sh.stages_ms_per_message.produce
        );
    }
    println!(
        "batch plan               {:.0} tokens per message, padding adds {:.1}% ({:?}, budget {})",
        r.tokens_per_message,
        r.padding_overhead * 100.0,
        settings.embedding.batching,
        settings.embedding.batch_budget()
    );
    let s = &r.stages_ms_per_message;
    println!(
        "ms per message           worker: embed {:.2}, classify {:.3}, drift {:.3}; \
         beside it: decode {:.3}, produce {:.2} (wall); tokenising alone {:.3}",
        s.embed, s.classify, s.drift, s.decode, s.produce, r.tokenize_ms_per_message
    );
    println!(
        "while draining           workers busy {:.0}% of the time; CPU: service {:.0}%, bench client {:.0}% of all cores",
        r.workers_busy * 100.0,
        r.cpu_while_draining.service * 100.0,
        r.cpu_while_draining.bench * 100.0
    );
    println!(
        "latency at {:.1} msg/s    p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} messages)",
        r.offered_rate_per_second,
        r.latency_p50_ms,
        r.latency_p99_ms,
        r.latency_max_ms,
        r.latency_rows
    );
    let b = &r.latency_breakdown;
    println!(
        "  where it went          {} messages, {:.1} per window; p50 / p99 / mean ms:",
        b.messages, b.mean_window_messages
    );
    for (name, sp) in [
        ("produce -> broker ack", &b.produce),
        ("broker -> service read", &b.broker_to_read),
        ("in its window", &b.window),
        ("decode, queue, drift", &b.to_worker),
        ("embed + classify", &b.embed),
        ("produce -> read back", &b.ready_to_read_back),
        ("total", &b.total),
    ] {
        println!(
            "    {name:<22} {:>7.1} {:>7.1} {:>7.1}",
            sp.p50, sp.p99, sp.mean
        );
    }
    println!(
        "    (the service's own produce, until acknowledged: {:.1} ms per window, mean)",
        b.service_produce_mean_ms
    );
    let f = &r.floors;
    println!(
        "floors, no service       {} messages; p50 / p99 ms:",
        f.messages
    );
    for (name, sp) in [
        ("bench produce -> ack", &f.bench_produce),
        ("ack -> service consumer", &f.service_fetch),
        ("service produce -> ack", &f.service_produce),
        ("ack -> librdkafka default", &f.default_fetch),
    ] {
        println!("    {name:<24} {:>7.1} {:>7.1}", sp.p50, sp.p99);
    }
    println!(
        "    round trip without work {:.1} ms (produce, fetch, service produce, fetch: medians)",
        f.path_p50_ms
    );
    if let Some(p) = &r.profile {
        print_profile(r, p);
    }
    if let Some(o) = &r.overload {
        println!(
            "overload x{:.1}            offered {:.1} msg/s for {:.0} s: {} produced, {} predicted ({:.1} msg/s)",
            o.factor,
            o.offered_rate_per_second,
            o.seconds,
            o.produced,
            o.predicted,
            o.throughput_per_second
        );
        println!(
            "  RSS                    {:.0} MB in the first quarter, {:.0} MB in the last",
            o.rss_first_quarter_mb, o.rss_last_quarter_mb
        );
        println!(
            "  backlog                {:.0} messages in the first quarter, {:.0} in the last (consumer lag {:.0} -> {:.0})",
            o.backlog_first_quarter,
            o.backlog_last_quarter,
            o.lag_first_quarter,
            o.lag_last_quarter
        );
        println!(
            "  time in the service    p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; p99 first half {:.0} ms, second half {:.0} ms",
            o.in_service_p50_ms,
            o.in_service_p99_ms,
            o.in_service_max_ms,
            o.in_service_p99_first_half_ms,
            o.in_service_p99_second_half_ms
        );
    }
    println!(
        "peak RSS                 {:.0} MB (triage run; the bench process itself: {:.0} MB)",
        r.service_peak_rss_mb, r.bench_peak_rss_mb
    );
}
