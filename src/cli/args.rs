//! The command line (clap). Every subcommand's help explains what it does and how.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// triage: label customer messages with a sentence-embedding classifier, and keep
/// the models honest.
///
/// First time: run `make setup` (fetches ONNX Runtime and all-MiniLM-L6-v2 into
/// ~/.cache/triage), then `triage train --data reviews.jsonl`, then
/// `triage classify "the soup was cold"`.
///
/// Configuration: built-in defaults, then --config FILE, then TRIAGE__SECTION__KEY
/// environment variables (e.g. TRIAGE__STREAM__MAX_WAIT_MS=200). config/default.toml
/// documents every key.
#[derive(Debug, Parser)]
#[command(
    name = "triage",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Configuration file (TOML) layered over the defaults.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "TRIAGE_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Log format on stderr; overrides log.format.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,

    /// Log filter (e.g. debug, or triage=debug,info); overrides log.level.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a model on a labelled file and store it in the registry.
    ///
    /// Reads the file with the [data] and [labels] settings, checks the data
    /// (duplicates, rows per class, class balance, lengths), embeds it (cached:
    /// training the same file again does not re-embed), holds out a stratified
    /// test split, and fits on the rest: a logistic regression over the embedding
    /// and one over word n-grams ([features.ngrams]), blended, with the L2 strength
    /// of each (training.alphas), the blend weight and the decision offsets
    /// (training.decision) chosen by stratified cross-validation (training.cv_folds).
    /// It prints every choice with its CV scores, then the held-out evaluation.
    /// A model that passes every gate (training.min_macro_f1,
    /// training.min_macro_recall) becomes the champion.
    ///
    /// Exit status: 0 trained (and promoted unless --no-promote), 3 trained but
    /// failed a gate (stored, not promoted), 1 any other error.
    ///
    /// Example: triage train --data ../shared/data/yelp/reviews-5k.jsonl
    Train(TrainArgs),

    /// Score a registered model on a labelled file: accuracy, macro-F1,
    /// per-class precision / recall / F1 and the confusion matrix.
    ///
    /// Example: triage evaluate --data held-out.jsonl --model v2
    Evaluate(EvaluateArgs),

    /// Label texts with a registered model: each TEXT argument, or else one text
    /// per line of standard input.
    ///
    /// Example: echo "my parcel never arrived" | triage classify --json
    Classify(ClassifyArgs),

    /// List, inspect, compare, promote and roll back model versions; the
    /// champion's history and the retraining decisions.
    #[command(subcommand)]
    Models(ModelsCommand),

    /// Retrain once: fit a challenger on recent labelled traffic, and promote it
    /// only if it beats the champion on the same held-out data.
    ///
    /// Reads the feature records `triage run` wrote to kafka.features_topic over the
    /// last retrain.window_s seconds (or --since), and joins them by message id with
    /// the labels that arrived later on kafka.labels_topic (key = message id, value
    /// {"id": "...", "label": "..."}). A late label wins over one the message
    /// carried; labels for unknown ids or classes are counted and skipped. Of each
    /// class, retrain.held_out_fraction is held out (seeded with training.seed). The
    /// rest, plus the original training data (retrain.training_data: by default the
    /// champion's own training file), trains a challenger with the [training]
    /// settings and gates. Champion and challenger are then scored on the same
    /// held-out slice: the challenger wins only if it passed every gate and its
    /// macro-F1 beats the champion's by retrain.min_improvement. A winner then races
    /// the champion in shadow on live traffic (retrain.rollout = "shadow", the
    /// default: `triage retrainer` promotes or rejects it on the late labels both
    /// models scored), or is promoted at once (retrain.rollout = "direct").
    /// Running `triage run` services switch to a promoted model between windows.
    ///
    /// Every run is recorded in the registry, whatever its end, with its inputs,
    /// rows, both models' scores, the verdict, the reason and each step's wall time
    /// (`triage models decisions`). Its files (train.jsonl, held-out.jsonl) stay in
    /// <registry_dir>/retrain/<id>/ (`triage models compare A B --data` takes them).
    ///
    /// Exit status: 0 promoted or in shadow, 3 rejected (the challenger is stored,
    /// not promoted), 1 failed (nothing promoted; the reason says why).
    ///
    /// Example: triage retrain --since 6h
    ///
    /// Example: triage retrain --training-data none --json | jq '.challenger.metrics.macro_f1'
    Retrain(RetrainArgs),

    /// Run the inference pipeline: read messages in windows, label them with the
    /// champion, write predictions, feature records and dead letters.
    ///
    /// Without --input: the streaming service over Kafka (kafka.* settings).
    /// Delivery is at least once: a window's offsets are committed only after the
    /// broker acknowledged every record it produced. The champion is followed: a
    /// newly promoted model is picked up between windows without a restart.
    /// SIGINT/SIGTERM drain in-flight windows (stream.drain_timeout_ms), commit and
    /// leave the group. HTTP on http.listen: /metrics, /healthz, /readyz,
    /// POST /v1/classify. A record the broker will never take stops the service
    /// with an error and the window uncommitted (exit status 1).
    ///
    /// With --input: the batch mode, the same pipeline over a file (JSON lines or
    /// CSV, [data] settings) or standard input, no broker needed. One prediction
    /// per valid line to --output (JSON lines), every other line to the
    /// dead-letter file with its reason and line number. Exit status: 0 every line
    /// was predicted, 4 some lines were dead-lettered, 1 an error.
    ///
    /// Examples:
    ///
    /// scripts/broker.sh start && triage topics create && triage run
    ///
    /// triage run --input reviews.jsonl --output predictions.jsonl
    ///
    /// cat messages.jsonl | triage run --input - --output - | jq .label
    Run(RunArgs),

    /// Benchmark the streaming service through the configured broker: the
    /// embedding-only bound and sustained end-to-end throughput, measured back to
    /// back in --repeat rounds (medians reported), where the service's time goes
    /// per stage, latency at an offered rate (default half the throughput),
    /// optionally an overload run (memory, consumer lag and time in the service,
    /// sampled every second), and peak RSS. Needs a running broker and a champion;
    /// the bound and the service embed as the champion was trained (its graph and
    /// token length). Creates its own topics.
    ///
    /// Example: triage bench --data ../shared/data/yelp/reviews-5k.jsonl --rows 1000
    ///          triage bench --data unseen.jsonl --overload 2 --overload-secs 90 --json
    ///          triage bench --data unseen.jsonl --rows 1000 --shadow
    Bench(BenchArgs),

    /// Replay a JSON-lines or CSV file into a topic as messages keyed by id, at
    /// --rate messages per second or as fast as the broker takes them, with a
    /// progress bar (on a terminal) and a summary (sent, failed, elapsed, rate).
    ///
    /// Scenarios, for watching drift detection work: stationary (the file as it
    /// is), prior-shift (only the --keep labels), covariate-shift (each message from
    /// the --mix file with probability --share), gradual-shift (that share moving
    /// from --from to --to over the replay). The same --seed gives the same replay.
    /// With --labels-topic, each delivered message's label is sent there as
    /// {"id","label"} --labels-delay-s later (an agent's late label, which
    /// `triage retrainer` joins with the predictions); --strip-labels leaves the
    /// label out of the messages so that ground truth only arrives late.
    ///
    /// Example: triage produce --file unseen.jsonl --rate 50/s
    ///
    /// Example: triage produce --file support.jsonl --scenario covariate-shift --mix
    /// other.jsonl --share 0.5 --labels-topic labels --labels-delay-s 30 --strip-labels
    Produce(ProduceArgs),

    /// Receive Alertmanager's webhook and retrain when drift alerts fire.
    ///
    /// Listens on retrain.listen for POST /v1/alerts (Alertmanager's webhook,
    /// payload version 4), GET /metrics and GET /healthz. A webhook request needs
    /// `Authorization: Bearer <token>` with the token from retrain.webhook_token_file
    /// (or TRIAGE__RETRAIN__WEBHOOK_TOKEN); without a token configured the
    /// retrainer does not start, and a request without the right one gets 401 and
    /// starts nothing. Firing alerts named in retrain.alerts start a retrain job in
    /// the background (the answer says which alerts were accepted, coalesced or
    /// ignored); resolved and other alerts are ignored. One job at a time: after
    /// each, retrain.cooldown_s passes before the next, and alerts meanwhile are
    /// coalesced into one follow-up job. It runs as its own process so that
    /// retraining never slows the consumers. SIGINT/SIGTERM stop it once a running
    /// job has finished. deploy/alertmanager/alertmanager.yml routes the drift
    /// alerts here.
    ///
    /// Each job is `triage retrain`'s: recent feature records joined with late
    /// labels, a challenger fitted and judged against the champion on the same
    /// held-out rows, promoted only if it wins by retrain.min_improvement, the
    /// decision recorded (`triage models decisions`).
    ///
    /// Example: openssl rand -hex 32 > retrain.token
    ///          TRIAGE__RETRAIN__WEBHOOK_TOKEN_FILE=retrain.token triage retrainer
    ///          curl -H "Authorization: Bearer $(cat retrain.token)" \
    ///            --data @notification.json http://127.0.0.1:9465/v1/alerts
    Retrainer,

    /// Measure which order of the review queue most improves the next model, on a
    /// replay of a labelled file (no broker; embeddings through the feature cache).
    ///
    /// A seed model is trained on --seed-rows rows; --pool-rows unseen rows stream
    /// through it and those under its routing threshold wait for review; a person
    /// who knows the truth answers --budgets of them first-come, least confident
    /// first, smallest margin first, or at random; the model is retrained on the
    /// seed and the answers and scored on a fixed --test-rows slice (macro-F1, and
    /// the coverage and precision its threshold gives there), over --seeds seeds.
    /// Prints mean ± sd per order and budget. Every fit is a full training fit
    /// (cross-validation included): use a release build.
    ///
    /// Example: triage review-order --data ../shared/data/yelp/reviews-5k.jsonl
    ReviewOrder(ReviewOrderArgs),

    /// Drift detection: measure the detectors on replayed real traffic.
    #[command(subcommand)]
    Drift(DriftCommand),

    /// Kafka topics: create the input and output topics triage uses.
    #[command(subcommand)]
    Topics(TopicsCommand),

    /// Check a labelled file without embedding it: rows, malformed rows by reason
    /// (with line numbers), and rows per label. Streams the file, so it works on
    /// files of any size; run it before a long training run.
    ///
    /// Example: triage inspect --data yelp_academic_dataset_review.json
    Inspect(InspectArgs),

    /// Print the effective configuration (after file and environment) as TOML.
    Config,

    /// Ask a triage on this host whether it is healthy: GET PATH on http.listen (or
    /// retrain.listen with --retrainer; an any-address listener is reached on
    /// loopback), exit 0 on 200 and 1 otherwise, saying what answered. For container
    /// health checks: the image has no curl and needs no shell.
    ///
    /// Example: triage probe /readyz
    ///          triage probe --retrainer /healthz
    Probe(ProbeArgs),

    /// Print a reviewer account for the console's Review page: reads the password
    /// from standard input (its first line), and prints a [[review.reviewers]] block
    /// with the name and the password's Argon2id hash, to add to the configuration
    /// file. The password itself is stored nowhere. Every replica needs the same
    /// accounts, and the same review.session_secret for a sign-in to hold on all.
    ///
    /// Example: printf '%s\n' "$PASSWORD" | triage reviewer ana >> triage.toml
    Reviewer(ReviewerArgs),
}

#[derive(Debug, Args)]
pub struct ReviewerArgs {
    /// The reviewer's name, which signs their answers on the labels topic (1 to 64
    /// letters, digits, '.', '_' or '-').
    pub name: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Batch mode: read messages from FILE (`-`: standard input) instead of Kafka.
    #[arg(long, short = 'i', value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Batch mode: where predictions go, one JSON line each (`-`: standard output).
    #[arg(long, short = 'o', value_name = "FILE", requires = "input")]
    pub output: Option<PathBuf>,
    /// Batch mode: where dead letters go (default: <output>.dlq.jsonl, or
    /// triage-dead-letters.jsonl when the output is `-`).
    #[arg(long, value_name = "FILE", requires = "input")]
    pub dead_letters: Option<PathBuf>,
    /// Batch mode: also write a feature record (id, text, embedding, label) per prediction.
    #[arg(long, value_name = "FILE", requires = "input")]
    pub features: Option<PathBuf>,
    /// Batch mode: write a review record (id, text, label, confidence, top three
    /// classes) for each message whose confidence is under the model card's routing
    /// threshold (`route: review` in its prediction), for a person to label.
    #[arg(long, value_name = "FILE", requires = "input")]
    pub review: Option<PathBuf>,
    /// Batch mode: how the input is framed (default: by extension, JSON lines for `-`).
    #[arg(long, value_enum, requires = "input")]
    pub format: Option<InputFormatArg>,
    /// Batch mode: write the run's Prometheus metrics to FILE at the end (for
    /// node_exporter's textfile collector, or a look).
    #[arg(long, value_name = "FILE", requires = "input")]
    pub metrics_file: Option<PathBuf>,
    /// Batch mode: print the summary as one JSON document on stderr.
    #[arg(long, requires = "input")]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum InputFormatArg {
    Jsonl,
    Csv,
}

#[derive(Debug, Args)]
pub struct RetrainArgs {
    /// Take the feature records of this long before now instead of
    /// retrain.window_s, e.g. 30m, 6h, 2days.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Original training data added to the recent rows, instead of
    /// retrain.training_data: a labelled file (read with [data] and [labels]), or
    /// `none` to train on the recent rows only.
    #[arg(long, value_name = "FILE|none")]
    pub training_data: Option<PathBuf>,
    /// Print the decision as one JSON document (as recorded in the registry).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Labelled file: Yelp reviews or JSON lines (.jsonl/.json) or CSV (.csv).
    #[arg(long, short = 'd', value_name = "FILE")]
    pub data: PathBuf,
    /// Store the model without making it the champion, even if it passes the gates.
    #[arg(long)]
    pub no_promote: bool,
    /// Print one JSON document (the outcome and the model card) instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// The file to replay (JSON lines or CSV, read with the [data] settings).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: PathBuf,
    /// Topic (default: the first of kafka.input_topics).
    #[arg(long, short = 't')]
    pub topic: Option<String>,
    /// Messages per second (50 or 50/s); default: as fast as possible.
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Messages to send, at most (default: every row of --file).
    #[arg(long)]
    pub rows: Option<usize>,
    /// How the traffic moves away from the file.
    #[arg(long, value_enum, default_value_t = ScenarioArg::Stationary)]
    pub scenario: ScenarioArg,
    /// prior-shift: the labels to keep (after the label rule), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "LABEL,...")]
    pub keep: Vec<String>,
    /// covariate-shift, gradual-shift: the second file to mix in.
    #[arg(long, value_name = "FILE")]
    pub mix: Option<PathBuf>,
    /// covariate-shift: the share of messages from --mix (0 to 1).
    #[arg(long, default_value_t = 0.5)]
    pub share: f64,
    /// gradual-shift: the share of --mix at the first message.
    #[arg(long, default_value_t = 0.0)]
    pub from: f64,
    /// gradual-shift: the share of --mix at the last message.
    #[arg(long, default_value_t = 1.0)]
    pub to: f64,
    /// Send each delivered message's label to this topic as {"id","label"}
    /// (without a value: kafka.labels_topic).
    #[arg(long, value_name = "TOPIC", num_args = 0..=1, default_missing_value = "")]
    pub labels_topic: Option<String>,
    /// Seconds between a message and its late label.
    #[arg(long, default_value_t = 0.0, value_name = "S")]
    pub labels_delay_s: f64,
    /// Leave the label field out of the messages (ground truth only arrives late).
    #[arg(long)]
    pub strip_labels: bool,
    /// Seed of the scenario's mixing: the same seed, the same replay.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioArg {
    Stationary,
    PriorShift,
    CovariateShift,
    GradualShift,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let n = s.trim().trim_end_matches("/s");
    match n.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate: give messages per second above 0, e.g. 50 or 50/s"
        )),
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// File of messages (JSON lines or CSV, read with the [data] settings).
    #[arg(long, short = 'd', value_name = "FILE")]
    pub data: PathBuf,
    /// Messages for the embedding bound and the throughput run.
    #[arg(long, default_value_t = 1000)]
    pub rows: usize,
    /// Rounds of bound-then-throughput; medians are reported (the machine's speed
    /// drifts, so one pair says little).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub repeat: u64,
    /// Offered rate for the latency run, messages/s (default: half the throughput).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Messages in the latency run.
    #[arg(long, default_value_t = 300)]
    pub latency_rows: usize,
    /// Also offer this multiple of the measured throughput (e.g. 2) and show that
    /// the service holds: memory flat, time in the service bounded, lag growing.
    #[arg(long, value_name = "FACTOR")]
    pub overload: Option<f64>,
    /// Seconds of the overload run.
    #[arg(long, default_value_t = 60)]
    pub overload_secs: u64,
    /// Also measure what a challenger in shadow costs: each round drains the same
    /// messages twice, back to back, with no challenger and with a copy of the
    /// champion in shadow (in a registry of the bench's own; the configured one is
    /// not touched), alternating which goes first; reports both throughputs and
    /// shadowed / plain. Fails if the shadow did not run.
    #[arg(long)]
    pub shadow: bool,
    /// Also profile the embedding: ONNX Runtime's profiler over a one-text-per-call
    /// run of up to 200 of the messages (kernel time per operator type, and the
    /// arithmetic of the matrix products), and the machine's fp32 `MatMul` and
    /// int8 `MatMulInteger` rates at the feed-forward's shape, so that the share
    /// of those rates the embedding and the service reach is printed.
    #[arg(long)]
    pub profile: bool,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReviewOrderArgs {
    /// Labelled file (read with the [data] and [labels] settings).
    #[arg(long, short = 'd', value_name = "FILE")]
    pub data: PathBuf,
    /// Rows the seed model is trained on.
    #[arg(long, default_value_t = 300)]
    pub seed_rows: usize,
    /// Unseen rows streamed through the seed model.
    #[arg(long, default_value_t = 2000)]
    pub pool_rows: usize,
    /// The fixed test slice, the same for every seed.
    #[arg(long, default_value_t = 1000)]
    pub test_rows: usize,
    /// Queued messages a person answers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "50,100,200")]
    pub budgets: Vec<usize>,
    /// Repetitions, each with its own seed slice and pool.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub seeds: u64,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DriftCommand {
    /// Replay real traffic through the drift monitor the service runs (same
    /// [drift] settings, same model reference) and report, per detector: false
    /// alarms per 100 windows on stationary traffic, detection delay in windows
    /// for a prior shift (only one class) and a covariate shift (messages from
    /// another source mixed in), and the injected share at which a gradual ramp
    /// is detected. No broker needed; embeddings go through the feature cache.
    ///
    /// Example (model trained on the first 4,000 reviews, replaying the rest):
    ///   tail -n 1000 reviews-5k.jsonl > unseen.jsonl
    ///   triage drift eval --data unseen.jsonl --prior-label negative
    ///     --inject customer-support-2200.csv --inject-text-field question
    Eval(DriftEvalArgs),
}

#[derive(Debug, Args)]
pub struct DriftEvalArgs {
    /// Labelled in-distribution file the model was not trained on (read with the
    /// [data] and [labels] settings).
    #[arg(long, short = 'd', value_name = "FILE")]
    pub data: PathBuf,
    /// Messages from another source for the covariate and gradual shifts (JSON
    /// lines or CSV). Without it those scenarios are skipped.
    #[arg(long, value_name = "FILE")]
    pub inject: Option<PathBuf>,
    /// Field of --inject that holds the text (default: data.text_field).
    #[arg(long, value_name = "FIELD")]
    pub inject_text_field: Option<String>,
    /// The class the prior shift keeps (default: the model's first label).
    #[arg(long, value_name = "LABEL")]
    pub prior_label: Option<String>,
    /// Version (v3, 3) or alias (champion, previous).
    #[arg(long, short = 'm', default_value = "champion", value_name = "VERSION")]
    pub model: String,
    /// Messages per window (default: stream.max_messages).
    #[arg(long, value_name = "N")]
    pub window: Option<usize>,
    /// Independent runs per scenario (different shuffles and test seeds).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Windows per stationary run.
    #[arg(long, default_value_t = 100)]
    pub stationary_windows: usize,
    /// Share of injected messages in the covariate shift.
    #[arg(long, default_value_t = 0.3)]
    pub covariate_share: f64,
    /// The gradual shift ramps the injected share from 0 to this over 20 windows.
    #[arg(long, default_value_t = 0.5)]
    pub gradual_max_share: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The path to GET: /healthz (alive) or /readyz (`triage run`: model loaded,
    /// partitions assigned, brokers up).
    #[arg(default_value = "/healthz", value_name = "PATH")]
    pub path: String,
    /// Probe `triage retrainer` (retrain.listen) instead of `triage run` (http.listen).
    #[arg(long)]
    pub retrainer: bool,
    /// Give up after this many seconds (connect, then answer).
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub timeout_s: u64,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Labelled file, read with the [data] and [labels] settings.
    #[arg(long, short = 'd', value_name = "FILE")]
    pub data: PathBuf,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Labelled file, read with the same settings as for training.
    #[arg(long, short = 'd', value_name = "FILE")]
    pub data: PathBuf,
    /// Version (v3, 3) or alias (champion, previous).
    #[arg(long, short = 'm', default_value = "champion", value_name = "VERSION")]
    pub model: String,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Texts to label. Without any, each line of standard input is one text.
    #[arg(value_name = "TEXT")]
    pub texts: Vec<String>,
    /// Version (v3, 3) or alias (champion, previous).
    #[arg(long, short = 'm', default_value = "champion", value_name = "VERSION")]
    pub model: String,
    /// Texts embedded together when reading standard input.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub batch: usize,
    /// One JSON object per text (label, confidence, probabilities, model_version).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Send rows of a data file to a topic as JSON messages (id, text and label
    /// fields as configured), for demos and tests.
    Send {
        #[arg(long, short = 'd', value_name = "FILE")]
        data: PathBuf,
        /// Topic (default: the first of kafka.input_topics).
        #[arg(long)]
        topic: Option<String>,
        /// Rows to send, at most.
        #[arg(long, default_value_t = 100)]
        rows: usize,
    },
    /// Print a topic's records from the beginning, one per line.
    Tail {
        /// Topic (default: kafka.predictions_topic).
        #[arg(long)]
        topic: Option<String>,
        /// Stop after this many records.
        #[arg(long, short = 'n', default_value_t = 10)]
        count: usize,
        /// Stop after this many seconds without a new record.
        #[arg(long, default_value_t = 10)]
        idle_s: u64,
    },
    /// Create kafka.input_topics, predictions, DLQ, features and labels topics
    /// (existing topics are left as they are).
    Create {
        /// Partitions per topic: the most instances that can share the work.
        #[arg(long, short = 'p', default_value_t = 4)]
        partitions: i32,
        /// Replication factor (1 for a single local broker).
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// All versions with their held-out scores and aliases.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The model card of a version or alias.
    Show {
        /// Version (v3, 3) or alias (champion, previous).
        #[arg(default_value = "champion", value_name = "VERSION")]
        model: String,
        #[arg(long)]
        json: bool,
    },
    /// Make a version the champion; the current champion becomes `previous`.
    Promote {
        /// Version (v3, 3) or alias (previous).
        #[arg(value_name = "VERSION")]
        model: String,
        #[arg(long)]
        json: bool,
    },
    /// Put the previous champion back.
    Rollback {
        #[arg(long)]
        json: bool,
    },
    /// Score a version in shadow beside the champion, or stop (--clear).
    ///
    /// Sets the registry's `challenger` alias. Every running `triage run` follows
    /// it as it follows the champion: it loads the challenger once and scores it on
    /// the same windows, on the same embeddings (so it costs a classifier, not a
    /// second embedding). Its predictions are never published as labels: each
    /// prediction record carries them in a `shadow` field (model_version, label,
    /// confidence, probabilities) beside the champion's, so the late-label join
    /// scores both on the same messages. A challenger whose card's embedding spec
    /// (model id, graph checksum, dimension, pooling, token length) differs from
    /// the champion's is refused for shadowing: the consumers log why at ERROR and
    /// count it in triage_shadow_refusals_total. Promoting the challenger clears
    /// the alias. Recorded in the history (`triage models history`).
    ///
    /// Example: triage models shadow v4 --reason "retrained on last week's labels"
    ///
    /// Example: triage models shadow --clear
    Shadow {
        /// Version (v3, 3); not the champion.
        #[arg(
            value_name = "VERSION",
            required_unless_present = "clear",
            conflicts_with = "clear"
        )]
        model: Option<String>,
        /// Clear the challenger alias: the consumers stop scoring a shadow.
        #[arg(long)]
        clear: bool,
        /// Why, recorded in the history.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The champion's history: every promotion and rollback (and every change of the
    /// shadowed challenger), oldest first.
    ///
    /// Each line says when, from which version to which, who did it (cli,
    /// training, retrainer, console) and why. Read from events.jsonl in the
    /// registry; a damaged line is skipped and reported, the rest still shown.
    ///
    /// Example: triage models history
    ///
    /// Example: triage models history --json | jq '.changes[-1]'
    History {
        /// Print one JSON document: {"changes": [...], "skipped": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Two versions side by side: accuracy, macro-F1 and per-class precision,
    /// recall and F1 for each, and the difference B - A.
    ///
    /// Without --data: the held-out metrics stored in each model card. Each model
    /// was scored on its own test split, so the numbers compare like with like
    /// only when both were trained on the same file with the same seed and
    /// test_fraction. With --data FILE: both models are scored on that labelled
    /// file (read with the [data] and [labels] settings, embedded once), the fair
    /// comparison.
    ///
    /// Example: triage models compare previous champion
    ///
    /// Example: triage models compare v1 v2 --data held-out.jsonl
    Compare {
        /// The baseline: version (v3, 3) or alias (champion, previous).
        #[arg(value_name = "A")]
        a: String,
        /// The model compared against A (differences are B - A).
        #[arg(value_name = "B")]
        b: String,
        /// Score both on this labelled file instead of showing their cards' metrics.
        #[arg(long, short = 'd', value_name = "FILE")]
        data: Option<PathBuf>,
        /// Print one JSON document: both evaluations and the differences.
        #[arg(long)]
        json: bool,
    },
    /// The retraining decisions, oldest first, with their verdicts.
    ///
    /// Each says what started the run, the data it used, champion and challenger
    /// macro-F1 on the same held-out rows, the margin required, the verdict
    /// (promoted, rejected, failed) and why; --json adds the inputs' time range
    /// and per-class F1. Read from decisions.jsonl in the registry.
    ///
    /// Example: triage models decisions
    ///
    /// Example: triage models decisions --json | jq '.decisions[] | select(.verdict == "rejected")'
    Decisions {
        /// Print one JSON document: {"decisions": [...], "skipped": [...]}.
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        // clap checks names, ids and defaults here instead of panicking at run time.
        Cli::command().debug_assert();
    }

    #[test]
    fn retrain_takes_a_duration_and_none_for_training_data() {
        let cli = Cli::try_parse_from([
            "triage",
            "retrain",
            "--since",
            "6h",
            "--training-data",
            "none",
        ])
        .unwrap();
        match cli.command {
            Command::Retrain(args) => {
                assert_eq!(args.since, Some(std::time::Duration::from_secs(6 * 3600)));
                assert_eq!(args.training_data, Some(PathBuf::from("none")));
                assert!(!args.json);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["triage", "retrain", "--since", "soon"]).is_err());
    }

    #[test]
    fn models_show_defaults_to_the_champion() {
        let cli = Cli::try_parse_from(["triage", "models", "show", "--json"]).unwrap();
        match cli.command {
            Command::Models(ModelsCommand::Show { model, json }) => {
                assert_eq!(model, "champion");
                assert!(json);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn models_compare_takes_two_versions_and_an_optional_file() {
        let cli = Cli::try_parse_from(["triage", "models", "compare", "v1", "champion"]).unwrap();
        match cli.command {
            Command::Models(ModelsCommand::Compare { a, b, data, json }) => {
                assert_eq!((a.as_str(), b.as_str()), ("v1", "champion"));
                assert_eq!((data, json), (None, false));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["triage", "models", "compare", "v1"]).is_err());
    }
}
