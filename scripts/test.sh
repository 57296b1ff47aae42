#!/usr/bin/env bash
# The test command (README, `make test`, .ci/run): installs what the tests need
# (runtime + model, the tansu broker, Prometheus, Alertmanager, docker-compose,
# kubernetes-validate, Chromium), then format check, lints, the alert-rule unit tests,
# the Alertmanager routes, the deployment files, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
TRIAGE_TANSU="$(bash scripts/install-tansu.sh)"
export TRIAGE_TANSU
# moto's S3-compatible server for the registry-on-object-storage tests (cached venv).
TRIAGE_MOTO="$(bash scripts/install-moto.sh)"
export TRIAGE_MOTO
# Prometheus, Alertmanager, docker-compose (validates docker-compose.yml without an
# engine) and Chromium with its WebDriver (the console's browser test) from Debian,
# one apt-get update for all when missing.
bash scripts/install-debian.sh prometheus:prometheus,promtool \
  prometheus-alertmanager:prometheus-alertmanager,amtool docker-compose:docker-compose \
  chromium:chromium chromium-driver:chromedriver

echo "==> promtool: config check and alert-rule unit tests"
promtool check config deploy/prometheus/prometheus.yml
promtool test rules deploy/prometheus/tests/triage_test.yml

echo "==> amtool: config check and routes (drift alerts to the retrainer, the rest to null)"
for am in deploy/alertmanager/alertmanager.yml deploy/compose/alertmanager.yml; do
  amtool check-config "$am"
  for alert in TriageDriftDetected TriagePerformanceDrop; do
    amtool config routes test --config.file="$am" \
      --verify.receivers=triage-retrainer "alertname=$alert" >/dev/null
  done
  amtool config routes test --config.file="$am" \
    --verify.receivers=null alertname=TriageDeadLetterRate >/dev/null
done

echo "==> deployment files: generated copies in step, compose file and Kubernetes manifests valid"
bash scripts/check-deploy.sh
promtool check config deploy/compose/prometheus.yml
docker-compose -f docker-compose.yml config -q
# Offline, against the bundled Kubernetes 1.37 schemas, rejecting unknown fields. The
# prometheus-operator and KEDA kinds have no bundled schema (a warning): any other
# warning fails.
KUBERNETES_VALIDATE="$(bash scripts/install-kubernetes-validate.sh)"
kv_out=$("$KUBERNETES_VALIDATE" --strict --quiet deploy/k8s/*.yaml 2>&1) || { echo "$kv_out"; exit 1; }
if grep -v -E "schema for kind (ServiceMonitor|PrometheusRule|ScaledObject) " <<<"$kv_out" | grep -q .; then
  echo "$kv_out"
  exit 1
fi
# What no schema checks: the manifests name the same Services, ports, labels, workload,
# consumer group, topic and Secrets (with the venv's Python, which has PyYAML).
# The same for docker-compose.yml: scrape targets, webhook URL and token file, mounts.
"$(dirname "$KUBERNETES_VALIDATE")/python" scripts/check-k8s-refs.py
"$(dirname "$KUBERNETES_VALIDATE")/python" scripts/check-compose-refs.py
# The PrometheusRule's spec is a rules file promtool can check.
sed -n '/^spec:/,$p' deploy/k8s/prometheusrule.yaml | sed '1d;s/^  //' >"${TMPDIR:-/tmp}/triage-k8s-rules.yml"
promtool check rules "${TMPDIR:-/tmp}/triage-k8s-rules.yml" >/dev/null

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

echo "==> cargo test"
cargo test --all-targets
