"""KIP-951 leader hints on Produce v10 (issue 15), on three `strom serve`
nodes: a broker that does not lead a partition answers
NOT_LEADER_OR_FOLLOWER with the partition's current leader and leader
epoch, and the endpoint of that leader, so a client reaches it without a
Metadata round trip first.

librdkafka (confluent-kafka) sends Produce v10 once Strom advertises it:
its protocol debug log is read to check that, and that its produces
succeed. The hint itself is read from a raw Produce v10 sent to a broker
that is not the leader (a client sends there only after a leader change,
a race a test cannot aim at), parsed by hand (flexible versions, tagged
fields).
"""

import logging
import re
import signal
import struct

from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic
from kafka.record.default_records import DefaultRecordBatchBuilder

import kafka_wire
import pytest

from test_cluster import start_all, voter_nodes
import test_cluster_replication as replication
from test_cluster_replication import create, metadata_v7, wait_partitions

PRODUCE = 0
NOT_LEADER_OR_FOLLOWER = 6


def uvarint(value: int) -> bytes:
    out = b""
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def compact_bytes(b: bytes) -> bytes:
    return uvarint(len(b) + 1) + b


def one_batch() -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    builder.append(0, timestamp=None, key=b"k", value=b"v", headers=[])
    return bytes(builder.build())


def produce_v10(topic: str, partition: int, correlation_id: int) -> bytes:
    body = b"\x00"  # transactional id: null
    body += struct.pack(">hi", 1, 5000)  # acks, timeout
    body += uvarint(2) + compact_bytes(topic.encode())  # one topic
    body += uvarint(2) + struct.pack(">i", partition) + compact_bytes(one_batch()) + b"\x00"
    body += b"\x00"  # topic tagged fields
    body += b"\x00"  # request tagged fields
    return kafka_wire.frame(kafka_wire.header_v2(PRODUCE, 10, correlation_id) + body)


class Reader(replication.Reader):
    """With the flexible versions' varints, compact strings and tagged fields."""

    def uvarint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def compact_string(self):
        n = self.uvarint() - 1
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def tagged(self) -> dict:
        fields = {}
        for _ in range(self.uvarint()):
            tag, size = self.uvarint(), self.uvarint()
            fields[tag] = Reader(self.data[self.pos:self.pos + size])
            self.pos += size
        return fields


def parse_produce_v10(resp: bytes, correlation_id: int):
    """(partitions: [(topic, index, error, current_leader or None)], node_endpoints)."""
    r = Reader(resp)
    assert r.take(">i") == correlation_id
    r.tagged()  # response header v1
    partitions = []
    for _ in range(r.uvarint() - 1):
        topic = r.compact_string()
        for _ in range(r.uvarint() - 1):
            index, error = r.take(">ih")
            r.take(">qqq")  # base offset, log append time, log start offset
            for _ in range(r.uvarint() - 1):
                r.take(">i"), r.compact_string(), r.tagged()
            r.compact_string()  # error message
            tags = r.tagged()
            leader = None
            if 0 in tags:
                leader = tags[0].take(">ii")
            partitions.append((topic, index, error, leader))
        r.tagged()
    r.take(">i")  # throttle
    endpoints = []
    tags = r.tagged()
    if 0 in tags:
        e = tags[0]
        for _ in range(e.uvarint() - 1):
            node_id = e.take(">i")
            host = e.compact_string()
            port = e.take(">i")
            e.compact_string()  # rack
            e.tagged()
            endpoints.append((node_id, host, port))
    return partitions, endpoints


@pytest.fixture
def nodes(tmp_path):
    _, nodes = voter_nodes(tmp_path, "")
    start_all(nodes)
    yield nodes
    for n in nodes:
        if n.alive():
            n.stop(signal.SIGKILL)


def test_produce_v10_names_the_leader(nodes):
    create(nodes[0], NewTopic("hints", num_partitions=3, replication_factor=1))
    parts = wait_partitions(nodes, "hints", 3, lambda p: all(s["leader"] > 0 for s in p.values()), "led")
    ports = {n.node_id: n.port for n in nodes}
    for p, s in parts.items():
        other = next(n for n in nodes if n.node_id != s["leader"])
        with kafka_wire.connect(other.port, 5.0) as sock:
            sock.sendall(produce_v10("hints", p, 7))
            got, endpoints = parse_produce_v10(kafka_wire.recv_frame(sock), 7)
        assert got == [("hints", p, NOT_LEADER_OR_FOLLOWER, (s["leader"], s["epoch"]))], (p, s, got)
        assert endpoints == [(s["leader"], "127.0.0.1", ports[s["leader"]])], endpoints
        # The leader itself takes the batch: no hint.
        leader = next(n for n in nodes if n.node_id == s["leader"])
        with kafka_wire.connect(leader.port, 5.0) as sock:
            sock.sendall(produce_v10("hints", p, 8))
            got, endpoints = parse_produce_v10(kafka_wire.recv_frame(sock), 8)
        assert got == [("hints", p, 0, None)] and endpoints == [], got

    # librdkafka sends Produce v10 to Strom, and it works.
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    log = logging.getLogger("leader-hints-rdkafka")
    log.addHandler(Collect())
    log.setLevel(logging.DEBUG)
    producer = Producer({"bootstrap.servers": nodes[0].bootstrap, "acks": "all", "debug": "protocol"},
                        logger=log)
    errors = []
    for p in range(3):
        producer.produce("hints", value=b"x", partition=p,
                         on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert producer.flush(30) == 0
    producer.poll(0)
    assert errors == []
    sent = [line for line in lines if re.search(r"Sent ProduceRequest \(v(\d+)", line)]
    assert sent and all("(v10" in line for line in sent), sent[:5] or lines[-20:]
    # All three are on the leaders' logs.
    for p, s in parts.items():
        assert metadata_v7(nodes[0], "hints")[1][p]["leader"] == s["leader"]
