"""Replicated partitions on three `strom serve` nodes, the controller side
(issue 15):

- CreateTopics with a replication factor up to the broker count places the
  replicas spread over the brokers (Kafka's rack-unaware assignment), ISR =
  the leader alone (followers fetch, but the leader does not track them yet); more replicas than brokers is INVALID_REPLICATION_FACTOR;
  manual assignments are checked (INVALID_REPLICA_ASSIGNMENT);
  CreatePartitions keeps the topic's replication factor;
- `min.insync.replicas` is stored and described; `__consumer_offsets` is
  created with `offsets.topic.replication.factor` replicas (capped at the
  brokers);
- a SIGKILLed leader shows as an offline replica; its partitions wait for
  it (no follower is in sync) unless the topic allows unclean election,
  which moves them to a live replica at a higher leader epoch; after a
  restart it leads its partitions again at a new epoch.

Each broker's own answer is read with a raw Metadata v7 request (leader
epoch, ISR and offline replicas), so "the survivors show" means each of
them.
"""

import signal
import struct
import time

import pytest
from confluent_kafka import KafkaException
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
    pass `check`; returns the first node's."""
    for n in nodes:
        wait_until(
            f"node {n.node_id}: {topic} {what}",
            lambda n=n: (len(got := metadata_v7(n, topic)[1]) == count and check(got)) and got,
        )
    return metadata_v7(nodes[0], topic)[1]


def test_replicated_topics_are_placed_and_checked(cluster):
    nodes = cluster
    create(nodes[0], NewTopic("rf3", num_partitions=6, replication_factor=3))
    parts = wait_partitions(nodes, "rf3", 6, lambda p: all(len(s["replicas"]) == 3 for s in p.values()),
                            "has 3 replicas per partition")
    for p, s in parts.items():
        assert sorted(s["replicas"]) == [1, 2, 3], s
        # The leader alone: the leader does not track its followers yet, so none is in sync.
        assert s["isr"] == [s["leader"]], s
        assert s["leader"] == s["replicas"][0] and s["epoch"] == 0 and s["offline"] == [], s
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
    assert all(sorted(s["replicas"]) == [1, 2, 3] and s["isr"] == [s["leader"]] for s in parts.values()), parts


def test_a_killed_leader_keeps_its_partitions_while_no_follower_is_in_sync(cluster):
    """Followers are out of the ISR (the leader does not track them yet), so a killed
    leader's partitions wait for it rather than move to a replica without
    the data; with unclean.leader.election.enable=true they move anyway,
    to a live replica at a higher epoch with an ISR of itself."""
    nodes = cluster
    controller = agreed_controller(nodes)
    create(nodes[0], NewTopic("failover", num_partitions=6, replication_factor=3))
    create(nodes[0], NewTopic("unclean", num_partitions=6, replication_factor=3,
                              config={"unclean.leader.election.enable": "true"}))
    before = wait_partitions(nodes, "failover", 6, lambda p: True, "exists")
    before_u = wait_partitions(nodes, "unclean", 6, lambda p: True, "exists")
    victim = next(n for n in nodes if n.node_id != controller)
    led = {p for p, s in before.items() if s["leader"] == victim.node_id}
    led_u = {p for p, s in before_u.items() if s["leader"] == victim.node_id}
    assert led and led_u, (before, before_u)
    survivors = [n for n in nodes if n is not victim]

    victim.stop(signal.SIGKILL)
    t0 = time.monotonic()

    def waiting(parts):
        for p, s in parts.items():
            if s["offline"] != [victim.node_id]:
                return False
            if p in led and (s["leader"] != -1 or s["isr"] != [victim.node_id]):
                return False
        return True

    after = wait_partitions(survivors, "failover", 6, waiting, f"node {victim.node_id}'s partitions leaderless")
    for p in range(6):
        assert after[p]["replicas"] == before[p]["replicas"]
        if p not in led:
            assert after[p]["leader"] == before[p]["leader"] and after[p]["epoch"] == before[p]["epoch"]

    def moved(parts):
        return all(
            s["leader"] not in (victim.node_id, -1) and s["isr"] == [s["leader"]] and s["epoch"] > before_u[p]["epoch"]
            for p, s in parts.items() if p in led_u
        )

    wait_partitions(survivors, "unclean", 6, moved, "unclean partitions moved to a live replica")
    print(f"unclean failover: node {victim.node_id}'s partitions led elsewhere {time.monotonic() - t0:.2f} s "
          f"after SIGKILL (session {SESSION_TIMEOUT_MS} ms)")

    # Back after a restart, it leads its clean partitions again, at a new epoch.
    victim.start()
    wait_registered(nodes, [1, 2, 3])
    back = wait_partitions(
        nodes, "failover", 6,
        lambda ps: all(s["offline"] == [] and (p not in led or s["leader"] == victim.node_id) for p, s in ps.items()),
        "led by its ISR again")
    for p in led:
        assert back[p]["epoch"] > before[p]["epoch"], (p, back[p], before[p])
