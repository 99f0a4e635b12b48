#!/usr/bin/env bash
# One broker's share of a low-rate run (run.sh, ab.sh): strom-bench's
# 16-partition 1 KiB workload, acks=1, at RATE msgs/s with linger 0 ms and
# then 1 ms, 5 s warm-up and DURATION s measured; NAME-linger<L>.json in
# OUT_DIR, and one summary line per run.
#
# Usage: results/low-rate/both-lingers.sh BOOTSTRAP OUT_DIR NAME RATE DURATION
#   STROM_BENCH_BIN: the harness (default target/release/strom-bench)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bootstrap=$1 out=$2 name=$3 rate=$4 duration=$5
bench=${STROM_BENCH_BIN:-$root/target/release/strom-bench}
workload=$root/bench-harness/workloads/1-topic-16-partitions-1kb.yaml
for linger in 0 1; do
    run=${name/LINGER/linger$linger}
    "$bench" run --bootstrap "$bootstrap" --workload "$workload" --out "$out" \
        --duration "$duration" --warmup 5 --rate "$rate" --linger-ms "$linger" \
        --name "$run" --quiet >"$out/$run.log" 2>&1
    python3 - "$out/$run.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p, e = d["publish_latency_ms"], d["e2e_latency_ms"]
print(f"{sys.argv[1].rsplit('/', 1)[-1]}: {d['produce_msgs_per_s']:.0f} msgs/s; "
      f"publish p50/p99/p99.9 {p['p50']:.2f} / {p['p99']:.2f} / {p['p999']:.2f} ms; "
      f"e2e {e['p50']:.2f} / {e['p99']:.2f} / {e['p999']:.2f} ms")
PY
done
