#!/usr/bin/env bash
# Latency at a low fixed rate (issue 18's "at 10k msg/s, end-to-end p99
# under 1 ms"), Strom beside Apache Kafka, interleaved: for each round and
# peer (the order alternating), strom-bench's 16-partition 1 KiB workload,
# acks=1, at RATE msgs/s with linger 0 ms and with linger 1 ms (OMB's Kafka
# driver setting), 5 s warm-up and DURATION s measured. Each peer runs fresh
# in each round; Strom keeps its per-stage histograms (--stage-latency).
#
# Usage: results/low-rate/run.sh OUT_DIR [ROUNDS] [RATE] [DURATION]
#   STROM_BIN, STROM_BENCH_BIN: the binaries (default target/release/...)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: run.sh OUT_DIR [ROUNDS] [RATE] [DURATION]}
rounds=${2:-2}
rate=${3:-10000}
duration=${4:-20}
strom=${STROM_BIN:-$root/target/release/strom}
port=19392
mkdir -p "$out"
out=$(cd "$out" && pwd)
"$root/scripts/kafka-peer" fetch

wait_port() {
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no broker on $port" >&2; exit 1
}

start_peer() { # peer round
    rm -rf "$out/data"
    if [ "$1" = strom ]; then
        "$strom" serve --data-dir "$out/data" --listen "127.0.0.1:$port" \
            --stage-latency "$out/stages-strom-r$2" >"$out/broker-strom-r$2.log" 2>&1 &
        broker=$!
        wait_port
    else
        "$root/scripts/kafka-peer" start "$out/data" "$port" >/dev/null
    fi
}

stop_peer() { # peer
    if [ "$1" = strom ]; then
        kill "$broker"; wait "$broker" || true
    else
        "$root/scripts/kafka-peer" stop "$out/data"
    fi
    rm -rf "$out/data"
}

for round in $(seq 1 "$rounds"); do
    peers=(strom kafka)
    [ $((round % 2)) -eq 0 ] && peers=(kafka strom)
    for peer in "${peers[@]}"; do
        start_peer "$peer" "$round"
        "$root/results/low-rate/both-lingers.sh" "127.0.0.1:$port" "$out" "$peer-LINGER-r$round" "$rate" "$duration"
        stop_peer "$peer"
    done
done
