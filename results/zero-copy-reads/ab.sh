#!/usr/bin/env bash
# Two Strom builds at max rate, interleaved: strom-bench's 16-partition 1 KiB
# workload (acks=1, one consumer subscription reading everything back), a
# fresh broker per run, the order alternating between rounds. In round 1
# each broker is profiled for 8 s in the middle of its run
# (`perf record -F 499 -g`); the folded top symbols go to OUT_DIR.
#
# Usage: results/zero-copy-reads/ab.sh OLD_BIN NEW_BIN OUT_DIR [ROUNDS] [DURATION]
#   STROM_BENCH_BIN: the harness (default target/release/strom-bench)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
old=${1:?usage: ab.sh OLD_BIN NEW_BIN OUT_DIR [ROUNDS] [DURATION]}
new=${2:?}
out=${3:?}
rounds=${4:-3}
duration=${5:-20}
bench=${STROM_BENCH_BIN:-$root/target/release/strom-bench}
workload=$root/bench-harness/workloads/1-topic-16-partitions-1kb.yaml
port=19494
mkdir -p "$out"
out=$(cd "$out" && pwd)
echo "# $(date -u +%FT%TZ) $(nproc) cores; old $old, new $new"
for round in $(seq 1 "$rounds"); do
    builds=(old new)
    [ $((round % 2)) -eq 0 ] && builds=(new old)
    for build in "${builds[@]}"; do
        bin=$old
        [ "$build" = new ] && bin=$new
        rm -rf "$out/data"
        "$bin" serve --data-dir "$out/data" --listen "127.0.0.1:$port" >"$out/broker-$build-r$round.log" 2>&1 &
        broker=$!
        for _ in $(seq 300); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.1
        done
        profiler=
        if [ "$round" = 1 ] && command -v perf >/dev/null; then
            (sleep $((duration / 2)); perf record -F 499 -g -o "$out/perf-$build.data" -p "$broker" -- sleep 8 >/dev/null 2>&1) &
            profiler=$!
        fi
        name=$build-r$round
        "$bench" run --bootstrap "127.0.0.1:$port" --workload "$workload" --out "$out" \
            --duration "$duration" --warmup 3 --acks 1 --name "$name" \
            --topic-config segment.bytes=67108864 --quiet >"$out/$name.log" 2>&1
        [ -n "$profiler" ] && wait "$profiler"
        # The broker's CPU seconds (user + system) over its whole run.
        cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$broker/stat")
        kill "$broker"; wait "$broker" || true
        rm -rf "$out/data"
        python3 - "$out/$name.json" "$cpu" "$duration" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
cpu, duration = float(sys.argv[2]), float(sys.argv[3])
p, e = d["publish_latency_ms"], d["e2e_latency_ms"]
# Bytes moved over the whole run (warm-up included, as the CPU time is):
# the measured rates times the measured seconds, plus 3 s of warm-up at them.
mib = (d["produce_mib_per_s"] + d["consume_mib_per_s"]) * (duration + 3)
print(f"{sys.argv[1].rsplit('/', 1)[-1]}: produce {d['produce_msgs_per_s']:.0f} msgs/s, "
      f"consume {d['consume_msgs_per_s']:.0f} msgs/s; publish p50/p99 {p['p50']:.1f} / {p['p99']:.1f} ms; "
      f"e2e p50/p99 {e['p50']:.1f} / {e['p99']:.1f} ms; broker {cpu:.1f} CPU s, "
      f"{cpu / (mib / 1024):.2f} CPU s per GiB moved (in + out)")
PY
    done
done
for build in old new; do
    [ -f "$out/perf-$build.data" ] || continue
    perf report -i "$out/perf-$build.data" --no-children --sort symbol --stdio 2>/dev/null \
        | grep -E '^ +[0-9]' | head -25 >"$out/profile-$build.txt" || true
done
