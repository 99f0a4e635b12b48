#!/usr/bin/env python3
"""Samples, once a second, where the CPU went: the machine's steal, iowait
and idle time (/proc/stat), and for each thread of the broker its CPU time
and its run-queue wait (/proc/PID/task/TID/schedstat: time it was runnable
but not running). A stall in which a shard's 1 ms timer fires tens of
milliseconds late (`timer.late`) is then one of:
- the hypervisor running someone else (steal),
- the shard thread runnable behind another thread of this machine (its
  run-queue wait: the harness, another shard, the kernel),
- or a long task on the shard itself (its CPU time, with no wait).

Writes one JSON line a second to OUT, with `t_ms` (Unix ms, as the
broker's stage lines) until PID exits; `breakdown.py DIR` prints it next to
the worst seconds when OUT is DIR/cpu.jsonl.

Usage: cpu-sample.py PID OUT
"""
import json
import os
import sys
import time

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def machine():
    """(steal, iowait, idle) in ms, summed over every CPU."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return {"steal": steal * TICK_MS, "iowait": iowait * TICK_MS, "idle": idle * TICK_MS}


def threads(pid):
    """{thread name (with its tid when names repeat): (cpu ms, run-queue wait ms)}."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                on_cpu_ns, waiting_ns, _ = (int(x) for x in f.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        out[f"{name}/{tid}"] = (on_cpu_ns / 1e6, waiting_ns / 1e6)
    return out


def main():
    pid, path = int(sys.argv[1]), sys.argv[2]
    before_m, before_t = machine(), threads(pid)
    with open(path, "a") as out:
        while os.path.exists(f"/proc/{pid}"):
            time.sleep(1.0)
            try:
                now_m, now_t = machine(), threads(pid)
            except FileNotFoundError:
                break
            line = {"t_ms": int(time.time() * 1000)}
            line.update({k: round(now_m[k] - before_m[k], 1) for k in now_m})
            line["threads"] = {
                name: {"cpu_ms": round(cpu - before_t[name][0], 2),
                       "runq_ms": round(wait - before_t[name][1], 2)}
                for name, (cpu, wait) in now_t.items() if name in before_t
            }
            out.write(json.dumps(line) + "\n")
            out.flush()
            before_m, before_t = now_m, now_t


if __name__ == "__main__":
    main()
