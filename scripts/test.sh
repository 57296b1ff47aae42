#!/usr/bin/env bash
# The test command (README, `make test`, .ci/run): installs what the tests need
# (runtime + model, the tansu broker, Prometheus, Alertmanager), then format check,
# lints, the alert-rule unit tests, the Alertmanager routes, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
TRIAGE_TANSU="$(bash scripts/install-tansu.sh)"
export TRIAGE_TANSU
# moto's S3-compatible server for the registry-on-object-storage tests (cached venv).
TRIAGE_MOTO="$(bash scripts/install-moto.sh)"
export TRIAGE_MOTO
# Prometheus and Alertmanager from Debian, one apt-get update for both when missing.
bash scripts/install-debian.sh prometheus:prometheus,promtool \
  prometheus-alertmanager:prometheus-alertmanager,amtool

echo "==> promtool: config check and alert-rule unit tests"
promtool check config deploy/prometheus/prometheus.yml
promtool test rules deploy/prometheus/tests/triage_test.yml

echo "==> amtool: config check and routes (drift alerts to the retrainer, the rest to null)"
amtool check-config deploy/alertmanager/alertmanager.yml
for alert in TriageDriftDetected TriagePerformanceDrop; do
  amtool config routes test --config.file=deploy/alertmanager/alertmanager.yml \
    --verify.receivers=triage-retrainer "alertname=$alert" >/dev/null
done
amtool config routes test --config.file=deploy/alertmanager/alertmanager.yml \
  --verify.receivers=null alertname=TriageDeadLetterRate >/dev/null

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

echo "==> cargo test"
cargo test --all-targets
