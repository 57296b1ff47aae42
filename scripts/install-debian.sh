#!/usr/bin/env bash
# Installs Debian packages whose commands are missing, with one apt-get update for all.
# The packages start no daemon here; triage's tests run them as plain processes.
#
#   scripts/install-debian.sh PACKAGE:COMMAND[,COMMAND...] ...
#   e.g. scripts/install-debian.sh prometheus:prometheus,promtool prometheus-alertmanager:amtool
set -euo pipefail
missing=()
for spec in "$@"; do
  package=${spec%%:*}
  IFS=, read -r -a commands <<<"${spec#*:}"
  for c in "${commands[@]}"; do
    if ! command -v "$c" >/dev/null; then
      missing+=("$package")
      break
    fi
  done
done
[[ ${#missing[@]} == 0 ]] && exit 0
if [[ $(id -u) != 0 ]]; then
  echo "install-debian: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "install-debian: apt-get install ${missing[*]} (about 20 s)" >&2
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
