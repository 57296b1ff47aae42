#!/usr/bin/env python3
"""Embedding agreement and throughput of embedding graphs, as the service embeds.

    python3 scripts/compare-graphs.py agree REF_DIR GRAPH_DIR... [--texts 200]
    python3 scripts/compare-graphs.py speed GRAPH_DIR... [--texts 300] [--rounds 3] [--workers 2]

agree: the mean-pooled vector of each review (one text per call, attention mask
applied as fastembed's mean pooling does) from every graph, and its cosine to the
reference graph's vector: mean, 1st percentile and minimum.

speed: texts/s with --workers processes side by side (the service's stream.workers,
default 2), each with one ONNX Runtime session of one intra-op thread embedding its
share of the texts one per call; the graphs take turns round by round (A B A B ...,
then the order reversed in the next round) so both see the same machine.

Needs onnxruntime, numpy and tokenizers (scripts/quantize.sh's pinned venv plus
`tokenizers`). The texts: the first --texts reviews of --data, tokenised with the
graph folder's tokenizer.json and truncated to --max-length tokens.
"""

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
profile_graph = __import__("profile-graph")


def embed_all(graph_dir, feeds, threads=1):
    sess = profile_graph.session(os.path.join(graph_dir, "model.onnx"), threads)
    out = []
    for feed in feeds:
        hidden = profile_graph.run(sess, feed)[0]
        mask = feed["attention_mask"][0][:, None].astype(np.float32)
        v = (hidden * mask).sum(0) / mask.sum()
        out.append(v / np.linalg.norm(v))
    return np.stack(out)


def agree(args, texts):
    ref = embed_all(args.graphs[0], profile_graph.encode(args.graphs[0], texts, args.max_length))
    print(f"reference {args.graphs[0]}, {len(texts)} reviews")
    for g in args.graphs[1:]:
        e = embed_all(g, profile_graph.encode(g, texts, args.max_length))
        cos = (ref * e).sum(1)
        print(
            f"  {g}: cosine mean {cos.mean():.4f}, p1 {np.percentile(cos, 1):.4f}, "
            f"min {cos.min():.4f}"
        )


def worker(graph_dir, feeds, start, results):
    sess = profile_graph.session(os.path.join(graph_dir, "model.onnx"), 1)
    profile_graph.run(sess, feeds[0])  # warm-up
    start.wait()
    t0 = time.perf_counter()
    for feed in feeds:
        profile_graph.run(sess, feed)
    results.put(time.perf_counter() - t0)


def speed_once(graph_dir, feeds, workers):
    start = mp.Barrier(workers)
    results = mp.Queue()
    shares = [feeds[i::workers] for i in range(workers)]
    procs = [mp.Process(target=worker, args=(graph_dir, s, start, results)) for s in shares]
    for p in procs:
        p.start()
    times = [results.get() for _ in procs]
    for p in procs:
        p.join()
    # All workers start together; the slowest one finishes the set.
    return len(feeds) / max(times)


def speed(args, texts):
    feeds = {g: profile_graph.encode(g, texts, args.max_length) for g in args.graphs}
    rates = {g: [] for g in args.graphs}
    print(f"os.getloadavg() before: {os.getloadavg()}")
    for r in range(args.rounds):
        order = args.graphs if r % 2 == 0 else list(reversed(args.graphs))
        for g in order:
            rate = speed_once(g, feeds[g], args.workers)
            rates[g].append(rate)
            print(f"  round {r + 1}: {g}: {rate:.1f} texts/s (load {os.getloadavg()[0]:.2f})", flush=True)
    base = args.graphs[0]
    for g in args.graphs:
        ratios = [a / b for a, b in zip(rates[g], rates[base])]
        print(
            f"{g}: median {statistics.median(rates[g]):.1f} texts/s "
            f"({', '.join(f'{x:.1f}' for x in rates[g])}); vs {base}: median ratio "
            f"{statistics.median(ratios):.2f}x"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["agree", "speed"])
    ap.add_argument("graphs", nargs="+")
    ap.add_argument("--data", default="/work/shared/data/yelp/reviews-5k.jsonl")
    ap.add_argument("--texts", type=int, default=200)
    ap.add_argument("--skip", type=int, default=0, help="start after this many reviews")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    texts = profile_graph.load_texts(args.data, args.texts, args.skip)
    (agree if args.mode == "agree" else speed)(args, texts)


if __name__ == "__main__":
    main()
