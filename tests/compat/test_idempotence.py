"""Idempotent producers (enable.idempotence=true) with confluent-kafka and
kafka-python.

The broker hands out producer ids (InitProducerId) and deduplicates retried
batches by (producer id, epoch, sequence). The crash test kills the broker
with SIGKILL several times while a producer keeps sending; librdkafka retries
what was in flight, and afterwards every partition must hold every produced
record exactly once, in produce order, at the offset its acknowledgement
named."""

import signal
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaProducer

from clients import consume_exact
from conftest import create_topic

PARTITIONS = 2
CRASHES = 4
ACKS_BETWEEN_CRASHES = 1500
PROGRESS_TIMEOUT_S = 60.0


def idempotent_producer(bootstrap: str, errors: list) -> Producer:
    def on_error(err):
        # Transport errors while the broker is down are expected; a fatal
        # error (the idempotence guarantee is lost) is not.
        if err.fatal():
            errors.append(f"fatal: {err}")

    return Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "max.in.flight.requests.per.connection": 5,
        "batch.num.messages": 50,
        # Long enough to ride out every restart: nothing may time out.
        "message.timeout.ms": 120000,
        "retry.backoff.ms": 50,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "error_cb": on_error,
    })


RESTART_TIMEOUT_S = 30.0


def crash_restart(b):
    """SIGKILL, then start again on the same data dir and port. The broker
    refuses a port that sockets of the killed process still hold (orphaned
    connections in FIN_WAIT until the clients close their ends), so the
    start is retried until those are gone, within a bounded time."""
    b.stop(signal.SIGKILL)
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    while True:
        try:
            b.start()
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def crash_while_producing(b, produce_round, lock, acked, errors):
    """Calls produce_round() in a thread until done, while the broker is
    SIGKILLed and restarted CRASHES times, each after another
    ACKS_BETWEEN_CRASHES acknowledgements (counted in `acked` under `lock`);
    fails at once on an error in `errors` or when acks stop coming."""
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            produce_round()

    t = threading.Thread(target=loop)

    def wait_for_acks(n: int):
        deadline = time.monotonic() + PROGRESS_TIMEOUT_S
        while True:
            with lock:
                have = len(acked)
                errs = list(errors)
            assert not errs, errs[:5]
            if have >= n:
                return
            assert time.monotonic() < deadline, f"only {have} of {n} records acknowledged\n{b.log_tail()}"
            assert t.is_alive()
            time.sleep(0.01)

    t.start()
    try:
        for crash in range(1, CRASHES + 1):
            wait_for_acks(crash * ACKS_BETWEEN_CRASHES)
            crash_restart(b)  # SIGKILL mid-stream, then start on the same data dir
        wait_for_acks((CRASHES + 1) * ACKS_BETWEEN_CRASHES)
    finally:
        stop.set()
        t.join(timeout=30)


def check_exactly_once(b, topic_name, sent, acked_now):
    """Every produced record (partition, seq < sent[partition]) was
    acknowledged at increasing offsets, and the log holds exactly those
    records in produce order: nothing lost, nothing twice."""
    for part in range(PARTITIONS):
        n = sent[part]
        # With nothing failed, every produced record was acknowledged ...
        assert all((part, s) in acked_now for s in range(n)), f"partition {part}: unacknowledged records"
        offsets = [acked_now[(part, s)] for s in range(n)]
        # ... at increasing offsets (produce order), each once ...
        assert offsets == sorted(set(offsets)), f"partition {part}: acknowledged offsets out of order or repeated"
        # ... and the log holds exactly those records, nothing twice.
        end = end_offset(b.bootstrap, topic_name, part)
        assert end == n, f"partition {part}: {end} records in the log, {n} produced (duplicates or losses)"
        got = consume_exact(b.bootstrap, topic_name, part, 0, n)
        keys = [r.key.decode() for r in got]
        assert keys == [f"{part}:{s}" for s in range(n)], f"partition {part}: log differs from produce order"
        assert [r.offset for r in got] == offsets


def end_offset(bootstrap: str, topic: str, partition: int) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "idem-watermarks"})
    try:
        _, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        return high
    finally:
        c.close()


def test_idempotent_producer_gets_an_id_and_writes_once(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    errors = []
    p = idempotent_producer(broker.bootstrap, errors)
    offsets = {}

    def done(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            offsets[int(msg.key())] = msg.offset()

    for i in range(1000):
        p.produce(topic_name, key=str(i).encode(), value=f"v{i}".encode(), partition=0, on_delivery=done)
        p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors[:5]
    assert [offsets[i] for i in range(1000)] == list(range(1000))
    got = consume_exact(broker.bootstrap, topic_name, 0, 0, 1000)
    assert [r.key for r in got] == [str(i).encode() for i in range(1000)]


def test_sigkill_restarts_lose_and_duplicate_nothing(own_broker, topic_name):
    b = own_broker
    create_topic(b.bootstrap, topic_name, PARTITIONS)
    errors = []
    p = idempotent_producer(b.bootstrap, errors)
    lock = threading.Lock()
    acked = {}  # (partition, seq) -> offset
    sent = [0] * PARTITIONS

    def on_delivery(err, msg):
        with lock:
            if err is not None:
                errors.append(f"delivery: {err} for {msg.key()!r}")
            else:
                part, seq = msg.key().decode().split(":")
                acked[(int(part), int(seq))] = msg.offset()

    def produce_round():
        for part in range(PARTITIONS):
            seq = sent[part]
            try:
                p.produce(topic_name, key=f"{part}:{seq}".encode(),
                          value=f"value {part} {seq} ".encode() * (1 + seq % 13),
                          partition=part, on_delivery=on_delivery)
                sent[part] += 1
            except BufferError:
                pass
        p.poll(0.001)

    crash_while_producing(b, produce_round, lock, acked, errors)
    assert p.flush(120) == 0, "records still undelivered"
    with lock:
        assert not errors, errors[:5]
        acked_now = dict(acked)

    check_exactly_once(b, topic_name, sent, acked_now)


def test_kafka_python_idempotent_producer_across_sigkills(own_broker, topic_name):
    b = own_broker
    create_topic(b.bootstrap, topic_name, PARTITIONS)
    p = KafkaProducer(
        bootstrap_servers=b.bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        # kafka-python's idempotent producer insists on one request in flight.
        max_in_flight_requests_per_connection=1,
        # Long enough to ride out every restart: nothing may time out.
        delivery_timeout_ms=120000,
        request_timeout_ms=10000,
        retry_backoff_ms=50,
        reconnect_backoff_ms=50,
        reconnect_backoff_max_ms=500,
    )
    lock = threading.Lock()
    acked = {}  # (partition, seq) -> offset
    errors = []
    sent = [0] * PARTITIONS

    def on_ack(part, seq):
        def ok(md):
            with lock:
                acked[(part, seq)] = md.offset
        def failed(exc):
            with lock:
                errors.append(f"delivery: {exc!r} for {part}:{seq}")
        return ok, failed

    def produce_round():
        for part in range(PARTITIONS):
            seq = sent[part]
            ok, failed = on_ack(part, seq)
            f = p.send(topic_name, key=f"{part}:{seq}".encode(),
                       value=f"value {part} {seq} ".encode() * (1 + seq % 13), partition=part)
            f.add_callback(ok)
            f.add_errback(failed)
            sent[part] += 1

    crash_while_producing(b, produce_round, lock, acked, errors)
    p.flush(timeout=120)
    p.close(timeout=30)
    with lock:
        assert not errors, errors[:5]
        acked_now = dict(acked)
    check_exactly_once(b, topic_name, sent, acked_now)
