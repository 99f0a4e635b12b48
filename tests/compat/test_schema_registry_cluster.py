"""The schema registry across three `strom serve` nodes (issue 17): one
writer, the registry of the broker that leads `_schemas` partition 0; the
others read `_schemas` from that leader over the Kafka protocol and forward
writes to the writer's registry over HTTP.

confluent-kafka's SchemaRegistryClient (and its AvroSerializer and
AvroDeserializer) talk to the two nodes that do not write; raw HTTP
(requests) reads each node's own answer.
"""

import json
import signal
import time
import uuid

import pytest
import requests
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import free_port
from test_cluster import NODES, ClusterNode, wait_registered, wait_until
from test_cluster_serving import create_topic, leaders
from test_schema_registry import USER_BAD, USER_V1, USER_V2

CT = "application/vnd.schemaregistry.v1+json"
SESSION_TIMEOUT_MS = 2000
HTTP_TIMEOUT_S = 40.0
CONSUME_TIMEOUT_S = 60.0



class RegistryNode(ClusterNode):
    """A cluster node with its registry on a port of its own (kept across restarts)."""

    def __init__(self, base, node_id, voters, controller_port, config):
        self.registry_port = free_port()
        config += f'schema.registry.listeners = "http://127.0.0.1:{self.registry_port}"\n'
        super().__init__(base, node_id, voters, controller_port, config=config)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.registry_port}"

    def call(self, method, path, body=None, **params):
        data = json.dumps(body) if body is not None else None
        r = requests.request(method, self.url + path, data=data, headers={"Content-Type": CT},
                             params=params, timeout=HTTP_TIMEOUT_S)
        return r.status_code, (r.json() if r.content else None)

    def client(self) -> SchemaRegistryClient:
        return SchemaRegistryClient({"url": self.url})


@pytest.fixture
def cluster(tmp_path):
    ports = [free_port() for _ in range(NODES)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(ports))
    config = f"broker.session.timeout.ms = {SESSION_TIMEOUT_MS}\ngroup.initial.rebalance.delay.ms = 0\n"
    nodes = [RegistryNode(tmp_path / f"node{i + 1}", i + 1, voters, ports[i], config) for i in range(NODES)]
    for n in nodes:
        n.launch()
    for n in nodes:
        n.wait_ready()
    wait_registered(nodes, [1, 2, 3])
    for n in nodes:
        wait_until(f"node {n.node_id}'s registry to serve", lambda n=n: n.call("GET", "/subjects")[0] == 200)
    yield nodes
    for n in nodes:
        if n.alive():
            n.stop(signal.SIGKILL)


def writer_of(nodes):
    """The node that leads `_schemas` partition 0, as every node's Metadata says."""
    for n in nodes:
        wait_until(f"node {n.node_id} to show a leader of _schemas",
                   lambda n=n: leaders(n, "_schemas").get(0, -1) > 0)
    ids = {leaders(n, "_schemas")[0] for n in nodes}
    assert len(ids) == 1, f"the nodes disagree on the leader of _schemas: {ids}"
    leader = ids.pop()
    return next(n for n in nodes if n.node_id == leader)


def subject_name(prefix="s"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def error_code(exc_info) -> int:
    return exc_info.value.error_code


def wait_same_everywhere(nodes, path, want):
    for n in nodes:
        wait_until(f"node {n.node_id} to answer {path} with {want}",
                   lambda n=n: n.call("GET", path) == (200, want))


def test_followers_forward_writes_to_the_one_writer(cluster, tmp_path):
    nodes = cluster
    writer = writer_of(nodes)
    followers = [n for n in nodes if n is not writer]
    a, b = followers

    # Registrations through both followers, interleaved: unique ids, read
    # back at once on the node that wrote them (read-your-writes).
    subjects = [subject_name(f"f{i}") for i in range(6)]
    ids = {}
    for i, subject in enumerate(subjects):
        node = followers[i % 2]
        schema = {**USER_V1, "name": f"User{i}"}
        ids[subject] = node.client().register_schema(subject, Schema(json.dumps(schema), "AVRO"))
        status, body = node.call("GET", f"/schemas/ids/{ids[subject]}")
        assert status == 200, (node.node_id, status, body)
        assert json.loads(body["schema"])["name"] == f"User{i}"
        assert node.call("GET", f"/subjects/{subject}/versions") == (200, [1])
    assert len(set(ids.values())) == len(subjects), f"ids reused: {ids}"

    # Every node, the writer too, gives the same ids.
    for subject, sid in ids.items():
        for n in nodes:
            wait_until(f"node {n.node_id} to show {subject}",
                       lambda n=n, subject=subject: n.call("GET", f"/subjects/{subject}/versions/1")[0] == 200)
            status, body = n.call("GET", f"/subjects/{subject}/versions/1")
            assert body["id"] == sid, (n.node_id, subject, body, sid)
    wait_same_everywhere(nodes, "/subjects", sorted(subjects))

    # The same schema through two followers (fresh clients, no cache) gets one id.
    same = {**USER_V1, "name": "Shared"}
    shared = [subject_name("sa"), subject_name("sb")]
    id_a = a.client().register_schema(shared[0], Schema(json.dumps(same), "AVRO"))
    id_b = b.client().register_schema(shared[1], Schema(json.dumps(same), "AVRO"))
    assert id_a == id_b
    assert id_a not in ids.values()

    # An incompatible change through a follower: 409, from the writer's checker.
    subject = subjects[0]
    v2 = {**USER_V2, "name": "User0"}
    bad = {**USER_BAD, "name": "User0"}
    with pytest.raises(SchemaRegistryError) as e:
        b.client().register_schema(subject, Schema(json.dumps(bad), "AVRO"))
    assert e.value.http_status_code == 409, e.value
    assert a.client().register_schema(subject, Schema(json.dumps(v2), "AVRO")) > max(ids.values())
    wait_same_everywhere(nodes, f"/subjects/{subject}/versions", [1, 2])

    # Config, mode and deletes forwarded too; each follower reads its own write.
    assert b.call("PUT", f"/config/{subject}", {"compatibility": "NONE"}) == (200, {"compatibility": "NONE"})
    assert b.call("GET", f"/config/{subject}") == (200, {"compatibilityLevel": "NONE"})
    assert a.call("DELETE", f"/subjects/{subjects[1]}") == (200, [1])
    assert a.call("GET", f"/subjects/{subjects[1]}/versions")[0] == 404
    assert b.call("DELETE", f"/subjects/{subjects[1]}", permanent="true") == (200, [1])
    wait_same_everywhere(nodes, "/subjects", sorted(s for s in subjects + shared if s != subjects[1]))
    assert a.call("PUT", "/mode", {"mode": "READONLY"}) == (200, {"mode": "READONLY"})
    status, body = b.call("POST", f"/subjects/{subject_name()}/versions", {"schema": json.dumps(USER_V1)})
    assert (status, body["error_code"]) == (422, 42205), body
    assert b.call("PUT", "/mode", {"mode": "READWRITE"}) == (200, {"mode": "READWRITE"})

    # Serializer at one follower, deserializer at the other, records through the cluster.
    topic = subject_name("t")
    create_topic(a, topic, 1)
    serialize = AvroSerializer(a.client(), json.dumps(USER_V1))
    p = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 5})
    users = [{"name": f"u{i}", "age": i} for i in range(20)]
    for u in users:
        p.produce(topic, value=serialize(u, SerializationContext(topic, MessageField.VALUE)))
    assert p.flush(30) == 0
    deserialize = AvroDeserializer(b.client())
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": subject_name("g"), "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    try:
        while len(got) < len(users) and time.monotonic() < deadline:
            msg = c.poll(1.0)
            if msg is None or msg.error():
                continue
            got.append(deserialize(msg.value(), SerializationContext(topic, MessageField.VALUE)))
    finally:
        c.close()
    assert got == users


def test_writes_fail_clearly_while_the_writer_is_down_and_all_is_intact_after(cluster):
    nodes = cluster
    writer = writer_of(nodes)
    followers = [n for n in nodes if n is not writer]
    before = {}
    for i in range(4):
        subject = subject_name(f"k{i}")
        before[subject] = followers[i % 2].client().register_schema(
            subject, Schema(json.dumps({**USER_V1, "name": f"K{i}"}), "AVRO"))
    for n in nodes:
        wait_until(f"node {n.node_id} to show every subject",
                   lambda n=n: n.call("GET", "/subjects") == (200, sorted(before)))

    writer.stop(signal.SIGKILL)
    # Writes through either follower fail with a Confluent 500 error: the
    # forward fails (50003) until the writer's broker is fenced, then no
    # broker leads _schemas (50004). Reads keep working from each node's state.
    for f in followers:
        for attempt in range(3):
            status, body = f.call("POST", f"/subjects/{subject_name('down')}/versions",
                                  {"schema": json.dumps({**USER_V1, "name": f"Down{attempt}"})})
            assert status == 500, (f.node_id, status, body)
            assert body["error_code"] in (50003, 50004), body
        for subject, sid in before.items():
            assert f.call("GET", f"/subjects/{subject}/versions/1")[1]["id"] == sid
    # Once fenced, the answer is the unknown leader.
    def unknown_leader():
        answers = [f.call("POST", f"/subjects/{subject_name('down')}/versions", {"schema": json.dumps(USER_V1)})
                   for f in followers]
        # Raised rather than returned false, so a timeout shows the answers.
        assert all(isinstance(b, dict) and b.get("error_code") == 50004 for _, b in answers), answers
        return True

    wait_until("the followers to answer 50004 once the writer is fenced", unknown_leader)
    with pytest.raises(SchemaRegistryError) as e:
        followers[0].client().register_schema(subject_name("down"), Schema(json.dumps(USER_V1), "AVRO"))
    assert e.value.http_status_code == 500 and e.value.error_code == 50004, e.value

    # Back: the writer leads _schemas again, everything is intact everywhere,
    # and writes through the followers work again with fresh ids.
    writer.launch()
    writer.wait_ready()
    wait_until("the writer's registry to serve again", lambda: writer.call("GET", "/subjects")[0] == 200)
    assert writer_of(nodes) is writer
    for n in nodes:
        assert n.call("GET", "/subjects") == (200, sorted(before)), n.node_id
        for subject, sid in before.items():
            assert n.call("GET", f"/subjects/{subject}/versions/1")[1]["id"] == sid
    after = wait_until("a write through a follower to succeed again",
                       lambda: followers[1].client().register_schema(
                           subject_name("after"), Schema(json.dumps({**USER_V1, "name": "After"}), "AVRO")))
    assert after > max(before.values())
