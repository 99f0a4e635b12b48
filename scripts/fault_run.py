"""A randomized fault run on three local `strom serve` nodes (issue 15,
check 4), replayable from its printed seed.

Run through scripts/fault-run (it picks the venv's python); the compat test
tests/compat/test_fault_run.py imports `run` and `check` from here.

Three nodes (voters and brokers, 2 shards each, Strom's default settings,
so `broker.session.timeout.ms` 2500), each launched inside its own
`netcut.NetCut` group so it can be cut off the network. One topic of
`--partitions` partitions, RF=3, `min.insync.replicas=2`.

Workload, for the whole run:
- `--producers` idempotent acks=all confluent-kafka producers, each paced at
  `--rate` records/s round-robin over the partitions, each value unique
  (`w<producer>-<seq>`); every acknowledgement's (partition, offset, value)
  is kept.
- an assign() consumer reading every partition from offset 0;
- a group (subscribe) consumer with auto-commit, its assignment events
  (assign, revoke, lost) kept in order with the records it read.

Faults, from `random.Random(seed)`: one node at a time, a random pause
between faults, each of one kind:
- kill: SIGKILL, restart after a delay;
- term: SIGTERM (a controlled shutdown), restart after a delay;
- pause: SIGSTOP, SIGCONT after a delay, mostly longer than the 2.5 s
  session (the node is fenced while frozen), sometimes shorter;
- cut: every packet to and from the node dropped, healed after a delay.
The schedule is drawn before the run from the seed and `--duration` alone,
so the same two replay the same faults on the same nodes in the same order
(the timing of the cluster around them differs from run to run).

At the end every node is healed, resumed and started, the run waits until
every partition has all three replicas in its ISR, stops the producers
(flush: nothing left unacknowledged), lets the consumers read to the end,
reads every partition back from offset 0 and checks (`check`):
1. every acknowledged record is in the log at its acknowledged offset;
2. no (partition, offset) was ever seen with two different values (by
   producers, consumers or the read-back);
3. the assign() consumer's offsets strictly increase per partition and skip
   none; the group consumer's strictly increase within one assignment (after
   a rebalance it may restart from the committed position);
4. each value is in the log at most once (the idempotent producers'
   exactly-once);
5. the replicas' segment files are byte-identical over the whole log on all
   three nodes (scripts/compare-replicas).
A violation exits 1; the JSON summary (seed, duration, faults by kind,
records, violations) is printed and written with `--json`.
"""

import argparse
import json
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "compat"))

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from netcut import NetCut  # noqa: E402
from test_cluster import start_all, voter_nodes, wait_until  # noqa: E402
from test_cluster_replication import metadata_v7  # noqa: E402
from test_replication_failover import read_partition  # noqa: E402
from test_replication_follow import replicas_match  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from measure_failover import machine  # noqa: E402

TOPIC = "faults"
KINDS = ("kill", "term", "pause", "cut")
# A paused node misses heartbeats for longer than the 2.5 s session this
# often, so it is fenced while frozen and comes back to a moved cluster.
PAUSE_FENCED_SHARE = 0.7
# Bounds of the waits of the final phase, seconds.
CONVERGE_TIMEOUT_S = 180.0
FLUSH_TIMEOUT_S = 120.0
# Violations listed in the summary (all are counted).
MAX_LISTED = 50
# librdkafka logs every refused or dropped connection at level 3 to 6; a
# fault run causes hundreds. Errors that matter reach the callbacks.
CLIENT_LOG_LEVEL = 2


@dataclass
class Fault:
    gap_s: float  # pause before the fault, nothing faulted
    node: int  # node id, 1..3
    kind: str
    duration_s: float  # how long the node stays faulted


def schedule(seed: int, duration_s: float) -> list[Fault]:
    """The faults of a run: drawn from the seed and the duration alone,
    until their nominal gaps and durations fill `duration_s`."""
    rng = random.Random(seed)
    faults, total = [], 0.0
    while True:
        gap = round(rng.uniform(1.0, 5.0), 2)
        node = rng.randint(1, 3)
        kind = rng.choice(KINDS)
        if kind in ("kill", "term"):
            dur = rng.uniform(0.5, 6.0)
        elif kind == "pause":
            dur = rng.uniform(3.0, 8.0) if rng.random() < PAUSE_FENCED_SHARE else rng.uniform(0.3, 2.0)
        else:
            dur = rng.uniform(2.0, 10.0)
        dur = round(dur, 2)
        if total + gap + dur > duration_s and faults:
            return faults
        faults.append(Fault(gap, node, kind, dur))
        total += gap + dur
        if total >= duration_s:
            return faults


class Clock:
    """Seconds since the run started, for every timestamp it records."""

    def __init__(self):
        self.t0 = time.monotonic()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 3)


def file_logger(name: str, path: Path) -> logging.Logger:
    """A logger that writes only to `path` (for librdkafka's debug lines)."""
    logger = logging.getLogger(f"fault-run.{name}")
    logger.propagate = False
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return logger


class Writer:
    """A paced idempotent acks=all producer on a thread: keeps every
    acknowledgement as (partition, offset, value, time)."""

    def __init__(self, index: int, bootstrap: str, rate: float, partitions: int, clock: Clock,
                 debug_dir: Path | None = None):
        self.index = index
        self.rate = rate
        self.partitions = partitions
        self.clock = clock
        self.lock = threading.Lock()
        self.acked = []
        self.errors = []
        self.raised = []  # exceptions produce() raised: (value, error, time)
        self.sent = 0
        self.stopping = threading.Event()
        # Retries never give up within the run: a delivery error is not a
        # violation, but it is counted and makes the run less telling.
        conf = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                "linger.ms": 5, "message.timeout.ms": 600000, "log_level": CLIENT_LOG_LEVEL}
        extra = {}
        if debug_dir is not None:
            # librdkafka's idempotence decisions (drains, epoch bumps and
            # their reasons), one file per producer.
            conf.update({"debug": "eos", "log_level": 7})
            extra["logger"] = file_logger(f"producer-{index}", debug_dir / f"producer-{index}.log")
        self.producer = Producer(conf, **extra)
        self.thread = threading.Thread(target=self.run, daemon=True)

    def report(self, err, msg):
        t = self.clock.now()
        with self.lock:
            if err is not None:
                self.errors.append((msg.value().decode(), str(err), t))
            else:
                self.acked.append((msg.partition(), msg.offset(), msg.value(), t))

    def run(self):
        start = time.monotonic()
        while not self.stopping.is_set():
            due = start + self.sent / self.rate
            now = time.monotonic()
            if now < due:
                self.producer.poll(min(due - now, 0.05))
                continue
            value = f"w{self.index}-{self.sent}".encode()
            try:
                self.producer.produce(TOPIC, value=value, partition=self.sent % self.partitions,
                                      on_delivery=self.report)
            except BufferError:
                self.producer.poll(0.05)
                continue
            except KafkaException as e:
                # The application would see this: a violation, but the run
                # goes on (the record is produced again at the next turn).
                with self.lock:
                    self.raised.append((value.decode(), str(e), self.clock.now()))
                self.producer.poll(0.05)
                continue
            self.sent += 1
            self.producer.poll(0)

    def stop(self) -> int:
        """Stops producing; the count of records still unacknowledged after
        the flush."""
        self.stopping.set()
        self.thread.join(30)
        return self.producer.flush(FLUSH_TIMEOUT_S)


class Reader:
    """A consumer on a thread. `events` keeps, in order, ("msg", partition,
    offset, value, time) per record read and, for the group consumer,
    ("assign" | "revoke" | "lost", [partitions], time) per rebalance event."""

    def __init__(self, name: str, bootstrap: str, partitions: int, clock: Clock, group: bool,
                 debug_dir: Path | None = None):
        self.name = name
        self.clock = clock
        self.events = []
        self.errors = []
        self.positions = {}  # partition -> next offset to read
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        conf = {"bootstrap.servers": bootstrap, "auto.offset.reset": "earliest",
                "enable.partition.eof": False, "log_level": CLIENT_LOG_LEVEL}
        if group:
            conf.update({"group.id": "fault-run", "enable.auto.commit": True, "auto.commit.interval.ms": 1000})
        else:
            conf.update({"group.id": "fault-run-assign", "enable.auto.commit": False})
        extra = {}
        if debug_dir is not None:
            # Why a consumer's position moves: fetch errors, offset
            # validation (OffsetForLeaderEpoch) and resets.
            conf.update({"debug": "consumer,fetch,topic", "log_level": 7})
            slug = name.replace(" ", "-")
            extra["logger"] = file_logger(slug, debug_dir / f"{slug}.log")
        self.consumer = Consumer(conf, **extra)
        if group:
            self.consumer.subscribe([TOPIC], on_assign=self.on("assign"), on_revoke=self.on("revoke"),
                                    on_lost=self.on("lost"))
        else:
            self.consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(partitions)])
        self.thread = threading.Thread(target=self.run, daemon=True)

    def on(self, kind: str):
        def record(_consumer, parts):
            with self.lock:
                self.events.append((kind, sorted(tp.partition for tp in parts), self.clock.now()))
        return record

    def run(self):
        while not self.stopping.is_set():
            msgs = self.consumer.consume(500, 0.5)
            t = self.clock.now()
            with self.lock:
                for m in msgs:
                    if m.error():
                        self.errors.append((str(m.error()), t))
                        continue
                    self.events.append(("msg", m.partition(), m.offset(), m.value(), t))
                    self.positions[m.partition()] = m.offset() + 1
        self.consumer.close()

    def stop(self):
        self.stopping.set()
        self.thread.join(60)

    def at_end(self, ends: dict) -> bool:
        with self.lock:
            return all(self.positions.get(p, 0) >= end for p, end in ends.items())


def check(acked, assign_events, group_events, log) -> list[tuple[float | None, str]]:
    """The violations of a run, as (time or None, message).

    acked: [(partition, offset, value, time)] of every producer;
    assign_events, group_events: Reader.events of the two consumers;
    log: {partition: [(offset, value)]} read back from offset 0 at the end.
    """
    out = []
    seen = {}  # (partition, offset) -> (value, who, time)

    def saw(p, o, v, who, t):
        first = seen.setdefault((p, o), (v, who, t))
        if first[0] != v:
            out.append((t, f"partition {p} offset {o} read with two values: {first[0]!r} ({first[1]} "
                           f"at {first[2]}s) and {v!r} ({who})"))

    for p, o, v, t in acked:
        if o is not None:
            saw(p, o, v, "acknowledged", t)
    for p, records in log.items():
        for o, v in records:
            saw(p, o, v, "read back", None)
    for name, events in (("assign consumer", assign_events), ("group consumer", group_events)):
        last = {}
        for e in events:
            if e[0] != "msg":
                for p in e[1]:
                    last.pop(p, None)  # a new assignment may restart from the committed offset
                continue
            _, p, o, v, t = e
            saw(p, o, v, name, t)
            prev = last.get(p)
            if prev is not None and o <= prev:
                out.append((t, f"{name}: partition {p} offset {o} read after offset {prev} (moved backward)"))
            elif name == "assign consumer" and o != (prev + 1 if prev is not None else 0):
                out.append((t, f"{name}: partition {p} offset {o} read after "
                               f"{prev if prev is not None else 'nothing'} (skipped offsets)"))
            last[p] = o

    at = {p: dict(records) for p, records in log.items()}
    values = {p: {v for _, v in records} for p, records in log.items()}
    for p, o, v, t in acked:
        # librdkafka acknowledges some records without their offset (None:
        # a retried batch the broker had already written); those must be
        # in the log somewhere.
        if (o not in at.get(p, {})) if o is not None else (v not in values.get(p, set())):
            out.append((t, f"acknowledged record {v!r} at partition {p} offset {o} is not in the log "
                           f"(read back: {len(at.get(p, {}))} records)"))
    for p, records in log.items():
        offsets = [o for o, _ in records]
        if offsets != list(range(len(offsets))):
            out.append((None, f"partition {p}: the log read back is not offsets 0..{len(offsets)} in order"))
        counts = Counter(v for _, v in records)
        for v, n in counts.items():
            if n > 1:
                where = [o for o, vv in records if vv == v]
                out.append((None, f"partition {p}: value {v!r} is in the log {n} times (offsets {where[:5]})"))
    return out


def last_fault_before(faults_log: list[dict], t: float | None) -> str:
    """When a violation was seen and which fault came last before it."""
    if t is None:
        return ""
    before = [f for f in faults_log if f["at_s"] <= t]
    if not before:
        return f" (at {t}s, before any fault)"
    f = before[-1]
    return f" (at {t}s; last fault before: {f['kind']} of node {f['node']} at {f['at_s']}s for {f['duration_s']}s)"


def full_isrs(nodes, partitions: int) -> bool:
    """Every node shows every partition with all three replicas in its ISR."""
    for n in nodes:
        ps = partitions_of(n)
        if not ps or len(ps) != partitions or any(len(s["isr"]) != 3 for s in ps.values()):
            return False
    return True


def partitions_of(node):
    err, parts = metadata_v7(node, TOPIC)
    return parts if err == 0 else None


class Cluster:
    """The three nodes, each inside its own NetCut, and the faults on them."""

    def __init__(self, base: Path):
        _, self.nodes = voter_nodes(base, "")
        self.cuts = {}
        for n in self.nodes:
            self.cuts[n.node_id] = NetCut(f"n{n.node_id}")
            n.preexec = self.cuts[n.node_id].enter
        self.paused = set()

    def node(self, node_id: int):
        return next(n for n in self.nodes if n.node_id == node_id)

    def apply(self, fault: Fault, log):
        """Applies one fault and undoes it after its duration; returns when
        the node serves again (a restarted node: its port answers). Logs
        what another node shows of the partitions just before the undo."""
        n = self.node(fault.node)
        if fault.kind in ("kill", "term"):
            code = n.stop(signal.SIGKILL if fault.kind == "kill" else signal.SIGTERM)
            if fault.kind == "term" and code != 0:
                log(f"node {n.node_id} exited with {code} after SIGTERM")
            time.sleep(fault.duration_s)
            self.observe(n, log)
            n.start()
        elif fault.kind == "pause":
            n.proc.send_signal(signal.SIGSTOP)
            self.paused.add(n.node_id)
            time.sleep(fault.duration_s)
            self.observe(n, log)
            n.proc.send_signal(signal.SIGCONT)
            self.paused.discard(n.node_id)
        else:
            self.cuts[n.node_id].cut()
            time.sleep(fault.duration_s)
            self.observe(n, log)
            self.cuts[n.node_id].heal()

    def observe(self, victim, log):
        """Logs the leaders and ISRs another node shows: whether the fault
        moved anything (a short pause moves nothing)."""
        other = next(n for n in self.nodes if n is not victim)
        try:
            parts = partitions_of(other)
        except Exception as e:  # noqa: BLE001 - only informative
            parts = repr(e)
        if isinstance(parts, dict):
            parts = " ".join(f"p{p}:leader {s['leader']} isr {sorted(s['isr'])}" for p, s in sorted(parts.items()))
        log(f"node {victim.node_id}  node {other.node_id} shows {parts}")

    def restore(self):
        """Heals, resumes and starts every node."""
        for n in self.nodes:
            self.cuts[n.node_id].heal()
            if n.alive() and n.node_id in self.paused:
                n.proc.send_signal(signal.SIGCONT)
                self.paused.discard(n.node_id)
        for n in self.nodes:
            if not n.alive():
                n.start()

    def close(self):
        for n in self.nodes:
            if n.alive():
                n.proc.send_signal(signal.SIGCONT)
                n.stop(signal.SIGKILL)
        for cut in self.cuts.values():
            cut.close()


def run(seed: int, duration_s: float, base: Path, partitions: int = 3, producers: int = 2,
        rate: float = 100.0, out=print) -> dict:
    """One fault run in `base` (node dirs and logs stay there); returns the
    summary, whose "violations" is empty when every check passed. Every
    node is killed and every cut closed on the way out."""
    faults = schedule(seed, duration_s)
    out(f"fault-run: seed {seed} (replay: scripts/fault-run --seed {seed} --duration {duration_s:g}); "
        f"{len(faults)} faults planned; nodes in {base}")
    clock = Clock()

    def log(msg):
        out(f"{clock.now():9.2f}s  {msg}")

    cluster = Cluster(base)
    writers, readers = [], []
    faults_log, notes = [], []
    violations = []
    try:
        start_all(cluster.nodes)
        bootstrap = ",".join(n.bootstrap for n in cluster.nodes)
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": CLIENT_LOG_LEVEL})
        admin.create_topics([NewTopic(TOPIC, num_partitions=partitions, replication_factor=3,
                                      config={"min.insync.replicas": "2"})])[TOPIC].result(timeout=30)
        wait_until("every partition with three in-sync replicas", lambda: full_isrs(cluster.nodes, partitions))
        clock = Clock()
        debug_dir = base if os.environ.get("STROM_FAULT_CLIENT_DEBUG") else None
        writers = [Writer(i, bootstrap, rate, partitions, clock, debug_dir) for i in range(producers)]
        readers = [Reader("assign consumer", bootstrap, partitions, clock, group=False, debug_dir=debug_dir),
                   Reader("group consumer", bootstrap, partitions, clock, group=True, debug_dir=debug_dir)]
        for w in writers + readers:
            w.thread.start()
        log(f"workload started: {producers} producers at {rate:g} records/s each, "
            f"an assign() and a group consumer")

        for fault in faults:
            time.sleep(fault.gap_s)
            at = clock.now()
            faults_log.append({"at_s": at, **asdict(fault)})
            log(f"node {fault.node}  {fault.kind:<5}  {fault.duration_s:5.2f}s")
            try:
                cluster.apply(fault, log)
            except Exception as e:  # noqa: BLE001 - a node that does not come back is a finding
                violations.append((clock.now(), f"{fault.kind} of node {fault.node}: {e}"))
                log(f"node {fault.node} did not come back: {e}")
            acked = sum(len(w.acked) for w in writers)
            log(f"node {fault.node}  back ({acked} records acknowledged so far)")
        faults_end = clock.now()

        log("restoring every node; waiting for full ISRs")
        cluster.restore()
        try:
            wait_until("every node to show every partition with three in-sync replicas",
                       lambda: full_isrs(cluster.nodes, partitions), timeout=CONVERGE_TIMEOUT_S)
        except AssertionError as e:
            violations.append((clock.now(), f"after the faults: {e}"))
        log("stopping the producers")
        for w in writers:
            left = w.stop()
            if left:
                violations.append((clock.now(), f"producer {w.index}: {left} records unacknowledged "
                                                f"{FLUSH_TIMEOUT_S:g} s after it stopped"))
        ends = high_watermarks(bootstrap, partitions)
        log(f"log ends {ends}; waiting for the consumers to read to them")
        for r in readers:
            try:
                wait_until(f"the {r.name} to read to the log ends", lambda r=r: r.at_end(ends),
                           timeout=CONVERGE_TIMEOUT_S)
            except AssertionError as e:
                violations.append((clock.now(), str(e)))
            r.stop()
        log("reading back every partition from offset 0")
        back = {}
        for p in range(partitions):
            try:
                back[p] = read_partition(bootstrap, TOPIC, p, ends[p])
            except AssertionError as e:
                violations.append((clock.now(), f"read-back: {e}"))
                back[p] = []
        for w in writers:
            for v, err, t in w.raised:
                violations.append((t, f"producer {w.index}: produce() raised for {v}: {err}"))
        acked = [a for w in writers for a in w.acked]
        violations += check(acked, readers[0].events, readers[1].events, back)
        log("comparing the replicas' segment files")
        for p in range(partitions):
            try:
                wait_until(f"{TOPIC}-{p}: all three replicas byte-identical over offsets 0..{ends[p]}",
                           lambda p=p: replicas_match(cluster.nodes, TOPIC, p, ends[p]), timeout=60)
            except AssertionError as e:
                violations.append((clock.now(), str(e)))

        for w in writers:
            for v, err, t in w.errors[:5]:
                notes.append(f"producer {w.index}: delivery error for {v} at {t}s: {err}")
        for r in readers:
            for err, t in r.errors[:5]:
                notes.append(f"{r.name}: error at {t}s: {err}")
        group_events = readers[1].events
        summary = {
            "seed": seed,
            "replay": f"scripts/fault-run --seed {seed} --duration {duration_s:g}",
            "duration_s": duration_s,
            "faults_s": faults_end,
            "run_s": clock.now(),
            "faults": len(faults_log),
            "faults_by_kind": {k: sum(1 for f in faults_log if f["kind"] == k) for k in KINDS},
            "paused_longer_than_session": sum(1 for f in faults_log if f["kind"] == "pause" and f["duration_s"] > 2.5),
            "records_acked": len(acked),
            "delivery_errors": sum(len(w.errors) for w in writers),
            "produce_exceptions": sum(len(w.raised) for w in writers),
            "records_read_assign_consumer": sum(1 for e in readers[0].events if e[0] == "msg"),
            "records_read_group_consumer": sum(1 for e in group_events if e[0] == "msg"),
            "group_rebalance_events": sum(1 for e in group_events if e[0] != "msg"),
            "consumer_errors": sum(len(r.errors) for r in readers),
            "records_read_back": sum(len(v) for v in back.values()),
            "log_ends": ends,
            "violations_count": len(violations),
            "violations": [m + last_fault_before(faults_log, t) for t, m in violations[:MAX_LISTED]],
            "notes": notes,
            "fault_log": faults_log,
        }
        return summary
    finally:
        for w in writers:
            w.stopping.set()
        for r in readers:
            r.stopping.set()
        cluster.close()


def high_watermarks(bootstrap: str, partitions: int) -> dict:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "fault-run-ends", "log_level": CLIENT_LOG_LEVEL})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10, cached=False)[1]
                for p in range(partitions)}
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, help="replay this run's faults (default: a fresh random seed)")
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of faults (nominal)")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--rate", type=float, default=100.0, help="records per second per producer")
    ap.add_argument("--keep", action="store_true", help="keep the nodes' data dirs and logs")
    ap.add_argument("--json", type=Path, help="write the summary here")
    args = ap.parse_args()
    if os.environ.get("STROM_BIN"):
        os.environ["STROM_BIN"] = str(Path(os.environ["STROM_BIN"]).resolve())
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    base = Path(tempfile.mkdtemp(prefix="strom-fault-run-"))
    # The commit at the start: the tree may move on during a long run.
    info = machine()
    ok = False
    try:
        summary = run(seed, args.duration, base, args.partitions, args.producers, args.rate,
                      out=lambda s: print(s, flush=True))
        ok = not summary["violations"]
        result = {
            "command": "scripts/fault-run " + " ".join(sys.argv[1:]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": info,
            "settings": {"partitions": args.partitions, "replication_factor": 3, "min.insync.replicas": 2,
                         "producers": args.producers, "rate_per_producer": args.rate,
                         "broker.session.timeout.ms": "default (2500)"},
            **summary,
        }
        brief = {k: v for k, v in result.items() if k != "fault_log"}
        print(json.dumps(brief, indent=2))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        if not ok:
            print(f"fault-run: {summary['violations_count']} violations (seed {seed}); first: "
                  f"{summary['violations'][0]}\nreplay: {summary['replay']}; node logs in {base}",
                  file=sys.stderr)
            sys.exit(1)
        print(f"fault-run: no violations (seed {seed})")
    finally:
        if ok and not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
