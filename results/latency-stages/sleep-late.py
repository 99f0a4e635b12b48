#!/usr/bin/env python3
"""How late a plain 1 ms sleep wakes on this machine: the floor under any
latency that includes a thread waking up (no broker involved)."""
import time

late = []
for _ in range(5000):
    t = time.perf_counter()
    time.sleep(0.001)
    late.append((time.perf_counter() - t - 0.001) * 1000)
late.sort()
n = len(late)
print("sleep(1 ms) lateness, ms: p50 %.3f  p99 %.3f  p99.9 %.3f  max %.3f"
      % (late[n // 2], late[int(n * 0.99)], late[int(n * 0.999)], late[-1]))
