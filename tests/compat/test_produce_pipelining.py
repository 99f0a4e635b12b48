"""A pipelining producer's records land in the order it sent them.

The broker gives a connection's next produce request its offsets as soon
as the previous request's records have theirs, while the previous one
still waits for its device write (acks=1) or fdatasync (acks=all). That
must not reorder anything: librdkafka here keeps up to 5 requests in
flight on its one connection, with small batches to partitions of both
shards, and every partition must hold its records in send order, at
contiguous offsets, with the offsets the producer was told.
"""

import time

import pytest

from clients import consumer, producer
from confluent_kafka import TopicPartition
from conftest import create_topic

PARTITIONS = 4
PER_PARTITION = 1500


@pytest.mark.parametrize("acks", ["1", "all"])
def test_pipelined_requests_keep_their_order(broker, topic_name, acks):
    create_topic(broker.bootstrap, topic_name, partitions=PARTITIONS)
    p = producer(
        broker.bootstrap,
        acks=acks,
        **{
            "linger.ms": 0,
            "batch.num.messages": 7,
            "max.in.flight.requests.per.connection": 5,
            # A retry could reorder without idempotence; none is expected.
            "retries": 0,
        },
    )
    told = {i: [] for i in range(PARTITIONS)}
    errors = []

    def done(err, msg):
        if err is not None:
            errors.append(err)
        else:
            told[msg.partition()].append((int(msg.value().split(b"-")[1]), msg.offset()))

    for n in range(PER_PARTITION):
        for part in range(PARTITIONS):
            while True:
                try:
                    p.produce(topic_name, value=b"%d-%d" % (part, n), partition=part, on_delivery=done)
                    break
                except BufferError:
                    p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0, "records not delivered"
    assert not errors, errors[:5]

    c = consumer(broker.bootstrap, **{"auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic_name, i, 0) for i in range(PARTITIONS)])
    got = {i: [] for i in range(PARTITIONS)}
    deadline = time.monotonic() + 60
    while sum(map(len, got.values())) < PARTITIONS * PER_PARTITION and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        assert not msg.error(), msg.error()
        got[msg.partition()].append((int(msg.value().split(b"-")[1]), msg.offset()))
    c.close()
    for part in range(PARTITIONS):
        seqs = [s for s, _ in got[part]]
        offsets = [o for _, o in got[part]]
        assert seqs == list(range(PER_PARTITION)), f"partition {part} out of order: {seqs[:20]}"
        assert offsets == list(range(PER_PARTITION)), f"partition {part} offsets not contiguous"
        # What the producer was told is where the records are.
        assert sorted(told[part]) == got[part], f"partition {part}: acknowledged offsets differ"
