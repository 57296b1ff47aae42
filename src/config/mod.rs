//! Configuration: typed settings with defaults in code, layered as
//! defaults -> `--config FILE` -> `TRIAGE__SECTION__KEY` environment variables,
//! and validated as a whole at start-up.
//!
//! `config/default.toml` documents every key; a test checks that it matches the
//! defaults here, so the documentation cannot drift from the code.

mod load;
pub mod registry_url;
mod validate;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use load::{ConfigError, load, load_with_env};
pub use validate::{MIN_TOKEN_CHARS, Problem, ValidationError};

/// Every setting triage reads. Sections mirror `config/default.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub log: LogSettings,
    pub paths: PathSettings,
    pub embedding: EmbeddingSettings,
    pub data: DataSettings,
    pub labels: LabelSettings,
    pub training: TrainingSettings,
    pub features: FeatureSettings,
    pub kafka: crate::kafka::KafkaSettings,
    pub stream: StreamSettings,
    pub http: HttpSettings,
    pub drift: crate::drift::DriftSettings,
    pub retrain: RetrainSettings,
}

/// How triage logs (always to stderr).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` (human-readable) or `json` (one object per line, for log shippers).
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `triage=debug,info`. `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Where triage keeps its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathSettings {
    /// Cache for the runtime, the model files and the feature cache.
    /// `~` is the home directory. `TRIAGE_CACHE_DIR` (the variable scripts/setup.sh
    /// reads) overrides the default when this key is not set explicitly.
    pub cache_dir: PathBuf,
    /// The model registry: a directory of immutable model versions and aliases.
    /// With `registry_url` set, it only keeps local work files (retraining data).
    pub registry_dir: PathBuf,
    /// The model registry on object storage, e.g. `s3://bucket/prefix`; wins over
    /// `registry_dir` when set. Credentials and endpoint: the `AWS_*` variables.
    pub registry_url: String,
    /// Cached training embeddings. Empty: `<cache_dir>/features`.
    pub feature_cache_dir: PathBuf,
}

impl Default for PathSettings {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::from("~/.cache/triage"),
            registry_dir: PathBuf::from(".triage/registry"),
            registry_url: String::new(),
            feature_cache_dir: PathBuf::new(),
        }
    }
}

/// The sentence-embedding model and how it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingSettings {
    /// Identifier recorded in model cards; a model trained with another id is refused.
    pub model_id: String,
    /// Folder holding `model.onnx`, `tokenizer.json`, `config.json`,
    /// `special_tokens_map.json` and `tokenizer_config.json`.
    /// Empty: `<cache_dir>/models/all-MiniLM-L6-v2-int8` (int8 weights, per channel;
    /// the fp32 graph is in `<cache_dir>/models/all-MiniLM-L6-v2`).
    pub model_dir: PathBuf,
    /// ONNX Runtime shared library. Empty: `<cache_dir>/onnxruntime/1.31.1/libonnxruntime.so.1.31.1`.
    pub onnx_runtime_path: PathBuf,
    /// Tokens per text for models trained with these settings; longer texts are
    /// truncated. Serving embeds at the length in the model's card, whatever this is.
    pub max_length: usize,
    /// Which tokens of a longer text are kept, for models trained with these settings
    /// (serving takes the model card's).
    pub truncation: Truncation,
    /// ONNX Runtime intra-op threads per embedder. 0: one per available core, or in
    /// `triage run` the cores split between `stream.workers`.
    pub threads: usize,
    /// Texts per ONNX Runtime call, at most (1: each text alone, its vector
    /// independent of its neighbours). Texts are grouped by length first.
    pub batch_size: usize,
    /// How texts are grouped into ONNX Runtime calls: `tokens` (by token count after
    /// truncation, which is what the model computes on) or `chars` (by byte length,
    /// which needs no tokenising before the batch plan).
    pub batching: BatchingKind,
    /// Padded size budget per call when `batching = "tokens"`: texts x longest text,
    /// in tokens. Long texts go in small batches, short ones in large batches.
    pub batch_tokens: usize,
    /// Padded size budget per call when `batching = "chars"`: texts x longest text, in bytes.
    pub batch_chars: usize,
    /// Let ONNX Runtime's intra-op threads spin while waiting for work (lower latency
    /// per operator, but a spinning thread takes a core from the Kafka and drift threads).
    pub spin: bool,
    /// Pooling of token vectors into one sentence vector: `mean` (right for this model) or `cls`.
    pub pooling: PoolingKind,
}

impl Default for EmbeddingSettings {
    fn default() -> Self {
        Self {
            model_id: "sentence-transformers/all-MiniLM-L6-v2".into(),
            model_dir: PathBuf::new(),
            onnx_runtime_path: PathBuf::new(),
            max_length: 256,
            truncation: Truncation::Head,
            threads: 0,
            batch_size: 1,
            batching: BatchingKind::Tokens,
            batch_tokens: 512,
            batch_chars: 2048,
            spin: true,
            pooling: PoolingKind::Mean,
        }
    }
}

impl EmbeddingSettings {
    /// The padded size budget per ONNX Runtime call, in the unit `batching` groups by.
    pub fn batch_budget(&self) -> usize {
        match self.batching {
            BatchingKind::Tokens => self.batch_tokens,
            BatchingKind::Chars => self.batch_chars,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchingKind {
    Tokens,
    Chars,
}

/// Which tokens a text longer than `embedding.max_length` keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// The first tokens.
    #[default]
    Head,
    /// The first quarter and the last three quarters, cut from the middle: a review
    /// often gives its verdict at the end (at 128 tokens, half the macro-F1 that
    /// `head` loses against 256 on Yelp reviews, docs/performance.md).
    HeadTail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolingKind {
    Mean,
    Cls,
}

/// How labelled files are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSettings {
    /// `auto` (by extension: .csv is CSV, anything else JSON lines), `yelp`, `jsonl` or `csv`.
    pub format: DataFormat,
    /// Field (JSON) or column (CSV) holding the message text.
    pub text_field: String,
    /// Field or column holding the message id. Missing ids become `line-<N>`.
    pub id_field: String,
    /// CSV only: the field delimiter, one ASCII character.
    pub csv_delimiter: String,
    /// Rows longer than this many bytes are rejected as malformed.
    pub max_text_bytes: usize,
}

impl Default for DataSettings {
    fn default() -> Self {
        Self {
            format: DataFormat::Auto,
            text_field: "text".into(),
            id_field: "review_id".into(),
            csv_delimiter: ",".into(),
            max_text_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Auto,
    Yelp,
    Jsonl,
    Csv,
}

/// How a row's ground-truth label is found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelSettings {
    /// `stars`: map the numeric `field` through `ranges`. `column`: the field's value is the label.
    pub rule: LabelRuleKind,
    /// Field or column that carries the stars or the label.
    pub field: String,
    /// For `rule = "stars"`: inclusive value ranges, one per label; they must not overlap.
    pub ranges: Vec<LabelRange>,
    /// For `rule = "column"`: the accepted labels. Empty accepts any value.
    pub allowed: Vec<String>,
}

impl Default for LabelSettings {
    fn default() -> Self {
        let range = |label: &str, min: f64, max: f64| LabelRange {
            label: label.into(),
            min,
            max,
        };
        Self {
            rule: LabelRuleKind::Stars,
            field: "stars".into(),
            ranges: vec![
                range("negative", 1.0, 2.0),
                range("neutral", 3.0, 3.0),
                range("positive", 4.0, 5.0),
            ],
            allowed: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelRuleKind {
    Stars,
    Column,
}

/// One inclusive range of a numeric field mapped to a label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelRange {
    pub label: String,
    pub min: f64,
    pub max: f64,
}

/// The training pipeline: data checks, split, classifier, gates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSettings {
    /// Share of rows held out for evaluation, per class (stratified).
    pub test_fraction: f64,
    /// Seed for the split and the reference sample: same seed, same split.
    pub seed: u64,
    /// L2 regularisation strengths to choose from by cross-validation (like 1/C in
    /// scikit-learn); one value skips the search. Extended past an edge that scores
    /// best (`training::cv::select_alpha`).
    pub alphas: Vec<f64>,
    /// Stratified folds of the cross-validation on the training split.
    pub cv_folds: usize,
    /// How unequal class sizes are handled.
    pub class_balance: ClassBalance,
    /// How probabilities become a label.
    pub decision: crate::model::decision::DecisionRule,
    /// L-BFGS iterations at most.
    pub max_iterations: u64,
    /// L-BFGS stops when every gradient component of the mean loss is below this.
    pub gradient_tolerance: f64,
    /// Data gate: every class needs at least this many rows.
    pub min_rows_per_class: usize,
    /// Data gate: largest class / smallest class may not exceed this.
    pub max_class_ratio: f64,
    /// Model gate: held-out macro-F1 at least this, or the model is not promoted.
    pub min_macro_f1: f64,
    /// Model gate: held-out macro-recall at least this, or the model is not promoted.
    pub min_macro_recall: f64,
    /// Held-out embeddings kept in the model's drift reference.
    pub reference_sample_size: usize,
    /// Cache embeddings of training files (keyed by file, reader settings, model, max length).
    pub feature_cache: bool,
}

impl Default for TrainingSettings {
    fn default() -> Self {
        Self {
            test_fraction: 0.2,
            seed: 42,
            alphas: vec![0.3, 1.0, 3.0],
            cv_folds: 5,
            class_balance: ClassBalance::None,
            decision: crate::model::decision::DecisionRule::MacroF1,
            max_iterations: 300,
            gradient_tolerance: 1e-4,
            min_rows_per_class: 10,
            max_class_ratio: 50.0,
            min_macro_f1: 0.55,
            min_macro_recall: 0.55,
            reference_sample_size: 512,
            feature_cache: true,
        }
    }
}

/// Class imbalance handling. linfa-logistic has no sample weights, so balancing
/// repeats rows: the effect of scikit-learn's `class_weight="balanced"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassBalance {
    /// Fit on the rows as they are: big classes dominate.
    None,
    /// Repeat rows of smaller classes (whole copies, then a seeded sample) until
    /// every class has as many rows as the largest.
    Oversample,
}

/// Features beside the sentence embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureSettings {
    pub ngrams: crate::model::NgramSettings,
}

/// Micro-batching of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// A window closes at this many messages...
    pub max_messages: usize,
    /// ...or this long after its first message, whichever comes first.
    pub max_wait_ms: u64,
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
        }
    }
}

/// A secret string from configuration. `Debug` and `Serialize` (so `triage config`
/// and any log of the settings) show `***` instead of the value; empty means unset.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// The embedding model folder under the cache when `embedding.model_dir` is empty.
pub const DEFAULT_MODEL_DIR: &str = "models/all-MiniLM-L6-v2-int8";

impl Settings {
    /// The cache directory with `~` expanded.
    pub fn cache_dir(&self) -> PathBuf {
        expand_home(&self.paths.cache_dir)
    }

    /// The registry directory with `~` expanded.
    pub fn registry_dir(&self) -> PathBuf {
        expand_home(&self.paths.registry_dir)
    }

    /// ONNX Runtime threads per embedder when `workers` embedders share the machine:
    /// `embedding.threads`, or else the cores split between them (at least one).
    pub fn threads_per_embedder(&self, workers: usize) -> usize {
        if self.embedding.threads > 0 {
            return self.embedding.threads;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / workers.max(1)).max(1)
    }

    /// The embedding model folder, derived from the cache when not set: the int8 graph
    /// (`scripts/setup.sh` makes it from the fp32 one), 1.5x faster end to end at the same
    /// macro-F1 (docs/performance.md).
    pub fn model_dir(&self) -> PathBuf {
        if self.embedding.model_dir.as_os_str().is_empty() {
            self.cache_dir().join(DEFAULT_MODEL_DIR)
        } else {
            expand_home(&self.embedding.model_dir)
        }
    }

    /// The ONNX Runtime library, derived from the cache when not set.
    pub fn onnx_runtime_path(&self) -> PathBuf {
        if self.embedding.onnx_runtime_path.as_os_str().is_empty() {
            self.cache_dir()
                .join("onnxruntime/1.31.1/libonnxruntime.so.1.31.1")
        } else {
            expand_home(&self.embedding.onnx_runtime_path)
        }
    }

    /// Directory of cached training features.
    pub fn feature_cache_dir(&self) -> PathBuf {
        if self.paths.feature_cache_dir.as_os_str().is_empty() {
            self.cache_dir().join("features")
        } else {
            expand_home(&self.paths.feature_cache_dir)
        }
    }
}

/// Expands a leading `~` to `$HOME`.
pub fn expand_home(path: &std::path::Path) -> PathBuf {
    let Ok(rest) = path.strip_prefix("~") else {
        return path.to_path_buf();
    };
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(rest),
        None => path.to_path_buf(),
    }
}
