#!/usr/bin/env bash
# Installs kubernetes-validate (PyPI) into a cached virtual environment and prints the
# path of its command. It validates Kubernetes manifests offline against the schemas it
# bundles. A second run finds the venv and prints the path with no network.
#
#   KV=$(bash scripts/install-kubernetes-validate.sh) && "$KV" --strict deploy/k8s/*.yaml
set -euo pipefail
VERSION="1.37.0"
VENV="${TRIAGE_TOOLS_DIR:-$HOME/.cache/triage/tools}/kubernetes-validate-$VERSION"
BIN="$VENV/bin/kubernetes-validate"
if [[ ! -x "$BIN" ]]; then
  command -v python3 >/dev/null || { echo "install-kubernetes-validate: python3 is needed" >&2; exit 1; }
  echo "install-kubernetes-validate: pip install kubernetes-validate==$VERSION into $VENV (about 30 s)" >&2
  rm -rf "$VENV.part"
  python3 -m venv "$VENV.part"
  "$VENV.part/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VERSION" >&2
  # The venv's scripts name their interpreter by path: build under .part, then fix the
  # shebangs as the folder moves into place.
  sed -i "1s|$VENV.part|$VENV|" "$VENV.part"/bin/*
  sed -i "s|$VENV.part|$VENV|g" "$VENV.part/pyvenv.cfg" "$VENV.part"/bin/activate* 2>/dev/null || true
  mv "$VENV.part" "$VENV"
fi
echo "$BIN"
