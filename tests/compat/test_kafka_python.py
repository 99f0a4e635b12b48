"""kafka-python (pure Python client) against strom: admin topics, acks='all'
producer, consumer by assign() + seek()."""

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from clients import Rec, assert_same, consume_exact

TIMEOUT_MS = 20_000


def admin(broker):
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT_MS)


def wait_partitions(broker, topic, n, timeout=20):
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT_MS)
    try:
        deadline = time.monotonic() + timeout
        while True:
            parts = c.partitions_for_topic(topic)
            if parts == set(range(n)):
                return
            assert time.monotonic() < deadline, f"partitions_for_topic({topic}) = {parts}"
            time.sleep(0.2)
            c.topics()  # refresh metadata
    finally:
        c.close()


def topic_listed(broker, topic):
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT_MS)
    try:
        return topic in c.topics()
    finally:
        c.close()


def test_admin_create_delete(broker, topic_name):
    a = admin(broker)
    try:
        a.create_topics([NewTopic(topic_name, num_partitions=4, replication_factor=1)])
        wait_partitions(broker, topic_name, 4)
        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=1)])
        a.delete_topics([topic_name])
        deadline = time.monotonic() + 20
        while topic_listed(broker, topic_name):
            assert time.monotonic() < deadline, "deleted topic still listed"
            time.sleep(0.2)
        with pytest.raises(UnknownTopicOrPartitionError):
            a.delete_topics([topic_name])
    finally:
        a.close()


def test_admin_list_and_describe_topics(broker, topic):
    """KafkaAdminClient asks Metadata for authorized operations and decodes them."""
    a = admin(broker)
    try:
        assert topic in a.list_topics()
        [desc] = a.describe_topics([topic])
        assert desc["topic"] == topic and len(desc["partitions"]) == 1
        cluster = a.describe_cluster()
        assert [(b["host"], b["port"]) for b in cluster["brokers"]] == [("127.0.0.1", broker.port)]
    finally:
        a.close()


@pytest.mark.parametrize("codec", [None, "gzip"])
def test_produce_acks_all_consume_assign_seek(broker, topic_name, codec):
    a = admin(broker)
    a.create_topics([NewTopic(topic_name, num_partitions=2, replication_factor=1)])
    a.close()
    wait_partitions(broker, topic_name, 2)

    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type=codec,
                      linger_ms=5, request_timeout_ms=TIMEOUT_MS)
    want = {0: [], 1: []}
    futures = []
    for i in range(400):
        part = i % 2
        r = Rec(
            # kafka-python refuses a record with neither key nor value.
            None if i % 7 == 0 and i % 11 else f"key-{i}".encode(),
            None if i % 11 == 0 else f"value-{i}-".encode() * (i % 13),
            [("i", str(i).encode()), ("empty", b"")],
            timestamp=1_700_000_000_000 + i,
        )
        want[part].append(r)
        futures.append((r, p.send(topic_name, value=r.value, key=r.key, headers=r.headers,
                                  partition=part, timestamp_ms=r.timestamp)))
    p.flush(timeout=60)
    for r, f in futures:
        md = f.get(timeout=30)
        r.offset = md.offset
    p.close()
    for part in (0, 1):
        assert [r.offset for r in want[part]] == list(range(200))

    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                      request_timeout_ms=TIMEOUT_MS, consumer_timeout_ms=20_000)
    try:
        assert c.partitions_for_topic(topic_name) == {0, 1}
        tps = [TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)]
        c.assign(tps)
        assert c.beginning_offsets(tps) == {tps[0]: 0, tps[1]: 0}
        assert c.end_offsets(tps) == {tps[0]: 200, tps[1]: 200}
        for tp in tps:
            c.seek(tp, 0)
        got = {0: [], 1: []}
        deadline = time.monotonic() + 60
        while sum(map(len, got.values())) < 400 and time.monotonic() < deadline:
            for tp, msgs in c.poll(timeout_ms=500).items():
                for m in msgs:
                    got[tp.partition].append(
                        Rec(m.key, m.value, [(k, v) for k, v in m.headers], m.offset, m.timestamp)
                    )
        for part in (0, 1):
            assert_same(got[part], want[part])

        # seek into the middle of partition 1 only.
        c.assign([tps[1]])
        c.seek(tps[1], 150)
        got1 = []
        deadline = time.monotonic() + 30
        while len(got1) < 50 and time.monotonic() < deadline:
            for _tp, msgs in c.poll(timeout_ms=500).items():
                got1 += [Rec(m.key, m.value, [(k, v) for k, v in m.headers], m.offset, m.timestamp)
                         for m in msgs]
        assert_same(got1, want[1][150:])

    finally:
        c.close()


def test_offsets_for_times(broker, topic):
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=20,
                      request_timeout_ms=TIMEOUT_MS)
    ts0 = 1_700_000_000_000
    futs = [p.send(topic, value=f"v{i}".encode(), partition=0, timestamp_ms=ts0 + 2 * i) for i in range(100)]
    p.flush(timeout=30)
    assert [f.get(timeout=30).offset for f in futs] == list(range(100))
    p.close()
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT_MS)
    try:
        tp = TopicPartition(topic, 0)
        for ts, want in [(ts0, 0), (ts0 + 101, 51), (ts0 + 198, 99)]:
            res = c.offsets_for_times({tp: ts})[tp]
            assert res is not None and res.offset == want, f"offsets_for_times({ts}) = {res}, expected {want}"
            assert res.timestamp == ts0 + 2 * want, res
        assert c.offsets_for_times({tp: ts0 + 199})[tp] is None
    finally:
        c.close()


def test_cross_client_confluent_reads_kafka_python(broker, topic):
    """kafka-python writes, confluent-kafka reads: byte for byte."""
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", request_timeout_ms=TIMEOUT_MS)
    want = [Rec(bytes([i]) * i, bytes(range(256)) * (i % 5), [], offset=i) for i in range(100)]
    for r in want:
        assert p.send(topic, key=r.key, value=r.value, partition=0).get(timeout=30).offset == r.offset
    p.close()
    assert_same(consume_exact(broker.bootstrap, topic, 0, 0, 100), want, check_headers=False)
