"""Replication's data path (issue 15), as real clients see it.

Leader epochs: the leader stamps its leader epoch into every batch it
appends (confluent-kafka's `Message.leader_epoch()` reads it back) and keeps
a leader-epoch checkpoint, from which OffsetForLeaderEpoch answers with
Kafka's rules (an epoch ends where the next one starts; a stale
current_leader_epoch is FENCED_LEADER_EPOCH, a newer one
UNKNOWN_LEADER_EPOCH). On one node every partition is led at epoch 0; in a
cluster a broker that was fenced and came back leads at a newer epoch.

OffsetForLeaderEpoch v3 is sent raw to one chosen broker (no client library
exposes it; librdkafka and the Java consumer send it themselves to
validate positions). So is a Fetch v11 with a chosen current_leader_epoch:
Fetch checks it as OffsetForLeaderEpoch does (KIP-320), so a consumer that
missed a leader change gets no records until it has validated its
position.
"""

import signal
import struct
import time

import pytest

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from clients import producer
from conftest import create_topic as create_topic_single
import kafka_wire
from test_cluster import agreed_controller, wait_registered
from test_cluster_serving import cluster, create_topic, produce_keyed, request, string, wait_leaders  # noqa: F401

OFFSET_FOR_LEADER_EPOCH = 23
FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 75
CONSUMER_REPLICA_ID = -1


def offset_for_leader_epoch(node, topic: str, partition: int, epoch: int, current_epoch: int = -1,
                            replica_id: int = CONSUMER_REPLICA_ID):
    """(error, leader_epoch, end_offset) of an OffsetForLeaderEpoch v3 for
    one partition at `node`."""
    body = struct.pack(">ii", replica_id, 1) + string(topic)
    body += struct.pack(">iiii", 1, partition, current_epoch, epoch)
    resp = request(node, OFFSET_FOR_LEADER_EPOCH, 3, body)
    pos = 4 + 4  # throttle, topics count
    (n,) = struct.unpack_from(">h", resp, pos)
    pos += 2 + n + 4  # name, partitions count
    error, p, leader_epoch, end_offset = struct.unpack_from(">hiiq", resp, pos)
    assert p == partition
    return error, leader_epoch, end_offset


def fetch_at_epoch(node, topic: str, partition: int, offset: int, current_epoch: int):
    """(error, records) of a Fetch v11 of one partition at `node` that
    names `current_epoch` as the leader epoch it believes current."""
    req = kafka_wire.fetch_v11([(topic, partition, offset, 1 << 20, current_epoch)], max_wait_ms=0)
    with kafka_wire.connect(node.port, 5.0) as s:
        s.sendall(req)
        _cid, error, parts = kafka_wire.parse_fetch_v11(kafka_wire.recv_frame(s))
    assert error == 0
    ((_, p, perr, _hw, _ls, records),) = parts
    assert p == partition
    return perr, records


def read_epochs(bootstrap: str, topic: str, partitions, want: int, timeout: float = 60.0):
    """{(partition, offset): (value, leader_epoch)} of the first `want`
    records of `partitions`, read from offset 0 by assignment."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "epochs", "enable.auto.commit": False,
                  "enable.partition.eof": False})
    got = {}
    try:
        c.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            got[(msg.partition(), msg.offset())] = (msg.value(), msg.leader_epoch())
    finally:
        c.close()
    assert len(got) == want, f"read {len(got)} of {want} records"
    return got


def test_one_node_stamps_epoch_zero_and_answers_offset_for_leader_epoch(broker, topic_name):
    create_topic_single(broker.bootstrap, topic_name, 1)
    p = producer(broker.bootstrap)
    for i in range(20):
        p.produce(topic_name, value=f"v{i}".encode(), partition=0)
    assert p.flush(30) == 0
    got = read_epochs(broker.bootstrap, topic_name, [0], 20)
    assert {epoch for _, epoch in got.values()} == {0}, "every batch carries the leader epoch"
    # The partition's checkpoint: epoch 0 from offset 0, in Kafka's format.
    checkpoint = broker.data_dir / f"{topic_name}-0" / "leader-epoch-checkpoint"
    assert checkpoint.read_text() == "0\n1\n0 0\n"

    assert offset_for_leader_epoch(broker, topic_name, 0, 0) == (0, 0, 20)
    assert offset_for_leader_epoch(broker, topic_name, 0, 0, current_epoch=0) == (0, 0, 20)
    # Newer than any epoch of the partition: undefined.
    assert offset_for_leader_epoch(broker, topic_name, 0, 1) == (0, -1, -1)
    # A client that knows a newer leader epoch than the broker's.
    assert offset_for_leader_epoch(broker, topic_name, 0, 0, current_epoch=1)[0] == UNKNOWN_LEADER_EPOCH
    # Fetch checks it too: the leader's epoch (or -1) reads, a newer one not.
    for current in (-1, 0):
        err, records = fetch_at_epoch(broker, topic_name, 0, 0, current)
        assert err == 0 and records, current
    assert fetch_at_epoch(broker, topic_name, 0, 0, 1) == (UNKNOWN_LEADER_EPOCH, b"")


def test_a_returning_leader_starts_a_new_epoch_and_keeps_the_old_ones(cluster):
    nodes = cluster
    controller = agreed_controller(nodes)
    victim = next(n for n in nodes if n.node_id != controller)
    survivors = [n for n in nodes if n is not victim]
    create_topic(survivors[0], "epochs", 6)
    lead = wait_leaders(nodes, "epochs", 6, lambda l: set(l.values()) == {1, 2, 3})
    produce_keyed(survivors[0].bootstrap, "epochs", 6, 10, "before")
    mine = sorted(p for p, l in lead.items() if l == victim.node_id)
    before = read_epochs(survivors[0].bootstrap, "epochs", mine, 10 * len(mine))
    (old_epoch,) = {e for _, e in before.values()}

    victim.stop(signal.SIGKILL)
    wait_registered(survivors, [s.node_id for s in survivors])
    victim.start()
    wait_registered(nodes, [1, 2, 3])
    wait_leaders(nodes, "epochs", 6, lambda l: l == lead)
    produce_keyed(survivors[1].bootstrap, "epochs", 6, 5, "after")
    got = read_epochs(survivors[0].bootstrap, "epochs", mine, 15 * len(mine))
    by_offset = {}
    for (p, off), (value, epoch) in got.items():
        assert value.startswith(b"before" if off < 10 else b"after"), (p, off, value)
        by_offset.setdefault(off < 10, set()).add(epoch)
    assert by_offset[True] == {old_epoch}, "old batches keep the epoch they were written at"
    (new_epoch,) = by_offset[False]
    assert new_epoch > old_epoch

    for p in mine:
        # The old epoch ends where the new one starts; the new one at the end.
        assert offset_for_leader_epoch(victim, "epochs", p, old_epoch) == (0, old_epoch, 10)
        assert offset_for_leader_epoch(victim, "epochs", p, new_epoch) == (0, new_epoch, 15)
        assert offset_for_leader_epoch(victim, "epochs", p, new_epoch, current_epoch=new_epoch) == (
            0, new_epoch, 15)
        # An epoch between them that this partition never had: the older one.
        if new_epoch - old_epoch > 1:
            assert offset_for_leader_epoch(victim, "epochs", p, new_epoch - 1) == (0, old_epoch, 10)
        # A client that still believes in the old leader epoch is fenced.
        err, _, _ = offset_for_leader_epoch(victim, "epochs", p, old_epoch, current_epoch=old_epoch)
        assert err == FENCED_LEADER_EPOCH
        # And gets no records from Fetch until it has caught up (a
        # librdkafka consumer validating its position would deliver them,
        # seek back and deliver them again).
        assert fetch_at_epoch(victim, "epochs", p, 0, old_epoch) == (FENCED_LEADER_EPOCH, b"")
        assert fetch_at_epoch(victim, "epochs", p, 0, new_epoch + 1) == (UNKNOWN_LEADER_EPOCH, b"")
        err, records = fetch_at_epoch(victim, "epochs", p, 0, new_epoch)
        assert err == 0 and records
    # ListOffsets names the epoch of each offset it answers (the current
    # leader epoch for latest): a consumer that resets there validates its
    # position with it after the next leader change, and an older epoch
    # would read as a truncation and send it back to that epoch's end.
    admin = AdminClient({"bootstrap.servers": survivors[0].bootstrap})
    for p in mine:
        tp = TopicPartition("epochs", p)
        answers = {name: admin.list_offsets({tp: spec})[tp].result(timeout=30)
                   for name, spec in (("earliest", OffsetSpec.earliest()), ("latest", OffsetSpec.latest()),
                                      ("max timestamp", OffsetSpec.max_timestamp()))}
        assert (answers["earliest"].offset, answers["earliest"].leader_epoch) == (0, old_epoch), p
        assert (answers["latest"].offset, answers["latest"].leader_epoch) == (15, new_epoch), p
        # The newest record (the first of equal timestamps, as Kafka).
        newest = answers["max timestamp"]
        assert 10 <= newest.offset < 15 and newest.leader_epoch == new_epoch, (p, newest)
    # A broker that does not lead the partition does not answer for it.
    other = survivors[0]
    err, _, _ = offset_for_leader_epoch(other, "epochs", mine[0], old_epoch)
    assert err == 6  # NOT_LEADER_OR_FOLLOWER


def test_acks_all_needs_min_insync_replicas(broker, topic_name):
    """min.insync.replicas above the ISR's size (one node: one replica)
    refuses acks=all with NOT_ENOUGH_REPLICAS before appending, as Kafka
    does; acks=1 still works, and nothing refused was written."""
    from kafka import KafkaProducer
    from kafka.errors import NotEnoughReplicasError

    create_topic_single(broker.bootstrap, topic_name, 1, config={"min.insync.replicas": "2"})
    strict = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", retries=0)
    try:
        with pytest.raises(NotEnoughReplicasError):
            strict.send(topic_name, b"refused", partition=0).get(timeout=30)
    finally:
        strict.close()
    loose = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, retries=0)
    try:
        assert loose.send(topic_name, b"taken", partition=0).get(timeout=30).offset == 0
    finally:
        loose.close()
    got = read_epochs(broker.bootstrap, topic_name, [0], 1)
    assert [v for v, _ in got.values()] == [b"taken"]
