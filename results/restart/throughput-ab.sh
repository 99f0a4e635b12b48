#!/usr/bin/env bash
# The recovery point's cost on the data path: strom-bench at max rate (acks=1,
# 1 KiB, 16 partitions, Kafka's default 1 GiB segments, so active segments
# grow past many points) against two binaries, interleaved.
# Usage: results/restart/throughput-ab.sh OLD_STROM NEW_STROM [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
A=$1; B=$2; ROUNDS=${3:-3}; SECS=${4:-12}
PORT=${STROM_RESTART_PORT:-19393}
ROOT=${STROM_RESTART_DIR:-/work/restart-tmp}
mkdir -p "$ROOT"
for r in $(seq 1 "$ROUNDS"); do
    for label in A B; do
        bin=$A; [ "$label" = B ] && bin=$B
        rm -rf "$ROOT/tp"; mkdir -p "$ROOT/tp"
        "$bin" serve --data-dir "$ROOT/tp" --listen "127.0.0.1:$PORT" >"$ROOT/tp-$label.log" 2>&1 &
        pid=$!
        for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
        target/release/strom-bench run --bootstrap "127.0.0.1:$PORT" \
            --workload bench-harness/workloads/1-topic-16-partitions-1kb.yaml --out "$ROOT/tp-out" \
            --name "tp-$label-$r" --duration "$SECS" --warmup 3 --acks 1 --quiet \
            --topic-config segment.bytes=1073741824 >/dev/null 2>&1
        kill "$pid"; wait "$pid" 2>/dev/null || true
        rate=$(sed -n 's/^  "produce_msgs_per_s": \([-0-9.eE+]*\),\{0,1\}$/\1/p' "$ROOT/tp-out/tp-$label-$r.json" | head -1)
        p99=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["publish_latency_ms"]["p99"])' "$ROOT/tp-out/tp-$label-$r.json")
        echo -e "$r\t$label\t$rate\t$p99\tload $(cut -d' ' -f1 /proc/loadavg)"
    done
done
rm -rf "$ROOT/tp"
