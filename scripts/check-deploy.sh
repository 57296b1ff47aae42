#!/usr/bin/env bash
# Keeps the deployment files in step with the ones the tests run, so they cannot drift:
#   - deploy/compose/prometheus.yml and deploy/compose/alertmanager.yml are
#     deploy/prometheus/prometheus.yml and deploy/alertmanager/alertmanager.yml with the
#     compose services' names for the loopback addresses (and the token's path there);
#   - deploy/k8s/prometheusrule.yaml is a PrometheusRule whose spec is
#     deploy/prometheus/rules/triage.yml (the file promtool and tests/dashboards.rs test);
#   - deploy/Dockerfile's RUST_VERSION is rust-toolchain.toml's channel, and every file
#     it copies exists and passes .dockerignore.
#
#   scripts/check-deploy.sh           check: exit 1 naming each stale file
#   scripts/check-deploy.sh --write   regenerate the three generated files
set -euo pipefail
cd "$(dirname "$0")/.."

generated() { # source -> the header every generated file starts with
  printf '# GENERATED from %s by scripts/check-deploy.sh --write: edit that file, then\n# run the script; scripts/test.sh fails when this copy is stale.\n' "$1"
}

compose_prometheus() {
  generated deploy/prometheus/prometheus.yml
  echo "# docker-compose.yml's Prometheus: the services by name (rules mounted at rules/)."
  sed -e '1,/^[^#]/{/^#/d}' \
    -e 's|"127\.0\.0\.1:9464"|"triage-1:9464", "triage-2:9464"|' \
    -e 's|127\.0\.0\.1:9465|retrainer:9465|' \
    -e 's|127\.0\.0\.1:9093|alertmanager:9093|' \
    deploy/prometheus/prometheus.yml
}

compose_alertmanager() {
  generated deploy/alertmanager/alertmanager.yml
  echo "# docker-compose.yml's Alertmanager: the retrainer by service name, the token from"
  echo "# the webhook-token volume the compose file's webhook-token service fills."
  sed -e '1,/^[^#]/{/^#/d}' \
    -e 's|127\.0\.0\.1:9465|retrainer:9465|' \
    -e 's|/etc/triage/retrain-webhook\.token|/run/triage/retrain-webhook.token|' \
    deploy/alertmanager/alertmanager.yml
}

k8s_rules() {
  generated deploy/prometheus/rules/triage.yml
  cat <<'YAML'
# prometheus-operator: the alert rules. Add your Prometheus's ruleSelector label if it
# selects PrometheusRules by label.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: triage
  labels:
    app.kubernetes.io/part-of: triage
spec:
YAML
  sed -e '/^#/d' -e 's/^./  &/' deploy/prometheus/rules/triage.yml
}

declare -A files=(
  [deploy/compose/prometheus.yml]=compose_prometheus
  [deploy/compose/alertmanager.yml]=compose_alertmanager
  [deploy/k8s/prometheusrule.yaml]=k8s_rules
)

stale=0
for file in "${!files[@]}"; do
  want=$("${files[$file]}")
  if grep -v '^ *#' <<<"$want" | grep -q '127\.0\.0\.1'; then
    echo "check-deploy: $file would still hold a loopback address: teach scripts/check-deploy.sh the new one" >&2
    stale=1
  fi
  if [[ ${1:-} == --write ]]; then
    printf '%s\n' "$want" >"$file"
  elif [[ "$(cat "$file" 2>/dev/null)" != "$want" ]]; then
    echo "check-deploy: $file is stale (its source changed): run scripts/check-deploy.sh --write" >&2
    stale=1
  fi
done

toolchain=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
dockerfile=$(sed -n 's/^ARG RUST_VERSION=//p' deploy/Dockerfile)
if [[ "$toolchain" != "$dockerfile" ]]; then
  echo "check-deploy: deploy/Dockerfile builds with Rust $dockerfile, rust-toolchain.toml says $toolchain: set ARG RUST_VERSION=$toolchain" >&2
  stale=1
fi
# Every file the image copies from the build context exists and is let through by
# .dockerignore (which excludes everything else).
while read -r src; do
  if [[ ! -e "$src" ]]; then
    echo "check-deploy: deploy/Dockerfile copies $src, which does not exist" >&2
    stale=1
  elif ! grep -qxF "!$src" .dockerignore && ! grep -qxF "!$src/" .dockerignore; then
    echo "check-deploy: deploy/Dockerfile copies $src, which .dockerignore leaves out: add !$src" >&2
    stale=1
  fi
done < <(grep -E '^COPY ' deploy/Dockerfile | grep -v -- '--from=' | awk '{for (i = 2; i < NF; i++) print $i}')
exit "$stale"
