//! Message decoding and validation: a Kafka payload becomes a text to classify, or a
//! reason for the dead-letter topic. Pure; the same field rules as the file readers.

use serde_json::Value;

use crate::config::Settings;
use crate::feature::label_rule::LabelRule;
use crate::feature::readers::{LabelValue, ReaderSpec, RowError, jsonl};
use crate::stream::Message;
pub use crate::stream::Rejection;
use crate::stream::envelope::EnvelopeLimits;

/// A valid message.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub id: String,
    pub text: String,
    /// Ground truth, when the message carries a label the rule can map.
    pub label: Option<String>,
}

impl From<RowError> for Rejection {
    fn from(e: RowError) -> Self {
        Self {
            reason: e.kind,
            detail: e.detail,
        }
    }
}

/// Decodes messages with the configured envelope limits, fields, size limit and
/// label rule.
#[derive(Debug, Clone)]
pub struct Decoder {
    spec: ReaderSpec,
    rule: LabelRule,
    max_message_bytes: usize,
    envelope: EnvelopeLimits,
}

impl Decoder {
    pub fn new(settings: &Settings) -> Self {
        let st = &settings.stream;
        Self {
            spec: ReaderSpec::new(&settings.data, Some(&settings.labels.field)),
            rule: LabelRule::new(&settings.labels),
            max_message_bytes: st.max_message_bytes,
            envelope: EnvelopeLimits {
                max_key_bytes: st.max_key_bytes,
                max_headers: st.max_headers,
                max_header_bytes: st.max_header_bytes,
                max_record_bytes: settings.kafka.max_record_bytes(),
            },
        }
    }

    /// The envelope and record limits the outputs are held to.
    pub fn limits(&self) -> &EnvelopeLimits {
        &self.envelope
    }

    /// Decodes one message: what its source could not frame, then its envelope (key
    /// and headers), then its payload.
    pub fn decode_message(&self, m: &Message) -> Result<Decoded, Rejection> {
        if let Some(why) = &m.rejected {
            return Err(why.clone());
        }
        self.envelope.check(m)?;
        self.decode(m.payload.as_deref(), || m.position.fallback_id())
    }

    /// Decodes one payload; `fallback_id` names messages without an id field
    /// (topic/partition/offset, so the id is stable across redelivery).
    pub fn decode(
        &self,
        payload: Option<&[u8]>,
        fallback_id: impl FnOnce() -> String,
    ) -> Result<Decoded, Rejection> {
        let reject = |reason, detail: String| Rejection { reason, detail };
        let Some(bytes) = payload else {
            return Err(reject("no_payload", "message has no payload".into()));
        };
        if bytes.len() > self.max_message_bytes {
            return Err(reject(
                "too_large",
                format!(
                    "payload is {} bytes, over stream.max_message_bytes = {}",
                    bytes.len(),
                    self.max_message_bytes
                ),
            ));
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            if std::str::from_utf8(bytes).is_err() {
                reject("not_utf8", "payload is not valid UTF-8".into())
            } else {
                reject("not_json", format!("payload is not JSON: {e}"))
            }
        })?;
        let Value::Object(object) = value else {
            return Err(reject(
                "not_object",
                "payload is JSON but not an object".into(),
            ));
        };
        let record = jsonl::record_from_object(0, &object, &self.spec, false, fallback_id)?;
        let label = record
            .label
            .as_ref()
            .and_then(|v: &LabelValue| self.rule.apply(v).ok());
        Ok(Decoded {
            id: record.id,
            text: record.text,
            label,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        let mut s = Settings::default();
        s.stream.max_message_bytes = 200;
        Decoder::new(&s)
    }

    fn reason(payload: Option<&[u8]>) -> &'static str {
        decoder()
            .decode(payload, || "t/0/1".into())
            .unwrap_err()
            .reason
    }

    #[test]
    fn yelp_review_is_a_valid_message_with_ground_truth() {
        let d = decoder()
            .decode(
                Some(br#"{"review_id":"r1","text":"Lovely","stars":5.0}"#),
                || "x".into(),
            )
            .unwrap();
        assert_eq!(
            d,
            Decoded {
                id: "r1".into(),
                text: "Lovely".into(),
                label: Some("positive".into())
            }
        );
    }

    #[test]
    fn message_without_id_gets_the_fallback() {
        let d = decoder()
            .decode(Some(br#"{"text":"hi"}"#), || "t/0/1".into())
            .unwrap();
        assert_eq!(d.id, "t/0/1");
        assert_eq!(d.label, None);
    }

    #[test]
    fn every_kind_of_poison_has_its_reason() {
        assert_eq!(reason(None), "no_payload");
        assert_eq!(reason(Some(b"not json")), "not_json");
        assert_eq!(reason(Some(b"\xff\xfe")), "not_utf8");
        assert_eq!(reason(Some(b"[1,2]")), "not_object");
        assert_eq!(reason(Some(br#"{"stars":5}"#)), "missing_text");
        assert_eq!(reason(Some(br#"{"text":"  "}"#)), "empty_text");
        assert_eq!(reason(Some(br#"{"text":7}"#)), "wrong_type");
        let big = format!("{{\"text\":\"{}\"}}", "x".repeat(300));
        assert_eq!(reason(Some(big.as_bytes())), "too_large");
    }

    #[test]
    fn unmappable_label_is_no_ground_truth_not_poison() {
        let d = decoder()
            .decode(Some(br#"{"text":"ok","stars":3.5}"#), || "x".into())
            .unwrap();
        assert_eq!(d.label, None);
    }
}
