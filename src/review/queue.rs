//! The review queue as plain state: review records in, answers (labels from any
//! source) out, bounded, no Kafka and no clock. The queue is the review topic less
//! the labels already given, so a process rebuilds it by reading both topics again
//! (see [`super::follow`]); nothing is stored beside them.
//!
//! Bounds: at most `max_items` waiting messages (the oldest are dropped beyond it,
//! counted), and the ids of at most `max_items` answers remembered, so a review
//! record read after its label (the topics are read side by side) does not come
//! back; an answer older than that is forgotten, which only matters for a review
//! record that is older still.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Deserialize;

/// Bytes of a message's text kept for the page; longer texts are cut there (the
/// pipeline already bounds a message's size, this bounds the queue's memory).
pub const MAX_TEXT_BYTES: usize = 8 * 1024;
/// Bytes of an id, a label or a model version, at most.
const MAX_NAME_BYTES: usize = 256;

/// One class the model thought likely, with its probability.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Likely {
    pub label: String,
    pub probability: f64,
}

/// A message waiting for a person.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: String,
    pub text: String,
    /// Whether `text` was cut at [`MAX_TEXT_BYTES`].
    pub cut: bool,
    /// The model's label and its confidence.
    pub label: String,
    pub confidence: f64,
    /// The three likeliest classes, likeliest first.
    pub top: Vec<Likely>,
    pub model_version: String,
    /// When the message was classified (the record's time), ms since the epoch.
    pub queued_ms: i64,
    /// How much an answer to it is worth: higher first (see [`usefulness`]).
    pub usefulness: f64,
    /// Arrival order, for ties and for dropping the oldest.
    seq: u64,
}

/// What became of one review record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    Queued,
    /// The same message again (a redelivery): its entry is replaced.
    Again,
    /// A label for it was already given.
    AnsweredBefore,
    /// Not a review record; the reason is for the log.
    Invalid(&'static str),
}

impl Offered {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Again => "again",
            Self::AnsweredBefore => "answered_before",
            Self::Invalid(_) => "invalid",
        }
    }
}

/// The queue; see the module documentation.
#[derive(Debug)]
pub struct Queue {
    items: HashMap<String, Item>,
    /// Waiting ids in arrival order (with stale entries for answered ones).
    arrivals: VecDeque<(String, u64)>,
    answered: HashSet<String>,
    answered_order: VecDeque<String>,
    max_items: usize,
    seq: u64,
    /// Messages dropped because the queue was full, since the last take.
    dropped: u64,
    /// When reviewers' answers (labels with source "review", from any replica) were
    /// given, over the last [`ANSWER_HORIZON_MS`], at most `max_items`.
    answer_times: VecDeque<i64>,
}

/// How far back answers are remembered for [`Queue::answers_since`]: an hour.
pub const ANSWER_HORIZON_MS: i64 = 3_600_000;

/// How useful a person's answer to a message is, from the model's three likeliest
/// classes: [`crate::model::routing::review_priority`] (margin sampling: the smaller
/// the margin between the first two, the closer the message sits to a decision
/// boundary and the more its label moves the next model; `triage review-order`
/// measured it against first-come order). Higher is more useful.
pub fn usefulness(top: &[Likely]) -> f64 {
    let p: Vec<f64> = top.iter().map(|l| l.probability).collect();
    crate::model::routing::review_priority(&p)
}

impl Queue {
    pub fn new(max_items: usize) -> Self {
        Self {
            items: HashMap::new(),
            arrivals: VecDeque::new(),
            answered: HashSet::new(),
            answered_order: VecDeque::new(),
            max_items: max_items.max(1),
            seq: 0,
            dropped: 0,
            answer_times: VecDeque::new(),
        }
    }

    /// A reviewer answered at `at_ms` (seen on the labels topic); `now_ms` prunes
    /// what is older than the horizon.
    pub fn note_review_answer(&mut self, at_ms: i64, now_ms: i64) {
        if at_ms >= now_ms - ANSWER_HORIZON_MS {
            let at = self.answer_times.partition_point(|&t| t <= at_ms);
            self.answer_times.insert(at, at_ms);
        }
        while self
            .answer_times
            .front()
            .is_some_and(|&t| t < now_ms - ANSWER_HORIZON_MS)
            || self.answer_times.len() > self.max_items
        {
            self.answer_times.pop_front();
        }
    }

    /// Reviewers' answers given at or after `since_ms` (within the last hour).
    pub fn answers_since(&self, since_ms: i64) -> usize {
        self.answer_times.len() - self.answer_times.partition_point(|&t| t < since_ms)
    }

    /// Takes one review record (`{"id", "text", "label", "confidence", "top": [{"label",
    /// "probability"}], "model_version", "timestamp_ms"}`); `record_ms` is the record's
    /// own time, used when the payload has none.
    pub fn offer(&mut self, payload: &[u8], record_ms: i64) -> Offered {
        #[derive(Deserialize)]
        struct Raw {
            id: String,
            text: String,
            label: String,
            confidence: f64,
            #[serde(default)]
            top: Vec<Likely>,
            #[serde(default)]
            model_version: String,
            timestamp_ms: Option<i64>,
        }
        let Ok(raw) = serde_json::from_slice::<Raw>(payload) else {
            return Offered::Invalid("not a review record (id, text, label, confidence)");
        };
        let names_fit = [&raw.id, &raw.label, &raw.model_version]
            .iter()
            .all(|s| s.len() <= MAX_NAME_BYTES)
            && raw.top.iter().all(|l| l.label.len() <= MAX_NAME_BYTES);
        if raw.id.is_empty() || !names_fit {
            return Offered::Invalid("an empty id, or an id or label over 256 bytes");
        }
        let finite = |p: f64| p.is_finite() && (0.0..=1.0).contains(&p);
        if !finite(raw.confidence) || !raw.top.iter().all(|l| finite(l.probability)) {
            return Offered::Invalid("a probability outside 0 ..= 1");
        }
        if self.answered.contains(&raw.id) {
            return Offered::AnsweredBefore;
        }
        let mut top = raw.top;
        top.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        top.truncate(3);
        let (text, cut) = cut_text(raw.text);
        self.seq += 1;
        let item = Item {
            usefulness: usefulness(&top),
            id: raw.id.clone(),
            text,
            cut,
            label: raw.label,
            confidence: raw.confidence,
            top,
            model_version: raw.model_version,
            queued_ms: raw.timestamp_ms.unwrap_or(record_ms),
            seq: self.seq,
        };
        self.arrivals.push_back((raw.id.clone(), self.seq));
        let again = self.items.insert(raw.id, item).is_some();
        while self.items.len() > self.max_items {
            self.drop_oldest();
        }
        self.compact();
        if again {
            Offered::Again
        } else {
            Offered::Queued
        }
    }

    /// A label was given for `id` (by a reviewer, or by anyone on the labels topic):
    /// it leaves the queue and stays out. Returns whether it was waiting.
    pub fn answer(&mut self, id: &str) -> bool {
        if self.answered.insert(id.to_string()) {
            self.answered_order.push_back(id.to_string());
            while self.answered_order.len() > self.max_items {
                if let Some(old) = self.answered_order.pop_front() {
                    self.answered.remove(&old);
                }
            }
        }
        let was = self.items.remove(id).is_some();
        self.compact();
        was
    }

    pub fn get(&self, id: &str) -> Option<&Item> {
        self.items.get(id)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// When the longest-waiting message was classified, if any waits.
    pub fn oldest_ms(&self) -> Option<i64> {
        self.items.values().map(|i| i.queued_ms).min()
    }

    /// The `n` most useful waiting messages, most useful first (ties: first come).
    pub fn most_useful(&self, n: usize) -> Vec<Item> {
        self.ordered(n, |a, b| {
            b.usefulness
                .total_cmp(&a.usefulness)
                .then(a.seq.cmp(&b.seq))
        })
    }

    /// The `n` first-come waiting messages.
    pub fn first_come(&self, n: usize) -> Vec<Item> {
        self.ordered(n, |a, b| a.seq.cmp(&b.seq))
    }

    fn ordered(&self, n: usize, by: impl Fn(&Item, &Item) -> std::cmp::Ordering) -> Vec<Item> {
        let mut all: Vec<&Item> = self.items.values().collect();
        let n = n.min(all.len());
        if n == 0 {
            return Vec::new();
        }
        all.select_nth_unstable_by(n - 1, |a, b| by(a, b));
        all.truncate(n);
        all.sort_by(|a, b| by(a, b));
        all.into_iter().cloned().collect()
    }

    /// Messages dropped because the queue was full since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    fn drop_oldest(&mut self) {
        while let Some((id, seq)) = self.arrivals.pop_front() {
            if self.items.get(&id).is_some_and(|i| i.seq == seq) {
                self.items.remove(&id);
                self.dropped += 1;
                return;
            }
        }
    }

    /// Forgets stale arrival entries once they outnumber the waiting messages.
    fn compact(&mut self) {
        if self.arrivals.len() > 2 * self.items.len() + 64 {
            let items = &self.items;
            self.arrivals
                .retain(|(id, seq)| items.get(id).is_some_and(|i| i.seq == *seq));
        }
    }
}

/// `text` cut to at most [`MAX_TEXT_BYTES`] on a character boundary; and whether it was.
fn cut_text(mut text: String) -> (String, bool) {
    if text.len() <= MAX_TEXT_BYTES {
        return (text, false);
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

/// What a label record says to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRef {
    /// The message it labels: its `id` field, or the record's key without one.
    pub id: String,
    /// When a reviewer gave it (`source` "review", `answered_at_ms`); None for a
    /// label from elsewhere.
    pub reviewed_ms: Option<i64>,
}

/// Reads a label record; None when it names no message (it answers nothing).
pub fn label_ref(key: Option<&[u8]>, payload: &[u8]) -> Option<LabelRef> {
    #[derive(Deserialize)]
    struct Raw {
        id: Option<serde_json::Value>,
        source: Option<serde_json::Value>,
        answered_at_ms: Option<i64>,
    }
    let raw: Raw = serde_json::from_slice(payload).ok()?;
    let id = match raw.id {
        Some(serde_json::Value::String(id)) => id,
        Some(serde_json::Value::Null) | None => std::str::from_utf8(key?).ok()?.to_string(),
        Some(_) => return None,
    };
    let by_review = raw.source.as_ref().and_then(serde_json::Value::as_str) == Some("review");
    let reviewed_ms = if by_review { raw.answered_at_ms } else { None };
    (!id.is_empty() && id.len() <= MAX_NAME_BYTES).then_some(LabelRef { id, reviewed_ms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(id: &str, p: [f64; 3], at: i64) -> Vec<u8> {
        let labels = ["negative", "neutral", "positive"];
        json!({
            "id": id, "text": format!("text of {id}"), "label": labels[0],
            "confidence": p[0], "model_version": "v2", "timestamp_ms": at,
            "top": labels.iter().zip(p).map(|(l, p)| json!({"label": l, "probability": p})).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn the_closest_call_comes_first_and_first_come_keeps_arrival_order() {
        let mut q = Queue::new(10);
        assert_eq!(
            q.offer(&record("a", [0.6, 0.2, 0.2], 1), 0),
            Offered::Queued
        );
        assert_eq!(
            q.offer(&record("b", [0.45, 0.44, 0.11], 2), 0),
            Offered::Queued
        );
        assert_eq!(
            q.offer(&record("c", [0.5, 0.3, 0.2], 3), 0),
            Offered::Queued
        );
        let ids = |items: Vec<Item>| items.into_iter().map(|i| i.id).collect::<Vec<_>>();
        assert_eq!(ids(q.most_useful(10)), ["b", "c", "a"]);
        assert_eq!(ids(q.most_useful(2)), ["b", "c"]);
        assert_eq!(ids(q.first_come(2)), ["a", "b"]);
        assert_eq!(q.oldest_ms(), Some(1));
    }

    #[test]
    fn an_answer_removes_it_for_good_even_when_the_record_comes_after_the_label() {
        let mut q = Queue::new(10);
        q.offer(&record("a", [0.6, 0.3, 0.1], 1), 0);
        assert!(q.answer("a"));
        assert!(q.is_empty());
        assert_eq!(
            q.offer(&record("a", [0.6, 0.3, 0.1], 1), 0),
            Offered::AnsweredBefore
        );
        assert!(!q.answer("z"));
        assert_eq!(
            q.offer(&record("z", [0.6, 0.3, 0.1], 1), 0),
            Offered::AnsweredBefore
        );
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_redelivered_record_is_one_entry_and_a_full_queue_drops_the_oldest() {
        let mut q = Queue::new(3);
        for (i, id) in ["a", "b", "a", "c", "d"].iter().enumerate() {
            q.offer(&record(id, [0.5, 0.3, 0.2], i as i64), 0);
        }
        // "a" came again after "b": "b" is the oldest when "d" overfills it.
        let mut ids: Vec<String> = q.first_come(10).into_iter().map(|i| i.id).collect();
        ids.sort();
        assert_eq!(ids, ["a", "c", "d"]);
        assert_eq!(q.take_dropped(), 1);
        assert_eq!(q.take_dropped(), 0);
    }

    #[test]
    fn remembered_answers_are_bounded() {
        let mut q = Queue::new(2);
        for id in ["a", "b", "c"] {
            q.answer(id);
        }
        assert_eq!(q.answered.len(), 2);
        assert_eq!(
            q.offer(&record("a", [0.5, 0.3, 0.2], 0), 0),
            Offered::Queued
        );
        assert_eq!(
            q.offer(&record("c", [0.5, 0.3, 0.2], 0), 0),
            Offered::AnsweredBefore
        );
    }

    #[test]
    fn hostile_records_are_refused_and_long_texts_cut_on_a_character() {
        let mut q = Queue::new(10);
        let long_id = "x".repeat(300);
        for bad in [
            b"not json".to_vec(),
            json!({"id": "a"}).to_string().into_bytes(),
            record("", [0.5, 0.3, 0.2], 0),
            record(&long_id, [0.5, 0.3, 0.2], 0),
            json!({"id": "a", "text": "t", "label": "x", "confidence": 7.0})
                .to_string()
                .into_bytes(),
        ] {
            assert!(
                matches!(q.offer(&bad, 0), Offered::Invalid(_)),
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
        let text = "é".repeat(MAX_TEXT_BYTES);
        let payload = json!({"id": "a", "text": text, "label": "x", "confidence": 0.5}).to_string();
        assert_eq!(q.offer(payload.as_bytes(), 9), Offered::Queued);
        let item = q.get("a").unwrap();
        assert!(
            item.cut && item.text.len() <= MAX_TEXT_BYTES && item.text.chars().all(|c| c == 'é')
        );
        assert_eq!(
            item.queued_ms, 9,
            "the record's time without a timestamp_ms"
        );
    }

    #[test]
    fn a_label_names_its_message_by_id_or_by_key_and_says_if_a_reviewer_gave_it() {
        let id = |key: Option<&[u8]>, payload: &[u8]| label_ref(key, payload).map(|l| l.id);
        assert_eq!(
            id(None, br#"{"id":"m1","label":"x"}"#).as_deref(),
            Some("m1")
        );
        assert_eq!(id(Some(b"k9"), br#"{"label":"x"}"#).as_deref(), Some("k9"));
        assert_eq!(id(Some(b"k9"), br#"{"id":7,"label":"x"}"#), None);
        assert_eq!(id(None, br#"{"label":"x"}"#), None);
        assert_eq!(id(Some(b"k"), b"garbage"), None);
        let reviewed = label_ref(
            None,
            br#"{"id":"m","label":"x","source":"review","answered_at_ms":5}"#,
        );
        assert_eq!(reviewed.unwrap().reviewed_ms, Some(5));
        let agent = label_ref(
            None,
            br#"{"id":"m","label":"x","source":"crm","answered_at_ms":5}"#,
        );
        assert_eq!(agent.unwrap().reviewed_ms, None);
    }

    #[test]
    fn answers_are_counted_over_the_last_hour_only() {
        let mut q = Queue::new(3);
        let now = 10 * ANSWER_HORIZON_MS;
        for at in [
            now - ANSWER_HORIZON_MS - 1,
            now - 1000,
            now - 3000,
            now - 2000,
        ] {
            q.note_review_answer(at, now);
        }
        assert_eq!(q.answers_since(now - ANSWER_HORIZON_MS), 3);
        assert_eq!(q.answers_since(now - 2500), 2);
        q.note_review_answer(now, now);
        assert_eq!(q.answers_since(0), 3, "bounded by max_items, oldest out");
        q.note_review_answer(now + ANSWER_HORIZON_MS, now + ANSWER_HORIZON_MS);
        assert_eq!(q.answers_since(0), 2, "an hour later the old ones are gone");
    }
}
