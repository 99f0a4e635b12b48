"""`process.roles=broker` nodes (issue 14): a node that is a broker only
joins a quorum of three voters as a Raft learner. It receives the metadata
log from the active controller, registers, heartbeats and is unfenced,
leads partitions and serves them to real clients, and never votes nor
becomes the active controller, also after the active controller is killed.
"""

import signal
import time

import pytest
from confluent_kafka.admin import AdminClient

from clients import Rec, produce_all
from conftest import free_port
from test_cluster import start_all, ClusterNode, agreed_controller, assert_refused, raw_metadata, voter_nodes, wait_registered, wait_until
from test_cluster_serving import CONFIG, create_topic, leaders, list_offsets_error, produce_keyed, read_all, wait_leaders

BROKER_ONLY_ID = 4


class BrokerOnlyNode(ClusterNode):
    """A node with `process.roles = "broker"`, outside the voters: its
    settings in the config file, as a Kafka broker's would be, plus the
    controller listener where it receives the metadata log."""

    def __init__(self, base, node_id: int, voters: str, controller_port: int, config: str = ""):
        config += (
            f"node.id = {node_id}\n"
            f'process.roles = "broker"\n'
            f'controller.quorum.voters = "{voters}"\n'
            f'listeners = "PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:{controller_port}"\n'
        )
        super().__init__(base, node_id, voters, controller_port, config=config)
        self.use_file = True


@pytest.fixture
def cluster(tmp_path):
    voters, nodes = voter_nodes(tmp_path, CONFIG)
    nodes.append(BrokerOnlyNode(tmp_path / "node4", BROKER_ONLY_ID, voters, free_port(), config=CONFIG))
    start_all(nodes)
    yield nodes
    for n in nodes:
        if n.alive():
            n.stop(signal.SIGKILL)


def described(node):
    admin = AdminClient({"bootstrap.servers": node.bootstrap})  # kept alive until the answer
    d = admin.describe_cluster().result(timeout=10)
    return sorted(b.id for b in d.nodes), d.controller.id if d.controller is not None else -1


def test_a_broker_only_node_leads_partitions_and_never_controls(cluster):
    nodes = cluster
    learner = nodes[-1]
    voters = nodes[:-1]
    controller = agreed_controller(nodes)
    assert controller in (1, 2, 3)
    for n in nodes:
        ids, ctl = described(n)
        assert ids == [1, 2, 3, BROKER_ONLY_ID]
        assert ctl == controller

    # Topics created through the broker-only node spread over all four
    # brokers, and it serves its own partitions to real clients.
    create_topic(learner, "roles8", 8)
    lead = wait_leaders(nodes, "roles8", 8, lambda l: set(l.values()) == {1, 2, 3, BROKER_ONLY_ID})
    own = [p for p, l in lead.items() if l == BROKER_ONLY_ID]
    for p in own:
        assert list_offsets_error(learner, "roles8", p) == 0
        assert list_offsets_error(voters[0], "roles8", p) != 0
    acked = produce_keyed(voters[0].bootstrap, "roles8", 8, 10, "before")
    assert read_all(learner.bootstrap, "roles8", 8, len(acked)) == acked

    # Kill the active controller: the voters elect another one, the
    # broker-only node follows it (it keeps its heartbeats going, so it is
    # not fenced) and keeps serving its partitions.
    by_id = {n.node_id: n for n in nodes}
    by_id[controller].stop(signal.SIGKILL)
    survivors = [n for n in nodes if n.node_id != controller]
    t0 = time.monotonic()
    new_controller = wait_until(
        "the survivors to agree on a new active controller",
        lambda: (c := agreed_controller(survivors)) != controller and c,
    )
    print(f"failover with a learner: node {new_controller} is the active controller "
          f"{time.monotonic() - t0:.2f} s after node {controller} was killed")
    assert new_controller in (1, 2, 3) and new_controller != controller
    alive_ids = sorted(n.node_id for n in survivors)
    wait_until("the killed controller to be fenced", lambda: described(learner)[0] == alive_ids)
    # The broker-only node applies what the new controller commits: a topic
    # created through a voter shows on it, and it still leads its partitions.
    create_topic(survivors[0], "after-failover", 3)
    wait_until("the broker-only node to see the new topic", lambda: "after-failover" in raw_metadata(learner)[1])
    assert {p for p, l in leaders(learner, "roles8").items() if l == BROKER_ONLY_ID} == set(own)
    # Its partitions take more records (the killed node's have no leader,
    # RF=1) and read back whole.
    for p in own:
        offsets = produce_all(learner.bootstrap, "roles8", p, [Rec(None, f"after-{p}-{i}".encode()) for i in range(5)])
        assert offsets == list(range(10, 15))
    for n in survivors:
        assert described(n)[1] == new_controller, "the broker-only node never becomes the controller"

    # The broker-only node restarts and rejoins from its own log.
    learner.stop(signal.SIGKILL)
    learner.start()
    wait_until("the broker-only node to be registered again",
               lambda: BROKER_ONLY_ID in described(voters[0] if voters[0].alive() else survivors[0])[0])
    wait_leaders([learner], "roles8", 8, lambda l: {p for p, x in l.items() if x == BROKER_ONLY_ID} == set(own))
    # Just restarted, it serves from its own log before it has caught up
    # (the killed node may still look alive to it), so an AdminClient's
    # first DescribeCluster can go to the dead node and time out: wait.
    wait_until("the restarted broker-only node to name the new controller",
               lambda: described(learner)[1] == new_controller)


def test_a_broker_only_node_in_the_voters_is_refused(tmp_path):
    port = free_port()
    node = BrokerOnlyNode(tmp_path / "n", 1, f"1@127.0.0.1:{port}", free_port())
    assert_refused(node, "listed in controller.quorum.voters")
