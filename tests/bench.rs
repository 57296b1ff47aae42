//! `triage bench` against a real broker, small: every figure it reports is measured
//! (the bound, end to end, latency at half load and where it went, the floors of
//! the clients and the broker, the per-operator profile), and the profile counts
//! the default graph's fused attention in both rates.

mod common;

use common::broker::Broker;

#[test]
fn bench_measures_the_service_and_profiles_the_fused_default_graph() {
    let dir = common::scratch("bench");
    common::train_support(&dir, &[("TRIAGE__TRAINING__CV_FOLDS", "2")]);
    let broker = Broker::start(&dir);
    let data = common::support_subset(&dir);
    let (out, stdout, stderr) = common::run(
        common::triage(&dir)
            .arg("--config")
            .arg(common::repo().join("config/support.toml"))
            .env("TRIAGE__KAFKA__BROKERS", broker.address())
            .args(["bench", "--data"])
            .arg(&data)
            .args(["--rows", "60", "--repeat", "1", "--latency-rows", "20"])
            .args(["--profile", "--json"]),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    common::assert_no_panic(&stderr);
    let r: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    let positive = |v: &serde_json::Value| v.as_f64().is_some_and(|x| x > 0.0);

    assert!(positive(&r["embed_only_per_second"]), "{r}");
    assert!(positive(&r["throughput_per_second"]), "{r}");
    let breakdown = &r["latency_breakdown"];
    assert_eq!(breakdown["total"]["count"], 20, "{breakdown}");
    for stage in [
        "produce",
        "broker_to_read",
        "embed",
        "ready_to_read_back",
        "total",
    ] {
        assert!(positive(&breakdown[stage]["p50"]), "{stage}: {breakdown}");
    }
    for floor in ["bench_produce", "service_fetch", "service_produce"] {
        assert!(
            positive(&r["floors"][floor]["p50"]),
            "{floor}: {}",
            r["floors"]
        );
    }

    // The default graph is the fused one: attention is one QAttention node per
    // layer, whose arithmetic counts in both rates, and no fp32 product runs alone.
    let p = &r["profile"];
    let ops = p["ops"].as_array().expect("operators");
    let attention = ops
        .iter()
        .find(|o| o["op"] == "QAttention")
        .unwrap_or_else(|| panic!("no QAttention in the default graph's profile: {p}"));
    assert!(positive(&attention["int8_ops"]) && positive(&attention["fp32_flops"]));
    assert!(p["fp32_kernel_share"].is_null(), "{p}");
    assert!(positive(&p["int8_kernel_share"]), "{p}");
    // Per token, MiniLM's 6 layers multiply 384 inputs into Q, K and V (1,152), the
    // out-projection (384) and the feed-forward (1,536 and back): all of it int8.
    let tokens = p["tokens_per_text"].as_f64().unwrap();
    let expected = 2.0 * 6.0 * tokens * 384.0 * (1152.0 + 384.0 + 2.0 * 1536.0);
    let int8 = p["int8_ops_per_text"].as_f64().unwrap();
    assert!(
        (int8 / expected - 1.0).abs() < 1e-6,
        "int8 ops per text {int8}, expected {expected} at {tokens} tokens"
    );
}
