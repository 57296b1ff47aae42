//! The `[retrain]` section: the webhook receiver (`retrainer`), the job it runs
//! (`retrain`) and the late-label join (`late_labels`). Those modules own it; it is
//! defined here because they sit above `config` in the dependency order.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;
use super::validate::{Checker, Problem};

/// The shortest `retrain.webhook_token` accepted (a token file is held to the same).
pub const MIN_TOKEN_CHARS: usize = 16;

/// Retraining: `triage retrainer` (the receiver of Alertmanager's webhook) and the
/// job it runs (`triage retrain`): which recent data it takes, how it judges the
/// challenger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrainSettings {
    /// Address of the receiver: POST /v1/alerts, GET /metrics, GET /healthz.
    pub listen: String,
    /// The bearer token Alertmanager sends. Prefer `webhook_token_file`, or the
    /// variable `TRIAGE__RETRAIN__WEBHOOK_TOKEN`: a token in a config file is easy to leak.
    pub webhook_token: Secret,
    /// A file holding the token (surrounding whitespace is ignored), the same file
    /// Alertmanager's `http_config.authorization.credentials_file` reads.
    pub webhook_token_file: PathBuf,
    /// Alert names that start a retrain; any other alert is answered and ignored.
    pub alerts: Vec<String>,
    /// Seconds after a job before the next may start; alerts meanwhile are coalesced
    /// into one follow-up job.
    pub cooldown_s: u64,
    /// Larger webhook bodies get 413.
    pub max_request_bytes: usize,
    /// Feature records from this many seconds before the job started are taken.
    pub window_s: u64,
    /// Labelled recent rows a job keeps, at most: past it the job keeps a sample,
    /// stratified by label (seeded with `training.seed`), so its memory does not
    /// grow with traffic; the rows sampled away are counted in the decision.
    pub max_rows: usize,
    /// Share of each class of the recent labelled rows held out to score champion
    /// and challenger on (stratified, seeded with `training.seed`).
    pub held_out_fraction: f64,
    /// Fewer recent labelled rows than this: the job fails without training.
    pub min_recent_rows: usize,
    /// Work folders of past runs kept (`<registry_dir>/retrain/<id>/`, the data each
    /// challenger was trained and judged on); older ones are removed after a job,
    /// except those holding the champion's or the previous champion's training data.
    pub keep_runs: usize,
    /// With a bucket registry, a job holds a lease in the bucket (one job at a time
    /// across machines): renewed every third of this while the job runs, and free
    /// this long after a holder died.
    pub lease_s: u64,
    /// The original training data added to the recent rows: a labelled file (read
    /// with [data] and [labels]), empty for the champion card's data file if it still
    /// exists, or `none` for the recent rows only.
    pub training_data: PathBuf,
    /// The challenger's held-out macro-F1 must beat the champion's by at least this.
    pub min_improvement: f64,
    /// How far back the label join reaches: on start it re-reads the predictions and
    /// labels topics from this many seconds ago, and a label for an older prediction
    /// counts as `unknown_id`.
    pub join_window_s: u64,
    /// Predictions held for the join, at most (the oldest are forgotten first).
    pub join_max_predictions: usize,
    /// Seconds a label waits for its prediction (the consumers may lag behind the
    /// agents); after that it counts as `unknown_id`.
    pub join_pending_s: u64,
    /// Labels waiting for their prediction, at most (the oldest give up first).
    pub join_max_pending: usize,
    /// Late-label classes outside a model version's label set held per version, at
    /// most; further ones count as one class, `other`, until pairs leave the window.
    pub join_max_unknown_classes: usize,
    /// Joined (prediction, label) pairs per model version behind the rolling
    /// accuracy and macro-F1.
    pub performance_window: usize,
    /// Significance level of the late-label tests behind `TriagePerformanceDrop`
    /// (below the card's promise; a class never learned taking a share).
    pub performance_alpha: f64,
    /// A drop in macro-F1 or in a class's recall smaller than this never counts as
    /// below the card, however many labels stand behind it.
    pub performance_tolerance: f64,
    /// Joined pairs a version's window needs before it is tested at all.
    pub performance_min_labelled: usize,
    /// The share of late labels naming classes outside a version's label set (its
    /// lower confidence bound) from which the version is said to meet a new class.
    pub new_class_min_share: f64,
    /// A retrain at least this often whatever the alerts say (`7d`, `12h`; humantime),
    /// counted from the registry's last decision or champion change; empty: only
    /// alerts (and `triage retrain`) start jobs.
    pub every: String,
    /// What a job does with a challenger that beat the champion on the held-out
    /// slice: `direct` promotes it; `shadow` puts it under the `challenger` alias,
    /// where every consumer scores it on live traffic beside the champion and the
    /// live race (`[rollout]`) promotes or rejects it.
    pub rollout: Rollout,
}

/// `retrain.rollout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Rollout {
    Direct,
    #[default]
    Shadow,
}

impl Default for RetrainSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9465".into(),
            webhook_token: Secret::default(),
            webhook_token_file: PathBuf::new(),
            alerts: vec!["TriageDriftDetected".into(), "TriagePerformanceDrop".into()],
            cooldown_s: 3600,
            max_request_bytes: 1024 * 1024,
            window_s: 24 * 3600,
            max_rows: 50_000,
            held_out_fraction: 0.3,
            min_recent_rows: 60,
            keep_runs: 20,
            lease_s: 600,
            training_data: PathBuf::new(),
            min_improvement: 0.01,
            join_window_s: 3 * 24 * 3600,
            join_max_predictions: 500_000,
            join_pending_s: 600,
            join_max_pending: 10_000,
            join_max_unknown_classes: 16,
            performance_window: 200,
            performance_alpha: 0.01,
            performance_tolerance: 0.05,
            performance_min_labelled: 50,
            new_class_min_share: 0.05,
            every: String::new(),
            rollout: Rollout::Shadow,
        }
    }
}

/// The shortest `retrain.every` accepted. A schedule is for days and weeks (alerts
/// answer faster); seconds are for trying it out.
pub const MIN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl RetrainSettings {
    /// Every problem with this section alone, each with the key and the fix: the
    /// receiver and the join first, then the job.
    pub fn problems(&self) -> Vec<Problem> {
        let mut c = Checker::default();
        self.check_retrain(&mut c);
        self.check_retrain_job(&mut c);
        let every = self.every();
        c.check(
            every
                .as_ref()
                .is_ok_and(|d| d.is_none_or(|d| d >= MIN_EVERY)),
            "retrain.every",
            || match &every {
                Err(e) => format!("{:?} is not a duration: {e}", self.every),
                Ok(_) => format!("{:?} is shorter than 10 s", self.every),
            },
            "use a duration such as \"7d\" or \"12h\", or \"\" for alerts only",
        );
        c.0
    }

    /// `retrain.every` parsed: None when empty (no schedule).
    pub fn every(&self) -> Result<Option<std::time::Duration>, humantime::DurationError> {
        let text = self.every.trim();
        if text.is_empty() {
            return Ok(None);
        }
        humantime::parse_duration(text).map(Some)
    }

    /// The receiver's keys and the late-label join's.
    fn check_retrain(&self, c: &mut Checker) {
        let r = self;
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

    /// The retraining job's keys.
    fn check_retrain_job(&self, c: &mut Checker) {
        let r = self;
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
}
