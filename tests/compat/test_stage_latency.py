"""`strom serve --stage-latency DIR`: where requests spend their time
(issue 18: a latency breakdown per stage).

A broker started with the flag writes, per shard and per second, the
histograms of the stages of produce and fetch requests to
DIR/shard-N.jsonl. Here real clients (confluent-kafka) produce with acks=1
and acks=all to partitions of both shards while a consumer long-polls, and
the files must come to hold every stage those requests pass through, with
believable values: the same lines `results/latency-stages/breakdown.py`
reads.
"""

import json
import time
from pathlib import Path

from clients import consumer, producer
from confluent_kafka import TopicPartition
from conftest import Broker, create_topic

# What a produce to another shard's partition, and a fetch woken by it,
# pass through (produce.order needs two requests in flight on one
# connection, reply.wait a reply behind another: not asked for).
STAGES = [
    "produce.receive",
    "hop.there",
    "hop.back",
    "append.room",
    "append.durable",
    "produce.handle",
    "produce.send",
    "fetch.wake",
    "fetch.read",
    "fetch.send",
    "timer.late",
]
ROUNDS = 10
HIGHEST_US = 60_000_000


class StagedBroker(Broker):
    def __init__(self, tmp_path: Path):
        super().__init__(tmp_path / "data", tmp_path / "strom.log")
        self.stage_dir = tmp_path / "stages"

    def extra_args(self) -> list:
        return ["--stage-latency", str(self.stage_dir)]


def stage_buckets(stage_dir: Path) -> dict:
    """Every shard's lines so far, summed: stage -> {value_us: count}."""
    out = {}
    for path in sorted(stage_dir.glob("shard-*.jsonl")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            assert set(rec) == {"t_ms", "shard", "stages"}, rec.keys()
            for stage, buckets in rec["stages"].items():
                merged = out.setdefault(stage, {})
                for value, count in buckets:
                    assert 0 <= value <= HIGHEST_US and count > 0, (stage, value, count)
                    merged[value] = merged.get(value, 0) + count
    return out


def test_stages_of_real_produce_and_fetch_are_written(tmp_path, topic_name):
    b = StagedBroker(tmp_path)
    b.start()
    try:
        # Two partitions: with two shards, at least one of them is owned by
        # the shard the client's connection is not on.
        create_topic(b.bootstrap, topic_name, partitions=2)
        c = consumer(b.bootstrap, **{"fetch.wait.max.ms": 2000})
        c.assign([TopicPartition(topic_name, 0, 0), TopicPartition(topic_name, 1, 0)])
        fast = producer(b.bootstrap, acks="1", **{"linger.ms": 0})
        synced = producer(b.bootstrap, acks="all", **{"linger.ms": 0})
        got = 0
        for i in range(ROUNDS):
            # One record at a time, each produced once the consumer has the
            # last: its next fetch is then waiting for this one.
            p = fast if i % 2 == 0 else synced
            p.produce(topic_name, value=b"v%d" % i, partition=i % 2)
            assert p.flush(15) == 0, "a record was not delivered"
            deadline = time.monotonic() + 15
            while got <= i and time.monotonic() < deadline:
                msg = c.poll(0.5)
                if msg is None:
                    continue
                assert not msg.error(), msg.error()
                got += 1
            assert got == i + 1, f"the consumer got {got} of {i + 1} records"
        c.close()

        # The shards write a line a second: wait for the lines that hold
        # the requests above.
        deadline = time.monotonic() + 15
        while True:
            seen = stage_buckets(b.stage_dir)
            missing = [s for s in STAGES if s not in seen]
            produced = sum(seen.get("produce.handle", {}).values())
            if (not missing and produced >= ROUNDS) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert not missing, f"stages never written: {missing} (have {sorted(seen)})"
        assert produced >= ROUNDS, f"{produced} produce requests recorded, {ROUNDS} made"
        # Per partition append, one per record (and nothing else appends
        # to user topics).
        appends = sum(seen["append.durable"].values())
        assert appends >= ROUNDS, f"{appends} appends recorded for {ROUNDS} records"
        # acks=all waits for fdatasync: not nothing.
        assert max(seen["append.durable"]) > 0, seen["append.durable"]
        # About a thousand 1 ms probes a second per shard.
        assert sum(seen["timer.late"].values()) > 500, seen["timer.late"]
    finally:
        b.stop()
