"""A follower drops a Fetch answer that comes from a leader it no longer
follows (issue 15; found by scripts/fault-run: a leader frozen with
SIGSTOP answered a follower's long poll after the follower had moved to
the new leader, and the follower appended the old leader's uncommitted
batches behind the new leader's back: its log then differed from the
new leader's).

Each node's advertised listener is a proxy in front of its broker port,
so followers fetch through it. The proxy of the old leader holds its
answers to the followers' Fetches once they carry a marked record, and
gives the follower its answer only after the follower's image names the
new leader; the old leader is SIGKILLed in between.
"""

import signal
import socket
import struct
import threading

from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from test_cluster import agreed_controller, start_all, voter_nodes, wait_until
from test_cluster_replication import create, metadata_v7, wait_partitions
from test_replication_failover import full_isr
from test_replication_follow import replicas_match

FETCH = 1
MARK = b"held-by-proxy"


class Conn:
    """One proxied connection: client <-> the broker."""

    def __init__(self, proxy, client: socket.socket, upstream: socket.socket):
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.replica = None  # set from the first Fetch with a replica id
        self.held = []  # answer frames kept back
        self.done = threading.Event()  # released or dropped

    def requests(self):
        buf = b""
        try:
            while data := self.client.recv(65536):
                buf += data
                while len(buf) >= 4 and len(buf) >= 4 + struct.unpack_from(">i", buf)[0]:
                    size = struct.unpack_from(">i", buf)[0]
                    frame, buf = buf[4:4 + size], buf[4 + size:]
                    self.note(frame)
                    self.upstream.sendall(struct.pack(">i", size) + frame)
        except OSError:
            pass
        self.close_upstream()

    def note(self, frame: bytes):
        """Marks a follower's connection from its Fetch (header v2 from
        Fetch v12: client id, then an empty tagged-field section; the body
        starts with the replica id)."""
        key, version = struct.unpack_from(">hh", frame)
        if key != FETCH or self.replica is not None or not 12 <= version <= 14:
            return
        (n,) = struct.unpack_from(">h", frame, 8)
        pos = 10 + max(n, 0) + 1
        (replica,) = struct.unpack_from(">i", frame, pos)
        if replica >= 0:
            self.replica = replica

    def answers(self):
        buf = b""
        try:
            while data := self.upstream.recv(65536):
                buf += data
                while len(buf) >= 4 and len(buf) >= 4 + struct.unpack_from(">i", buf)[0]:
                    size = struct.unpack_from(">i", buf)[0]
                    frame, buf = buf[:4 + size], buf[4 + size:]
                    with self.proxy.lock:
                        hold = self.replica is not None and self.proxy.holding and (
                            self.held or MARK in frame) and not self.done.is_set()
                        if hold:
                            self.held.append(frame)
                    if not hold:
                        self.client.sendall(frame)
        except OSError:
            pass
        # The broker is gone: a held follower keeps its connection until
        # the test releases or drops what was held.
        if self.replica is not None and self.proxy.holding:
            self.done.wait(60)
        self.close_client()

    def close_upstream(self):
        try:
            self.upstream.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close_client(self):
        try:
            self.client.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.client.close()


class FetchHoldingProxy:
    """A TCP proxy in front of one broker port; see the module doc."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.upstream_port = None
        self.lock = threading.Lock()
        self.holding = False
        self.conns = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            c = Conn(self, client, upstream)
            with self.lock:
                self.conns.append(c)
            threading.Thread(target=c.requests, daemon=True).start()
            threading.Thread(target=c.answers, daemon=True).start()

    def held_for(self, replica: int) -> bool:
        with self.lock:
            return any(c.replica == replica and c.held for c in self.conns)

    def finish(self, replica: int, deliver: bool):
        """Delivers (or drops) what was held for `replica`, then closes its
        connections."""
        with self.lock:
            mine = [c for c in self.conns if c.replica == replica]
        for c in mine:
            with self.lock:
                frames, c.held = c.held, []
                c.done.set()
            if deliver:
                for f in frames:
                    try:
                        c.client.sendall(f)
                    except OSError:
                        pass
            c.close_upstream()
            c.close_client()

    def close(self):
        self.listener.close()
        with self.lock:
            for c in self.conns:
                c.done.set()
                c.close_upstream()
                c.close_client()


def test_a_follower_drops_an_answer_from_a_leader_it_no_longer_follows(tmp_path):
    _, nodes = voter_nodes(tmp_path, "")
    proxies = {}
    for n in nodes:
        proxy = proxies[n.node_id] = FetchHoldingProxy()
        proxy.upstream_port = n.port
        n.extra_args = (lambda orig, p: lambda: orig() + ["--advertised-listener", f"127.0.0.1:{p}"])(
            n.extra_args, proxy.port)
    try:
        start_all(nodes)
        controller = agreed_controller(nodes)
        # The old leader: not the active controller, so its death is seen
        # at once (refused connections) rather than after an election.
        old = next(n for n in nodes if n.node_id != controller)
        others = [n for n in nodes if n is not old]
        create(nodes[0], NewTopic("stale", num_partitions=1,
                                  replica_assignment=[[old.node_id] + [n.node_id for n in others]]))
        wait_partitions(nodes, "stale", 1, full_isr, "has every replica in its ISR")
        epoch = metadata_v7(old, "stale")[1][0]["epoch"]
        p = Producer({"bootstrap.servers": others[0].bootstrap, "acks": "all", "enable.idempotence": True})
        for i in range(10):
            p.produce("stale", value=f"committed-{i}".encode(), partition=0)
        assert p.flush(30) == 0
        wait_until("both followers hold offsets 0..10",
                   lambda: replicas_match(nodes, "stale", 0, 10))

        # Uncommitted records on the old leader alone: its answers carrying
        # them are held at the proxy.
        proxies[old.node_id].holding = True
        one = Producer({"bootstrap.servers": others[0].bootstrap, "acks": 1})
        acked = []
        for i in range(5):
            one.produce("stale", value=MARK + f"-{i}".encode(), partition=0,
                        on_delivery=lambda e, m: acked.append(e))
        assert one.flush(30) == 0 and acked == [None] * 5, acked
        for n in others:
            wait_until(f"the old leader's answer to node {n.node_id} held",
                       lambda n=n: proxies[old.node_id].held_for(n.node_id))
        old.stop(signal.SIGKILL)

        # The new leader (neither holds the marked records) and its follower.
        def new_leader():
            seen = {(s["leader"], s["epoch"]) for s in (metadata_v7(n, "stale")[1][0] for n in others)}
            if len(seen) == 1:
                (leader_id, at), = seen
                if leader_id in [n.node_id for n in others] and at > epoch:
                    return leader_id
            return None

        leader_id = wait_until("one new leader in both survivors' images", new_leader)
        leader = next(n for n in others if n.node_id == leader_id)
        follower = next(n for n in others if n is not leader)
        proxies[old.node_id].finish(leader.node_id, deliver=False)
        # The follower gets the old leader's answer now, after its image moved.
        proxies[old.node_id].finish(follower.node_id, deliver=True)

        # A follower that appended the old leader's answer is ahead of its
        # leader: its fetches are out of range and this is never committed.
        p.produce("stale", value=b"after", partition=0)
        assert p.flush(30) == 0, f"not acknowledged: node {follower.node_id} took the old leader's answer?"
        wait_until("the survivors' replicas identical over offsets 0..11",
                   lambda: replicas_match(others, "stale", 0, 11), timeout=20)
    finally:
        for n in nodes:
            if n.alive():
                n.stop(signal.SIGKILL)
        for proxy in proxies.values():
            proxy.close()
