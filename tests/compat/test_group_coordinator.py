"""Consumer groups with confluent-kafka (librdkafka) and kafka-python.

Self-contained: starts its own `strom serve` (target/release/strom, else
target/debug/strom; override with STROM_BIN) with a short initial rebalance
delay, so it does not depend on the shared conftest fixtures.

Run: python3 -m pytest tests/compat/test_group_coordinator.py
"""

import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import kafka_wire
import pytest

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import free_port

REPO = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
DEADLINE_S = 60.0
CONFIG = """
log.segment.bytes = 8388608
group.initial.rebalance.delay.ms = 1000
group.min.session.timeout.ms = 1000
"""


def strom_bin() -> Path:
    if "STROM_BIN" in os.environ:
        return Path(os.environ["STROM_BIN"])
    for profile in ("release", "debug"):
        p = TARGET / profile / "strom"
        if p.exists():
            return p
    raise RuntimeError("strom is not built (cargo build --release); set STROM_BIN to use another binary")


class GroupBroker:
    def __init__(self, tmp: Path):
        self.dir = tmp / "data"
        self.conf = tmp / "strom.toml"
        self.conf.write_text(CONFIG)
        self.port = free_port()
        self.proc = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            [str(strom_bin()), "serve", "--data-dir", str(self.dir), "--listen", self.bootstrap,
             "--shards", "2", "--config", str(self.conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.time() + 30
        while time.time() < end:
            # Ready means ApiVersions answered, not just that the port accepted.
            try:
                err, _ = kafka_wire.api_versions(self.port, timeout=1.0)
                if err == 0:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise RuntimeError("strom did not start")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture
def gbroker(tmp_path):
    b = GroupBroker(tmp_path)
    b.start()
    yield b
    b.stop(signal.SIGKILL)


def create_topic(bootstrap, name, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(timeout=30)


def produce(bootstrap, topic, values):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, v in enumerate(values):
        p.produce(topic, key=str(i).encode(), value=v.encode())
    assert p.flush(30) == 0


def consumer(bootstrap, group, **extra):
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "enable.auto.commit": False}
    conf.update(extra)
    return Consumer(conf)


class Member(threading.Thread):
    """Polls and records (partition, offset, value); commits synchronously."""

    def __init__(self, bootstrap, group, topic):
        super().__init__(daemon=True)
        self.c = consumer(bootstrap, group)
        self.c.subscribe([topic])
        self.seen = []
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        while not self.stop_flag.is_set():
            m = self.c.poll(0.2)
            if m is None or m.error():
                continue
            with self.lock:
                self.seen.append((m.partition(), m.offset(), m.value().decode()))
            self.c.commit(message=m, asynchronous=False)

    def values(self):
        with self.lock:
            return [v for _, _, v in self.seen]

    def partitions(self):
        with self.lock:
            return {p for p, _, _ in self.seen}

    def close(self):
        self.stop_flag.set()
        self.join(timeout=30)
        self.c.close()


def wait_for(what, cond):
    end = time.time() + DEADLINE_S
    while not cond():
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_three_confluent_consumers_split_and_rebalance_on_leave(gbroker):
    topic = f"split-{uuid.uuid4().hex[:8]}"
    create_topic(gbroker.bootstrap, topic, 6)
    produce(gbroker.bootstrap, topic, [f"a{i}" for i in range(300)])
    members = [Member(gbroker.bootstrap, "trio", topic) for _ in range(3)]
    for m in members:
        m.start()
    wait_for("300 records", lambda: sum(len(m.values()) for m in members) >= 300)
    every = [v for m in members for v in m.values()]
    assert sorted(every) == sorted(f"a{i}" for i in range(300)), "each record exactly once"
    owned = [m.partitions() for m in members]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not owned[i] & owned[j], f"partition owned twice: {owned}"

    admin = AdminClient({"bootstrap.servers": gbroker.bootstrap})
    desc = admin.describe_consumer_groups(["trio"])["trio"].result(timeout=30)
    assert len(desc.members) == 3
    assert {tp.partition for mem in desc.members for tp in mem.assignment.topic_partitions} == set(range(6))
    listed = admin.list_consumer_groups().result(timeout=30)
    assert "trio" in {g.group_id for g in listed.valid}

    # A member that leaves cleanly hands its partitions over at once.
    gone = owned[0]
    members[0].close()
    produce(gbroker.bootstrap, topic, [f"b{i}" for i in range(60)])
    rest = members[1:]
    wait_for("records after the leave", lambda: sum(v.startswith("b") for m in rest for v in m.values()) >= 60)
    took = set().union(*(m.partitions() for m in rest))
    assert gone <= took
    for m in rest:
        m.close()


def test_committed_offsets_resume_after_restart_with_kafka_python_too(gbroker):
    topic = f"resume-{uuid.uuid4().hex[:8]}"
    create_topic(gbroker.bootstrap, topic, 2)
    produce(gbroker.bootstrap, topic, [f"x{i}" for i in range(20)])
    c = consumer(gbroker.bootstrap, "resumers")
    c.subscribe([topic])
    got = []
    end = time.time() + DEADLINE_S
    while len(got) < 10 and time.time() < end:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m)
    # Commit after the 10th record read: the committed offset is the next to read.
    c.commit(offsets=[TopicPartition(topic, m.partition(), m.offset() + 1) for m in got], asynchronous=False)
    committed = {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(2)], timeout=30)}
    c.close()
    expect = {}
    for m in got:
        expect[m.partition()] = max(expect.get(m.partition(), 0), m.offset() + 1)
    assert all(committed[p] == o for p, o in expect.items())

    gbroker.stop(signal.SIGKILL)
    gbroker.start()
    c = consumer(gbroker.bootstrap, "resumers")
    after = {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(2)], timeout=30)}
    assert after == committed
    c.subscribe([topic])
    rest = []
    end = time.time() + DEADLINE_S
    while len(rest) < 10 and time.time() < end:
        m = c.poll(0.5)
        if m is not None and not m.error():
            rest.append(m.value().decode())
    c.close()
    assert sorted(rest + [m.value().decode() for m in got]) == sorted(f"x{i}" for i in range(20))

    from kafka import KafkaConsumer, TopicPartition as KTP
    from kafka.admin import KafkaAdminClient

    kc = KafkaConsumer(bootstrap_servers=gbroker.bootstrap, group_id="resumers", enable_auto_commit=False)
    # kafka-python says None where librdkafka says -1001 (no committed offset).
    known = {p: o for p, o in after.items() if o >= 0}
    assert {p: kc.committed(KTP(topic, p)) for p in range(2)} == {p: known.get(p) for p in range(2)}
    kc.close()
    ka = KafkaAdminClient(bootstrap_servers=gbroker.bootstrap)
    # kafka-python 2.x names these list_consumer_groups/list_consumer_group_offsets,
    # 3.x list_groups/list_group_offsets (the batched OffsetFetch v8 form).
    if hasattr(ka, "list_consumer_groups"):
        names = [g[0] for g in ka.list_consumer_groups()]
        offsets = ka.list_consumer_group_offsets("resumers")
    else:
        names = [g["group_id"] if isinstance(g, dict) else g[0] for g in ka.list_groups()]
        both = ka.list_group_offsets({"resumers": None, "nobody": None})
        assert not both["nobody"]
        offsets = both["resumers"]
    assert "resumers" in names
    assert {tp.partition: om.offset for tp, om in offsets.items()} == known
    ka.close()


def test_kafka_python_group_consumer(gbroker):
    from kafka import KafkaConsumer

    topic = f"kp-{uuid.uuid4().hex[:8]}"
    create_topic(gbroker.bootstrap, topic, 3)
    produce(gbroker.bootstrap, topic, [f"k{i}" for i in range(30)])
    kc = KafkaConsumer(topic, bootstrap_servers=gbroker.bootstrap, group_id="kp", auto_offset_reset="earliest",
                       enable_auto_commit=False, consumer_timeout_ms=10000)
    values = []
    for m in kc:
        values.append(m.value.decode())
        if len(values) == 30:
            break
    kc.commit()
    kc.close()
    assert sorted(values) == sorted(f"k{i}" for i in range(30))
    kc = KafkaConsumer(topic, bootstrap_servers=gbroker.bootstrap, group_id="kp", auto_offset_reset="earliest",
                       consumer_timeout_ms=3000)
    assert [m for m in kc] == []
    kc.close()
