"""Strom beside Apache Kafka at RF=3: three local nodes of each on this
machine, both clusters up for the whole run, the same strom-bench load
against each in turn (issue 18's "the same comparison at RF=3").

Run through `scripts/bench-peers --rf 3` (it picks the venv's python and
fetches Kafka). Three `strom serve` nodes (voters and brokers, --shards
each, Strom's defaults) on free 127.0.0.1 ports, and three Kafka 4.4 KRaft
nodes (broker and controller each, `scripts/kafka-peer start-cluster`,
Kafka's defaults and its default flush policy). Each run makes its own
topic: 16 partitions, replication factor 3, 1 KiB records, idempotent
acks=all producers, retention bounded as in scripts/bench (the runs of
scripts/bench_cluster.py's `bench`).
`min.insync.replicas` stays at both systems' default (1).

What acks=all waits for differs, and the table says so: Kafka acknowledges
once every in-sync follower has fetched the batch into its page cache;
Strom once every in-sync replica has it on disk (fdatasync).

Phase 1: --rounds rounds at the maximum rate, Kafka first in even rounds
and Strom first in odd ones. Phase 2: at 50% of Kafka's median maximum,
the same interleaving. Writes one strom-bench JSON per run under --out
and --out/summary.json (every run, and the Strom/Kafka ratios of the
medians).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "compat"))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_cluster import bench, median_where, pick, smallest_isr  # noqa: E402
from measure_failover import machine  # noqa: E402
from test_cluster import start_all, voter_nodes  # noqa: E402

KAFKA_PEER = ROOT / "scripts" / "kafka-peer"
KAFKA_PORT = 29192


def order(round_: int) -> list:
    return ["kafka", "strom"] if round_ % 2 == 0 else ["strom", "kafka"]


def median_of(runs: list, who: str, rate, path: tuple):
    return median_where(runs, {"peer": who, "rate": rate}, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--shards", type=int, default=1, help="shards per Strom node")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "peers" / "rf3")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    base = Path(tempfile.mkdtemp(prefix="strom-peers-rf3-", dir=os.environ.get("STROM_BENCH_DATA_DIR")))
    _, nodes = voter_nodes(base / "strom", "")
    for n in nodes:
        n.shards = args.shards
    kafka_dir = base / "kafka"
    runs = []

    def run(who: str, label: str, r: int, rate: int | None):
        bootstrap = strom_bootstrap if who == "strom" else kafka_bootstrap
        name = f"{who}-{label}-r{r}"
        print(f"== {name}", file=sys.stderr, flush=True)
        result = bench(bootstrap, 3, args.out, name, args.duration, args.warmup, rate)
        row = {"name": name, "peer": who, "rate": rate or "max", "round": r, **pick(result),
               "smallest_isr_after": smallest_isr(bootstrap, name)}
        runs.append(row)
        print(json.dumps(row), flush=True)

    try:
        start_all(nodes)
        strom_bootstrap = nodes[0].bootstrap  # strom-bench routes by Metadata
        kafka_bootstrap = subprocess.run(
            [str(KAFKA_PEER), "start-cluster", str(kafka_dir), str(KAFKA_PORT), "3"],
            check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        for r in range(args.rounds):
            for who in order(r):
                run(who, "max", r, None)
        kafka_max = int(median_of(runs, "kafka", "max", ("produce_msgs_per_s",)))
        half = kafka_max // 2
        print(f"== Kafka's max at RF=3 (median): {kafka_max} msg/s; fixed rate {half}", file=sys.stderr)
        for r in range(args.rounds):
            for who in order(r):
                run(who, "half", r, half)
    finally:
        subprocess.run([str(KAFKA_PEER), "stop-cluster", str(kafka_dir)], check=False)
        for n in nodes:
            if n.alive():
                n.stop(signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)

    medians = {}
    for rate in ("max", half):
        for path in (("produce_msgs_per_s",), ("publish_latency_ms", "p50"), ("publish_latency_ms", "p99"),
                     ("e2e_latency_ms", "p50"), ("e2e_latency_ms", "p99"), ("e2e_latency_ms", "p999")):
            s, k = median_of(runs, "strom", rate, path), median_of(runs, "kafka", rate, path)
            medians[f"{rate}:{'.'.join(path)}"] = {
                "strom": s, "kafka": k, "strom_over_kafka": round(s / k, 3) if s and k else None}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    summary = {
        "command": "scripts/bench-peers --rf 3 " + " ".join(sys.argv[1:]),
        "commit": commit,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "kafka_max_msgs_per_s": kafka_max,
        "runs": runs,
        "medians": medians,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(medians, indent=2))


if __name__ == "__main__":
    main()
