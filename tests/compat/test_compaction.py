"""Log compaction against the real broker with real clients (issue 16).

A compacted topic with small segments takes many updates per key; the
shard's cleaner (backoff shortened by config) compacts the closed segments.
Each test waits, on a bounded deadline, for the condition it then asserts.
"""

import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer, TopicPartition

from clients import Rec, consumer, produce_all
from conftest import create_topic

CLEANER = "log.cleaner.backoff.ms = 200\n"
SEGMENT_BYTES = 16384
KEYS = 40
UPDATES = 100  # rounds of updates
VALUE_BYTES = 200
# Several batches per segment, so segments roll and some batches are rebuilt.
SMALL_BATCHES = {"batch.size": 4096, "linger.ms": 0}


def partition_dir(broker, topic: str, partition: int = 0) -> Path:
    return broker.data_dir / f"{topic}-{partition}"


def log_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.glob("*.log"))


def active_base(d: Path) -> int:
    return max(int(f.name.split(".")[0]) for f in d.glob("*.log") if len(f.name) == 24)


def read_all(bootstrap: str, topic: str, timeout: float = 30.0):
    """Every record of partition 0 from the beginning to the high watermark,
    as {offset: (key, value)}."""
    c = consumer(bootstrap)
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, low)])
        out = {}
        deadline = time.monotonic() + timeout
        pos = low
        while pos < high:
            assert time.monotonic() < deadline, f"read up to {pos} of {high}"
            msg = c.poll(0.5)
            if msg is None:
                # A trailing gap: nothing left below the high watermark.
                p = c.position([TopicPartition(topic, 0)])[0].offset
                if p >= high or (out and max(out) == high - 1):
                    break
                continue
            assert not msg.error(), f"consumer error: {msg.error()}"
            assert msg.offset() not in out, f"offset {msg.offset()} read twice"
            out[msg.offset()] = (msg.key(), msg.value())
            pos = msg.offset() + 1
        return out, high
    finally:
        c.close()


def expected_below(produced: dict, end: int) -> dict:
    """The last record of each key among offsets below `end`."""
    last = {}
    for off in sorted(produced):
        if off < end:
            last[produced[off][0]] = off
    return {off: produced[off] for off in last.values()}


def compacted_as_expected(got: dict, produced: dict, end: int) -> str | None:
    """Why `got` is not the compaction of `produced` below `end` (and
    untouched from `end`), or None."""
    for off, rec in got.items():
        if produced.get(off) != rec:
            return f"offset {off}: read {rec!r:.60}, produced {produced.get(off)!r:.60}"
    want = expected_below(produced, end)
    have = {o: r for o, r in got.items() if o < end}
    if have != want:
        extra = sorted(set(have) - set(want))[:5]
        missing = sorted(set(want) - set(have))[:5]
        return f"below {end}: extra offsets {extra}, missing {missing}"
    for off in produced:
        if off >= end and off not in got:
            return f"offset {off} at or past the active segment {end} is gone"
    return None


def produce_updates(bootstrap: str, topic: str):
    """Key k is updated every (k % 7 + 1)th round, so the keys' last updates
    lie apart (compaction leaves gaps), in small batches (several per
    segment, some rebuilt)."""
    recs = []
    for round_ in range(UPDATES):
        for k in range(KEYS):
            if round_ % (k % 7 + 1) == 0:
                value = f"{k}:{round_}:".encode().ljust(VALUE_BYTES, b"x")
                recs.append(Rec(f"key-{k}".encode(), value))
    offsets = produce_all(bootstrap, topic, 0, recs, **SMALL_BATCHES)
    return {off: (r.key, r.value) for off, r in zip(offsets, recs)}


def wait_compacted(broker, topic: str, produced: dict, timeout: float = 90.0):
    d = partition_dir(broker, topic)
    deadline = time.monotonic() + timeout
    why = "never checked"
    while time.monotonic() < deadline:
        end = active_base(d)
        got, _ = read_all(broker.bootstrap, topic)
        why = compacted_as_expected(got, produced, end)
        if why is None:
            return got, end
        time.sleep(0.3)  # paces the polls; the exit is the condition above
    raise AssertionError(f"not compacted within {timeout}s: {why}\n{broker.log_tail()}")


def test_compaction_keeps_the_last_value_per_key_at_its_offset(broker_with, topic_name):
    broker = broker_with(CLEANER)
    create_topic(
        broker.bootstrap,
        topic_name,
        1,
        {"cleanup.policy": "compact", "segment.bytes": str(SEGMENT_BYTES), "min.cleanable.dirty.ratio": "0.01"},
    )
    produced = produce_updates(broker.bootstrap, topic_name)
    produced_bytes = sum(len(k) + len(v) for k, v in produced.values())
    got, end = wait_compacted(broker, topic_name, produced)
    assert end > 0, "no segment was closed"
    # Offsets were kept: the read crossed gaps.
    offsets = sorted(got)
    assert any(b - a > 1 for a, b in zip(offsets, offsets[1:])), "no gap to read across"
    # Every key's last value is there, at the offset it was produced at.
    last = expected_below(produced, 1 << 62)
    for off, rec in last.items():
        assert got.get(off) == rec, f"last value of {rec[0]!r} at {off} not read back"
    on_disk = log_bytes(partition_dir(broker, topic_name))
    assert on_disk < produced_bytes // 4, f"{on_disk} bytes on disk for {produced_bytes} produced"
    # After a restart the compacted log reads back the same.
    broker.restart()
    again, _ = read_all(broker.bootstrap, topic_name)
    assert again == got, "the log read differently after a restart"
    # New records still get the next offsets.
    [nxt] = produce_all(broker.bootstrap, topic_name, 0, [Rec(b"key-0", b"after-restart")])
    assert nxt == max(produced) + 1


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_are_compacted_and_checked_for_keys(broker_with, topic_name, codec):
    """librdkafka compresses each batch with the codec: the cleaner reads
    their keys (and rebuilds them with the same codec), and the keyless
    check reads them too."""
    broker = broker_with(CLEANER)
    create_topic(
        broker.bootstrap,
        topic_name,
        1,
        {"cleanup.policy": "compact", "segment.bytes": str(SEGMENT_BYTES), "min.cleanable.dirty.ratio": "0.01"},
    )
    recs = []
    for round_ in range(UPDATES):
        for k in range(KEYS):
            if round_ % (k % 7 + 1) == 0:
                # Values that do not shrink to nothing, so segments still roll.
                value = f"{k}:{round_}:{(k * 7919 + round_ * 104729) % 1000003}".encode() * 12
                recs.append(Rec(f"key-{k}".encode(), value))
    offsets = produce_all(broker.bootstrap, topic_name, 0, recs, **SMALL_BATCHES, **{"compression.type": codec})
    produced = {off: (r.key, r.value) for off, r in zip(offsets, recs)}
    got, end = wait_compacted(broker, topic_name, produced)
    assert end > 0, "no segment was closed"
    for off, rec in expected_below(produced, 1 << 62).items():
        assert got.get(off) == rec, f"last value of {rec[0]!r} at {off} not read back"
    # A keyless record inside a compressed batch is found and refused.
    p = Producer(
        {"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 50, "retries": 0, "compression.type": codec}
    )
    results = {}
    for i, key in enumerate([b"a", None, b"b"]):
        p.produce(
            topic_name,
            value=b"w%d" % i * 50,
            key=key,
            partition=0,
            on_delivery=lambda err, msg, i=i: results.__setitem__(i, err),
        )
    assert p.flush(30) == 0
    assert len(results) == 3 and all(
        e is not None and e.code() == KafkaError.INVALID_RECORD for e in results.values()
    ), results


def test_tombstones_go_after_delete_retention_ms(broker_with, topic_name):
    """KIP-534: a tombstone stays delete.retention.ms after the clean that
    first saw it, even when its record timestamp is a day old, then goes."""
    broker = broker_with(CLEANER)
    retention_ms = 8000
    create_topic(
        broker.bootstrap,
        topic_name,
        1,
        {
            "cleanup.policy": "compact",
            "segment.bytes": str(SEGMENT_BYTES),
            "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": str(retention_ms),
        },
    )
    keys = [f"t-{i}".encode() for i in range(20)]
    day_ago_ms = int(time.time() * 1000) - 86_400_000
    recs = [Rec(k, b"v".ljust(VALUE_BYTES, b"v"), timestamp=day_ago_ms) for k in keys]
    recs += [Rec(k, None, timestamp=day_ago_ms) for k in keys[:10]]
    # Filler under one key closes the segments holding the tombstones (as
    # old, so no segment's newest timestamp is recent).
    recs += [Rec(b"filler", str(i).encode().ljust(VALUE_BYTES, b"f"), timestamp=day_ago_ms) for i in range(300)]
    # No clean can have seen the tombstones before this.
    before_produce = time.monotonic()
    offsets = produce_all(broker.bootstrap, topic_name, 0, recs, **SMALL_BATCHES)
    deleted, kept = set(keys[:10]), set(keys[10:])
    tomb_offsets = {offsets[20 + i] for i in range(10)}
    # First the old values of the deleted keys go, the tombstones stay.
    deadline = time.monotonic() + 60
    while True:
        got, _ = read_all(broker.bootstrap, topic_name)
        old_values = [o for o, (k, v) in got.items() if k in deleted and v is not None]
        if not old_values:
            break
        assert time.monotonic() < deadline, f"old values of deleted keys still at {old_values[:5]}"
        time.sleep(0.3)
    # Every tombstone is still read until delete.retention.ms after the
    # earliest moment a clean could have seen it (less a second of slack
    # for the clocks), though their record times are a day past it.
    keep_until = before_produce + retention_ms / 1000 - 1.0
    checks = 0
    while time.monotonic() < keep_until or checks == 0:
        got, _ = read_all(broker.bootstrap, topic_name)
        present = {o for o, (k, v) in got.items() if v is None}
        assert present == tomb_offsets, (
            f"{time.monotonic() - before_produce:.1f}s after producing: tombstones at {sorted(present)}, "
            f"expected {sorted(tomb_offsets)}"
        )
        checks += 1
        time.sleep(0.5)  # paces the checks; each one asserts
    # Then they go.
    deadline = time.monotonic() + 60
    while True:
        got, _ = read_all(broker.bootstrap, topic_name)
        left = [o for o, (k, v) in got.items() if v is None]
        if not left:
            break
        assert time.monotonic() < deadline, f"tombstones still at {left}"
        time.sleep(0.5)
    assert {k for k, v in got.values()} >= kept, "a live key went with the tombstones"
    assert not any(k in deleted for k, v in got.values()), "a deleted key is still read"


def test_keyless_record_is_refused_by_a_compacted_topic(broker_with, topic_name):
    broker = broker_with()
    create_topic(broker.bootstrap, topic_name, 1, {"cleanup.policy": "compact"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 50, "retries": 0})
    results = {}

    def cb(i):
        def done(err, msg):
            results[i] = err

        return done

    # One batch: keyed, keyless, keyed.
    for i, key in enumerate([b"a", None, b"b"]):
        p.produce(topic_name, value=b"v%d" % i, key=key, partition=0, on_delivery=cb(i))
    assert p.flush(30) == 0
    assert len(results) == 3
    errs = {i: e for i, e in results.items() if e is not None}
    assert set(errs) == {0, 1, 2}, f"the whole batch fails: {results}"
    assert all(e.code() == KafkaError.INVALID_RECORD for e in errs.values()), errs
    # KIP-467: kafka-python reads the record errors and fails the keyless
    # record with the broker's reason, the others as part of a bad batch.
    from kafka import KafkaProducer
    from kafka.errors import InvalidRecordError, KafkaError as PyKafkaError

    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=200, retries=0)
    try:
        futs = [kp.send(topic_name, key=k, value=b"w", partition=0) for k in [b"a", b"b", None, b"c"]]
        kp.flush(30)
        excs = [f.exception for f in futs]
    finally:
        kp.close(5)
    assert all(f.is_done for f in futs)
    assert isinstance(excs[2], InvalidRecordError), excs
    assert "without key" in str(excs[2]), str(excs[2])
    for i in (0, 1, 3):
        assert isinstance(excs[i], PyKafkaError) and not isinstance(excs[i], InvalidRecordError), excs[i]
        assert "part of a batch" in str(excs[i]), str(excs[i])
    # A delete-policy topic takes keyless records.
    other = create_topic(broker.bootstrap, topic_name + "-delete", 1)
    produce_all(broker.bootstrap, other, 0, [Rec(None, b"fine")])
    # Keyed records still go to the compacted topic.
    produce_all(broker.bootstrap, topic_name, 0, [Rec(b"a", b"ok")])


def test_consumer_offsets_are_compacted(broker_with, topic_name):
    broker = broker_with(CLEANER + "offsets.topic.segment.bytes = 16384\noffsets.topic.num.partitions = 1\n")
    create_topic(broker.bootstrap, topic_name, 1)
    produce_all(broker.bootstrap, topic_name, 0, [Rec(b"k", b"v")])
    c = consumer(broker.bootstrap, **{"group.id": "compact-group"})
    try:
        commits = 1500
        for i in range(commits):
            c.commit(offsets=[TopicPartition(topic_name, 0, i)], asynchronous=False)
    finally:
        c.close()
    d = broker.data_dir / "__consumer_offsets-0"
    deadline = time.monotonic() + 90
    while log_bytes(d) > 3 * SEGMENT_BYTES:
        assert time.monotonic() < deadline, f"__consumer_offsets still {log_bytes(d)} bytes\n{broker.log_tail()}"
        time.sleep(0.3)
    broker.restart()
    c = consumer(broker.bootstrap, **{"group.id": "compact-group"})
    try:
        [tp] = c.committed([TopicPartition(topic_name, 0)], timeout=30)
        assert tp.offset == commits - 1
    finally:
        c.close()


def cleans_since_start(broker, topic: str) -> int:
    """How many `log cleaned` lines partition 0 of `topic` has in the broker's
    log since its last start."""
    text = broker.log_path.read_text(errors="replace")
    since = text.rsplit("--- start on port", 1)[-1]
    return sum(1 for line in since.splitlines() if "log cleaned" in line and f"/{topic}-0" in line)


def segment_files(d: Path) -> dict:
    """{name: (inode, mtime_ns)} of the closed segments' data files."""
    active = active_base(d)
    return {
        f.name: (f.stat().st_ino, f.stat().st_mtime_ns)
        for f in d.glob("*.log")
        if len(f.name) == 24 and int(f.name.split(".")[0]) != active
    }


def test_a_clean_log_is_not_cleaned_again_after_a_restart(broker_with, topic_name):
    # One shard: one cleaner visits every log in each round.
    broker = broker_with(CLEANER, shards=1)
    config = {"cleanup.policy": "compact", "segment.bytes": str(SEGMENT_BYTES), "min.cleanable.dirty.ratio": "0.01"}
    create_topic(broker.bootstrap, topic_name, 1, config)
    produced = produce_updates(broker.bootstrap, topic_name)
    got, end = wait_compacted(broker, topic_name, produced)
    d = partition_dir(broker, topic_name)
    # The cleaner's progress is on disk, in Kafka's format, once the clean
    # that reached the active segment is done.
    checkpoint = d / "cleaner-offset-checkpoint"
    want = f"0\n1\n{topic_name} 0 {end}\n"
    deadline = time.monotonic() + 30
    while not (checkpoint.exists() and checkpoint.read_text() == want):
        assert time.monotonic() < deadline, f"checkpoint {checkpoint.read_text() if checkpoint.exists() else None!r}, want {want!r}"
        time.sleep(0.2)
    broker.restart()
    before = segment_files(d)
    assert before, "no closed segment"
    # Another compacted topic cleaned twice after the start: each clean is in
    # its own round of the one cleaner, so at least one whole round, which
    # offered the first topic's log too, ran after the restart.
    other = create_topic(broker.bootstrap, topic_name + "-b", 1, config)
    other_produced = produce_updates(broker.bootstrap, other)
    wait_compacted(broker, other, other_produced)
    deadline = time.monotonic() + 90
    while cleans_since_start(broker, other) < 2:
        assert time.monotonic() < deadline, f"{other} cleaned {cleans_since_start(broker, other)} times\n{broker.log_tail()}"
        more = produce_updates(broker.bootstrap, other)
        other_produced.update(more)
        wait_compacted(broker, other, other_produced)
    assert cleans_since_start(broker, topic_name) == 0, f"the clean log was cleaned again\n{broker.log_tail()}"
    assert segment_files(d) == before, "the clean log's segments were rewritten"
    again, _ = read_all(broker.bootstrap, topic_name)
    assert again == got, "the log read differently after the restart"
