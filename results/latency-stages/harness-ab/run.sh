#!/usr/bin/env bash
# strom-bench before and after 0128f67 (a lingered batch is sealed only when
# a request can go out) against the same broker build, interleaved, at one
# fixed rate: does the half-load tail come from the harness's producer?
#
# Usage: run.sh OUT_DIR OLD_BENCH NEW_BENCH RATE PAIRS
#   STROM_BIN: the broker (default target/release/strom)
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
out=$1 old=$2 new=$3 rate=$4 pairs=$5
strom=${STROM_BIN:-$root/target/release/strom}
workload=$root/bench-harness/workloads/1-topic-16-partitions-1kb.yaml
port=19293
mkdir -p "$out"
for i in $(seq "$pairs"); do
  # Alternate which harness goes first.
  if [ $((i % 2)) -eq 1 ]; then order="old new"; else order="new old"; fi
  for who in $order; do
    bin=$old; [ "$who" = new ] && bin=$new
    rm -rf "$out/data"
    "$strom" serve --data-dir "$out/data" --listen "127.0.0.1:$port" >"$out/broker.log" 2>&1 &
    broker=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    "$bin" run --bootstrap "127.0.0.1:$port" --workload "$workload" --out "$out" \
      --duration 20 --warmup 5 --rate "$rate" --name "$who-$i" --quiet \
      --topic-config retention.bytes=268435456 >/dev/null
    kill "$broker"; wait "$broker" || true
    python3 - "$out/$who-$i.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p, e = d["publish_latency_ms"], d["e2e_latency_ms"]
print(f"{sys.argv[1].rsplit('/', 1)[1]}: {d['produce_msgs_per_s']:.0f} msgs/s; publish p50/p99/p99.9 "
      f"{p['p50']:.2f} / {p['p99']:.2f} / {p['p999']:.2f} ms; e2e {e['p50']:.2f} / {e['p99']:.2f} / {e['p999']:.2f} ms")
PY
  done
done
rm -rf "$out/data"
