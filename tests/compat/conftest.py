"""Fixtures for the real-client compatibility suite.

`broker` (session): one `strom serve --shards 2` on a free 127.0.0.1 port and a
temporary data dir, shared by all tests that only need a working broker.
`own_broker` (per test): a broker of the test's own, for restart and crash
tests; `own_broker.restart()` stops it with SIGTERM and starts it again on the
same data dir, `own_broker.crash_restart()` does the same with SIGKILL.

The broker binary is target/release/strom ($CARGO_TARGET_DIR is honoured;
override: STROM_BIN).
"""

import os
import random
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import kafka_wire

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
STROM_BIN = Path(os.environ.get("STROM_BIN", TARGET_DIR / "release" / "strom"))
START_TIMEOUT_S = 30.0
# Broker config for the suite: 8 MiB segments make the tests cross segment
# boundaries (and keep the suite's disk use small).
BROKER_CONFIG = """
log.segment.bytes = 8388608
"""
STOP_TIMEOUT_S = 30.0


_GIVEN_PORTS = set()
# Ports handed to the tests come from below the kernel's ephemeral range.
# A port bound to :0 and released is free only until the next outgoing
# connection of any process takes it as its local port; a controller whose
# port a peer's connection held failed to start with EADDRINUSE (CI, stop 30).
_LOWEST_PORT = 10000


def ephemeral_range() -> tuple:
    """The kernel's range for outgoing connections' local ports."""
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def free_port() -> int:
    """A port nobody has bound now, outside the ephemeral range (no outgoing
    connection can take it before the test binds it), never one this session
    gave before: two nodes of one cluster on one port cannot both start."""
    low, _ = ephemeral_range()
    if low - _LOWEST_PORT < 1000:
        raise RuntimeError(f"the ephemeral range starts at {low}: too few ports below it for the tests")
    rng = random.Random()
    for _ in range(10000):
        port = rng.randrange(_LOWEST_PORT, low)
        if port in _GIVEN_PORTS:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN_PORTS.add(port)
        return port
    raise RuntimeError(f"no free port in [{_LOWEST_PORT}, {low})")


class Broker:
    def __init__(self, data_dir: Path, log_path: Path, shards: int = 2, env=None, config: str = ""):
        self.data_dir = data_dir
        self.config = config  # extra TOML lines after BROKER_CONFIG
        self.log_path = log_path  # a device such as /dev/full gets no start line
        self.shards = shards
        self.env = env  # extra environment variables, e.g. RUST_LOG
        self.preexec = None  # run in the child before exec, e.g. netcut.NetCut.enter
        self.port = free_port()
        self.proc = None
        self._log = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self):
        self.launch()
        self.wait_ready()

    def extra_args(self) -> list:
        """More `strom serve` arguments (the cluster tests' nodes add theirs)."""
        return []

    def launch(self):
        """Starts the process without waiting for it to serve."""
        if not STROM_BIN.exists():
            raise RuntimeError(f"{STROM_BIN} not built (cargo build --release -p strom-server)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir.parent / "strom.toml"
        config.write_text(BROKER_CONFIG + self.config)
        self._log = open(self.log_path, "ab")
        if not self.log_path.is_char_device():
            self._log.write(f"--- start on port {self.port}\n".encode())
            self._log.flush()
        self.proc = subprocess.Popen(
            [
                str(STROM_BIN),
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--listen",
                self.bootstrap,
                "--shards",
                str(self.shards),
                "--config",
                str(config),
                *self.extra_args(),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env} if self.env else None,
            preexec_fn=self.preexec,
        )

    def wait_ready(self):
        """Returns once the port accepts and ApiVersions and Metadata answer."""
        deadline = time.monotonic() + START_TIMEOUT_S
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"strom exited with {self.proc.returncode} during startup\n{self.log_tail()}"
                )
            try:
                err, apis = kafka_wire.api_versions(self.port, timeout=2.0)
                if err == 0 and kafka_wire.METADATA in apis:
                    with kafka_wire.connect(self.port, 2.0) as s:
                        s.sendall(kafka_wire.metadata_v0())
                        brokers, _ = kafka_wire.parse_metadata_v0(kafka_wire.recv_frame(s))
                    if brokers:
                        return
                last = f"ApiVersions error {err}, apis {sorted(apis)}"
            except Exception as e:  # noqa: BLE001 - any failure is retried until the deadline
                last = repr(e)
            time.sleep(0.1)
        raise RuntimeError(f"strom not ready after {START_TIMEOUT_S}s: {last}\n{self.log_tail()}")

    def stop(self, sig=signal.SIGTERM) -> int:
        """Sends sig, waits for exit, returns the exit status. The log file
        is closed either way (a broker that exited by itself too)."""
        if self.proc is None or self.proc.poll() is not None:
            self._close_log()
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)
            raise RuntimeError(f"strom did not exit within {STOP_TIMEOUT_S}s of {sig!r}\n{self.log_tail()}")
        finally:
            self._close_log()
        return code

    def _close_log(self):
        if self._log:
            self._log.close()
            self._log = None

    def restart(self) -> int:
        """SIGTERM, then start again on the same data dir and port; returns the exit status."""
        code = self.stop(signal.SIGTERM)
        self.start()
        return code

    def crash_restart(self):
        self.stop(signal.SIGKILL)
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def reset_peak_rss(self):
        """Resets VmHWM (the peak RSS) to the current RSS."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def peak_rss_bytes(self) -> int:
        """VmHWM: the peak RSS since start or the last reset_peak_rss()."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")

    def log_tail(self, n: int = 60) -> str:
        if self.log_path.is_char_device():
            return f"(no log: it went to {self.log_path})"
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "--- strom log tail:\n" + "\n".join(lines[-n:])

    def apis(self) -> dict:
        err, apis = kafka_wire.api_versions(self.port)
        assert err == 0
        return apis


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    d = tmp_path_factory.mktemp("strom-session")
    b = Broker(d / "data", d / "strom.log")
    b.start()
    yield b
    b.stop(signal.SIGTERM)


@pytest.fixture
def own_broker(tmp_path):
    b = Broker(tmp_path / "data", tmp_path / "strom.log")
    b.start()
    yield b
    if b.alive():
        b.stop(signal.SIGKILL)


@pytest.fixture
def broker_with(tmp_path):
    """A factory of brokers of the test's own with extra config lines:
    `broker_with("connections.max.idle.ms = 1000\n")`. Killed after the test."""
    made = []

    def make(config: str = "", shards: int = 2) -> Broker:
        d = tmp_path / f"broker{len(made)}"
        b = Broker(d / "data", d / "strom.log", shards=shards, config=config)
        made.append(b)
        b.start()
        return b

    make.made = made
    yield make
    for b in made:
        if b.alive():
            b.stop(signal.SIGKILL)


@pytest.fixture
def topic_name(request):
    """A fresh topic name per test."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:80]
    return f"{base}-{uuid.uuid4().hex[:8]}"


def create_topic(bootstrap: str, name: str, partitions: int = 1, config=None):
    """Creates a topic with confluent-kafka's AdminClient and waits until its
    metadata shows every partition with a leader."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=10,
        request_timeout=15,
    )[name]
    fut.result(timeout=30)
    wait_for_topic(admin, name, partitions)
    return name


def wait_for_topic(admin, name: str, partitions: int, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=name, timeout=5)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            if all(p.leader >= 0 for p in t.partitions.values()):
                return
        last = t
        time.sleep(0.1)
    raise AssertionError(f"topic {name} not ready with {partitions} partitions: {last}")


@pytest.fixture
def topic(broker, topic_name):
    """A fresh single-partition topic on the session broker."""
    return create_topic(broker.bootstrap, topic_name, 1)


@pytest.fixture(autouse=True)
def _broker_still_up(request):
    """After every test that used the session broker: it is still running."""
    yield
    if "broker" in request.fixturenames:
        b = request.getfixturevalue("broker")
        assert b.alive(), f"strom died during the test (exit {b.proc.returncode})\n{b.log_tail()}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test's report carries the tail of its broker's log."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for name in ("own_broker", "broker"):
            b = item.funcargs.get(name)
            if isinstance(b, Broker):
                rep.sections.append((f"strom log ({name})", b.log_tail(40)))
        for i, b in enumerate(getattr(item.funcargs.get("broker_with"), "made", [])):
            rep.sections.append((f"strom log (broker_with #{i})", b.log_tail(40)))


# Tests that fail because of known broker bugs (not test bugs), as
# "file.py::test_name" (all parametrizations) -> reason. They stay in the suite,
# marked xfail(strict=False), so CI shows them and a fix turns them XPASS.
KNOWN_BROKER_BUGS: dict[str, str] = {}


def pytest_collection_modifyitems(config, items):
    for item in items:
        reason = KNOWN_BROKER_BUGS.get(f"{item.path.name}::{item.name}") or KNOWN_BROKER_BUGS.get(
            f"{item.path.name}::{item.originalname}"
        )
        if reason:
            item.add_marker(pytest.mark.xfail(strict=False, reason=f"broker bug: {reason}"))
