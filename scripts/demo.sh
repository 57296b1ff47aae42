#!/usr/bin/env bash
# `make demo`: the whole loop on this machine, no Docker, no accounts. A local broker
# (tansu), Prometheus and Alertmanager on loopback, a first model trained on a narrow
# slice of the data, `triage run` and `triage retrainer`; stationary traffic, then
# drifted traffic whose labels arrive late; the drift alert fires, the retrainer
# trains a challenger, promotes it, and the consumers switch to it. It narrates with
# figures read from the running system and ends with a summary.
#
#   make demo                                   the data: ../shared/data when present,
#                                               else data/demo/messages.jsonl (shipped)
#   DATA=yelp_academic_dataset_review.json make demo   the full Yelp review file
#                                               (its first DEMO_MAX_ROWS=20000 reviews)
#   DATA=my.csv NARROW=billing,refund make demo   your own labelled file; NARROW: the
#                                               labels the first model is trained on
#
# Every process it starts is stopped when it ends, fails or is interrupted (Ctrl-C).
# Other knobs: DEMO_DIR (work folder, default .triage/demo), TRIAGE_BIN (a triage
# binary to use instead of building one), DEMO_STOP_AFTER / DEMO_FAIL_AT (a phase
# name: stop there with success / fail there; tests/demo.rs uses them), DEMO_AT_END (a
# command run at the end, while everything still runs, with SERVICE and RETRAINER set
# to their addresses: scripts/console-screenshots.sh uses it).
set -euo pipefail
cd "$(dirname "$0")/.."

WORK="${DEMO_DIR:-.triage/demo}"
CACHE="${TRIAGE_CACHE_DIR:-$HOME/.cache/triage}"
START=$SECONDS

say() { printf '\n==> [%3ds] %s\n' "$((SECONDS - START))" "$*"; }
note() { printf '    %s\n' "$*"; }
fail() { printf 'demo: %s\n' "$*" >&2; exit 1; }
q() { python3 scripts/demo.py "$@"; }

# ---- process management: every background process is recorded and stopped -------
PIDS=()
NAMES=()
# The terminal, for stop_all: a signal may arrive while a helper's output is redirected.
exec 3>&1 4>&2
start() { # start NAME LOG COMMAND...
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  PIDS+=("$!")
  NAMES+=("$name")
}
stop_all() {
  local status=$?
  # A subshell (a command substitution) that a signal interrupts exits alone: the
  # main shell stops the processes.
  [[ $BASHPID == "$$" ]] || exit "$status"
  trap - EXIT INT TERM
  if ((${#PIDS[@]})); then
    echo "==> stopping ${NAMES[*]}" >&3
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[$i]}" 2>/dev/null || true; done
    for _ in $(seq 100); do
      local alive=0
      for i in "${PIDS[@]}"; do kill -0 "$i" 2>/dev/null && alive=1; done
      ((alive)) || break
      sleep 0.1
    done
    for i in "${PIDS[@]}"; do kill -KILL "$i" 2>/dev/null || true; done
    wait 2>/dev/null || true
  fi
  if ((status != 0)); then
    echo "demo: stopped (status $status); logs are in $WORK/" >&4
  fi
  exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
phase() { # phase NAME: where DEMO_STOP_AFTER / DEMO_FAIL_AT cut in
  echo "demo-phase: $1"
  [[ "${DEMO_FAIL_AT:-}" == "$1" ]] && fail "failing at phase $1 as DEMO_FAIL_AT asked"
  [[ "${DEMO_STOP_AFTER:-}" == "$1" ]] && { say "stopping after phase $1 (DEMO_STOP_AFTER)"; exit 0; }
  return 0
}
free_port() { # the preferred port if nothing listens there, else any free one
  if ! (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then echo "$1"; return; fi
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_for() { # wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "no $what after ${seconds} s; logs are in $WORK/"
    sleep 0.5
  done
}
at_least() { # at_least N COMMAND...: the number COMMAND prints is >= N
  local n=$1 v
  shift
  v=$("$@") && python3 -c "import sys; sys.exit(0 if float('$v') >= $n else 1)"
}

# ---- 1. set-up (cached after the first run) --------------------------------------
say "set-up: ONNX Runtime and all-MiniLM-L6-v2 (cached in $CACHE)"
bash scripts/setup.sh
if [[ -z "${TRIAGE_TANSU:-}" ]] && ! compgen -G "$CACHE/tools/tansu-*/bin/tansu" >/dev/null; then
  say "set-up: the local Kafka-protocol broker (tansu) is built from crates.io now: a one-time build of ~15-30 min on 2 cores, cached in $CACHE/tools (later runs start at once)"
fi
TANSU="${TRIAGE_TANSU:-$(bash scripts/install-tansu.sh)}"
bash scripts/install-debian.sh prometheus:prometheus prometheus-alertmanager:prometheus-alertmanager
if [[ -n "${TRIAGE_BIN:-}" ]]; then
  TRIAGE="$TRIAGE_BIN"
else
  say "build: cargo build --release (the first time 10-30 min on 2 cores, once; then seconds)"
  cargo build --release --quiet
  TRIAGE="${CARGO_TARGET_DIR:-target}/release/triage"
fi
phase setup

# ---- 2. data --------------------------------------------------------------------
if [[ -z "${DATA:-}" ]]; then
  if [[ -f ../shared/data/support/customer-support-2200.csv ]]; then
    DATA=../shared/data/support/customer-support-2200.csv
  else
    DATA=data/demo/messages.jsonl
  fi
fi
[[ -f "$DATA" ]] || fail "$DATA not found; set DATA=path/to/file (JSON lines with text and label or stars, or CSV)"
rm -rf "$WORK"
mkdir -p "$WORK/broker" "$WORK/data"
say "data: $DATA (for the full Yelp review file: DATA=path/to/yelp_academic_dataset_review.json make demo)"
prepared=$(q prepare "$DATA" "$WORK/data")
eval "$prepared"
note "$ROWS_READ labelled messages read; labels: $NARROW,$OTHERS"
note "the first model learns only $NARROW ($N_TRAIN messages);"
note "stationary traffic: $N_STATIONARY unseen messages of those labels;"
note "drifted traffic: $((N_DRIFT_MAIN + N_DRIFT_MIX)) messages, $SHARE of them of labels it never saw ($OTHERS)"

# ---- 3. the system ----------------------------------------------------------------
BROKER_PORT=$(free_port 9092)
SERVICE=127.0.0.1:$(free_port 9464)
RETRAINER=127.0.0.1:$(free_port 9465)
PROM=127.0.0.1:$(free_port 9090)
AM=127.0.0.1:$(free_port 9093)
ABS=$(cd "$WORK" && pwd)
python3 -c 'import secrets; print(secrets.token_hex(32))' >"$ABS/retrain.token"
# A reviewer for the console's Review page: its password in a file, only its hash in
# the configuration (`triage reviewer` prints the block).
python3 -c 'import secrets; print(secrets.token_urlsafe(12))' >"$ABS/reviewer.password"
REVIEWER=$("$TRIAGE" reviewer demo <"$ABS/reviewer.password")
cat >"$ABS/triage.toml" <<EOF
# The demo's configuration: short windows and a short cooldown so it takes minutes.
[paths]
registry_dir = "$ABS/registry"
feature_cache_dir = "$ABS/features"
[data]
format = "jsonl"
text_field = "text"
id_field = "id"
[labels]
rule = "column"
field = "label"
[kafka]
brokers = "127.0.0.1:$BROKER_PORT"
group_id = "triage-demo"
input_topics = ["messages"]
predictions_topic = "predictions"
dlq_topic = "messages.dlq"
features_topic = "features"
labels_topic = "labels"
review_topic = "review"
[stream]
max_wait_ms = 200
drain_timeout_ms = 5000
[http]
listen = "$SERVICE"
[retrain]
listen = "$RETRAINER"
webhook_token_file = "$ABS/retrain.token"
training_data = "none"
cooldown_s = 60
join_pending_s = 60
# A challenger that wins its held-out slice races the champion in shadow on live
# traffic; the demo's race decides on 60 late-labelled messages (default 200).
rollout = "shadow"
[rollout]
min_labelled = 60
[review]
session_secret = "$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
$REVIEWER
EOF
export TRIAGE_CONFIG="$ABS/triage.toml"
triage() { "$TRIAGE" --config "$ABS/triage.toml" "$@"; }
champion() { triage models list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["aliases"]["champion"])'; }

say "local broker: tansu on 127.0.0.1:$BROKER_PORT (SQLite storage in $WORK/broker)"
start tansu "$WORK/broker/tansu.log" env -C "$ABS/broker" "$TANSU" broker \
  --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
  --storage-engine "sqlite://tansu.db"
wait_for 30 "broker on port $BROKER_PORT" bash -c "echo > /dev/tcp/127.0.0.1/$BROKER_PORT"
triage topics create --partitions 2 | sed 's/^/    /'
phase broker

say "first model: triage train on $N_TRAIN messages of $NARROW"
triage train --data "$WORK/data/train.jsonl" >"$WORK/train.log" 2>&1 ||
  fail "the first model did not train; see $WORK/train.log"
grep -iE "macro-F1|accuracy|champion" "$WORK/train.log" | tail -n 4 | sed 's/^/    /'
FIRST=$(champion)
note "champion: $FIRST"
phase train

say "services: triage retrainer, Alertmanager, triage run, Prometheus"
start retrainer "$WORK/retrainer.log" "$TRIAGE" --config "$ABS/triage.toml" --log-level info retrainer
start triage-run "$WORK/run.log" "$TRIAGE" --config "$ABS/triage.toml" run
mkdir -p "$WORK/alertmanager" "$WORK/prometheus/rules"
sed -e "s#127.0.0.1:9465#$RETRAINER#" -e "s#/etc/triage/retrain-webhook.token#$ABS/retrain.token#" \
  -e "s#group_wait: 1m#group_wait: 1s#" deploy/alertmanager/alertmanager.yml >"$WORK/alertmanager/alertmanager.yml"
start alertmanager "$WORK/alertmanager/alertmanager.log" prometheus-alertmanager \
  --config.file="$ABS/alertmanager/alertmanager.yml" --storage.path="$ABS/alertmanager/data" \
  --web.listen-address="$AM" --cluster.listen-address=
# The demo's alerts wait 5 s (drift: not 10 min; late labels below the card or naming
# a new class: not 5 min); Prometheus scrapes every second.
python3 - "$WORK/prometheus/rules/triage.yml" <<'EOF'
import sys
text = open("deploy/prometheus/rules/triage.yml").read()
for alert, wait in (("TriageDriftDetected", "for: 10m"), ("TriagePerformanceDrop", "for: 5m")):
    head, tail = text.split("- alert: " + alert, 1)
    text = head + "- alert: " + alert + tail.replace(wait, "for: 5s", 1)
open(sys.argv[1], "w").write(text)
EOF
sed -e "s/scrape_interval: 15s/scrape_interval: 1s/" -e "s/evaluation_interval: 15s/evaluation_interval: 1s/" \
  -e "s#127.0.0.1:9464#$SERVICE#" -e "s#127.0.0.1:9465#$RETRAINER#" -e "s#127.0.0.1:9093#$AM#" \
  deploy/prometheus/prometheus.yml >"$WORK/prometheus/prometheus.yml"
start prometheus "$WORK/prometheus/prometheus.log" prometheus \
  --config.file="$ABS/prometheus/prometheus.yml" --storage.tsdb.path="$ABS/prometheus/data" \
  --web.listen-address="$PROM"
q wait-http "http://$RETRAINER/healthz" 60
q wait-http "http://$AM/-/ready" 60
q wait-http "http://$PROM/-/ready" 60
wait_for 120 "ready service (see $WORK/run.log)" q wait-http "http://$SERVICE/readyz" 1
note "open while it runs:"
note "  console      http://$SERVICE/"
note "  review queue http://$SERVICE/review   (sign in as demo, password in $WORK/reviewer.password)"
note "  Prometheus   http://$PROM/alerts   (and /graph?g0.expr=triage_drift_statistic)"
note "  Alertmanager http://$AM/"
note "  metrics      http://$SERVICE/metrics   http://$RETRAINER/metrics"
phase services

# ---- 4. stationary traffic --------------------------------------------------------
served() { q by-label "http://$SERVICE/metrics" triage_predictions_total model_version; }
predicted() { q metric "http://$SERVICE/metrics" triage_predictions_total; }
say "stationary traffic: triage produce --scenario stationary, labels stripped, late labels 5 s later"
start produce-stationary "$WORK/produce-stationary.log" "$TRIAGE" --config "$ABS/triage.toml" \
  produce --file "$ABS/data/stationary.jsonl" --labels-topic --labels-delay-s 5 --strip-labels --seed 1
wait_for 120 "first label" at_least 1 predicted
FIRST_LABEL_AT=$((SECONDS - START))
note "first label out after ${FIRST_LABEL_AT} s from the start of the demo"
phase streaming
wait_for 180 "labels for the stationary messages" at_least "$N_STATIONARY" predicted
wait "${PIDS[-1]}" || fail "the producer failed; see $WORK/produce-stationary.log"
note "$(cat "$WORK/produce-stationary.log")"
note "messages labelled: $(predicted) (by label: $(q by-label "http://$SERVICE/metrics" triage_predictions_total label))"
triage topics tail --count "$N_STATIONARY" --idle-s 10 >"$WORK/predictions-stationary.jsonl"
note "sample predictions (label, confidence, model):"
q predictions "$WORK/predictions-stationary.jsonl" "$WORK/data/stationary.jsonl" 4
wait_for 60 "drift statistics in Prometheus" at_least "$((N_STATIONARY < 200 ? N_STATIONARY : 200))" q metric "http://$SERVICE/metrics" triage_drift_statistic statistic=messages
sleep 5
note "drift statistics (Prometheus, triage_drift_statistic):"
q promql "$PROM" "triage_drift_statistic{statistic=~\"prediction_psi|mmd_p_value|mean_confidence|messages\"}" | sed 's/^/      /'
note "detectors firing: $(q promql "$PROM" 'sum(triage_drift_detected)' | awk '{print $NF}') (0: the traffic looks like the training data)"
wait_for 60 "late labels joined" at_least 1 q metric "http://$RETRAINER/metrics" triage_performance_labels_total result=joined
sleep 3
note "late labels joined by the retrainer: $(q by-label "http://$RETRAINER/metrics" triage_performance_labels_total result)"
note "rolling macro-F1 from late labels: $(q by-label "http://$RETRAINER/metrics" triage_performance_macro_f1 model_version) (its card promised $(q by-label "http://$RETRAINER/metrics" triage_performance_promised_macro_f1 model_version))"
note "below its card: $(q by-label "http://$RETRAINER/metrics" triage_performance_below_card model_version); classes it never learned: $(q by-label "http://$RETRAINER/metrics" triage_performance_new_class_share model_version) of the labels (0 / 0: the promise holds, no alert)"

# ---- 5. drifted traffic -----------------------------------------------------------
say "drifted traffic: triage produce --scenario covariate-shift --share $SHARE (labels $OTHERS are new)"
before=$(predicted)
joined_before=$(q metric "http://$RETRAINER/metrics" triage_performance_labels_total result=joined)
start produce-drift "$WORK/produce-drift.log" "$TRIAGE" --config "$ABS/triage.toml" \
  produce --file "$ABS/data/drift-main.jsonl" --mix "$ABS/data/drift-mix.jsonl" \
  --scenario covariate-shift --share "$SHARE" --rows $((N_DRIFT_MAIN + N_DRIFT_MIX)) \
  --labels-topic --labels-delay-s 5 --strip-labels --seed 2
DRIFT_AT=$SECONDS
wait_for 180 "labels for the drifted messages" at_least "$(python3 -c "print($before + $N_DRIFT_MAIN + $N_DRIFT_MIX)")" predicted
wait "${PIDS[-1]}" || fail "the producer failed; see $WORK/produce-drift.log"
note "$(cat "$WORK/produce-drift.log")"
# Either alert retrains: the detectors' (the traffic moved) or the late labels' (the
# model is below its card, or meets classes it never learned; a new class in the same
# domain, such as neutral reviews, moves the labels more than the embeddings).
ALERTS_FIRING='ALERTS{alertname=~"TriageDriftDetected|TriagePerformanceDrop",alertstate="firing"}'
firing() { [[ -n "$(q promql "$PROM" "$ALERTS_FIRING")" ]]; }
wait_for 180 "drift or performance alert (see $WORK/run.log and $WORK/retrainer.log)" firing
ALERT_AFTER=$((SECONDS - DRIFT_AT))
LABELS_AFTER=$(python3 -c "print(int($(q metric "http://$RETRAINER/metrics" triage_performance_labels_total result=joined) - $joined_before))")
FIRED=$(q promql "$PROM" "$ALERTS_FIRING" | awk '{print $1}' |
  sed -e 's/alertname=//' -e 's/alertstate=firing,//' -e 's/,severity=[a-z]*//' | tr '\n' ' ')
note "firing: $FIRED"
note "drift statistics now (Prometheus):"
q promql "$PROM" "triage_drift_statistic{statistic=~\"prediction_psi|mmd_p_value|mean_confidence|low_confidence_share\"}" | sed 's/^/      /'
note "detectors firing: $(q promql "$PROM" 'triage_drift_detected == 1' | awk '{print $1}' | tr '\n' ' ')"
LABELLED_AT_ALERT=$(q metric "http://$RETRAINER/metrics" triage_performance_labelled_predictions "model_version=$FIRST")
note "late labels on $FIRST: macro-F1 $(q metric "http://$RETRAINER/metrics" triage_performance_macro_f1 "model_version=$FIRST") over $LABELLED_AT_ALERT labelled messages, card $(q metric "http://$RETRAINER/metrics" triage_performance_promised_macro_f1 "model_version=$FIRST"); p-values $(q by-label "http://$RETRAINER/metrics" triage_performance_drop_p_value measure "model_version=$FIRST"); new classes $(q metric "http://$RETRAINER/metrics" triage_performance_new_class_share "model_version=$FIRST") of its labels"
note "alert firing after ${ALERT_AFTER} s of drifted traffic, with $LABELS_AFTER of its late labels joined; Alertmanager (http://$AM/api/v2/alerts) says:"
wait_for 60 "alert in Alertmanager" bash -c "python3 scripts/demo.py alerts $AM | grep -qE 'TriageDriftDetected|TriagePerformanceDrop'"
q alerts "$AM" | sed 's/^/      /'
phase drift

# ---- 6. the retrain ---------------------------------------------------------------
jobs_done() { q metric "http://$RETRAINER/metrics" triage_retrain_jobs_total; }
wait_for 60 "webhook call at the retrainer (see $WORK/alertmanager/alertmanager.log)" \
  at_least 1 q metric "http://$RETRAINER/metrics" triage_retrain_alerts_total action=accepted
say "the retrainer accepted the alert: training a challenger on the recent labelled messages"
wait_for 300 "retrain verdict (see $WORK/retrainer.log)" at_least 1 jobs_done
triage models decisions | sed 's/^/    /'
VERDICT=$(triage models decisions --json | python3 -c 'import json,sys; d=json.load(sys.stdin)["decisions"][-1]; print(d["verdict"])')
note "verdict: $VERDICT"
[[ "$VERDICT" == shadow || "$VERDICT" == promoted ]] || fail "the challenger did not win its held-out slice ($VERDICT); see $WORK/retrainer.log"
CHALLENGER=$(triage models decisions --json | python3 -c 'import json,sys; d=json.load(sys.stdin)["decisions"][-1]; print(d["challenger"]["version"])')
phase retrain

# ---- 7. the live race ------------------------------------------------------------
RACE_AT=$SECONDS
if [[ "$VERDICT" == shadow ]]; then
  say "the live race: $CHALLENGER scored in shadow beside $FIRST on the same messages; late labels decide"
  start produce-recovery "$WORK/produce-recovery.log" "$TRIAGE" --config "$ABS/triage.toml" \
    produce --file "$ABS/data/recovery.jsonl" --labels-topic --labels-delay-s 5 --strip-labels --seed 3
  race_line() {
    local m="http://$RETRAINER/metrics"
    note "race: $(q metric "$m" triage_race_labelled_messages "champion=$FIRST" "challenger=$CHALLENGER") labelled messages; live macro-F1 $FIRST $(q metric "$m" triage_race_macro_f1 "champion=$FIRST" "challenger=$CHALLENGER" role=champion), $CHALLENGER $(q metric "$m" triage_race_macro_f1 "champion=$FIRST" "challenger=$CHALLENGER" role=challenger); p(promote) $(q metric "$m" triage_race_p_value "champion=$FIRST" "challenger=$CHALLENGER" test=promote)"
  }
  promoted_jobs() { q metric "http://$RETRAINER/metrics" triage_retrain_jobs_total verdict=promoted; }
  last=""
  for _ in $(seq 1 90); do
    line=$(race_line)
    [[ "$line" != "$last" ]] && echo "$line"
    last=$line
    [[ "$(promoted_jobs)" != 0 ]] && break
    sleep 2
  done
  wait "${PIDS[-1]}" || fail "the producer failed; see $WORK/produce-recovery.log"
  wait_for 60 "the race's verdict (see $WORK/retrainer.log)" at_least 1 promoted_jobs
  RACE=$(triage models decisions --json | python3 scripts/demo.py race-summary)
  note "race verdict: $RACE ($((SECONDS - RACE_AT)) s)"
else
  RACE="none: $CHALLENGER promoted directly (retrain.rollout = direct)"
fi
note "champion history:"
triage models history | tail -n 4 | sed 's/^/      /'
NEW=$(champion)
[[ "$NEW" == "$CHALLENGER" ]] || fail "$CHALLENGER is not the champion ($NEW); see $WORK/retrainer.log"
phase race

# ---- 8. the new champion serving ----------------------------------------------------
say "more traffic: the consumers serve $NEW (the replaced $FIRST stays in shadow while the guard watches)"
start produce-serving "$WORK/produce-serving.log" "$TRIAGE" --config "$ABS/triage.toml" \
  produce --file "$ABS/data/serving.jsonl" --labels-topic --labels-delay-s 5 --strip-labels --seed 4
wait_for 180 "predictions by $NEW" at_least 1 q metric "http://$SERVICE/metrics" triage_predictions_total "model_version=$NEW"
wait "${PIDS[-1]}" || fail "the producer failed; see $WORK/produce-serving.log"
sleep 3
note "predictions by model: $(served)"
triage topics tail --count 100000 --idle-s 5 >"$WORK/predictions.jsonl"
note "sample predictions by $NEW:"
q predictions "$WORK/predictions.jsonl" "$WORK/data/serving.jsonl,$WORK/data/recovery.jsonl,$WORK/data/drift-mix.jsonl" 4 "$NEW"
note "POST http://$SERVICE/v1/classify:"
sample=$(head -n 2 "$WORK/data/drift-mix.jsonl" | python3 -c 'import json,sys; [print(" ".join(json.loads(l)["text"].split())) for l in sys.stdin]')
mapfile -t texts <<<"$sample"
q classify "$SERVICE" "${texts[@]}"

if [[ -n "${DEMO_AT_END:-}" ]]; then
  say "DEMO_AT_END: $DEMO_AT_END"
  SERVICE=$SERVICE RETRAINER=$RETRAINER bash -c "$DEMO_AT_END" || fail "DEMO_AT_END failed"
fi
say "success: the whole loop ran in $((SECONDS - START)) s"
note "first label after        ${FIRST_LABEL_AT} s"
note "messages labelled        $(predicted)   (by model: $(served))"
note "late labels joined       $(q metric "http://$RETRAINER/metrics" triage_performance_labels_total result=joined)"
note "alert firing after       ${ALERT_AFTER} s of drifted traffic ($LABELS_AFTER late labels of it joined): $FIRED"
note "retrain verdict          $VERDICT: $CHALLENGER (triage models decisions)"
note "live race                $RACE"
note "now serving              $NEW"
note "logs and data            $WORK/"
