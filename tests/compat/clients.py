"""Client-library helpers shared by the tests: produce with confluent-kafka
and read back exactly by partition assignment (no consumer group involved)."""

import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


@dataclass
class Rec:
    key: bytes | None
    value: bytes | None
    headers: list = field(default_factory=list)  # [(str, bytes | None)]
    offset: int = -1
    timestamp: int | None = None


def producer(bootstrap: str, **conf) -> Producer:
    base = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5}
    base.update(conf)
    return Producer(base)


def produce_all(bootstrap: str, topic: str, partition: int, recs, timeout: float = 60.0, **conf):
    """Produces recs in order to one partition with acks=all; returns the
    delivered offsets in produce order. Fails on any delivery error."""
    p = producer(bootstrap, **conf)
    results = [None] * len(recs)

    def cb(i):
        def done(err, msg):
            results[i] = err if err is not None else msg.offset()

        return done

    for i, r in enumerate(recs):
        kw = {}
        if r.headers:
            kw["headers"] = r.headers
        if r.timestamp is not None:
            kw["timestamp"] = r.timestamp
        while True:
            try:
                p.produce(topic, value=r.value, key=r.key, partition=partition, on_delivery=cb(i), **kw)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(timeout)
    assert left == 0, f"{left} messages not delivered within {timeout}s"
    errors = [(i, e) for i, e in enumerate(results) if not isinstance(e, int)]
    assert not errors, f"delivery errors: {errors[:5]}"
    return results


def consumer(bootstrap: str, **conf) -> Consumer:
    # group.id is required by the Python client even when only assign() is used;
    # nothing is committed and no group is joined.
    base = {
        "bootstrap.servers": bootstrap,
        "group.id": "compat-assign-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": False,
    }
    base.update(conf)
    return Consumer(base)


def consume_exact(bootstrap: str, topic: str, partition: int, start: int, count: int,
                  timeout: float = 60.0, **conf):
    """Reads exactly `count` records of one partition from offset `start` by
    assignment; fails on consumer errors or timeout."""
    c = consumer(bootstrap, **conf)
    try:
        c.assign([TopicPartition(topic, partition, start)])
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise AssertionError(f"consumer error: {msg.error()}")
            out.append(
                Rec(msg.key(), msg.value(), list(msg.headers() or []), msg.offset(), msg.timestamp()[1])
            )
        assert len(out) == count, f"got {len(out)} of {count} records from {topic}[{partition}]@{start}"
        return out
    finally:
        c.close()


def assert_same(got, want, check_offsets=True, check_headers=True):
    """Byte-for-byte comparison of records, reporting the first mismatch."""
    assert len(got) == len(want), f"{len(got)} records, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        where = f"record {i} (offset {g.offset})"
        assert g.key == w.key, f"{where}: key {g.key!r:.80} != {w.key!r:.80}"
        assert g.value == w.value, (
            f"{where}: value differs ({None if g.value is None else len(g.value)} bytes vs "
            f"{None if w.value is None else len(w.value)} bytes)"
        )
        if check_headers:
            assert list(g.headers) == list(w.headers), f"{where}: headers {g.headers} != {w.headers}"
        if check_offsets and w.offset >= 0:
            assert g.offset == w.offset, f"{where}: offset {g.offset} != {w.offset}"
        if w.timestamp is not None:
            assert g.timestamp == w.timestamp, f"{where}: timestamp {g.timestamp} != {w.timestamp}"


def roundtrip(bootstrap: str, topic: str, tag: bytes = b"health"):
    """One acks=all record in and the same record out: the broker serves clients."""
    [off] = produce_all(bootstrap, topic, 0, [Rec(b"k-" + tag, b"v-" + tag)], timeout=30)
    [got] = consume_exact(bootstrap, topic, 0, off, 1, timeout=30)
    assert (got.key, got.value) == (b"k-" + tag, b"v-" + tag)
