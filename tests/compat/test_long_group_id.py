"""A group id longer than an int16 string can hold (issue 13, finding 1).

OffsetCommit v8 carries the group id as a compact string, which may exceed
32,767 bytes; the offsets record stores it with an int16 length. Before the
fix, a 40,000-byte group id hit an assertion in the coordinator shard and the
whole broker exited. Now the commit is refused with INVALID_GROUP_ID and the
broker keeps serving.
"""

import struct
import time

import kafka_wire as kw
from clients import roundtrip
from conftest import create_topic

OFFSET_COMMIT = 8
INVALID_GROUP_ID = 24
# The coordinator answers these until it has loaded its offsets partitions.
COORDINATOR_NOT_READY = (14, 15)


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def compact_string(s: bytes) -> bytes:
    return uvarint(len(s) + 1) + s


def offset_commit_v8(group: bytes, topic: str, partition: int, offset: int, correlation_id: int) -> bytes:
    body = compact_string(group)
    body += struct.pack(">i", -1)  # generation id: a simple (standalone) commit
    body += compact_string(b"")  # member id
    body += uvarint(0)  # group instance id: null
    body += uvarint(2)  # one topic
    body += compact_string(topic.encode())
    body += uvarint(2)  # one partition
    body += struct.pack(">iqi", partition, offset, -1)
    body += uvarint(0)  # metadata: null
    body += b"\x00"  # partition tagged fields
    body += b"\x00"  # topic tagged fields
    body += b"\x00"  # request tagged fields
    return kw.frame(kw.header_v2(OFFSET_COMMIT, 8, correlation_id) + body)


def partition_error(resp: bytes) -> int:
    """The one partition's error code of an OffsetCommit v8 response."""
    pos = 4 + 1  # correlation id, header tagged fields
    pos += 4  # throttle time
    pos += 1  # topics: compact array of one (varint 2)
    (name_len,) = struct.unpack_from(">B", resp, pos)
    pos += 1 + name_len - 1  # compact string (short name: one-byte varint)
    pos += 1  # partitions: compact array of one
    _, error = struct.unpack_from(">ih", resp, pos)
    return error


def commit(broker, group: bytes, topic: str, timeout: float = 30.0) -> int:
    """Sends one OffsetCommit v8, again while the coordinator is loading, and
    returns the partition's error code."""
    deadline = time.monotonic() + timeout
    cid = 0
    while True:
        cid += 1
        with kw.connect(broker.port, timeout=15) as s:
            s.sendall(offset_commit_v8(group, topic, 0, 5, correlation_id=cid))
            resp = kw.recv_frame(s)
        assert resp[:4] == struct.pack(">i", cid)
        error = partition_error(resp)
        if error not in COORDINATOR_NOT_READY:
            return error
        assert time.monotonic() < deadline, "the group coordinator never loaded"
        time.sleep(0.1)  # paces the retries; the loop ends on the answer above


def test_a_40000_byte_group_id_is_refused_and_the_broker_lives(own_broker, topic_name):
    create_topic(own_broker.bootstrap, topic_name, partitions=1)
    # A short group id first: the coordinator is loaded once this commits.
    assert commit(own_broker, b"short", topic_name) == 0
    assert commit(own_broker, b"g" * 40_000, topic_name) == INVALID_GROUP_ID
    assert own_broker.alive(), f"strom died\n{own_broker.log_tail()}"
    # A group id at the limit still commits, and the broker serves a real client.
    assert commit(own_broker, b"h" * 32_767, topic_name) == 0
    roundtrip(own_broker.bootstrap, topic_name)
    assert own_broker.alive(), f"strom died\n{own_broker.log_tail()}"
