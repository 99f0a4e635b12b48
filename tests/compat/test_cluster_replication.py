"""Replicated partitions on three `strom serve` nodes, the controller side
(issue 15):

- CreateTopics with a replication factor up to the broker count places the
  replicas spread over the brokers (Kafka's rack-unaware assignment), ISR =
  the leader alone at first, then every follower once it has fetched up
  to the high watermark; more replicas than brokers is INVALID_REPLICATION_FACTOR;
  manual assignments are checked (INVALID_REPLICA_ASSIGNMENT);
  CreatePartitions keeps the topic's replication factor;
- `min.insync.replicas` is stored and described; `__consumer_offsets` is
  created with `offsets.topic.replication.factor` replicas (capped at the
  brokers), and replicated: its ISR grows to every replica;
- a SIGKILLed leader whose followers had left the ISR (stopped, fenced)
  shows as an offline replica; its partitions wait for it (no follower is
  in sync) unless the topic allows unclean election, which moves them to a
  live replica at a higher leader epoch; after a restart it leads its
  partitions again at a new epoch.

Each broker's own answer is read with a raw Metadata v7 request (leader
epoch, ISR and offline replicas), so "the survivors show" means each of
them.
"""

import signal
import struct
import time

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

import kafka_wire
from test_cluster import NODES, ClusterNode, agreed_controller, wait_registered, wait_until
from conftest import free_port

SESSION_TIMEOUT_MS = 2000
INVALID_REPLICATION_FACTOR = 38
INVALID_REPLICA_ASSIGNMENT = 39


@pytest.fixture
def cluster(tmp_path):
    ports = [free_port() for _ in range(NODES)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(ports))
    config = f"broker.session.timeout.ms = {SESSION_TIMEOUT_MS}\ngroup.initial.rebalance.delay.ms = 0\n"
    nodes = [ClusterNode(tmp_path / f"node{i + 1}", i + 1, voters, ports[i], config=config) for i in range(NODES)]
    for n in nodes:
        n.launch()
    for n in nodes:
        n.wait_ready()
    wait_registered(nodes, [1, 2, 3])
    yield nodes
    for n in nodes:
        if n.alive():
            n.stop(signal.SIGKILL)


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values if len(values) > 1 else values[0]

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def ints(self):
        return [self.take(">i") for _ in range(self.take(">i"))]


def metadata_v7(node, topic: str):
    """`node`'s own Metadata v7 answer for `topic`: (error, {partition:
    dict(error, leader, epoch, replicas, isr, offline)})."""
    name = topic.encode()
    body = struct.pack(">ih", 1, len(name)) + name + b"\x00"  # no auto-creation
    with kafka_wire.connect(node.port, 5.0) as s:
        s.sendall(kafka_wire.frame(kafka_wire.header_v1(kafka_wire.METADATA, 7, 9) + body))
        resp = kafka_wire.recv_frame(s)
    r = Reader(resp)
    assert r.take(">i") == 9
    r.take(">i")  # throttle
    for _ in range(r.take(">i")):
        r.take(">i"), r.string(), r.take(">i"), r.string()
    r.string(), r.take(">i")  # cluster id, controller
    assert r.take(">i") == 1
    error = r.take(">h")
    assert r.string() == topic
    r.take(">b")
    parts = {}
    for _ in range(r.take(">i")):
        perr, index, leader, epoch = r.take(">hiii")
        replicas, isr, offline = r.ints(), r.ints(), r.ints()
        parts[index] = dict(error=perr, leader=leader, epoch=epoch, replicas=replicas, isr=isr, offline=offline)
    return error, parts


def create(node, topic: NewTopic):
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    admin.create_topics([topic], operation_timeout=30)[topic.topic].result(timeout=30)


def create_error(node, topic: NewTopic):
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    with pytest.raises(KafkaException) as e:
        admin.create_topics([topic], operation_timeout=30)[topic.topic].result(timeout=30)
    return e.value.args[0]


def wait_partitions(nodes, topic: str, count: int, check, what: str):
    """Waits until every node's Metadata v7 shows `count` partitions that
    pass `check`; returns the first node's answer that passed. (Not a new
    read: a broker's shards apply a new image one after another, so for a
    moment a connection on another shard may still see the one before.)"""
    seen = [
        wait_until(
            f"node {n.node_id}: {topic} {what}",
            lambda n=n: (len(got := metadata_v7(n, topic)[1]) == count and check(got)) and got,
        )
        for n in nodes
    ]
    return seen[0]


def test_replicated_topics_are_placed_and_checked(cluster):
    nodes = cluster
    create(nodes[0], NewTopic("rf3", num_partitions=6, replication_factor=3))
    parts = wait_partitions(nodes, "rf3", 6, lambda p: all(len(s["replicas"]) == 3 for s in p.values()),
                            "has 3 replicas per partition")
    for p, s in parts.items():
        assert sorted(s["replicas"]) == [1, 2, 3], s
        assert s["leader"] == s["replicas"][0] and s["epoch"] == 0 and s["offline"] == [], s
    # The followers fetch, catch up, and the leader adds them to the ISR.
    parts = wait_partitions(nodes, "rf3", 6, lambda p: all(sorted(s["isr"]) == [1, 2, 3] for s in p.values()),
                            "has every replica in its ISR")
    assert all(s["epoch"] == 0 for s in parts.values()), parts
    # Leaders and second replicas both spread over the brokers.
    assert sorted(s["leader"] for s in parts.values()) == [1, 1, 2, 2, 3, 3]
    assert sorted(s["replicas"][1] for s in parts.values()) == [1, 1, 2, 2, 3, 3]
    # Every replica holds the partition's log; only the leader serves it.
    for p, s in parts.items():
        for n in nodes:
            assert (n.data_dir / f"rf3-{p}").exists(), f"rf3-{p} missing on node {n.node_id}"

    e = create_error(nodes[1], NewTopic("rf4", num_partitions=1, replication_factor=4))
    assert e.code() == INVALID_REPLICATION_FACTOR, e
    assert "only 3 broker(s)" in e.str(), e

    # Manual assignment: placed as asked, leader first.
    create(nodes[2], NewTopic("manual", num_partitions=3, replica_assignment=[[2, 3], [3, 1], [1, 2]]))
    parts = wait_partitions(nodes, "manual", 3, lambda p: True, "exists")
    assert [parts[p]["replicas"] for p in range(3)] == [[2, 3], [3, 1], [1, 2]]
    assert [parts[p]["leader"] for p in range(3)] == [2, 3, 1]
    for bad, words in [([[1, 9]], "no such broker"), ([[1, 1]], "more than once"), ([[1, 2], [3]], "consistent")]:
        e = create_error(nodes[0], NewTopic("badmanual", num_partitions=len(bad), replica_assignment=bad))
        assert e.code() == INVALID_REPLICA_ASSIGNMENT and words in e.str(), (bad, e)

    # New partitions keep the topic's replication factor.
    admin = AdminClient({"bootstrap.servers": nodes[0].bootstrap})
    admin.create_partitions([NewPartitions("rf3", 9)])["rf3"].result(timeout=30)
    parts = wait_partitions(nodes, "rf3", 9, lambda p: True, "has 9 partitions")
    assert all(sorted(s["replicas"]) == [1, 2, 3] for s in parts.values()), parts

    # min.insync.replicas is stored and described.
    create(nodes[0], NewTopic("misr", num_partitions=1, replication_factor=3, config={"min.insync.replicas": "2"}))
    wait_partitions(nodes, "misr", 1, lambda p: True, "exists")
    for n in nodes:
        a = AdminClient({"bootstrap.servers": n.bootstrap})
        res = ConfigResource(ConfigResource.Type.TOPIC, "misr")
        described = a.describe_configs([res])[res].result(timeout=10)
        assert described["min.insync.replicas"].value == "2", n.node_id


def test_consumer_offsets_is_replicated(cluster):
    nodes = cluster
    # The first FindCoordinator creates __consumer_offsets.
    with kafka_wire.connect(nodes[0].port, 5.0) as s:
        s.sendall(kafka_wire.frame(kafka_wire.header_v1(kafka_wire.FIND_COORDINATOR, 0, 1) + b"\x00\x01g"))
        kafka_wire.recv_frame(s)
    parts = wait_partitions(nodes, "__consumer_offsets", 50, lambda p: True, "exists")
    assert all(sorted(s["replicas"]) == [1, 2, 3] and s["leader"] in s["isr"] for s in parts.values()), parts
    # Its followers fetch it like any partition and join every ISR.
    wait_partitions(nodes, "__consumer_offsets", 50,
                    lambda ps: all(sorted(s["isr"]) == [1, 2, 3] for s in ps.values()),
                    "has every replica in its ISR")


def test_a_killed_leader_keeps_its_partitions_while_no_follower_is_in_sync(cluster):
    """Partitions on two replicas, the victim leading: its follower is
    killed, leaves the ISR (fenced), and misses records written meanwhile;
    then the victim is killed and the follower restarted. No live replica
    is in sync, so the victim's partition waits for it rather than move to
    a replica without those records; with unclean.leader.election.enable=true
    it moves anyway, to the live replica at a higher epoch with an ISR of
    itself. Back after a restart, the victim leads its clean partition
    again at a new epoch."""
    nodes = cluster
    controller = agreed_controller(nodes)
    victim, follower = [n for n in nodes if n.node_id != controller]
    survivors = [n for n in nodes if n is not victim]
    pair = [victim.node_id, follower.node_id]
    create(nodes[0], NewTopic("failover", num_partitions=1, replica_assignment=[pair]))
    create(nodes[0], NewTopic("unclean", num_partitions=1, replica_assignment=[pair],
                              config={"unclean.leader.election.enable": "true"}))
    in_sync = lambda ps: sorted(ps[0]["isr"]) == sorted(pair)  # noqa: E731
    before = wait_partitions(nodes, "failover", 1, in_sync, "has both replicas in its ISR")
    before_u = wait_partitions(nodes, "unclean", 1, in_sync, "has both replicas in its ISR")

    follower.stop(signal.SIGKILL)
    alone = lambda ps: ps[0]["isr"] == [victim.node_id]  # noqa: E731
    wait_partitions([victim], "failover", 1, alone, "has an ISR of the victim alone")
    wait_partitions([victim], "unclean", 1, alone, "has an ISR of the victim alone")
    p = Producer({"bootstrap.servers": victim.bootstrap, "acks": 1})
    for topic in ("failover", "unclean"):
        for i in range(10):
            p.produce(topic, value=f"missed-{i}".encode(), partition=0)
    assert p.flush(30) == 0

    victim.stop(signal.SIGKILL)
    follower.start()
    t0 = time.monotonic()
    wait_registered(survivors, [n.node_id for n in survivors])

    def waiting(parts):
        s = parts[0]
        return s["offline"] == [victim.node_id] and s["leader"] == -1 and s["isr"] == [victim.node_id]

    after = wait_partitions(survivors, "failover", 1, waiting, f"node {victim.node_id}'s partition leaderless")
    assert after[0]["replicas"] == before[0]["replicas"]

    def moved(parts):
        s = parts[0]
        return s["leader"] == follower.node_id and s["isr"] == [follower.node_id] and s["epoch"] > before_u[0]["epoch"]

    wait_partitions(survivors, "unclean", 1, moved, "unclean partition moved to the live replica")
    print(f"unclean failover: node {victim.node_id}'s partition led elsewhere {time.monotonic() - t0:.2f} s "
          f"after the follower's restart (session {SESSION_TIMEOUT_MS} ms)")

    # Back after a restart, it leads its clean partition again, at a new epoch.
    victim.start()
    wait_registered(nodes, [1, 2, 3])
    back = wait_partitions(nodes, "failover", 1,
                           lambda ps: ps[0]["offline"] == [] and ps[0]["leader"] == victim.node_id,
                           "led by its ISR again")
    assert back[0]["epoch"] > before[0]["epoch"], (back[0], before[0])
