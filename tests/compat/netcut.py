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
        self.is_cut = False

    def enter(self):
        """preexec_fn of the node's process: moves it into the group before exec."""
        (self.group / "cgroup.procs").write_text(str(os.getpid()))

    def cut(self):
        nft("add", "table", "inet", self.table)
        for chain, hook in (("out", "output"), ("in", "input")):
            nft("add", "chain", "inet", self.table, chain, f"{{ type filter hook {hook} priority 0; }}")
            # nft joins its arguments into one rule text, quotes included.
            nft("add", "rule", "inet", self.table, chain, self.match, "drop")
        self.is_cut = True

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
