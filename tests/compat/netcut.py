"""Cutting one local node off the network, as a partitioned machine is.

All the cluster tests' nodes share 127.0.0.1, so addresses cannot tell them
apart; their processes can. A `NetCut` is a cgroup v2 group of its own: a
node launched with `preexec_fn=cut.enter` runs in it, and every socket it
opens belongs to it. `cut()` adds an nftables table that drops every packet
such a socket sends (output hook) and every packet addressed to one (input
hook), so the node neither reaches nor is reached by anyone: its peers see
silence, not refused connections, as they would from a machine whose link
went down. `heal()` deletes the table; connections the cut stalled resume
or time out as TCP decides.

`cut_from(peers)` is the partial cut: only the traffic between this node
and its peers' listening ports is dropped (both ways), so clients still
reach it while the cluster cannot: the partitioned leader that keeps
taking writes no one else will see. It needs each NetCut's `ports`, the
node's listening ports.

Needs root, nftables (`nft`, installed by scripts/install-deps) and a
cgroup v2 hierarchy under /sys/fs/cgroup (mounted there, or at
/sys/fs/cgroup/unified on a hybrid machine). Missing any of them fails the
test that uses it, with the reason.
"""

import os
import subprocess
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")


def cgroup2_root() -> Path:
    """Where the cgroup v2 hierarchy is mounted (under /sys/fs/cgroup)."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            mount = Path(fields[1])
            if mount == CGROUP_FS or CGROUP_FS in mount.parents:
                return mount
    raise RuntimeError("netcut: no cgroup v2 hierarchy mounted under /sys/fs/cgroup")


def nft(*args: str):
    r = subprocess.run(["nft", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"netcut: nft {' '.join(args)} failed: {r.stderr.strip()}")


class NetCut:
    def __init__(self, name: str):
        root = cgroup2_root()
        # Unique per test process and node, so parallel runs do not collide.
        self.name = f"strom-{name}-{os.getpid()}"
        self.group = root / self.name
        self.group.mkdir(exist_ok=True)
        # nft names a cgroup by its path under /sys/fs/cgroup and matches the
        # ancestor at `level` below the v2 root: our group is a child of it.
        self.match = f'socket cgroupv2 level 1 "{self.group.relative_to(CGROUP_FS)}"'
        self.table = self.name.replace("-", "_")
        self.ports = []  # the node's listening ports, for cut_from
        self.is_cut = False

    def enter(self):
        """preexec_fn of the node's process: moves it into the group before exec."""
        (self.group / "cgroup.procs").write_text(str(os.getpid()))

    def _table(self, hooks):
        nft("add", "table", "inet", self.table)
        for chain, hook in hooks:
            nft("add", "chain", "inet", self.table, chain, f"{{ type filter hook {hook} priority 0; }}")
        self.is_cut = True

    def cut(self):
        self._table((("out", "output"), ("in", "input")))
        for chain in ("out", "in"):
            # nft joins its arguments into one rule text, quotes included.
            nft("add", "rule", "inet", self.table, chain, self.match, "drop")

    def cut_from(self, peers):
        """Drops what this node sends to its peers' listening ports and what
        they send to its own; on loopback every packet passes the output hook."""
        self._table((("out", "output"),))
        for peer in peers:
            for src, dst in ((self, peer), (peer, self)):
                ports = ", ".join(str(p) for p in dst.ports)
                nft("add", "rule", "inet", self.table, "out", src.match, f"tcp dport {{ {ports} }}", "drop")

    def heal(self):
        if self.is_cut:
            nft("delete", "table", "inet", self.table)
            self.is_cut = False

    def close(self):
        """Heals, and removes the group once no process is left in it."""
        self.heal()
        try:
            self.group.rmdir()
        except OSError:
            pass
