"""acks=1 across a broker crash (issue 13, finding 6): a producer sends with
acks=1 for a few seconds while a consumer reads the same partitions; the
broker is killed with SIGKILL mid-stream and restarted on the same data dir.

Every record whose delivery was acknowledged must still be at the offset its
acknowledgement named, and no offset the live consumer read may hold a
different record afterwards (a broker that acknowledged or served records
from memory lost them at the kill, and the producer's next records took
their offsets). Uses a broker of its own: the session broker is not killed.
"""

import signal
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from clients import Rec, consume_exact, produce_all
from conftest import create_topic

PARTITIONS = 2
# Produce for at least this long, and until these many acks and reads.
PRODUCE_S = 3.0
MIN_ACKED = 20_000
MIN_CONSUMED = 2_000
DEADLINE_S = 60.0
# Records produced after the restart: they take any offset the crash freed.
AFTER_RESTART = 3_000


def value(p: int, seq: int) -> bytes:
    return f"p{p} seq {seq} ".encode() * (1 + seq % 9)


def test_sigkill_keeps_acks1_records_and_what_consumers_read(own_broker, topic_name):
    b = own_broker
    create_topic(b.bootstrap, topic_name, PARTITIONS)
    producer = Producer({
        "bootstrap.servers": b.bootstrap,
        "acks": "1",
        "linger.ms": 1,
        "enable.idempotence": False,
        "retries": 0,
        "message.timeout.ms": 8000,
        "reconnect.backoff.max.ms": 500,
    })
    consumer = Consumer({
        "bootstrap.servers": b.bootstrap,
        "group.id": "compat-acks1-crash",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 50,
        "reconnect.backoff.max.ms": 500,
    })
    consumer.assign([TopicPartition(topic_name, p, 0) for p in range(PARTITIONS)])
    lock = threading.Lock()
    acked = {}  # (partition, offset) -> value
    consumed = {}  # (partition, offset) -> value
    failed = 0
    stop = threading.Event()

    def on_delivery(err, msg):
        nonlocal failed
        with lock:
            if err is None:
                acked[(msg.partition(), msg.offset())] = msg.value()
            else:
                failed += 1

    def produce_loop():
        seq = 0
        while not stop.is_set():
            p = seq % PARTITIONS
            try:
                producer.produce(topic_name, value=value(p, seq), partition=p, on_delivery=on_delivery)
                seq += 1
            except BufferError:
                producer.poll(0.01)
            producer.poll(0)

    def consume_loop():
        while not stop.is_set():
            msg = consumer.poll(0.1)
            if msg is None or msg.error():
                continue  # transport errors once the broker is killed
            with lock:
                consumed[(msg.partition(), msg.offset())] = msg.value()

    threads = [threading.Thread(target=produce_loop), threading.Thread(target=consume_loop)]
    for t in threads:
        t.start()
    try:
        started = time.monotonic()
        while True:
            with lock:
                n_acked, n_consumed = len(acked), len(consumed)
            elapsed = time.monotonic() - started
            if elapsed >= PRODUCE_S and n_acked >= MIN_ACKED and n_consumed >= MIN_CONSUMED:
                break
            assert elapsed < DEADLINE_S, (
                f"only {n_acked} acks and {n_consumed} reads in {DEADLINE_S}s ({failed} failed)"
            )
            assert all(t.is_alive() for t in threads)
            time.sleep(0.01)
        b.stop(signal.SIGKILL)  # mid-stream: the producer keeps sending
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    # Whatever is still in flight fails against the dead broker (no retries).
    producer.flush(30)
    consumer.close()
    with lock:
        acked_now, consumed_now = dict(acked), dict(consumed)

    b.start()
    # The producer goes on after the restart: any offset the crash freed is
    # taken by a different record.
    for p in range(PARTITIONS):
        produce_all(b.bootstrap, topic_name, p,
                    [Rec(None, f"after restart {i}".encode()) for i in range(AFTER_RESTART)])
    log = {}
    for p in range(PARTITIONS):
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "compat-acks1-check"})
        try:
            low, high = c.get_watermark_offsets(TopicPartition(topic_name, p), timeout=10)
        finally:
            c.close()
        assert low == 0
        for r in consume_exact(b.bootstrap, topic_name, p, 0, high):
            log[(p, r.offset)] = r.value

    def wrong(records):
        return sorted(k for k, v in records.items() if log.get(k) != v)

    lost = wrong(acked_now)
    changed = wrong(consumed_now)
    assert not lost and not changed, (
        f"{len(lost)} of {len(acked_now)} acknowledged records lost or replaced "
        f"(first {lost[:3]}); {len(changed)} of {len(consumed_now)} records the consumer "
        f"read now hold something else (first {changed[:3]})"
    )
