#!/usr/bin/env python3
"""Where an embedding's time goes: ONNX Runtime's per-operator profile of a graph.

Runs real reviews through a graph one text per call (as the service embeds, batch 1),
on one intra-op thread per session (as each of the service's 2 workers runs), with
every graph optimisation on (fastembed's Level3), and adds up the profiler's kernel
times by operator type, after ONNX Runtime's own fusions (so the names are the kernels
that ran, e.g. MatMulIntegerToFloat).

    python3 scripts/profile-graph.py GRAPH_DIR [GRAPH_DIR...] [--texts 200] [--json]

Needs onnxruntime, numpy and tokenizers (scripts/quantize.sh's pinned venv plus
`tokenizers`). The texts: the first --texts reviews of --data, tokenised with the
graph folder's tokenizer.json and truncated to --max-length tokens.
"""

import argparse
import collections
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def load_texts(path, count, skip=0):
    texts = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < skip:
                continue
            texts.append(json.loads(line)["text"])
            if len(texts) == count:
                break
    return texts


def encode(graph_dir, texts, max_length):
    tok = Tokenizer.from_file(os.path.join(graph_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length)
    feeds = []
    for e in tok.encode_batch(texts):
        ids = np.array([e.ids], dtype=np.int64)
        feeds.append(
            {
                "input_ids": ids,
                "attention_mask": np.array([e.attention_mask], dtype=np.int64),
                "token_type_ids": np.zeros_like(ids),
            }
        )
    return feeds


def session(graph, threads, profile_prefix=None):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])


def run(sess, feed):
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feed.items() if k in names})[0]


def profile(graph_dir, feeds, threads):
    tmp = tempfile.mkdtemp()
    sess = session(os.path.join(graph_dir, "model.onnx"), threads, os.path.join(tmp, "p"))
    for feed in feeds[:5]:  # warm-up, not counted below
        run(sess, feed)
    start = time.perf_counter()
    for feed in feeds:
        run(sess, feed)
    wall = time.perf_counter() - start
    trace = sess.end_profiling()
    with open(trace, encoding="utf-8") as f:
        events = json.load(f)
    os.remove(trace)
    by_op = collections.Counter()
    calls = collections.Counter()
    runs = [e["dur"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        op = e.get("args", {}).get("op_name", "?")
        by_op[op] += e["dur"]
        calls[op] += 1
    # Per-run figures average every run in the trace (the 5 warm-up runs too).
    total_kernel = sum(by_op.values())
    total_run = sum(runs)
    return {
        "graph": graph_dir,
        "texts": len(feeds),
        "tokens_per_text": float(np.mean([f["input_ids"].shape[1] for f in feeds])),
        "texts_per_s_profiled": len(feeds) / wall,
        "ms_per_run": total_run / len(runs) / 1000.0,
        "kernel_share_of_run": total_kernel / total_run,
        "ops": [
            {
                "op": op,
                "ms_per_text": us / len(runs) / 1000.0,
                "share": us / total_kernel,
                "nodes_per_run": calls[op] / len(runs),
            }
            for op, us in by_op.most_common()
        ],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("graphs", nargs="+", help="folders with model.onnx and tokenizer.json")
    ap.add_argument("--data", default="/work/shared/data/yelp/reviews-5k.jsonl")
    ap.add_argument("--texts", type=int, default=200)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    texts = load_texts(args.data, args.texts)
    out = []
    for g in args.graphs:
        feeds = encode(g, texts, args.max_length)
        out.append(profile(g, feeds, args.threads))
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        print()
        return
    for p in out:
        print(
            f"{p['graph']}: {p['texts']} texts, {p['tokens_per_text']:.1f} tokens each, "
            f"{p['ms_per_run']:.2f} ms per text ({p['texts_per_s_profiled']:.1f}/s profiled), "
            f"kernels {p['kernel_share_of_run']:.0%} of the run"
        )
        print(f"  {'op':28} {'ms/text':>8} {'share':>6} {'nodes':>6}")
        for o in p["ops"]:
            print(f"  {o['op']:28} {o['ms_per_text']:8.3f} {o['share']:6.1%} {o['nodes_per_run']:6.0f}")


if __name__ == "__main__":
    main()
