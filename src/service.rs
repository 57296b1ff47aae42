//! `triage run`: wires the inference pipeline to its edges. Loads the embedders
//! and the champion once, starts the workers (with the champion follower and the
//! drift monitor), then runs the pipeline
//! - over Kafka ([`run_kafka`]): the service, with its HTTP surface, until a signal;
//! - over files ([`run_files`]): the batch mode, until the input ends.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::config::Settings;
use crate::embed::{EmbedError, Embedder, OnnxEmbedder};
use crate::file::{FileError, FileSink, FileSource, InputFormat, Outputs};
use crate::inference::decode::Decoder;
use crate::inference::pipeline::{self, Pipeline, PipelineError, WindowSettings};
use crate::inference::worker::{self, ModelFollower, WorkerHandle};
use crate::inference::{InferenceError, Predictor};
use crate::kafka::{KafkaError, KafkaSink, KafkaSource, TopicCheckError};
use crate::metrics::Metrics;
use crate::registry::{ModelVersion, Registry};
use crate::stream::state::{PipelineState, Totals};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Topics(#[from] TopicCheckError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("cannot listen on {address} (http.listen): {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the worker threads: {0}")]
    Workers(#[source] std::io::Error),
    #[error("the review queue cannot start: {0}")]
    Review(String),
    #[error("a start-up task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Loads the embedders and the champion, and starts the workers that serve it.
async fn start_workers(
    settings: &Settings,
    metrics: &Arc<Metrics>,
) -> Result<WorkerHandle, ServiceError> {
    let registry =
        crate::registry::Registry::from_settings(settings).map_err(InferenceError::from)?;
    let workers = settings.stream.workers.max(1);
    let embedder_settings = settings.clone();
    let embedders =
        tokio::task::spawn_blocking(move || OnnxEmbedder::load_many(&embedder_settings, workers))
            .await??;
    // One loaded model, shared by every worker's predictor.
    let champion = Arc::new(load_champion(&registry, metrics)?);
    let graphs = embedders[0].graphs();
    let configured = embedders[0].loaded().clone();
    let predictors = embedders
        .into_iter()
        .map(|embedder| Predictor::new(embedder, champion.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let follower = ModelFollower::new(
        registry,
        champion.clone(),
        configured,
        graphs,
        metrics.clone(),
    );
    info!(
        model = %champion.card.version,
        workers,
        threads_per_worker = settings.threads_per_embedder(workers),
        "Champion loaded."
    );
    // A worker that panics gets a fresh session like the others.
    let rebuild_settings = settings.clone();
    let rebuild: worker::Rebuild<OnnxEmbedder> =
        Arc::new(move || OnnxEmbedder::load_one_of(&rebuild_settings, workers));
    worker::spawn(
        predictors,
        Some(follower),
        settings.stream.worker_queue,
        worker::DriftFeed {
            settings: settings.drift.clone(),
            window_messages: settings.stream.max_messages,
            window_wait: Duration::from_millis(settings.stream.max_wait_ms),
        },
        metrics.clone(),
        Some(rebuild),
    )
    .map_err(ServiceError::Workers)
}

/// The champion, or the previous champion when the champion will not load at start
/// (logged as an error and exported as `triage_model_fallback`): a consumer does not
/// stay down while a good version exists. Neither loading is an error naming both.
fn load_champion(registry: &Registry, metrics: &Metrics) -> Result<ModelVersion, InferenceError> {
    let serving = registry.load_serving()?;
    let version = serving.model.card.version.as_str();
    let (champion, fallback) = match &serving.fallback {
        Some(fallback) => {
            fallback.log(version);
            (fallback.champion.as_str(), 1)
        }
        None => (version, 0),
    };
    // A series in both cases: the alert rule reads it, and a missing series looks
    // like a missing exporter.
    metrics
        .model_fallback
        .with_label_values(&[version, champion])
        .set(fallback);
    Ok(serving.model)
}

fn window_settings(settings: &Settings) -> WindowSettings {
    let st = &settings.stream;
    WindowSettings {
        max_messages: st.max_messages,
        max_wait: Duration::from_millis(st.max_wait_ms),
        max_in_flight: st.max_in_flight_windows,
        continuous: st.continuous_batching,
        drain_timeout: Duration::from_millis(st.drain_timeout_ms),
    }
}

fn pipeline(
    settings: &Settings,
    worker: WorkerHandle,
    metrics: &Arc<Metrics>,
    state: &Arc<PipelineState>,
    (features, review): (bool, bool),
) -> Arc<Pipeline> {
    Arc::new(Pipeline {
        worker,
        decoder: Decoder::new(settings),
        metrics: metrics.clone(),
        state: state.clone(),
        features,
        review,
        worker_outage: Duration::from_millis(settings.stream.worker_outage_timeout_ms),
    })
}

/// The streaming service: Kafka in and out, HTTP on `http.listen`, until
/// `shutdown` resolves (then drains in-flight windows and commits) or a record
/// cannot be produced (then stops with the error, the window uncommitted).
pub async fn run_kafka(
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let worker = start_workers(&settings, &metrics).await?;
    let k = settings.kafka.clone();
    tokio::task::spawn_blocking(move || crate::kafka::check_output_topics(&k)).await??;
    let state = Arc::new(PipelineState::new(
        metrics.clone(),
        Duration::from_millis(settings.stream.drain_timeout_ms),
    ));
    let mut source = KafkaSource::subscribe(&settings.kafka, state.clone())?;
    let sink = KafkaSink::new(&settings.kafka, metrics.clone())?;
    serve_http(&settings, &metrics, &state, &worker).await?;

    let extra = (
        !settings.kafka.features_topic.is_empty(),
        !settings.kafka.review_topic.is_empty(),
    );
    let pipeline = pipeline(&settings, worker, &metrics, &state, extra);
    let result = pipeline::run(
        pipeline,
        &window_settings(&settings),
        &mut source,
        sink.clone(),
        shutdown,
    )
    .await;
    // What was written is committed, whether the pipeline stopped cleanly or not; but
    // not at any cost: with the broker gone, librdkafka's final commit and group leave
    // wait for a coordinator that may never come back, and a service told to stop
    // must stop. What is not committed is delivered again (at least once).
    let close_timeout = Duration::from_millis(settings.stream.drain_timeout_ms);
    let close = tokio::task::spawn_blocking(move || source.close());
    match tokio::time::timeout(close_timeout, close).await {
        Ok(joined) => joined?,
        Err(_) => error!(
            seconds = close_timeout.as_secs_f64(),
            "Could not commit the last offsets and leave the group in stream.drain_timeout_ms (is the broker reachable?); stopping anyway: messages after the last commit will be delivered again."
        ),
    }
    sink.flush(Duration::from_secs(5));
    result?;
    info!("Stopped.");
    Ok(())
}

/// The review queue when `kafka.review_topic` is set, followed from its topic and
/// the labels topic for as long as the process runs.
fn review_desk(
    settings: &Settings,
    metrics: &Arc<Metrics>,
) -> Result<Option<crate::review::Desk>, ServiceError> {
    if settings.kafka.review_topic.is_empty() {
        return Ok(None);
    }
    let desk =
        crate::review::Desk::new(settings, &metrics.registry).map_err(ServiceError::Review)?;
    if !settings.review.reviewers.is_empty() && !desk.gate.shared_key {
        warn!(
            "review.session_secret is empty: this process signs its own sessions, so a reviewer signed in here is not signed in on other replicas, and is signed out by a restart; set TRIAGE__REVIEW__SESSION_SECRET (e.g. `openssl rand -hex 32`) to the same value on every replica."
        );
    }
    tokio::spawn(crate::review::follow::run(
        settings.kafka.clone(),
        Duration::from_secs(settings.review.queue_window_s),
        desk.clone(),
        std::future::pending(),
    ));
    Ok(Some(desk))
}

async fn serve_http(
    settings: &Settings,
    metrics: &Arc<Metrics>,
    state: &Arc<PipelineState>,
    worker: &WorkerHandle,
) -> Result<(), ServiceError> {
    let address = &settings.http.listen;
    if address.is_empty() {
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ServiceError::Listen {
            address: address.clone(),
            source,
        })?;
    info!(address = %address, "HTTP server listening.");
    let limit_metrics = crate::http::limits::LimitMetrics::register(&metrics.registry);
    let limits = crate::http::ClassifyLimits::new(&settings.http, &limit_metrics);
    let app = crate::http::AppState {
        metrics: metrics.clone(),
        state: state.clone(),
        worker: worker.clone(),
        limits: limits.clone(),
    };
    let desk = review_desk(settings, metrics)?;
    let console = crate::console::Console::new(
        crate::registry::Registry::from_settings(settings).map_err(InferenceError::from)?,
        settings.drift.clone(),
        worker.clone(),
        metrics.clone(),
        limits,
        desk,
    );
    let routes = crate::http::router(app).merge(crate::console::router(console));
    let http = settings.http.clone();
    tokio::spawn(async move {
        crate::http::serve(
            listener,
            routes,
            &http,
            limit_metrics,
            std::future::pending(),
        )
        .await;
    });
    Ok(())
}

/// A batch run's input and outputs.
#[derive(Debug, Clone)]
pub struct FileRun {
    /// Input file; `-` is standard input.
    pub input: PathBuf,
    pub format: InputFormat,
    pub outputs: Outputs,
}

/// What a batch run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileReport {
    #[serde(flatten)]
    pub totals: Totals,
    /// Blank input lines, skipped.
    pub blank_lines: u64,
    pub seconds: f64,
    /// Messages per second, from the first message read to the last window written.
    pub per_second: f64,
}

/// The batch mode: the same pipeline over a file, until the file ends (or
/// `shutdown` resolves: then what was read is written and the run stops).
pub async fn run_files(
    settings: Settings,
    metrics: Arc<Metrics>,
    run: &FileRun,
    shutdown: impl Future<Output = ()>,
) -> Result<FileReport, ServiceError> {
    let worker = start_workers(&settings, &metrics).await?;
    let state = Arc::new(PipelineState::new(
        metrics.clone(),
        Duration::from_millis(settings.stream.drain_timeout_ms),
    ));
    state.assigned.store(1, Ordering::Relaxed);
    state.brokers_up.store(1, Ordering::Relaxed);
    let sink = FileSink::create(&run.outputs)?;
    let mut source = FileSource::open(&run.input, run.format)?;
    let started = Instant::now();
    let pipeline = pipeline(
        &settings,
        worker,
        &metrics,
        &state,
        (run.outputs.features.is_some(), run.outputs.review.is_some()),
    );
    let result = pipeline::run(
        pipeline,
        &window_settings(&settings),
        &mut source,
        sink,
        shutdown,
    )
    .await;
    source.finish();
    let totals = result?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(FileReport {
        totals,
        blank_lines: source.blank_lines(),
        seconds,
        per_second: totals.messages as f64 / seconds.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::testing::{settings, train_champion};
    use crate::registry::Actor;

    fn fallback_series(metrics: &Metrics) -> Vec<String> {
        metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("triage_model_fallback{"))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_champion_that_will_not_load_at_start_falls_back_to_previous_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let v1 = train_champion(&s, 0);
        let v2 = train_champion(&s, 100);
        let registry = Registry::new(s.registry_dir());
        let metrics = Metrics::new();
        assert_eq!(load_champion(&registry, &metrics).unwrap().card.version, v2);
        assert_eq!(
            fallback_series(&metrics),
            [format!(
                r#"triage_model_fallback{{champion="{v2}",model_version="{v2}"}} 0"#
            )]
        );

        // The champion's model file changes after registration.
        let model = s
            .registry_dir()
            .join("versions")
            .join(&v2)
            .join("model.json");
        let mut text = std::fs::read_to_string(&model).unwrap();
        text.push(' ');
        std::fs::write(&model, text).unwrap();
        let metrics = Metrics::new();
        let served = load_champion(&registry, &metrics).unwrap();
        assert_eq!(served.card.version, v1);
        assert_eq!(
            fallback_series(&metrics),
            [format!(
                r#"triage_model_fallback{{champion="{v2}",model_version="{v1}"}} 1"#
            )]
        );

        // With the previous champion damaged too, start-up stops and names both.
        let reference = s
            .registry_dir()
            .join("versions")
            .join(&v1)
            .join("reference.json");
        std::fs::write(&reference, "{}").unwrap();
        let err = load_champion(&registry, &Metrics::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("the champion {v2} will not load")),
            "{err}"
        );
        assert!(
            err.contains(&format!("the previous champion {v1} will not load either")),
            "{err}"
        );
        assert!(err.contains("sha256"), "{err}");
        // With no previous champion at all, it says so.
        registry.rollback("test", Actor::Cli).unwrap();
        let err = load_champion(&registry, &Metrics::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("there is no previous champion"), "{err}");
    }
}
