//! The `[review]` section: the promise of the labels triage applies by itself, and
//! the people who label the rest. At training, the confidence threshold that keeps
//! `target_precision` on the out-of-fold predictions is chosen and recorded in the
//! card ([`crate::model::routing`]); a prediction under it goes to a person, through
//! the console's Review page, which only `reviewers` may answer from.

use serde::{Deserialize, Serialize};

use super::Secret;
use super::validate::{Checker, Problem};

/// The shortest `review.session_secret` accepted.
pub const MIN_SESSION_SECRET_CHARS: usize = 32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewSettings {
    /// The share of automatic labels that must be right: the routing threshold is
    /// the lowest calibrated confidence at which the out-of-fold predictions above it
    /// reach it.
    pub target_precision: f64,
    /// The people who may answer the review queue: a name and the Argon2id hash of
    /// the password (`triage reviewer NAME` prints one). None: the page is read-only.
    pub reviewers: Vec<Reviewer>,
    /// The key that signs session cookies and form tokens (32 characters or more).
    /// Give every replica the same one, so that a reviewer signed in on one is
    /// signed in on all; empty: each process makes its own at start.
    pub session_secret: Secret,
    /// How long a sign-in lasts, in seconds.
    pub session_ttl_s: u64,
    /// How far back the queue is rebuilt from kafka.review_topic and the labels
    /// topic at start, in seconds.
    pub queue_window_s: u64,
    /// Messages the queue holds at most; beyond it the oldest are dropped (counted
    /// in triage_review_dropped_total).
    pub max_queue: usize,
    /// Messages the Review page shows at once, most useful first.
    pub page_items: usize,
}

/// One account of `review.reviewers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reviewer {
    /// The name the answers are signed with (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// The password's Argon2id hash, as `triage reviewer NAME` prints it
    /// (`$argon2id$v=19$...`).
    pub password_hash: String,
}

impl Default for ReviewSettings {
    fn default() -> Self {
        Self {
            target_precision: 0.95,
            reviewers: Vec::new(),
            session_secret: Secret::default(),
            session_ttl_s: 8 * 3600,
            queue_window_s: 7 * 24 * 3600,
            max_queue: 10_000,
            page_items: 20,
        }
    }
}

/// Whether `name` may name a reviewer: 1 to 64 of letters, digits, `.`, `_`, `-`.
pub fn valid_reviewer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl ReviewSettings {
    /// Every problem with this section alone, each with the key and the fix.
    pub fn problems(&self) -> Vec<Problem> {
        let mut c = Checker::default();
        c.check(
            self.target_precision >= 0.5 && self.target_precision < 1.0,
            "review.target_precision",
            || format!("{} is outside 0.5 ..< 1", self.target_precision),
            "use 0.95 (19 automatic labels in 20 right); 1 would send every message to review",
        );
        for (i, r) in self.reviewers.iter().enumerate() {
            c.check(
                valid_reviewer_name(&r.name),
                "review.reviewers",
                || format!("reviewer {} has the name {:?}", i + 1, r.name),
                "use 1 to 64 letters, digits, '.', '_' or '-'",
            );
            c.check(
                r.password_hash.starts_with("$argon2id$"),
                "review.reviewers",
                || format!("reviewer {:?} has no Argon2id password hash", r.name),
                "print one with `triage reviewer NAME` (the password on standard input); passwords are never stored as they are",
            );
        }
        let mut names: Vec<&str> = self.reviewers.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        let twice = names.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]);
        c.check(
            twice.is_none(),
            "review.reviewers",
            || format!("the name {:?} is there twice", twice.unwrap_or_default()),
            "give each reviewer one account",
        );
        c.check(
            self.session_secret.is_empty()
                || self.session_secret.expose().len() >= MIN_SESSION_SECRET_CHARS,
            "review.session_secret",
            || {
                format!(
                    "it is {} characters, which can be guessed",
                    self.session_secret.expose().len()
                )
            },
            "use `openssl rand -hex 32` (set it with TRIAGE__REVIEW__SESSION_SECRET)",
        );
        c.check(
            (60..=30 * 24 * 3600).contains(&self.session_ttl_s),
            "review.session_ttl_s",
            || format!("{} is outside 60 ..= 2592000", self.session_ttl_s),
            "use 28800 (a working day)",
        );
        c.check(
            self.queue_window_s >= 60,
            "review.queue_window_s",
            || format!("{} is under 60", self.queue_window_s),
            "use 604800 (a week)",
        );
        c.check(
            (1..=1_000_000).contains(&self.max_queue),
            "review.max_queue",
            || format!("{} is outside 1 ..= 1000000", self.max_queue),
            "use 10000",
        );
        c.check(
            (1..=500).contains(&self.page_items),
            "review.page_items",
            || format!("{} is outside 1 ..= 500", self.page_items),
            "use 20",
        );
        c.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_impossible_targets_are_refused() {
        assert!(ReviewSettings::default().problems().is_empty());
        for bad in [0.4, 1.0, f64::NAN] {
            let s = ReviewSettings {
                target_precision: bad,
                ..ReviewSettings::default()
            };
            assert_eq!(s.problems()[0].key, "review.target_precision", "{bad}");
        }
    }

    #[test]
    fn accounts_need_a_plain_name_a_hash_and_one_entry_each() {
        let ok = Reviewer {
            name: "ana.s".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        };
        let plain = Reviewer {
            password_hash: "hunter2".into(),
            ..ok.clone()
        };
        let spaced = Reviewer {
            name: "ana s".into(),
            ..ok.clone()
        };
        for (reviewers, bad) in [
            (vec![ok.clone()], false),
            (vec![plain], true),
            (vec![spaced], true),
            (vec![ok.clone(), ok.clone()], true),
        ] {
            let s = ReviewSettings {
                reviewers,
                ..ReviewSettings::default()
            };
            let problems = s.problems();
            assert_eq!(!problems.is_empty(), bad, "{problems:?}");
            assert!(problems.iter().all(|p| p.key == "review.reviewers"));
        }
    }

    #[test]
    fn a_short_session_secret_is_refused() {
        let s = ReviewSettings {
            session_secret: Secret::new("short"),
            ..ReviewSettings::default()
        };
        assert_eq!(s.problems()[0].key, "review.session_secret");
    }
}
