"""Durability across restarts: a clean stop (SIGTERM) and a crash (SIGKILL)
on the same data dir keep every acknowledged record, byte for byte."""

import signal
import threading
import time

from confluent_kafka import Producer

from clients import Rec, assert_same, consume_exact, produce_all
from conftest import create_topic


def test_sigterm_restart_keeps_everything(own_broker, topic_name):
    b = own_broker
    create_topic(b.bootstrap, topic_name, 2)
    want = {p: [Rec(f"k{p}-{i}".encode(), f"value {p} {i}".encode() * (1 + i % 7),
                    [("i", str(i).encode())]) for i in range(3000)] for p in (0, 1)}
    for p in (0, 1):
        for r, o in zip(want[p], produce_all(b.bootstrap, topic_name, p, want[p])):
            r.offset = o
    code = b.restart()
    assert code == 0, f"strom exited {code} on SIGTERM\n{b.log_tail()}"
    for p in (0, 1):
        assert_same(consume_exact(b.bootstrap, topic_name, p, 0, 3000), want[p])
    # Appends continue after the recovered end.
    [off] = produce_all(b.bootstrap, topic_name, 0, [Rec(b"k", b"after restart")])
    assert off == 3000
    # A second restart with nothing new in between changes nothing.
    b.restart()
    got = consume_exact(b.bootstrap, topic_name, 0, 0, 3001)
    assert_same(got[:3000], want[0])
    assert got[3000].value == b"after restart"


def test_sigterm_restart_keeps_topics(own_broker, topic_name):
    b = own_broker
    create_topic(b.bootstrap, topic_name, 3)
    produce_all(b.bootstrap, topic_name, 2, [Rec(None, b"x")])
    b.restart()
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(topic=topic_name, timeout=10)
    assert sorted(md.topics[topic_name].partitions) == [0, 1, 2]
    [got] = consume_exact(b.bootstrap, topic_name, 2, 0, 1)
    assert got.value == b"x"


def test_sigkill_keeps_acknowledged_records(own_broker, topic_name):
    """A producer sends acks=all records one at a time in flight; the broker is
    killed with SIGKILL mid-stream. After a restart every record whose
    delivery was acknowledged is at the offset its acknowledgement named, and
    the log holds produced records only, in produce order."""
    b = own_broker
    create_topic(b.bootstrap, topic_name, 1)
    p = Producer({
        "bootstrap.servers": b.bootstrap,
        "acks": "all",
        "linger.ms": 1,
        "max.in.flight.requests.per.connection": 1,
        "message.timeout.ms": 8000,
        "retries": 0,
        "reconnect.backoff.max.ms": 500,
    })
    acked = {}  # seq -> offset
    failed = 0
    lock = threading.Lock()

    def on_delivery(err, msg):
        nonlocal failed
        with lock:
            if err is None:
                acked[int(msg.key())] = msg.offset()
            else:
                failed += 1

    value = lambda seq: f"record {seq} ".encode() * (1 + seq % 20)  # noqa: E731
    stop = threading.Event()
    sent = 0

    def produce_loop():
        nonlocal sent
        while not stop.is_set():
            try:
                p.produce(topic_name, key=str(sent).encode(), value=value(sent), partition=0,
                          on_delivery=on_delivery)
                sent += 1
            except BufferError:
                pass
            p.poll(0.001)

    t = threading.Thread(target=produce_loop)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            with lock:
                n = len(acked)
            if n >= 2000:
                break
            assert time.monotonic() < deadline, f"only {n} records acknowledged in 60s"
            assert t.is_alive()
            time.sleep(0.01)
        b.stop(signal.SIGKILL)  # mid-stream: the producer keeps sending
        time.sleep(0.2)
    finally:
        stop.set()
        t.join(timeout=30)
    # Everything still in flight fails against the dead broker (no retries).
    p.flush(30)
    with lock:
        acked_now = dict(acked)
    assert len(acked_now) >= 2000

    b.start()
    seqs = sorted(acked_now)
    offsets = [acked_now[s] for s in seqs]
    assert offsets == sorted(offsets), "acknowledged offsets out of produce order"
    end = max(offsets) + 1
    got = consume_exact(b.bootstrap, topic_name, 0, 0, end)
    for s in seqs:
        r = got[acked_now[s]]
        assert (r.key, r.value) == (str(s).encode(), value(s)), (
            f"acknowledged record {s} at offset {acked_now[s]} is {r.key!r}/{r.value!r:.60}"
        )
    log_seqs = [int(r.key) for r in got]
    assert log_seqs == sorted(log_seqs) and len(set(log_seqs)) == len(log_seqs), "log out of order"
    for r in got:
        assert r.value == value(int(r.key)), f"offset {r.offset}: corrupt value"
    # New appends land after whatever survived.
    [off] = produce_all(b.bootstrap, topic_name, 0, [Rec(b"-1", b"after crash")])
    assert off >= end
