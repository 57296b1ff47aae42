//! Kafka at the edge: client configuration from settings, the consumer context
//! (rebalance hand-over, statistics), topic administration.

pub mod client;
mod context;

use rdkafka::ClientConfig;

pub use context::{ConsumerState, TriageContext};

pub use crate::config::KafkaSettings;

/// librdkafka keys that triage sets itself: the delivery guarantees depend on them,
/// so `kafka.librdkafka_options` may not override them.
pub const OWNED_KEYS: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.offset.store",
    "enable.auto.commit",
    "enable.idempotence",
    "acks",
    "security.protocol",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "auto.offset.reset",
    "statistics.interval.ms",
];

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
        .set("queued.max.messages.kbytes", "4096");
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
        .set("linger.ms", "5")
        .set("compression.type", "none");
    apply_escape_hatch(&mut c, k);
    c
}

/// Creates topics; an existing topic is reported, not an error.
pub async fn create_topics(
    k: &KafkaSettings,
    names: &[String],
    partitions: i32,
    replication: i32,
) -> Result<Vec<(String, String)>, rdkafka::error::KafkaError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;

    let admin: AdminClient<DefaultClientContext> = base_config(k).create()?;
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(10)));
    let results = admin.create_topics(&topics, &options).await?;
    Ok(results
        .into_iter()
        .map(|r| match r {
            Ok(name) => (name, format!("created ({partitions} partitions)")),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => (name, "exists".into()),
            Err((name, code)) => (name, format!("failed: {code}")),
        })
        .collect())
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
