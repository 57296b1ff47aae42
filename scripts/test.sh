#!/usr/bin/env bash
# The test command (README, `make test`, .ci/run): installs what the tests need
# (runtime + model, the tansu broker), then format check, lints, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
TRIAGE_TANSU="$(bash scripts/install-tansu.sh)"
export TRIAGE_TANSU

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

echo "==> cargo test"
cargo test --all-targets
