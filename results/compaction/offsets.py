#!/usr/bin/env python3
"""__consumer_offsets after COMMITS offset commits by GROUPS groups (issue 16):
its size on disk and the broker's start time, with the cleaner off and on.

usage: tests/compat/.venv/bin/python results/compaction/offsets.py [--commits N] [--groups G]
       [--segment-bytes B] [--partitions P] [--shards S]

For each mode (cleaner off, then on) a fresh broker: the groups commit in
turns, each OffsetCommit carrying one offset for every partition of a
P-partition topic (so COMMITS / P requests), synchronously, by
confluent-kafka (librdkafka). With the cleaner on, the script waits (bounded)
until the cleaner has compacted the closed segments. Then it reports the
size of the `__consumer_offsets-*` directories, SIGKILLs the broker (no
clean-shutdown marker: recovery scans what the indexes do not cover),
restarts it and times (a) the first Metadata answer and (b) the moment all
groups' committed offsets read back right (OffsetFetch), then the same after
a clean stop (SIGTERM). Prints one JSON object per mode.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
STROM = Path(os.environ.get("STROM_BIN", ROOT / "target/release/strom"))
DEADLINE_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dir_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file())


def offsets_dirs(data: Path):
    return [d for d in data.iterdir() if d.name.startswith("__consumer_offsets-")]


class Broker:
    def __init__(self, data: Path, config: str, shards: int):
        self.data, self.shards, self.port = data, shards, free_port()
        self.conf = data.parent / "strom.toml"
        self.conf.write_text(config)
        self.log = open(data.parent / "strom.log", "ab")
        self.proc = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self) -> float:
        """Starts the broker; returns the seconds until Metadata answers."""
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [str(STROM), "serve", "--data-dir", str(self.data), "--listen", self.bootstrap,
             "--shards", str(self.shards), "--config", str(self.conf)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 1000})
        while True:
            assert time.monotonic() - t0 < DEADLINE_S, "broker did not answer Metadata"
            assert self.proc.poll() is None, "broker exited"
            try:
                md = admin.list_topics(timeout=1)
                if md.brokers:
                    return time.monotonic() - t0
            except Exception:  # noqa: BLE001 - retried until the deadline
                time.sleep(0.01)

    def stop(self, sig):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=120)


def commit_all(bootstrap, topic, groups, partitions, commits):
    """Commits until `commits` offsets are committed; returns the last
    offset committed per group and the seconds it took."""
    consumers = [Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-group-{g}",
                           "enable.auto.commit": False}) for g in range(groups)]
    rounds = commits // (groups * partitions)
    t0 = time.monotonic()
    for r in range(rounds):
        for c in consumers:
            c.commit(offsets=[TopicPartition(topic, p, r + 1) for p in range(partitions)],
                     asynchronous=False)
    took = time.monotonic() - t0
    for c in consumers:
        c.close()
    return rounds, took


def offsets_read_back(bootstrap, topic, groups, partitions, want) -> bool:
    for g in range(groups):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-group-{g}"})
        try:
            got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=5)
        except Exception:  # noqa: BLE001 - not served yet
            return False
        finally:
            c.close()
        if any(tp.offset != want for tp in got):
            return False
    return True


def time_to_offsets(b, topic, groups, partitions, want) -> float:
    t0 = time.monotonic()
    while not offsets_read_back(b.bootstrap, topic, groups, partitions, want):
        assert time.monotonic() - t0 < DEADLINE_S, "offsets never read back"
        time.sleep(0.01)
    return time.monotonic() - t0


def restart_timed(b, sig, topic, groups, partitions, want):
    """Stops the broker with `sig`, starts it; seconds from the start to the
    first Metadata answer and to every group's offsets read back."""
    b.stop(sig)
    t0 = time.monotonic()
    metadata_s = b.start()
    time_to_offsets(b, topic, groups, partitions, want)
    return {"metadata_s": round(metadata_s, 3), "offsets_s": round(time.monotonic() - t0, 3)}


def run(mode, args):
    tmp = Path(tempfile.mkdtemp(prefix=f"offsets-{mode}-", dir=args.scratch))
    data = tmp / "data"
    data.mkdir()
    config = f"offsets.topic.segment.bytes = {args.segment_bytes}\n"
    config += "log.cleaner.backoff.ms = 1000\n" if mode == "on" else "log.cleaner.enable = false\n"
    b = Broker(data, config, args.shards)
    try:
        return measure(b, mode, data, args)
    finally:
        if b.proc is not None and b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait()
        subprocess.run(["rm", "-rf", str(tmp)], check=True)


def measure(b, mode, data, args):
    b.start()
    topic = "bench-offsets"
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
    rounds, took = commit_all(b.bootstrap, topic, args.groups, args.partitions, args.commits)
    out = {"mode": f"cleaner {mode}", "commits": rounds * args.groups * args.partitions,
           "commit_s": round(took, 1), "segment_bytes": args.segment_bytes}
    out["offsets_bytes_after_commits"] = sum(dir_bytes(d) for d in offsets_dirs(data))
    if mode == "on":
        # Compacted: what is left is about one record per group and partition
        # per closed segment; wait until the size stops shrinking.
        t0, last, stable_since = time.monotonic(), None, time.monotonic()
        while time.monotonic() - stable_since < 5:
            assert time.monotonic() - t0 < DEADLINE_S, "cleaner never settled"
            now = sum(dir_bytes(d) for d in offsets_dirs(data))
            if now != last:
                last, stable_since = now, time.monotonic()
            time.sleep(0.5)
        out["clean_wait_s"] = round(time.monotonic() - t0 - 5, 1)
    out["offsets_bytes"] = sum(dir_bytes(d) for d in offsets_dirs(data))
    out["offsets_log_bytes"] = sum(f.stat().st_size for d in offsets_dirs(data) for f in d.glob("*.log"))
    out["after_sigkill"] = restart_timed(b, signal.SIGKILL, topic, args.groups, args.partitions, rounds)
    out["after_sigterm"] = restart_timed(b, signal.SIGTERM, topic, args.groups, args.partitions, rounds)
    b.stop(signal.SIGTERM)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--commits", type=int, default=1_000_000)
    p.add_argument("--groups", type=int, default=10)
    p.add_argument("--partitions", type=int, default=100)
    p.add_argument("--segment-bytes", type=int, default=1 << 20)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--scratch", default="/work")
    p.add_argument("--modes", default="off,on")
    args = p.parse_args()
    for mode in args.modes.split(","):
        print(json.dumps(run(mode, args)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
