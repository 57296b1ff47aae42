#!/usr/bin/env bash
# Makes the int8 graphs of all-MiniLM-L6-v2 with ONNX Runtime dynamic quantisation
# (weights int8 with one scale per output channel, activations quantised at run
# time), in a throw-away virtual environment, next to the fp32 model:
#
#   <cache>/models/all-MiniLM-L6-v2-int8-fused/  the default: each layer's attention as
#       one QAttention node, no SkipLayerNormalization (scripts/fuse-graph.py)
#   <cache>/models/all-MiniLM-L6-v2-int8/        int8 as exported (the default until
#       2026-12-06: champions trained on it keep serving on it)
#
# scripts/setup.sh runs it. The int8 graph is 1.5x the fp32 graph's throughput at the
# same macro-F1; the fused one 1.4x the int8 one again (docs/performance.md).
# A model card records its graph's checksum, and serving runs each model on its own
# graph, so either can serve a champion trained on it. Each is made once per fp32
# source graph and checked against its pinned sha256.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${TRIAGE_CACHE_DIR:-$HOME/.cache/triage}"
SRC="$CACHE/models/all-MiniLM-L6-v2"
DST="$CACHE/models/all-MiniLM-L6-v2-int8"
FUSED="$CACHE/models/all-MiniLM-L6-v2-int8-fused"
log() { echo "quantize: $*" >&2; }

[[ -f "$SRC/model.onnx" ]] || bash scripts/setup.sh
SRC_SHA=$(sha256sum "$SRC/model.onnx" | cut -d' ' -f1)
current() { # folder tag -> 0 when its graph was made from this fp32 graph with this recipe
  [[ -f "$1/model.onnx" && -f "$1/.source-sha256" && "$(cat "$1/.source-sha256")" == "$SRC_SHA:$2" ]]
}
if current "$DST" per-channel && current "$FUSED" fused-per-channel; then
  log "int8 models already in $FUSED and $DST"
  echo "$FUSED"
  exit 0
fi

command -v python3 >/dev/null || { log "python3 is needed for onnxruntime's quantisation tool"; exit 1; }
VENV=$(mktemp -d)
trap 'rm -rf "$VENV"' EXIT
log "installing onnxruntime and onnx into a throw-away venv ($VENV)"
python3 -m venv "$VENV"
# Pinned: the graph's bytes (and so its checksum, which model cards record) depend on
# the quantiser's version.
"$VENV/bin/pip" install --quiet --disable-pip-version-check onnxruntime==1.31.1 onnx==1.23.2 numpy==2.4.6 \
  sympy==1.14.0
if ! current "$DST" per-channel; then
  mkdir -p "$DST.tmp"
  for f in tokenizer.json config.json special_tokens_map.json tokenizer_config.json; do
    cp "$SRC/$f" "$DST.tmp/"
  done
  log "quantising $SRC/model.onnx (dynamic, int8 weights per output channel)"
  # The cached graph stores int8 weights that it dequantises (Cast, Mul) into fp32 before
  # every MatMul: quantize_dynamic alone finds no fp32 weight to quantise and changes
  # nothing (measured: same ops, predictions identical). Pre-processing folds those
  # constants into fp32 weights first; then 36 MatMuls become MatMulInteger.
  # Per-channel scales: one scale per weight matrix (per_channel=False) left the
  # embeddings at cosine 0.95 of fp32 on Yelp reviews (min 0.88), the feed-forward
  # output layers worst; one scale per output column keeps 0.994 (min 0.988) at about
  # the same speed (docs/performance.md).
  "$VENV/bin/python" - "$SRC/model.onnx" "$DST.tmp/model.onnx" "$VENV/folded.onnx" <<'PY'
import collections, sys
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process
src, dst, folded = sys.argv[1:4]
quant_pre_process(src, folded, skip_symbolic_shape=True)
quantize_dynamic(folded, dst, weight_type=QuantType.QInt8, per_channel=True)
ops = collections.Counter(n.op_type for n in onnx.load(dst).graph.node)
if ops["MatMulInteger"] == 0:
    sys.exit("quantize: no MatMul was quantised; the model graph is not what this script expects")
print(f"quantize: {ops['MatMulInteger']} MatMulInteger, {ops['MatMul']} MatMul left in fp32", file=sys.stderr)
PY
  echo "$SRC_SHA:per-channel" > "$DST.tmp/.source-sha256"
  # The graph made here and measured in docs/performance.md; another one still works
  # (cards record whichever graph trained them), but models trained elsewhere would not
  # find theirs here.
  WANT=4051217884551073425d6adfd5e1463d9f1c3ab9552a78a8501ff3ee74d7d2bc
  GOT=$(sha256sum "$DST.tmp/model.onnx" | cut -d' ' -f1)
  [[ "$GOT" == "$WANT" ]] || log "warning: the int8 graph's sha256 is $GOT, not the pinned $WANT (another quantiser build?)"
  rm -rf "$DST"
  mv "$DST.tmp" "$DST"
  log "int8 model in $DST ($(du -h "$DST/model.onnx" | cut -f1))"
fi

# The fused graph (docs/performance.md, "Fused attention"): made from the same fp32
# graph by scripts/fuse-graph.py, with the same pinned quantiser.
if ! current "$FUSED" fused-per-channel; then
  mkdir -p "$FUSED.tmp"
  for f in tokenizer.json config.json special_tokens_map.json tokenizer_config.json; do
    cp "$SRC/$f" "$FUSED.tmp/"
  done
  log "fusing and quantising $SRC/model.onnx (scripts/fuse-graph.py)"
  "$VENV/bin/python" scripts/fuse-graph.py "$SRC/model.onnx" "$FUSED.tmp/model.onnx"
  echo "$SRC_SHA:fused-per-channel" > "$FUSED.tmp/.source-sha256"
  WANT=ff441bddd060d028347aeb1a7e3f9736b3aa9e7a216e73f8895890175f4740f5
  GOT=$(sha256sum "$FUSED.tmp/model.onnx" | cut -d' ' -f1)
  [[ "$GOT" == "$WANT" ]] || log "warning: the fused graph's sha256 is $GOT, not the pinned $WANT (another quantiser build?)"
  rm -rf "$FUSED"
  mv "$FUSED.tmp" "$FUSED"
  log "fused int8 model in $FUSED ($(du -h "$FUSED/model.onnx" | cut -f1))"
fi
echo "$FUSED"
