#!/usr/bin/env bash
# Two Strom builds at a low fixed rate, interleaved: run.sh's workload
# (16 partitions, 1 KiB, acks=1, 5 requests in flight) at RATE msgs/s with
# linger 0 and 1 ms, DURATION s measured after a 5 s warm-up, each build on
# a fresh broker per round, the order alternating between rounds. Prints
# one line per run and keeps the JSON and stage breakdowns in OUT_DIR.
#
# Usage: results/low-rate/ab.sh OLD_BIN NEW_BIN OUT_DIR [ROUNDS] [RATE] [DURATION]
#   STROM_BENCH_BIN: the harness (default target/release/strom-bench)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
old=${1:?usage: ab.sh OLD_BIN NEW_BIN OUT_DIR [ROUNDS] [RATE] [DURATION]}
new=${2:?}
out=${3:?}
rounds=${4:-3}
rate=${5:-10000}
duration=${6:-20}
port=19393
mkdir -p "$out"
out=$(cd "$out" && pwd)

for round in $(seq 1 "$rounds"); do
    builds=(old new)
    [ $((round % 2)) -eq 0 ] && builds=(new old)
    for build in "${builds[@]}"; do
        bin=$old
        [ "$build" = new ] && bin=$new
        rm -rf "$out/data"
        "$bin" serve --data-dir "$out/data" --listen "127.0.0.1:$port" \
            --stage-latency "$out/stages-$build-r$round" >"$out/broker-$build-r$round.log" 2>&1 &
        broker=$!
        for _ in $(seq 300); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.1
        done
        "$root/results/low-rate/both-lingers.sh" "127.0.0.1:$port" "$out" "$build-LINGER-r$round" "$rate" "$duration"
        kill "$broker"; wait "$broker" || true
        rm -rf "$out/data"
    done
done
