#!/usr/bin/env bash
# Installs moto's S3-compatible server (PyPI `moto[server]`, for the tests of the model
# registry on object storage) into a virtual environment in the triage cache, once.
# A second run finds it and exits.
#
#   scripts/install-moto.sh     prints the path of the moto_server binary on stdout
set -euo pipefail

CACHE="${TRIAGE_CACHE_DIR:-$HOME/.cache/triage}"
VERSION="5.2.5"
ROOT="$CACHE/tools/moto-$VERSION"
BIN="$ROOT/bin/moto_server"
# Written last: a venv without it is a broken install and is made again.
DONE="$ROOT/.installed"

if [[ -x "$BIN" && -f "$DONE" ]]; then
  echo "$BIN"
  exit 0
fi
echo "install-moto: installing moto[server] $VERSION from PyPI into $ROOT (a minute, once)" >&2
# A venv's scripts name their interpreter by absolute path, so it is built in place.
rm -rf "$ROOT"
python3 -m venv "$ROOT" >&2
"$ROOT/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$VERSION" >&2
touch "$DONE"
echo "$BIN"
