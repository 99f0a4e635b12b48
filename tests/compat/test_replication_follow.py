"""Followers replicate (issue 15, the data path) on three `strom serve`
nodes: each replica of an RF=3 partition fetches from its leader (replica
id Fetch, batches appended with the leader's offsets), so every replica
ends up byte-identical to the leader (`scripts/compare-replicas` reads the
segment files of each replica's partition directory).
"""

import importlib.machinery
import importlib.util
import signal
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from test_cluster import agreed_controller, wait_registered, wait_until
# `cluster`: three nodes, each a voter and a broker, all registered.
from test_cluster_replication import cluster, create, wait_partitions  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def load_compare():
    path = str(ROOT / "scripts" / "compare-replicas")
    loader = importlib.machinery.SourceFileLoader("compare_replicas", path)
    spec = importlib.util.spec_from_loader("compare_replicas", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


compare_replicas = load_compare()


def produce(node, topic: str, count: int, partitions: int, first: int = 0):
    """Writes `count` keyed records with an idempotent acks=all producer;
    returns {partition: [(offset, key, value)]} of the acknowledged ones."""
    acked = {p: [] for p in range(partitions)}
    errors = []

    def report(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[msg.partition()].append((msg.offset(), msg.key(), msg.value()))

    p = Producer({"bootstrap.servers": node.bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5})
    for i in range(first, first + count):
        p.produce(topic, key=f"k{i % 97}".encode(), value=f"value-{i}".encode() * 8,
                  partition=i % partitions, on_delivery=report)
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    assert errors == [], errors[:3]
    return acked


def replicas_match(nodes, topic: str, partition: int, end: int):
    """Every replica's directory holds offsets 0..end, identical."""
    dirs = [n.data_dir / f"{topic}-{partition}" for n in nodes]
    ok, lines = compare_replicas.compare(dirs)
    return ok and f"identical over offsets 0..{end}" in lines[-1]


def test_followers_fetch_and_hold_the_leaders_batches(cluster):
    nodes = cluster
    create(nodes[0], NewTopic("follow", num_partitions=3, replication_factor=3))
    parts = wait_partitions(nodes, "follow", 3, lambda p: all(s["leader"] >= 0 for s in p.values()), "has leaders")
    assert all(sorted(s["replicas"]) == [1, 2, 3] for s in parts.values()), parts
    count = 3000
    acked = produce(nodes[0], "follow", count, 3)
    assert sum(len(v) for v in acked.values()) == count
    for p, records in acked.items():
        offsets = sorted(o for o, _, _ in records)
        assert offsets == list(range(len(records))), (p, offsets[:5])
        wait_until(f"follow-{p}: every replica holds offsets 0..{len(records)}",
                   lambda p=p, end=len(records): replicas_match(nodes, "follow", p, end))


def read_all(node, topic: str, partition: int, end: int):
    """[(offset, value)] of offsets 0..end read from `node`'s cluster."""
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": "check", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, partition, 0)])
    got = []
    try:
        wait_until(f"{topic}-{partition}: {end} records read",
                   lambda: (got.extend((m.offset(), m.value()) for m in c.consume(500, 1.0) if not m.error())
                            or (got and got[-1][0] >= end - 1)))
    finally:
        c.close()
    return got


def test_a_follower_takes_over_with_the_data_and_the_old_leader_catches_up(cluster):
    """Unclean election (followers are not in the ISR yet) moves a killed
    leader's partition to a follower; having fetched, it serves every
    acknowledged record at its offset and takes more; the old leader,
    restarted, truncates by OffsetForLeaderEpoch and fetches the rest, so
    all three replicas are identical again."""
    nodes = cluster
    controller = agreed_controller(nodes)
    victim = next(n for n in nodes if n.node_id != controller)
    survivors = [n for n in nodes if n is not victim]
    order = [victim.node_id] + [n.node_id for n in survivors]
    create(nodes[0], NewTopic("takeover", num_partitions=1, replica_assignment=[order],
                              config={"unclean.leader.election.enable": "true"}))
    before = wait_partitions(nodes, "takeover", 1, lambda p: p[0]["leader"] == victim.node_id, "led by the victim")
    acked = produce(victim, "takeover", 1000, 1)[0]
    wait_until("takeover-0: every replica holds offsets 0..1000",
               lambda: replicas_match(nodes, "takeover", 0, 1000))

    victim.stop(signal.SIGKILL)
    after = wait_partitions(survivors, "takeover", 1,
                            lambda p: p[0]["leader"] in [n.node_id for n in survivors], "led by a survivor")
    assert after[0]["epoch"] > before[0]["epoch"], (before, after)
    acked += produce(survivors[0], "takeover", 500, 1, first=1000)[0]
    assert sorted(o for o, _, _ in acked) == list(range(1500))
    expect = sorted((o, v) for o, _, v in acked)
    assert read_all(survivors[0], "takeover", 0, 1500) == expect

    victim.start()
    wait_registered(nodes, [1, 2, 3])
    wait_until("takeover-0: the restarted replica holds offsets 0..1500 like the others",
               lambda: replicas_match(nodes, "takeover", 0, 1500))
