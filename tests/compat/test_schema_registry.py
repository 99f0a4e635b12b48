"""The built-in schema registry (strom-registry) against real clients:
confluent-kafka's SchemaRegistryClient with its AvroSerializer and
AvroDeserializer producing to and consuming from Strom, and raw HTTP
(requests) for Confluent's error codes, deletes, compatibility levels, modes,
references and restarts. The registry keeps its state in `_schemas`, a
compacted topic of the same broker."""

import json
import signal
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import Broker, create_topic, free_port

HERE = Path(__file__).resolve().parent
CT = "application/vnd.schemaregistry.v1+json"
READY_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 10.0
CONSUME_TIMEOUT_S = 60.0

USER_V1 = {
    "type": "record",
    "name": "User",
    "namespace": "com.example",
    "fields": [{"name": "name", "type": "string"}, {"name": "age", "type": "int"}],
}
# Adds a field with a default: backward compatible.
USER_V2 = {**USER_V1, "fields": USER_V1["fields"] + [{"name": "email", "type": "string", "default": ""}]}
# Adds a field without a default: not backward compatible.
USER_BAD = {**USER_V1, "fields": USER_V1["fields"] + [{"name": "phone", "type": "string"}]}


class Registry:
    """A broker with the registry on, and a small HTTP helper for it."""

    def __init__(self, broker: Broker, port: int):
        self.broker = broker
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = None
        while time.monotonic() < deadline:
            try:
                r = requests.get(self.url + "/subjects", timeout=2)
                if r.status_code == 200:
                    return
                last = r.status_code
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.1)
        raise AssertionError(f"registry not ready: {last}\n{self.broker.log_tail()}")

    def call(self, method, path, body=None, raw=None, **params):
        headers = {"Content-Type": CT}
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        r = requests.request(
            method, self.url + path, data=data, headers=headers, params=params, timeout=HTTP_TIMEOUT_S
        )
        return r.status_code, (r.json() if r.content else None), r

    def register(self, subject, schema, **extra):
        return self.call("POST", f"/subjects/{subject}/versions", {"schema": json.dumps(schema), **extra})


def start_registry(tmp_path) -> Registry:
    port = free_port()
    b = Broker(
        tmp_path / "data",
        tmp_path / "strom.log",
        config=f'schema.registry.listeners = "http://127.0.0.1:{port}"\n',
    )
    b.start()
    reg = Registry(b, port)
    reg.wait_ready()
    return reg


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.broker.stop(signal.SIGTERM)


def subject_name(prefix="s"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def error_of(status, body, code):
    assert body is not None, status
    assert body["error_code"] == code, body
    assert status == int(str(code)[:3]), (status, body)
    assert body["message"], body


def test_avro_round_trip_through_strom(registry, topic_name):
    topic = create_topic(registry.broker.bootstrap, topic_name, 1)
    client = SchemaRegistryClient({"url": registry.url})
    serializer = AvroSerializer(client, json.dumps(USER_V1))
    producer = Producer({"bootstrap.servers": registry.broker.bootstrap, "linger.ms": 5})
    users = [{"name": f"user-{i}", "age": 20 + i} for i in range(50)]
    for u in users:
        ctx = SerializationContext(topic, MessageField.VALUE)
        producer.produce(topic, value=serializer(u, ctx))
    assert producer.flush(30) == 0

    # The serializer registered the schema under TopicNameStrategy's subject.
    status, versions, _ = registry.call("GET", f"/subjects/{topic}-value/versions")
    assert (status, versions) == (200, [1])
    status, latest, _ = registry.call("GET", f"/subjects/{topic}-value/versions/latest")
    assert status == 200 and latest["version"] == 1

    assert consume_avro(registry, topic, len(users), latest["id"]) == users


def consume_decoded(registry, topic, count, decode):
    """Reads `count` records of `topic` with a group consumer (bounded by
    CONSUME_TIMEOUT_S) and returns `decode` of each value."""
    consumer = Consumer(
        {
            "bootstrap.servers": registry.broker.bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            got.append(decode(msg.value()))
    finally:
        consumer.close()
    return got


def consume_avro(registry, topic, count, schema_id):
    """Reads `count` records of `topic` and decodes them with
    confluent-kafka's AvroDeserializer; each must carry `schema_id` after
    the magic byte."""
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry.url}))
    ctx = SerializationContext(topic, MessageField.VALUE)

    def decode(raw):
        assert struct.unpack(">bI", raw[:5]) == (0, schema_id)
        return deserializer(raw, ctx)

    return consume_decoded(registry, topic, count, decode)


def test_kafkajs_registry_client_round_trip(registry, topic_name, tmp_path):
    """@kafkajs/confluent-schema-registry registers and encodes, kafkajs
    produces; confluent-kafka reads and decodes, and a fresh kafkajs registry
    client decodes by id."""
    topic = create_topic(registry.broker.bootstrap, topic_name, 1)
    users = [{"name": f"js-{i}", "age": i} for i in range(20)]
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {"bootstrap": registry.broker.bootstrap, "registry": registry.url, "topic": topic,
             "schema": USER_V1, "records": users}
        )
    )
    r = subprocess.run(
        ["node", str(HERE / "js" / "schema_registry_client.js"), str(spec)],
        capture_output=True, timeout=120, cwd=HERE,
    )
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = json.loads(r.stdout)
    assert out["idAgain"] == out["id"]
    assert out["decoded"] == users
    assert registry.call("GET", f"/subjects/{topic}-value/versions/1")[1]["id"] == out["id"]
    assert consume_avro(registry, topic, len(users), out["id"]) == users


def test_same_schema_same_id_and_incompatible_change_refused(registry):
    subject = subject_name()
    first = SchemaRegistryClient({"url": registry.url})
    id1 = first.register_schema(subject, Schema(json.dumps(USER_V1), "AVRO"))
    # A fresh client (no cache), whitespace and key order changed: same id.
    again = SchemaRegistryClient({"url": registry.url})
    spaced = json.dumps(dict(reversed(list(USER_V1.items()))), indent=2)
    assert again.register_schema(subject, Schema(spaced, "AVRO")) == id1
    # The same schema under another subject keeps its id.
    assert again.register_schema(subject_name(), Schema(json.dumps(USER_V1), "AVRO")) == id1

    with pytest.raises(SchemaRegistryError) as e:
        again.register_schema(subject, Schema(json.dumps(USER_BAD), "AVRO"))
    assert e.value.http_status_code == 409 and e.value.error_code == 409

    id2 = again.register_schema(subject, Schema(json.dumps(USER_V2), "AVRO"))
    assert id2 != id1
    assert again.get_versions(subject) == [1, 2]
    found = again.lookup_schema(subject, Schema(json.dumps(USER_V1), "AVRO"))
    assert (found.schema_id, found.version) == (id1, 1)
    assert json.loads(again.get_schema(id2).schema_str) == USER_V2


def test_bad_input_gets_confluents_error_codes(registry):
    subject = subject_name()
    error_of(*registry.call("POST", f"/subjects/{subject}/versions", {"schema": "{not json"})[:2], 42201)
    error_of(*registry.call("POST", f"/subjects/{subject}/versions", {"schema": '{"type":"nope"}'})[:2], 42201)
    status, body, _ = registry.call("POST", f"/subjects/{subject}/versions", {"schema": '"int"', "schemaType": "XML"})
    error_of(status, body, 42201)
    status, body, _ = registry.call("POST", f"/subjects/{subject}/versions", raw="not a json body")
    assert status == 400 and body["error_code"] == 400
    error_of(*registry.call("GET", f"/subjects/{subject}/versions")[:2], 40401)
    error_of(*registry.call("GET", f"/subjects/{subject}/versions/1")[:2], 40401)
    assert registry.register(subject, "string")[0] == 200
    error_of(*registry.call("GET", f"/subjects/{subject}/versions/7")[:2], 40402)
    error_of(*registry.call("GET", f"/subjects/{subject}/versions/abc")[:2], 42202)
    error_of(*registry.call("GET", f"/subjects/{subject}/versions/0")[:2], 42202)
    error_of(*registry.call("GET", "/schemas/ids/987654")[:2], 40403)
    error_of(*registry.call("POST", f"/subjects/{subject}", {"schema": '"long"'})[:2], 40403)
    error_of(*registry.call("PUT", "/config", {"compatibility": "SIDEWAYS"})[:2], 42203)
    error_of(*registry.call("PUT", "/mode", {"mode": "SOMETIMES"})[:2], 42204)
    status, _, r = registry.call("GET", f"/subjects/{subject}/versions/1")
    assert status == 200 and r.headers["Content-Type"] == CT

    # An oversized body is refused before it is parsed.
    huge = {"schema": json.dumps({"type": "enum", "name": "E", "symbols": [f"S{i}" for i in range(200_000)]})}
    status, body, _ = registry.call("POST", f"/subjects/{subject}/versions", huge)
    assert status == 413 and body["error_code"] == 413

    # Nesting deep enough to overflow a recursive parser's stack is refused.
    deep = '{"type":"array","items":' * 5_000 + '"int"' + "}" * 5_000
    error_of(*registry.call("POST", f"/subjects/{subject}/versions", {"schema": deep})[:2], 42201)
    status, body, _ = registry.call("GET", "/no/such/path")
    assert status == 404 and body["error_code"] == 404
    error_of(*registry.call("GET", "/schemas/ids/not-a-number")[:2], 40403)

    # None of it stopped the registry or the broker.
    assert registry.broker.alive()
    assert registry.call("GET", f"/subjects/{subject}/versions")[:2] == (200, [1])


def own_schemas():
    """USER_V1 and USER_V2 in a namespace of their own, so no other test's
    subject shares their ids."""
    ns = f"com.example.n{uuid.uuid4().hex[:8]}"
    return {**USER_V1, "namespace": ns}, {**USER_V2, "namespace": ns}


def test_soft_then_permanent_deletes(registry):
    subject = subject_name()
    v1, v2 = own_schemas()
    _, r1, _ = registry.register(subject, v1)
    _, r2, _ = registry.register(subject, v2)
    assert r1["id"] != r2["id"]

    error_of(*registry.call("DELETE", f"/subjects/{subject}/versions/1", permanent="true")[:2], 40407)
    assert registry.call("DELETE", f"/subjects/{subject}/versions/1")[:2] == (200, 1)
    error_of(*registry.call("DELETE", f"/subjects/{subject}/versions/1")[:2], 40406)
    assert registry.call("GET", f"/subjects/{subject}/versions")[:2] == (200, [2])
    assert registry.call("GET", f"/subjects/{subject}/versions", deleted="true")[:2] == (200, [1, 2])
    error_of(*registry.call("GET", f"/subjects/{subject}/versions/1")[:2], 40402)
    assert registry.call("GET", f"/subjects/{subject}/versions/1", deleted="true")[0] == 200
    # A soft-deleted schema is still served by id, for old records.
    assert registry.call("GET", f"/schemas/ids/{r1['id']}")[0] == 200

    error_of(*registry.call("DELETE", f"/subjects/{subject}", permanent="true")[:2], 40405)
    assert registry.call("DELETE", f"/subjects/{subject}")[:2] == (200, [2])
    assert subject not in registry.call("GET", "/subjects")[1]
    assert subject in registry.call("GET", "/subjects", deleted="true")[1]
    error_of(*registry.call("DELETE", f"/subjects/{subject}")[:2], 40404)
    assert registry.call("DELETE", f"/subjects/{subject}", permanent="true")[:2] == (200, [1, 2])
    error_of(*registry.call("GET", f"/schemas/ids/{r2['id']}")[:2], 40403)
    error_of(*registry.call("GET", f"/subjects/{subject}/versions", deleted="true")[:2], 40401)

    # Registered again, the schema gets a new id: ids are never reused.
    _, again, _ = registry.register(subject, v2)
    assert again["id"] > r2["id"]
    assert registry.call("GET", f"/subjects/{subject}/versions")[:2] == (200, [1])


def test_compatibility_levels_config_and_mode(registry):
    subject = subject_name()
    assert registry.call("GET", "/config")[:2] == (200, {"compatibilityLevel": "BACKWARD"})
    error_of(*registry.call("GET", f"/config/{subject}")[:2], 40408)
    registry.register(subject, USER_V1)

    path = f"/compatibility/subjects/{subject}/versions/latest"
    status, body, _ = registry.call("POST", path, {"schema": json.dumps(USER_BAD)}, verbose="true")
    assert status == 200 and body["is_compatible"] is False and body["messages"]
    assert registry.call("POST", path, {"schema": json.dumps(USER_V2)})[1] == {"is_compatible": True}

    # FORWARD: the old schema must read the new one's data; adding a field
    # without a default is fine, removing one without a default is not.
    assert registry.call("PUT", f"/config/{subject}", {"compatibility": "forward"})[:2] == (
        200,
        {"compatibility": "FORWARD"},
    )
    assert registry.call("GET", f"/config/{subject}")[1] == {"compatibilityLevel": "FORWARD"}
    assert registry.register(subject, USER_BAD)[0] == 200
    only_name = {**USER_V1, "fields": USER_V1["fields"][:1]}
    assert registry.register(subject, only_name)[0] == 409

    assert registry.call("PUT", f"/config/{subject}", {"compatibility": "NONE"})[0] == 200
    assert registry.register(subject, only_name)[0] == 200
    assert registry.call("DELETE", f"/config/{subject}")[:2] == (200, {"compatibilityLevel": "NONE"})
    assert registry.call("GET", f"/config/{subject}", defaultToGlobal="true")[1] == {
        "compatibilityLevel": "BACKWARD"
    }

    assert registry.call("GET", "/mode")[:2] == (200, {"mode": "READWRITE"})
    assert registry.call("PUT", f"/mode/{subject}", {"mode": "READONLY"})[:2] == (200, {"mode": "READONLY"})
    # Backward compatible with the latest (`only_name`): a field with a default.
    with_email = {**USER_V1, "fields": USER_V1["fields"][:1] + USER_V2["fields"][2:]}
    error_of(*registry.register(subject, with_email)[:2], 42205)
    assert registry.call("PUT", f"/mode/{subject}", {"mode": "READWRITE"})[0] == 200
    assert registry.register(subject, with_email)[0] == 200


def test_references(registry):
    inner_subject, outer_subject = subject_name("inner"), subject_name("outer")
    inner = {"type": "record", "name": "Address", "namespace": "com.example", "fields": [{"name": "city", "type": "string"}]}
    outer = {
        "type": "record",
        "name": "Customer",
        "namespace": "com.example",
        "fields": [{"name": "address", "type": "com.example.Address"}],
    }
    assert registry.register(inner_subject, inner)[0] == 200
    error_of(*registry.register(outer_subject, outer)[:2], 42201)
    ref = [{"name": "com.example.Address", "subject": inner_subject, "version": 1}]
    status, body, _ = registry.register(outer_subject, outer, references=ref)
    assert status == 200
    _, got, _ = registry.call("GET", f"/subjects/{outer_subject}/versions/1")
    assert got["references"] == ref and got["id"] == body["id"]
    assert registry.call("GET", f"/schemas/ids/{body['id']}")[1]["references"] == ref
    assert registry.call("GET", f"/subjects/{inner_subject}/versions/1/referencedby")[1] == [body["id"]]
    error_of(*registry.call("DELETE", f"/subjects/{inner_subject}/versions/1")[:2], 42206)


def test_restart_keeps_subjects_versions_and_ids(tmp_path):
    reg = start_registry(tmp_path)
    try:
        a, b = subject_name("a"), subject_name("b")
        ids = {}
        for subject, schema in [(a, USER_V1), (a, USER_V2), (b, "string")]:
            status, body, _ = reg.register(subject, schema)
            assert status == 200
            ids[(subject, json.dumps(schema))] = body["id"]
        assert reg.call("PUT", f"/config/{a}", {"compatibility": "FULL"})[0] == 200
        # The highest id is deleted permanently: it must not come back.
        assert reg.register(subject_name("c"), "long")[0] == 200
        c = [s for s in reg.call("GET", "/subjects")[1] if s.startswith("c-")][0]
        max_id = reg.call("GET", f"/subjects/{c}/versions/1")[1]["id"]
        assert reg.call("DELETE", f"/subjects/{c}")[0] == 200
        assert reg.call("DELETE", f"/subjects/{c}", permanent="true")[0] == 200

        reg.broker.restart()
        reg.wait_ready()

        assert reg.call("GET", f"/subjects/{a}/versions")[:2] == (200, [1, 2])
        assert reg.call("GET", f"/subjects/{b}/versions")[:2] == (200, [1])
        for (subject, schema), schema_id in ids.items():
            status, body, _ = reg.call("GET", f"/schemas/ids/{schema_id}")
            assert status == 200 and json.loads(body["schema"]) == json.loads(schema)
        assert reg.call("GET", f"/config/{a}")[1] == {"compatibilityLevel": "FULL"}
        error_of(*reg.call("GET", f"/subjects/{c}/versions")[:2], 40401)
        status, body, _ = reg.register(subject_name("d"), "double")
        assert status == 200 and body["id"] > max_id

        # A crash (SIGKILL) loses nothing acknowledged: writes are acks=all.
        reg.broker.crash_restart()
        reg.wait_ready()
        assert reg.call("GET", f"/subjects/{a}/versions")[:2] == (200, [1, 2])
        assert reg.call("GET", f"/schemas/ids/{body['id']}")[0] == 200
        status, after, _ = reg.register(subject_name("e"), "float")
        assert status == 200 and after["id"] > body["id"]
    finally:
        reg.broker.stop(signal.SIGKILL)


def test_produce_side_validation(registry, topic_name):
    """A topic with confluent.value.schema.validation=true takes records
    whose value carries an id registered under `<topic>-value` and refuses
    any other with INVALID_RECORD; a topic without it takes anything."""
    topic = create_topic(
        registry.broker.bootstrap, topic_name, 1, config={"confluent.value.schema.validation": "true"}
    )
    plain = create_topic(registry.broker.bootstrap, topic_name + "-plain", 1)
    client = SchemaRegistryClient({"url": registry.url})
    serializer = AvroSerializer(client, json.dumps(USER_V1))
    good = serializer({"name": "ok", "age": 1}, SerializationContext(topic, MessageField.VALUE))
    other_id = registry.register(subject_name("other"), {**USER_V1, "name": "Other"})[1]["id"]
    wrong_subject = struct.pack(">bI", 0, other_id) + good[5:]

    results = {}

    def produce(t, value, label):
        p = Producer({"bootstrap.servers": registry.broker.bootstrap, "retries": 0})

        def done(err, msg):
            results[label] = err

        p.produce(t, value=value, on_delivery=done)
        assert p.flush(30) == 0

    produce(topic, good, "good")
    produce(topic, None, "tombstone")
    produce(topic, b"no header at all", "garbage")
    produce(topic, wrong_subject, "wrong subject")
    produce(topic, struct.pack(">bI", 0, 999_999) + good[5:], "unknown id")
    produce(plain, b"no header at all", "plain topic")

    assert results["good"] is None and results["tombstone"] is None, results
    assert results["plain topic"] is None, results
    for label in ["garbage", "wrong subject", "unknown id"]:
        assert results[label] is not None and results[label].code() == KafkaError.INVALID_RECORD, (label, results)

    # Only the good record and the tombstone were written.
    assert high_watermark(registry, topic) == 2


def high_watermark(registry, topic):
    """How many records `topic` partition 0 holds (its high watermark)."""
    c = Consumer({"bootstrap.servers": registry.broker.bootstrap, "group.id": f"w-{uuid.uuid4().hex[:8]}"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        c.close()
