"""Budgets for requests in flight and for connections (issue 13, finding 5).

- `queued.max.request.bytes` (per shard, 100 MiB by default): many
  connections each declare a 90 MiB frame, send 8 MiB of it and stall.
  Before the budget every one of them got its frame buffer and the broker's
  RSS grew by all the bytes sent; now a shard reads at most one such frame
  (90 + 90 > 100), the other connections' bytes wait in the kernel, and a
  normal client still produces and consumes meanwhile.
- Frames as large as a small budget take turns (no deadlock); a frame is
  never larger than the budget (the broker refuses to start with
  `queued.max.request.bytes` below `socket.request.max.bytes`).
- `connections.max.idle.ms`: an idle connection is closed; a busy one is not.
- `max.connections.per.ip` / `max.connections`: connections over the limit
  are closed at once; the existing ones keep working.
"""

import socket
import struct
import threading
import time

import kafka_wire as kw
from clients import Rec, consume_exact, produce_all, roundtrip
from conftest import create_topic

STALLERS = 48
DECLARED_BYTES = 90 << 20
SENT_BYTES = 8 << 20
SHARDS = 2
BUDGET_BYTES = 100 << 20  # the default queued.max.request.bytes, per shard
# Frames in flight are bounded by the budget on every shard. (Before the
# budget: 48 x 8 MiB = 384 MiB; measured on the 2-core dev machine: 387 MiB
# before, 19 MiB after, with 46 of the 48 connections held back.)
GROWTH_LIMIT = SHARDS * BUDGET_BYTES
STALL_S = 2.0  # a send making no progress this long: the broker is not reading


def stall(port: int, socks: list, sent: list, i: int):
    """Declares a DECLARED_BYTES Produce frame, sends up to SENT_BYTES of it,
    stops when the broker stops reading."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    socks[i] = s
    head = struct.pack(">i", DECLARED_BYTES) + kw.header_v1(0, 3, 1)
    chunk = bytes(256 << 10)
    s.settimeout(STALL_S)
    done = 0
    try:
        s.sendall(head)
        while done < SENT_BYTES:
            done += s.send(chunk[: SENT_BYTES - done])
    except TimeoutError:
        pass  # the broker stopped reading this connection
    sent[i] = done


def test_stalled_huge_frames_stay_within_the_budget(own_broker, topic_name):
    b = own_broker
    create_topic(b.bootstrap, topic_name, 1)
    roundtrip(b.bootstrap, topic_name, b"warm")
    before = b.rss_bytes()
    b.reset_peak_rss()
    socks = [None] * STALLERS
    sent = [0] * STALLERS
    threads = [threading.Thread(target=stall, args=(b.port, socks, sent, i)) for i in range(STALLERS)]
    try:
        for t in threads:
            t.start()
        # Each sender ends when it has sent its 8 MiB or the broker has not
        # read from it for STALL_S.
        for t in threads:
            t.join(timeout=120)
            assert not t.is_alive(), "a sender hung"
        stalled = sum(1 for n in sent if n < SENT_BYTES)
        # A normal client is served while the stalled frames are held.
        roundtrip(b.bootstrap, topic_name, b"during")
        produce_all(b.bootstrap, topic_name, 0, [Rec(b"k", b"x" * 100_000)] * 20)
        assert b.alive()
        peak = b.peak_rss_bytes()
        growth = peak - before
        print(f"RSS {before >> 20} MiB before, peak {peak >> 20} MiB: growth {growth >> 20} MiB; "
              f"{STALLERS} connections sent {sum(sent) >> 20} MiB, {stalled} were stalled by the broker")
        assert growth < GROWTH_LIMIT, (
            f"peak RSS grew {growth >> 20} MiB with {STALLERS} stalled {DECLARED_BYTES >> 20} MiB frames"
        )
        assert stalled > 0, "no connection was held back"
    finally:
        for s in socks:
            if s is not None:
                s.close()
    roundtrip(b.bootstrap, topic_name, b"after")


def test_frames_as_large_as_the_budget_take_turns(broker_with, topic_name):
    """A 1 MiB budget and 1 MiB frames (the budget may not be smaller than
    socket.request.max.bytes, so every frame fits it alone): four producers
    at once send ~1 MB Produce requests, of which a shard holds one at a
    time. None deadlocks; every record arrives."""
    b = broker_with("queued.max.request.bytes = 1048576\nsocket.request.max.bytes = 1048576\n")
    create_topic(b.bootstrap, topic_name, 4)
    recs = [Rec(None, bytes([i]) * 200_000) for i in range(20)]
    errors = []

    def produce(p):
        try:
            produce_all(b.bootstrap, topic_name, p, recs, **{"linger.ms": 100})
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((p, e))

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a producer hung"
    assert not errors, errors
    for p in range(4):
        got = consume_exact(b.bootstrap, topic_name, p, 0, len(recs))
        assert [g.value for g in got] == [r.value for r in recs]


def test_an_idle_connection_is_closed(broker_with, topic_name):
    b = broker_with("connections.max.idle.ms = 1000\n")
    with kw.connect(b.port) as idle, kw.connect(b.port) as busy, kw.connect(b.port) as partial:
        idle.sendall(kw.api_versions_v0(1))
        assert kw.parse_api_versions(kw.recv_frame(idle), 1)[0] == 0
        partial.sendall(struct.pack(">i", 1000) + b"\x00" * 10)  # then nothing
        # The busy connection sends a request every 300 ms and stays open.
        start = time.monotonic()
        closed_after = None
        cid = 10
        while time.monotonic() - start < 10 and closed_after is None:
            cid += 1
            busy.sendall(kw.api_versions_v0(cid))
            assert kw.parse_api_versions(kw.recv_frame(busy), cid)[0] == 0
            if kw.wait_closed(idle, 0.3):
                closed_after = time.monotonic() - start
        assert closed_after is not None, "the idle connection was not closed within 10 s"
        assert closed_after >= 0.5, f"closed after {closed_after:.2f} s, before it was idle"
        assert kw.wait_closed(partial, 5), "a connection stalled mid-frame was not closed"
        busy.sendall(kw.api_versions_v0(99))
        assert kw.parse_api_versions(kw.recv_frame(busy), 99)[0] == 0


def api_versions_ok(s, cid) -> bool:
    try:
        s.sendall(kw.api_versions_v0(cid))
        return kw.parse_api_versions(kw.recv_frame(s), cid)[0] == 0
    except (OSError, ConnectionError):
        return False


def open_working(port: int, count: int, deadline_s: float = 10):
    """`count` connections that answer ApiVersions. The broker notices
    earlier connections (its own readiness probe's) closing asynchronously,
    so a refused one is retried until a deadline."""
    socks = []
    deadline = time.monotonic() + deadline_s
    while len(socks) < count:
        s = kw.connect(port)
        if api_versions_ok(s, len(socks)):
            socks.append(s)
            continue
        s.close()
        assert time.monotonic() < deadline, f"only {len(socks)} of {count} connections were accepted"
        time.sleep(0.05)
    return socks


def test_connections_over_the_per_ip_limit_are_closed(broker_with):
    b = broker_with("max.connections.per.ip = 5\n")
    socks = open_working(b.port, 5)
    try:
        extra = kw.connect(b.port)
        assert kw.wait_closed(extra, 10), "the sixth connection from one address stayed open"
        extra.close()
        for i, s in enumerate(socks):
            assert api_versions_ok(s, 100 + i), f"existing connection {i} stopped working"
        # A closed connection frees its slot (the broker notices the close
        # asynchronously: retry until a deadline).
        socks.pop().close()
        socks += open_working(b.port, 1)
    finally:
        for s in socks:
            s.close()


def test_connections_over_max_connections_are_closed(broker_with):
    b = broker_with("max.connections = 3\n")
    socks = open_working(b.port, 3)
    try:
        extra = kw.connect(b.port)
        assert kw.wait_closed(extra, 10), "a fourth connection stayed open"
        extra.close()
        for i, s in enumerate(socks):
            assert api_versions_ok(s, 200 + i)
    finally:
        for s in socks:
            s.close()
