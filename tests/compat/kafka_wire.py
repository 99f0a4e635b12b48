"""Just enough of the Kafka wire protocol, struct-packed by hand, to probe a
broker without a client library: readiness checks and malformed-input tests.

A frame is `int32 size` followed by `size` bytes. Request header v1:
int16 api_key, int16 api_version, int32 correlation_id, nullable string
client_id. Header v2 (flexible versions) adds an empty tagged-field section.
"""

import socket
import struct
import time

API_VERSIONS = 18
METADATA = 3
FIND_COORDINATOR = 10
JOIN_GROUP = 11
INIT_PRODUCER_ID = 22

UNSUPPORTED_VERSION = 35


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def header_v1(api_key: int, version: int, correlation_id: int, client_id: bytes = b"compat") -> bytes:
    return struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id


def header_v2(api_key: int, version: int, correlation_id: int, client_id: bytes = b"compat") -> bytes:
    return header_v1(api_key, version, correlation_id, client_id) + b"\x00"


def api_versions_v0(correlation_id: int = 1) -> bytes:
    return frame(header_v1(API_VERSIONS, 0, correlation_id))


def metadata_v0(topics=(), correlation_id: int = 1) -> bytes:
    body = struct.pack(">i", len(topics))
    for t in topics:
        raw = t.encode()
        body += struct.pack(">h", len(raw)) + raw
    return frame(header_v1(METADATA, 0, correlation_id) + body)


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    """n bytes, or ConnectionError if the peer closes first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_frame(s: socket.socket) -> bytes:
    (size,) = struct.unpack(">i", recv_exact(s, 4))
    if size < 4 or size > 64 * 1024 * 1024:
        raise ValueError(f"bad response frame size {size}")
    return recv_exact(s, size)


def parse_api_versions(resp: bytes, expect_correlation_id: int):
    """Parses a response to ApiVersions v0 (or the v0-shaped error answer to an
    unsupported version): (error_code, {api_key: (min, max)})."""
    (cid, error_code, n) = struct.unpack(">ihi", resp[:10])
    if cid != expect_correlation_id:
        raise ValueError(f"correlation id {cid}, expected {expect_correlation_id}")
    if n < 0 or 10 + 6 * n > len(resp):
        raise ValueError(f"bad api array length {n} in {len(resp)}-byte response")
    apis = {}
    for i in range(n):
        key, lo, hi = struct.unpack(">hhh", resp[10 + 6 * i : 16 + 6 * i])
        apis[key] = (lo, hi)
    return error_code, apis


def api_versions(port: int, timeout: float = 5.0):
    """(error_code, {api_key: (min, max)}) from an ApiVersions v0 round trip."""
    with connect(port, timeout) as s:
        s.sendall(api_versions_v0(7))
        return parse_api_versions(recv_frame(s), 7)


def parse_metadata_v0(resp: bytes):
    """(brokers [(id, host, port)], topics {name: (error, [partition ids])})."""
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from(fmt, resp, pos)
        pos += struct.calcsize(fmt)
        return vals

    def string():
        nonlocal pos
        (n,) = take(">h")
        s = resp[pos : pos + n].decode()
        pos += n
        return s

    take(">i")  # correlation id
    brokers = []
    (n,) = take(">i")
    for _ in range(n):
        (node,) = take(">i")
        host = string()
        (port,) = take(">i")
        brokers.append((node, host, port))
    topics = {}
    (n,) = take(">i")
    for _ in range(n):
        (err,) = take(">h")
        name = string()
        (np,) = take(">i")
        parts = []
        for _ in range(np):
            _perr, pid, _leader = take(">hii")
            (nr,) = take(">i")
            take(f">{nr}i")
            (ni,) = take(">i")
            take(f">{ni}i")
            parts.append(pid)
        topics[name] = (err, parts)
    return brokers, topics


def wait_closed(s: socket.socket, timeout: float = 10.0) -> bool:
    """True if the peer closes (EOF or reset) within timeout; reads and drops
    anything it sends before that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if not s.recv(65536):
                return True
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


FETCH = 1


def fetch_v4(topic: str, partition: int, offset: int, max_wait_ms: int, correlation_id: int = 1,
             min_bytes: int = 1, max_bytes: int = 1 << 20, partition_max_bytes: int = 1 << 20) -> bytes:
    """Fetch v4 (replica -1, read_uncommitted) of one partition."""
    raw = topic.encode()
    body = struct.pack(">iiiib", -1, max_wait_ms, min_bytes, max_bytes, 0)
    body += struct.pack(">ih", 1, len(raw)) + raw
    body += struct.pack(">iiqi", 1, partition, offset, partition_max_bytes)
    return frame(header_v1(FETCH, 4, correlation_id) + body)


def fetch_v11(partitions, max_wait_ms: int, correlation_id: int = 1, min_bytes: int = 1,
              max_bytes: int = 1 << 20) -> bytes:
    """Fetch v11 (replica -1, read_uncommitted, no session, no rack).
    partitions: [(topic, partition, fetch_offset, partition_max_bytes[,
    current_leader_epoch])], in request order (the epoch -1, unchecked,
    unless given); consecutive entries of one topic share its topic entry."""
    topics = []
    for topic, partition, offset, pmax, *epoch in partitions:
        if not topics or topics[-1][0] != topic:
            topics.append((topic, []))
        topics[-1][1].append((partition, offset, pmax, epoch[0] if epoch else -1))
    body = struct.pack(">iiiibii", -1, max_wait_ms, min_bytes, max_bytes, 0, 0, -1)
    body += struct.pack(">i", len(topics))
    for topic, parts in topics:
        raw = topic.encode()
        body += struct.pack(">h", len(raw)) + raw + struct.pack(">i", len(parts))
        for partition, offset, pmax, epoch in parts:
            # partition, current_leader_epoch, fetch_offset, log_start_offset, partition_max_bytes
            body += struct.pack(">iiqqi", partition, epoch, offset, -1, pmax)
    body += struct.pack(">i", 0)  # forgotten_topics_data
    body += struct.pack(">h", 0)  # rack_id ""
    return frame(header_v1(FETCH, 11, correlation_id) + body)


def parse_fetch_v11(resp: bytes):
    """(correlation_id, error_code, [(topic, partition, error_code,
    high_watermark, log_start_offset, records)]) of a Fetch v11 response."""
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from(fmt, resp, pos)
        pos += struct.calcsize(fmt)
        return vals

    cid, _throttle, error, _session = take(">iihi")
    out = []
    (nt,) = take(">i")
    for _ in range(nt):
        (n,) = take(">h")
        topic = resp[pos : pos + n].decode()
        pos += n
        (np_,) = take(">i")
        for _ in range(np_):
            partition, perr, hw, _lso, log_start = take(">ihqqq")
            (na,) = take(">i")
            take(f">{max(na, 0) * 2}q")
            take(">i")  # preferred_read_replica
            (nr,) = take(">i")
            records = resp[pos : pos + max(nr, 0)]
            pos += max(nr, 0)
            out.append((topic, partition, perr, hw, log_start, records))
    return cid, error, out


def split_batches(records: bytes):
    """[(base_offset, last_offset, size)] of the whole record batches in a
    partition's records; a trailing partial batch is left out."""
    out = []
    pos = 0
    while pos + 61 <= len(records):
        base, length = struct.unpack_from(">qi", records, pos)
        size = 12 + length
        if pos + size > len(records):
            break
        (last_delta,) = struct.unpack_from(">i", records, pos + 23)
        out.append((base, base + last_delta, size))
        pos += size
    return out
