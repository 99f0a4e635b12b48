"""Three `strom serve` processes forming one cluster over the Raft controller
quorum, on 127.0.0.1 ports.

Each broker's own Metadata answer is read with a raw Metadata v0 request to
its port (kafka_wire), so "every broker sees it" means every broker, not
whichever one a client library happened to ask; confluent-kafka's AdminClient
creates topics (it sends CreateTopics to the controller Metadata names) and
reads controller ids and partition leaders.
"""

import signal
import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

import kafka_wire
from conftest import Broker, free_port

CLUSTER_TIMEOUT_S = 60.0
NODES = 3


class ClusterNode(Broker):
    """One node, broker and controller. Nodes 1 and 2 get the cluster
    settings as command-line flags, node 3 as Kafka's keys in its config file."""

    def __init__(self, base, node_id: int, voters: str, controller_port: int, config: str = ""):
        self.node_id = node_id
        self.voters = voters
        self.controller_port = controller_port
        self.use_file = node_id == 3
        if self.use_file:
            config += (
                f"node.id = {node_id}\n"
                f'process.roles = "broker,controller"\n'
                f'controller.quorum.voters = "{voters}"\n'
                f'controller.listener.names = "CONTROLLER"\n'
                f'listeners = "PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:{controller_port}"\n'
            )
        super().__init__(base / "data", base / "strom.log", shards=2, config=config)

    def extra_args(self) -> list:
        if self.use_file:
            return []
        return [
            "--node-id",
            str(self.node_id),
            "--controller-quorum-voters",
            self.voters,
            "--controller-listen",
            f"127.0.0.1:{self.controller_port}",
        ]


def raw_metadata(node: Broker, topics=()):
    """This broker's own Metadata v0 answer: (brokers, {topic: (error, partitions)})."""
    with kafka_wire.connect(node.port, 5.0) as s:
        s.sendall(kafka_wire.metadata_v0(list(topics)))
        return kafka_wire.parse_metadata_v0(kafka_wire.recv_frame(s))


def wait_until(what: str, check, timeout: float = CLUSTER_TIMEOUT_S):
    """Polls `check` until it returns a true value (returned) or the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except Exception as e:  # noqa: BLE001 - a node may be starting or gone; retried
            last = repr(e)
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")


def controller_seen_by(node: Broker) -> int:
    md = AdminClient({"bootstrap.servers": node.bootstrap}).list_topics(timeout=5)
    return md.controller_id


def voter_nodes(tmp_path, config: str, count: int = NODES):
    """(the voters string, `count` unlaunched voter nodes in tmp_path/nodeN)."""
    ports = [free_port() for _ in range(count)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(ports))
    nodes = [ClusterNode(tmp_path / f"node{i + 1}", i + 1, voters, ports[i], config=config) for i in range(count)]
    return voters, nodes


def assert_refused(node, *messages: str):
    """The node exits non-zero at start, saying one of `messages`."""
    node.launch()
    code = node.proc.wait(timeout=30)
    node.stop()
    assert code != 0
    log = node.log_path.read_text()
    assert any(m in log for m in messages), log[-2000:]


@pytest.fixture
def cluster(tmp_path):
    _, nodes = voter_nodes(tmp_path, "num.partitions = 3\n")
    # All at once: none serves before a quorum has elected a leader and
    # registered it.
    for n in nodes:
        n.launch()
    yield nodes
    for n in nodes:
        if n.alive():
            n.stop(signal.SIGKILL)


def wait_registered(nodes, expect_ids):
    """Every node's own Metadata lists exactly the brokers `expect_ids`."""
    for n in nodes:
        wait_until(
            f"node {n.node_id} to list brokers {sorted(expect_ids)}",
            lambda n=n: sorted(b[0] for b in raw_metadata(n)[0]) == sorted(expect_ids),
        )


def start_all(nodes):
    """Launches every node at once (none serves before a quorum has elected
    a leader), waits until each serves and lists them all as brokers."""
    for n in nodes:
        n.launch()
    for n in nodes:
        n.wait_ready()
    wait_registered(nodes, [n.node_id for n in nodes])


def agreed_controller(nodes) -> int:
    """The active controller once every node names the same one."""

    def check():
        seen = {controller_seen_by(n) for n in nodes}
        return seen.pop() if len(seen) == 1 and -1 not in seen else None

    return wait_until("the nodes to agree on an active controller", check)


def test_three_nodes_share_metadata_and_survive_losing_the_controller(cluster):
    nodes = cluster
    for n in nodes:
        n.wait_ready()
    wait_registered(nodes, [1, 2, 3])
    leader = agreed_controller(nodes)
    assert leader in (1, 2, 3)
    by_id = {n.node_id: n for n in nodes}
    follower = next(n for n in nodes if n.node_id != leader)

    # A 6-partition topic through the AdminClient bootstrapped at a follower.
    admin = AdminClient({"bootstrap.servers": follower.bootstrap})
    admin.create_topics([NewTopic("spread", num_partitions=6, replication_factor=1)])["spread"].result(
        timeout=30
    )
    # A topic auto-created by a Metadata request to a follower: the change is
    # proposed there and forwarded to the active controller by Raft.
    wait_until("auto-creation through a follower", lambda: "auto" in raw_metadata(follower, ["auto"])[1])

    for n in nodes:
        wait_until(
            f"node {n.node_id} to show both topics",
            lambda n=n: raw_metadata(n)[1].get("spread") == (0, list(range(6)))
            and raw_metadata(n)[1].get("auto") == (0, [0, 1, 2]),
        )
    md = admin.list_topics(topic="spread", timeout=10)
    leaders = {p.leader for p in md.topics["spread"].partitions.values()}
    assert leaders == {1, 2, 3}, f"partition leaders {leaders} do not spread over the brokers"

    # Kill the active controller: the other two elect a new one.
    killed = by_id[leader]
    killed.stop(signal.SIGKILL)
    survivors = [n for n in nodes if n is not killed]
    t0 = time.monotonic()
    new_leader = wait_until(
        "a new active controller",
        lambda: (c := controller_seen_by(survivors[0])) not in (-1, leader) and c,
    )
    print(f"failover: node {new_leader} is the active controller {time.monotonic() - t0:.2f} s after node {leader} was killed")
    assert agreed_controller(survivors) == new_leader
    for n in survivors:
        assert raw_metadata(n)[1].get("spread") == (0, list(range(6)))

    # The quorum of two still takes changes.
    admin2 = AdminClient({"bootstrap.servers": survivors[0].bootstrap})
    admin2.create_topics([NewTopic("after", num_partitions=2, replication_factor=1)])["after"].result(
        timeout=30
    )
    for n in survivors:
        wait_until(f"node {n.node_id} to show 'after'", lambda n=n: "after" in raw_metadata(n)[1])

    # The killed node comes back from its own log and catches up.
    killed.start()
    wait_until(
        f"node {killed.node_id} to catch up",
        lambda: {"spread", "auto", "after"} <= set(raw_metadata(killed)[1]),
    )
    assert raw_metadata(killed)[1]["spread"] == (0, list(range(6)))
    wait_registered(nodes, [1, 2, 3])
    assert agreed_controller(nodes) in (1, 2, 3)


def test_a_node_outside_the_voters_is_refused(tmp_path):
    node = ClusterNode(tmp_path / "n", 5, f"1@127.0.0.1:{free_port()}", free_port())
    assert_refused(node, "not in controller.quorum.voters")
