"""Group coordination survives the loss of a broker (issue 15): the
`__consumer_offsets` partitions are replicated like any partition (their
ISR grows to every replica), and when the leader of a group's offsets
partition is SIGKILLed (or stops with SIGTERM, a controlled shutdown), the
new leader loads that partition's groups from its replica and coordinates
them: a new consumer of the group resumes from the committed offsets, and
`committed()` (confluent-kafka) and list_consumer_group_offsets
(confluent-kafka's AdminClient and kafka-python's) show the committed
values.

The committed offsets are neither the earliest nor the latest offset, and
the new consumer resets to the earliest, so a lost commit shows.
"""

import signal

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient
from kafka.structs import TopicPartition as KpTopicPartition

from test_cluster import controller_seen_by, wait_until
# `cluster`: three nodes, each a voter and a broker, all registered
# (broker.session.timeout.ms = 2000, so a killed broker is fenced soon).
from test_cluster_replication import cluster, create, metadata_v7, wait_partitions  # noqa: F401

TOPIC = "orders"
PARTITIONS = 3
RECORDS_PER_PARTITION = 10
OFFSETS_PARTITIONS = 50
# Committed per partition: inside the log, neither its start nor its end.
COMMITTED = {0: 3, 1: 5, 2: 7}


def offsets_partition(group: str) -> int:
    """Kafka's `Utils.abs(group.hashCode) % 50` (ASCII group ids)."""
    h = 0
    for ch in group:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    return 0 if h == -(1 << 31) else abs(h) % OFFSETS_PARTITIONS


def produce(bootstrap: str):
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for p in range(PARTITIONS):
        for i in range(RECORDS_PER_PARTITION):
            producer.produce(TOPIC, value=f"{p}-{i}".encode(), partition=p)
    assert producer.flush(30) == 0


def consume_and_commit(bootstrap: str, group: str):
    """A group member reads everything, then commits COMMITTED (acknowledged
    by the coordinator) and leaves."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.subscribe([TOPIC])
    seen = set()
    try:
        wait_until("the first member read every record", lambda: (
            seen.update((m.partition(), m.offset()) for m in c.consume(100, 0.5) if not m.error())
            or len(seen) == PARTITIONS * RECORDS_PER_PARTITION))
        done = c.commit(offsets=[TopicPartition(TOPIC, p, o) for p, o in COMMITTED.items()],
                        asynchronous=False)
        assert all(tp.error is None for tp in done), done
    finally:
        c.close()


def coordinator_of(node, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    return admin.describe_consumer_groups([group])[group].result(timeout=30).coordinator.id


def committed_by_admin(node, group: str):
    """The group's committed offsets as confluent-kafka's AdminClient lists
    them, or None while the coordinator does not answer."""
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
    try:
        got = admin.list_consumer_group_offsets([request])[group].result(timeout=10)
    except Exception as e:  # noqa: BLE001 - retried until the deadline
        print(f"list_consumer_group_offsets: {e}")
        return None
    return {tp.partition: tp.offset for tp in got.topic_partitions if tp.error is None}


def committed_by_kafka_python(node, group: str):
    admin = KafkaAdminClient(bootstrap_servers=node.bootstrap, request_timeout_ms=10000)
    try:
        got = admin.list_consumer_group_offsets(group)
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in got.items() if tp.topic == TOPIC}


def resume(bootstrap: str, group: str):
    """A new member of the group: what `committed()` says, and the first
    offset it reads from each partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.subscribe([TOPIC])
    first = {}
    try:
        def read():
            for m in c.consume(100, 0.5):
                if not m.error():
                    first.setdefault(m.partition(), m.offset())
            return len(first) == PARTITIONS
        wait_until("the new member read from every partition", read)
        committed = c.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in committed}, first
    finally:
        c.close()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_a_new_coordinator_keeps_the_committed_offsets(cluster, how):
    nodes = cluster
    group = f"failover-{how.name.lower()}"
    p = offsets_partition(group)
    create(nodes[0], NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=3))
    wait_partitions(nodes, TOPIC, PARTITIONS, lambda ps: all(len(s["isr"]) == 3 for s in ps.values()),
                    "has every replica in its ISR")
    produce(nodes[0].bootstrap)
    consume_and_commit(nodes[0].bootstrap, group)
    assert committed_by_admin(nodes[0], group) == COMMITTED

    coordinator = coordinator_of(nodes[0], group)
    offsets = wait_partitions(nodes, "__consumer_offsets", OFFSETS_PARTITIONS, lambda ps: True, "exists")
    assert offsets[p]["leader"] == coordinator, (p, offsets[p], coordinator)
    # The group's offsets partition is replicated: its followers fetch it
    # and join its ISR.
    wait_partitions(nodes, "__consumer_offsets", OFFSETS_PARTITIONS,
                    lambda ps: sorted(ps[p]["isr"]) == [1, 2, 3], f"partition {p} has every replica in its ISR")

    victim = next(n for n in nodes if n.node_id == coordinator)
    survivors = [n for n in nodes if n is not victim]
    victim.stop(how)
    moved = wait_partitions(survivors, "__consumer_offsets", OFFSETS_PARTITIONS,
                            lambda ps: ps[p]["leader"] in [n.node_id for n in survivors],
                            f"partition {p} led by a survivor")
    assert moved[p]["epoch"] > offsets[p]["epoch"], (offsets[p], moved[p])
    new_coordinator = moved[p]["leader"]
    print(f"offsets partition {p}: coordinator {coordinator} stopped ({how.name}), now {new_coordinator}")

    # The new leader coordinates the group, with its committed offsets.
    wait_until("the new coordinator answers with the committed offsets",
               lambda: committed_by_admin(survivors[0], group) == COMMITTED)
    assert coordinator_of(survivors[0], group) == new_coordinator
    # kafka-python's admin client connects to the active controller first:
    # when the victim was it, the survivors elect another.
    wait_until("the survivors agree on an active controller among them",
               lambda: {controller_seen_by(n) for n in survivors} <= {n.node_id for n in survivors}
               and len({controller_seen_by(n) for n in survivors}) == 1)
    assert committed_by_kafka_python(survivors[1], group) == COMMITTED

    committed, first = resume(",".join(n.bootstrap for n in survivors), group)
    assert committed == COMMITTED
    assert first == COMMITTED, f"the new member did not resume from the committed offsets: {first}"
