#!/usr/bin/env bash
# The end-to-end demo: set up, build, train on real Yelp reviews, evaluate on
# reviews the model has not seen, and classify a few messages.
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
