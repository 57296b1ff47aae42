//! Whole-configuration validation: every impossible value or combination is
//! reported at once, each with the key and the fix.

use std::fmt;

use super::{LabelRuleKind, Settings};

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

/// The shortest `retrain.webhook_token` accepted (a token file is held to the same).
pub const MIN_TOKEN_CHARS: usize = 16;

struct Checker(Vec<Problem>);

impl Checker {
    fn check(&mut self, ok: bool, key: &'static str, message: impl FnOnce() -> String, fix: &str) {
        if !ok {
            self.0.push(Problem {
                key,
                message: message(),
                fix: fix.to_string(),
            });
        }
    }
}

impl Settings {
    /// Checks every value and combination; returns all problems, not just the first.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut c = Checker(Vec::new());

        let level = &self.log.level;
        c.check(
            tracing_subscriber::EnvFilter::try_new(level).is_ok(),
            "log.level",
            || format!("{level:?} is not a tracing filter"),
            "use a level such as \"info\" or a filter such as \"triage=debug,info\"",
        );

        let e = &self.embedding;
        c.check(
            !e.model_id.trim().is_empty(),
            "embedding.model_id",
            || "is empty".into(),
            "name the embedding model, e.g. \"sentence-transformers/all-MiniLM-L6-v2\"",
        );
        c.check(
            (1..=512).contains(&e.max_length),
            "embedding.max_length",
            || format!("{} is outside 1..=512", e.max_length),
            "use 256 (what all-MiniLM-L6-v2 was trained on) or 128 for speed",
        );
        c.check(
            (1..=4096).contains(&e.batch_size),
            "embedding.batch_size",
            || format!("{} is outside 1..=4096", e.batch_size),
            "use 32 to 64 on CPU",
        );
        c.check(
            e.batch_tokens >= 1,
            "embedding.batch_tokens",
            || "is 0".into(),
            "use 512",
        );
        c.check(
            e.batch_chars >= 1,
            "embedding.batch_chars",
            || "is 0".into(),
            "use 2048",
        );
        c.check(
            e.threads <= 256,
            "embedding.threads",
            || format!("{} threads is more than any machine here has", e.threads),
            "use 0 for one thread per core",
        );

        let url = self.paths.registry_url.trim();
        let url_problem = if url.is_empty() {
            None
        } else {
            super::registry_url::parse(url).err()
        };
        c.check(
            url_problem.is_none(),
            "paths.registry_url",
            || url_problem.clone().unwrap_or_default(),
            "use s3://BUCKET/PREFIX (endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION), or leave it empty for the folder paths.registry_dir",
        );

        let d = &self.data;
        c.check(
            !d.text_field.trim().is_empty(),
            "data.text_field",
            || "is empty".into(),
            "name the field or column that holds the message text",
        );
        c.check(
            d.csv_delimiter.len() == 1 && d.csv_delimiter.is_ascii(),
            "data.csv_delimiter",
            || format!("{:?} is not one ASCII character", d.csv_delimiter),
            "use \",\", \";\" or \"\\t\"",
        );
        c.check(
            d.max_text_bytes >= 1,
            "data.max_text_bytes",
            || "is 0, which rejects every row".into(),
            "use a limit such as 65536",
        );

        let l = &self.labels;
        c.check(
            !l.field.trim().is_empty(),
            "labels.field",
            || "is empty".into(),
            "name the field that carries the label or the stars",
        );
        match l.rule {
            LabelRuleKind::Stars => self.check_ranges(&mut c),
            LabelRuleKind::Column => {
                let mut seen = std::collections::HashSet::new();
                let dup = l.allowed.iter().find(|a| !seen.insert(a.as_str()));
                c.check(
                    dup.is_none(),
                    "labels.allowed",
                    || format!("label {:?} is listed twice", dup.unwrap_or(&String::new())),
                    "list each label once",
                );
                c.check(
                    l.allowed.is_empty() || l.allowed.len() >= 2,
                    "labels.allowed",
                    || "lists one label; a classifier needs at least two".into(),
                    "list every label, or leave it empty to accept any",
                );
            }
        }

        let t = &self.training;
        c.check(
            t.test_fraction > 0.0 && t.test_fraction <= 0.5,
            "training.test_fraction",
            || format!("{} is outside (0, 0.5]", t.test_fraction),
            "use 0.2 to hold out a fifth of each class",
        );
        let bad_alpha = t.alphas.iter().find(|a| !(a.is_finite() && **a >= 0.0));
        c.check(
            !t.alphas.is_empty() && bad_alpha.is_none(),
            "training.alphas",
            || match bad_alpha {
                Some(a) => format!("{a} is not a non-negative number"),
                None => "is empty".into(),
            },
            "list regularisation strengths such as [0.3, 1.0, 3.0]",
        );
        c.check(
            (2..=20).contains(&t.cv_folds),
            "training.cv_folds",
            || format!("{} is outside 2..=20", t.cv_folds),
            "use 5",
        );
        c.check(
            t.max_iterations >= 1,
            "training.max_iterations",
            || "is 0".into(),
            "use 100 to 1000",
        );
        c.check(
            t.gradient_tolerance > 0.0 && t.gradient_tolerance.is_finite(),
            "training.gradient_tolerance",
            || format!("{} is not positive", t.gradient_tolerance),
            "use 1e-4",
        );
        c.check(
            t.min_rows_per_class >= 2,
            "training.min_rows_per_class",
            || {
                format!(
                    "{} cannot fill both a training and a test split",
                    t.min_rows_per_class
                )
            },
            "use at least 2 (10 or more is wiser)",
        );
        c.check(
            t.max_class_ratio >= 1.0,
            "training.max_class_ratio",
            || {
                format!(
                    "{} is below 1, which no data set can meet",
                    t.max_class_ratio
                )
            },
            "use a ratio such as 50",
        );
        for (key, value) in [
            ("training.min_macro_f1", t.min_macro_f1),
            ("training.min_macro_recall", t.min_macro_recall),
        ] {
            c.check(
                (0.0..=1.0).contains(&value),
                key,
                || format!("{value} is outside [0, 1]"),
                "use a score between 0 and 1, e.g. 0.6",
            );
        }
        c.check(
            (1..=100_000).contains(&t.reference_sample_size),
            "training.reference_sample_size",
            || format!("{} is outside 1..=100000", t.reference_sample_size),
            "use 512",
        );

        // Sections owned by the modules below config check themselves; config
        // dispatches and reports.
        let owned = self
            .features
            .ngrams
            .problems()
            .into_iter()
            .chain(self.drift.problems());
        for (key, message, fix) in owned {
            c.check(false, key, || message, fix);
        }

        self.check_streaming(&mut c);
        self.check_retrain(&mut c);
        self.check_retrain_job(&mut c);
        if c.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { problems: c.0 })
        }
    }

    fn check_retrain_job(&self, c: &mut Checker) {
        let r = &self.retrain;
        c.check(
            r.window_s >= 1,
            "retrain.window_s",
            || "is 0, which takes no records".into(),
            "use the span of recent traffic to learn from, e.g. 86400 (a day)",
        );
        c.check(
            (100..=10_000_000).contains(&r.max_rows),
            "retrain.max_rows",
            || format!("{} rows is outside 100 ..= 10000000", r.max_rows),
            "use 50000 (a stratified sample of that many recent rows is kept)",
        );
        c.check(
            r.held_out_fraction > 0.0 && r.held_out_fraction <= 0.5,
            "retrain.held_out_fraction",
            || format!("{} is outside (0, 0.5]", r.held_out_fraction),
            "use 0.3 to judge both models on a third of each class",
        );
        c.check(
            r.min_recent_rows >= 2,
            "retrain.min_recent_rows",
            || {
                format!(
                    "{} cannot fill both a training part and a held-out slice",
                    r.min_recent_rows
                )
            },
            "use 60 or more",
        );
        c.check(
            r.keep_runs >= 1,
            "retrain.keep_runs",
            || "0 would remove the files of the run that just ended".into(),
            "use 20, or 1 to keep only the last run's files",
        );
        c.check(
            (30..=86_400).contains(&r.lease_s),
            "retrain.lease_s",
            || format!("{} s is outside 30..=86400", r.lease_s),
            "use 600: a job renews it every third, and a dead holder frees it after it",
        );
        c.check(
            r.min_improvement.is_finite() && (0.0..1.0).contains(&r.min_improvement),
            "retrain.min_improvement",
            || {
                format!(
                    "{} is outside [0, 1); macro-F1 differences lie there",
                    r.min_improvement
                )
            },
            "use 0.01 (one point of macro-F1)",
        );
    }

    fn check_streaming(&self, c: &mut Checker) {
        for (key, message, fix) in self.kafka.problems() {
            c.check(false, key, || message, fix);
        }
        let st = &self.stream;
        c.check(
            (1..=10_000).contains(&st.max_messages),
            "stream.max_messages",
            || format!("{} is outside 1..=10000", st.max_messages),
            "use 32 to 256",
        );
        c.check(
            (1..=600_000).contains(&st.max_wait_ms),
            "stream.max_wait_ms",
            || format!("{} is outside 1..=600000", st.max_wait_ms),
            "use a few hundred milliseconds",
        );
        c.check(
            st.max_message_bytes >= 16,
            "stream.max_message_bytes",
            || format!("{} bytes cannot hold a message", st.max_message_bytes),
            "use 65536",
        );
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
        c.check(
            st.max_headers >= 1 && st.max_key_bytes >= 1,
            "stream.max_headers",
            || "stream.max_headers and stream.max_key_bytes must be at least 1".into(),
            "use 64 headers and 4096 key bytes",
        );
        c.check(
            st.worker_outage_timeout_ms >= 1_000,
            "stream.worker_outage_timeout_ms",
            || {
                format!(
                    "{} ms is too short for a worker to restart",
                    st.worker_outage_timeout_ms
                )
            },
            "use 60000",
        );
        c.check(
            st.worker_queue >= 1 && st.max_in_flight_windows >= 1,
            "stream.worker_queue",
            || "stream.worker_queue and stream.max_in_flight_windows must be at least 1".into(),
            "use 2 and 4",
        );
        c.check(
            (1..=64).contains(&st.workers),
            "stream.workers",
            || format!("{} is outside 1..=64", st.workers),
            "use 2 (measured best on 2 cores) or one per 2-4 cores",
        );
        c.check(
            st.max_in_flight_windows >= st.workers,
            "stream.max_in_flight_windows",
            || {
                format!(
                    "{} windows in flight cannot keep {} workers busy",
                    st.max_in_flight_windows, st.workers
                )
            },
            "allow at least stream.workers windows in flight, 2x for overlap",
        );
        c.check(
            st.drain_timeout_ms >= 100,
            "stream.drain_timeout_ms",
            || format!("{} ms is too short to drain anything", st.drain_timeout_ms),
            "use 10000",
        );
        c.check(
            self.http.listen.is_empty() || self.http.listen.parse::<std::net::SocketAddr>().is_ok(),
            "http.listen",
            || format!("{:?} is not an address", self.http.listen),
            "use host:port such as \"127.0.0.1:9464\", or \"\" for no HTTP server",
        );
        c.check(
            self.http.max_request_bytes >= 64 && self.http.max_texts_per_request >= 1,
            "http.max_request_bytes",
            || "http.max_request_bytes must be >= 64 and http.max_texts_per_request >= 1".into(),
            "use 262144 and 256",
        );
        let h = &self.http;
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

    fn check_retrain(&self, c: &mut Checker) {
        let r = &self.retrain;
        c.check(
            r.listen.parse::<std::net::SocketAddr>().is_ok(),
            "retrain.listen",
            || format!("{:?} is not an address", r.listen),
            "use host:port such as \"127.0.0.1:9465\"",
        );
        let token_file_set = !r.webhook_token_file.as_os_str().is_empty();
        c.check(
            r.webhook_token.is_empty() || !token_file_set,
            "retrain.webhook_token",
            || "is set together with retrain.webhook_token_file".into(),
            "set one of them: the file (as Alertmanager's credentials_file) is the safer",
        );
        c.check(
            r.webhook_token.is_empty() || r.webhook_token.expose().trim().len() >= MIN_TOKEN_CHARS,
            "retrain.webhook_token",
            || format!("is shorter than {MIN_TOKEN_CHARS} characters, which can be guessed"),
            "use a random token, e.g. `openssl rand -hex 32`",
        );
        let blank = r.alerts.iter().any(|a| a.trim().is_empty());
        let mut seen = std::collections::HashSet::new();
        let dup = r.alerts.iter().find(|a| !seen.insert(a.as_str()));
        c.check(
            !r.alerts.is_empty() && !blank && dup.is_none(),
            "retrain.alerts",
            || match dup {
                Some(d) => format!("alert {d:?} is listed twice"),
                None if blank => "lists an empty alert name".into(),
                None => "is empty, so no alert would ever start a retrain".into(),
            },
            "list each alert name once, e.g. [\"TriageDriftDetected\", \"TriagePerformanceDrop\"]",
        );
        c.check(
            r.cooldown_s <= 7 * 24 * 3600,
            "retrain.cooldown_s",
            || format!("{} s is more than a week", r.cooldown_s),
            "use 3600 (an hour: the new champion needs traffic before drift means anything)",
        );
        c.check(
            r.max_request_bytes >= 4096,
            "retrain.max_request_bytes",
            || {
                format!(
                    "{} bytes cannot hold an Alertmanager notification",
                    r.max_request_bytes
                )
            },
            "use 1048576",
        );
        c.check(
            r.join_window_s >= 60 && r.join_window_s <= 90 * 24 * 3600,
            "retrain.join_window_s",
            || format!("{} s is outside 60 s .. 90 days", r.join_window_s),
            "use 259200 (three days: labels arrive hours late)",
        );
        c.check(
            r.join_max_predictions >= 1 && r.join_max_pending >= 1,
            "retrain.join_max_predictions",
            || "retrain.join_max_predictions and retrain.join_max_pending must be >= 1".into(),
            "use 500000 and 10000",
        );
        c.check(
            r.join_pending_s <= r.join_window_s,
            "retrain.join_pending_s",
            || {
                format!(
                    "{} s is longer than retrain.join_window_s ({} s)",
                    r.join_pending_s, r.join_window_s
                )
            },
            "use 600 (ten minutes of consumer lag)",
        );
        c.check(
            r.join_max_unknown_classes <= 1024,
            "retrain.join_max_unknown_classes",
            || format!("{} classes is more than 1024", r.join_max_unknown_classes),
            "use 16 (further unknown classes count as one, `other`)",
        );
        c.check(
            (10..=100_000).contains(&r.performance_window),
            "retrain.performance_window",
            || format!("{} pairs is outside 10 ..= 100000", r.performance_window),
            "use 200",
        );
        c.check(
            r.performance_alpha > 0.0 && r.performance_alpha < 0.5,
            "retrain.performance_alpha",
            || format!("{} is outside (0, 0.5)", r.performance_alpha),
            "use 0.01 (one false alarm in a hundred windows, before the alert's `for`)",
        );
        c.check(
            (0.0..1.0).contains(&r.performance_tolerance),
            "retrain.performance_tolerance",
            || format!("{} is outside [0, 1)", r.performance_tolerance),
            "use 0.05",
        );
        c.check(
            (10..=r.performance_window.max(10)).contains(&r.performance_min_labelled),
            "retrain.performance_min_labelled",
            || {
                format!(
                    "{} pairs is outside 10 ..= retrain.performance_window ({})",
                    r.performance_min_labelled, r.performance_window
                )
            },
            "use 50",
        );
        c.check(
            r.new_class_min_share > 0.0 && r.new_class_min_share < 1.0,
            "retrain.new_class_min_share",
            || format!("{} is outside (0, 1)", r.new_class_min_share),
            "use 0.05",
        );
    }

    fn check_ranges(&self, c: &mut Checker) {
        let ranges = &self.labels.ranges;
        let fix =
            "give each label one inclusive range, e.g. { label = \"negative\", min = 1, max = 2 }";
        c.check(
            ranges.len() >= 2,
            "labels.ranges",
            || {
                format!(
                    "has {} range(s); a classifier needs at least two labels",
                    ranges.len()
                )
            },
            fix,
        );
        for r in ranges {
            c.check(
                !r.label.trim().is_empty(),
                "labels.ranges",
                || "a range has an empty label".into(),
                fix,
            );
            c.check(
                r.min.is_finite() && r.max.is_finite() && r.min <= r.max,
                "labels.ranges",
                || format!("range for {:?} has min {} > max {}", r.label, r.min, r.max),
                fix,
            );
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                c.check(
                    a.label != b.label,
                    "labels.ranges",
                    || format!("label {:?} has two ranges", a.label),
                    fix,
                );
                c.check(
                    a.max < b.min || b.max < a.min,
                    "labels.ranges",
                    || format!("ranges for {:?} and {:?} overlap", a.label, b.label),
                    "make the ranges disjoint so every value has one label",
                );
            }
        }
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
