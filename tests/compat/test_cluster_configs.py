"""Dynamic broker configs in a three-node cluster (issue 14): kafka-python's
AlterConfigs sets `log.retention.ms` as the cluster default (BROKER "", which
confluent-kafka refuses to name) at one node, confluent-kafka's
IncrementalAlterConfigs sets it for one broker by id; they go through the controller as Config
records, every node applies them without a restart, DescribeConfigs at any
node shows them with Kafka's sources, a restarted node gets them back from
the metadata log, and deleting them takes every node back to the static value.
"""

import signal

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, ResourceType

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType as KpResourceType

from test_cluster import start_all, voter_nodes, wait_registered, wait_until
from test_cluster_serving import create_topic

STATIC_RETENTION_MS = "604800000"  # Kafka's default


def alter_default(node, configs: dict):
    """AlterConfigs (the whole set) of the cluster default, at `node`.
    kafka-python sends it to the least loaded broker it knows and raises
    NodeNotReadyError when that connection is not up yet: tried again."""

    def once():
        kp = KafkaAdminClient(bootstrap_servers=node.bootstrap)
        try:
            resp = kp.alter_configs([KpConfigResource(KpResourceType.BROKER, "", configs)])
        finally:
            kp.close()
        assert resp.resources[0][0] == 0, resp
        return True

    wait_until("AlterConfigs of the cluster default", once, timeout=30)


def alter(node, broker: str, op, value=None):
    """IncrementalAlterConfigs of one broker's own value (sent to that broker)."""
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    entry = ConfigEntry("log.retention.ms", value, incremental_operation=op)
    res = ConfigResource(ResourceType.BROKER, broker, incremental_configs=[entry])
    admin.incremental_alter_configs([res])[res].result(timeout=30)


def broker_retention(node, broker: int):
    """(value, source) of log.retention.ms for `broker`, as `node` describes it."""
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    res = ConfigResource(ResourceType.BROKER, str(broker))
    entry = admin.describe_configs([res])[res].result(timeout=10)["log.retention.ms"]
    return entry.value, ConfigSource(entry.source)


def topic_retention(node, topic: str) -> str:
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    res = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([res])[res].result(timeout=10)["retention.ms"].value


def test_broker_configs_reach_every_node(tmp_path):
    _, nodes = voter_nodes(tmp_path, "")
    try:
        start_all(nodes)
        n1, n2, n3 = nodes
        create_topic(n3, "retained", 6)
        assert broker_retention(n3, 3) == (STATIC_RETENTION_MS, ConfigSource.DEFAULT_CONFIG)

        # The cluster default, set at node 1, is seen at node 3 and applies
        # to the topic's defaults on every node.
        alter_default(n1, {"log.retention.ms": "7200000"})
        for n in nodes:
            wait_until(f"node {n.node_id} to apply the cluster default",
                       lambda n=n: broker_retention(n, n.node_id)
                       == ("7200000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG))
            wait_until(f"node {n.node_id} to give the topic the new default",
                       lambda n=n: topic_retention(n, "retained") == "7200000")

        # One broker's own value wins over the default there only.
        alter(n3, "3", AlterConfigOpType.SET, "3600000")
        wait_until("node 3's own value", lambda: broker_retention(n3, 3) == ("3600000", ConfigSource.DYNAMIC_BROKER_CONFIG))
        assert broker_retention(n2, 2) == ("7200000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)

        # A restarted node gets them back from the metadata log.
        n2.stop(signal.SIGKILL)
        n2.start()
        wait_registered(nodes, [1, 2, 3])
        wait_until("node 2 to have the default after its restart",
                   lambda: broker_retention(n2, 2) == ("7200000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG))

        # Deleting them takes every node back.
        alter_default(n2, {})
        alter(n3, "3", AlterConfigOpType.DELETE)
        for n in nodes:
            wait_until(f"node {n.node_id} back to the static value",
                       lambda n=n: broker_retention(n, n.node_id) == (STATIC_RETENTION_MS, ConfigSource.DEFAULT_CONFIG)
                       and topic_retention(n, "retained") == STATIC_RETENTION_MS)
    finally:
        for n in nodes:
            if n.alive():
                n.stop(signal.SIGKILL)
