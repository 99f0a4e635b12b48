#!/usr/bin/env bash
# Where the broker copies bytes at max rate: one strom-bench run (16
# partitions, 1 KiB, acks=1, 20 s), `perf record --call-graph dwarf` on the
# broker for 4 s in its middle; copies.py then sums the samples of each copy
# routine (memcpy, the kernel's socket copies, crc32c) by the Strom function
# that called it.
#
# Usage: results/zero-copy-reads/profile.sh STROM_BIN OUT_DIR
set -euo pipefail
bin=${1:?usage: profile.sh STROM_BIN OUT_DIR} out=${2:?}
cd "$(dirname "$0")/../.."
port=19495
rm -rf "$out"; mkdir -p "$out"
"$bin" serve --data-dir "$out/data" --listen "127.0.0.1:$port" >"$out/broker.log" 2>&1 &
b=$!
for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
(sleep 10; perf record -F 199 --call-graph dwarf,16384 -o "$out/perf.data" -p "$b" -- sleep 4 >/dev/null 2>&1) &
p=$!
target/release/strom-bench run --bootstrap "127.0.0.1:$port" \
    --workload bench-harness/workloads/1-topic-16-partitions-1kb.yaml --out "$out" \
    --duration 20 --warmup 3 --acks 1 --name run --topic-config segment.bytes=67108864 \
    --quiet >"$out/run.log" 2>&1
wait "$p"; kill "$b"; wait "$b" || true; rm -rf "$out/data"
perf script -i "$out/perf.data" 2>/dev/null >"$out/script.txt"
python3 results/zero-copy-reads/copies.py "$out/script.txt" | tee "$out/copies.txt"
