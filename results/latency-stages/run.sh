#!/usr/bin/env bash
# Where produce and fetch spend their time at 50% of the broker's maximum
# and at 10k msgs/s (issue 18). Starts `strom serve --stage-latency`,
# measures the maximum with strom-bench, then runs at half of it and at
# 10k msgs/s, and prints the broker's stage breakdown of each run next to
# the harness's publish and end-to-end latency.
#
# Usage: results/latency-stages/run.sh OUT_DIR [-- strom-bench args...]
#   STROM_BIN, STROM_BENCH_BIN: the binaries (default target/release/...)
#   SHARDS: `--shards` of the broker (default: all cores)
#   e.g. SHARDS=1 results/latency-stages/run.sh /work/lat -- --cpus 1
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: run.sh OUT_DIR [-- strom-bench args...]}
shift
[ "${1:-}" = "--" ] && shift
strom=${STROM_BIN:-$root/target/release/strom}
bench=${STROM_BENCH_BIN:-$root/target/release/strom-bench}
workload=$root/bench-harness/workloads/1-topic-16-partitions-1kb.yaml
port=19292
mkdir -p "$out"
shards=()
[ -n "${SHARDS:-}" ] && shards=(--shards "$SHARDS")

start_broker() { # name
    rm -rf "$out/data" "$out/stages-$1"
    "$strom" serve --data-dir "$out/data" --listen "127.0.0.1:$port" "${shards[@]}" \
        --stage-latency "$out/stages-$1" >"$out/broker-$1.log" 2>&1 &
    broker=$!
    # Steal, and the shards' CPU time and run-queue wait, a line a second.
    mkdir -p "$out/stages-$1"
    python3 "$root/results/latency-stages/cpu-sample.py" "$broker" "$out/stages-$1/cpu.jsonl" &
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "broker did not start" >&2; exit 1
}
stop_broker() { kill "$broker"; wait "$broker" || true; wait; }

run() { # name rate [strom-bench args...]
    local name=$1 rate=$2
    shift 2
    start_broker "$name"
    "$bench" run --bootstrap "127.0.0.1:$port" --workload "$workload" --out "$out" \
        --duration 20 --warmup 5 --rate "$rate" --name "$name" --quiet \
        --topic-config retention.bytes=268435456 "$@" >/dev/null 2>&1 || true
    # The shards write a line a second: the last one after the run.
    sleep 1.5
    stop_broker
    python3 - "$out/$name.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p, e = d["publish_latency_ms"], d["e2e_latency_ms"]
print(f"== {sys.argv[1]}: {d['produce_msgs_per_s']:.0f} msgs/s, harness {d['harness_cpu_cores']:.2f} cores")
print(f"   publish p50/p99/p99.9 {p['p50']:.2f} / {p['p99']:.2f} / {p['p999']:.2f} ms; "
      f"end-to-end {e['p50']:.2f} / {e['p99']:.2f} / {e['p999']:.2f} ms")
PY
    # The warm-up's seconds are left out.
    python3 "$root/results/latency-stages/breakdown.py" "$out/stages-$name" --skip-s 6 --last-s 20 \
        --json "$out/stages-$name.json"
}

run max 0 "$@"
max=$(python3 -c "import json; print(int(json.load(open('$out/max.json'))['produce_msgs_per_s']))")
run half $((max / 2)) "$@"
run rate-10k 10000 "$@"
