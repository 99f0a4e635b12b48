"""Compatibility rules of the schema registry that clients run into, through
confluent-kafka's SchemaRegistryClient against the real strom binary:
Protobuf label changes (Confluent's FIELD_NUMERIC_LABEL_CHANGED refuses a
number becoming repeated; a string may) and JSON Schema's dependencies and
conditionals."""

import signal

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from test_schema_registry import start_registry, subject_name


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("registry-rules"))
    yield reg
    reg.broker.stop(signal.SIGTERM)


def proto(fields):
    return f'syntax = "proto3";\npackage acme;\nmessage Reading {{\n{fields}\n}}\n'


def test_protobuf_number_becoming_repeated_gets_409(registry):
    client = SchemaRegistryClient({"url": registry.url})
    subject = subject_name("proto-label")
    v1 = proto("  string sensor = 1;\n  optional int64 value = 2;")
    client.register_schema(subject, Schema(v1, "PROTOBUF"))
    repeated_number = proto("  string sensor = 1;\n  repeated int64 value = 2;")
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, Schema(repeated_number, "PROTOBUF"))
    assert refused.value.http_status_code == 409, refused.value
    assert refused.value.error_code == 409, refused.value
    assert "FieldNumericLabelChanged" in refused.value.error_message, refused.value
    assert client.test_compatibility(subject, Schema(repeated_number, "PROTOBUF")) is False
    # A string or bytes field may change label (Confluent's
    # FIELD_STRING_OR_BYTES_LABEL_CHANGED is compatible).
    repeated_string = proto("  repeated string sensor = 1;\n  optional int64 value = 2;")
    assert client.test_compatibility(subject, Schema(repeated_string, "PROTOBUF")) is True
    client.register_schema(subject, Schema(repeated_string, "PROTOBUF"))
    assert client.get_versions(subject) == [1, 2]


def test_json_schema_dependency_added_gets_409_removed_does_not(registry):
    import json

    client = SchemaRegistryClient({"url": registry.url})
    subject = subject_name("json-deps")

    def schema(extra):
        s = {"type": "object", "properties": {"card": {"type": "string"}, "billing": {"type": "string"}}}
        s.update(extra)
        return Schema(json.dumps(s), "JSON")

    client.register_schema(subject, schema({"dependencies": {"card": ["billing"]}}))
    # Requiring one more property when `card` is present: DEPENDENCY_ARRAY_EXTENDED.
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, schema({"dependencies": {"card": ["billing", "cvv"]}}))
    assert refused.value.http_status_code == 409, refused.value
    assert "DependencyArrayExtended" in refused.value.error_message, refused.value
    # Dropping the dependency (DEPENDENCY_ARRAY_REMOVED) is compatible.
    assert client.test_compatibility(subject, schema({})) is True
    client.register_schema(subject, schema({}))
    assert client.get_versions(subject) == [1, 2]


AVRO_V1 = '{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}'
AVRO_V2 = '{"type":"record","name":"R","fields":[{"name":"b","type":"long","default":0}]}'


def test_deleted_schemas_topic_gives_50001_and_the_rest_keeps_serving(tmp_path):
    """With `_schemas` deleted through the Kafka API, a write cannot reach
    the store: 50001, as Confluent's KafkaStore answers. Reads from the
    registry's state, the broker, and other topics keep working."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    from conftest import create_topic

    reg = start_registry(tmp_path)
    try:
        client = SchemaRegistryClient({"url": reg.url})
        subject = subject_name("store")
        first = client.register_schema(subject, Schema(AVRO_V1, "AVRO"))
        admin = AdminClient({"bootstrap.servers": reg.broker.bootstrap})
        admin.delete_topics(["_schemas"])["_schemas"].result(30)

        with pytest.raises(SchemaRegistryError) as failed:
            client.register_schema(subject_name("after"), Schema(AVRO_V2, "AVRO"))
        assert failed.value.http_status_code == 500, failed.value
        assert failed.value.error_code == 50001, failed.value
        assert "backend data store" in failed.value.error_message, failed.value

        # What the registry holds still answers; the broker still serves.
        assert client.get_schema(first).schema_str == AVRO_V1
        assert reg.call("GET", "/subjects")[0] == 200
        topic = create_topic(reg.broker.bootstrap, subject_name("other"), 1)
        producer = Producer({"bootstrap.servers": reg.broker.bootstrap})
        producer.produce(topic, value=b"still here")
        assert producer.flush(30) == 0
        assert reg.broker.proc.poll() is None
    finally:
        reg.broker.stop(signal.SIGTERM)
