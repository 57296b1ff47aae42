//! Kafka helpers for black-box tests: produce test messages, collect outputs, talk HTTP.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Unique names for one test's topics and group.
#[derive(Debug, Clone)]
pub struct Names {
    pub input: String,
    pub predictions: String,
    pub dlq: String,
    pub features: String,
    pub group: String,
}

impl Names {
    pub fn new(tag: &str) -> Self {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000;
        let id = format!("{tag}-{}-{n}", std::process::id());
        Self {
            input: format!("in-{id}"),
            predictions: format!("pred-{id}"),
            dlq: format!("dlq-{id}"),
            features: format!("feat-{id}"),
            group: format!("group-{id}"),
        }
    }
}

/// A `[kafka]` table pointed at `brokers` with `names`' topics and group, then
/// `kafka_extra` (more lines of the table).
pub fn kafka_table(brokers: &str, names: &Names, kafka_extra: &str) -> String {
    format!(
        r#"[kafka]
brokers = "{brokers}"
group_id = "{group}"
input_topics = ["{input}"]
predictions_topic = "{pred}"
dlq_topic = "{dlq}"
features_topic = "{feat}"
{kafka_extra}
"#,
        group = names.group,
        input = names.input,
        pred = names.predictions,
        dlq = names.dlq,
        feat = names.features,
    )
}

/// config/support.toml pointed at `brokers` with `names`' topics and group, then
/// `kafka_extra` (more lines of the [kafka] table) and `more` (further tables).
pub fn support_config(brokers: &str, names: &Names, kafka_extra: &str, more: &str) -> String {
    let support = std::fs::read_to_string(super::repo().join("config/support.toml")).unwrap();
    let kafka = kafka_table(brokers, names, kafka_extra);
    format!("{support}\n{kafka}{more}\n")
}

/// [`support_config`] written to `dir`/triage.toml; returns its path.
pub fn write_support_config(
    dir: &std::path::Path,
    brokers: &str,
    names: &Names,
    kafka_extra: &str,
    more: &str,
) -> std::path::PathBuf {
    let path = dir.join("triage.toml");
    std::fs::write(&path, support_config(brokers, names, kafka_extra, more)).unwrap();
    path
}

/// A message to produce: optional key, optional payload.
pub type Msg = (Option<Vec<u8>>, Option<Vec<u8>>);

pub fn produce(brokers: &str, topic: &str, messages: &[Msg]) {
    produce_with(brokers, topic, messages, &[]);
}

/// Like [`produce`], with extra producer properties.
pub fn produce_with(brokers: &str, topic: &str, messages: &[Msg], extra: &[(&str, &str)]) {
    let records: Vec<RawRecord> = messages
        .iter()
        .map(|(key, payload)| RawRecord {
            key: key.clone(),
            payload: payload.clone(),
            headers: Vec::new(),
        })
        .collect();
    produce_raw(brokers, topic, &records, extra);
}

/// A record with headers whose names are any bytes (Kafka says strings; a hostile
/// producer need not).
#[derive(Debug, Clone, Default)]
pub struct RawRecord {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Produces `records` with `extra` producer properties. rdkafka only writes UTF-8
/// header names, so the headers are added through librdkafka's C API.
#[allow(unsafe_code)]
pub fn produce_raw(brokers: &str, topic: &str, records: &[RawRecord], extra: &[(&str, &str)]) {
    use rdkafka::message::OwnedHeaders;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    let producer: BaseProducer = config.create().unwrap();
    for r in records {
        let headers = OwnedHeaders::new_with_capacity(r.headers.len());
        let native = headers.as_borrowed() as *const rdkafka::message::BorrowedHeaders
            as *mut rdkafka::bindings::rd_kafka_headers_t;
        for (name, value) in &r.headers {
            // SAFETY: `native` is the live header list `headers` owns; librdkafka
            // copies name and value.
            let err = unsafe {
                rdkafka::bindings::rd_kafka_header_add(
                    native,
                    name.as_ptr().cast(),
                    name.len() as isize,
                    value.as_ptr().cast(),
                    value.len() as isize,
                )
            };
            assert_eq!(
                err,
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            );
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(headers);
        if let Some(k) = &r.key {
            record = record.key(k.as_slice());
        }
        if let Some(p) = &r.payload {
            record = record.payload(p.as_slice());
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((err, back)) => {
                    assert!(
                        matches!(
                            err,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "cannot produce: {err}"
                    );
                    record = back;
                    producer.poll(Duration::from_millis(50));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// Sentiment classes of the late-label tests' predictions.
pub const SENTIMENTS: [&str; 3] = ["negative", "neutral", "positive"];

/// A prediction record as `triage run` writes it, for `id` labelled `label` by
/// `version` (probabilities over [`SENTIMENTS`]).
pub fn prediction_record(id: &str, label: &str, version: &str) -> Msg {
    let probabilities: serde_json::Map<String, serde_json::Value> = SENTIMENTS
        .iter()
        .map(|l| (l.to_string(), (if *l == label { 0.8 } else { 0.1 }).into()))
        .collect();
    let value = serde_json::json!({
        "id": id, "label": label, "confidence": 0.8, "probabilities": probabilities,
        "model_version": version, "window_id": 1,
    });
    (
        Some(id.as_bytes().to_vec()),
        Some(value.to_string().into_bytes()),
    )
}

/// A prediction record of `version` for `id` that also carries what the challenger
/// `shadow_version` in shadow predicted (`shadow_label`), as `triage run` writes it
/// while a challenger is shadowed.
pub fn shadowed_prediction_record(
    id: &str,
    label: &str,
    version: &str,
    shadow_label: &str,
    shadow_version: &str,
) -> Msg {
    let probabilities = |chosen: &str| -> serde_json::Map<String, serde_json::Value> {
        SENTIMENTS
            .iter()
            .map(|l| (l.to_string(), (if *l == chosen { 0.8 } else { 0.1 }).into()))
            .collect()
    };
    let value = serde_json::json!({
        "id": id, "label": label, "confidence": 0.8, "probabilities": probabilities(label),
        "model_version": version, "window_id": 1,
        "shadow": {
            "model_version": shadow_version, "label": shadow_label, "confidence": 0.8,
            "probabilities": probabilities(shadow_label),
        },
    });
    (
        Some(id.as_bytes().to_vec()),
        Some(value.to_string().into_bytes()),
    )
}

/// A late label for `id`, as a labelling tool writes it.
pub fn label_record(id: &str, label: &str) -> Msg {
    let value = serde_json::json!({"id": id, "label": label});
    (
        Some(id.as_bytes().to_vec()),
        Some(value.to_string().into_bytes()),
    )
}

/// One output record.
#[derive(Debug, Clone)]
pub struct Out {
    pub topic: String,
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
}

impl Out {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.payload.as_deref().unwrap_or_default()).unwrap()
    }
}

/// Reads `topics` from the beginning with a fresh group until `done` says so or
/// `timeout` passes; returns everything read.
pub struct Collector {
    consumer: BaseConsumer,
    pub records: Vec<Out>,
}

impl Collector {
    pub fn new(brokers: &str, topics: &[&str]) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("collector-{}", Names::new("c").group))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(topics).unwrap();
        Self {
            consumer,
            records: Vec::new(),
        }
    }

    pub fn until(&mut self, timeout: Duration, done: impl Fn(&[Out]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if done(&self.records) {
                return true;
            }
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(200)) {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.records.push(Out {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
            }
        }
        done(&self.records)
    }

    /// Waits until `topic` has at least `n` records.
    pub fn wait_count(&mut self, topic: &str, n: usize, timeout: Duration) -> bool {
        self.until(timeout, |r| {
            r.iter().filter(|o| o.topic == topic).count() >= n
        })
    }

    /// Waits until every id in `expected` has a record on `topic`.
    pub fn wait_ids(&mut self, topic: &str, expected: &HashSet<String>, timeout: Duration) -> bool {
        self.until(timeout, |r| expected.is_subset(&ids_of(r, topic)))
    }

    pub fn on(&self, topic: &str) -> Vec<&Out> {
        self.records.iter().filter(|r| r.topic == topic).collect()
    }
}

/// Distinct `id` fields of the JSON records on `topic`.
pub fn ids_of(records: &[Out], topic: &str) -> HashSet<String> {
    records
        .iter()
        .filter(|o| o.topic == topic)
        .filter_map(|o| o.json()["id"].as_str().map(str::to_string))
        .collect()
}

/// A minimal HTTP/1.1 request; returns status and body.
pub fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> Option<(u16, String)> {
    let reply = http_with(
        addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        body,
    )?;
    Some((reply.status, reply.body))
}

/// An HTTP answer: status, header lines, body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    /// The values of every header `name` (any case).
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    /// The `name=value` of a cookie this answer sets, if it does.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers("set-cookie")
            .into_iter()
            .filter_map(|c| c.split(';').next().map(str::to_string))
            .find(|c| c.starts_with(&format!("{name}=")))
    }
}

/// A minimal HTTP/1.1 request with `headers`.
pub fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Reply> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let extra: String = headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Some(Reply {
        status,
        head: head.to_string(),
        body: if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    })
}

/// The body of a chunked HTTP/1.1 response (large answers, e.g. Prometheus's API).
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

/// Polls `GET path` until `want(status, body)` or timeout.
pub fn wait_http(
    addr: &str,
    path: &str,
    timeout: Duration,
    want: impl Fn(u16, &str) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some((status, body)) = http(addr, "GET", path, b"")
            && want(status, &body)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}
