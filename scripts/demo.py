#!/usr/bin/env python3
"""Helpers of scripts/demo.sh (standard library only): split the data into the demo's
phases, and read figures from the running system (the service's /metrics,
Prometheus's and Alertmanager's HTTP APIs, the predictions topic's records)."""

import collections
import csv
import json
import os
import sys
import time
import urllib.parse
import urllib.request

STARS = {1: "negative", 2: "negative", 3: "neutral", 4: "positive", 5: "positive"}


def rows_of(path, limit):
    """(id, text, label) rows of a CSV (support intents) or JSON-lines file (the demo's
    messages, or Yelp reviews whose stars give the label)."""
    out = []
    if path.lower().endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            for i, r in enumerate(csv.DictReader(f)):
                text = r.get("text") or r.get("question")
                label = r.get("label") or r.get("class_name")
                if text and label:
                    out.append((r.get("id") or f"row-{i}", text, label))
                if len(out) >= limit:
                    break
        return out
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            try:
                r = json.loads(line)
            except ValueError:
                continue
            label = r.get("label")
            if label is None and isinstance(r.get("stars"), (int, float)):
                label = STARS.get(int(r["stars"]))
            text = r.get("text")
            if text and label:
                out.append((str(r.get("id") or r.get("review_id") or f"row-{i}"), text, label))
            if len(out) >= limit:
                break
    return out


def prepare(src, outdir):
    """Writes train / stationary / drift-main / drift-mix / recovery / serving files
    and prints shell assignments describing them. recovery is the traffic the live
    race runs on (the challenger in shadow); serving, the traffic after it."""
    rows = rows_of(src, int(os.environ.get("DEMO_MAX_ROWS", "20000")))
    by = collections.OrderedDict()
    for row in rows:
        by.setdefault(row[2], []).append(row)
    labels = sorted(by)
    if len(labels) < 2:
        sys.exit(f"demo: {src} has fewer than two labels ({labels}); it needs labelled messages")
    wanted = os.environ.get("NARROW", "")
    if wanted:
        narrow = [l for l in wanted.split(",") if l in by]
    elif {"ACCOUNT", "PAYMENT", "REFUND", "SHIPPING"} <= set(labels):
        narrow = ["ACCOUNT", "PAYMENT", "REFUND", "SHIPPING"]
    elif {"negative", "positive"} <= set(labels):
        narrow = ["negative", "positive"]
    else:
        narrow = labels[: len(labels) // 2]
    others = [l for l in labels if l not in narrow]
    if not narrow or not others:
        sys.exit(f"demo: NARROW={wanted!r} must name some, not all, of the labels {labels}")
    files = {k: [] for k in ("train", "stationary", "drift-main", "drift-mix", "recovery", "serving")}
    for label in narrow:
        r, n = by[label], len(by[label])
        cut = [0, min(40, n * 3 // 10), min(80, n * 4 // 10), min(37, n // 4), min(39, n), 8]
        for name, (a, b) in zip(
            ("train", "stationary", "drift-main", "recovery", "serving"),
            [(sum(cut[: i + 1]), sum(cut[: i + 2])) for i in range(5)],
        ):
            files[name].extend(r[a : min(b, n)])
    for label in others:
        r, n = by[label], len(by[label])
        drift = min(n * 8 // 10, max(37, 150 // len(others)))
        files["drift-mix"].extend(r[:drift])
        # The race's traffic is like the drifted traffic: the new labels take a real
        # share, so the challenger's advantage on them can be measured.
        files["recovery"].extend(r[drift : drift + min(60, n - drift)])
        files["serving"].extend(r[drift + 60 : drift + min(63, n - drift)])
    # Interleave the labels so that every stretch of a phase has them all.
    for name, part in files.items():
        rank = collections.Counter()
        keyed = []
        for row in part:
            keyed.append((rank[row[2]], row[2], row))
            rank[row[2]] += 1
        with open(os.path.join(outdir, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            for _, _, (i, t, l) in sorted(keyed, key=lambda k: (k[0], k[1])):
                f.write(json.dumps({"id": i, "text": t, "label": l}) + "\n")
    main, mix = len(files["drift-main"]), len(files["drift-mix"])
    print(f"NARROW={','.join(narrow)}")
    print(f"OTHERS={','.join(others)}")
    print(f"ROWS_READ={len(rows)}")
    for name, part in files.items():
        print(f"N_{name.upper().replace('-', '_')}={len(part)}")
    print(f"SHARE={mix / (main + mix):.2f}")


def get(url, timeout=5, body=None):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def wait_http(url, seconds):
    deadline = time.time() + float(seconds)
    while time.time() < deadline:
        try:
            get(url, timeout=2)
            return
        except Exception:
            time.sleep(0.3)
    sys.exit(f"demo: {url} did not answer within {seconds} s")


def samples(url):
    """(labels dict, value) of every sample in a Prometheus exposition."""
    out = []
    for line in get(url).splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series, value = line.rsplit(" ", 1)
        name, _, rest = series.partition("{")
        labels = dict(
            kv.split("=", 1) for kv in rest.rstrip("}").split(",") if "=" in kv
        )
        labels = {k: v.strip('"') for k, v in labels.items()}
        out.append((name, labels, float(value)))
    return out


def metric(url, name, *filters):
    want = dict(f.split("=", 1) for f in filters)
    try:
        total = sum(
            v
            for n, l, v in samples(url)
            if n == name and all(l.get(k) == x for k, x in want.items())
        )
    except Exception:
        total = 0.0
    print(f"{total:g}")


def by_label(url, name, label, *filters):
    """A metric's sum per value of one label, as `value=sum` pairs."""
    want = dict(f.split("=", 1) for f in filters)
    sums = collections.Counter()
    for n, l, v in samples(url):
        if n == name and all(l.get(k) == x for k, x in want.items()):
            sums[l.get(label, "")] += v
    print(", ".join(f"{k}={v:g}" for k, v in sorted(sums.items())) or "none")


def promql(prom, expr):
    """An instant query: one line per series, `{labels} value`."""
    url = f"http://{prom}/api/v1/query?query={urllib.parse.quote(expr)}"
    result = json.loads(get(url))["data"]["result"]
    for s in result:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s["metric"].items()) if k not in ("__name__", "instance", "job"))
        print(f"{labels} {float(s['value'][1]):.4g}")


def alerts(am):
    """Alertmanager's active alerts: name, labels, since when, and its receivers."""
    for a in json.loads(get(f"http://{am}/api/v2/alerts?active=true")):
        l = a["labels"]
        rest = ",".join(f"{k}={v}" for k, v in sorted(l.items()) if k != "alertname")
        receivers = ",".join(r["name"] for r in a.get("receivers", []))
        print(f"{l.get('alertname')} {{{rest}}} {a['status']['state']} since {a['startsAt']} -> {receivers}")


def show_predictions(predictions, texts, count, version=""):
    """Sample predictions from the predictions topic's records, with their messages."""
    text = {}
    for path in texts.split(","):
        with open(path, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                text[r["id"]] = (r["text"], r["label"])
    shown = 0
    mix = collections.Counter()
    right = total = 0
    for line in open(predictions, encoding="utf-8"):
        p = json.loads(line)
        if version and p.get("model_version") != version:
            continue
        mix[p["label"]] += 1
        t, truth = text.get(p["id"], ("?", None))
        total += 1
        right += truth == p["label"]
        if shown < int(count):
            shown += 1
            short = t if len(t) <= 70 else t[:67] + "..."
            print(f"    {p['label']:<10} {p['confidence']:.2f}  {p['model_version']}  \"{short}\"  (truth: {truth})")
    print(f"    {total} predictions read back; labels {dict(sorted(mix.items()))}; {right}/{total} match the late labels")


def race_summary():
    """The last decision (`triage models decisions --json` on stdin) as one line."""
    d = json.load(sys.stdin)["decisions"][-1]
    r = d.get("race") or {}
    print(
        f"{d['verdict']} on {r.get('labelled')} labelled messages: "
        f"{d['champion']['version']} {r.get('champion_macro_f1', 0):.3f} vs "
        f"{d['challenger']['version']} {r.get('challenger_macro_f1', 0):.3f}, "
        f"paired bootstrap p {r.get('promote_p_value', 1):.4f}"
    )


def classify(service, *texts):
    body = json.dumps({"texts": list(texts)}).encode()
    r = json.loads(get(f"http://{service}/v1/classify", body=body, timeout=30))
    for t, p in zip(texts, r["predictions"]):
        print(f"    {p['label']:<10} {p['confidence']:.2f}  {r['model_version']}  \"{t}\"")


if __name__ == "__main__":
    commands = {
        "prepare": prepare,
        "race-summary": race_summary,
        "wait-http": wait_http,
        "metric": metric,
        "by-label": by_label,
        "promql": promql,
        "alerts": alerts,
        "predictions": show_predictions,
        "classify": classify,
    }
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: demo.py {'|'.join(commands)} ARGS")
    commands[sys.argv[1]](*sys.argv[2:])
