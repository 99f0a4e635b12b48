"""A follower whose log ends below its leader's log start (issue 15): the
leader moved its log start with DeleteRecords while the follower was down,
so the follower's fetch is answered OFFSET_OUT_OF_RANGE and nothing it
holds can be continued. It starts again, empty, at the leader's log start
(Kafka's `truncateFullyAndStartAt`). That start falls inside a batch here,
so it starts at the base offset of that batch, catches up, rejoins the
ISR and holds the leader's batches byte for byte. Before this, it logged
the error and retried forever, outside the ISR.
"""

import signal

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from test_cluster import wait_registered, wait_until
from test_replication_follow import compare_replicas
# `cluster`: three nodes, each a voter and a broker, all registered.
from test_cluster_replication import cluster, create, wait_partitions  # noqa: F401

TOPIC = "out-of-range"
BATCH = 10


def produce_batches(node, first: int, batches: int) -> int:
    """Writes `batches` batches of BATCH records (one flush each, so one
    batch each); returns the next record number."""
    p = Producer({"bootstrap.servers": node.bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 1000})
    errors = []
    n = first
    for _ in range(batches):
        for _ in range(BATCH):
            p.produce(TOPIC, value=f"record-{n}".encode() * 4, partition=0,
                      on_delivery=lambda err, _msg: err is not None and errors.append(err))
            n += 1
        assert p.flush(30) == 0
    assert errors == [], errors[:3]
    return n


def test_a_follower_below_the_leaders_log_start_starts_again_there(cluster):
    nodes = cluster
    leader, other, follower = nodes[0], nodes[1], nodes[2]
    order = [leader.node_id, other.node_id, follower.node_id]
    create(leader, NewTopic(TOPIC, num_partitions=1, replica_assignment=[order]))
    wait_partitions(nodes, TOPIC, 1, lambda p: p[0]["leader"] == leader.node_id and len(p[0]["isr"]) == 3,
                    "led by node 1 with three in-sync replicas")
    n = produce_batches(leader, 0, 10)  # offsets 0..100

    follower.stop(signal.SIGKILL)
    wait_partitions([leader, other], TOPIC, 1, lambda p: follower.node_id not in p[0]["isr"],
                    f"without node {follower.node_id} in the ISR")
    n = produce_batches(leader, n, 10)  # offsets 100..200
    admin = AdminClient({"bootstrap.servers": leader.bootstrap})
    tp = TopicPartition(TOPIC, 0, 155)  # inside the batch at 150..159
    assert admin.delete_records([tp], request_timeout=10)[tp].result(timeout=15).low_watermark == 155

    follower.start()
    wait_registered(nodes, [1, 2, 3])
    wait_partitions(nodes, TOPIC, 1, lambda p: sorted(p[0]["isr"]) == [1, 2, 3],
                    f"with node {follower.node_id} back in the ISR")
    n = produce_batches(leader, n, 2)  # offsets 200..220

    def follower_holds_the_leaders_batches():
        theirs = compare_replicas.read_batches(follower.data_dir / f"{TOPIC}-0")
        ours = compare_replicas.read_batches(leader.data_dir / f"{TOPIC}-0")
        return (theirs and min(theirs) == 150 and max(last for last, _ in theirs.values()) == n - 1
                and all(ours.get(base) == b for base, b in theirs.items()))

    wait_until(f"node {follower.node_id} to hold the leader's batches from offset 150 to {n}",
               follower_holds_the_leaders_batches)
