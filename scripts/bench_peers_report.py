"""Writes results/peers/summary.json and README.md from a bench-peers run.

Usage: bench_peers_report.py RAW_DIR ROUNDS KAFKA_MAX_MSGS OUT_DIR COMMIT
"""
import json
import re
import statistics
import sys
from pathlib import Path

PEERS = ("kafka", "strom")


def load(raw, name):
    return json.loads((raw / f"{name}.json").read_text())


def median_of(raw, who, name, rounds, pick):
    return statistics.median(pick(load(raw, f"{who}-{name}-r{r}")) for r in range(rounds))


def producer_perf(text):
    # "N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max
    # latency, P50 ms 50th, P95 ms 95th, P99 ms 99th, P999 ms 99.9th."
    line = [l for l in text.splitlines() if "records sent" in l][-1]
    m = re.search(
        r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
        r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th", line)
    if not m:
        raise ValueError(f"unexpected ProducerPerformance summary: {line}")
    keys = ("records", "msgs_per_s", "mb_per_s", "avg_ms", "max_ms", "p50_ms", "p95_ms", "p99_ms", "p999_ms")
    return dict(zip(keys, (float(x) for x in m.groups())))


def consumer_perf(text):
    lines = [l for l in text.splitlines() if l.strip()]
    header = [h.strip() for h in lines[-2].split(",")]
    values = [v.strip() for v in lines[-1].split(",")]
    row = dict(zip(header, values))
    # MB.sec counts the group join (rebalance.time.ms) in; fetch.MB.sec is
    # the reading alone.
    return {"mb_per_s": float(row["MB.sec"]), "msgs_per_s": float(row["nMsg.sec"]),
            "fetch_mb_per_s": float(row["fetch.MB.sec"]), "rebalance_ms": float(row["rebalance.time.ms"])}


def main():
    raw, rounds, kafka_max, out, commit = (
        Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5])
    fio = json.loads((raw / "fio.json").read_text())
    fio_mib = fio["jobs"][0]["write"]["bw_bytes"] / 2**20
    iperf = json.loads((raw / "iperf3.json").read_text())
    loop_mib = iperf["end"]["sum_received"]["bits_per_second"] / 8 / 2**20
    summary = {"commit": commit, "rounds": rounds, "kafka_max_msgs_per_s": kafka_max,
               "fio_write_mib_per_s": fio_mib, "loopback_mib_per_s": loop_mib, "peers": {}}
    for who in PEERS:
        p = {}
        for name in ("max-acks1", "max-acksall"):
            p[name] = {
                "produce_mib_per_s": median_of(raw, who, name, rounds, lambda d: d["produce_mib_per_s"]),
                "produce_msgs_per_s": median_of(raw, who, name, rounds, lambda d: d["produce_msgs_per_s"]),
                "consume_mib_per_s": median_of(raw, who, name, rounds, lambda d: d["consume_mib_per_s"]),
                "per_round_mib_per_s": [load(raw, f"{who}-{name}-r{r}")["produce_mib_per_s"]
                                        for r in range(rounds)],
            }
        for pct in (10, 50, 80):
            name = f"fixed-{pct}"
            p[name] = {
                f"{kind}_{q}_ms": median_of(raw, who, name, rounds, lambda d, k=kind, q=q: d[f"{k}_latency_ms"][q])
                for kind in ("publish", "e2e") for q in ("p50", "p99", "p999")
            }
        p["producer_perf"] = [producer_perf((raw / f"{who}-producer-perf-r{r}.txt").read_text())
                              for r in range(rounds)]
        p["consumer_perf"] = [consumer_perf((raw / f"{who}-consumer-perf-r{r}.txt").read_text())
                              for r in range(rounds)]
        summary["peers"][who] = p
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    k, s = summary["peers"]["kafka"], summary["peers"]["strom"]
    ratio = lambda a, b: f"{a / b:.2f}x" if b else "n/a"
    md = [f"# Strom beside Apache Kafka 4.4.0 (commit {commit})", "",
          f"`scripts/bench-peers` ({rounds} round(s), interleaved; medians over rounds). "
          "Every run side by side, with ratios to Kafka's first round: [side-by-side.md](side-by-side.md).", "",
          "## Max rate, 16 partitions, 1 KiB records", "",
          "| workload | Kafka MiB/s | Strom MiB/s | Strom / Kafka | per round (Kafka; Strom) |",
          "|---|---|---|---|---|"]
    for name in ("max-acks1", "max-acksall"):
        md.append(f"| {name} | {k[name]['produce_mib_per_s']:.1f} | {s[name]['produce_mib_per_s']:.1f} | "
                  f"{ratio(s[name]['produce_mib_per_s'], k[name]['produce_mib_per_s'])} | "
                  f"{k[name]['per_round_mib_per_s']}; {s[name]['per_round_mib_per_s']} |")
    md += ["", f"## Fixed rates (% of Kafka's max, {kafka_max} msg/s), acks=1, latency in ms", "",
           "| rate | peer | publish p50 | p99 | p99.9 | e2e p50 | p99 | p99.9 |",
           "|---|---|---|---|---|---|---|---|"]
    for pct in (10, 50, 80):
        for who in PEERS:
            f = summary["peers"][who][f"fixed-{pct}"]
            md.append(f"| {pct}% | {who} | " + " | ".join(
                f"{f[f'{kind}_{q}_ms']:.2f}" for kind in ("publish", "e2e") for q in ("p50", "p99", "p999")) + " |")
    md += ["", "## Kafka's own perf tools (acks=1, 1 KiB, 16 partitions)", "",
           "| peer | producer msg/s (per round) | producer p99 ms | consumer MB/s (per round) | consumer fetch MB/s, join excluded | group join ms |",
           "|---|---|---|---|---|---|"]
    for who in PEERS:
        p = summary["peers"][who]
        md.append(f"| {who} | {[round(x['msgs_per_s']) for x in p['producer_perf']]} | "
                  f"{[x['p99_ms'] for x in p['producer_perf']]} | "
                  f"{[x['mb_per_s'] for x in p['consumer_perf']]} | "
                  f"{[x.get('fetch_mb_per_s') for x in p['consumer_perf']]} | "
                  f"{[x.get('rebalance_ms') for x in p['consumer_perf']]} |")
    md += ["", "## Against the machine's limits", "",
           f"fio sequential O_DIRECT write: {fio_mib:.0f} MiB/s; iperf3 loopback: {loop_mib:.0f} MiB/s.", "",
           "| peer | bytes moved (in + out) / loopback | bytes written / fio |", "|---|---|---|"]
    for who in PEERS:
        m = summary["peers"][who]["max-acks1"]
        moved = m["produce_mib_per_s"] + m["consume_mib_per_s"]
        md.append(f"| {who} | {moved / loop_mib:.1%} | {m['produce_mib_per_s'] / fio_mib:.1%} |")
    (out / "README.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
