#!/usr/bin/env python3
"""Reads the stage latencies a broker wrote under `strom serve
--stage-latency DIR` (DIR/shard-N.jsonl, one line per shard per second) and
prints, per stage, the count and the p50/p99/p99.9/max in milliseconds over
the chosen seconds, all shards together; then the seconds whose worst stage
p99 was highest, to place a tail in time.

Usage: breakdown.py DIR [--skip-s N] [--last-s N] [--json OUT]
  (DIR/shard-N.jsonl as the broker wrote them, or gzipped copies named
  *shard-N.jsonl.gz)
  --skip-s N   leave out the first N seconds (the benchmark's warm-up)
  --last-s N   keep only N seconds after the skipped ones
"""
import argparse
import glob
import gzip
import json
import os
from collections import defaultdict


def percentile(buckets, q):
    """buckets: sorted [(value_us, count)]; the value at quantile q."""
    total = sum(c for _, c in buckets)
    if total == 0:
        return 0
    rank = q * total
    seen = 0
    for v, c in buckets:
        seen += c
        if seen >= rank:
            return v
    return buckets[-1][0]


def merge(lines):
    merged = defaultdict(lambda: defaultdict(int))
    for line in lines:
        for stage, buckets in line["stages"].items():
            for v, c in buckets:
                merged[stage][v] += c
    return {s: sorted(b.items()) for s, b in merged.items()}


def summary(buckets):
    return {
        "count": sum(c for _, c in buckets),
        "p50_ms": percentile(buckets, 0.50) / 1000,
        "p99_ms": percentile(buckets, 0.99) / 1000,
        "p999_ms": percentile(buckets, 0.999) / 1000,
        "max_ms": buckets[-1][0] / 1000 if buckets else 0,
    }


def cpu_seconds(dir):
    """cpu-sample.py's lines in DIR/cpu.jsonl, by the second they end."""
    path = os.path.join(dir, "cpu.jsonl")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    # A sample covers the second before its t_ms.
    return {l["t_ms"] // 1000 - 1: l for l in lines}


def cpu_line(sample):
    if sample is None:
        return ""
    shards = defaultdict(lambda: [0.0, 0.0])
    for name, t in sample["threads"].items():
        if name.startswith("strom-shard-"):
            shard = name.split("-")[2]
            shards[shard][0] += t["cpu_ms"]
            shards[shard][1] += t["runq_ms"]
    each = "  ".join(f"shard {s} cpu {c:4.0f} runq {w:4.0f}" for s, (c, w) in sorted(shards.items()))
    return f"   steal {sample['steal']:4.0f} ms  {each}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--skip-s", type=float, default=0)
    ap.add_argument("--last-s", type=float, default=None)
    ap.add_argument("--json")
    args = ap.parse_args()
    lines = []
    # A broker's own files, or copies kept gzipped (NAME-shard-N.jsonl.gz).
    paths = glob.glob(os.path.join(args.dir, "shard-*.jsonl"))
    paths += glob.glob(os.path.join(args.dir, "*shard-*.jsonl.gz"))
    for path in sorted(paths):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt") as f:
            lines += [json.loads(l) for l in f if l.strip()]
    if not lines:
        raise SystemExit(f"no stage lines under {args.dir}")
    t0 = min(l["t_ms"] for l in lines) + args.skip_s * 1000
    t1 = t0 + args.last_s * 1000 if args.last_s is not None else float("inf")
    window = [l for l in lines if t0 <= l["t_ms"] < t1]
    merged = merge(window)
    order = [
        "produce.receive", "produce.order", "hop.there", "append.room",
        "append.durable", "hop.back", "produce.handle", "reply.wait",
        "produce.send", "fetch.wake", "fetch.read", "fetch.send", "timer.late",
    ]
    stages = {s: summary(merged[s]) for s in order if s in merged}
    print(f"{'stage':18} {'count':>10} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8}")
    for s, m in stages.items():
        print(f"{s:18} {m['count']:>10} {m['p50_ms']:>8.3f} {m['p99_ms']:>8.3f} {m['p999_ms']:>9.3f} {m['max_ms']:>8.3f}")
    # The worst seconds: per second (all shards), the stage with the highest max.
    by_second = defaultdict(list)
    for l in window:
        by_second[l["t_ms"] // 1000].append(l)
    worst = []
    for sec, ls in by_second.items():
        m = merge(ls)
        tops = [(s, b[-1][0]) for s, b in m.items() if s != "timer.late"]
        if not tops:
            continue
        top = max(tops, key=lambda x: x[1])
        late = m.get("timer.late", [(0, 0)])[-1][0]
        worst.append((top[1], sec, top[0], late))
    worst.sort(reverse=True)
    cpu = cpu_seconds(args.dir)
    print("\nworst seconds (max of any stage; timer.late max in the same second", end="")
    print("; from cpu.jsonl: the machine's steal, and each shard's CPU time and run-queue wait):"
          if cpu else "):")
    for v, sec, s, late in worst[:8]:
        print(f"  t={sec - int(t0 // 1000):>4}s  {s:16} {v / 1000:8.2f} ms   timer.late {late / 1000:7.2f} ms"
              + cpu_line(cpu.get(sec)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds": len(by_second), "stages": stages}, f, indent=1)


if __name__ == "__main__":
    main()
