"""A single node's data dir upgraded in place into a cluster (issue 14).

A plain `strom serve` (no cluster flags) gets a topic with a config, records
(confluent-kafka and kcat), a consumer group's committed offsets and a
dynamic broker config. It is stopped and restarted as node 1 of a new
three-node cluster beside two fresh nodes: every node's Metadata lists the topic, every record reads back
at its offset, the configs and the committed offsets are there, and the
topic takes more records. A single node whose topic collides with a
different one of the same name in the cluster is refused with an error.
"""

import signal
import subprocess

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic

from clients import Rec, produce_all
from conftest import Broker
from test_cluster import start_all, ClusterNode, assert_refused, raw_metadata, voter_nodes, wait_registered, wait_until
from test_cluster_configs import alter_default, broker_retention
from test_cluster_serving import read_all

PARTITIONS = 4
PER_PARTITION = 25
GROUP = "legacy-group"


def single_node(base) -> Broker:
    """A plain single node whose data dir a ClusterNode at `base` reuses."""
    base.mkdir(parents=True, exist_ok=True)
    return Broker(base / "data", base / "strom.log", shards=2)


def fill_single_node(node: Broker):
    """The topic, its records by (partition, offset), and the committed offsets."""
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    topic = NewTopic("legacy", num_partitions=PARTITIONS, replication_factor=1, config={"retention.ms": "86400000"})
    admin.create_topics([topic])["legacy"].result(timeout=30)
    acked = {}
    for p in range(PARTITIONS - 1):
        recs = [Rec(f"k{i}".encode(), f"ck-{p}-{i}".encode()) for i in range(PER_PARTITION)]
        for off, r in zip(produce_all(node.bootstrap, "legacy", p, recs), recs):
            acked[(p, off)] = r.value
    # The last partition through kcat.
    last = PARTITIONS - 1
    lines = "".join(f"kcat-{last}-{i}\n" for i in range(PER_PARTITION))
    subprocess.run(["kcat", "-b", node.bootstrap, "-P", "-t", "legacy", "-p", str(last)],
                   input=lines.encode(), check=True, timeout=60)
    for i in range(PER_PARTITION):
        acked[(last, i)] = f"kcat-{last}-{i}".encode()
    # A group commits offsets part way through each partition.
    committed = {p: 10 + p for p in range(PARTITIONS)}
    c = Consumer({"bootstrap.servers": node.bootstrap, "group.id": GROUP, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition("legacy", p, o) for p, o in committed.items()], asynchronous=False)
    finally:
        c.close()
    return acked, committed


def committed_offsets(bootstrap: str):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "enable.auto.commit": False})
    try:
        got = c.committed([TopicPartition("legacy", p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


def retention_ms(bootstrap: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, "legacy")
    return admin.describe_configs([res])[res].result(timeout=10)["retention.ms"].value


def test_a_single_node_data_dir_becomes_node_1_of_a_cluster(tmp_path):
    single = single_node(tmp_path / "node1")
    single.start()
    try:
        acked, committed = fill_single_node(single)
        alter_default(single, {"log.retention.ms": "7200000"})
    finally:
        single.stop()

    voters, nodes = voter_nodes(tmp_path, "group.initial.rebalance.delay.ms = 0\n")
    assert nodes[0].data_dir == single.data_dir
    try:
        start_all(nodes)
        for n in nodes:
            wait_until(f"node {n.node_id} to list the single node's topic",
                       lambda n=n: raw_metadata(n)[1].get("legacy") == (0, list(range(PARTITIONS))))
        assert (tmp_path / "node1" / "data" / "strom-metadata.single-node.json").exists()
        # Everything reads back at its offset, through a fresh node.
        assert read_all(nodes[2].bootstrap, "legacy", PARTITIONS, len(acked)) == acked
        assert wait_until("the committed offsets", lambda: committed_offsets(nodes[1].bootstrap) == committed)
        assert retention_ms(nodes[2].bootstrap) == "86400000"
        # The single node's dynamic broker config is the cluster's now.
        for n in nodes:
            wait_until(f"node {n.node_id} to have the moved broker config",
                       lambda n=n: broker_retention(n, n.node_id)
                       == ("7200000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG))
        # The topic goes on from where it was.
        more = produce_all(nodes[1].bootstrap, "legacy", 0, [Rec(None, b"after")])
        assert more == [PER_PARTITION]

        # A restart of node 1 does not move anything again.
        nodes[0].stop(signal.SIGKILL)
        nodes[0].start()
        wait_registered(nodes, [1, 2, 3])
        assert read_all(nodes[0].bootstrap, "legacy", 1, PER_PARTITION + 1)[(0, PER_PARTITION)] == b"after"

        # Another single node with a different topic of the same name cannot
        # take node 3's place: its topic would collide.
        other = single_node(tmp_path / "other")
        other.start()
        try:
            produce_all(other.bootstrap, "legacy", 0, [Rec(None, b"other")])
        finally:
            other.stop()
        nodes[2].stop(signal.SIGKILL)
        clash = ClusterNode(tmp_path / "other", 3, voters, nodes[2].controller_port)
        # Refused either by the upgrade's check, or earlier, when the leader's
        # heartbeat shows that node 3's controller log (empty here) lacks what
        # the quorum counts node 3 as holding (CI hit that order once; raft-rs
        # panicked there before the controller refused it).
        assert_refused(clash, "collide with different ones in the cluster metadata: legacy",
                       "lacks entries the quorum counts it as holding")
        # Its data is untouched.
        assert (tmp_path / "other" / "data" / "legacy-0").exists()
        assert not (tmp_path / "other" / "data" / "strom-metadata.single-node.json").exists()
    finally:
        for n in nodes:
            if n.alive():
                n.stop(signal.SIGKILL)
