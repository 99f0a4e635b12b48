#!/usr/bin/env python3
"""Issue 13, finding 9: a topic of many partitions on a broker of its own.

Starts `strom serve --shards 2` on a fresh data dir, creates one topic of
PARTITIONS partitions (timed until every partition has a leader), measures the
data dir's disk use (sum of st_blocks * 512, as du counts it) and the broker's
RSS, produces RECORDS records of 1 KB round-robin over the partitions
(acks=1), measures again, waits IDLE_S for the idle trim and measures a third
time. Prints one JSON line. The data dir is removed at the end.

Usage: topic.py STROM_BIN SCRATCH_DIR [PARTITIONS] [RECORDS] [IDLE_S]
Run with tests/compat/.venv/bin/python (confluent-kafka).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def disk_use(root):
    used = length = files = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            used += st.st_blocks * 512
            files += 1
            if name.endswith(".log"):
                length += st.st_size
    return used, length, files


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024


def main():
    binary, scratch = sys.argv[1], sys.argv[2]
    partitions = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
    records = int(sys.argv[4]) if len(sys.argv) > 4 else 100_000
    idle_s = float(sys.argv[5]) if len(sys.argv) > 5 else 7.0
    data = os.path.join(scratch, "data")
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(os.path.join(scratch, "broker.log"), "wb")
    proc = subprocess.Popen([binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}",
                             "--shards", "2"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "RUST_LOG": "warn"})
    out = {"partitions": partitions, "records": records, "record_bytes": 1000}
    try:
        bootstrap = f"127.0.0.1:{port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for _ in range(300):
            try:
                admin.list_topics(timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        base_used, _, _ = disk_use(data)
        out["rss_start_bytes"] = rss(proc.pid)
        started = time.monotonic()
        admin.create_topics([NewTopic("t", num_partitions=partitions, replication_factor=1)],
                            operation_timeout=300, request_timeout=300)["t"].result(timeout=600)
        while True:
            md = admin.list_topics(topic="t", timeout=30).topics.get("t")
            if md and md.error is None and len(md.partitions) == partitions and all(
                    p.leader >= 0 for p in md.partitions.values()):
                break
            time.sleep(0.05)
        out["create_s"] = round(time.monotonic() - started, 2)
        used, length, files = disk_use(data)
        out.update(empty_used_bytes=used - base_used, empty_log_file_bytes=length, files=files,
                   rss_empty_bytes=rss(proc.pid))
        p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 20})
        acked = [0]
        errors = []

        def done(err, msg):
            if err:
                errors.append(str(err))
            else:
                acked[0] += len(msg.value())

        started = time.monotonic()
        for i in range(records):
            value = (b"%08d" % i) * 125
            while True:
                try:
                    p.produce("t", value=value, partition=i % partitions, on_delivery=done)
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
        assert p.flush(120) == 0 and not errors, errors[:3]
        out["produce_s"] = round(time.monotonic() - started, 2)
        out["acked_value_bytes"] = acked[0]
        used, length, _ = disk_use(data)
        out.update(written_used_bytes=used - base_used, written_log_file_bytes=length,
                   rss_written_bytes=rss(proc.pid))
        time.sleep(idle_s)
        used, length, _ = disk_use(data)
        out.update(idle_used_bytes=used - base_used, idle_log_file_bytes=length,
                   rss_idle_bytes=rss(proc.pid))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
