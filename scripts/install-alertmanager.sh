#!/usr/bin/env bash
# Installs Alertmanager (Debian's prometheus-alertmanager, with amtool) if it is
# missing. The package starts no daemon here; run it as a plain process with
# deploy/alertmanager/alertmanager.yml when you want one.
set -euo pipefail
if command -v amtool >/dev/null && command -v prometheus-alertmanager >/dev/null; then
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "install-alertmanager: run as root, or: sudo apt-get install -y prometheus-alertmanager" >&2
  exit 1
fi
echo "install-alertmanager: apt-get install prometheus-alertmanager (about 15 s)" >&2
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >/dev/null
