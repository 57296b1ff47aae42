//! `triage run`: the streaming inference service.
//!
//! One loop with clear priorities (`select! { biased; }`): shutdown first, then the
//! window timer, then new messages. A closed window becomes a task: decode and
//! validate, classify on a worker, then (in window order) produce predictions,
//! feature records and dead letters, wait for the broker to acknowledge every
//! record, and store the window's offsets. Offsets follow acknowledgements, so a crash
//! anywhere means duplicates after restart, never loss.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::{debug, error, info, warn};

use super::decode::{Decoded, Decoder, Rejection};
use super::window::{WindowBuffer, last_offsets};
use super::worker::{self, Classified, ModelFollower, WorkerHandle};
use super::{InferenceError, Predictor};
use crate::config::Settings;
use crate::embed::OnnxEmbedder;
use crate::kafka::{self, ConsumerState, TriageContext};
use crate::metrics::Metrics;
use crate::registry::Registry;

type Consumer_ = StreamConsumer<TriageContext>;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Embed(#[from] crate::embed::EmbedError),
    #[error(transparent)]
    Inference(#[from] super::InferenceError),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Setup(String),
}

/// A record to produce, owned so that a failed delivery can be sent again.
#[derive(Debug, Clone)]
struct OutRecord {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
}

/// What every window task shares.
struct Shared {
    consumer: Arc<Consumer_>,
    producer: FutureProducer,
    worker: WorkerHandle,
    decoder: Decoder,
    metrics: Arc<Metrics>,
    state: Arc<ConsumerState>,
    predictions_topic: String,
    dlq_topic: String,
    features_topic: String,
}

/// Runs the service until `shutdown` resolves, then drains and commits.
pub async fn run(
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let registry = Registry::new(settings.registry_dir());
    let workers = settings.stream.workers.max(1);
    let embedder_settings = settings.clone();
    let embedders =
        tokio::task::spawn_blocking(move || OnnxEmbedder::load_many(&embedder_settings, workers))
            .await
            .map_err(|e| ServiceError::Setup(e.to_string()))??;
    // One loaded model, shared by every worker's predictor.
    let champion = Arc::new(registry.load("champion").map_err(InferenceError::from)?);
    let predictors = embedders
        .into_iter()
        .map(|embedder| Predictor::new(embedder, champion.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let follower = ModelFollower::new(
        registry,
        champion.clone(),
        predictors[0].embedder_spec().clone(),
        metrics.clone(),
    );
    info!(
        model = %champion.card.version,
        workers,
        threads_per_worker = settings.threads_per_embedder(workers),
        "Champion loaded."
    );
    let worker = worker::spawn(
        predictors,
        Some(follower),
        settings.stream.worker_queue,
        settings.drift.clone(),
        metrics.clone(),
    )
    .map_err(|e| ServiceError::Setup(format!("cannot start the worker thread: {e}")))?;

    let k = &settings.kafka;
    let state = Arc::new(ConsumerState::new(
        metrics.clone(),
        k.input_topics.clone(),
        Duration::from_millis(settings.stream.drain_timeout_ms),
    ));
    state.model_loaded.store(true, Ordering::Relaxed);
    let consumer: Arc<Consumer_> = Arc::new(kafka::consumer_config(k).create_with_context(
        TriageContext {
            state: state.clone(),
        },
    )?);
    let producer: FutureProducer = kafka::producer_config(k).create()?;
    check_topics(&consumer, &settings).await?;
    let topics: Vec<&str> = k.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    info!(topics = ?k.input_topics, group = %k.group_id, brokers = %k.brokers, "Consuming.");

    if !settings.http.listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&settings.http.listen)
            .await
            .map_err(|e| {
                ServiceError::Setup(format!("cannot listen on {}: {e}", settings.http.listen))
            })?;
        info!(address = %settings.http.listen, "HTTP server listening.");
        let app = crate::http::AppState {
            metrics: metrics.clone(),
            state: state.clone(),
            worker: worker.clone(),
            max_texts: settings.http.max_texts_per_request,
        };
        let limit = settings.http.max_request_bytes;
        tokio::spawn(async move {
            if let Err(err) = crate::http::serve(listener, app, limit).await {
                error!(error = %err, "HTTP server stopped.");
            }
        });
    }

    let shared = Arc::new(Shared {
        consumer: consumer.clone(),
        producer: producer.clone(),
        worker,
        decoder: Decoder::new(&settings),
        metrics: metrics.clone(),
        state: state.clone(),
        predictions_topic: k.predictions_topic.clone(),
        dlq_topic: k.dlq_topic.clone(),
        features_topic: k.features_topic.clone(),
    });
    let st = &settings.stream;
    let permits = Arc::new(Semaphore::new(st.max_in_flight_windows));
    let mut window: WindowBuffer<OwnedMessage> =
        WindowBuffer::new(st.max_messages, Duration::from_millis(st.max_wait_ms));
    let mut sequence = Sequencer::default();
    tokio::pin!(shutdown);

    loop {
        let deadline = window.deadline();
        let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(
            deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
        ));
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = timer, if deadline.is_some() => {
                flush(&shared, &permits, &mut sequence, &mut window).await;
            }
            received = consumer.recv() => match received {
                Ok(message) => {
                    metrics.messages_in.with_label_values(&[message.topic()]).inc();
                    if window.push(message.detach(), Instant::now()) {
                        flush(&shared, &permits, &mut sequence, &mut window).await;
                    }
                }
                Err(err) => {
                    warn!(error = %err, "Kafka receive error; retrying.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
    }

    info!(
        open_window = window.len(),
        "Shutting down: draining in-flight windows."
    );
    if !window.is_empty() {
        flush(&shared, &permits, &mut sequence, &mut window).await;
    }
    let drain = Duration::from_millis(st.drain_timeout_ms);
    let drain_state = state.clone();
    let left = tokio::task::spawn_blocking(move || drain_state.wait_drained(drain))
        .await
        .unwrap_or(usize::MAX);
    if left > 0 {
        warn!(
            windows = left,
            "Drain deadline passed; unacknowledged windows will be read again after restart."
        );
    }
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => info!("Offsets committed."),
        Err(err) => {
            debug!(error = %err, "Final commit (nothing stored since the last one is fine).")
        }
    }
    consumer.unsubscribe();
    let _ = producer.flush(Timeout::After(Duration::from_secs(5)));
    info!("Stopped.");
    Ok(())
}

/// Refuses to start when an output topic is missing: with it, records would queue
/// forever. Input topics may appear later (the subscription waits for them).
async fn check_topics(consumer: &Arc<Consumer_>, settings: &Settings) -> Result<(), ServiceError> {
    let consumer = consumer.clone();
    let k = settings.kafka.clone();
    tokio::task::spawn_blocking(move || {
        let metadata = consumer
            .fetch_metadata(None, Timeout::After(Duration::from_secs(10)))
            .map_err(|e| {
                ServiceError::Setup(format!(
                    "cannot reach Kafka at {}: {e}; is the broker running (scripts/broker.sh start)?",
                    k.brokers
                ))
            })?;
        let exists = |name: &str| metadata.topics().iter().any(|t| t.name() == name && t.error().is_none());
        let mut wanted = vec![&k.predictions_topic, &k.dlq_topic];
        if !k.features_topic.is_empty() {
            wanted.push(&k.features_topic);
        }
        let missing: Vec<&String> = wanted.into_iter().filter(|t| !exists(t)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::Setup(format!(
                "output topic(s) {missing:?} do not exist on {}; create them with `triage topics create`",
                k.brokers
            )))
        }
    })
    .await
    .map_err(|e| ServiceError::Setup(e.to_string()))?
}

/// Chains windows so that offsets are stored in window order.
#[derive(Default)]
struct Sequencer {
    next_id: u64,
    previous: Option<oneshot::Receiver<()>>,
}

/// Closes the window and hands it to a task of its own.
async fn flush(
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
    sequence: &mut Sequencer,
    window: &mut WindowBuffer<OwnedMessage>,
) {
    let opened = window.opened_at().unwrap_or_else(Instant::now);
    let messages = window.take();
    if messages.is_empty() {
        return;
    }
    // Waiting here is the backpressure: no new messages are read meanwhile.
    let Ok(permit) = permits.clone().acquire_owned().await else {
        return;
    };
    sequence.next_id += 1;
    let (done, next) = oneshot::channel();
    let previous = sequence.previous.replace(next);
    shared.state.window_started();
    tokio::spawn(process_window(
        shared.clone(),
        sequence.next_id,
        messages,
        opened,
        previous,
        done,
        permit,
    ));
}

async fn process_window(
    shared: Arc<Shared>,
    window_id: u64,
    messages: Vec<OwnedMessage>,
    opened: Instant,
    previous: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
    _permit: OwnedSemaphorePermit,
) {
    let m = &shared.metrics;
    let stage = |name: &str, d: Duration| {
        m.stage_seconds
            .with_label_values(&[name])
            .observe(d.as_secs_f64());
    };

    let started = Instant::now();
    let mut valid: Vec<(usize, Decoded)> = Vec::with_capacity(messages.len());
    let mut rejected: Vec<(usize, Rejection)> = Vec::new();
    for (i, msg) in messages.iter().enumerate() {
        let fallback = || format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
        match shared.decoder.decode(msg.payload(), fallback) {
            Ok(d) => valid.push((i, d)),
            Err(r) => rejected.push((i, r)),
        }
    }
    let decode_time = started.elapsed();
    stage("decode", decode_time);

    let invalid = rejected.len();
    let (classified, failed) = classify_all(&shared.worker, valid, invalid).await;
    // Read from Kafka (the window's first message) to predictions ready: what the
    // service adds, whatever the consumer lag. Under overload it stays bounded
    // while the lag grows (stream.max_in_flight_windows, stream.worker_queue).
    let in_service = opened.elapsed();
    stage("in_service", in_service);
    let mut records = Vec::with_capacity(classified.len() * 2 + rejected.len());
    let mut labels = Vec::with_capacity(classified.len());
    for (batch, rows) in &classified {
        stage("embed", batch.times.embed);
        stage("classify", batch.times.classify);
        for (row, (i, decoded)) in rows.iter().enumerate() {
            let msg = &messages[*i];
            let labelled = &batch.labelled[row];
            labels.push((labelled.label.clone(), batch.model_version.clone()));
            let key = Some(
                msg.key()
                    .map_or_else(|| decoded.id.as_bytes().to_vec(), <[u8]>::to_vec),
            );
            let source = json!({ "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset() });
            let prediction = json!({
                "id": decoded.id,
                "label": labelled.label,
                "confidence": labelled.confidence,
                "probabilities": labelled.probabilities,
                "model_version": batch.model_version,
                "window_id": window_id,
                "ground_truth": decoded.label,
                "source": source,
                "timings_ms": {
                    "decode": decode_time.as_secs_f64() * 1e3,
                    "embed": batch.times.embed.as_secs_f64() * 1e3,
                    "classify": batch.times.classify.as_secs_f64() * 1e3,
                    "in_service": in_service.as_secs_f64() * 1e3,
                },
            });
            records.push(OutRecord {
                topic: shared.predictions_topic.clone(),
                key: key.clone(),
                payload: Some(prediction.to_string().into_bytes()),
                headers: Vec::new(),
            });
            if !shared.features_topic.is_empty() {
                let feature = json!({
                    "id": decoded.id,
                    "timestamp_ms": msg.timestamp().to_millis(),
                    "embedding": batch.embeddings[row],
                    "label": decoded.label,
                    "model_version": batch.model_version,
                    "source": source,
                });
                records.push(OutRecord {
                    topic: shared.features_topic.clone(),
                    key,
                    payload: Some(feature.to_string().into_bytes()),
                    headers: Vec::new(),
                });
            }
        }
    }
    let mut dlq_reasons = Vec::new();
    for (i, why) in rejected.into_iter().chain(failed) {
        dlq_reasons.push(why.reason);
        records.push(dead_letter(&shared.dlq_topic, &messages[i], &why));
    }

    // Workers may finish windows out of order: records are produced, and offsets
    // stored, in window order, so a partition's predictions keep its order.
    if let Some(previous) = previous {
        let _ = previous.await;
    }
    let produce_started = Instant::now();
    futures::future::join_all(records.iter().map(|r| deliver(&shared, r))).await;
    stage("produce", produce_started.elapsed());

    // Offsets only after every record is acknowledged.
    for (topic, partition, offset) in last_offsets(
        messages
            .iter()
            .map(|m| (m.topic(), m.partition(), m.offset())),
    ) {
        if let Err(err) = shared.consumer.store_offset(&topic, partition, offset) {
            // The partition was revoked meanwhile: its next owner reads these again.
            debug!(topic, partition, offset, error = %err, "Offset not stored.");
        }
    }

    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for msg in &messages {
        if let Some(ts) = msg.timestamp().to_millis() {
            m.end_to_end_seconds
                .observe(((now_ms - ts).max(0) as f64) / 1e3);
        }
    }
    for (label, version) in &labels {
        m.predictions.with_label_values(&[label, version]).inc();
    }
    for reason in dlq_reasons {
        m.dlq.with_label_values(&[reason]).inc();
    }
    m.windows.inc();
    m.window_size.observe(messages.len() as f64);
    debug!(
        window = window_id,
        messages = messages.len(),
        predictions = labels.len(),
        "Window acknowledged."
    );
    let _ = done.send(());
    shared.state.window_finished();
}

type Rows = Vec<(usize, Decoded)>;

/// Classifies a window's valid messages. If the whole batch fails, each message is
/// tried alone, so one bad message goes to the dead-letter topic instead of stalling
/// its partition.
async fn classify_all(
    worker: &WorkerHandle,
    valid: Rows,
    invalid: usize,
) -> (Vec<(Classified, Rows)>, Vec<(usize, Rejection)>) {
    if valid.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let texts: Vec<String> = valid.iter().map(|(_, d)| d.text.clone()).collect();
    let observe = worker::Observe {
        truth: valid.iter().map(|(_, d)| d.label.clone()).collect(),
        invalid,
    };
    match worker.classify_window(texts, observe).await {
        Ok(c) => (vec![(c, valid)], Vec::new()),
        Err(err) => {
            warn!(error = %err, messages = valid.len(), "Window classification failed; retrying one message at a time.");
            let mut ok = Vec::new();
            let mut failed = Vec::new();
            for (i, d) in valid {
                match worker.classify(vec![d.text.clone()]).await {
                    Ok(c) => ok.push((c, vec![(i, d)])),
                    Err(e) => failed.push((
                        i,
                        Rejection {
                            reason: "classification_failed",
                            detail: e.to_string(),
                        },
                    )),
                }
            }
            (ok, failed)
        }
    }
}

/// The message unchanged, with headers saying why and where it came from.
fn dead_letter(topic: &str, msg: &OwnedMessage, why: &Rejection) -> OutRecord {
    let mut headers: Vec<(String, Vec<u8>)> = msg
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    let failed_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    for (k, v) in [
        ("triage.error.reason", why.reason.to_string()),
        ("triage.error.detail", why.detail.clone()),
        ("triage.source.topic", msg.topic().to_string()),
        ("triage.source.partition", msg.partition().to_string()),
        ("triage.source.offset", msg.offset().to_string()),
        ("triage.failed_at", failed_at),
    ] {
        headers.push((k.to_string(), v.into_bytes()));
    }
    OutRecord {
        topic: topic.to_string(),
        key: msg.key().map(<[u8]>::to_vec),
        payload: msg.payload().map(<[u8]>::to_vec),
        headers,
    }
}

/// Produces one record until the broker acknowledges it. Failures are retried with
/// backoff (the producer itself retries transient errors without a time limit).
async fn deliver(shared: &Shared, record: &OutRecord) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (k, v) in &record.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut future_record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&record.topic).headers(headers);
        if let Some(payload) = &record.payload {
            future_record = future_record.payload(payload.as_slice());
        }
        if let Some(key) = &record.key {
            future_record = future_record.key(key.as_slice());
        }
        match shared.producer.send(future_record, Timeout::Never).await {
            Ok(_) => return,
            Err((err, _)) => {
                shared.metrics.produce_retries.inc();
                warn!(topic = %record.topic, error = %err, "Delivery failed; producing again.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
