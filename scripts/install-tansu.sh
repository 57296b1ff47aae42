#!/usr/bin/env bash
# Installs the tansu Kafka-protocol broker (for local development and the
# integration tests) into the triage cache, once. A second run finds it and exits.
#
#   scripts/install-tansu.sh     prints the path of the tansu binary on stdout
set -euo pipefail

CACHE="${TRIAGE_CACHE_DIR:-$HOME/.cache/triage}"
VERSION="0.6.0"
ROOT="$CACHE/tools/tansu-$VERSION"
BIN="$ROOT/bin/tansu"

if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi
echo "install-tansu: building tansu $VERSION from crates.io into $ROOT (10-15 minutes, once)" >&2
# SQLite storage (libsql) is the one that keeps delivery semantics right; see
# ../shared/docs/environment.md. Newer releases need a newer rustc.
cargo install tansu --version "$VERSION" --locked --features dynostore,libsql \
  --root "$ROOT.partial" --quiet >&2
rm -rf "$ROOT"
mv "$ROOT.partial" "$ROOT"
echo "$BIN"
