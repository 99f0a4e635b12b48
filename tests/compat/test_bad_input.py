"""Malformed and hostile input over raw sockets. Each case may close that one
connection or answer with an error; afterwards the broker still serves a real
client and its memory stays bounded."""

import os
import random
import signal
import socket
import struct
from pathlib import Path

import pytest

import kafka_wire as kw
from clients import Rec, consume_exact, produce_all, roundtrip
from conftest import Broker, create_topic

RSS_LIMIT = 500 * 1024 * 1024


def healthy(broker, topic):
    assert broker.alive(), f"strom died\n{broker.log_tail()}"
    roundtrip(broker.bootstrap, topic)
    rss = broker.rss_bytes()
    assert rss < RSS_LIMIT, f"strom RSS {rss >> 20} MiB"


def send_and_expect_close(broker, data: bytes, timeout=10.0):
    """Sends data; the broker must close the connection or answer within
    timeout (Kafka closes on undecodable requests; an error answer is fine too),
    not sit on it silently."""
    with kw.connect(broker.port) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return  # closed while we were still sending: fine
        s.settimeout(timeout)
        try:
            s.recv(1)  # b"" (closed) or the first byte of an answer
        except ConnectionResetError:
            return
        except socket.timeout:
            raise AssertionError(f"no close and no answer {timeout}s after {data[:32]!r}") from None


def test_negative_frame_length(broker, topic):
    send_and_expect_close(broker, struct.pack(">i", -1) + b"\x00" * 16)
    send_and_expect_close(broker, struct.pack(">i", -(2**31)))
    healthy(broker, topic)


@pytest.mark.parametrize("size", [2**31 - 1, 200 * 1024 * 1024])
def test_huge_frame_length(broker, topic, size):
    """Above socket.request.max.bytes (100 MiB): refused before allocating."""
    before = broker.rss_bytes()
    send_and_expect_close(broker, struct.pack(">i", size) + b"\x00" * 1024)
    healthy(broker, topic)
    assert broker.rss_bytes() - before < 100 * 1024 * 1024


def test_tiny_frames(broker, topic):
    # Zero-length frame and frames too short to hold a request header.
    for payload in [b"", b"\x00", b"\x00\x12", b"\x00\x12\x00\x00\x00"]:
        send_and_expect_close(broker, kw.frame(payload))
    healthy(broker, topic)


def test_garbage(broker, topic):
    rng = random.Random(42)
    for i in range(20):
        junk = rng.randbytes(rng.randint(1, 4096))
        with kw.connect(broker.port) as s:
            try:
                s.sendall(junk)
                # Either closes, answers something, or waits for more bytes:
                # none of that may hurt the broker.
                kw.wait_closed(s, 0.2)
            except (BrokenPipeError, ConnectionResetError):
                pass
    # Garbage inside a well-formed frame with a valid ApiVersions header.
    for i in range(20):
        body = kw.header_v1(kw.API_VERSIONS, 3, i) + rng.randbytes(rng.randint(0, 200))
        with kw.connect(broker.port) as s:
            try:
                s.sendall(kw.frame(body))
                kw.wait_closed(s, 0.2)
            except (BrokenPipeError, ConnectionResetError):
                pass
    healthy(broker, topic)


def test_truncated_requests(broker, topic):
    # A frame that promises more bytes than ever arrive, then EOF.
    for n in [4, 100, 10_000]:
        with kw.connect(broker.port) as s:
            s.sendall(struct.pack(">i", n) + b"\x00\x03" * 1)
            s.shutdown(socket.SHUT_WR)
            assert kw.wait_closed(s, 10), "broker kept a half-closed truncated connection"
    # Complete frames whose request body is cut short.
    md = kw.metadata_v0([topic])
    body = md[4:]
    for cut in [5, 8, 11, len(body) - 3]:
        send_and_expect_close(broker, kw.frame(body[:cut]))
    # A produce request (api 0, v3) header followed by a truncated body.
    produce = kw.header_v1(0, 3, 1) + struct.pack(">hhi", -1, -1, 30000)
    send_and_expect_close(broker, kw.frame(produce))
    healthy(broker, topic)


def test_unknown_api_key(broker, topic):
    for key in [999, 32767, -5]:
        send_and_expect_close(broker, kw.frame(kw.header_v1(key, 0, 1)))
    healthy(broker, topic)


def test_unsupported_api_versions_version(broker, topic):
    """KIP-511: an ApiVersions version above the broker's range gets a v0 body
    with UNSUPPORTED_VERSION (35) and the broker's ranges."""
    for version in [127, 999]:
        with kw.connect(broker.port) as s:
            # As librdkafka would send v4+: request header v2, compact client software fields.
            body = kw.header_v2(kw.API_VERSIONS, version, 42) + b"\x07compat\x021\x00"
            s.sendall(kw.frame(body))
            err, apis = kw.parse_api_versions(kw.recv_frame(s), 42)
        assert err == kw.UNSUPPORTED_VERSION, f"error_code {err} for ApiVersions v{version}"
        assert kw.API_VERSIONS in apis, apis
        lo, hi = apis[kw.API_VERSIONS]
        assert lo == 0 and hi >= 3, apis[kw.API_VERSIONS]
    healthy(broker, topic)


def test_unsupported_version_of_other_api(broker, topic):
    """A version outside the advertised range of another API closes the
    connection (or answers an error) without harming the broker."""
    apis = broker.apis()
    lo, hi = apis[kw.METADATA]
    with kw.connect(broker.port) as s:
        s.sendall(kw.frame(kw.header_v1(kw.METADATA, hi + 50, 5) + struct.pack(">i", 0)))
        kw.wait_closed(s, 2)
    healthy(broker, topic)


def test_api_versions_v0_and_pipelining(broker):
    """Several requests sent before reading are answered in order."""
    with kw.connect(broker.port) as s:
        s.sendall(kw.api_versions_v0(1) + kw.metadata_v0([], 2) + kw.api_versions_v0(3))
        err, apis = kw.parse_api_versions(kw.recv_frame(s), 1)
        assert err == 0 and kw.API_VERSIONS in apis and kw.METADATA in apis
        md = kw.recv_frame(s)
        assert struct.unpack(">i", md[:4])[0] == 2
        brokers, _ = kw.parse_metadata_v0(md)
        assert [(h, p) for _, h, p in brokers] == [("127.0.0.1", broker.port)]
        err, _ = kw.parse_api_versions(kw.recv_frame(s), 3)
        assert err == 0


def test_300_idle_connections(broker, topic):
    socks = []
    try:
        for _ in range(300):
            socks.append(kw.connect(broker.port))
        # Half of them send a partial frame header and stall.
        for s in socks[::2]:
            s.sendall(b"\x00\x00")
        healthy(broker, topic)
        # The idle connections still work.
        for s in socks[1::30]:
            s.sendall(kw.api_versions_v0(9))
            err, _ = kw.parse_api_versions(kw.recv_frame(s), 9)
            assert err == 0
    finally:
        for s in socks:
            s.close()
    healthy(broker, topic)


def test_connection_churn(broker, topic):
    """Many short connections, some reset abruptly mid-request."""
    for i in range(500):
        s = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
        if i % 2:
            s.sendall(kw.api_versions_v0(i)[:7])
            # RST instead of FIN
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    healthy(broker, topic)


def test_fd_count_returns_to_baseline(broker, topic):
    """Closed client connections do not leak file descriptors in the broker."""
    fd_dir = f"/proc/{broker.pid}/fd"
    healthy(broker, topic)
    before = len(os.listdir(fd_dir))
    socks = [kw.connect(broker.port) for _ in range(100)]
    for s in socks:
        s.close()
    import time

    deadline = time.monotonic() + 10
    while len(os.listdir(fd_dir)) > before + 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(os.listdir(fd_dir)) <= before + 5, f"fds {before} -> {len(os.listdir(fd_dir))}"


def test_unwritable_log_output_does_not_stop_the_broker(tmp_path, topic_name):
    """stdout and stderr are /dev/full, where every write fails with ENOSPC as
    on a full disk that holds the log file, and RUST_LOG=debug logs every log
    open and segment roll: the broker keeps serving. A failed log write used
    to panic the shard that wrote it (tracing-subscriber reports the failure
    with eprintln!), and the process lived on without that shard."""
    b = Broker(tmp_path / "data", Path("/dev/full"), env={"RUST_LOG": "debug"})
    b.start()
    try:
        partitions = 4
        create_topic(b.bootstrap, topic_name, partitions, config={"segment.bytes": "1048576"})
        # About 3 MiB per partition: several segment rolls on every shard.
        recs = [Rec(b"k%d" % i, bytes([i % 251]) * 4000) for i in range(800)]
        for p in range(partitions):
            offsets = produce_all(b.bootstrap, topic_name, p, recs)
            assert offsets == list(range(len(recs)))
        for p in range(partitions):
            got = consume_exact(b.bootstrap, topic_name, p, 0, len(recs))
            assert [(g.key, g.value) for g in got] == [(r.key, r.value) for r in recs]
        assert b.alive(), "strom exited"
        roundtrip(b.bootstrap, topic_name)
    finally:
        code = b.stop(signal.SIGTERM)
    assert code == 0, f"strom exited with {code}"
