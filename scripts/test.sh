#!/usr/bin/env bash
# The test command (README, `make test`, .ci/run): installs what the tests need
# (runtime + model, the tansu broker, Prometheus), then format check, lints, the
# alert-rule unit tests, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
TRIAGE_TANSU="$(bash scripts/install-tansu.sh)"
export TRIAGE_TANSU
bash scripts/install-prometheus.sh

echo "==> promtool: config check and alert-rule unit tests"
promtool check config deploy/prometheus/prometheus.yml
promtool test rules deploy/prometheus/tests/triage_test.yml

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

echo "==> cargo test"
cargo test --all-targets
