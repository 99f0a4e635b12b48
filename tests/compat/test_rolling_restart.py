"""A rolling restart of all three nodes (issue 15, check 3) under an
idempotent acks=all producer and a group consumer: no error reaches the
application, and nothing is lost or duplicated.

Each node in turn (1, 2, 3, so the active controller and the coordinators
of `__consumer_offsets` partitions are among them) is stopped with SIGTERM
(a controlled shutdown, exit status 0), started again, and the roll waits
until it is registered and back in the ISR of every partition (the topic's
and `__consumer_offsets`') and both clients have made progress before
touching the next node.

What "reaches the application" means here:
- every delivery report error, every `msg.error()` from the consumer's
  poll (partition EOF events are off), every exception a client call
  raises (produce, consume, commit, flush), every per-partition error of a
  commit, and every error_cb call that is fatal or not a transport event;
- not error_cb's `_TRANSPORT`: librdkafka reports there that a connection
  to a broker closed or was refused, which is what stopping a broker does
  to its connections; the client reconnects and retries by itself and the
  application has nothing to do. They are counted and printed, not failed
  on. `_ALL_BROKERS_DOWN` does fail: one broker at a time is down and the
  clients know all three.

How the consumer commits: synchronously after each batch that consume()
returned, before the next consume() call, which is where librdkafka runs
rebalance callbacks. So when a rebalance or a coordinator move revokes
partitions, everything read from them is already committed, and their next
owner (the same consumer, rejoining) resumes exactly after it: nothing is
re-delivered and nothing skipped. on_revoke commits what is still pending
all the same (only something when a commit failed, which is an error
already) and forgets it, so a failed commit shows as a duplicate too.
"""

import signal
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

from test_cluster import agreed_controller, start_all, voter_nodes, wait_registered, wait_until
from test_cluster_replication import create, wait_partitions
from test_replication_failover import PARTITIONS, Writer, full_isr, read_partition
from test_replication_follow import replicas_match

TOPIC = "rolled"
GROUP = "rolling"
OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_PARTITIONS = 50
RECORDS_PER_S = 300
# Progress each client makes after a node is back, before the next stop.
PROGRESS_RECORDS = 300
ROLL_TIMEOUT_S = 30.0
CONFIG = "group.initial.rebalance.delay.ms = 0\n"
# error_cb codes that are a connection closing or refused (see the module doc).
TRANSIENT = {KafkaError._TRANSPORT}


class Errors:
    """What reached the application, and the transport events that did not."""

    def __init__(self):
        self.seen = []
        self.transient = []

    def error_cb(self, who: str):
        def cb(err):
            if err.code() in TRANSIENT and not err.fatal():
                self.transient.append((who, err))
            else:
                self.seen.append((who, "error_cb", err))

        return cb


class PacedWriter(Writer):
    """test_replication_failover's Writer at RECORDS_PER_S, recording an
    exception from produce() as an application error."""

    def __init__(self, bootstrap: str, errors: Errors):
        super().__init__(bootstrap, TOPIC, config={"error_cb": errors.error_cb("producer")})
        self.app_errors = errors

    def run(self):
        i = 0
        next_at = time.monotonic()
        while not self.stopping.is_set():
            try:
                self.producer.produce(self.topic, value=f"value-{i}".encode(), partition=i % PARTITIONS,
                                      on_delivery=self.report)
                i += 1
            except BufferError:
                self.producer.poll(0.01)
                continue
            except KafkaException as e:
                self.app_errors.seen.append(("producer", "produce", e.args[0]))
            # Paced, but never more than a second behind after a stall.
            next_at = max(next_at + 1.0 / RECORDS_PER_S, time.monotonic() - 1.0)
            while (wait := next_at - time.monotonic()) > 0:
                self.producer.poll(wait)
            self.producer.poll(0)


class GroupReader:
    """One confluent-kafka group member (subscribe, no auto-commit) reading
    on a thread; keeps every (offset, value) it was given per partition."""

    def __init__(self, bootstrap: str, errors: Errors):
        self.errors = errors
        self.seen = {p: [] for p in range(PARTITIONS)}
        self.pending = {}  # partition -> next offset, read but not committed
        self.rebalances = []
        self.commits = 0
        self.stopping = threading.Event()
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": GROUP,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "error_cb": errors.error_cb("consumer"),
        })
        self.consumer.subscribe([TOPIC], on_assign=self.on_assign, on_revoke=self.on_revoke,
                                on_lost=self.on_lost)
        self.thread = threading.Thread(target=self.run, daemon=True)

    def count(self) -> int:
        return sum(len(v) for v in self.seen.values())

    def on_assign(self, consumer, partitions):
        self.rebalances.append(("assign", sorted(tp.partition for tp in partitions)))

    def on_revoke(self, consumer, partitions):
        self.rebalances.append(("revoke", sorted(tp.partition for tp in partitions)))
        self.commit({tp.partition for tp in partitions})
        for tp in partitions:
            self.pending.pop(tp.partition, None)

    def on_lost(self, consumer, partitions):
        # The group generation is gone: nothing can be committed for them.
        self.rebalances.append(("lost", sorted(tp.partition for tp in partitions)))
        for tp in partitions:
            self.pending.pop(tp.partition, None)

    def commit(self, partitions=None):
        todo = {p: o for p, o in self.pending.items() if partitions is None or p in partitions}
        if not todo:
            return
        offsets = [TopicPartition(TOPIC, p, o) for p, o in sorted(todo.items())]
        try:
            done = self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as e:
            self.errors.seen.append(("consumer", "commit", e.args[0]))
            return
        failed = [tp for tp in done if tp.error is not None]
        if failed:
            self.errors.seen.append(("consumer", "commit", failed))
            return
        self.commits += 1
        for p, o in todo.items():
            if self.pending.get(p) == o:
                del self.pending[p]

    def run(self):
        while not self.stopping.is_set():
            try:
                messages = self.consumer.consume(500, 0.2)
            except KafkaException as e:
                self.errors.seen.append(("consumer", "consume", e.args[0]))
                continue
            for m in messages:
                if m.error() is not None:
                    self.errors.seen.append(("consumer", "message", m.error()))
                    continue
                self.seen[m.partition()].append((m.offset(), m.value()))
                self.pending[m.partition()] = m.offset() + 1
            self.commit()



def jumps(offsets):
    """(offset, next offset read) wherever the next is not offset + 1."""
    return [(a, b) for a, b in zip(offsets, offsets[1:]) if b != a + 1]


@pytest.fixture
def nodes(tmp_path):
    """Three voter nodes, all registered; every one is killed at teardown,
    also when starting them failed halfway."""
    _, nodes = voter_nodes(tmp_path, CONFIG)
    try:
        start_all(nodes)
        yield nodes
    finally:
        for n in nodes:
            if n.alive():
                n.stop(signal.SIGKILL)


def all_in_sync(nodes):
    """Every node shows every replica in the ISR of every partition of the
    topic and of `__consumer_offsets`."""
    wait_partitions(nodes, TOPIC, PARTITIONS, full_isr, "has every replica in its ISR")
    wait_partitions(nodes, OFFSETS_TOPIC, OFFSETS_PARTITIONS, full_isr, "has every replica in its ISR")


def test_a_rolling_restart_loses_nothing_and_shows_no_error(nodes):
    by_id = {n.node_id: n for n in nodes}
    bootstrap = ",".join(n.bootstrap for n in nodes)
    create(nodes[0], NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=3,
                              config={"min.insync.replicas": "2"}))
    wait_partitions(nodes, TOPIC, PARTITIONS, full_isr, "has every replica in its ISR")

    errors = Errors()
    writer = PacedWriter(bootstrap, errors)
    reader = GroupReader(bootstrap, errors)
    try:
        writer.thread.start()
        reader.thread.start()
        wait_until("the consumer reading", lambda: reader.count() >= PROGRESS_RECORDS)
        # Its FindCoordinator created __consumer_offsets; its followers catch up.
        all_in_sync(nodes)

        for node_id in (1, 2, 3):
            node = by_id[node_id]
            controller = agreed_controller(nodes)
            t0 = time.monotonic()
            code = node.stop(signal.SIGTERM)
            assert code == 0, f"node {node_id} exited {code} on SIGTERM\n{node.log_tail()}"
            stopped_s = time.monotonic() - t0
            node.start()
            wait_registered(nodes, [1, 2, 3])
            all_in_sync(nodes)
            back_s = time.monotonic() - t0
            acked, read = writer.count(), reader.count()
            wait_until(f"both clients progressing after node {node_id}'s restart",
                       lambda: writer.count() >= acked + PROGRESS_RECORDS
                       and reader.count() >= read + PROGRESS_RECORDS,
                       timeout=ROLL_TIMEOUT_S)
            print(f"node {node_id}{' (active controller)' if node_id == controller else ''}: stopped in "
                  f"{stopped_s:.2f} s, back in every ISR {back_s:.2f} s after SIGTERM; "
                  f"{writer.count()} acknowledged, {reader.count()} consumed, errors {len(errors.seen)}")

        writer.stop()
        ends = {p: len(acked) for p, acked in writer.acked.items()}
        wait_until("the consumer caught up with every acknowledged record",
                   lambda: all(reader.seen[p] and reader.seen[p][-1][0] >= end - 1 for p, end in ends.items()),
                   timeout=ROLL_TIMEOUT_S)
    finally:
        writer.stopping.set()
        reader.stopping.set()
        writer.thread.join(30)
        reader.thread.join(30)
        reader.consumer.close()
    print(f"rebalances {reader.rebalances}; {reader.commits} commits; "
          f"transport events {len(errors.transient)}: {[str(e) for _, e in errors.transient[:5]]}")

    assert errors.seen == [], f"{len(errors.seen)} errors reached the application: {errors.seen[:5]}"
    assert writer.errors == [], writer.errors[:3]
    for p, acked in writer.acked.items():
        end = ends[p]
        # Acknowledged exactly once at its offset: the log is offsets 0..end
        # holding exactly the acknowledged values.
        assert sorted(o for o, _ in acked) == list(range(end)), f"{TOPIC}-{p}: acknowledged offsets not 0..{end}"
        log = read_partition(bootstrap, TOPIC, p, end)
        assert [o for o, _ in log] == list(range(end)), f"{TOPIC}-{p}: log offsets are not 0..{end}"
        assert dict(log) == dict(acked), f"{TOPIC}-{p}: the log differs from what was acknowledged"
        # The group consumer was given each record once, in order.
        got = reader.seen[p]
        offsets = [o for o, _ in got]
        dups = len(offsets) - len(set(offsets))
        assert offsets == list(range(end)), (
            f"{TOPIC}-{p}: the consumer read {len(offsets)} of {end} records, {dups} twice; "
            f"jumps (from, to) {jumps(offsets)[:5]}")
        assert dict(got) == dict(acked)
    for p, end in ends.items():
        wait_until(f"{TOPIC}-{p}: every replica identical over offsets 0..{end}",
                   lambda p=p, end=end: replicas_match(nodes, TOPIC, p, end))
