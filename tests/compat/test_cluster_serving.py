"""Three `strom serve` nodes serving their own partitions (issue 14):

- a partition is served by its leader only; any other broker answers
  NOT_LEADER_OR_FOLLOWER, and clients bootstrapped at one broker reach
  every leader (confluent-kafka and kafkajs);
- group coordinators spread: FindCoordinator names the leader of the
  group's `__consumer_offsets` partition, other brokers answer
  NOT_COORDINATOR, and groups of three confluent consumers read everything
  exactly once;
- a SIGKILLed broker is fenced (Metadata and DescribeCluster drop it, its
  partitions show leader -1) and after a restart it serves them again with
  every acknowledged record;
- idempotent producers on different brokers get distinct producer ids.

Raw requests (ListOffsets v1, FindCoordinator v0, InitProducerId v0) ask one
chosen broker, where a client library would reroute by itself.
"""

import json
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import kafka_wire
from clients import producer
from test_cluster import agreed_controller, voter_nodes, wait_registered, wait_until

HERE = Path(__file__).resolve().parent
KAFKAJS = HERE / "js" / "kafkajs_client.js"

LIST_OFFSETS = 2
NOT_LEADER_OR_FOLLOWER = 6
NOT_COORDINATOR = 16
SESSION_TIMEOUT_MS = 2000
# Several groups, so that their coordinators land on several brokers.
GROUP_CANDIDATES = [f"cg-{i}" for i in range(30)]
CONFIG = f"broker.session.timeout.ms = {SESSION_TIMEOUT_MS}\ngroup.initial.rebalance.delay.ms = 0\n"


@pytest.fixture
def cluster(tmp_path):
    _, nodes = voter_nodes(tmp_path, CONFIG)
    for n in nodes:
        n.launch()
    for n in nodes:
        n.wait_ready()
    wait_registered(nodes, [1, 2, 3])
    yield nodes
    for n in nodes:
        if n.alive():
            n.stop(signal.SIGKILL)


def request(node, api_key: int, version: int, body: bytes) -> bytes:
    with kafka_wire.connect(node.port, 5.0) as s:
        s.sendall(kafka_wire.frame(kafka_wire.header_v1(api_key, version, 7) + body))
        resp = kafka_wire.recv_frame(s)
    (cid,) = struct.unpack_from(">i", resp, 0)
    assert cid == 7
    return resp[4:]


def string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def list_offsets_error(node, topic: str, partition: int) -> int:
    """The error of a ListOffsets v1 (latest) for one partition at `node`."""
    body = struct.pack(">ii", -1, 1) + string(topic) + struct.pack(">iiq", 1, partition, -1)
    resp = request(node, LIST_OFFSETS, 1, body)
    pos = 4  # topics count
    (n,) = struct.unpack_from(">h", resp, pos)
    pos += 2 + n + 4  # name, partitions count
    _p, error = struct.unpack_from(">ih", resp, pos)
    return error


def find_coordinator(node, group: str):
    """(error, node id) of a FindCoordinator v0 for `group` at `node`."""
    resp = request(node, kafka_wire.FIND_COORDINATOR, 0, string(group))
    error, node_id = struct.unpack_from(">hi", resp, 0)
    return error, node_id


def heartbeat_error(node, group: str) -> int:
    """The error of a Heartbeat v0 for an unknown member of `group`."""
    body = string(group) + struct.pack(">i", 1) + string("nobody")
    resp = request(node, 12, 0, body)
    (error,) = struct.unpack_from(">h", resp, 0)
    return error


def init_producer_id(node) -> int:
    resp = request(node, kafka_wire.INIT_PRODUCER_ID, 0, struct.pack(">hi", -1, 60000))
    _throttle, error, pid, _epoch = struct.unpack_from(">ihqh", resp, 0)
    assert error == 0, f"InitProducerId at node {node.node_id}: error {error}"
    return pid


def leaders(node, topic: str):
    """{partition: leader} as `node` answers Metadata."""
    md = AdminClient({"bootstrap.servers": node.bootstrap}).list_topics(topic=topic, timeout=5)
    t = md.topics[topic]
    if t.error is not None:
        return {}
    return {p.id: p.leader for p in t.partitions.values()}


def wait_leaders(nodes, topic: str, partitions: int, check):
    """Waits until every node's Metadata shows `partitions` partitions whose
    leaders pass `check`; returns the leaders as the first node answers."""
    for n in nodes:
        wait_until(
            f"node {n.node_id} to show leaders of {topic} that pass the check",
            lambda n=n: len(got := leaders(n, topic)) == partitions and check(got),
        )
    return leaders(nodes[0], topic)


def create_topic(node, topic: str, partitions: int):
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(timeout=30)


def produce_keyed(bootstrap: str, topic: str, partitions: int, per_partition: int, tag: str):
    """Produces `per_partition` records to each partition through one
    bootstrap broker (acks=all); returns {(partition, offset): value}."""
    p = producer(bootstrap, **{"enable.idempotence": True, "message.timeout.ms": 60000})
    acked = {}
    errors = []

    def done(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[(msg.partition(), msg.offset())] = msg.value()

    for i in range(per_partition):
        for part in range(partitions):
            p.produce(topic, value=f"{tag}-{part}-{i}".encode(), partition=part, on_delivery=done)
        p.poll(0)
    assert p.flush(90) == 0, "records left undelivered"
    assert not errors, f"delivery errors: {errors[:5]}"
    assert len(acked) == partitions * per_partition
    return acked


def read_all(bootstrap: str, topic: str, partitions: int, want: int, timeout: float = 60.0):
    """Reads every partition from the start by assignment until `want`
    records arrived; returns {(partition, offset): value}."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "assign-only", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "enable.partition.eof": False})
    got = {}
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                continue  # retriable while leaders move; the count decides
            got[(msg.partition(), msg.offset())] = msg.value()
    finally:
        c.close()
    return got


def test_partitions_are_served_by_their_leaders_and_clients_reroute(cluster, tmp_path):
    nodes = cluster
    by_id = {n.node_id: n for n in nodes}
    create_topic(nodes[1], "spread12", 12)
    lead = wait_leaders(nodes, "spread12", 12, lambda l: set(l.values()) == {1, 2, 3})

    # Every broker answers for its own partitions and refuses the others'.
    for part, leader in lead.items():
        for n in nodes:
            error = list_offsets_error(n, "spread12", part)
            want = 0 if n.node_id == leader else NOT_LEADER_OR_FOLLOWER
            assert error == want, f"node {n.node_id}, partition {part} (leader {leader}): error {error}"
    # Partition logs exist on the replica only.
    for part, leader in lead.items():
        for n in nodes:
            exists = (n.data_dir / f"spread12-{part}").exists()
            assert exists == (n.node_id == leader), f"spread12-{part} on node {n.node_id}: {exists}"

    # confluent-kafka bootstrapped at node 1 reaches every leader.
    acked = produce_keyed(by_id[1].bootstrap, "spread12", 12, 20, "ck")
    # kafkajs bootstrapped at node 3: creates its own 12-partition topic and
    # produces to every partition.
    spec = {
        "bootstrap": by_id[3].bootstrap,
        "topic": "spread12js",
        "partitions": 12,
        "gzip": False,
        "batches": [[{"partition": p, "key": None, "value": "dmFsdWU=", "headers": [], "timestamp": None}
                     for p in range(12)] for _ in range(3)],
    }
    spec_path = tmp_path / "kafkajs.json"
    spec_path.write_text(json.dumps(spec))
    r = subprocess.run(["node", str(KAFKAJS), "produce", str(spec_path)], capture_output=True, timeout=180, cwd=HERE)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = json.loads(r.stdout)
    assert {p["leader"] for p in out["partitions"]} == {1, 2, 3}
    assert all(o["errorCode"] == 0 for batch in out["offsets"] for o in batch)
    assert [o["high"] for o in out["topicOffsets"]] == [3] * 12

    # Read back through node 2: every acknowledged record, once.
    got = read_all(by_id[2].bootstrap, "spread12", 12, len(acked))
    assert got == acked


def test_group_coordinators_spread_and_groups_read_everything_once(cluster):
    nodes = cluster
    by_id = {n.node_id: n for n in nodes}
    # Every broker names the same coordinator; only that one serves the group.
    coordinators = {}
    for g in GROUP_CANDIDATES:
        answers = [wait_until(f"a coordinator for {g}", lambda n=n: (a := find_coordinator(n, g))[0] == 0 and a)
                   for n in nodes]
        assert len({a[1] for a in answers}) == 1, f"{g}: brokers disagree: {answers}"
        coordinators[g] = answers[0][1]
    assert set(coordinators.values()) == {1, 2, 3}, f"coordinators {coordinators} do not spread"
    g = GROUP_CANDIDATES[0]
    for n in nodes:
        if n.node_id != coordinators[g]:
            assert heartbeat_error(n, g) == NOT_COORDINATOR

    create_topic(nodes[0], "grouped", 12)
    wait_leaders(nodes, "grouped", 12, lambda l: set(l.values()) == {1, 2, 3})
    acked = produce_keyed(by_id[2].bootstrap, "grouped", 12, 25, "grp")
    want = sorted(acked.items())

    # One group per coordinator, three consumers each, each bootstrapped at
    # a different broker.
    groups = [next(g for g in GROUP_CANDIDATES if coordinators[g] == c) for c in (1, 2, 3)]
    for g in groups:
        consumers = [
            Consumer({"bootstrap.servers": n.bootstrap, "group.id": g, "auto.offset.reset": "earliest",
                      "enable.partition.eof": False, "session.timeout.ms": 10000})
            for n in nodes
        ]
        seen = []
        try:
            for c in consumers:
                c.subscribe(["grouped"])
            deadline = time.monotonic() + 90
            while len(seen) < len(want) and time.monotonic() < deadline:
                for c in consumers:
                    msg = c.poll(0.2)
                    if msg is None:
                        continue
                    assert msg.error() is None or msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                    seen.append(((msg.partition(), msg.offset()), msg.value()))
        finally:
            # Closing commits each member's offsets to the coordinator.
            for c in consumers:
                c.close()
        assert sorted(seen) == want, f"group {g}: {len(seen)} records read, {len(want)} acknowledged"
        # The coordinator holds the group's offsets; any broker leads a
        # client to it.
        for n in nodes:
            c = Consumer({"bootstrap.servers": n.bootstrap, "group.id": g})
            try:
                committed = c.committed([TopicPartition("grouped", p) for p in range(12)], timeout=30)
            finally:
                c.close()
            assert [tp.offset for tp in committed] == [25] * 12, f"group {g} via node {n.node_id}: {committed}"


def test_a_killed_broker_is_fenced_and_serves_again_after_restart(cluster):
    nodes = cluster
    controller = agreed_controller(nodes)
    victim = next(n for n in nodes if n.node_id != controller)
    survivors = [n for n in nodes if n is not victim]
    create_topic(survivors[0], "fenced", 6)
    lead = wait_leaders(nodes, "fenced", 6, lambda l: set(l.values()) == {1, 2, 3})
    acked = produce_keyed(survivors[0].bootstrap, "fenced", 6, 30, "before")
    victim_parts = {p for p, l in lead.items() if l == victim.node_id}
    assert victim_parts

    victim.stop(signal.SIGKILL)
    t0 = time.monotonic()
    wait_registered(survivors, [s.node_id for s in survivors])
    want_fenced = {p: (-1 if p in victim_parts else l) for p, l in lead.items()}
    wait_leaders(survivors, "fenced", 6, lambda l: l == want_fenced)
    print(f"fencing: node {victim.node_id} fenced, its partitions leaderless, "
          f"{time.monotonic() - t0:.2f} s after SIGKILL (session {SESSION_TIMEOUT_MS} ms)")
    admin = AdminClient({"bootstrap.servers": survivors[0].bootstrap})
    described = admin.describe_cluster().result(timeout=10)
    assert sorted(n.id for n in described.nodes) == sorted(s.node_id for s in survivors)
    # The survivors still serve their own partitions.
    for p, l in lead.items():
        if p not in victim_parts:
            assert list_offsets_error(next(s for s in survivors if s.node_id == l), "fenced", p) == 0

    t0 = time.monotonic()
    victim.start()
    wait_registered(nodes, [1, 2, 3])
    wait_leaders(nodes, "fenced", 6, lambda l: l == lead)
    print(f"unfencing: node {victim.node_id} leads its partitions again {time.monotonic() - t0:.2f} s after its restart")
    got = read_all(survivors[1].bootstrap, "fenced", 6, len(acked))
    assert got == acked
    more = produce_keyed(victim.bootstrap, "fenced", 6, 5, "after")
    assert all(off >= 30 for (_, off) in more)


def test_describe_cluster_and_producer_ids_across_brokers(cluster):
    nodes = cluster
    controller = agreed_controller(nodes)
    for n in nodes:
        admin = AdminClient({"bootstrap.servers": n.bootstrap})
        described = admin.describe_cluster().result(timeout=10)
        assert sorted(b.id for b in described.nodes) == [1, 2, 3]
        assert described.controller.id == controller
    pids = [init_producer_id(n) for n in nodes for _ in range(3)]
    assert len(set(pids)) == len(pids), f"producer ids repeat across brokers: {pids}"
