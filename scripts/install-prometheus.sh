#!/usr/bin/env bash
# Installs Prometheus (with promtool) from Debian's packages if it is missing.
# The packages start no daemon here; triage's tests run it as a plain process.
set -euo pipefail
if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "install-prometheus: run as root, or: sudo apt-get install -y prometheus" >&2
  exit 1
fi
echo "install-prometheus: apt-get install prometheus (about 20 s)" >&2
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
