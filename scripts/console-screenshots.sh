#!/usr/bin/env bash
# The console screenshots of docs/console.md, taken from the whole-loop demo on real
# data, after the retrain: what a person sees on a running system, not a test's
# fixture. The pictures in docs/ come from the seed's Yelp reviews:
#
#   DATA=../shared/data/yelp/reviews-5k.jsonl bash scripts/console-screenshots.sh
#
# (any DATA the demo takes works; SHOT_TEXT sets the message on the Classify page.)
#
# Needs what `make demo` needs, and Debian's Chromium (scripts/install-debian.sh
# chromium:chromium). Rerun it after a change to the console's pages.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="$(pwd)/docs/console"
mkdir -p "$OUT"
if [[ "${1:-}" != --shoot ]]; then
  bash scripts/install-debian.sh chromium:chromium >/dev/null
  DEMO_AT_END="bash $(pwd)/scripts/console-screenshots.sh --shoot" bash scripts/demo.sh
  exit 0
fi
# --shoot: run by the demo at its end, with SERVICE and RETRAINER set.
: "${SERVICE:?run without --shoot}" "${RETRAINER:?run without --shoot}"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
shoot() { # shoot NAME URL WIDTH HEIGHT
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" --window-size="$3,$4" \
    --screenshot="$OUT/$1.png" "$2" >/dev/null 2>&1
  echo "console-screenshots: $1.png ($(stat -c %s "$OUT/$1.png") bytes) from $2"
}
if [[ -z "${SHOT_TEXT:-}" ]]; then
  case "${DATA:-}" in
    *yelp*) SHOT_TEXT="The food was fine but we waited forty minutes for a table and nobody apologised" ;;
    *) SHOT_TEXT="I was charged twice for my order last week and I want my money back" ;;
  esac
fi
text=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote_plus(sys.argv[1]))' "$SHOT_TEXT")
shoot classify "http://$SERVICE/?text=$text" 1280 900
shoot models "http://$SERVICE/models" 1280 1100
shoot drift "http://$SERVICE/drift" 1280 1300
shoot classify-phone "http://$SERVICE/?text=$text" 390 844
shoot drift-phone "http://$SERVICE/drift" 390 844
shoot review-read-only "http://$SERVICE/review" 1280 900
shoot retraining "http://$RETRAINER/retraining" 1280 1000
shoot retrainer "http://$RETRAINER/" 1280 900
