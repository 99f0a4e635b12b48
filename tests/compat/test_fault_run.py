"""A randomized fault run on three `strom serve` nodes (issue 15, check 4):
about 60 s of kills, SIGTERMs, pauses and network cuts of one node at a
time under idempotent acks=all producers and two consumers, then the checks
of scripts/fault_run.py (no acknowledged record lost, no offset read with
two values, consumer offsets only moving forward, each record once in the
log, byte-identical replicas).

The seed comes from STROM_FAULT_SEED, else a fresh random one; it is
printed and is in the failure message, so a failure replays with
`STROM_FAULT_SEED=<seed> pytest test_fault_run.py` (or
`scripts/fault-run --seed <seed> --duration 60`). Needs root and nft for
the cuts (netcut.py). The longer runs are `scripts/fault-run --duration N`.
"""

import json
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import fault_run  # noqa: E402

FAULTS_S = 60.0


def test_faults_keep_every_acknowledged_record_and_the_replicas_identical(tmp_path):
    env = os.environ.get("STROM_FAULT_SEED")
    seed = int(env) if env else random.SystemRandom().randrange(2**32)
    print(f"STROM_FAULT_SEED={seed}")
    summary = fault_run.run(seed, FAULTS_S, tmp_path, rate=100.0, out=print)
    print(json.dumps({k: v for k, v in summary.items() if k != "fault_log"}, indent=2))
    replay = f"replay: STROM_FAULT_SEED={seed} pytest test_fault_run.py, or {summary['replay']}"
    assert not summary["violations"], (
        f"seed {seed}: {summary['violations_count']} violations ({replay}; node logs in {tmp_path}):\n"
        + "\n".join(summary["violations"]))
    assert summary["faults"] >= 1, summary
    assert summary["records_acked"] > 0 and summary["delivery_errors"] == 0, (seed, summary["notes"])
    assert summary["records_read_back"] == summary["records_acked"], (seed, summary)


def test_the_checker_reports_each_violation():
    """The checks of the run can fail: each kind of violation, made up."""
    log = {0: [(0, b"a"), (1, b"b"), (2, b"c")]}
    acked = [(0, 0, b"a", 1.0), (0, 1, b"b", 1.0), (0, 2, b"c", 1.0)]
    assign = [("msg", 0, o, v, 2.0) for o, v in log[0]]
    group = [("assign", [0], 1.0), *assign, ("revoke", [0], 3.0), ("assign", [0], 3.0), ("msg", 0, 1, b"b", 4.0)]
    assert fault_run.check(acked, assign, group, log) == []

    def only(violations, words):
        assert len(violations) >= 1 and all(words in m for _, m in violations), violations

    # An acknowledged record missing from the log.
    only(fault_run.check(acked + [(0, 3, b"d", 5.0)], assign, group, log), "not in the log")
    # Acknowledged without an offset: in the log somewhere, or missing.
    assert fault_run.check(acked + [(0, None, b"b", 5.0)], assign, group, log) == []
    only(fault_run.check(acked + [(0, None, b"d", 5.0)], assign, group, log), "not in the log")
    # An offset read with another value than the one acknowledged.
    only(fault_run.check(acked, assign[:2] + [("msg", 0, 2, b"x", 2.0)], group, log), "two values")
    # The assign() consumer moving backward, and skipping.
    only(fault_run.check(acked, assign + [("msg", 0, 1, b"b", 3.0)], group, log), "moved backward")
    only(fault_run.check(acked, [assign[0], assign[2]], group, log), "skipped")
    # The group consumer moving backward within one assignment.
    only(fault_run.check(acked, assign, group[:-3] + [("msg", 0, 1, b"b", 4.0)], log), "moved backward")
    # A record in the log twice (the idempotent producer's retry appended).
    twice = {0: log[0] + [(3, b"c")]}
    only(fault_run.check(acked, assign, group, twice), "in the log 2 times")


def test_the_schedule_replays_from_its_seed():
    """The same seed and duration give the same faults; a long run draws
    every kind on every node, pauses both shorter and longer than the
    2.5 s session, and fills its duration."""
    assert fault_run.schedule(7, 600) == fault_run.schedule(7, 600)
    assert fault_run.schedule(7, 600) != fault_run.schedule(8, 600)
    faults = fault_run.schedule(7, 600)
    assert {(f.kind, f.node) for f in faults} == {(k, n) for k in fault_run.KINDS for n in (1, 2, 3)}
    pauses = [f.duration_s for f in faults if f.kind == "pause"]
    assert min(pauses) < 2.5 < max(pauses)
    assert 550 <= sum(f.gap_s + f.duration_s for f in faults) <= 600
