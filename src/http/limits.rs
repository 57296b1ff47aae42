//! The bounds of triage's HTTP servers (`triage run` and `triage retrainer`): a
//! header-read timeout, a request timeout, caps on open connections and on requests
//! answered at once, and the classify gate that keeps HTTP classification from
//! taking the workers' queue from the Kafka windows. Past a cap the answer is 503
//! with `Retry-After`, at once: nothing waits in a queue holding its body. Each bound
//! hit is counted (`triage_http_shed_total{limit}`, `triage_http_timeouts_total{limit}`).
//!
//! The server is hyper's HTTP/1 connection builder driven by our own accept loop:
//! `axum::serve` (0.8) sets no timer, so it has no header-read timeout, and it
//! accepts every connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{debug, warn};

use crate::config::HttpSettings;
use crate::metrics::register;

/// Seconds a shed client is told to wait (`Retry-After`).
pub const RETRY_AFTER_S: u64 = 1;

/// Routes answered whatever the load: probes and scrapes must see a busy service
/// as alive, or the orchestrator restarts it for being busy.
const EXEMPT: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Refused connections answered at once; past it a refused connection is closed
/// without an answer.
const REFUSING_AT_ONCE: usize = 64;

/// The bounds of one server, from `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrent_requests: usize,
}

impl From<&HttpSettings> for ServeLimits {
    fn from(h: &HttpSettings) -> Self {
        Self {
            header_read_timeout: Duration::from_millis(h.header_read_timeout_ms),
            request_timeout: Duration::from_millis(h.request_timeout_ms),
            max_connections: h.max_connections.max(1),
            max_concurrent_requests: h.max_concurrent_requests.max(1),
        }
    }
}

/// Which bound a client hit: the label of the counters, named after its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    MaxConnections,
    MaxConcurrentRequests,
    MaxClassifyInFlight,
    HeaderReadTimeout,
    RequestTimeout,
}

impl Limit {
    pub fn key(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::MaxConcurrentRequests => "max_concurrent_requests",
            Self::MaxClassifyInFlight => "max_classify_in_flight",
            Self::HeaderReadTimeout => "header_read_timeout_ms",
            Self::RequestTimeout => "request_timeout_ms",
        }
    }

    const SHED: [Limit; 3] = [
        Self::MaxConnections,
        Self::MaxConcurrentRequests,
        Self::MaxClassifyInFlight,
    ];
    const TIMEOUTS: [Limit; 2] = [Self::HeaderReadTimeout, Self::RequestTimeout];
}

/// The counters of the bounds, in the server's registry.
#[derive(Clone)]
pub struct LimitMetrics {
    shed: IntCounterVec,
    timeouts: IntCounterVec,
    connections: IntGauge,
}

impl LimitMetrics {
    pub fn register(registry: &Registry) -> Self {
        let shed = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "triage_http_shed_total",
                    "HTTP connections and requests answered 503 with Retry-After, by the [http] limit they hit (max_connections, max_concurrent_requests, max_classify_in_flight).",
                ),
                &["limit"],
            ),
        );
        let timeouts = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "triage_http_timeouts_total",
                    "HTTP connections closed (header_read_timeout_ms) and requests answered 408 (request_timeout_ms) for taking too long.",
                ),
                &["limit"],
            ),
        );
        let connections = register(
            registry,
            IntGauge::new(
                "triage_http_connections",
                "Open HTTP connections (at most http.max_connections).",
            ),
        );
        // Every series exists at zero, so rate() and alerts see the first one.
        for l in Limit::SHED {
            shed.with_label_values(&[l.key()]);
        }
        for l in Limit::TIMEOUTS {
            timeouts.with_label_values(&[l.key()]);
        }
        Self {
            shed,
            timeouts,
            connections,
        }
    }

    fn hit(&self, limit: Limit) {
        if Limit::TIMEOUTS.contains(&limit) {
            self.timeouts.with_label_values(&[limit.key()]).inc();
        } else {
            self.shed.with_label_values(&[limit.key()]).inc();
        }
    }
}

/// 503 with `Retry-After`, and the limit named in a JSON body.
pub fn shed_response(limit: Limit) -> Response {
    let message = format!(
        "busy: http.{} reached; retry in {RETRY_AFTER_S} s",
        limit.key()
    );
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({ "error": message })),
    )
        .into_response();
    with_retry_after(&mut response);
    response
}

/// Adds `Retry-After` to a 503.
pub fn with_retry_after(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
}

/// The classify requests that may hold a worker job at once
/// (`http.max_classify_in_flight`). Shared by `POST /v1/classify` and the console's
/// form; a request past it is refused, never queued, so the stream's windows always
/// find room in the workers' queue.
#[derive(Clone)]
pub struct ClassifyGate {
    permits: Arc<Semaphore>,
    shed: IntCounter,
}

impl ClassifyGate {
    pub fn new(max_in_flight: usize, metrics: &LimitMetrics) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            shed: metrics
                .shed
                .with_label_values(&[Limit::MaxClassifyInFlight.key()]),
        }
    }

    /// A place for one classify request, held until it is dropped; `None` (and
    /// counted) when every place is taken.
    pub fn try_enter(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.shed.inc();
        }
        permit
    }
}

#[derive(Clone)]
struct RequestBounds {
    permits: Arc<Semaphore>,
    timeout: Duration,
    metrics: LimitMetrics,
}

async fn bound_request(State(b): State<RequestBounds>, req: Request, next: Next) -> Response {
    let _permit = if EXEMPT.contains(&req.uri().path()) {
        None
    } else {
        match b.permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                b.metrics.hit(Limit::MaxConcurrentRequests);
                return shed_response(Limit::MaxConcurrentRequests);
            }
        }
    };
    let path = req.uri().path().to_string();
    match tokio::time::timeout(b.timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            b.metrics.hit(Limit::RequestTimeout);
            debug!(
                path,
                "HTTP request took longer than http.request_timeout_ms."
            );
            let message = format!(
                "the request took longer than http.request_timeout_ms ({} ms)",
                b.timeout.as_millis()
            );
            (
                StatusCode::REQUEST_TIMEOUT,
                axum::Json(serde_json::json!({ "error": message })),
            )
                .into_response()
        }
    }
}

/// `router` with the request cap and the request timeout around every route.
pub fn bounded(router: Router, limits: &ServeLimits, metrics: &LimitMetrics) -> Router {
    let bounds = RequestBounds {
        permits: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
        timeout: limits.request_timeout,
        metrics: metrics.clone(),
    };
    router.layer(middleware::from_fn_with_state(bounds, bound_request))
}

/// Serves `router` (with [`bounded`]'s layers) on `listener` until `shutdown`
/// resolves; then stops accepting, lets open connections finish their request
/// (at most `request_timeout` more) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    metrics: LimitMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let router = bounded(router, &limits, &metrics);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, mostly: wait for some to close.
                    warn!(error = %err, "Could not accept an HTTP connection; retrying in 100 ms.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics.hit(Limit::MaxConnections);
            refuse(stream, &refusing);
            continue;
        };
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let mut stop = stop_rx.clone();
        let metrics = metrics.clone();
        metrics.connections.inc();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = result {
                if err.is_timeout() {
                    metrics.hit(Limit::HeaderReadTimeout);
                    debug!(
                        "HTTP client sent no whole header in http.header_read_timeout_ms; disconnected."
                    );
                } else {
                    debug!(error = %err, "HTTP connection ended with an error.");
                }
            }
            metrics.connections.dec();
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(());
    // Every permit back: every connection closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(
        limits.request_timeout + Duration::from_secs(1),
        connections.acquire_many(all),
    )
    .await;
}

/// Answers a connection past `http.max_connections` with 503 and closes it. The
/// request is read and dropped first, so that closing does not reset the answer
/// away; at most [`REFUSING_AT_ONCE`] such answers at once, one second each.
fn refuse(stream: TcpStream, refusing: &Arc<Semaphore>) {
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let body = format!(
            "{{\"error\":\"busy: http.{} reached; retry in {RETRY_AFTER_S} s\"}}",
            Limit::MaxConnections.key()
        );
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: {RETRY_AFTER_S}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
        drop(permit);
    });
}
