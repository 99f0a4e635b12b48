"""Measures failover time on three local `strom serve` nodes (issue 15):
from the SIGKILL of a partition leader to the first acknowledged produce on
its new leader, over --runs kills, with zero acknowledged records lost.

Run through scripts/measure-failover (it picks the venv's python). Three
nodes (voters and brokers, 2 shards each) on free 127.0.0.1 ports with
Strom's default settings (broker.session.timeout.ms 2500); one topic of 3
partitions, RF=3, min.insync.replicas=2; one idempotent acks=all producer
(confluent-kafka) writing `--rate` records per second round-robin over the
partitions for the whole measurement, each record tagged with its sequence
number.

Each run waits until every partition has all three replicas in its ISR,
kills (SIGKILL) the leader of partition `run % 3`, and measures, from the
kill, the time until a record produced after the kill to a partition the
victim led is acknowledged (so it was acknowledged by a new leader). Then
it restarts the victim and measures until it is back in every ISR.

After the last run the producer stops, every partition is read back from
offset 0, and every acknowledged record must be there at its acknowledged
offset, exactly once. A run that does not converge within --timeout fails
the measurement (exit status 1). Every node is stopped on the way out.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "compat"))

from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from test_cluster import agreed_controller, start_all, voter_nodes, wait_registered  # noqa: E402
from test_cluster_replication import metadata_v7  # noqa: E402
from test_replication_failover import read_partition  # noqa: E402

TOPIC = "failover"
PARTITIONS = 3


class Writer:
    """Paced idempotent acks=all producer on a thread; keeps, per record,
    when it was produced and acknowledged and where."""

    def __init__(self, bootstrap: str, rate: float):
        self.rate = rate
        self.lock = threading.Lock()
        self.sent = {}  # seq -> (partition, produced_at)
        self.acked = {}  # seq -> (partition, offset, acked_at)
        self.errors = []
        self.stopping = threading.Event()
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                                  "acks": "all", "linger.ms": 1, "message.timeout.ms": 120000})
        self.thread = threading.Thread(target=self.run, daemon=True)

    def report(self, err, msg):
        now = time.monotonic()
        seq = int(msg.value().split(b"-")[1])
        with self.lock:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.acked[seq] = (msg.partition(), msg.offset(), now)

    def run(self):
        seq = 0
        start = time.monotonic()
        while not self.stopping.is_set():
            due = start + seq / self.rate
            now = time.monotonic()
            if now < due:
                self.producer.poll(min(due - now, 0.01))
                continue
            p = seq % PARTITIONS
            try:
                self.producer.produce(TOPIC, value=f"seq-{seq}".encode(), partition=p, on_delivery=self.report)
            except BufferError:
                self.producer.poll(0.01)
                continue
            with self.lock:
                self.sent[seq] = (p, time.monotonic())
            seq += 1
            self.producer.poll(0)

    def first_ack_after(self, t: float, partitions) -> float | None:
        """When the first record produced after `t` to one of `partitions`
        was acknowledged, if one was."""
        with self.lock:
            times = [a for seq, (p, _, a) in self.acked.items()
                     if p in partitions and self.sent[seq][1] > t]
        return min(times) if times else None

    def stop(self):
        self.stopping.set()
        self.thread.join(30)
        left = self.producer.flush(120)
        if left:
            raise SystemExit(f"measure-failover: {left} records unacknowledged 120 s after the producer stopped")


def wait(what: str, check, timeout: float):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
            last = got
        except Exception as e:  # noqa: BLE001 - a node may be starting or gone
            last = repr(e)
        time.sleep(0.02)
    raise SystemExit(f"measure-failover: timed out waiting for {what} (last {last!r})")


def partitions_seen_by(node):
    return metadata_v7(node, TOPIC)[1]


def machine() -> dict:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(), "commit": commit}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--rate", type=float, default=1000.0, help="records per second produced")
    ap.add_argument("--timeout", type=float, default=90.0,
                    help="bound of the waits for a failover and a rejoin, seconds (starting nodes and reading back: 60 s)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    if os.environ.get("STROM_BIN"):
        os.environ["STROM_BIN"] = str(Path(os.environ["STROM_BIN"]).resolve())

    base = Path(tempfile.mkdtemp(prefix="strom-failover-"))
    _, nodes = voter_nodes(base, "")
    writer = None
    try:
        start_all(nodes)
        admin = AdminClient({"bootstrap.servers": nodes[0].bootstrap})
        admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=3,
                                      config={"min.insync.replicas": "2"})])[TOPIC].result(timeout=30)
        writer = Writer(",".join(n.bootstrap for n in nodes), args.rate)
        writer.thread.start()
        runs = []
        for run in range(args.runs):
            live = [n for n in nodes if n.alive()]
            parts = wait("every partition with three in-sync replicas",
                         lambda: (ps := partitions_seen_by(live[0])) and all(len(s["isr"]) == 3 for s in ps.values())
                         and ps, args.timeout)
            victim_id = parts[run % PARTITIONS]["leader"]
            victim = next(n for n in nodes if n.node_id == victim_id)
            led = [p for p, s in parts.items() if s["leader"] == victim_id]
            was_controller = agreed_controller(nodes) == victim_id
            survivors = [n for n in nodes if n is not victim]
            time.sleep(0.5)  # acknowledged traffic before the kill
            killed_at = time.monotonic()
            victim.stop(signal.SIGKILL)
            # Where the time goes: when a survivor's metadata shows every
            # partition the victim led under another leader (the cluster's
            # part: election, fencing, a Raft commit), then the
            # acknowledgement (the client's metadata refresh and retry, and
            # the replication of the record).
            marks = {}

            def moved_or_acked():
                now = time.monotonic()
                try:
                    if "leaders" not in marks:
                        ps = partitions_seen_by(survivors[0])
                        if ps and all(ps[p]["leader"] not in (-1, victim_id) for p in led):
                            marks["leaders"] = now
                except Exception:  # noqa: BLE001 - a survivor busy or restarting: try again
                    pass
                return writer.first_ack_after(killed_at, led)

            acked_at = wait("an acknowledged produce on a new leader", moved_or_acked, args.timeout)
            moved_at = time.monotonic()
            after = partitions_seen_by(survivors[0])
            victim.start()
            wait_registered(nodes, [1, 2, 3])
            wait("the restarted node back in every ISR",
                 lambda: all(len(s["isr"]) == 3 for s in partitions_seen_by(survivors[0]).values()), args.timeout)
            rejoined_at = time.monotonic()
            r = {
                "run": run,
                "victim": victim_id,
                "victim_was_controller": was_controller,
                "partitions_led": led,
                "failover_s": round(acked_at - killed_at, 3),
                # Seen by polling every 20 ms or so, until the acknowledgement.
                "leaders_moved_s": round(marks["leaders"] - killed_at, 3) if "leaders" in marks else None,
                "rejoin_after_restart_s": round(rejoined_at - moved_at, 3),
                "new_leaders": {p: after[p]["leader"] for p in led},
            }
            runs.append(r)
            print(json.dumps(r), flush=True)

        writer.stop()
        with writer.lock:
            acked = dict(writer.acked)
            errors = list(writer.errors)
        lost = 0
        for p in range(PARTITIONS):
            mine = {o: f"seq-{seq}".encode() for seq, (pp, o, _) in acked.items() if pp == p}
            end = max(mine) + 1 if mine else 0
            read = read_partition(nodes[0].bootstrap, TOPIC, p, end)
            at = {}
            for o, v in read:
                if o in at:
                    raise SystemExit(f"measure-failover: partition {p} offset {o} read twice")
                at[o] = v
            lost += sum(1 for o, v in mine.items() if at.get(o) != v)
            values = [v for _, v in read]
            if len(values) != len(set(values)):
                raise SystemExit(f"measure-failover: partition {p} holds a record twice")
        times = [r["failover_s"] for r in runs]
        summary = {
            "runs": len(runs),
            "failover_median_s": round(statistics.median(times), 3),
            "failover_max_s": max(times),
            "failover_median_s_controller_killed": (
                round(statistics.median(c), 3) if (c := [r["failover_s"] for r in runs if r["victim_was_controller"]])
                else None),
            "failover_median_s_controller_kept": (
                round(statistics.median(k), 3) if (k := [r["failover_s"] for r in runs if not r["victim_was_controller"]])
                else None),
            "leaders_moved_median_s": (
                round(statistics.median(m), 3) if (m := [r["leaders_moved_s"] for r in runs
                                                          if r["leaders_moved_s"] is not None]) else None),
            "leaders_moved_max_s": max(m) if m else None,
            "records_acknowledged": len(acked),
            "acknowledged_lost": lost,
            "delivery_errors": len(errors),
        }
        out = {
            "command": "scripts/measure-failover " + " ".join(sys.argv[1:]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(),
            "settings": {"rate": args.rate, "partitions": PARTITIONS, "replication_factor": 3,
                         "min.insync.replicas": 2, "broker.session.timeout.ms": "default (2500)",
                         "fencing": "session, or at once when the node refuses connections"},
            "summary": summary,
            "runs": runs,
        }
        print(json.dumps(summary, indent=2))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=2) + "\n")
        if lost or errors:
            raise SystemExit(f"measure-failover: {lost} acknowledged records lost, {len(errors)} delivery errors")
    finally:
        if writer is not None and not writer.stopping.is_set():
            writer.stopping.set()
        for n in nodes:
            if n.alive():
                n.stop(signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
