#!/usr/bin/env bash
# Restart time after a SIGKILL under load: how long a broker takes to answer
# Metadata again, and what its recovery scanned, for two binaries
# interleaved (A, B, A, B, ...).
#
# Usage: results/restart/run.sh OLD_STROM NEW_STROM [ROUNDS] [SECONDS]
#   Each run: a fresh data dir under $STROM_RESTART_DIR (default /work/restart-tmp,
#   the disk to measure), `strom serve` with one shard per core, strom-bench at max
#   rate (acks=1, 1 KiB records, 4 partitions, segment.bytes 2000000000 so each
#   partition's data stays in its active segment) for SECONDS (default 8),
#   SIGKILL while producing, restart, and poll Metadata every 20 ms until
#   it answers. Prints one line per run and writes results/restart/runs.tsv.
set -euo pipefail
cd "$(dirname "$0")/../.."
A=$1; B=$2; ROUNDS=${3:-3}; SECONDS_LOAD=${4:-8}
BENCH=target/release/strom-bench
PORT=${STROM_RESTART_PORT:-19392}
ROOT=${STROM_RESTART_DIR:-/work/restart-tmp}
OUT=results/restart/runs.tsv
mkdir -p "$ROOT"
echo -e "round\tbinary\tdata_bytes\tmetadata_after_s\tscanned_bytes" >"$OUT"

metadata_ok() {
    python3 - "$PORT" <<'PY'
import socket, struct, sys
port = int(sys.argv[1])
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=0.5)
    # Metadata v1, no topics array (null = all topics).
    body = struct.pack(">hhih", 3, 1, 1, 4) + b"perf" + struct.pack(">i", -1)
    s.sendall(struct.pack(">i", len(body)) + body)
    s.settimeout(5)
    head = s.recv(4)
    sys.exit(0 if len(head) == 4 else 1)
except OSError:
    sys.exit(1)
PY
}

one_run() { # round label binary
    local round=$1 label=$2 bin=$3 data="$ROOT/data-$2"
    rm -rf "$data"; mkdir -p "$data"
    "$bin" serve --data-dir "$data" --listen "127.0.0.1:$PORT" >"$ROOT/broker-$label.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 200); do metadata_ok && break; sleep 0.05; done
    timeout $((SECONDS_LOAD + 30)) "$BENCH" run --bootstrap "127.0.0.1:$PORT" \
        --workload bench-harness/workloads/1-topic-16-partitions-1kb.yaml --partitions 4 \
        --out "$ROOT/bench-out" --duration $((SECONDS_LOAD * 3)) --warmup 1 --acks 1 --quiet \
        --topic-config segment.bytes=2000000000 >/dev/null 2>&1 &
    local bench=$!
    sleep "$SECONDS_LOAD"
    kill -9 "$pid"; wait "$pid" 2>/dev/null || true
    kill "$bench" 2>/dev/null || true; wait "$bench" 2>/dev/null || true
    local bytes; bytes=$(du -sb "$data" | cut -f1)
    local t0; t0=$(date +%s.%N)
    "$bin" serve --data-dir "$data" --listen "127.0.0.1:$PORT" >"$ROOT/broker-$label-restart.log" 2>&1 &
    pid=$!
    local ok=0
    for _ in $(seq 1 3000); do
        if metadata_ok; then ok=1; break; fi
        sleep 0.02
    done
    local t1; t1=$(date +%s.%N)
    [ "$ok" = 1 ] || { echo "no Metadata answer from $label after restart" >&2; kill -9 $pid; exit 1; }
    local scanned
    scanned=$(sed 's/\x1b\[[0-9;]*m//g' "$ROOT/broker-$label-restart.log" | grep -o 'scanned_bytes=[0-9]*' | cut -d= -f2 | paste -sd+ | bc || echo "?")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    local secs; secs=$(echo "$t1 - $t0" | bc)
    echo -e "$round\t$label\t$bytes\t$secs\t${scanned:-?}" | tee -a "$OUT"
    rm -rf "$data"
}

for r in $(seq 1 "$ROUNDS"); do
    one_run "$r" A "$A"
    one_run "$r" B "$B"
done
