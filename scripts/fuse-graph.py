#!/usr/bin/env python3
"""Makes the fused int8 graph of all-MiniLM-L6-v2 from the fp32 graph (issue 26).

    python3 scripts/fuse-graph.py SRC_MODEL_ONNX DST_MODEL_ONNX [--keep-dir DIR]

scripts/quantize.sh runs it in its pinned throw-away venv (onnxruntime 1.31.1, onnx
1.23.2, numpy 2.4.6, plus sympy for onnxruntime's transformer optimizer). Steps:

1. `quant_pre_process` folds the cached graph's dequantised weights into fp32
   initializers (as for the default int8 graph).
2. Each layer's self-attention, as this export spells it (Q, K and V MatMul + bias,
   Reshape/Transpose, both sides scaled by 32^-1/4, the mask built with Where and
   the softmax's NaNs zeroed with IsNaN/Where), becomes one com.microsoft `Attention`
   node: the three weight matrices side by side (384 x 1152), the three biases, 12
   heads, and the model's attention_mask as its mask (0/1 per token, int32).
   ONNX Runtime's own attention fusion does not match this export's mask, so the
   rewrite is done here, by the initializer names of each layer's biases; then the
   nodes nothing reads any more are dropped. The script checks the rewrite against
   the folded graph on a few token sequences before going on (it must agree to
   fp32 rounding: the same arithmetic in another order).
3. onnxruntime's transformer optimizer (model_type bert, 12 heads, hidden 384,
   Python fusions only: opt_level 0) fuses the erf GELU with its bias into BiasGelu.
   Its SkipLayerNormalization fusion is off, and each residual Add before a
   LayerNormalization becomes a Sum of the same two tensors, so that ONNX Runtime
   does not fuse it at load time either: its SkipLayerNormalization kernel took 6x
   the time of Sum + LayerNormalization here (docs/performance.md).
4. `quantize_dynamic` with int8 weights per output channel: the MatMuls become
   MatMulInteger and the Attention nodes QAttention (their Q/K/V product in int8).
"""

import argparse
import collections
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HEADS = 12
HIDDEN = 384


def log(msg):
    print(f"fuse-graph: {msg}", file=sys.stderr)


def producers(graph):
    return {out: n for n in graph.node for out in n.output}


def consumers(graph):
    c = collections.defaultdict(list)
    for n in graph.node:
        for i in n.input:
            c[i].append(n)
    return c


def fuse_attention(model):
    """Replaces each layer's attention subgraph with one Attention node; returns the count."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    prod = producers(g)
    cons = consumers(g)

    def linear(bias_name):
        """The MatMul + Add(bias) of a projection: (activation, weight array, bias array, add node)."""
        adds = [n for n in cons.get(bias_name, []) if n.op_type == "Add"]
        if len(adds) != 1:
            return None
        add = adds[0]
        other = [i for i in add.input if i != bias_name][0]
        mm = prod.get(other)
        if mm is None or mm.op_type != "MatMul" or mm.input[1] not in inits:
            return None
        return (
            mm.input[0],
            numpy_helper.to_array(inits[mm.input[1]]),
            numpy_helper.to_array(inits[bias_name]),
            mm,
        )

    mask_name = "attention_mask_int32"
    new_nodes = []
    replaced = {}  # context tensor name -> Attention node
    layer = 0
    while True:
        prefix = f"inner.encoder.layer.{layer}.attention."
        if prefix + "self.query.bias" not in inits:
            break
        q = linear(prefix + "self.query.bias")
        k = linear(prefix + "self.key.bias")
        v = linear(prefix + "self.value.bias")
        out = linear(prefix + "output.dense.bias")
        if not all((q, k, v, out)):
            sys.exit(f"fuse-graph: layer {layer}'s attention is not the expected MatMul + Add pattern")
        if not q[0] == k[0] == v[0]:
            sys.exit(f"fuse-graph: layer {layer}'s Q, K and V do not read the same input")
        for w, b in ((q[1], q[2]), (k[1], k[2]), (v[1], v[2])):
            if w.shape != (HIDDEN, HIDDEN) or b.shape != (HIDDEN,):
                sys.exit(f"fuse-graph: layer {layer}: unexpected projection shape {w.shape}")
        context = out[0]  # what the output projection reads: the heads' outputs, [B, S, 384]
        w_name, b_name = f"layer{layer}_attention_qkv_weight", f"layer{layer}_attention_qkv_bias"
        g.initializer.append(
            numpy_helper.from_array(np.concatenate([q[1], k[1], v[1]], axis=1).astype(np.float32), w_name)
        )
        g.initializer.append(
            numpy_helper.from_array(np.concatenate([q[2], k[2], v[2]]).astype(np.float32), b_name)
        )
        node = helper.make_node(
            "Attention",
            [q[0], w_name, b_name, mask_name],
            [context],
            name=f"layer{layer}_Attention",
            domain="com.microsoft",
            num_heads=HEADS,
        )
        replaced[context] = node
        layer += 1
    if layer == 0:
        sys.exit("fuse-graph: no attention layer found (initializer names not as expected)")

    cast = helper.make_node("Cast", ["attention_mask"], [mask_name], name="attention_mask_to_int32", to=TensorProto.INT32)
    new_nodes.append(cast)
    for n in g.node:
        hit = [o for o in n.output if o in replaced]
        if hit:
            # The old producer of the context tensor: the Attention node takes its place.
            new_nodes.append(replaced[hit[0]])
        else:
            new_nodes.append(n)
    del g.node[:]
    g.node.extend(new_nodes)
    drop_dead(model)
    if not any(d.domain == "com.microsoft" for d in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return layer


def drop_dead(model):
    """Removes nodes no graph output depends on, and initializers nothing reads."""
    g = model.graph
    prod = producers(g)
    needed = {o.name for o in g.output}
    live = set()
    stack = list(needed)
    while stack:
        name = stack.pop()
        n = prod.get(name)
        if n is None or id(n) in live:
            continue
        live.add(id(n))
        stack.extend(i for i in n.input if i)
    keep = [n for n in g.node if id(n) in live]
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in keep for i in n.input}
    inits = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    vi = [v for v in g.value_info if v.name in used or v.name in {o for n in keep for o in n.output}]
    del g.value_info[:]
    g.value_info.extend(vi)


def unfusable_residuals(model):
    """Turns each residual Add (two computed inputs) that feeds a LayerNormalization into
    a Sum of the same two tensors: the same arithmetic, which ONNX Runtime's
    SkipLayerNormalization fusion (it matches Add only) leaves alone. Returns the count.

    Measured on this machine, one thread, 104 tokens x 384: SkipLayerNormalization
    219-289 us, Sum + LayerNormalization 36 us (scripts/profile-graph.py and
    docs/performance.md)."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    prod = producers(g)
    count = 0
    for n in g.node:
        if n.op_type != "LayerNormalization":
            continue
        add = prod.get(n.input[0])
        if add is None or add.op_type != "Add" or any(i in inits for i in add.input):
            continue
        add.op_type = "Sum"
        count += 1
    return count


def check_same(a_path, b_path, tol):
    """Runs both graphs on a few random token sequences (some padded); returns the worst abs diff."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    a = ort.InferenceSession(a_path, opts, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(b_path, opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch, seq, pad in ((1, 7, 0), (1, 60, 0), (2, 33, 9), (3, 128, 40)):
        ids = rng.integers(1000, 30000, size=(batch, seq), dtype=np.int64)
        ids[:, 0] = 101
        mask = np.ones((batch, seq), dtype=np.int64)
        if pad:
            mask[1:, seq - pad :] = 0  # later rows padded, the first not
            ids[mask == 0] = 0
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        ya = a.run(None, feed)[0]
        yb = b.run(None, feed)[0]
        # Padding positions' outputs are never read (mean pooling masks them).
        m = mask[..., None].astype(bool)
        worst = max(worst, float(np.abs(np.where(m, ya - yb, 0)).max()))
    if worst > tol:
        sys.exit(f"fuse-graph: the rewritten graph differs from {a_path} by {worst} (> {tol})")
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--keep-dir", help="keep the intermediate graphs here")
    ap.add_argument("--no-quantize", action="store_true", help="stop after the fp32 fusions")
    args = ap.parse_args()

    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    work = args.keep_dir or tempfile.mkdtemp()
    os.makedirs(work, exist_ok=True)
    folded = os.path.join(work, "folded.onnx")
    attn = os.path.join(work, "attention.onnx")
    fused = os.path.join(work, "fused-fp32.onnx")

    quant_pre_process(args.src, folded, skip_symbolic_shape=True)
    model = onnx.load(folded)
    layers = fuse_attention(model)
    onnx.checker.check_model(model)
    onnx.save(model, attn)
    worst = check_same(folded, attn, 1e-3)
    log(f"{layers} attention subgraphs -> Attention; largest difference from the folded graph {worst:.2e}")

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = False
    opt = optimize_model(
        attn,
        model_type="bert",
        num_heads=HEADS,
        hidden_size=HIDDEN,
        opt_level=0,
        use_gpu=False,
        optimization_options=options,
    )
    residuals = unfusable_residuals(opt.model)
    log(f"{residuals} residual Adds before a LayerNormalization -> Sum")
    opt.save_model_to_file(fused)
    worst = check_same(folded, fused, 1e-3)
    ops = collections.Counter(n.op_type for n in onnx.load(fused).graph.node)
    log(f"fp32 fused graph: {dict(ops)}; largest difference from the folded graph {worst:.2e}")
    if args.no_quantize:
        onnx.save(onnx.load(fused), args.dst)
        return

    quantize_dynamic(fused, args.dst, weight_type=QuantType.QInt8, per_channel=True)
    ops = collections.Counter(n.op_type for n in onnx.load(args.dst).graph.node)
    if ops["QAttention"] != layers:
        sys.exit(f"fuse-graph: {ops['QAttention']} QAttention nodes, expected {layers}")
    log(f"int8 fused graph: {dict(ops)}")


if __name__ == "__main__":
    main()
