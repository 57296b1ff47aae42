#!/usr/bin/env bash
# The end-to-end demo: set up, build, train on real Yelp reviews, evaluate on
# reviews the model has not seen, classify a few messages, then stream: start a
# local broker, run the service, send unseen reviews, show their labels and metrics.
#
#   DATA=path/to/reviews.jsonl ROWS=5000 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DATA="${DATA:-../shared/data/yelp/reviews-5k.jsonl}"
ROWS="${ROWS:-4000}"          # trained on the first ROWS, evaluated on the rest
WORK="${WORK:-.triage/demo}"

[[ -f "$DATA" ]] || { echo "demo: $DATA not found; set DATA=path/to/reviews.jsonl" >&2; exit 1; }

bash scripts/setup.sh
echo "==> building triage (release)"
cargo build --release --quiet
TRIAGE=target/release/triage
export TRIAGE__PATHS__REGISTRY_DIR="$WORK/registry"

mkdir -p "$WORK"
head -n "$ROWS" "$DATA" > "$WORK/train.jsonl"
tail -n "+$((ROWS + 1))" "$DATA" > "$WORK/unseen.jsonl"

echo "==> triage train --data $WORK/train.jsonl"
"$TRIAGE" train --data "$WORK/train.jsonl" || [[ $? == 3 ]]

if [[ -s "$WORK/unseen.jsonl" ]]; then
  echo "==> triage evaluate --data $WORK/unseen.jsonl (reviews the model has not seen)"
  "$TRIAGE" evaluate --data "$WORK/unseen.jsonl"
fi

echo "==> triage classify"
printf '%s\n' \
  "The pasta was cold and the waiter ignored us for half an hour." \
  "It was fine. Nothing special, nothing bad, decent prices." \
  "Best brunch in town, friendly staff, we will definitely be back!" |
  "$TRIAGE" classify

echo "==> triage models list"
"$TRIAGE" models list

[[ -s "$WORK/unseen.jsonl" ]] || exit 0
echo "==> batch mode: triage run --input (the same pipeline over a file, no broker)"
head -n 50 "$WORK/unseen.jsonl" > "$WORK/batch-in.jsonl"
"$TRIAGE" run --input "$WORK/batch-in.jsonl" --output "$WORK/batch-predictions.jsonl" || [[ $? == 4 ]]
head -n 2 "$WORK/batch-predictions.jsonl" | cut -c1-160

echo "==> streaming: local broker (tansu), topics, triage run"
bash scripts/broker.sh start
run_id="demo-$(date +%s)"
export TRIAGE__KAFKA__INPUT_TOPICS="$run_id-messages" TRIAGE__KAFKA__PREDICTIONS_TOPIC="$run_id-predictions"
export TRIAGE__KAFKA__DLQ_TOPIC="$run_id-dlq" TRIAGE__KAFKA__FEATURES_TOPIC="$run_id-features"
export TRIAGE__KAFKA__GROUP_ID="$run_id" TRIAGE__HTTP__LISTEN="127.0.0.1:${HTTP_PORT:-9464}"
"$TRIAGE" topics create --partitions 2
"$TRIAGE" run 2> "$WORK/run.log" &
run_pid=$!
trap 'kill -TERM $run_pid 2>/dev/null; wait $run_pid 2>/dev/null' EXIT
metrics() { python3 -c "import sys,urllib.request; print(urllib.request.urlopen('http://$TRIAGE__HTTP__LISTEN' + sys.argv[1]).read().decode())" "$1"; }
for _ in $(seq 120); do metrics /readyz >/dev/null 2>&1 && break; sleep 0.5; done
STREAM_ROWS="${STREAM_ROWS:-200}"
"$TRIAGE" topics send --data "$WORK/unseen.jsonl" --rows "$STREAM_ROWS"
echo "==> predictions (first 5 of $STREAM_ROWS)"
"$TRIAGE" topics tail --count "$STREAM_ROWS" --idle-s 60 > "$WORK/predictions.jsonl"
head -n 5 "$WORK/predictions.jsonl"
python3 - "$WORK/predictions.jsonl" <<'PY'
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1])]
mix = collections.Counter(r["label"] for r in rows)
right = sum(r["label"] == r["ground_truth"] for r in rows if r.get("ground_truth"))
print(f"{len(rows)} predictions, label mix {dict(mix)}, agreement with the stars {right}/{len(rows)}")
PY
echo "==> metrics (selected)"
metrics /metrics | grep -E '^triage_(messages_in|predictions|windows|dlq|model_info|ready|consumer_lag)' | head -20
kill -TERM $run_pid; wait $run_pid 2>/dev/null || true
trap - EXIT
bash scripts/broker.sh stop
