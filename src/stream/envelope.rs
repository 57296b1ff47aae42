//! A message's envelope (its key and headers) is input like its payload, and what
//! the pipeline writes must fit the producer. Pure: limits in, verdicts out.
//!
//! - [`EnvelopeLimits::check`] rejects a message whose key or headers are past a
//!   limit, or whose header name is not UTF-8 (Kafka says a name is a string).
//! - [`EnvelopeLimits::bound_dead_letter`] makes a dead letter writable whatever it
//!   came from: a key or headers past the limits are replaced by their size and
//!   sha256, and a payload that would not fit the producer's record limit is cut to
//!   fit (with its size and sha256). The original stays at its source position,
//!   which the dead letter names.
//! - [`EnvelopeLimits::fits`] says whether a record fits the producer's limit, as
//!   librdkafka counts it (with room to spare), so that no record a window asks the
//!   sink to write can be refused as too large.

use sha2::{Digest, Sha256};

use super::{Message, Record, Rejection};
use crate::checksum::hex;

/// A record's own framing in a batch (length, attributes, deltas, key and value
/// lengths), counted generously.
const RECORD_FRAMING: usize = 256;
/// A header's framing (its name and value lengths), counted generously.
const HEADER_FRAMING: usize = 16;
/// `triage.error.detail` is cut to this many bytes.
pub const MAX_DETAIL_BYTES: usize = 1024;

/// The envelope limits and the producer's record limit (the inference decoder
/// makes them from `stream.max_key_bytes`, `max_headers`, `max_header_bytes` and
/// librdkafka's `message.max.bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeLimits {
    pub max_key_bytes: usize,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    /// The producer's record limit (librdkafka's `message.max.bytes`).
    pub max_record_bytes: usize,
}

/// What [`EnvelopeLimits::bound_dead_letter`] replaced, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bounded {
    pub key: bool,
    pub headers: bool,
    pub payload: bool,
}

impl EnvelopeLimits {
    /// Ok when the message's key and headers are within the limits.
    pub fn check(&self, m: &Message) -> Result<(), Rejection> {
        let reject = |reason, detail: String| Err(Rejection { reason, detail });
        if let Some(i) = m
            .headers
            .iter()
            .position(|(name, _)| std::str::from_utf8(name).is_err())
        {
            return reject(
                "header_not_utf8",
                format!(
                    "header {i}'s name is not UTF-8 ({} bytes); Kafka header names are strings",
                    m.headers[i].0.len()
                ),
            );
        }
        if m.headers.len() > self.max_headers {
            return reject(
                "too_many_headers",
                format!(
                    "{} headers, over stream.max_headers = {}",
                    m.headers.len(),
                    self.max_headers
                ),
            );
        }
        let header_bytes = headers_bytes(&m.headers);
        if header_bytes > self.max_header_bytes {
            return reject(
                "headers_too_large",
                format!(
                    "headers are {header_bytes} bytes, over stream.max_header_bytes = {}",
                    self.max_header_bytes
                ),
            );
        }
        let key = m.key.as_ref().map_or(0, Vec::len);
        if key > self.max_key_bytes {
            return reject(
                "key_too_large",
                format!(
                    "key is {key} bytes, over stream.max_key_bytes = {}",
                    self.max_key_bytes
                ),
            );
        }
        Ok(())
    }

    /// Whether the producer takes `record` (with room for its framing).
    pub fn fits(&self, record: &Record) -> bool {
        record_bytes(record) <= self.max_record_bytes
    }

    /// A dead letter of `message` that fits the producer whatever the message was:
    /// its own headers and key are kept when within the limits (else replaced by
    /// their size and sha256), triage's headers (`ours`, a bounded detail among them)
    /// follow, and the payload is cut to what room is left.
    pub fn bound_dead_letter(
        &self,
        message: &Message,
        mut ours: Vec<(String, Vec<u8>)>,
        mut record: Record,
    ) -> (Record, Bounded) {
        let mut bounded = Bounded::default();
        let names_ok = message
            .headers
            .iter()
            .all(|(name, _)| std::str::from_utf8(name).is_ok());
        let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
        if names_ok
            && message.headers.len() <= self.max_headers
            && headers_bytes(&message.headers) <= self.max_header_bytes
        {
            headers.extend(
                message.headers.iter().map(|(name, value)| {
                    (String::from_utf8_lossy(name).into_owned(), value.clone())
                }),
            );
        } else {
            bounded.headers = true;
            ours.extend(described("headers", &headers_digest(&message.headers)));
            ours.push((
                "triage.original.header_count".into(),
                message.headers.len().to_string().into_bytes(),
            ));
        }
        if let Some(key) = &message.key
            && key.len() > self.max_key_bytes
        {
            bounded.key = true;
            ours.extend(described("key", key));
            record.key = Some(hex(&Sha256::digest(key)).into_bytes());
        }
        headers.extend(ours);
        record.headers = headers;
        if record_bytes(&record) > self.max_record_bytes {
            // Cut to nothing first (its headers describe the original: one digest),
            // then give the payload the room the rest leaves.
            let mut cut = truncate_payload(&record, 0);
            let room = self.max_record_bytes.saturating_sub(record_bytes(&cut));
            let payload = record.payload.unwrap_or_default();
            cut.payload = Some(payload[..room.min(payload.len())].to_vec());
            bounded.payload = true;
            record = cut;
        }
        (record, bounded)
    }
}

/// `record` with its payload cut to `limit` bytes and headers giving the original's
/// size and sha256 (`triage.truncated`, `triage.original.size`,
/// `triage.original.sha256`). A record cut before keeps the headers it has: they
/// describe the original.
pub fn truncate_payload(record: &Record, limit: usize) -> Record {
    let payload = record.payload.as_deref().unwrap_or_default();
    let mut out = record.clone();
    if !record.headers.iter().any(|(k, _)| k == "triage.truncated") {
        out.headers
            .push(("triage.truncated".into(), b"true".to_vec()));
        out.headers.extend(described("", payload));
    }
    out.payload = Some(payload[..limit.min(payload.len())].to_vec());
    out
}

/// `triage.original.{part}_size` and `_sha256` (no part: the payload's
/// `triage.original.size` and `triage.original.sha256`).
fn described(part: &str, bytes: &[u8]) -> [(String, Vec<u8>); 2] {
    let name = |what: &str| match part {
        "" => format!("triage.original.{what}"),
        part => format!("triage.original.{part}_{what}"),
    };
    [
        (name("size"), bytes.len().to_string().into_bytes()),
        (name("sha256"), hex(&Sha256::digest(bytes)).into_bytes()),
    ]
}

/// The headers as one byte string for their digest: each name and value with its
/// length first, so that no two header lists share one.
fn headers_digest(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers_bytes(headers) + 16 * headers.len());
    for (name, value) in headers {
        for part in [name, value] {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// Header names and values, added up.
pub fn headers_bytes<N: AsRef<[u8]>>(headers: &[(N, Vec<u8>)]) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_ref().len() + value.len())
        .sum()
}

/// What a record counts against the producer's limit, generously: key, payload,
/// headers with their framing, and the record's own.
pub fn record_bytes(record: &Record) -> usize {
    record.key.as_ref().map_or(0, Vec::len)
        + record.payload.as_ref().map_or(0, Vec::len)
        + headers_bytes(&record.headers)
        + HEADER_FRAMING * record.headers.len()
        + RECORD_FRAMING
}

/// `detail` cut to [`MAX_DETAIL_BYTES`] at a character boundary.
pub fn bounded_detail(detail: &str) -> &str {
    if detail.len() <= MAX_DETAIL_BYTES {
        return detail;
    }
    let mut end = MAX_DETAIL_BYTES;
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    &detail[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Position, RecordKind};

    fn limits() -> EnvelopeLimits {
        EnvelopeLimits {
            max_key_bytes: 16,
            max_headers: 3,
            max_header_bytes: 64,
            max_record_bytes: 2_000,
        }
    }

    fn message(key: Option<&[u8]>, headers: &[(&[u8], &[u8])], payload: &[u8]) -> Message {
        let mut m = Message::new(
            Position::Log {
                topic: "in".into(),
                partition: 0,
                offset: 7,
            },
            payload.to_vec(),
        );
        m.key = key.map(<[u8]>::to_vec);
        m.headers = headers
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        m
    }

    fn reason(m: &Message) -> Option<&'static str> {
        limits().check(m).err().map(|r| r.reason)
    }

    fn dead(m: &Message) -> Record {
        Record {
            kind: RecordKind::DeadLetter {
                reason: "x",
                detail: String::new(),
                position: m.position.clone(),
            },
            key: m.key.clone(),
            payload: m.payload.clone(),
            headers: Vec::new(),
        }
    }

    fn header<'a>(r: &'a Record, name: &str) -> Option<&'a [u8]> {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn each_envelope_problem_has_its_reason() {
        assert_eq!(reason(&message(Some(b"k"), &[(b"a", b"b")], b"{}")), None);
        assert_eq!(reason(&message(None, &[], b"{}")), None);
        assert_eq!(
            reason(&message(None, &[(b"ok", b""), (b"\xff\xfe", b"v")], b"{}")),
            Some("header_not_utf8")
        );
        let four: Vec<(&[u8], &[u8])> = vec![(b"a", b""); 4];
        assert_eq!(
            reason(&message(None, &four, b"{}")),
            Some("too_many_headers")
        );
        assert_eq!(
            reason(&message(None, &[(b"big", &[0u8; 62])], b"{}")),
            Some("headers_too_large")
        );
        assert_eq!(
            reason(&message(Some(&[7u8; 17]), &[], b"{}")),
            Some("key_too_large")
        );
    }

    #[test]
    fn a_dead_letter_within_the_limits_keeps_key_headers_and_payload() {
        let m = message(Some(b"k"), &[(b"trace", b"abc")], b"payload");
        let ours = vec![("triage.error.reason".to_string(), b"x".to_vec())];
        let (r, bounded) = limits().bound_dead_letter(&m, ours, dead(&m));
        assert_eq!(bounded, Bounded::default());
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(header(&r, "trace"), Some(&b"abc"[..]));
        assert_eq!(header(&r, "triage.error.reason"), Some(&b"x"[..]));
        assert_eq!(r.payload.as_deref(), Some(&b"payload"[..]));
    }

    #[test]
    fn a_hostile_envelope_is_replaced_by_its_size_and_digest_and_the_payload_cut_to_fit() {
        let key = vec![b'k'; 5_000];
        let name = b"\xff\xfename".to_vec();
        let m = message(Some(&key), &[(&name, b"v")], &[b'p'; 10_000]);
        let (r, bounded) = limits().bound_dead_letter(&m, Vec::new(), dead(&m));
        assert_eq!(
            bounded,
            Bounded {
                key: true,
                headers: true,
                payload: true
            }
        );
        assert!(limits().fits(&r), "{} bytes", record_bytes(&r));
        assert_eq!(
            r.key.as_deref(),
            Some(hex(&Sha256::digest(&key)).as_bytes())
        );
        assert_eq!(header(&r, "triage.original.key_size"), Some(&b"5000"[..]));
        assert_eq!(header(&r, "triage.original.header_count"), Some(&b"1"[..]));
        assert_eq!(header(&r, "triage.original.size"), Some(&b"10000"[..]));
        assert_eq!(header(&r, "triage.truncated"), Some(&b"true"[..]));
        assert!(r.headers.iter().all(|(k, _)| k.starts_with("triage.")));
        let kept = r.payload.as_ref().unwrap().len();
        assert!(kept > 1_000 && kept < 2_000, "{kept} bytes kept");
    }

    #[test]
    fn a_cut_describes_the_original_once() {
        let m = message(None, &[], &[b'x'; 5000]);
        let once = truncate_payload(&dead(&m), 100);
        let twice = truncate_payload(&once, 10);
        assert_eq!(twice.payload.as_ref().unwrap().len(), 10);
        let sizes: Vec<_> = twice
            .headers
            .iter()
            .filter(|(k, _)| k == "triage.original.size")
            .collect();
        assert_eq!(
            sizes,
            [&("triage.original.size".to_string(), b"5000".to_vec())]
        );
    }

    #[test]
    fn details_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_DETAIL_BYTES);
        let cut = bounded_detail(&long);
        assert!(cut.len() <= MAX_DETAIL_BYTES && cut.len() >= MAX_DETAIL_BYTES - 1);
        assert_eq!(bounded_detail("short"), "short");
    }
}
