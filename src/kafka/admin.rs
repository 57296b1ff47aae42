//! Topic administration: create the topics triage uses, and refuse to start when
//! an output topic is missing (records would queue for it forever).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use super::{KafkaSettings, base_config};

/// Creates topics; an existing topic is reported, not an error.
pub async fn create_topics(
    k: &KafkaSettings,
    names: &[String],
    partitions: i32,
    replication: i32,
) -> Result<Vec<(String, String)>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = base_config(k).create()?;
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
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

/// Why the service cannot start on this cluster.
#[derive(Debug, thiserror::Error)]
pub enum TopicCheckError {
    #[error(
        "cannot reach Kafka at {brokers}: {source}; is the broker running (scripts/broker.sh start)?"
    )]
    Unreachable {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error(
        "output topic(s) {missing:?} do not exist on {brokers}; create them with `triage topics create`"
    )]
    Missing {
        brokers: String,
        missing: Vec<String>,
    },
}

/// Checks that every output topic exists. Input topics may appear later (the
/// subscription waits for them). Blocking: call it off the async runtime.
pub fn check_output_topics(k: &KafkaSettings) -> Result<(), TopicCheckError> {
    let unreachable = |source| TopicCheckError::Unreachable {
        brokers: k.brokers.clone(),
        source,
    };
    let client: BaseConsumer = base_config(k).create().map_err(unreachable)?;
    let metadata = client
        .fetch_metadata(None, Timeout::After(Duration::from_secs(10)))
        .map_err(unreachable)?;
    let exists = |name: &str| {
        metadata
            .topics()
            .iter()
            .any(|t| t.name() == name && t.error().is_none())
    };
    let mut wanted = vec![&k.predictions_topic, &k.dlq_topic];
    for optional in [&k.features_topic, &k.review_topic] {
        if !optional.is_empty() {
            wanted.push(optional);
        }
    }
    let missing: Vec<String> = wanted.into_iter().filter(|t| !exists(t)).cloned().collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(TopicCheckError::Missing {
            brokers: k.brokers.clone(),
            missing,
        })
    }
}
