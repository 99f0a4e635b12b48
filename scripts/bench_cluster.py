"""strom-bench on three local `strom serve` nodes: RF=3 acks=all against
RF=1 acks=all, interleaved in one run (issue 15's replication cost).

Run through scripts/bench-cluster (it picks the venv's python). Three nodes
(voters and brokers, --shards each) on free 127.0.0.1 ports, Strom's default
settings; for each round, one topic per replication factor (16 partitions,
1 KiB records, `bench-harness/workloads/1-topic-16-partitions-1kb.yaml`),
first at the maximum rate, then at --fixed-rate messages per second. acks=all
means: RF=1, on the leader's disk; RF=3, on the disk of every in-sync
replica (followers count a batch only once they fdatasynced it).

Writes one strom-bench JSON per run under --out, and --out/summary.json
with throughput and latency percentiles per run and the RF=3/RF=1 ratios
of the medians. The machine is shared by the three brokers and the
harness: compare the ratios, not the absolute figures.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "compat"))
sys.path.insert(0, str(ROOT / "scripts"))

from measure_failover import machine  # noqa: E402
from test_cluster import start_all, voter_nodes  # noqa: E402

WORKLOAD = ROOT / "bench-harness" / "workloads" / "1-topic-16-partitions-1kb.yaml"


def bench(bootstrap: str, rf: int, out: Path, name: str, duration: int, warmup: int, rate: int | None) -> dict:
    cmd = [str(ROOT / "target" / "release" / "strom-bench"), "run", "--bootstrap", bootstrap,
           "--workload", str(WORKLOAD), "--out", str(out), "--name", name, "--duration", str(duration),
           "--warmup", str(warmup), "--acks", "all", "--idempotent", "--replication-factor", str(rf),
           "--topic", f"bench-{name}", "--quiet",
           # As scripts/bench: bounded retention, so a long run does not fill the disk.
           "--topic-config", "retention.bytes=268435456", "--topic-config", "segment.bytes=67108864"]
    if rate:
        cmd += ["--rate", str(rate)]
    subprocess.run(cmd, check=True)
    return json.loads((out / f"{name}.json").read_text())


def pick(result: dict) -> dict:
    """The figures compared, from a strom-bench result."""
    keys = ["produce_msgs_per_s", "produce_mib_per_s", "consume_mib_per_s", "publish_latency_ms",
            "e2e_latency_ms", "produce_errors", "fetch_errors"]
    return {k: result.get(k) for k in keys if k in result}


def smallest_isr(bootstrap: str, name: str) -> int:
    """The fewest in-sync replicas of any partition of run `name`'s topic,
    from the first bootstrap broker's Metadata right after the run. Under
    the replication factor, the run's acks=all waited for fewer replicas
    than the topic has (a follower fell out of the ISR, or never got in)."""
    from types import SimpleNamespace
    from test_cluster_replication import metadata_v7
    port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
    _, parts = metadata_v7(SimpleNamespace(port=port), f"bench-{name}-0")
    return min(len(p["isr"]) for p in parts.values())


def median_where(runs: list, match: dict, path: tuple):
    """The median of the figure at `path` (keys into a row) over the rows
    whose fields equal `match`; None when no row has it."""
    vals = []
    for row in runs:
        if all(row.get(k) == v for k, v in match.items()):
            v = row
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None
            if isinstance(v, (int, float)):
                vals.append(v)
    return statistics.median(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--fixed-rate", type=int, default=20000)
    ap.add_argument("--shards", type=int, default=1, help="shards per node")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "cluster" / "bench")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    base = Path(tempfile.mkdtemp(prefix="strom-bench-cluster-", dir=os.environ.get("STROM_BENCH_DATA_DIR")))
    _, nodes = voter_nodes(base, "")
    for n in nodes:
        n.shards = args.shards
    runs = []
    try:
        start_all(nodes)
        bootstrap = nodes[0].bootstrap  # strom-bench takes one address and routes by Metadata
        for r in range(args.rounds):
            for rate in (None, args.fixed_rate):
                for rf in (1, 3):
                    name = f"rf{rf}-{'max' if rate is None else f'{rate}'}-round{r}"
                    result = bench(bootstrap, rf, args.out, name, args.duration, args.warmup, rate)
                    row = {"name": name, "rf": rf, "rate": rate or "max", "round": r, **pick(result),
                           "smallest_isr_after": smallest_isr(bootstrap, name)}
                    runs.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        for n in nodes:
            if n.alive():
                n.stop(signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)

    def median_of(rf, rate, path):
        return median_where(runs, {"rf": rf, "rate": rate}, path)

    ratios = {}
    for rate in ("max", args.fixed_rate):
        for path in (("produce_msgs_per_s",), ("publish_latency_ms", "p99"), ("e2e_latency_ms", "p99"),
                     ("e2e_latency_ms", "p50")):
            a, b = median_of(3, rate, path), median_of(1, rate, path)
            ratios[f"{rate}:{'.'.join(path)}"] = {"rf3": a, "rf1": b,
                                                  "rf3_over_rf1": round(a / b, 3) if a and b else None}
    summary = {
        "command": "scripts/bench-cluster " + " ".join(sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "runs": runs,
        "medians": ratios,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(ratios, indent=2))


if __name__ == "__main__":
    main()
