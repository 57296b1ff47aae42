//! The `[stream]` section: micro-batching, the envelope limits and the embedding
//! workers, with the checks that concern it alone. `config` layers it into
//! `Settings` and also checks the bounds it shares with `[kafka]` and `[http]`.

use serde::{Deserialize, Serialize};

/// Micro-batching of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// A window closes at this many messages...
    pub max_messages: usize,
    /// ...or this long after its first message, whichever comes first.
    pub max_wait_ms: u64,
    /// Continuous batching: an open window goes to the workers as soon as one is
    /// idle, so windows grow only while every worker is busy (still bounded by
    /// `max_messages` and `max_wait_ms`). False: a window waits for those bounds.
    pub continuous_batching: bool,
    /// Messages with a larger payload go to the dead-letter topic.
    pub max_message_bytes: usize,
    /// The envelope is input too: a message whose key is longer, that has more
    /// headers, or whose header names and values add up to more, goes to the
    /// dead-letter topic (`key_too_large`, `too_many_headers`, `headers_too_large`;
    /// a header name that is not UTF-8: `header_not_utf8`).
    pub max_key_bytes: usize,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    /// Embedding workers: threads with a model each, embedding windows side by side
    /// (each with `embedding.threads` ONNX Runtime threads; 0 there: cores / workers).
    /// The offline commands embed with as many sessions, each a share of every call.
    pub workers: usize,
    /// Windows queued for the embedding workers; when full, the consumer stops reading.
    pub worker_queue: usize,
    /// Windows between the worker and the broker's acknowledgement, at most.
    pub max_in_flight_windows: usize,
    /// On shutdown or rebalance, in-flight windows get this long to be acknowledged.
    pub drain_timeout_ms: u64,
    /// When no worker can classify (every try fails, a known-good text too), a window
    /// waits this long for the workers to come back (it is not acknowledged, nothing
    /// is read meanwhile), then the service stops with an error; its messages are
    /// read again after the restart, never dead-lettered as our own failure.
    pub worker_outage_timeout_ms: u64,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            max_messages: 64,
            max_wait_ms: 500,
            continuous_batching: true,
            max_message_bytes: 64 * 1024,
            max_key_bytes: 4 * 1024,
            max_headers: 64,
            max_header_bytes: 16 * 1024,
            workers: 2,
            worker_queue: 2,
            max_in_flight_windows: 4,
            drain_timeout_ms: 10_000,
            worker_outage_timeout_ms: 60_000,
        }
    }
}

impl StreamSettings {
    /// Every problem with this section alone, as (key, what is wrong, the fix);
    /// empty: fine.
    pub fn problems(&self) -> Vec<(&'static str, String, &'static str)> {
        let mut out = Vec::new();
        let mut check = |ok: bool, key, message: &dyn Fn() -> String, fix| {
            if !ok {
                out.push((key, message(), fix));
            }
        };
        let st = self;
        check(
            (1..=10_000).contains(&st.max_messages),
            "stream.max_messages",
            &|| format!("{} is outside 1..=10000", st.max_messages),
            "use 32 to 256",
        );
        check(
            (1..=600_000).contains(&st.max_wait_ms),
            "stream.max_wait_ms",
            &|| format!("{} is outside 1..=600000", st.max_wait_ms),
            "use a few hundred milliseconds",
        );
        check(
            st.max_message_bytes >= 16,
            "stream.max_message_bytes",
            &|| format!("{} bytes cannot hold a message", st.max_message_bytes),
            "use 65536",
        );
        check(
            st.max_headers >= 1 && st.max_key_bytes >= 1,
            "stream.max_headers",
            &|| "stream.max_headers and stream.max_key_bytes must be at least 1".into(),
            "use 64 headers and 4096 key bytes",
        );
        check(
            st.worker_outage_timeout_ms >= 1_000,
            "stream.worker_outage_timeout_ms",
            &|| {
                format!(
                    "{} ms is too short for a worker to restart",
                    st.worker_outage_timeout_ms
                )
            },
            "use 60000",
        );
        check(
            st.worker_queue >= 1 && st.max_in_flight_windows >= 1,
            "stream.worker_queue",
            &|| "stream.worker_queue and stream.max_in_flight_windows must be at least 1".into(),
            "use 2 and 4",
        );
        check(
            (1..=64).contains(&st.workers),
            "stream.workers",
            &|| format!("{} is outside 1..=64", st.workers),
            "use 2 (measured best on 2 cores) or one per 2-4 cores",
        );
        check(
            st.max_in_flight_windows >= st.workers,
            "stream.max_in_flight_windows",
            &|| {
                format!(
                    "{} windows in flight cannot keep {} workers busy",
                    st.max_in_flight_windows, st.workers
                )
            },
            "allow at least stream.workers windows in flight, 2x for overlap",
        );
        check(
            st.drain_timeout_ms >= 100,
            "stream.drain_timeout_ms",
            &|| format!("{} ms is too short to drain anything", st.drain_timeout_ms),
            "use 10000",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_have_no_problems() {
        assert_eq!(StreamSettings::default().problems(), vec![]);
    }

    #[test]
    fn too_few_windows_in_flight_for_the_workers_name_their_key() {
        let s = StreamSettings {
            workers: 3,
            max_in_flight_windows: 2,
            ..StreamSettings::default()
        };
        let keys: Vec<&str> = s.problems().iter().map(|p| p.0).collect();
        assert_eq!(keys, vec!["stream.max_in_flight_windows"]);
    }
}
