//! The `[http]` section: the HTTP surface of `triage run`. Owned by `http`; defined
//! here because `http` sits above `config` in the dependency order. The bound that
//! involves `[stream]` (`max_classify_in_flight`) is checked in `validate.rs`.

use serde::{Deserialize, Serialize};

use super::validate::{Checker, Problem};

/// The HTTP surface of `triage run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address for /metrics, /healthz, /readyz and POST /v1/classify. Empty: no server.
    pub listen: String,
    /// Requests with a larger body get 413.
    pub max_request_bytes: usize,
    /// Texts per /v1/classify request, at most.
    pub max_texts_per_request: usize,
    /// A client that has not sent a request's whole header in this time is
    /// disconnected (slow clients; also closes idle keep-alive connections).
    pub header_read_timeout_ms: u64,
    /// A request (body read and answer) that takes longer gets 408.
    pub request_timeout_ms: u64,
    /// Open connections, at most; a connection past it is answered 503 with
    /// `Retry-After` and closed.
    pub max_connections: usize,
    /// Requests being answered at once, at most (`/healthz`, `/readyz` and `/metrics`
    /// are not counted); past it 503 with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Classify requests (`POST /v1/classify` and the console's form) holding a
    /// worker job at once, at most; past it 503 with `Retry-After` at once, not
    /// queued. At most `stream.worker_queue`, so Kafka windows always find room in
    /// the workers' queue.
    pub max_classify_in_flight: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            max_request_bytes: 256 * 1024,
            max_texts_per_request: 256,
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_connections: 1024,
            max_concurrent_requests: 256,
            max_classify_in_flight: 1,
        }
    }
}

impl HttpSettings {
    /// Every problem with this section alone, each with the key and the fix.
    pub fn problems(&self) -> Vec<Problem> {
        let mut c = Checker::default();
        let h = self;
        c.check(
            h.listen.is_empty() || h.listen.parse::<std::net::SocketAddr>().is_ok(),
            "http.listen",
            || format!("{:?} is not an address", h.listen),
            "use host:port such as \"127.0.0.1:9464\", or \"\" for no HTTP server",
        );
        c.check(
            h.max_request_bytes >= 64 && h.max_texts_per_request >= 1,
            "http.max_request_bytes",
            || "http.max_request_bytes must be >= 64 and http.max_texts_per_request >= 1".into(),
            "use 262144 and 256",
        );
        c.check(
            h.header_read_timeout_ms >= 100 && h.request_timeout_ms >= 100,
            "http.header_read_timeout_ms",
            || {
                format!(
                    "http.header_read_timeout_ms ({}) and http.request_timeout_ms ({}) must be at least 100",
                    h.header_read_timeout_ms, h.request_timeout_ms
                )
            },
            "use 10000 and 30000",
        );
        c.check(
            h.max_connections >= 1 && h.max_concurrent_requests >= 1,
            "http.max_connections",
            || "http.max_connections and http.max_concurrent_requests must be at least 1".into(),
            "use 1024 and 256",
        );
        c.0
    }
}
