"""The built-in schema registry's Protobuf and JSON Schema support against
confluent-kafka's real serializers: ProtobufSerializer/ProtobufDeserializer
(the message class is built at run time from a descriptor, so no protoc is
needed) and JSONSerializer/JSONDeserializer (with the jsonschema package),
producing through Strom and deserializing every record; ids, 409 on an
incompatible change, deletes, a restart, 42201 for malformed schemas, and
produce-side validation of Protobuf framing (message indexes after the id)."""

import base64
import json
import signal
import struct
import uuid

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from conftest import create_topic
from test_schema_registry import consume_decoded, error_of, high_watermark, start_registry, subject_name

ORDER_PROTO_V1 = """syntax = "proto3";
package acme;
message Order {
  string id = 1;
  int64 cents = 2;
}
"""
# Adds a field: compatible under Confluent's Protobuf rules.
ORDER_PROTO_V2 = ORDER_PROTO_V1.replace("int64 cents = 2;", "int64 cents = 2;\n  string note = 3;")
# Changes a field's scalar group (int64 to string): incompatible.
ORDER_PROTO_BAD = ORDER_PROTO_V1.replace("int64 cents = 2;", "string cents = 2;")

PERSON_JSON_V1 = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name"],
}
# Removes a property from an open content model: compatible.
PERSON_JSON_V2 = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
# Changes a property's type: incompatible.
PERSON_JSON_BAD = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "string"}},
    "required": ["name"],
}


def order_class(package="acme"):
    """A generated-like message class for acme.Order, built from a
    FileDescriptorProto in a pool of its own."""
    fdp = descriptor_pb2.FileDescriptorProto(name=f"{package}/order-{uuid.uuid4().hex[:6]}.proto", package=package, syntax="proto3")
    m = fdp.message_type.add(name="Order")
    m.field.add(name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    m.field.add(name="cents", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    # A second message first in the file would make the index non-zero;
    # a nested one exercises the message-index framing.
    nested = m.nested_type.add(name="Line")
    nested.field.add(name="sku", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                     label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(fdp.SerializeToString())
    order = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Order"))
    line = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Order.Line"))
    return order, line


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("registry-types"))
    yield reg
    reg.broker.stop(signal.SIGTERM)


def produce_all(registry, topic, values):
    producer = Producer({"bootstrap.servers": registry.broker.bootstrap, "linger.ms": 5})
    for v in values:
        producer.produce(topic, value=v)
    assert producer.flush(30) == 0


def test_protobuf_round_trip_through_strom(registry, topic_name):
    topic = create_topic(registry.broker.bootstrap, topic_name, 1)
    client = SchemaRegistryClient({"url": registry.url})
    order, line = order_class()
    ser = ProtobufSerializer(order, client)
    ctx = SerializationContext(topic, MessageField.VALUE)
    orders = [order(id=f"o-{i}", cents=100 * i) for i in range(40)]
    values = [ser(o, ctx) for o in orders]
    # A nested message type of the same file: the same schema (and id),
    # framed with its message index path.
    line_ser = ProtobufSerializer(line, client)
    produce_all(registry, topic, values)

    status, versions, _ = registry.call("GET", f"/subjects/{topic}-value/versions")
    assert (status, versions) == (200, [1])
    status, latest, _ = registry.call("GET", f"/subjects/{topic}-value/versions/latest")
    assert status == 200 and latest["schemaType"] == "PROTOBUF"
    for v in values:
        assert struct.unpack(">bI", v[:5]) == (0, latest["id"])

    # Registering the same schema again gives the same id.
    again = ProtobufSerializer(order, SchemaRegistryClient({"url": registry.url}))
    assert again(order(id="x"), ctx)[:5] == values[0][:5]

    deser = ProtobufDeserializer(order, {"use.deprecated.format": False})
    got = consume_decoded(registry, topic, len(orders), lambda raw: deser(raw, ctx))
    assert got == orders
    # The writer schema is served in Confluent's serialized form too.
    status, body, _ = registry.call("GET", f"/schemas/ids/{latest['id']}", format="serialized")
    assert status == 200 and body["schemaType"] == "PROTOBUF"
    assert descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(body["schema"])).message_type[0].name == "Order"
    framed = line_ser(line(sku="a"), ctx)
    assert framed[:5] == values[0][:5], "the same file is the same schema"
    assert framed[5:8] == b"\x04\x00\x00", "message indexes [0, 0]: count 2, then 0 and 0, zig-zag varints"


def test_protobuf_text_ids_compatibility_and_deletes(registry):
    subject = subject_name("proto")
    status, v1, _ = registry.call("POST", f"/subjects/{subject}/versions", {"schema": ORDER_PROTO_V1, "schemaType": "PROTOBUF"})
    assert status == 200, v1
    assert registry.call("POST", f"/subjects/{subject}/versions", {"schema": ORDER_PROTO_V1, "schemaType": "PROTOBUF"})[1] == v1
    status, body, _ = registry.call("POST", f"/subjects/{subject}/versions", {"schema": ORDER_PROTO_BAD, "schemaType": "PROTOBUF"})
    error_of(status, body, 409)
    assert "FieldScalarKindChanged" in body["message"], body
    status, v2, _ = registry.call("POST", f"/subjects/{subject}/versions", {"schema": ORDER_PROTO_V2, "schemaType": "PROTOBUF"})
    assert status == 200 and v2["id"] != v1["id"]
    # Normalized, text and descriptor of the same schema share an id.
    status, n1, _ = registry.call("POST", f"/subjects/{subject}-n/versions", {"schema": ORDER_PROTO_V1, "schemaType": "PROTOBUF"}, normalize="true")
    spaced = ORDER_PROTO_V1.replace("\n", "\n\n  ").replace("// ", "")
    status2, n2, _ = registry.call("POST", f"/subjects/{subject}-n/versions", {"schema": spaced, "schemaType": "PROTOBUF"}, normalize="true")
    assert (status, status2) == (200, 200) and n1 == n2, (n1, n2)

    assert registry.call("DELETE", f"/subjects/{subject}")[:2] == (200, [1, 2])
    error_of(*registry.call("GET", f"/subjects/{subject}/versions")[:2], 40401)
    assert registry.call("GET", f"/schemas/ids/{v1['id']}")[0] == 200
    assert registry.call("DELETE", f"/subjects/{subject}", permanent="true")[:2] == (200, [1, 2])
    error_of(*registry.call("GET", f"/subjects/{subject}/versions", deleted="true")[:2], 40401)


def test_json_schema_round_trip_through_strom(registry, topic_name):
    topic = create_topic(registry.broker.bootstrap, topic_name, 1)
    client = SchemaRegistryClient({"url": registry.url})
    ser = JSONSerializer(json.dumps(PERSON_JSON_V1), client)
    ctx = SerializationContext(topic, MessageField.VALUE)
    people = [{"name": f"p-{i}", "age": i} for i in range(40)]
    values = [ser(p, ctx) for p in people]
    produce_all(registry, topic, values)
    status, latest, _ = registry.call("GET", f"/subjects/{topic}-value/versions/latest")
    assert status == 200 and latest["schemaType"] == "JSON" and latest["version"] == 1
    assert {struct.unpack(">bI", v[:5]) for v in values} == {(0, latest["id"])}
    # The serializer validates: a record the schema refuses never leaves.
    with pytest.raises(Exception):
        ser({"age": "not a number"}, ctx)

    again = JSONSerializer(json.dumps(PERSON_JSON_V1), SchemaRegistryClient({"url": registry.url}))
    assert again(people[0], ctx)[:5] == values[0][:5]

    deser = JSONDeserializer(None, schema_registry_client=SchemaRegistryClient({"url": registry.url}))
    assert consume_decoded(registry, topic, len(people), lambda raw: deser(raw, ctx)) == people


def test_json_schema_ids_compatibility_and_deletes(registry):
    subject = subject_name("json")
    reg = lambda s, **q: registry.call("POST", f"/subjects/{subject}/versions", {"schema": json.dumps(s), "schemaType": "JSON"}, **q)
    status, v1, _ = reg(PERSON_JSON_V1)
    assert status == 200
    # Key order and whitespace do not make a new schema.
    reordered = {"required": ["name"], "properties": {"age": {"type": "integer"}, "name": {"type": "string"}}, "type": "object"}
    assert reg(reordered)[:2] == (200, v1)
    status, body, _ = reg(PERSON_JSON_BAD)
    error_of(status, body, 409)
    assert "TypeChanged" in body["message"], body
    status, v2, _ = reg(PERSON_JSON_V2)
    assert status == 200 and v2["id"] != v1["id"]
    # Adding a property to an open content model is not backward compatible.
    status, verdict, _ = registry.call(
        "POST", f"/compatibility/subjects/{subject}/versions/latest",
        {"schema": json.dumps(PERSON_JSON_V1), "schemaType": "JSON"}, verbose="true")
    assert status == 200 and verdict["is_compatible"] is False, verdict
    assert registry.call("DELETE", f"/subjects/{subject}/versions/2")[:2] == (200, 2)
    assert registry.call("DELETE", f"/subjects/{subject}/versions/2", permanent="true")[:2] == (200, 2)
    assert registry.call("GET", f"/subjects/{subject}/versions")[:2] == (200, [1])


def test_malformed_protobuf_and_json_schemas_get_42201(registry):
    subject = subject_name("bad")
    for schema_type, text in [
        ("PROTOBUF", "message {"),
        ("PROTOBUF", 'syntax = "proto3"; message M { Nope a = 1; }'),
        ("PROTOBUF", 'syntax = "proto3"; import "missing.proto"; message M {}'),
        ("PROTOBUF", "AAAA"),
        ("JSON", "{"),
        ("JSON", '{"type":"strng"}'),
        ("JSON", '{"properties":{"a":7}}'),
        ("JSON", '{"$ref":"#/definitions/nope"}'),
    ]:
        status, body, _ = registry.call("POST", f"/subjects/{subject}/versions", {"schema": text, "schemaType": schema_type})
        error_of(status, body, 42201)
    assert registry.call("GET", "/schemas/types")[1] == ["AVRO", "PROTOBUF", "JSON"]
    # The registry and the broker are still there.
    assert registry.call("GET", "/subjects")[0] == 200


def test_protobuf_references_are_imports(registry):
    common = subject_name("common")
    status, _, _ = registry.call("POST", f"/subjects/{common}/versions", {
        "schema": 'syntax = "proto3"; package acme; message Money { int64 cents = 1; }', "schemaType": "PROTOBUF"})
    assert status == 200
    text = 'syntax = "proto3"; package acme; import "acme/money.proto"; message Price { Money amount = 1; }'
    subject = subject_name("price")
    body = {"schema": text, "schemaType": "PROTOBUF"}
    error_of(*registry.call("POST", f"/subjects/{subject}/versions", body)[:2], 42201)
    body["references"] = [{"name": "acme/money.proto", "subject": common, "version": 1}]
    status, got, _ = registry.call("POST", f"/subjects/{subject}/versions", body)
    assert status == 200, got


def test_protobuf_and_json_survive_a_restart(tmp_path):
    reg = start_registry(tmp_path)
    try:
        p, j = subject_name("p"), subject_name("j")
        ids = {}
        for subject, schema_type, text in [
            (p, "PROTOBUF", ORDER_PROTO_V1),
            (p, "PROTOBUF", ORDER_PROTO_V2),
            (j, "JSON", json.dumps(PERSON_JSON_V1)),
        ]:
            status, body, _ = reg.call("POST", f"/subjects/{subject}/versions", {"schema": text, "schemaType": schema_type})
            assert status == 200, body
            ids[body["id"]] = (schema_type, text)
        reg.broker.restart()
        reg.wait_ready()
        assert reg.call("GET", f"/subjects/{p}/versions")[:2] == (200, [1, 2])
        assert reg.call("GET", f"/subjects/{j}/versions")[:2] == (200, [1])
        for schema_id, (schema_type, text) in ids.items():
            status, body, _ = reg.call("GET", f"/schemas/ids/{schema_id}")
            assert status == 200 and body["schemaType"] == schema_type and body["schema"] == text
        # Compatibility still holds against the restored versions.
        error_of(*reg.call("POST", f"/subjects/{p}/versions", {"schema": ORDER_PROTO_BAD, "schemaType": "PROTOBUF"})[:2], 409)
    finally:
        reg.broker.stop(signal.SIGKILL)


def test_produce_side_validation_takes_protobuf_framing(registry, topic_name):
    """Protobuf records carry message indexes after the id; a validating
    topic takes them when the id is the subject's, and refuses others."""
    topic = create_topic(
        registry.broker.bootstrap, topic_name, 1, config={"confluent.value.schema.validation": "true"}
    )
    client = SchemaRegistryClient({"url": registry.url})
    order, _ = order_class()
    ctx = SerializationContext(topic, MessageField.VALUE)
    good = ProtobufSerializer(order, client)(order(id="v", cents=1), ctx)
    assert good[5:6] == b"\x00", "message indexes: the first message is the single byte 0"
    results = {}

    def produce(value, label):
        p = Producer({"bootstrap.servers": registry.broker.bootstrap, "retries": 0})
        p.produce(topic, value=value, on_delivery=lambda err, msg: results.__setitem__(label, err))
        assert p.flush(30) == 0

    produce(good, "good")
    produce(struct.pack(">bI", 0, 999_999) + good[5:], "unknown id")
    produce(good[:5] + b"\xff", "truncated message indexes")
    assert results["good"] is None, results
    for label in ["unknown id", "truncated message indexes"]:
        assert results[label] is not None and results[label].code() == KafkaError.INVALID_RECORD, (label, results)
    assert high_watermark(registry, topic) == 1
