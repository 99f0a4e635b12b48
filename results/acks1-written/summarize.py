#!/usr/bin/env python3
"""Summarizes results/acks1-written/run-*/: per iteration the B/A ratio of
each figure, and the medians, into summary.json and a table on stdout."""
import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
runs = sorted(out.glob("run-*"), key=lambda p: int(p.name.split("-")[1]))


def load(path):
    return json.loads(path.read_text())


def pct(kind, key, q):
    return lambda r, s: load(r / f"broker-{kind}-{s}.json")[key][q]


figures = {
    "engine MiB/s, no sync (Written), 2 GiB": lambda r, s: load(r / f"engine-never-{s}.json")["write_mib_per_s"],
    "broker produce MiB/s, max rate": lambda r, s: load(r / f"broker-max-{s}.json")["produce_mib_per_s"],
    "broker publish p50 ms, max rate": pct("max", "publish_latency_ms", "p50"),
    "broker publish p99 ms, max rate": pct("max", "publish_latency_ms", "p99"),
    "broker produce msgs/s, fixed rate": lambda r, s: load(r / f"broker-fixed-{s}.json")["produce_msgs_per_s"],
    "broker publish p50 ms, fixed rate": pct("fixed", "publish_latency_ms", "p50"),
    "broker publish p99 ms, fixed rate": pct("fixed", "publish_latency_ms", "p99"),
    "broker end-to-end p99 ms, fixed rate": pct("fixed", "e2e_latency_ms", "p99"),
}
summary = {"iterations": len(runs), "figures": {}}
print("| figure | A median | B median | B/A per iteration | median B/A |")
print("|---|---|---|---|---|")
for name, get in figures.items():
    a = [get(r, "a") for r in runs]
    b = [get(r, "b") for r in runs]
    ratios = [y / x for x, y in zip(a, b) if x]
    summary["figures"][name] = {"a": a, "b": b, "b_over_a": ratios}
    print(
        f"| {name} | {statistics.median(a):.2f} | {statistics.median(b):.2f} | "
        + ", ".join(f"{x:.2f}" for x in ratios)
        + f" | {statistics.median(ratios):.2f} |"
    )
fio = [load(r / "disk-baseline.json")["fio_seq_write_mib_per_s"] for r in runs]
summary["fio_seq_write_mib_per_s"] = fio
print(f"\nfio seq write MiB/s per iteration: {', '.join(f'{x:.0f}' for x in fio)}")
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
