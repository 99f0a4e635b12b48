"""Two brokers started at the same moment on one listen address.

Every shard listens with SO_REUSEPORT, which the kernel lets any two
sockets of one user share. A broker first probes its address with a plain
bind, but the shards bind later, after the logs are open: two brokers
launched together (a test harness, two units given the same port) both
passed the probe and then silently split the port's connections between
them. A client then talked to either broker at random; the cluster suite
saw a partition answered by a node that does not lead it.

The broker must refuse the second start with a clear error, and the first
must serve alone.
"""

import time
from pathlib import Path

import pytest

from conftest import Broker

ROUNDS = 3
DEADLINE_S = 40.0  # the probe retries a busy address for 10 s


def listening_pids(port: int) -> set:
    """The pids with a socket listening on 127.0.0.1:`port` (from /proc)."""
    hexport = f"{port:04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and local.endswith(":" + hexport):
                inodes.add(inode)
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = str(fd.readlink())
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    pids.add(int(proc.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return pids


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_brokers_launched_together_do_not_share_a_port(tmp_path, round_):
    first = Broker(tmp_path / "a" / "data", tmp_path / "a.log")
    second = Broker(tmp_path / "b" / "data", tmp_path / "b.log")
    second.port = first.port
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first.launch()
    second.launch()
    try:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            exited = [b for b in (first, second) if b.proc.poll() is not None]
            if exited:
                break
            time.sleep(0.1)
        exited = [b for b in (first, second) if b.proc.poll() is not None]
        owners = listening_pids(first.port)
        assert len(exited) == 1, (
            f"{len(exited)} of 2 brokers exited within {DEADLINE_S}s; "
            f"pids listening on port {first.port}: {sorted(owners)} "
            f"(brokers {first.pid}, {second.pid})"
        )
        (loser,) = exited
        (winner,) = [b for b in (first, second) if b is not loser]
        assert loser.proc.returncode != 0
        log = loser.log_path.read_text()
        assert "not available" in log, log[-2000:]
        winner.wait_ready()
        assert listening_pids(first.port) == {winner.pid}
    finally:
        for b in (first, second):
            b.stop()
