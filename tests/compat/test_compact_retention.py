"""Compact-only topics are never deleted by time or size retention (issue
13, finding 7). Connect, Streams and schema registries keep their state in
compacted topics; before the fix `cleanup.policy=compact` was stored but time
retention deleted such a topic's segments anyway.

Two topics with the same tiny `segment.ms` and `retention.ms` take the same
records: the `delete` one is the control. Once its log start has moved (its
old segment rolled and was deleted), the `compact` one must still start at
offset 0 and hold every record.
"""

import time

from clients import Rec, consume_exact, consumer, produce_all
from conftest import create_topic

RECORDS = 20


def log_start(bootstrap, topic):
    c = consumer(bootstrap)
    try:
        from confluent_kafka import TopicPartition

        low, _high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return low
    finally:
        c.close()


def test_compact_topic_outlives_retention_ms(own_broker, topic_name):
    configs = {"segment.ms": "100", "retention.ms": "200"}
    compact, control = f"{topic_name}-compact", f"{topic_name}-delete"
    create_topic(own_broker.bootstrap, compact, 1, {**configs, "cleanup.policy": "compact"})
    create_topic(own_broker.bootstrap, control, 1, {**configs, "cleanup.policy": "delete"})
    recs = [Rec(f"k{i}".encode(), f"v{i}".encode()) for i in range(RECORDS)]
    produce_all(own_broker.bootstrap, compact, 0, recs)
    produce_all(own_broker.bootstrap, control, 0, recs)
    # The next append lands in a new segment once segment.ms has passed:
    # one more record each, after the control's first segment is old enough.
    deadline = time.monotonic() + 60
    while log_start(own_broker.bootstrap, control) == 0:
        assert time.monotonic() < deadline, "retention never deleted the control topic's segment"
        produce_all(own_broker.bootstrap, compact, 0, [Rec(b"late", b"x")])
        produce_all(own_broker.bootstrap, control, 0, [Rec(b"late", b"x")])
        time.sleep(0.2)  # paces the appends; the loop's exit is the condition above
    assert log_start(own_broker.bootstrap, compact) == 0, "the compact topic lost segments to retention.ms"
    got = consume_exact(own_broker.bootstrap, compact, 0, 0, RECORDS)
    assert [(r.key, r.value) for r in got] == [(r.key, r.value) for r in recs]
