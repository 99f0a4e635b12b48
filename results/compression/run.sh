#!/usr/bin/env bash
# Producer compression at max rate: none, lz4 and zstd interleaved
# (none, lz4, zstd, none, lz4, zstd, ...), each run against a fresh
# `strom serve` on a fresh data directory; 1 topic, 16 partitions, 1 KiB
# records that compress about 2x
# (bench-harness/workloads/1-topic-16-partitions-1kb-compressible.yaml).
#
# Usage: results/compression/run.sh [ROUNDS]     (default 2)
# Environment: STROM_BENCH_DATA_DIR (default /tmp), DURATION (30 s),
# WARMUP (5 s), EXTRA_BENCH_ARGS / EXTRA_STROM_ARGS (e.g. "--cpus 1" and
# "--shards 1" to pin the harness to core 1 and the broker's shard to core 0),
# PREFIX (prepended to every output name, e.g. "pinned-").
#
# Writes results/compression/raw/ (each run's JSON and SVGs, the broker's
# CPU seconds, the machine) and results/compression/${PREFIX}side-by-side.md
# (`strom-bench compare`, ratios to the first run).
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${1:-2}
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-5}
PREFIX=${PREFIX:-}
OUT=results/compression
RAW=$OUT/raw
STROM=target/release/strom
BENCH=target/release/strom-bench
WORKLOAD=bench-harness/workloads/1-topic-16-partitions-1kb-compressible.yaml
PORT=19392
# As scripts/bench: a run must not fill the disk.
RETENTION_BYTES=268435456
read -r -a EXTRA_BENCH <<<"${EXTRA_BENCH_ARGS:-}"
read -r -a EXTRA_STROM <<<"${EXTRA_STROM_ARGS:-}"
WORK=$(mktemp -d "${STROM_BENCH_DATA_DIR:-/tmp}/strom-compression.XXXXXX")
STROM_PID=""
mkdir -p "$RAW"

stop_broker() {
    if [ -n "$STROM_PID" ]; then
        kill "$STROM_PID" 2>/dev/null || true
        wait "$STROM_PID" 2>/dev/null || true
        STROM_PID=""
    fi
}
trap 'stop_broker; rm -rf "$WORK"' EXIT

start_broker() {
    stop_broker
    rm -rf "$WORK/data"; mkdir -p "$WORK/data"
    "$STROM" serve --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" "${EXTRA_STROM[@]}" >"$WORK/broker.log" 2>&1 &
    STROM_PID=$!
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return; fi
        kill -0 "$STROM_PID" 2>/dev/null || { cat "$WORK/broker.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "strom did not listen on $PORT" >&2; exit 1
}

broker_cpu_s() { # user + system CPU seconds of the broker so far
    awk -v tck="$(getconf CLK_TCK)" '{ print ($14 + $15) / tck }' "/proc/$STROM_PID/stat"
}

{
    echo "commit: $(git rev-parse --short HEAD)"
    echo "nproc: $(nproc)"
    echo "uname -r: $(uname -r)"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
    echo "date: $(date -u +%FT%TZ)"
    echo "command: results/compression/run.sh $ROUNDS (DURATION=$DURATION WARMUP=$WARMUP EXTRA_BENCH_ARGS='${EXTRA_BENCH_ARGS:-}' EXTRA_STROM_ARGS='${EXTRA_STROM_ARGS:-}')"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RAW/${PREFIX}machine.txt"

names=()
for r in $(seq 0 $((ROUNDS - 1))); do
    for codec in none lz4 zstd; do
        name="$PREFIX$codec-r$r"
        echo "== $name" >&2
        start_broker
        "$BENCH" run --bootstrap "127.0.0.1:$PORT" --workload "$WORKLOAD" --out "$RAW" --quiet \
            --duration "$DURATION" --warmup "$WARMUP" --acks 1 --compression "$codec" \
            --topic-config "retention.bytes=$RETENTION_BYTES" --name "$name" "${EXTRA_BENCH[@]}" >&2
        echo "$(broker_cpu_s)" >"$RAW/$name.broker-cpu-s"
        stop_broker
        names+=("$RAW/$name.json")
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/${PREFIX}machine.txt"
"$BENCH" compare "${names[@]}" --out "$OUT/${PREFIX}side-by-side.md"
cat "$OUT/${PREFIX}side-by-side.md"
