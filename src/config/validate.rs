//! Whole-configuration validation: every impossible value or combination is
//! reported at once, each with the key and the fix.
//!
//! Each section checks itself (`problems()` beside its definition: in this folder
//! for the sections whose owners sit above `config`, in `kafka`, `stream`, `drift`
//! and `model` for theirs). `Settings::validate` collects them in the order of
//! `Settings`' fields, then runs the checks here, which alone read two sections.

use std::fmt;

use super::Settings;

/// One problem with one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: &'static str,
    pub message: String,
    pub fix: String,
}

/// All problems found in a configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ValidationError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} configuration problem(s):", self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  - {}: {}; fix: {}", p.key, p.message, p.fix)?;
        }
        Ok(())
    }
}

/// Collects the problems of one section's checks.
#[derive(Default)]
pub(super) struct Checker(pub(super) Vec<Problem>);

impl Checker {
    pub(super) fn check(
        &mut self,
        ok: bool,
        key: &'static str,
        message: impl FnOnce() -> String,
        fix: &str,
    ) {
        if !ok {
            self.0.push(Problem {
                key,
                message: message(),
                fix: fix.to_string(),
            });
        }
    }
}

/// The problems of a section defined below `config`, which reports them as
/// (key, what is wrong, the fix).
fn owned(found: Vec<(&'static str, String, &'static str)>) -> impl Iterator<Item = Problem> {
    found.into_iter().map(|(key, message, fix)| Problem {
        key,
        message,
        fix: fix.to_string(),
    })
}

impl Settings {
    /// Checks every value and combination; returns all problems, not just the first.
    pub fn validate(&self) -> Result<(), ValidationError> {
        // Section by section, in the order of the fields, then what spans two.
        let mut c = Checker::default();
        c.0.extend(self.log.problems());
        c.0.extend(self.paths.problems());
        c.0.extend(self.embedding.problems());
        c.0.extend(self.data.problems());
        c.0.extend(self.labels.problems());
        c.0.extend(self.training.problems());
        c.0.extend(owned(self.features.ngrams.problems()));
        c.0.extend(owned(self.kafka.problems()));
        c.0.extend(owned(self.stream.problems()));
        c.0.extend(self.http.problems());
        c.0.extend(owned(self.drift.problems()));
        c.0.extend(self.retrain.problems());
        c.0.extend(self.rollout.problems());
        c.0.extend(self.review.problems());
        self.check_across_sections(&mut c);
        if c.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { problems: c.0 })
        }
    }

    /// The checks that read two sections: the stream's envelope against Kafka's
    /// producer limit, HTTP's classify requests against the workers' queue.
    fn check_across_sections(&self, c: &mut Checker) {
        let st = &self.stream;
        // Room for what a valid message's outputs carry beyond its payload, key and
        // headers: the embedding of its feature record, probabilities, positions.
        const OUTPUT_RESERVE: usize = 16 * 1024;
        let record_limit = self.kafka.max_record_bytes();
        let envelope = st
            .max_message_bytes
            .saturating_add(st.max_key_bytes)
            .saturating_add(st.max_header_bytes)
            .saturating_add(OUTPUT_RESERVE);
        c.check(
            envelope <= record_limit,
            "stream.max_message_bytes",
            || {
                format!(
                    "stream.max_message_bytes + max_key_bytes + max_header_bytes + 16 KiB is {envelope} bytes, over the producer's record limit of {record_limit} (kafka.librdkafka_options.\"message.max.bytes\"): a valid message's prediction could not be written"
                )
            },
            "lower stream.max_message_bytes, max_key_bytes or max_header_bytes, or raise message.max.bytes (and the topics' max.message.bytes)",
        );
        let h = &self.http;
        c.check(
            (1..=self.stream.worker_queue).contains(&h.max_classify_in_flight),
            "http.max_classify_in_flight",
            || {
                format!(
                    "{} is not between 1 and stream.worker_queue ({}): HTTP classify requests could fill the workers' queue and stall the Kafka windows",
                    h.max_classify_in_flight, self.stream.worker_queue
                )
            },
            "use 1, or raise stream.worker_queue with it",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LabelRange;

    fn keys(s: &Settings) -> Vec<&'static str> {
        s.validate()
            .err()
            .map(|e| e.problems.iter().map(|p| p.key).collect())
            .unwrap_or_default()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Settings::default().validate(), Ok(()));
    }

    #[test]
    fn a_registry_url_is_checked_at_load_with_the_key_and_the_fix() {
        let mut s = Settings::default();
        s.paths.registry_url = "s3://models/triage".into();
        assert_eq!(s.validate(), Ok(()));
        s.paths.registry_url = "models/triage".into();
        let text = s.validate().unwrap_err().to_string();
        assert!(text.contains("paths.registry_url"), "{text}");
        assert!(text.contains("s3://BUCKET/PREFIX"), "{text}");
        assert!(text.contains("AWS_ENDPOINT_URL"), "{text}");
    }

    #[test]
    fn all_problems_are_reported_together() {
        let mut s = Settings::default();
        s.embedding.max_length = 0;
        s.training.test_fraction = 1.5;
        s.data.csv_delimiter = ";;".into();
        let err = s.validate().unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 3, "{text}");
        assert!(text.contains("embedding.max_length"));
        assert!(text.contains("training.test_fraction"));
        assert!(text.contains("data.csv_delimiter"));
        assert!(text.contains("fix:"));
    }

    #[test]
    fn overlapping_star_ranges_are_rejected() {
        let mut s = Settings::default();
        s.labels.ranges[1] = LabelRange {
            label: "neutral".into(),
            min: 2.0,
            max: 3.0,
        };
        assert_eq!(keys(&s), vec!["labels.ranges"]);
    }

    #[test]
    fn workers_need_windows_in_flight_and_embedding_budgets() {
        let mut s = Settings::default();
        s.stream.workers = 3;
        s.stream.max_in_flight_windows = 2;
        s.embedding.batch_tokens = 0;
        assert_eq!(
            keys(&s),
            vec!["embedding.batch_tokens", "stream.max_in_flight_windows"]
        );
        s.stream.workers = 0;
        s.stream.max_in_flight_windows = 4;
        s.embedding.batch_tokens = 512;
        assert_eq!(keys(&s), vec!["stream.workers"]);
    }

    #[test]
    fn envelope_limits_must_leave_a_valid_messages_outputs_writable() {
        let mut s = Settings::default();
        s.stream.max_key_bytes = 2_000_000;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("stream.max_message_bytes"), "{err}");
        assert!(err.contains("message.max.bytes"), "{err}");
        // A larger producer limit makes room.
        s.kafka
            .librdkafka_options
            .insert("message.max.bytes".into(), "4000000".into());
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn threads_split_between_workers_unless_set() {
        let mut s = Settings::default();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(s.threads_per_embedder(1), cores);
        assert_eq!(s.threads_per_embedder(2), (cores / 2).max(1));
        assert_eq!(s.threads_per_embedder(cores * 4), 1);
        s.embedding.threads = 3;
        assert_eq!(s.threads_per_embedder(2), 3);
    }

    #[test]
    fn output_topic_that_is_also_an_input_is_refused() {
        let mut s = Settings::default();
        s.kafka.dlq_topic = "messages".into();
        assert_eq!(keys(&s), vec!["kafka.dlq_topic"]);
    }

    #[test]
    fn http_classify_may_not_take_the_whole_worker_queue() {
        let mut s = Settings::default();
        s.http.max_classify_in_flight = s.stream.worker_queue + 1;
        assert_eq!(keys(&s), vec!["http.max_classify_in_flight"]);
        s.http.max_classify_in_flight = 0;
        assert_eq!(keys(&s), vec!["http.max_classify_in_flight"]);
        s.http.max_classify_in_flight = s.stream.worker_queue;
        assert!(keys(&s).is_empty());
        s.http.header_read_timeout_ms = 0;
        s.http.max_connections = 0;
        assert_eq!(
            keys(&s),
            vec!["http.header_read_timeout_ms", "http.max_connections"]
        );
    }

    #[test]
    fn bad_http_address_is_refused() {
        let mut s = Settings::default();
        s.http.listen = "localhost".into();
        assert_eq!(keys(&s), vec!["http.listen"]);
    }

    #[test]
    fn retrain_token_twice_or_too_short_is_refused() {
        let mut s = Settings::default();
        s.retrain.webhook_token = crate::config::Secret::new("short");
        assert_eq!(keys(&s), vec!["retrain.webhook_token"]);
        s.retrain.webhook_token = crate::config::Secret::new("0123456789abcdef0123");
        assert_eq!(keys(&s), Vec::<&str>::new());
        s.retrain.webhook_token_file = "/run/secrets/token".into();
        assert_eq!(keys(&s), vec!["retrain.webhook_token"]);
    }

    #[test]
    fn retrain_alerts_must_be_named_once() {
        let mut s = Settings::default();
        s.retrain.alerts = vec!["A".into(), "A".into()];
        let err = s.validate().unwrap_err();
        assert_eq!(err.problems[0].key, "retrain.alerts");
        assert!(err.problems[0].message.contains("twice"), "{err}");
        s.retrain.alerts.clear();
        assert_eq!(keys(&s), vec!["retrain.alerts"]);
        s.retrain.alerts = vec!["A".into()];
        s.retrain.listen = "9465".into();
        s.retrain.max_request_bytes = 100;
        assert_eq!(
            keys(&s),
            vec!["retrain.listen", "retrain.max_request_bytes"]
        );
    }

    #[test]
    fn impossible_retrain_settings_name_their_keys() {
        let mut s = Settings::default();
        s.retrain.window_s = 0;
        s.retrain.held_out_fraction = 0.8;
        s.retrain.min_recent_rows = 1;
        s.retrain.min_improvement = -0.1;
        assert_eq!(
            keys(&s),
            [
                "retrain.window_s",
                "retrain.held_out_fraction",
                "retrain.min_recent_rows",
                "retrain.min_improvement"
            ]
        );
    }

    #[test]
    fn impossible_late_label_tests_name_their_keys() {
        let mut s = Settings::default();
        s.retrain.performance_alpha = 0.0;
        s.retrain.performance_tolerance = 1.5;
        s.retrain.performance_min_labelled = 500;
        s.retrain.new_class_min_share = 1.0;
        assert_eq!(
            keys(&s),
            [
                "retrain.performance_alpha",
                "retrain.performance_tolerance",
                "retrain.performance_min_labelled",
                "retrain.new_class_min_share"
            ]
        );
    }

    #[test]
    fn a_schedule_is_a_duration_of_at_least_ten_seconds_or_nothing() {
        let mut s = Settings::default();
        assert_eq!(s.retrain.every(), Ok(None));
        s.retrain.every = "7d".into();
        assert_eq!(
            s.retrain.every(),
            Ok(Some(std::time::Duration::from_secs(7 * 24 * 3600)))
        );
        assert!(s.validate().is_ok());
        for bad in ["weekly", "7", "5s"] {
            s.retrain.every = bad.into();
            let err = s.validate().unwrap_err();
            assert_eq!(keys(&s), ["retrain.every"], "{bad}");
            assert!(err.to_string().contains("\"7d\""), "{err}");
        }
    }

    #[test]
    fn bad_log_filter_is_rejected() {
        let mut s = Settings::default();
        s.log.level = "triage=loud".into();
        assert_eq!(keys(&s), vec!["log.level"]);
    }

    #[test]
    fn gates_outside_unit_interval_are_rejected() {
        let mut s = Settings::default();
        s.training.min_macro_f1 = 1.2;
        s.training.min_macro_recall = -0.1;
        assert_eq!(
            keys(&s),
            vec!["training.min_macro_f1", "training.min_macro_recall"]
        );
    }
}
