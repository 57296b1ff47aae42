//! Kafka at the edge: the pipeline's production source ([`KafkaSource`]) and sink
//! ([`KafkaSink`]), client configuration from settings, the consumer context
//! (rebalance hand-over, statistics), topic administration, and a [`Follower`] that
//! reads topics from a point in time without a consumer group. Nothing outside this
//! module talks to librdkafka.

mod admin;
pub mod client;
mod context;
mod follow;
mod headers;
mod offsets;
mod settings;
mod sink;
mod source;

use rdkafka::ClientConfig;

pub use admin::{TopicCheckError, check_output_topics, create_topics};
pub use context::TriageContext;
pub use follow::{FollowError, FollowFrom, FollowedRecord, Follower, start_with_retry};
pub use offsets::TopicError;
pub use rdkafka::error::KafkaError;
pub use settings::{KafkaSettings, OPTION_VARIABLE_PREFIX, OWNED_KEYS, SettingProblem, host_name};
pub use sink::KafkaSink;
pub use source::{KafkaAck, KafkaSource};

/// Connection settings shared by consumer, producer and admin clients.
pub fn base_config(k: &KafkaSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("security.protocol", k.security_protocol.to_lowercase())
        .set(
            "statistics.interval.ms",
            k.statistics_interval_ms.to_string(),
        );
    for (key, value) in [
        ("sasl.mechanism", &k.sasl_mechanism),
        ("sasl.username", &k.sasl_username),
        ("sasl.password", &k.sasl_password),
        ("ssl.ca.location", &k.ssl_ca_location),
    ] {
        if !value.is_empty() {
            c.set(key, value);
        }
    }
    c
}

fn apply_escape_hatch(c: &mut ClientConfig, k: &KafkaSettings) {
    for (key, value) in &k.librdkafka_options {
        c.set(key, value);
    }
}

/// Consumer: offsets are stored by triage only after a window is acknowledged
/// (`enable.auto.offset.store=false`), and the stored offsets are auto-committed.
pub fn consumer_config(k: &KafkaSettings) -> ClientConfig {
    let mut c = base_config(k);
    if let Ok(Some(id)) = k.instance_id() {
        // Static membership: a restarted instance takes its partitions back at once.
        c.set("group.instance.id", id);
    }
    c.set("group.id", &k.group_id)
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", &k.auto_offset_reset)
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // Prefetch per partition: librdkafka's defaults (100,000 messages or 64 MB)
        // are hours of work for an embedding model on a few cores; a backlog belongs
        // in Kafka, where it shows as lag, not in the service's memory.
        .set("queued.min.messages", "1000")
        .set("queued.max.messages.kbytes", "4096")
        // How long the broker may hold a fetch that finds fewer than fetch.min.bytes.
        // Kafka answers as soon as a record arrives, but the local broker (tansu)
        // holds every fetch this long: librdkafka's 500 ms put 370 ms (p50) between
        // a record's acknowledgement and its read, 8 ms at 10 (docs/performance.md).
        // On Kafka the cost is an idle fetch per 10 ms per broker connection.
        .set("fetch.wait.max.ms", "10");
    apply_escape_hatch(&mut c, k);
    c
}

/// Producer: idempotent (no duplicates or reordering from retries) and
/// `acks=all`; delivery is retried without a time limit, so a broker outage delays
/// records instead of losing them.
pub fn producer_config(k: &KafkaSettings) -> ClientConfig {
    let mut c = base_config(k);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "0")
        // A window's records are produced together, so lingering batches little;
        // 1 ms instead of 5 took 5 ms off the median latency (docs/performance.md).
        .set("linger.ms", "1")
        .set("compression.type", "none");
    apply_escape_hatch(&mut c, k);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_guarantee_settings_are_set() {
        let mut k = KafkaSettings::default();
        k.librdkafka_options
            .insert("fetch.wait.max.ms".into(), "50".into());
        let c = consumer_config(&k);
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("fetch.wait.max.ms"), Some("50"));
        assert_eq!(c.get("queued.min.messages"), Some("1000"));
        // A default, not owned: the escape hatch set it above.
        assert_eq!(
            consumer_config(&KafkaSettings::default()).get("fetch.wait.max.ms"),
            Some("10")
        );
        // The prefetch bound is a default, not owned: the escape hatch may raise it.
        k.librdkafka_options
            .insert("queued.min.messages".into(), "50000".into());
        assert_eq!(
            consumer_config(&k).get("queued.min.messages"),
            Some("50000")
        );
        let p = producer_config(&k);
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(
            p.get("sasl.username"),
            None,
            "empty SASL settings are not passed"
        );
    }
}
