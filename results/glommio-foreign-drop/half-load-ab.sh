#!/bin/bash
# Interleaved A/B of two strom builds: a single node (two shards) under
# strom-bench's 16-partition workload at a fixed 275,275 msgs/s (about half
# its maximum on the 2-core VM), 5 s warmup + 20 s.
# usage: half-load-ab.sh OLD_STROM NEW_STROM PAIRS
set -u
old=$1 new=$2 pairs=$3
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
for i in $(seq 1 "$pairs"); do
  for build in old new; do
    bin=$old; [ "$build" = new ] && bin=$new
    d=$(mktemp -d /tmp/strom-ab.XXXX)
    "$bin" serve --data-dir "$d/data" --listen 127.0.0.1:19294 >/dev/null 2>"$d/broker.log" &
    broker=$!
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/19294) 2>/dev/null && break; sleep 0.1; done
    target/release/strom-bench run --bootstrap 127.0.0.1:19294 \
      --workload bench-harness/workloads/1-topic-16-partitions-1kb.yaml \
      --out "$d/out" --duration 20 --warmup 5 --rate 275275 --name ab --quiet >"$d/bench.log" 2>&1
    bench=$?
    if kill -0 $broker 2>/dev/null; then kill $broker; wait $broker; state=alive; else wait $broker; state="exited $?"; fi
    echo "pair $i build=$build bench_rc=$bench broker=$state $(grep -o 'double free[^"]*' "$d/broker.log" | head -1)"
    rm -rf "$d"
  done
done
