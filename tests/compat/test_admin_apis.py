"""DeleteRecords and the legacy AlterConfigs through real clients
(confluent-kafka and kafka-python). The Java AdminClient and Kafka's
kafka-delete-records tool run the same APIs in tests/java (AdminApisTest)."""

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, OffsetSpec, ResourceType
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType as KpResourceType
from kafka.structs import TopicPartition as KpTopicPartition

from clients import Rec, consume_exact, produce_all
from conftest import create_topic


def earliest(admin, topic, partition=0):
    tp = TopicPartition(topic, partition)
    return admin.list_offsets({tp: OffsetSpec.earliest()}, request_timeout=10)[tp].result(timeout=15).offset


def delete_before(admin, topic, offset, partition=0):
    tp = TopicPartition(topic, partition, offset)
    return admin.delete_records([tp], request_timeout=10)[tp].result(timeout=15).low_watermark


def error_code(fut):
    with pytest.raises(KafkaException) as e:
        fut.result(timeout=15)
    return e.value.args[0].code()


def test_delete_records_moves_log_start_and_survives_restart(broker_with, topic_name):
    b = broker_with()
    # Small segments: the new start lies several segments in.
    create_topic(b.bootstrap, topic_name, 1, config={"segment.bytes": "4096"})
    n = 300
    produce_all(b.bootstrap, topic_name, 0, [Rec(f"k{i}".encode(), f"v{i}".encode() * 20) for i in range(n)])
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    assert earliest(admin, topic_name) == 0

    # Inside a batch, past several small segments.
    assert delete_before(admin, topic_name, 137) == 137
    assert earliest(admin, topic_name) == 137
    got = consume_exact(b.bootstrap, topic_name, 0, 137, 3)
    assert [r.offset for r in got] == [137, 138, 139]
    assert got[0].value == b"v137" * 20
    # A consumer that starts at the beginning starts at the new log start.
    got = consume_exact(b.bootstrap, topic_name, 0, 0, 1, **{"auto.offset.reset": "earliest"})
    assert got[0].offset == 137

    # Never backwards; past the high watermark is refused; kafka-python (v0) too.
    assert delete_before(admin, topic_name, 5) == 137
    tp = TopicPartition(topic_name, 0, n + 1)
    assert error_code(admin.delete_records([tp], request_timeout=10)[tp]) == KafkaError.OFFSET_OUT_OF_RANGE
    kp = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    try:
        out = kp.delete_records({KpTopicPartition(topic_name, 0): 200})
        assert out[KpTopicPartition(topic_name, 0)]["low_watermark"] == 200
    finally:
        kp.close()
    assert earliest(admin, topic_name) == 200

    b.restart()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    assert earliest(admin, topic_name) == 200
    got = consume_exact(b.bootstrap, topic_name, 0, 0, n - 200, **{"auto.offset.reset": "earliest"})
    assert [r.offset for r in got] == list(range(200, n))

    # -1: up to the high watermark, and that survives a crash too.
    assert delete_before(admin, topic_name, -1) == n
    b.crash_restart()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    assert earliest(admin, topic_name) == n
    produce_all(b.bootstrap, topic_name, 0, [Rec(None, b"after")])
    assert consume_exact(b.bootstrap, topic_name, 0, n, 1)[0].value == b"after"


def test_delete_records_errors(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1, config={"cleanup.policy": "compact"})
    produce_all(broker.bootstrap, topic_name, 0, [Rec(b"k", b"v")])
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    tp = TopicPartition(topic_name, 0, 1)
    # A compact-only topic loses records only through compaction, as in Kafka.
    assert error_code(admin.delete_records([tp], request_timeout=10)[tp]) == KafkaError.POLICY_VIOLATION
    assert earliest(admin, topic_name) == 0


def topic_configs(admin, topic):
    r = ConfigResource(ResourceType.TOPIC, topic)
    entries = admin.describe_configs([r], request_timeout=10)[r].result(timeout=15)
    explicit = {k for k, v in entries.items() if v.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value}
    return {k: v.value for k, v in entries.items()}, explicit


def test_alter_configs_replaces_the_whole_set(broker, topic_name):
    create_topic(
        broker.bootstrap, topic_name, 1, config={"retention.ms": "3600000", "cleanup.policy": "compact"}
    )
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    values, explicit = topic_configs(admin, topic_name)
    assert explicit == {"retention.ms", "cleanup.policy"}, explicit

    # kafka-python sends the legacy AlterConfigs: the given set replaces all.
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        resp = kp.alter_configs([KpConfigResource(KpResourceType.TOPIC, topic_name, {"segment.bytes": "1048576"})])
        assert [r[0] for r in resp.resources] == [0], resp
        values, explicit = topic_configs(admin, topic_name)
        assert explicit == {"segment.bytes"}, explicit
        assert values["segment.bytes"] == "1048576"
        assert values["cleanup.policy"] == "delete"  # back to the default
        assert values["retention.ms"] == "604800000"

        # A bad value changes nothing and says why.
        resp = kp.alter_configs([KpConfigResource(KpResourceType.TOPIC, topic_name, {"retention.ms": "soon"})])
        code, msg = resp.resources[0][0], resp.resources[0][1]
        assert code == KafkaError.INVALID_CONFIG, resp
        assert "retention.ms" in msg
        assert topic_configs(admin, topic_name)[1] == {"segment.bytes"}

        # Dynamic broker configs: the cluster-wide default for topics.
        resp = kp.alter_configs([KpConfigResource(KpResourceType.BROKER, "", {"log.retention.ms": "7200000"})])
        assert resp.resources[0][0] == 0, resp
        values, _ = topic_configs(admin, topic_name)
        assert values["retention.ms"] == "7200000"
        resp = kp.alter_configs([KpConfigResource(KpResourceType.BROKER, "", {})])
        assert resp.resources[0][0] == 0, resp
        assert topic_configs(admin, topic_name)[0]["retention.ms"] == "604800000"
    finally:
        kp.close()

    # confluent-kafka's alter_configs sends the same API.
    r = ConfigResource(ResourceType.TOPIC, topic_name, set_config={"retention.ms": "120000"})
    admin.alter_configs([r], request_timeout=10)[r].result(timeout=15)
    values, explicit = topic_configs(admin, topic_name)
    assert explicit == {"retention.ms"}, explicit
    assert values["retention.ms"] == "120000"
    assert values["segment.bytes"] != "1048576"  # back to the broker's
