#!/usr/bin/env python3
"""Summarizes results/restructure/run-*/: per iteration the B/A ratio of each
figure, and the medians, into summary.json and a table on stdout."""
import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
runs = sorted(out.glob("run-*"), key=lambda p: int(p.name.split("-")[1]))


def load(path):
    text = path.read_text()
    return json.loads(text)


figures = {
    "engine MiB/s, no sync, 4 GiB": lambda r, s: load(r / f"engine-never-{s}.json")["write_mib_per_s"],
    "engine MiB/s, every-batch sync, 16 producers": lambda r, s: load(r / f"engine-every-batch-{s}.json")["write_mib_per_s"],
    "broker produce MiB/s, acks=1, 16 partitions": lambda r, s: load(r / f"broker-{s}.json")["produce_mib_per_s"],
    "broker publish p99 ms": lambda r, s: load(r / f"broker-{s}.json")["publish_latency_ms"]["p99"],
}
summary = {"iterations": len(runs), "figures": {}}
print(f"| figure | A median | B median | B/A per iteration | median B/A |")
print(f"|---|---|---|---|---|")
for name, get in figures.items():
    a = [get(r, "a") for r in runs]
    b = [get(r, "b") for r in runs]
    ratios = [y / x for x, y in zip(a, b) if x]
    summary["figures"][name] = {"a": a, "b": b, "b_over_a": ratios}
    print(
        f"| {name} | {statistics.median(a):.1f} | {statistics.median(b):.1f} | "
        + ", ".join(f"{x:.2f}" for x in ratios)
        + f" | {statistics.median(ratios):.2f} |"
    )
fio = [load(r / "disk-baseline.json")["fio_seq_write_mib_per_s"] for r in runs]
summary["fio_seq_write_mib_per_s"] = fio
print(f"\nfio seq write MiB/s per iteration: {', '.join(f'{x:.0f}' for x in fio)}")
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
