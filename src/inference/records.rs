//! Record encoding: what a window writes for each message. Pure functions over
//! plain data; the sinks decide where each kind goes.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::Labelled;
use super::decode::{Decoded, Rejection};
use crate::stream::envelope::{Bounded, EnvelopeLimits, bounded_detail};
use crate::stream::{Message, Record, RecordKind};

/// Per-window stage times, copied into every prediction.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub decode: Duration,
    pub embed: Duration,
    pub classify: Duration,
    pub in_service: Duration,
    /// The message's own clock, when its read time is known.
    pub read: Option<MessageClock>,
}

/// One message's time in the service: in its open window, and from its read to its
/// window's predictions ready; and both ends as wall-clock time (µs since the
/// epoch), so that a reader on the same machine can place them between its own
/// produce and read-back (`triage bench`'s latency breakdown).
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageClock {
    pub window: Duration,
    pub since_read: Duration,
    pub read_at_us: i64,
    pub ready_at_us: i64,
}

/// The prediction for one message: keyed like the input (or by id).
pub fn prediction(
    message: &Message,
    decoded: &Decoded,
    labelled: &Labelled,
    window_id: u64,
    timings: &Timings,
) -> Record {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut value = json!({
        "id": decoded.id,
        "label": labelled.label,
        "confidence": labelled.confidence,
        "probabilities": labelled.probabilities,
        // The model's own confidence (the rollout guard's scale); `confidence` is
        // calibrated when the model's card serves a calibration.
        "raw_confidence": labelled.raw_confidence,
        "model_version": labelled.model_version,
        "route": labelled.route,
        "window_id": window_id,
        "ground_truth": decoded.label,
        "source": message.position.to_json(),
        "timings_ms": {
            "decode": ms(timings.decode),
            "embed": ms(timings.embed),
            "classify": ms(timings.classify),
            "in_service": ms(timings.in_service),
        },
    });
    if let Some(clock) = &timings.read {
        let t = &mut value["timings_ms"];
        t["window"] = json!(ms(clock.window));
        t["since_read"] = json!(ms(clock.since_read));
        t["read_at_us"] = json!(clock.read_at_us);
        t["ready_at_us"] = json!(clock.ready_at_us);
    }
    // Absent, not null, without a challenger: the label join tells them apart.
    if let Some(shadow) = &labelled.shadow {
        value["shadow"] = json!(shadow);
    }
    Record {
        kind: RecordKind::Prediction,
        key: Some(key_of(message, decoded)),
        payload: Some(value.to_string().into_bytes()),
        headers: Vec::new(),
    }
}

/// The review record of a message whose label goes to a person: its text, the
/// model's label and confidence, its three likeliest classes, and where it came
/// from; keyed like its prediction.
pub fn review(message: &Message, decoded: &Decoded, labelled: &Labelled, window_id: u64) -> Record {
    let mut top: Vec<(&String, &f64)> = labelled.probabilities.iter().collect();
    top.sort_by(|a, b| b.1.total_cmp(a.1).then_with(|| a.0.cmp(b.0)));
    top.truncate(3);
    let value = json!({
        "id": decoded.id,
        "text": decoded.text,
        "label": labelled.label,
        "confidence": labelled.confidence,
        "top": top.iter().map(|(l, p)| json!({"label": l, "probability": p})).collect::<Vec<_>>(),
        "model_version": labelled.model_version,
        "window_id": window_id,
        "timestamp_ms": message.timestamp_ms,
        "source": message.position.to_json(),
    });
    Record {
        kind: RecordKind::Review,
        key: Some(key_of(message, decoded)),
        payload: Some(value.to_string().into_bytes()),
        headers: Vec::new(),
    }
}

/// The feature record for one message (id, time, text, embedding, label when
/// known), for the training pipeline.
pub fn feature(
    message: &Message,
    decoded: &Decoded,
    embedding: &[f32],
    model_version: &str,
) -> Record {
    let value = json!({
        "id": decoded.id,
        "timestamp_ms": message.timestamp_ms,
        // The text too: a challenger's word n-gram model is fitted on it.
        "text": decoded.text,
        "embedding": embedding,
        "label": decoded.label,
        "model_version": model_version,
        "source": message.position.to_json(),
    });
    Record {
        kind: RecordKind::Feature,
        key: Some(key_of(message, decoded)),
        payload: Some(value.to_string().into_bytes()),
        headers: Vec::new(),
    }
}

fn key_of(message: &Message, decoded: &Decoded) -> Vec<u8> {
    message
        .key
        .clone()
        .unwrap_or_else(|| decoded.id.as_bytes().to_vec())
}

/// The message as it came, with headers saying why and where it came from, bounded
/// to what the producer takes ([`EnvelopeLimits::bound_dead_letter`]: a key or
/// headers past the limits become their size and sha256, a payload too large is cut).
pub fn dead_letter(
    message: &Message,
    why: &Rejection,
    failed_at: SystemTime,
    limits: &EnvelopeLimits,
) -> (Record, Bounded) {
    let failed_at = humantime::format_rfc3339_millis(failed_at).to_string();
    let mut ours = vec![
        ("triage.error.reason", why.reason.to_string()),
        (
            "triage.error.detail",
            bounded_detail(&why.detail).to_string(),
        ),
    ];
    ours.extend(message.position.headers());
    ours.push(("triage.failed_at", failed_at));
    let ours = ours
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_bytes()))
        .collect();
    let record = Record {
        kind: RecordKind::DeadLetter {
            reason: why.reason,
            detail: why.detail.clone(),
            position: message.position.clone(),
        },
        key: message.key.clone(),
        payload: message.payload.clone(),
        headers: Vec::new(),
    };
    limits.bound_dead_letter(message, ours, record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Position;

    fn message() -> Message {
        let mut m = Message::new(
            Position::Log {
                topic: "in".into(),
                partition: 1,
                offset: 42,
            },
            b"{\"text\":\"hi\"}".to_vec(),
        );
        m.headers.push((b"trace".to_vec(), b"abc".to_vec()));
        m
    }

    fn header<'a>(r: &'a Record, key: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn a_dead_letter_keeps_the_message_and_says_why_and_where() {
        let why = Rejection {
            reason: "not_json",
            detail: "payload is not JSON".into(),
        };
        let limits = EnvelopeLimits {
            max_key_bytes: 64,
            max_headers: 8,
            max_header_bytes: 1024,
            max_record_bytes: 1_000_000,
        };
        let (r, bounded) = dead_letter(&message(), &why, SystemTime::UNIX_EPOCH, &limits);
        assert_eq!(bounded, Bounded::default());
        assert_eq!(r.payload.as_deref(), Some(&b"{\"text\":\"hi\"}"[..]));
        assert_eq!(
            header(&r, "trace"),
            Some("abc"),
            "the message's own headers stay"
        );
        assert_eq!(header(&r, "triage.error.reason"), Some("not_json"));
        assert_eq!(header(&r, "triage.source.partition"), Some("1"));
        assert_eq!(header(&r, "triage.source.offset"), Some("42"));
        assert_eq!(
            header(&r, "triage.failed_at"),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert!(matches!(
            r.kind,
            RecordKind::DeadLetter {
                reason: "not_json",
                ..
            }
        ));
    }

    #[test]
    fn a_prediction_without_a_message_key_is_keyed_by_id() {
        let decoded = Decoded {
            id: "r1".into(),
            text: "hi".into(),
            label: Some("positive".into()),
        };
        let labelled = Labelled {
            label: "positive".into(),
            confidence: 0.9,
            probabilities: [("positive".to_string(), 0.9)].into_iter().collect(),
            raw_confidence: 0.9,
            model_version: "v3".into(),
            shadow: None,
            route: crate::inference::Route::Auto,
        };
        let r = prediction(&message(), &decoded, &labelled, 7, &Timings::default());
        assert_eq!(r.key.as_deref(), Some(&b"r1"[..]));
        let v: serde_json::Value = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
        assert_eq!(v["model_version"], "v3");
        assert_eq!(v["window_id"], 7);
        assert_eq!(v["ground_truth"], "positive");
        assert_eq!(v["source"]["offset"], 42);
    }

    #[test]
    fn a_prediction_carries_the_shadow_only_when_there_is_one_and_keeps_the_champions_label() {
        let decoded = Decoded {
            id: "r1".into(),
            text: "hi".into(),
            label: None,
        };
        let probabilities = |p: [f64; 3]| {
            ["negative", "neutral", "positive"]
                .iter()
                .map(|l| l.to_string())
                .zip(p)
                .collect()
        };
        let mut labelled = Labelled {
            label: "positive".into(),
            confidence: 0.8,
            probabilities: probabilities([0.1, 0.1, 0.8]),
            raw_confidence: 0.6,
            model_version: "v1".into(),
            shadow: None,
            route: crate::inference::Route::Auto,
        };
        let record = |l: &Labelled| -> serde_json::Value {
            let r = prediction(&message(), &decoded, l, 7, &Timings::default());
            serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap()
        };
        let without = record(&labelled);
        assert!(without.get("shadow").is_none(), "{without}");

        labelled.shadow = Some(super::super::ShadowLabel {
            model_version: "v3".into(),
            label: "neutral".into(),
            confidence: 0.71,
            raw_confidence: 0.55,
            probabilities: probabilities([0.1, 0.71, 0.19]),
        });
        let with = record(&labelled);
        assert_eq!(
            with["shadow"],
            serde_json::json!({
                "model_version": "v3",
                "label": "neutral",
                "confidence": 0.71,
                "raw_confidence": 0.55,
                "probabilities": {"negative": 0.1, "neutral": 0.71, "positive": 0.19},
            })
        );
        // The published prediction is the champion's, field for field.
        // Served and raw confidences both travel: the guard reads the raw ones.
        assert_eq!(
            (with["confidence"].as_f64(), with["raw_confidence"].as_f64()),
            (Some(0.8), Some(0.6))
        );
        for field in [
            "label",
            "confidence",
            "raw_confidence",
            "probabilities",
            "model_version",
        ] {
            assert_eq!(with[field], without[field], "{field}");
        }
        assert_eq!(
            (with["label"].as_str(), with["model_version"].as_str()),
            (Some("positive"), Some("v1"))
        );
    }

    #[test]
    fn a_review_record_carries_the_text_and_the_three_likeliest_classes() {
        let decoded = Decoded {
            id: "r1".into(),
            text: "my card was charged twice".into(),
            label: None,
        };
        let labelled = Labelled {
            label: "billing".into(),
            confidence: 0.41,
            probabilities: [
                ("billing", 0.41),
                ("refund", 0.39),
                ("account", 0.15),
                ("other", 0.05),
            ]
            .into_iter()
            .map(|(l, p)| (l.to_string(), p))
            .collect(),
            raw_confidence: 0.41,
            model_version: "v3".into(),
            shadow: None,
            route: crate::inference::Route::Review,
        };
        let p = prediction(&message(), &decoded, &labelled, 7, &Timings::default());
        let p: serde_json::Value = serde_json::from_slice(p.payload.as_deref().unwrap()).unwrap();
        assert_eq!(p["route"], "review");
        let r = review(&message(), &decoded, &labelled, 7);
        assert_eq!(r.kind, RecordKind::Review);
        assert_eq!(r.key.as_deref(), Some(&b"r1"[..]));
        let v: serde_json::Value = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
        assert_eq!(v["text"], "my card was charged twice");
        let top: Vec<&str> = v["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["label"].as_str().unwrap())
            .collect();
        assert_eq!(top, ["billing", "refund", "account"]);
        assert_eq!(v["source"]["offset"], 42);
        // Routed by the card's threshold; none: everything is automatic.
        use crate::inference::Route;
        assert_eq!(Route::of(0.41, Some(0.75)), Route::Review);
        assert_eq!(Route::of(0.75, Some(0.75)), Route::Auto);
        assert_eq!(Route::of(0.1, None), Route::Auto);
    }
}
