//! Kafka's settings: connection, topics, group membership and the librdkafka
//! escape hatch, with the checks that keep the delivery guarantees intact.

use serde::{Deserialize, Serialize};

/// librdkafka keys that triage sets itself: the delivery guarantees depend on them,
/// so `kafka.librdkafka_options` may not override them.
pub const OWNED_KEYS: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "group.instance.id",
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

/// Kafka connection and topics. `Debug` and `Serialize` (so `triage config`, the
/// bench's config file and any log of the settings) show `sasl_password` and the
/// secret-looking `librdkafka_options` ([`is_secret_option`]) as `***`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// Consumer group: instances with the same group share the partitions.
    pub group_id: String,
    /// Static membership (`group.instance.id`): a stable id per instance, so an
    /// instance that restarts in place (systemd, a Kubernetes StatefulSet) gets its
    /// partitions back at once instead of waiting for a rebalance. Empty: off.
    /// `{hostname}` is replaced by the host name and `{env:NAME}` by the variable
    /// NAME, so one setting gives every replica its own stable id.
    pub group_instance_id: String,
    /// Topics to read messages from.
    pub input_topics: Vec<String>,
    /// One prediction per valid message.
    pub predictions_topic: String,
    /// Every message that cannot be processed, unchanged, with reason headers.
    pub dlq_topic: String,
    /// Feature records (id, timestamp, embedding, label) for the training pipeline.
    /// Empty: feature records are not written.
    pub features_topic: String,
    /// Messages whose label goes to a person (`route: review`: confidence under the
    /// card's routing threshold): their text, the top classes and the model's
    /// probabilities, for a review queue. Empty: not written.
    pub review_topic: String,
    /// Delayed ground truth: one record per labelled message, key = the message id,
    /// value `{"id": "...", "label": "..."}` (an agent re-tagged the ticket hours
    /// later). Joined with predictions for accuracy per model version (the
    /// retrainer), and with feature records by `triage retrain`, where a label here
    /// wins over one carried in the message. Empty: no late labels.
    pub labels_topic: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl` (TLS/SASL need the `ssl`/`sasl` build features).
    pub security_protocol: String,
    /// For SASL: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, ...
    pub sasl_mechanism: String,
    pub sasl_username: String,
    /// Prefer the variable `TRIAGE__KAFKA__SASL_PASSWORD`: a password in a config
    /// file is easy to leak.
    #[serde(serialize_with = "serialize_redacted")]
    pub sasl_password: String,
    /// CA certificate file for TLS.
    pub ssl_ca_location: String,
    /// Where a new group starts reading: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// How often librdkafka reports statistics (consumer lag, broker state).
    pub statistics_interval_ms: u64,
    /// Escape hatch: any other librdkafka property, applied last. Keys owned by the
    /// typed settings above (and the delivery guarantees) are refused. Secret values
    /// can come from `TRIAGE__KAFKA__LIBRDKAFKA_OPTIONS__<key>` variables instead.
    #[serde(serialize_with = "serialize_redacted_options")]
    pub librdkafka_options: std::collections::BTreeMap<String, String>,
}

/// What a secret prints as.
pub const REDACTED: &str = "***";

/// Whether the librdkafka property `key` holds a secret (a password, a client
/// secret, a token, a private key), so its value is never printed.
pub fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
        "jaas",
    ]
    .iter()
    .any(|word| key.contains(word))
        || ["ssl.key.pem", "ssl_key", "sasl.oauthbearer.config"].contains(&key.as_str())
}

fn redacted(value: &str) -> &str {
    if value.is_empty() { "" } else { REDACTED }
}

fn serialize_redacted<S: serde::Serializer>(value: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(redacted(value))
}

fn serialize_redacted_options<S: serde::Serializer>(
    options: &std::collections::BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(redacted_options(options))
}

/// The options with secret values shown as `***`.
fn redacted_options(
    options: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<&str, &str> {
    options
        .iter()
        .map(|(k, v)| {
            let shown = if is_secret_option(k) { redacted(v) } else { v };
            (k.as_str(), shown)
        })
        .collect()
}

impl KafkaSettings {
    /// The secrets these settings hold, as the `TRIAGE__...` variables that give
    /// them back to a child process whose config file has them redacted.
    pub fn secret_variables(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !self.sasl_password.is_empty() {
            out.push((
                "TRIAGE__KAFKA__SASL_PASSWORD".to_string(),
                self.sasl_password.clone(),
            ));
        }
        for (key, value) in &self.librdkafka_options {
            if is_secret_option(key) && !value.is_empty() {
                out.push((format!("{OPTION_VARIABLE_PREFIX}{key}"), value.clone()));
            }
        }
        out
    }
}

/// `TRIAGE__KAFKA__LIBRDKAFKA_OPTIONS__<key>=value` sets one librdkafka property
/// (the key as librdkafka spells it, dots and all).
pub const OPTION_VARIABLE_PREFIX: &str = "TRIAGE__KAFKA__LIBRDKAFKA_OPTIONS__";

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("group_instance_id", &self.group_instance_id)
            .field("input_topics", &self.input_topics)
            .field("predictions_topic", &self.predictions_topic)
            .field("dlq_topic", &self.dlq_topic)
            .field("features_topic", &self.features_topic)
            .field("review_topic", &self.review_topic)
            .field("labels_topic", &self.labels_topic)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field("sasl_password", &redacted(&self.sasl_password))
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("auto_offset_reset", &self.auto_offset_reset)
            .field("statistics_interval_ms", &self.statistics_interval_ms)
            .field(
                "librdkafka_options",
                &redacted_options(&self.librdkafka_options),
            )
            .finish()
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "triage".into(),
            group_instance_id: String::new(),
            input_topics: vec!["messages".into()],
            predictions_topic: "predictions".into(),
            dlq_topic: "messages.dlq".into(),
            features_topic: "features".into(),
            review_topic: String::new(),
            labels_topic: "labels".into(),
            security_protocol: "plaintext".into(),
            sasl_mechanism: String::new(),
            sasl_username: String::new(),
            sasl_password: String::new(),
            ssl_ca_location: String::new(),
            auto_offset_reset: "earliest".into(),
            statistics_interval_ms: 1000,
            librdkafka_options: Default::default(),
        }
    }
}

/// librdkafka's default `message.max.bytes`: its producer refuses larger records.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1_000_000;

/// A setting that cannot work: the key, what is wrong, and the fix.
pub type SettingProblem = (&'static str, String, &'static str);

impl KafkaSettings {
    /// Every problem with these settings (empty: fine).
    pub fn problems(&self) -> Vec<SettingProblem> {
        let mut out: Vec<SettingProblem> = Vec::new();
        let mut check = |ok: bool, key, message: &dyn Fn() -> String, fix| {
            if !ok {
                out.push((key, message(), fix));
            }
        };
        check(
            !self.brokers.trim().is_empty(),
            "kafka.brokers",
            &|| "is empty".into(),
            "list bootstrap servers, e.g. \"127.0.0.1:9092\"",
        );
        check(
            !self.group_id.trim().is_empty(),
            "kafka.group_id",
            &|| "is empty".into(),
            "name the consumer group, e.g. \"triage\"",
        );
        check(
            !self.input_topics.is_empty() && self.input_topics.iter().all(|t| !t.trim().is_empty()),
            "kafka.input_topics",
            &|| "lists no topic (or an empty name)".into(),
            "list the topics to read, e.g. [\"messages\"]",
        );
        for (key, topic) in [
            ("kafka.predictions_topic", &self.predictions_topic),
            ("kafka.dlq_topic", &self.dlq_topic),
        ] {
            check(
                !topic.trim().is_empty(),
                key,
                &|| "is empty".into(),
                "name the topic",
            );
            check(
                !self.input_topics.contains(topic),
                key,
                &|| format!("{topic:?} is also an input topic, which would loop"),
                "use a topic that triage does not read",
            );
        }
        check(
            self.review_topic.is_empty() || !self.input_topics.contains(&self.review_topic),
            "kafka.review_topic",
            &|| {
                format!(
                    "{:?} is also an input topic, which would loop",
                    self.review_topic
                )
            },
            "use a topic that triage does not read, e.g. \"review\"",
        );
        check(
            self.labels_topic.is_empty() || self.labels_topic != self.features_topic,
            "kafka.labels_topic",
            &|| format!("{:?} is also the features topic", self.labels_topic),
            "give late labels a topic of their own, e.g. \"labels\"",
        );
        let instance = self.instance_id();
        check(
            instance.as_ref().is_ok(),
            "kafka.group_instance_id",
            &|| instance.clone().err().unwrap_or_default(),
            "set the variable, or use {hostname} or a fixed id per instance",
        );
        check(
            ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"]
                .contains(&self.security_protocol.to_lowercase().as_str()),
            "kafka.security_protocol",
            &|| {
                format!(
                    "{:?} is not a Kafka security protocol",
                    self.security_protocol
                )
            },
            "use plaintext, ssl, sasl_plaintext or sasl_ssl",
        );
        check(
            ["earliest", "latest"].contains(&self.auto_offset_reset.as_str()),
            "kafka.auto_offset_reset",
            &|| {
                format!(
                    "{:?} is neither earliest nor latest",
                    self.auto_offset_reset
                )
            },
            "use earliest (label the backlog) or latest (only new messages)",
        );
        let clash: Vec<&String> = self
            .librdkafka_options
            .keys()
            .filter(|key| OWNED_KEYS.contains(&key.as_str()))
            .collect();
        check(
            clash.is_empty(),
            "kafka.librdkafka_options",
            &|| format!("sets {clash:?}, which triage owns"),
            "use the typed kafka.* settings for these keys, or leave them to triage",
        );
        out
    }

    /// The largest record triage's producer writes: librdkafka's `message.max.bytes`
    /// (from `librdkafka_options`, 1,000,000 when unset or unreadable).
    pub fn max_record_bytes(&self) -> usize {
        self.librdkafka_options
            .get("message.max.bytes")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_RECORD_BYTES)
    }

    /// The static membership id with its placeholders filled in; None when off.
    pub fn instance_id(&self) -> Result<Option<String>, String> {
        expand_instance_id(
            &self.group_instance_id,
            &|name| std::env::var(name).ok(),
            &host_name,
        )
    }
}

/// This machine's name: `$HOSTNAME`, else the kernel's (static membership ids, and
/// the registry's lease holders).
pub fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Fills `{hostname}` and `{env:NAME}` in `template`.
fn expand_instance_id(
    template: &str,
    env: &dyn Fn(&str) -> Option<String>,
    host: &dyn Fn() -> Option<String>,
) -> Result<Option<String>, String> {
    let template = template.trim();
    if template.is_empty() {
        return Ok(None);
    }
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("{template:?} has a '{{' without its '}}'"));
        };
        let name = &rest[open + 1..open + close];
        let value = match name.strip_prefix("env:") {
            Some(var) => env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                format!("{template:?} names the variable {var}, which is not set")
            })?,
            None if name == "hostname" => {
                host().ok_or_else(|| "the host name cannot be read".to_string())?
            }
            None => {
                return Err(format!(
                    "{template:?} has the unknown placeholder {{{name}}}; use {{hostname}} or {{env:NAME}}"
                ));
            }
        };
        out.push_str(value.trim());
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_debug_and_serialized_settings_and_given_back_as_variables() {
        let mut k = KafkaSettings {
            sasl_password: "hunter2-sasl".into(),
            ..Default::default()
        };
        for (key, value) in [
            ("ssl.key.password", "hunter2-key"),
            ("sasl.oauthbearer.client.secret", "hunter2-oauth"),
            ("ssl.keystore.password", "hunter2-store"),
            ("fetch.min.bytes", "4096"),
        ] {
            k.librdkafka_options.insert(key.into(), value.into());
        }
        let printed = [format!("{k:?}"), toml::to_string(&k).unwrap()];
        for text in &printed {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("4096"), "{text}");
        }
        assert!(
            printed[1].contains(r#"sasl_password = "***""#),
            "{}",
            printed[1]
        );
        let vars = k.secret_variables();
        assert_eq!(vars.len(), 4, "{vars:?}");
        assert!(vars.contains(&(
            "TRIAGE__KAFKA__LIBRDKAFKA_OPTIONS__ssl.key.password".into(),
            "hunter2-key".into()
        )));
        assert!(!is_secret_option("ssl.key.location") && !is_secret_option("client.id"));
        assert!(
            is_secret_option("ssl.key.pem")
                && is_secret_option("SASL.OAUTHBEARER.TOKEN.ENDPOINT.URL")
        );
    }

    #[test]
    fn an_escape_hatch_key_owned_by_triage_is_refused() {
        let mut k = KafkaSettings::default();
        k.librdkafka_options
            .insert("enable.auto.offset.store".into(), "true".into());
        k.librdkafka_options
            .insert("fetch.min.bytes".into(), "1".into());
        let problems = k.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "kafka.librdkafka_options");
        assert!(problems[0].1.contains("enable.auto.offset.store"));
    }

    #[test]
    fn labels_topic_that_is_the_features_topic_is_refused() {
        let k = KafkaSettings {
            labels_topic: "features".into(),
            ..KafkaSettings::default()
        };
        let problems = k.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "kafka.labels_topic");
    }

    #[test]
    fn instance_id_placeholders_are_filled() {
        let env = |name: &str| (name == "POD").then(|| "triage-1".to_string());
        let host = || Some("node-a".to_string());
        let expand = |t: &str| expand_instance_id(t, &env, &host);
        assert_eq!(expand(""), Ok(None));
        assert_eq!(expand("fixed"), Ok(Some("fixed".into())));
        assert_eq!(
            expand("triage-{hostname}"),
            Ok(Some("triage-node-a".into()))
        );
        assert_eq!(expand("{env:POD}"), Ok(Some("triage-1".into())));
        assert!(expand("{env:MISSING}").unwrap_err().contains("MISSING"));
        assert!(expand("{pod}").unwrap_err().contains("unknown placeholder"));
        assert!(expand("a{hostname").is_err());
    }

    #[test]
    fn an_unset_instance_variable_is_a_configuration_problem() {
        let k = KafkaSettings {
            group_instance_id: "{env:TRIAGE_TEST_SURELY_UNSET_VARIABLE}".into(),
            ..KafkaSettings::default()
        };
        let problems = k.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "kafka.group_instance_id");
    }
}
