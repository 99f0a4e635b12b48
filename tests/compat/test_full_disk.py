"""A full disk, for real: the broker's data directory is a small tmpfs
(O_DIRECT works on tmpfs since Linux 6.6). Filling it must fail appends with
KAFKA_STORAGE_ERROR, lose no acknowledged record, keep every partition
readable, not flood the log, and once space is freed (a ballast topic is
deleted) appends to the partition that failed must work again without a
restart."""

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient

from clients import Rec, consume_exact, produce_all, roundtrip
from conftest import Broker, create_topic

FS_BYTES = 64 << 20
RECORD_BYTES = 60_000
# Far more than fits: a broker that never reports the disk full fails here.
MAX_PRODUCE_BYTES = 4 * FS_BYTES
DEADLINE_S = 60.0


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    try:
        try:
            fd = os.open(mnt / "probe", os.O_CREAT | os.O_WRONLY | os.O_DIRECT)
            os.close(fd)
            os.unlink(mnt / "probe")
        except OSError as e:
            pytest.skip(f"tmpfs does not take O_DIRECT on this kernel (Linux 6.6 or later does): {e}")
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def produce_until_full(bootstrap: str, topic: str):
    """Produces RECORD_BYTES records to partition 0, a few at a time with no
    retries, until one fails. Returns (acked values by offset, the error)."""
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "retries": 0,
            "linger.ms": 0,
            "enable.idempotence": False,
            "log_level": 3,
        }
    )
    acked = {}
    errors = []

    def done(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[msg.offset()] = msg.value()

    sent = 0
    i = 0
    while not errors:
        assert sent < MAX_PRODUCE_BYTES, f"{sent} bytes sent to a {FS_BYTES}-byte disk and no error"
        for _ in range(8):
            value = (b"%08d" % i) * (RECORD_BYTES // 8)
            p.produce(topic, value=value, partition=0, on_delivery=done)
            sent += len(value)
            i += 1
        left = p.flush(30)
        assert left == 0, f"{left} produce requests unanswered for 30 s"
    return acked, errors[0]


def produce_one(bootstrap: str, topic: str, value: bytes):
    """Produces one record with acks=all and no retries; the delivery error or
    the offset."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0, "log_level": 3})
    out = []
    p.produce(topic, value=value, partition=0, on_delivery=lambda err, msg: out.append(err or msg.offset()))
    assert p.flush(30) == 0, "produce unanswered for 30 s"
    return out[0]


def tick_warnings(log_path: Path) -> dict:
    """Count of "log tick failed" warnings per log directory in the broker log."""
    counts = {}
    for line in log_path.read_text(errors="replace").splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        if "log tick failed" in line:
            m = re.search(r"dir=(\S+)", line)
            key = m.group(1) if m else line
            counts[key] = counts.get(key, 0) + 1
    return counts


def fill_up(path: Path, leave_bytes: int = 64 << 10):
    """Writes path until the file system is full, then gives leave_bytes
    back: room for the broker's metadata file, not for the log's writes."""
    chunk = b"f" * 4096
    with open(path, "ab", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError:
                break
    os.truncate(path, max(0, path.stat().st_size - leave_bytes))


def test_full_disk_fails_appends_loses_nothing_and_recovers(tmp_path, small_fs, topic_name):
    b = Broker(small_fs / "data", tmp_path / "strom.log")
    b.start()
    try:
        ballast = topic_name + "-ballast"
        filler = topic_name + "-filler"
        create_topic(b.bootstrap, ballast, 1)
        create_topic(b.bootstrap, filler, 1, config={"segment.ms": "1000"})
        produce_all(b.bootstrap, ballast, 0, [Rec(None, b"b" * RECORD_BYTES)] * (FS_BYTES // 3 // RECORD_BYTES))

        acked, err = produce_until_full(b.bootstrap, filler)
        assert err.code() == KafkaError.KAFKA_STORAGE_ERROR, f"expected KAFKA_STORAGE_ERROR, got {err}"
        assert len(acked) > 100, f"only {len(acked)} records fit before the first error"
        assert b.alive(), f"strom died on a full disk\n{b.log_tail()}"

        # Nothing acknowledged is lost and the log stays readable.
        assert sorted(acked) == list(range(len(acked))), "acked offsets are not contiguous from 0"
        got = consume_exact(b.bootstrap, filler, 0, 0, len(acked))
        for g in got:
            assert g.value == acked[g.offset], f"record at offset {g.offset} differs"
        # A record or two may still fit in the active segment's preallocated
        # tail after the roll to a new segment failed; then every append
        # fails with a clear error.
        failures = 0
        for i in range(100):
            value = (b"%08d" % (len(acked) + i + 1_000_000)) * (RECORD_BYTES // 8)
            r = produce_one(b.bootstrap, filler, value)
            if isinstance(r, KafkaError):
                assert r.code() == KafkaError.KAFKA_STORAGE_ERROR, r
                failures += 1
                if failures == 3:
                    break
            else:
                assert failures == 0, "an append worked after an append failed on the full disk"
                assert r == len(acked), f"offset {r} after {len(acked)} acked records"
                acked[r] = value
        assert failures == 3, "appends kept working on a full disk"
        assert b.alive(), f"strom died on a full disk\n{b.log_tail()}"
        # The broker gives space back by itself (an idle partition's
        # preallocation is trimmed, a rolled segment is trimmed to its data),
        # and what it still holds in memory is then written. Keep the disk
        # (nearly) full with a file of the test's own, so the ticks fail.
        fill_up(small_fs / "fill")

        # segment.ms is due now or soon, so every 100 ms tick tries the roll
        # and fails. The first failure is warned about at once...
        deadline = time.monotonic() + DEADLINE_S
        while not tick_warnings(b.log_path):
            assert time.monotonic() < deadline, f"no tick failure logged on the full disk\n{b.log_tail()}"
            time.sleep(0.1)
        # ...and then not again for 30 s: watch 20 more ticks.
        time.sleep(2.0)
        noisy = {d: n for d, n in tick_warnings(b.log_path).items() if n > 1}
        assert not noisy, f"tick failures warned about more than once in 2 s: {noisy}"

        # Free space by deleting the ballast topic: appends to the partition
        # that failed work again, without a restart.
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.delete_topics([ballast], operation_timeout=10)[ballast].result(timeout=30)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            r = produce_one(b.bootstrap, filler, b"after space was freed")
            if not isinstance(r, KafkaError):
                break
            assert r.code() == KafkaError.KAFKA_STORAGE_ERROR, r
            assert time.monotonic() < deadline, f"appends still fail {DEADLINE_S} s after the delete\n{b.log_tail()}"
            time.sleep(0.2)
        roundtrip(b.bootstrap, filler)

        # Every acked record is there, in order, offsets contiguous. Records
        # whose produce failed may be there too (the broker kept them in
        # memory and wrote them once space came back), as after a producer
        # retry; nothing else is.
        got = consume_exact(b.bootstrap, filler, 0, 0, r + 1)
        assert [g.offset for g in got] == list(range(r + 1))
        for off, value in acked.items():
            assert got[off].value == value, f"acked record at offset {off} differs"
        assert got[r].value == b"after space was freed"
        for g in got[len(acked) : r]:
            assert re.fullmatch(rb"(\d{8})+", g.value), g.value[:40]
        assert b.alive()
    finally:
        code = b.stop()
    assert code == 0, f"strom exited with {code}\n{b.log_tail()}"
