"""Failover with acks=all on three `strom serve` nodes (issue 15): the
leader tracks its followers, the ISR grows to every replica, the high
watermark is the minimum over the ISR, and acks=all waits for it. So a
SIGKILLed leader loses no acknowledged record:

- idempotent acks=all producers (confluent-kafka) keep writing through the
  new leaders;
- every acknowledged record is at its acknowledged offset, exactly once;
- a consumer reading from the survivors sees each offset once, in order;
- the restarted node catches up, rejoins every ISR, and its replicas end up
  byte-identical to the leaders'.
"""

import signal
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from test_cluster import agreed_controller, start_all, voter_nodes, wait_registered, wait_until
# `cluster`: three nodes, each a voter and a broker, all registered.
from test_cluster_replication import cluster, create, metadata_v7, wait_partitions  # noqa: F401
from test_replication import offset_for_leader_epoch
from test_replication_follow import replicas_match

PARTITIONS = 3


class Writer:
    """An idempotent acks=all producer writing `value-<i>` to partition
    i % PARTITIONS on a thread until stopped; keeps what was acknowledged.
    `config` adds or overrides producer settings (e.g. an error_cb)."""

    def __init__(self, bootstrap: str, topic: str, config: dict = None):
        self.topic = topic
        self.acked = {p: [] for p in range(PARTITIONS)}
        self.errors = []
        self.stopping = threading.Event()
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "message.timeout.ms": 120000,
            **(config or {}),
        })
        self.thread = threading.Thread(target=self.run, daemon=True)

    def count(self) -> int:
        return sum(len(v) for v in self.acked.values())

    def report(self, err, msg):
        if err is not None:
            self.errors.append(err)
        else:
            self.acked[msg.partition()].append((msg.offset(), msg.value()))

    def run(self):
        i = 0
        while not self.stopping.is_set():
            try:
                self.producer.produce(self.topic, value=f"value-{i}".encode(), partition=i % PARTITIONS,
                                      on_delivery=self.report)
                i += 1
            except BufferError:
                pass
            self.producer.poll(0.001 if i % 50 == 0 else 0)

    def stop(self):
        self.stopping.set()
        self.thread.join(30)
        assert self.producer.flush(120) == 0, "records still unacknowledged after 120 s"


def read_partition(bootstrap: str, topic: str, partition: int, end: int):
    """[(offset, value)] of offsets 0..end, as a consumer reads them."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, partition, 0)])
    got = []
    try:
        wait_until(f"{topic}-{partition}: offsets up to {end} read",
                   lambda: (got.extend((m.offset(), m.value()) for m in c.consume(1000, 1.0) if not m.error())
                            or (end == 0 or (got and got[-1][0] >= end - 1))))
    finally:
        c.close()
    return got


def assert_acked_once(bootstrap: str, topic: str, partition: int, acked):
    """Reads `partition` back up to its last acknowledged offset: each offset
    once and in order, every acknowledged (offset, value) there, no value
    twice. Returns the values read."""
    end = max(o for o, _ in acked) + 1
    read = read_partition(bootstrap, topic, partition, end)
    offsets = [o for o, _ in read]
    where = f"{topic}-{partition}"
    assert offsets == sorted(set(offsets)), f"{where}: an offset read twice or out of order"
    at = dict(read)
    lost = [(o, v) for o, v in acked if at.get(o) != v]
    assert lost == [], f"{where}: {len(lost)} acknowledged records not at their offsets: {lost[:3]}"
    values = [v for _, v in read]
    assert len(values) == len(set(values)), f"{where}: a record written twice"
    return values


def full_isr(parts, replicas=(1, 2, 3)):
    return all(sorted(s["isr"]) == sorted(replicas) for s in parts.values())


def test_acks_all_loses_nothing_when_the_leader_is_killed(cluster):
    nodes = cluster
    controller = agreed_controller(nodes)
    create(nodes[0], NewTopic("ha", num_partitions=PARTITIONS, replication_factor=3,
                              config={"min.insync.replicas": "2"}))
    # Followers fetch, catch up and join the ISR.
    before = wait_partitions(nodes, "ha", PARTITIONS, full_isr, "has every replica in its ISR")
    victim = next(n for n in nodes
                  if n.node_id != controller and any(s["leader"] == n.node_id for s in before.values()))
    survivors = [n for n in nodes if n is not victim]
    led = sorted(p for p, s in before.items() if s["leader"] == victim.node_id)

    writer = Writer(",".join(n.bootstrap for n in nodes), "ha")
    writer.thread.start()
    wait_until("2000 records acknowledged before the kill", lambda: writer.count() >= 2000)
    victim.stop(signal.SIGKILL)
    killed_at = writer.count()
    # Writes go on through the new leaders of the victim's partitions.
    wait_until("the victim's partitions acknowledged again after the kill",
               lambda: all(len(writer.acked[p]) > 0 for p in led) and writer.count() >= killed_at + 3000,
               timeout=90)
    after = wait_partitions(survivors, "ha", PARTITIONS,
                            lambda ps: all(s["leader"] in [n.node_id for n in survivors] for s in ps.values()),
                            "led by survivors")
    for p in led:
        assert after[p]["epoch"] > before[p]["epoch"], (p, before[p], after[p])
        assert victim.node_id not in after[p]["isr"], after[p]
    writer.stop()
    assert writer.errors == [], writer.errors[:3]

    for p, acked in writer.acked.items():
        assert_acked_once(survivors[0].bootstrap, "ha", p, acked)

    # Back after a restart: it truncates, catches up and rejoins every ISR,
    # and its replicas are identical to the leaders'.
    victim.start()
    wait_registered(nodes, [1, 2, 3])
    wait_partitions(nodes, "ha", PARTITIONS, full_isr, "has the restarted node back in its ISR")
    for p, acked in writer.acked.items():
        end = max(o for o, _ in acked) + 1
        wait_until(f"ha-{p}: every replica identical over offsets 0..{end}",
                   lambda p=p, end=end: replicas_match(nodes, "ha", p, end))


def test_acks_all_needs_min_insync_replicas(cluster):
    """min.insync.replicas=3 on three replicas: with a follower gone (killed,
    fenced, out of the ISR), acks=all is refused with NOT_ENOUGH_REPLICAS
    (retriable: the producer retries), acks=1 is still taken; once the
    follower is back in the ISR, the waiting acks=all record is
    acknowledged."""
    nodes = cluster
    controller = agreed_controller(nodes)
    leader_node = next(n for n in nodes if n.node_id == controller)
    others = [n for n in nodes if n is not leader_node]
    order = [leader_node.node_id] + [n.node_id for n in others]
    create(nodes[0], NewTopic("misr3", num_partitions=1, replica_assignment=[order],
                              config={"min.insync.replicas": "3"}))
    wait_partitions(nodes, "misr3", 1, full_isr, "has every replica in its ISR")
    gone = others[0]
    gone.stop(signal.SIGKILL)
    wait_partitions([leader_node], "misr3", 1, lambda ps: gone.node_id not in ps[0]["isr"],
                    f"has node {gone.node_id} out of its ISR")

    one = Producer({"bootstrap.servers": leader_node.bootstrap, "acks": 1})
    got = []
    one.produce("misr3", value=b"acks-1", partition=0, on_delivery=lambda e, m: got.append((e, m.offset())))
    assert one.flush(30) == 0 and got == [(None, 0)], got

    errors = []
    acked = []
    short = Producer({"bootstrap.servers": leader_node.bootstrap, "acks": "all",
                      "enable.idempotence": True, "message.timeout.ms": 120000})
    short.produce("misr3", value=b"acks-all", partition=0,
                  on_delivery=lambda e, m: (errors if e else acked).append(e or m.offset()))
    # Retried (NOT_ENOUGH_REPLICAS is retriable), not acknowledged.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        short.poll(0.1)
    assert acked == [] and errors == [], (acked, errors)

    # The follower back: it catches up, rejoins, and the record is taken.
    gone.start()
    wait_partitions([leader_node], "misr3", 1, full_isr, "has every replica in its ISR again")
    assert short.flush(60) == 0
    assert errors == [] and acked == [1], (acked, errors)


LONG_SESSION_MS = 30000
# Well under the session: only the refused-connection path fences this soon.
FENCED_WITHIN_S = 10.0


@pytest.fixture
def long_session(tmp_path):
    _, nodes = voter_nodes(tmp_path, f"broker.session.timeout.ms = {LONG_SESSION_MS}\n")
    start_all(nodes)
    yield nodes
    for n in nodes:
        if n.alive():
            n.stop(signal.SIGKILL)


def test_a_killed_node_is_fenced_before_its_session_ends(long_session):
    """A SIGKILLed node's controller address refuses connections, so the
    active controller fences its broker at once rather than after
    broker.session.timeout.ms (30 s here), and its partitions move to an
    in-sync follower."""
    nodes = long_session
    controller = agreed_controller(nodes)
    victim = next(n for n in nodes if n.node_id != controller)
    survivors = [n for n in nodes if n is not victim]
    order = [victim.node_id] + [n.node_id for n in survivors]
    create(nodes[0], NewTopic("fast", num_partitions=1, replica_assignment=[order]))
    wait_partitions(nodes, "fast", 1, full_isr, "has every replica in its ISR")
    victim.stop(signal.SIGKILL)
    for n in survivors:
        wait_until(f"node {n.node_id}: fast-0 led by a survivor within {FENCED_WITHIN_S} s",
                   lambda n=n: metadata_v7(n, "fast")[1][0]["leader"] in [s.node_id for s in survivors],
                   timeout=FENCED_WITHIN_S)


def test_a_new_partition_starts_with_every_replica_in_sync(long_session):
    """Kafka creates a partition with every live replica in its ISR, so
    acks=all waits for the followers from the first record. Strom's ISR
    began as the leader alone until each follower fetched and was added:
    the first records were acknowledged without the followers, and under a
    steady load (three nodes, retention.bytes 256 MiB, max rate) the
    followers never caught up to join, so the topic ran at RF=1.

    One follower is frozen (SIGSTOP: still registered for the 30 s session,
    and unable to fetch) while the topic is created."""
    nodes = long_session
    controller = agreed_controller(nodes)
    others = [n for n in nodes if n.node_id != controller]
    # Led by a node that is not the controller; the frozen follower is the
    # third, resumed before the leader is killed (a quorum needs two).
    leader_node, frozen = others
    order = [leader_node.node_id, controller, frozen.node_id]
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        create(nodes[0], NewTopic("fresh", num_partitions=1, replica_assignment=[order]))
        first = wait_until("the leader serves fresh-0",
                           lambda: (ps := metadata_v7(leader_node, "fresh")[1]) and ps[0]["leader"] == order[0] and ps)
        assert sorted(first[0]["isr"]) == [1, 2, 3], f"the first ISR the leader shows: {first[0]}"
        # acks=all waits for the frozen follower, which is in the ISR.
        acked = []
        p = Producer({"bootstrap.servers": leader_node.bootstrap, "acks": "all", "enable.idempotence": True,
                      "message.timeout.ms": 60000})
        p.produce("fresh", value=b"first", partition=0, on_delivery=lambda e, m: acked.append((e, m.offset())))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            p.poll(0.1)
        assert acked == [], f"acknowledged while an in-sync follower could not fetch: {acked}"
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    assert p.flush(30) == 0 and acked == [(None, 0)], acked
    # On every replica: with its leader killed, a survivor leads and serves it.
    leader_node.stop(signal.SIGKILL)
    survivors = [n for n in nodes if n is not leader_node]
    wait_partitions(survivors, "fresh", 1, lambda ps: ps[0]["leader"] in order[1:], "led by a survivor")
    assert read_partition(survivors[0].bootstrap, "fresh", 0, 1) == [(0, b"first")]


def test_a_restarted_leader_tells_consumers_where_an_epoch_ends_not_its_high_watermark(long_session):
    """KIP-320: a consumer that read offsets 0..49 at leader epoch E asks
    the leader, after a leader change, where E ends (OffsetForLeaderEpoch,
    replica id -1); an answer below its position is a truncation to it, and
    librdkafka reads again from the answer. A leader's high watermark can
    lag what consumers read before: here both nodes holding the partition's
    leader and one follower are SIGKILLed and restarted, and the third
    replica is frozen (SIGSTOP: no refused connection, so it stays in the
    ISR for the 30 s session), so the restarted leader learns nothing
    committed and its high watermark stays at the log start. The end of E
    is still offset 50, as Kafka answers from the log (found by
    scripts/fault-run: a consumer re-read offsets after a failover)."""
    nodes = long_session
    create(nodes[0], NewTopic("kip320", num_partitions=1, replication_factor=3))
    parts = wait_partitions(nodes, "kip320", 1, full_isr, "has every replica in its ISR")
    p = Producer({"bootstrap.servers": nodes[0].bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(50):
        p.produce("kip320", value=f"r{i}".encode(), partition=0)
    assert p.flush(60) == 0
    got = read_partition(nodes[0].bootstrap, "kip320", 0, 50)
    assert [o for o, _ in got] == list(range(50))
    epoch = metadata_v7(nodes[0], "kip320")[1][0]["epoch"]
    leader = parts[0]["leader"]
    frozen = next(n for n in nodes if n.node_id != leader)
    restarted = [n for n in nodes if n is not frozen]

    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        for n in restarted:
            n.stop(signal.SIGKILL)
        for n in restarted:
            n.launch()
        for n in restarted:
            n.wait_ready()
        answers = []
        # Whichever restarted node leads answers; for 3 s, well inside the
        # frozen node's session.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline or not answers:
            assert time.monotonic() < deadline + 30, "no restarted node answered for the partition"
            for n in restarted:
                try:
                    err, found, end = offset_for_leader_epoch(n, "kip320", 0, epoch)
                except OSError:
                    continue
                if err == 0:
                    answers.append((n.node_id, found, end))
            time.sleep(0.05)
        assert all(end == 50 and found == epoch for _, found, end in answers), answers[:10]
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
