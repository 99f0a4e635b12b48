"""A restarted cluster node answers Metadata with its topics from the
first request it accepts (issue 15).

The shards used to start with empty metadata and listen before shard 0
had applied the controller's first image, so the first Metadata answers
of a restarted node said UNKNOWN_TOPIC_OR_PARTITION for every topic, and
librdkafka's producers failed produce() with "Unknown topic" (found by
scripts/fault-run, seed 612498172). The node is SIGKILLed and started
again, and raw Metadata v7 requests (no auto-creation) are sent to it
from the moment its port accepts, until 50 have been answered.
"""

import signal
import time

from confluent_kafka.admin import NewTopic

from test_cluster import wait_until
# `cluster`: three nodes, each a voter and a broker, all registered.
from test_cluster_replication import cluster, create, metadata_v7, wait_partitions  # noqa: F401
from test_replication_failover import full_isr

ANSWERS = 50
ROUNDS = 3


def test_a_restarted_node_knows_its_topics_from_its_first_answer(cluster):
    nodes = cluster
    create(nodes[0], NewTopic("known", num_partitions=3, replication_factor=3))
    wait_partitions(nodes, "known", 3, full_isr, "has every replica in its ISR")
    node = nodes[1]
    unknown = []
    for round in range(ROUNDS):
        node.stop(signal.SIGKILL)
        node.launch()
        answered = 0
        deadline = time.monotonic() + 30
        while answered < ANSWERS:
            assert time.monotonic() < deadline, f"round {round}: {answered} Metadata answers in 30 s"
            assert node.alive(), node.log_tail()
            try:
                error, parts = metadata_v7(node, "known")
            except OSError:
                continue  # not listening yet
            answered += 1
            if error != 0 or len(parts) != 3:
                unknown.append((round, answered, error, len(parts)))
        node.wait_ready()
        wait_until("the restarted node back in every ISR",
                   lambda: full_isr(metadata_v7(nodes[0], "known")[1]))
    assert unknown == [], f"(round, answer, error, partitions) of answers without the topic: {unknown[:5]}"
