"""Measures how long a consumer group takes to hand a member's partitions to
the other members, when the member dies (SIGKILL) and when it leaves
(close(), which sends LeaveGroup).

Run through scripts/measure-rebalance (it picks the venv's python). One fresh
`strom serve --shards 2` on a free 127.0.0.1 port and a temporary data dir;
one topic of 6 partitions; a producer process writing one small record to
every partition every 20 ms for the whole measurement. Each run starts 3
consumer processes (confluent-kafka) in a fresh group, waits until the group
is stable (each member has its assignment, the 6 partitions are split between
them, each has delivered a record to its owner since the assignment, nothing
changed for a second, DescribeGroups says Stable with the same assignment),
waits a random part of a heartbeat interval (--seed), then kills or closes
one member (run i: member i mod 3) and measures, from that moment, the time
until every partition the member owned has delivered a record to a surviving
member ("consumed again").

Consumers report to this process on their stdout, one JSON line per event:
assign/revoke (from the rebalance callbacks) and rec (a record of partition p
received; at most one line per partition per 100 ms, and always the first
after an assignment). Times are time.monotonic(), which is CLOCK_MONOTONIC and
so comparable between processes on one machine.

Every wait has a deadline (--timeout); a run that does not converge fails the
whole measurement with a message and exit status 1. The broker and every child
process are stopped on the way out, also on failure or Ctrl-C.
"""

import argparse
import ctypes
import json
import os
import platform
import queue
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STOP_TIMEOUT_S = 30.0
START_TIMEOUT_S = 30.0
SETTLE_S = 1.0  # the group must be unchanged this long to count as stable
REC_EVERY_S = 0.1  # consumers report a partition at most this often


class Failure(Exception):
    pass


def die_with_parent(sig=signal.SIGKILL):
    """PR_SET_PDEATHSIG: the kernel sends sig when the parent exits."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(sig), 0, 0, 0)
    except OSError:
        pass


# ---- child processes ----------------------------------------------------


def child_consumer(a):
    """A group member. Reports events as JSON lines on stdout; reads commands
    on stdin: "leave" (or EOF) closes the consumer and exits."""
    die_with_parent()
    from confluent_kafka import Consumer, KafkaError

    out_lock = threading.Lock()

    def emit(ev, **kw):
        kw["ev"] = ev
        kw.setdefault("t", time.monotonic())
        line = json.dumps(kw) + "\n"
        with out_lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    leave = threading.Event()

    def read_commands():
        for line in sys.stdin:
            if line.strip() == "leave":
                break
        leave.set()

    threading.Thread(target=read_commands, daemon=True).start()

    last = {}

    def on_assign(_c, parts):
        last.clear()
        emit("assign", parts=sorted(p.partition for p in parts))

    def on_revoke(_c, parts):
        last.clear()
        emit("revoke", parts=sorted(p.partition for p in parts))

    conf = {
        "bootstrap.servers": a["bootstrap"],
        "group.id": a["group"],
        "client.id": a["client_id"],
        "session.timeout.ms": a["session_timeout_ms"],
        "heartbeat.interval.ms": a["heartbeat_interval_ms"],
        "auto.offset.reset": "latest",
        "error_cb": lambda e: emit("error", msg=str(e)),
    }
    if a.get("debug"):
        conf["debug"] = a["debug"]  # librdkafka logs to stderr: the consumer's log file
    c = Consumer(conf)
    c.subscribe([a["topic"]], on_assign=on_assign, on_revoke=on_revoke)
    emit("subscribed", pid=os.getpid())
    while not leave.is_set():
        m = c.poll(0.05)
        if m is None:
            continue
        if m.error():
            if m.error().code() != KafkaError._PARTITION_EOF:
                emit("error", msg=str(m.error()))
            continue
        now = time.monotonic()
        p = m.partition()
        if now - last.get(p, -1e9) >= REC_EVERY_S:
            last[p] = now
            emit("rec", t=now, p=p, offset=m.offset())
    emit("closing")
    c.close()
    emit("closed")


def child_producer(a):
    """One record (value: the send time) to every partition every interval,
    until SIGTERM; then prints one JSON line with its counts."""
    die_with_parent(signal.SIGTERM)
    from confluent_kafka import Producer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    counts = {"sent": 0, "delivered": 0, "errors": 0, "late_ticks": 0}

    def delivered(err, _msg):
        if err is None:
            counts["delivered"] += 1
            return
        counts["errors"] += 1
        if counts["errors"] <= 10:
            print(f"producer: delivery failed: {err}", file=sys.stderr, flush=True)

    p = Producer({"bootstrap.servers": a["bootstrap"], "acks": 1, "linger.ms": 5})
    interval = a["interval_ms"] / 1000.0
    nxt = time.monotonic()
    while not stop.is_set():
        value = f"{time.time():.6f}".encode()
        for part in range(a["partitions"]):
            p.produce(a["topic"], value=value, partition=part, on_delivery=delivered)
            counts["sent"] += 1
        p.poll(0)
        nxt += interval
        wait = nxt - time.monotonic()
        if wait > 0:
            stop.wait(wait)
        else:
            counts["late_ticks"] += 1
            nxt = time.monotonic()
    p.flush(10)
    print(json.dumps(counts), flush=True)


# ---- broker ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, binary: Path, work: Path, shards: int, config: str):
        self.binary = binary
        self.work = work
        self.shards = shards
        self.config = config
        self.port = free_port()
        self.log_path = work / "strom.log"
        self.proc = None
        self.exit_code = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        if not self.binary.exists():
            raise Failure(f"{self.binary} does not exist (cargo build --release -p strom-server, or set STROM_BIN)")
        conf = self.work / "strom.toml"
        conf.write_text(self.config)
        log = open(self.log_path, "wb")
        env = dict(os.environ, NO_COLOR="1")
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", "--data-dir", str(self.work / "data"), "--listen", self.bootstrap,
             "--shards", str(self.shards), "--config", str(conf)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            # Started before any thread of ours exists, so preexec_fn is safe here.
            preexec_fn=lambda: die_with_parent(signal.SIGTERM),
        )
        log.close()
        self.wait_ready()

    def wait_ready(self):
        """Returns once the port accepts and Metadata lists the broker."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self.check_alive("during startup")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise Failure(f"strom does not accept connections after {START_TIMEOUT_S:.0f} s\n{self.log_tail()}")
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 4})
        last = None
        while time.monotonic() < deadline:
            self.check_alive("during startup")
            try:
                if admin.list_topics(timeout=2).brokers:
                    return
            except Exception as e:  # noqa: BLE001 - retried until the deadline
                last = e
            time.sleep(0.1)
        raise Failure(f"strom answers no Metadata after {START_TIMEOUT_S:.0f} s: {last!r}\n{self.log_tail()}")

    def check_alive(self, when=""):
        if self.proc is not None and self.proc.poll() is not None:
            raise Failure(f"strom exited with status {self.proc.returncode} {when}\n{self.log_tail()}")

    def stop(self):
        if self.proc is None or self.exit_code is not None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
                print(f"measure-rebalance: strom did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM; killed",
                      file=sys.stderr)
        self.exit_code = self.proc.returncode

    def log_lines(self):
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [ANSI.sub("", line) for line in text.splitlines()]

    def log_tail(self, n=40):
        return "--- strom log tail:\n" + "\n".join(self.log_lines()[-n:])


ANSI = re.compile(r"\x1b\[[0-9;]*m")
LOG_LINE = re.compile(r"^(\S+Z)\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s+(\S+?):\s+(.*)$")


def parse_log_time(stamp):
    # 2026-11-22T18:22:31.001321Z; fromisoformat takes at most 6 fraction digits.
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z$", stamp)
    if not m:
        return None
    base = datetime.fromisoformat(m.group(1)).replace(tzinfo=timezone.utc).timestamp()
    return base + (float("0." + m.group(2)) if m.group(2) else 0.0)


# ---- the measurement ------------------------------------------------------


class Member:
    def __init__(self, idx, proc, log_path):
        self.idx = idx
        self.proc = proc
        self.log_path = log_path
        self.assignment = None
        self.assign_t = None
        self.last_change_t = None
        self.last_rec = {}  # partition -> monotonic time of the latest rec event
        self.events = []
        self.errors = []
        self.eof = False
        self.expect_exit = False

    def send(self, line):
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def apply(self, ev):
        self.events.append(ev)
        kind = ev["ev"]
        if kind == "assign":
            self.assignment = set(ev["parts"])
            self.assign_t = ev["t"]
            self.last_change_t = ev["t"]
        elif kind == "revoke":
            self.assignment = set()
            self.last_change_t = ev["t"]
        elif kind == "rec":
            self.last_rec[ev["p"]] = ev["t"]
        elif kind == "error":
            self.errors.append(ev["msg"])
        elif kind == "eof":
            self.eof = True

    def stderr_tail(self, n=15):
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


class Measurement:
    def __init__(self, args, broker, work, topic, producer):
        self.args = args
        self.broker = broker
        self.work = work
        self.topic = topic
        self.producer = producer
        self.events = queue.Queue()
        self.members = []
        self.rng = random.Random(args.seed)
        from confluent_kafka.admin import AdminClient

        # One client for all runs; log_level 4 keeps librdkafka's notices about
        # purging its queues when a client goes away off the output.
        self.admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 4})

    # -- child management

    def spawn_members(self, group, run_name):
        self.members = []
        for i in range(self.args.consumers):
            conf = {
                "bootstrap": self.broker.bootstrap,
                "group": group,
                "client_id": f"{run_name}-c{i}",
                "topic": self.topic,
                "session_timeout_ms": self.args.session_timeout_ms,
                "heartbeat_interval_ms": self.args.heartbeat_interval_ms,
                "debug": self.args.client_debug,
            }
            log_path = self.work / f"{run_name}-c{i}.log"
            with open(log_path, "wb") as err:
                proc = subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), "_consumer", json.dumps(conf)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1,
                )
            m = Member(i, proc, log_path)
            self.members.append(m)
            threading.Thread(target=self._read, args=(m,), daemon=True).start()

    def _read(self, m):
        for line in m.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"ev": "junk", "line": line.rstrip(), "t": time.monotonic()}
            self.events.put((m, ev))
        self.events.put((m, {"ev": "eof", "t": time.monotonic()}))

    def stop_members(self):
        """Closes every member still running (LeaveGroup), SIGKILL after the deadline."""
        for m in self.members:
            if m.proc.poll() is None:
                m.send("leave")
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for m in self.members:
            try:
                m.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"measure-rebalance: consumer {m.idx} did not close within {STOP_TIMEOUT_S:.0f} s; killed",
                      file=sys.stderr)
                m.proc.kill()
                m.proc.wait()
        self._drain()

    def kill_all(self):
        for m in self.members:
            if m.proc.poll() is None:
                m.proc.kill()
        for m in self.members:
            try:
                m.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass

    def _drain(self):
        while True:
            try:
                m, ev = self.events.get_nowait()
            except queue.Empty:
                return
            m.apply(ev)

    def pump(self, what, deadline, cond):
        """Applies member events until cond() is true; Failure at the deadline
        or when the broker, the producer or an unexpected member exits."""
        while True:
            try:
                m, ev = self.events.get(timeout=0.05)
                m.apply(ev)
                self._drain()
            except queue.Empty:
                pass
            result = cond()
            if result:
                return result
            self.broker.check_alive(f"while waiting for {what}")
            if self.producer.poll() is not None:
                raise Failure(f"the producer exited with status {self.producer.returncode} while waiting for {what}")
            for m in self.members:
                if m.eof and not m.expect_exit:
                    raise Failure(f"consumer {m.idx} exited (status {m.proc.poll()}) while waiting for {what}\n"
                                  f"{m.stderr_tail()}")
            if time.monotonic() > deadline:
                raise Failure(f"no {what} within {self.args.timeout:.0f} s\n{self.describe_state()}\n"
                              f"{self.broker.log_tail(20)}")

    def describe_state(self):
        lines = []
        now = time.monotonic()
        for m in self.members:
            recent = sorted(p for p, t in m.last_rec.items() if now - t < 2.0)
            lines.append(f"  consumer {m.idx} pid {m.proc.pid}: assignment {sorted(m.assignment or [])}, "
                         f"records in the last 2 s from {recent}, exited={m.eof}, errors={m.errors[-3:]}")
        return "state:\n" + "\n".join(lines)

    # -- one run

    def wait_stable(self, group):
        from confluent_kafka import ConsumerGroupState

        admin = self.admin
        n = self.args.partitions
        last_check = [0.0]

        def stable():
            now = time.monotonic()
            ms = self.members
            if any(m.assignment is None or not m.assignment for m in ms):
                return False
            owned = [p for m in ms for p in m.assignment]
            if len(owned) != n or set(owned) != set(range(n)):
                return False
            for m in ms:
                if any(m.last_rec.get(p, -1e9) <= m.assign_t for p in m.assignment):
                    return False
            if now - max(m.last_change_t for m in ms) < SETTLE_S:
                return False
            if now - last_check[0] < 0.5:
                return False
            last_check[0] = now
            # The broker's view must agree: Stable, the same members and assignment.
            try:
                desc = admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=10)
            except Exception:  # noqa: BLE001 - asked again until the deadline
                return False
            if desc.state != ConsumerGroupState.STABLE or len(desc.members) != len(ms):
                return False
            broker_view = sorted(sorted(tp.partition for tp in d.assignment.topic_partitions) for d in desc.members)
            return broker_view == sorted(sorted(m.assignment) for m in ms)

        self.pump("stable group with every partition consumed", time.monotonic() + self.args.timeout, stable)

    def run(self, case, i):
        run_name = f"{case}-{i + 1}"
        group = f"rebalance-{run_name}-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        self.spawn_members(group, run_name)
        try:
            self.wait_stable(group)
            stable_after = time.monotonic() - started
            # The group turns stable right after a join, so without this every kill would
            # land just after a heartbeat (all members heartbeat in step): wait a random
            # part of a heartbeat interval so that runs sample the heartbeat phase.
            phase_s = self.rng.uniform(0, self.args.heartbeat_interval_ms / 1000.0)
            until = time.monotonic() + phase_s
            self.pump("the random kill phase", until + self.args.timeout, lambda: time.monotonic() >= until)
            victim = self.members[i % len(self.members)]
            survivors = [m for m in self.members if m is not victim]
            victim_parts = sorted(victim.assignment)
            mark = {m.idx: len(m.events) for m in survivors}
            victim.expect_exit = True
            if case == "kill":
                t0 = time.monotonic()
                wall0 = time.time()
                os.kill(victim.proc.pid, signal.SIGKILL)
                close_s = None
            else:
                sent = time.monotonic()
                victim.send("leave")
                closing = self.pump("the leaving consumer to start close()", sent + self.args.timeout,
                                    lambda: next((e for e in victim.events if e["ev"] == "closing"), None))
                t0 = closing["t"]
                wall0 = time.time() - (time.monotonic() - t0)
                close_s = None

            def after(m):
                return [e for e in m.events[mark[m.idx]:] if e["t"] >= t0]

            def converged():
                consumed, assigned = {}, {}
                new_assign = {}  # partition -> time its new owner got it
                for m in survivors:
                    for e in after(m):
                        if e["ev"] == "assign":
                            for p in e["parts"]:
                                new_assign.setdefault(p, e["t"])
                        elif e["ev"] == "rec" and e["p"] in new_assign:
                            consumed.setdefault(e["p"], e["t"])
                assigned = {p: new_assign[p] for p in victim_parts if p in new_assign}
                if not all(p in consumed for p in range(self.args.partitions)):
                    return None
                return consumed, assigned

            consumed, assigned = self.pump(f"consumption of partitions {victim_parts} by the other members",
                                           t0 + self.args.timeout, converged)
            # When each other member learned of the rebalance (its first revoke since t0);
            # the broker waits for all of them to rejoin.
            revokes = [min((e["t"] for e in after(m) if e["ev"] == "revoke"), default=None) for m in survivors]
            revokes = [t for t in revokes if t is not None]
            if case == "leave":
                self.pump("the leaving consumer to finish close()", t0 + self.args.timeout,
                          lambda: next((e for e in victim.events if e["ev"] == "closed"), None))
                close_s = next(e["t"] for e in victim.events if e["ev"] == "closed") - t0
                try:
                    victim.proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    victim.proc.kill()
            result = {
                "case": case,
                "run": i + 1,
                "group": group,
                "victim_partitions": victim_parts,
                "consumed_again_s": round(max(consumed[p] for p in victim_parts) - t0, 4),
                "per_partition_s": {str(p): round(consumed[p] - t0, 4) for p in victim_parts},
                "survivors_revoked_s": round(min(revokes) - t0, 4) if revokes else None,
                "survivors_revoked_last_s": round(max(revokes) - t0, 4) if revokes else None,
                "reassigned_s": round(max(assigned.values()) - t0, 4),
                "all_partitions_consumed_s": round(max(consumed.values()) - t0, 4),
                "leave_close_s": round(close_s, 4) if close_s is not None else None,
                "stable_after_start_s": round(stable_after, 3),
                "random_phase_s": round(phase_s, 3),
                "client_errors": [err for m in self.members for err in m.errors][:10],
                "_wall0": wall0,
            }
        except BaseException:
            self.kill_all()
            raise
        self.stop_members()
        return result


def broker_group_events(lines, runs):
    """Adds broker-side times (from the broker's log) to each run: when the
    member was removed (session expired / left) and when the group was stable
    again, relative to the kill or close()."""
    by_group = {}
    for line in lines:
        m = LOG_LINE.match(line)
        if not m:
            continue
        g = re.search(r"\bgroup=(\S+)", m.group(4))
        if not g:
            continue
        by_group.setdefault(g.group(1), []).append((parse_log_time(m.group(1)), m.group(4)))
    for r in runs:
        wall0 = r.pop("_wall0")
        events = [(t - wall0, msg) for t, msg in by_group.get(r["group"], []) if t is not None and t >= wall0 - 0.5]
        removed = next((t for t, msg in events if "session expired" in msg or "member left" in msg), None)
        stable = next((t for t, msg in events if removed is not None and t >= removed and "group stable" in msg), None)
        r["broker_member_removed_s"] = round(removed, 4) if removed is not None else None
        r["broker_group_stable_s"] = round(stable, 4) if stable is not None else None


def create_topic(bootstrap, name, partitions, timeout):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    fut = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                              operation_timeout=10, request_timeout=15)[name]
    fut.result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = admin.list_topics(topic=name, timeout=5).topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions \
                and all(p.leader >= 0 for p in t.partitions.values()):
            return
        time.sleep(0.1)
    raise Failure(f"topic {name} has no leader for each of its {partitions} partitions after {timeout:.0f} s")


def summarize(values):
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)} if values else None


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="scripts/measure-rebalance",
        description="Measures consumer-group rebalance time after a member is killed (SIGKILL) or leaves (close()).")
    ap.add_argument("--runs", type=int, default=3, help="runs of each case (default 3)")
    ap.add_argument("--cases", default="kill,leave", help="comma-separated: kill, leave (default both)")
    ap.add_argument("--session-timeout-ms", type=int, default=6000, help="consumers' session.timeout.ms (default 6000)")
    ap.add_argument("--heartbeat-interval-ms", type=int, default=1000,
                    help="consumers' heartbeat.interval.ms (default 1000)")
    ap.add_argument("--partitions", type=int, default=6, help="partitions of the topic (default 6)")
    ap.add_argument("--consumers", type=int, default=3, help="consumer processes in the group (default 3)")
    ap.add_argument("--interval-ms", type=float, default=20,
                    help="the producer sends one record to every partition this often (default 20)")
    ap.add_argument("--initial-rebalance-delay-ms", type=int, default=1000,
                    help="broker group.initial.rebalance.delay.ms (default 1000; Kafka's is 3000)")
    ap.add_argument("--shards", type=int, default=2, help="strom serve --shards (default 2)")
    ap.add_argument("--seed", type=int, default=1,
                    help="seed for the random wait (0 to one heartbeat interval) before each kill/close (default 1)")
    ap.add_argument("--timeout", type=float, default=60, help="deadline in seconds for every wait (default 60)")
    ap.add_argument("--json", metavar="FILE", help="write settings, machine and per-run times to FILE")
    ap.add_argument("--strom-bin", help="broker binary (default $STROM_BIN, else target/release/strom)")
    ap.add_argument("--work-dir", help="parent of the temporary data directory (default $TMPDIR or /tmp)")
    ap.add_argument("--client-debug", metavar="CONTEXTS",
                    help="librdkafka debug contexts for the consumers, e.g. cgrp,fetch (logs kept with --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (broker and consumer logs)")
    args = ap.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not args.cases or any(c not in ("kill", "leave") for c in args.cases):
        ap.error("--cases takes kill and/or leave")
    if args.runs < 1 or args.consumers < 2 or args.partitions < args.consumers:
        ap.error("need --runs >= 1, --consumers >= 2 and --partitions >= --consumers")
    return args


def main(argv):
    args = parse_args(argv)
    import confluent_kafka
    from confluent_kafka import libversion

    binary = Path(args.strom_bin or os.environ.get("STROM_BIN") or REPO / "target" / "release" / "strom")
    config = (
        "log.segment.bytes = 8388608\n"
        f"group.initial.rebalance.delay.ms = {args.initial_rebalance_delay_ms}\n"
        f"group.min.session.timeout.ms = {min(1000, args.session_timeout_ms)}\n"
    )
    started_at = datetime.now(timezone.utc)
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="strom-rebalance.", dir=args.work_dir))
    broker = Broker(binary.resolve(), work, args.shards, config)
    producer = None
    measurement = None
    runs = []
    failure = None

    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    print(f"measure-rebalance: strom {broker.binary}, session.timeout.ms {args.session_timeout_ms}, "
          f"heartbeat.interval.ms {args.heartbeat_interval_ms}, {args.runs} run(s) of {', '.join(args.cases)}",
          flush=True)
    try:
        broker.start()
        topic = f"rebalance-{uuid.uuid4().hex[:8]}"
        create_topic(broker.bootstrap, topic, args.partitions, args.timeout)
        pconf = {"bootstrap": broker.bootstrap, "topic": topic, "partitions": args.partitions,
                 "interval_ms": args.interval_ms}
        with open(work / "producer.out", "wb") as out, open(work / "producer.log", "wb") as err:
            producer = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_producer", json.dumps(pconf)],
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        measurement = Measurement(args, broker, work, topic, producer)
        # Runs alternate between the cases so that a change in machine load hits both.
        for i in range(args.runs):
            for case in args.cases:
                r = measurement.run(case, i)
                runs.append(r)
                extra = f", close() took {r['leave_close_s']:.3f} s" if case == "leave" else ""
                print(f"{case:5} run {i + 1}/{args.runs}: partitions {r['victim_partitions']} consumed again after "
                      f"{r['consumed_again_s']:.3f} s (other members told to rejoin at {r['survivors_revoked_s']} "
                      f"and {r['survivors_revoked_last_s']} s, reassigned at {r['reassigned_s']:.3f} s, all {args.partitions} partitions flowing at "
                      f"{r['all_partitions_consumed_s']:.3f} s{extra})", flush=True)
    except Failure as e:
        failure = str(e)
    except KeyboardInterrupt as e:
        failure = f"interrupted ({e or 'SIGINT'})"
    finally:
        if measurement is not None:
            measurement.kill_all()
        producer_counts = None
        if producer is not None:
            if producer.poll() is None:
                producer.send_signal(signal.SIGTERM)
            try:
                producer.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                producer.kill()
                producer.wait()
            try:
                producer_counts = json.loads((work / "producer.out").read_text().strip().splitlines()[-1])
            except (OSError, ValueError, IndexError):
                pass
        broker.stop()
        log_lines = broker.log_lines()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"measure-rebalance: kept {work}", file=sys.stderr)

    if failure is not None:
        print(f"measure-rebalance: FAILED: {failure}", file=sys.stderr)
        return 1

    broker_group_events(log_lines, runs)
    problems = [line for line in log_lines if (m := LOG_LINE.match(line)) and m.group(2) in ("WARN", "ERROR")]
    # glommio logs one ERROR per file when it cannot probe io_uring iopoll support (it then
    # uses the ordinary ring); counted apart from the rest.
    iopoll = [line for line in problems if "probing iopoll support" in line]
    others = [line for line in problems if "probing iopoll support" not in line]
    summary = {c: summarize([r["consumed_again_s"] for r in runs if r["case"] == c]) for c in args.cases}
    print("summary (seconds from kill / close() until every partition of that member was consumed again):")
    for c in args.cases:
        s = summary[c]
        print(f"  {c:5} min {s['min']:.3f}  median {s['median']:.3f}  max {s['max']:.3f}  "
              f"({len([r for r in runs if r['case'] == c])} runs)")
    for r in runs:
        print(f"  {r['case']:5} run {r['run']}: broker removed the member at {r['broker_member_removed_s']} s, "
              f"group stable again at {r['broker_group_stable_s']} s")
    print(f"broker log: {len(others)} WARN/ERROR line(s), plus {len(iopoll)} glommio iopoll-probe ERROR line(s); "
          f"broker exit status {broker.exit_code}")
    for line in others[:10]:
        print(f"  {line}")
    if producer_counts:
        print(f"producer: {producer_counts}")

    if args.json:
        doc = {
            "what": "consumer-group rebalance time: seconds from a member's SIGKILL (kill) or the start of its "
                    "close() (leave) until every partition it owned has delivered a record to another member",
            "command": "scripts/measure-rebalance" + "".join(" " + shlex.quote(a) for a in argv),
            "timestamp": started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": {
                "cores": os.cpu_count(),
                "kernel": platform.release(),
                "loadavg_start": [round(x, 2) for x in load_start],
                "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                "python": platform.python_version(),
                "confluent_kafka": confluent_kafka.__version__,
                "librdkafka": libversion()[0],
            },
            "settings": {
                "session_timeout_ms": args.session_timeout_ms,
                "heartbeat_interval_ms": args.heartbeat_interval_ms,
                "runs": args.runs,
                "cases": args.cases,
                "partitions": args.partitions,
                "consumers": args.consumers,
                "produce_interval_ms": args.interval_ms,
                "partition_assignment_strategy": "librdkafka default (range,roundrobin; eager)",
                "auto_offset_reset": "latest",
                "timeout_s": args.timeout,
                "seed": args.seed,
                "broker": {"shards": args.shards, "config": config.strip().splitlines()},
            },
            "summary_s": summary,
            "runs": runs,
            "producer": producer_counts,
            "broker_log": {"warn_error_lines": len(others), "glommio_iopoll_probe_errors": len(iopoll),
                           "first_warn_error_lines": others[:20], "exit_status": broker.exit_code},
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_consumer":
        child_consumer(json.loads(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "_producer":
        child_producer(json.loads(sys.argv[2]))
    else:
        sys.exit(main(sys.argv[1:]))
