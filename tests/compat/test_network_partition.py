"""A partition leader cut off from the network while producing (issue 15,
check 2), on three `strom serve` nodes with Strom's default settings.

Each node runs in a cgroup of its own (netcut.NetCut), so nftables can drop
its traffic without touching the others'. Two cuts:

- "peers": the node is cut off from the other two nodes only. Clients still
  reach it and it still believes it leads, so an acks=1 producer that knows
  only this node gets its records acknowledged there, at the old leader
  epoch, until the node counts itself fenced: records no other replica
  will ever see (acks=1 promises no more).
- "all": the node is cut off from everyone, as a machine whose link died.

Either way the node goes silent to the controller, which fences it after
broker.session.timeout.ms and moves leadership to an in-sync replica. The
idempotent acks=all producer (confluent-kafka) keeps writing through the new
leader. On heal the node learns the new leader epoch, truncates what it alone
had, catches up and rejoins every ISR. Then every acknowledged acks=all
record is at its offset exactly once, every replica of every partition is
byte-identical (scripts/compare-replicas) over the whole log, and the
batches the cut-off node held alone before the heal (in the "peers" cut,
at least one) are in no replica.
"""

import signal

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from netcut import NetCut
from test_cluster import agreed_controller, start_all, voter_nodes, wait_registered, wait_until
from test_cluster_replication import create, metadata_v7, wait_partitions
from test_replication_failover import PARTITIONS, Writer, assert_acked_once, full_isr
from test_replication_follow import compare_replicas, replicas_match

TOPIC = "split"


@pytest.fixture
def cluster(tmp_path):
    """Three nodes, each in a NetCut of its own; every node is killed and
    every cut healed and removed on the way out, even if setup fails."""
    _, nodes = voter_nodes(tmp_path, "")
    cuts = []
    try:
        for n in nodes:
            cut = NetCut(f"n{n.node_id}")
            cut.ports = [n.port, n.controller_port]
            n.preexec = cut.enter
            cuts.append(cut)
        start_all(nodes)
        yield nodes, cuts
    finally:
        for n in nodes:
            if n.alive():
                n.stop(signal.SIGKILL)
        for cut in cuts:
            cut.close()


class Lone:
    """An acks=1 producer that knows only `node`: while that node is cut off
    from its peers, it is the only broker this producer can ask."""

    def __init__(self, node, partition: int):
        self.partition = partition
        self.acked = []
        self.producer = Producer({"bootstrap.servers": node.bootstrap, "acks": 1, "linger.ms": 1,
                                  "message.timeout.ms": 10000})
        self.sent = 0

    def report(self, err, msg):
        if err is None:
            self.acked.append(msg.value())

    def send(self, n: int):
        for _ in range(n):
            self.producer.produce(TOPIC, value=f"alone-{self.sent}".encode(), partition=self.partition,
                                  on_delivery=self.report)
            self.sent += 1
        self.producer.poll(0.05)

    def close(self):
        self.producer.flush(15)


@pytest.mark.parametrize("how", ["peers", "all"])
def test_a_cut_off_leader_is_fenced_and_truncates_what_it_alone_had(cluster, how):
    nodes, cuts = cluster
    controller = agreed_controller(nodes)
    create(nodes[0], NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=3,
                              config={"min.insync.replicas": "2"}))
    before = wait_partitions(nodes, TOPIC, PARTITIONS, full_isr, "has every replica in its ISR")
    victim = next(n for n in nodes
                  if n.node_id != controller and any(s["leader"] == n.node_id for s in before.values()))
    cut = cuts[nodes.index(victim)]
    survivors = [n for n in nodes if n is not victim]
    led = sorted(p for p, s in before.items() if s["leader"] == victim.node_id)

    writer = Writer(",".join(n.bootstrap for n in nodes), TOPIC)
    writer.thread.start()
    lone = Lone(victim, led[0]) if how == "peers" else None
    try:
        wait_until("1000 records acknowledged before the cut", lambda: writer.count() >= 1000)
        if how == "peers":
            cut.cut_from([c for c in cuts if c is not cut])
        else:
            cut.cut()
        cut_at = {p: len(writer.acked[p]) for p in led}

        def moved():
            if lone:
                lone.send(20)
            parts = metadata_v7(survivors[0], TOPIC)[1]
            return all(parts[p]["leader"] != victim.node_id and parts[p]["epoch"] > before[p]["epoch"]
                       and victim.node_id not in parts[p]["isr"] for p in led) and parts

        # Fenced after its session: its partitions move to in-sync survivors.
        after = wait_until("the cut-off node's partitions led by survivors", moved)
        wait_until("the victim's partitions acknowledged through their new leaders",
                   lambda: all(len(writer.acked[p]) >= cut_at[p] + 500 for p in led), timeout=90)
        if lone:
            lone.send(20)
            lone.close()
            assert lone.acked, "no acks=1 record acknowledged"
        # What the cut-off node holds before it hears of the new leader.
        held = compare_replicas.read_batches(victim.data_dir / f"{TOPIC}-{led[0]}")

        cut.heal()
        wait_registered(nodes, [1, 2, 3])
        wait_partitions(nodes, TOPIC, PARTITIONS, full_isr, "has the healed node back in its ISR")
    finally:
        writer.stop()
    assert writer.errors == [], writer.errors[:3]
    for p in led:
        assert after[p]["epoch"] > before[p]["epoch"], (p, before[p], after[p])

    for p, acked in writer.acked.items():
        assert_acked_once(survivors[0].bootstrap, TOPIC, p, acked)
        end = max(o for o, _ in acked) + 1
        # The healed node truncated its own tail and holds the leader's batches.
        wait_until(f"{TOPIC}-{p}: every replica identical over offsets 0..{end}",
                   lambda p=p, end=end: replicas_match(nodes, TOPIC, p, end))

    # The batches it alone had before the heal, gone from every replica now
    # (the replicas are identical). Checked on its log, not by the acks=1
    # producer's records: once the node counts itself fenced, its
    # NOT_LEADER_OR_FOLLOWER sends that producer, which knows every broker,
    # to the new leader, where its records are as good as anyone's.
    final = compare_replicas.read_batches(survivors[0].data_dir / f"{TOPIC}-{led[0]}")
    alone = [o for o, (_, b) in held.items() if final.get(o, (None, None))[1] != b]
    if lone:
        assert alone, f"{TOPIC}-{led[0]}: the cut-off leader held no batch the others did not"
