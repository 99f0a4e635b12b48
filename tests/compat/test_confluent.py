"""confluent-kafka (Python, bundled librdkafka 2.x) against strom:
AdminClient topics and errors, acks=all producer with delivery reports,
consumer by assignment, offset lookups."""

import random
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import kafka_wire
from clients import Rec, assert_same, consume_exact, consumer, produce_all, producer
from conftest import create_topic, wait_for_topic


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create_error(a, topic: NewTopic):
    with pytest.raises(KafkaException) as ei:
        a.create_topics([topic], request_timeout=15)[topic.topic].result(timeout=30)
    return ei.value.args[0]


def test_create_list_delete_topics(broker, topic_name):
    a = admin(broker)
    names = [f"{topic_name}-a", f"{topic_name}-b"]
    futs = a.create_topics([NewTopic(names[0], 3, 1), NewTopic(names[1], 1, 1)], request_timeout=15)
    for n in names:
        futs[n].result(timeout=30)
    wait_for_topic(a, names[0], 3)
    wait_for_topic(a, names[1], 1)
    md = a.list_topics(timeout=10)
    assert set(names) <= set(md.topics)
    assert sorted(md.topics[names[0]].partitions) == [0, 1, 2]
    assert len(md.brokers) == 1
    [b] = md.brokers.values()
    assert (b.host, b.port) == ("127.0.0.1", broker.port)

    futs = a.delete_topics(names, request_timeout=15)
    for n in names:
        futs[n].result(timeout=30)
    deadline = time.monotonic() + 20
    while True:
        left = set(names) & set(a.list_topics(timeout=10).topics)
        if not left:
            break
        assert time.monotonic() < deadline, f"deleted topics still listed: {left}"
        time.sleep(0.1)


def test_create_existing_topic_fails(broker, topic):
    err = create_error(admin(broker), NewTopic(topic, 1, 1))
    assert err.code() == KafkaError.TOPIC_ALREADY_EXISTS, err


@pytest.mark.parametrize("name", ["bad/name", "..", "a" * 250, "spaces are bad"])
def test_create_invalid_topic_name_fails(broker, name):
    err = create_error(admin(broker), NewTopic(name, 1, 1))
    assert err.code() == KafkaError.TOPIC_EXCEPTION, err  # INVALID_TOPIC_EXCEPTION (17)


def test_delete_unknown_topic_fails(broker, topic_name):
    a = admin(broker)  # the client must outlive the future
    with pytest.raises(KafkaException) as ei:
        a.delete_topics([topic_name], request_timeout=15)[topic_name].result(timeout=30)
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, ei.value


def test_recreate_deleted_topic_starts_empty(broker, topic_name):
    a = admin(broker)
    create_topic(broker.bootstrap, topic_name, 1)
    produce_all(broker.bootstrap, topic_name, 0, [Rec(b"k", b"before delete")])
    a.delete_topics([topic_name], request_timeout=15)[topic_name].result(timeout=30)
    deadline = time.monotonic() + 20
    while True:
        try:
            create_topic(broker.bootstrap, topic_name, 1)
            break
        except KafkaException as e:
            # Deletion may still be in progress.
            assert time.monotonic() < deadline, e
            time.sleep(0.2)
    [off] = produce_all(broker.bootstrap, topic_name, 0, [Rec(b"k", b"after")])
    assert off == 0


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_producer_acks_all_multi_partition(broker, topic_name, codec):
    create_topic(broker.bootstrap, topic_name, 3)
    rng = random.Random(codec)
    ts0 = 1_700_000_000_000
    want = {p: [] for p in range(3)}
    for i in range(900):
        p = i % 3
        headers = [("seq", str(i).encode()), ("dup", b"1"), ("dup", b"2"), ("nullh", None)]
        key = None if i % 10 == 0 else f"key-{i}".encode()
        value = None if i % 17 == 0 else rng.randbytes(rng.choice([0, 1, 50, 3000]))
        want[p].append(Rec(key, value, headers, timestamp=ts0 + i))
    for p in range(3):
        offsets = produce_all(broker.bootstrap, topic_name, p, want[p], **{"compression.type": codec})
        assert offsets == list(range(len(want[p]))), f"partition {p}: offsets {offsets[:5]}..."
        for r, o in zip(want[p], offsets):
            r.offset = o
    for p in range(3):
        got = consume_exact(broker.bootstrap, topic_name, p, 0, len(want[p]))
        assert_same(got, want[p])


def test_delivery_reports_carry_offsets_across_batches(broker, topic):
    # Many small batches (linger 0) and a few big ones: offsets stay dense.
    want = [Rec(f"k{i}".encode(), b"x" * (i % 100)) for i in range(2000)]
    offsets = produce_all(broker.bootstrap, topic, 0, want[:1000], **{"linger.ms": 0})
    offsets += produce_all(broker.bootstrap, topic, 0, want[1000:], **{"linger.ms": 50})
    assert offsets == list(range(2000))
    for r, o in zip(want, offsets):
        r.offset = o
    assert_same(consume_exact(broker.bootstrap, topic, 0, 0, 2000), want)
    # From the middle, and the last record only.
    assert_same(consume_exact(broker.bootstrap, topic, 0, 1234, 766), want[1234:])
    assert_same(consume_exact(broker.bootstrap, topic, 0, 1999, 1), want[1999:])


def test_acks0_records_arrive_in_order(broker, topic):
    # acks=0: the broker answers nothing and does not wait for the device
    # before it takes the connection's next request (a background writer
    # puts the records on disk); consumers see them once written.
    want = [Rec(f"k{i}".encode(), f"v{i}".encode() * (i % 50 + 1)) for i in range(5000)]
    p = producer(broker.bootstrap, **{"acks": "0", "linger.ms": 2})
    errors = []
    for r in want:
        while True:
            try:
                p.produce(topic, value=r.value, key=r.key, partition=0,
                          on_delivery=lambda err, msg: err and errors.append(err))
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    assert p.flush(30) == 0, "acks=0 records not sent within 30 s"
    assert not errors, f"delivery errors: {errors[:5]}"
    for i, r in enumerate(want):
        r.offset = i
    assert_same(consume_exact(broker.bootstrap, topic, 0, 0, len(want)), want)


def test_consumer_small_fetch_limits_still_progress(broker, topic):
    """Records bigger than fetch.max.bytes / max.partition.fetch.bytes are still
    delivered (the first batch is always returned, KIP-74)."""
    want = [Rec(None, bytes([i]) * 200_000) for i in range(5)]
    for r, o in zip(want, produce_all(broker.bootstrap, topic, 0, want, **{"linger.ms": 0})):
        r.offset = o
    got = consume_exact(
        broker.bootstrap, topic, 0, 0, 5,
        **{"fetch.max.bytes": 1024, "message.max.bytes": 1000, "max.partition.fetch.bytes": 1024,
           "fetch.min.bytes": 1},
    )
    assert_same(got, want)


def test_offset_out_of_range_resets(broker, topic):
    want = [Rec(None, f"v{i}".encode(), offset=i) for i in range(10)]
    produce_all(broker.bootstrap, topic, 0, want)
    # Assigned far past the end: the broker answers OFFSET_OUT_OF_RANGE and the
    # consumer resets per auto.offset.reset.
    got = consume_exact(broker.bootstrap, topic, 0, 1000, 10, **{"auto.offset.reset": "earliest"})
    assert_same(got, want)


def test_offset_out_of_range_is_reported(broker, topic):
    produce_all(broker.bootstrap, topic, 0, [Rec(None, b"only")])
    c = consumer(broker.bootstrap, **{"auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic, 0, 50)])
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "no OFFSET_OUT_OF_RANGE error reported"
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is not None, f"unexpected record at {m.offset()}"
            if m.error().code() in (KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET):
                break
    finally:
        c.close()


def test_watermarks_and_offsets_for_times(broker, topic):
    ts0 = 1_700_000_000_000
    want = [Rec(None, f"v{i}".encode(), timestamp=ts0 + 1000 * i) for i in range(20)]
    produce_all(broker.bootstrap, topic, 0, want)
    c = consumer(broker.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 20)
        wrong = []
        for ts, expect in [(ts0, 0), (ts0 + 1, 1), (ts0 + 5000, 5), (ts0 + 19_000, 19), (ts0 + 19_001, -1)]:
            [tp] = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert tp.error is None, tp.error
            if tp.offset != expect:
                wrong.append(f"offsets_for_times({ts}) = {tp.offset}, expected {expect}")
        assert not wrong, wrong
    finally:
        c.close()


def test_admin_list_offsets(broker, topic):
    from confluent_kafka.admin import OffsetSpec

    ts0 = 1_700_000_000_000
    # The largest timestamp is in the middle.
    stamps = [ts0 + 10, ts0 + 30, ts0 + 90, ts0 + 20]
    produce_all(broker.bootstrap, topic, 0, [Rec(None, b"v", timestamp=t) for t in stamps])
    a = admin(broker)
    tp = TopicPartition(topic, 0)
    cases = [
        (OffsetSpec.earliest(), 0),
        (OffsetSpec.latest(), 4),
        (OffsetSpec.for_timestamp(ts0 + 25), 1),
        (OffsetSpec.max_timestamp(), 2),
    ]
    wrong = []
    for spec, expect in cases:
        res = a.list_offsets({tp: spec}, request_timeout=15)[tp].result(timeout=30)
        if res.offset != expect:
            wrong.append(f"{type(spec).__name__}: offset {res.offset}, expected {expect}")
    assert not wrong, wrong


def test_idempotent_producer(broker, topic):
    if kafka_wire.INIT_PRODUCER_ID not in broker.apis():
        pytest.skip("broker does not advertise InitProducerId")
    want = [Rec(f"k{i}".encode(), f"v{i}".encode()) for i in range(500)]
    offsets = produce_all(broker.bootstrap, topic, 0, want, **{"enable.idempotence": True})
    assert offsets == list(range(500))
    for r, o in zip(want, offsets):
        r.offset = o
    assert_same(consume_exact(broker.bootstrap, topic, 0, 0, 500), want)


def test_produce_to_unknown_partition_fails(broker, topic):
    p = producer(broker.bootstrap, **{"message.timeout.ms": 5000})
    errs = []
    p.produce(topic, b"v", partition=7, on_delivery=lambda e, m: errs.append(e))
    p.flush(15)
    assert errs and errs[0] is not None, errs
    assert errs[0].code() in (KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART), errs[0]


def test_many_small_acknowledged_batches(broker, topic):
    """One record per produce call, each acknowledged before the next is sent
    (as kafka-python and kafkajs do): every record is its own batch and its own
    flush. A consumer reads them all back, from the start and from the middle."""
    want = []
    for i in range(30):
        r = Rec(b"k", bytes([i]) * 500)
        [r.offset] = produce_all(broker.bootstrap, topic, 0, [r], timeout=30)
        want.append(r)
    assert [r.offset for r in want] == list(range(30))
    assert_same(consume_exact(broker.bootstrap, topic, 0, 0, 30, timeout=30), want)
    assert_same(consume_exact(broker.bootstrap, topic, 0, 17, 13, timeout=30), want[17:])
