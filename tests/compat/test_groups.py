"""Consumer groups through real clients. Skipped while the broker does not
advertise FindCoordinator and JoinGroup (the group coordinator is built in
parallel); set STROM_COMPAT_REQUIRE_GROUPS=1 to fail instead of skipping."""

import base64
import os
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

import kafka_wire as kw
from clients import Rec, produce_all
from conftest import create_topic
from test_kafkajs import run_kafkajs

pytestmark = pytest.mark.groups


@pytest.fixture(autouse=True)
def _needs_groups(broker):
    apis = broker.apis()
    missing = [k for k in (kw.FIND_COORDINATOR, kw.JOIN_GROUP) if k not in apis]
    if missing:
        msg = f"broker does not advertise group APIs {missing}"
        if os.environ.get("STROM_COMPAT_REQUIRE_GROUPS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def group_consumer(broker, group, **conf):
    base = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 10000,
    }
    base.update(conf)
    return Consumer(base)


def poll_n(c, n, timeout=60):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        out.append(m)
    assert len(out) == n, f"got {len(out)} of {n}"
    return out


def test_confluent_subscribe_commit_resume(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 2)
    for p in (0, 1):
        produce_all(broker.bootstrap, topic_name, p, [Rec(None, f"{p}-{i}".encode()) for i in range(50)])
    group = f"g-{topic_name}"
    c = group_consumer(broker, group)
    c.subscribe([topic_name])
    first = poll_n(c, 60)
    c.commit(asynchronous=False)
    committed = c.committed([TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)], timeout=10)
    seen = {(m.partition(), m.offset()) for m in first}
    for tp in committed:
        # A committed offset is the next one to read.
        mine = [o for p, o in seen if p == tp.partition]
        assert tp.offset == (max(mine) + 1 if mine else tp.offset), (tp, mine)
    c.close()
    c2 = group_consumer(broker, group)
    c2.subscribe([topic_name])
    rest = poll_n(c2, 40)
    c2.close()
    all_seen = seen | {(m.partition(), m.offset()) for m in rest}
    assert all_seen == {(p, o) for p in (0, 1) for o in range(50)}


def test_kafkajs_group_consumer(broker, topic_name, tmp_path):
    create_topic(broker.bootstrap, topic_name, 2)
    want = {}
    for p in (0, 1):
        recs = [Rec(f"k{p}{i}".encode(), f"v{p}{i}".encode()) for i in range(30)]
        for r, o in zip(recs, produce_all(broker.bootstrap, topic_name, p, recs)):
            want[(p, o)] = (r.key, r.value)
    spec = {"bootstrap": broker.bootstrap, "topic": topic_name, "group": f"g-{topic_name}",
            "count": 60, "timeoutMs": 60000}
    out = run_kafkajs("groupConsume", spec, tmp_path, timeout=120)
    got = {(r["partition"], r["offset"]): (base64.b64decode(r["key"]), base64.b64decode(r["value"]))
           for r in out["records"]}
    assert got == want
    assert sorted((c["partition"], c["offset"]) for c in out["committed"]) == [(0, 30), (1, 30)]


def test_kcat_group_consumer(broker, topic_name):
    """kcat -G (librdkafka 2.0.2 balanced consumer) reads both partitions to the end."""
    import subprocess

    create_topic(broker.bootstrap, topic_name, 2)
    want = set()
    for p in (0, 1):
        offs = produce_all(broker.bootstrap, topic_name, p, [Rec(None, f"v{p}-{i}".encode()) for i in range(25)])
        want |= {(p, o, f"v{p}-{i}") for i, o in enumerate(offs)}
    r = subprocess.run(
        ["kcat", "-b", broker.bootstrap, "-G", f"g-{topic_name}", "-o", "beginning", "-e",
         "-X", "session.timeout.ms=10000", "-f", r"%p %o %s\n", topic_name],
        capture_output=True, timeout=90,
    )
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    got = set()
    for line in r.stdout.decode().splitlines():
        p, o, v = line.split(" ", 2)
        got.add((int(p), int(o), v))
    assert got == want
