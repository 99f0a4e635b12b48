#!/usr/bin/env bash
# Engine-only A/B: strom-bench engine (4 GiB, 1 KiB records, 16 KiB batches, no sync)
# for each binary in $BIN_ROOT/bin-<side>/strom-bench (BIN_ROOT default /work), interleaved
# in the order given, the disk settled before each run.
# Usage: engine-ab.sh ITERATIONS "a e b" [DIR on the disk, default /work/bench-tmp]
set -euo pipefail
dir=${3:-/work/bench-tmp}; export RUST_LOG=off
mkdir -p "$dir"
dev=$(basename "$(findmnt -no SOURCE -T "$dir")")
settle() { rm -rf "$dir/log"; sync; for _ in $(seq 1 600); do read -r r w </sys/block/$dev/inflight; [ "$r$w" = "00" ] && break; sleep 0.1; done; }
for i in $(seq 1 $1); do
  for side in $2; do
    settle
    bin=${BIN_ROOT:-/work}/bin-$side/strom-bench
    v=$($bin engine --dir $dir/log --record-bytes 1KiB --batch-bytes 16KiB --total-bytes 4GiB --sync never --json | grep "^{" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["write_mib_per_s"]))')
    echo "$i $side $v"
  done
done
