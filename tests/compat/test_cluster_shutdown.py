"""Controlled shutdown on three `strom serve` nodes (issue 15): on SIGTERM
a broker asks the active controller to fence it, the controller moves the
leadership of its partitions to another usable ISR member in the same
batch (here: topics with `unclean.leader.election.enable=true`, since no
follower joins an ISR yet), a partition it alone holds shows leader -1,
and the broker exits cleanly once its own image shows it fenced.

The session timeout is long (30 s) and the survivors' answers are awaited
for far less, so what is checked is the controlled shutdown, not the
fencing of a silent broker. Each survivor's own answer is read with a raw
Metadata v7 request.
"""

import signal
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from conftest import Broker
from test_cluster import agreed_controller, start_all, voter_nodes, wait_registered
from test_cluster_replication import create, metadata_v7, wait_partitions

SESSION_TIMEOUT_MS = 30000
# Far below the session: only a controlled shutdown moves leadership this soon.
MOVED_WITHIN_S = 8.0
EXIT_WITHIN_S = 10.0


@pytest.fixture(params=["topic", "broker"])
def cluster(request, tmp_path):
    """Three nodes; with the "broker" param every node's static config has
    `unclean.leader.election.enable = true` (the broker-level default the
    controller uses for topics without their own setting)."""
    config = f"broker.session.timeout.ms = {SESSION_TIMEOUT_MS}\n"
    if request.param == "broker":
        config += "unclean.leader.election.enable = true\n"
    _, nodes = voter_nodes(tmp_path, config)
    start_all(nodes)
    nodes[0].unclean_from = request.param
    yield nodes
    for n in nodes:
        if n.alive():
            n.stop(signal.SIGKILL)


def wait_soon(nodes, topic, count, check, what):
    """Every node's Metadata v7 for `topic` passes `check` within MOVED_WITHIN_S."""
    deadline = time.monotonic() + MOVED_WITHIN_S
    for n in nodes:
        while True:
            got = metadata_v7(n, topic)[1]
            if len(got) == count and check(got):
                break
            assert time.monotonic() < deadline, f"node {n.node_id}: {topic} {what}: {got}"
            time.sleep(0.05)
    return metadata_v7(nodes[0], topic)[1]


def test_sigterm_moves_leadership_and_fences_at_once(cluster):
    nodes = cluster
    controller = agreed_controller(nodes)
    # Unclean election moves the RF=3 partitions: no follower is in an ISR
    # yet. It is on by the topic's config, or by the brokers' default.
    on_topic = {"unclean.leader.election.enable": "true"} if nodes[0].unclean_from == "topic" else {}
    create(nodes[0], NewTopic("moving", num_partitions=6, replication_factor=3, config=on_topic))
    create(nodes[0], NewTopic("solo", num_partitions=6, replication_factor=1,
                              config={"unclean.leader.election.enable": "false"}))
    before = wait_partitions(nodes, "moving", 6, lambda p: True, "exists")
    solo = wait_partitions(nodes, "solo", 6, lambda p: True, "exists")
    victim = next(n for n in nodes if n.node_id != controller)
    survivors = [n for n in nodes if n is not victim]
    led = {p for p, s in before.items() if s["leader"] == victim.node_id}
    led_solo = {p for p, s in solo.items() if s["leader"] == victim.node_id}
    assert led and led_solo, (before, solo)

    t0 = time.monotonic()
    victim.proc.send_signal(signal.SIGTERM)
    code = victim.proc.wait(timeout=EXIT_WITHIN_S)
    exited_s = time.monotonic() - t0
    assert code == 0, victim.log_tail()
    log = victim.log_path.read_text(errors="replace")
    assert "controlled shutdown: fenced, leadership moved" in log, victim.log_tail()
    assert "stopped cleanly" in log, victim.log_tail()

    def moved(parts):
        return all(
            (s["leader"] not in (victim.node_id, -1) and victim.node_id not in s["isr"]
             and s["epoch"] > before[p]["epoch"]) if p in led
            else (s["leader"] == before[p]["leader"] and s["epoch"] == before[p]["epoch"])
            for p, s in parts.items()
        )

    after = wait_soon(survivors, "moving", 6, moved, "led by the survivors")
    assert all(s["offline"] == [victim.node_id] for s in after.values()), after

    def leaderless(parts):
        return all(s["leader"] == -1 and s["isr"] == [victim.node_id] for p, s in parts.items() if p in led_solo)

    wait_soon(survivors, "solo", 6, leaderless, "leaderless where the victim was the only replica")
    print(f"controlled shutdown (unclean election by the {nodes[0].unclean_from} config): node {victim.node_id} exited {exited_s:.2f} s after SIGTERM "
          f"(session {SESSION_TIMEOUT_MS} ms)")

    # Producing to every moved partition works through the new leaders.
    producer = Producer({"bootstrap.servers": survivors[0].bootstrap, "acks": "all"})
    errors = []
    for p in led:
        producer.produce("moving", value=b"after", partition=p,
                         on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert producer.flush(30) == 0
    assert errors == []

    # Back after a restart it is unfenced, and leads its single-replica partitions again.
    victim.start()
    wait_registered(nodes, [1, 2, 3])
    wait_partitions(nodes, "solo", 6, lambda ps: all(s["leader"] == victim.node_id for p, s in ps.items()
                                                     if p in led_solo), "led by the restarted node")


def test_a_single_node_stops_as_before(tmp_path):
    """No cluster: SIGTERM stops at once, with no controller to ask."""
    b = Broker(tmp_path / "data", tmp_path / "strom.log")
    b.start()
    assert b.stop(signal.SIGTERM) == 0
    log = b.log_path.read_text(errors="replace")
    assert "stopped cleanly" in log and "controlled shutdown" not in log
