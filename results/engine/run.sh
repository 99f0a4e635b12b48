#!/usr/bin/env bash
# Reproduces results/engine/*.json: fio baseline and the engine bench in one run.
# Usage: results/engine/run.sh [DIR on the data disk, default /work/engine-bench-tmp]
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-/work/engine-bench-tmp}
out=results/engine
mkdir -p "$dir"
bench=target/release/strom-bench
export RUST_LOG=off
scripts/disk-baseline "$dir" --json --size 4G --sync-size 256M | grep "^{" > "$out/disk-baseline.json"
$bench engine --dir "$dir/log" --total-bytes 4GiB --record-bytes 1KiB --batch-bytes 16KiB --sync never --json | grep "^{" > "$out/engine-never.json"
$bench engine --dir "$dir/log" --total-bytes 2GiB --record-bytes 1KiB --batch-bytes 16KiB --sync interval --json | grep "^{" > "$out/engine-interval.json"
$bench engine --dir "$dir/log" --total-bytes 256MiB --record-bytes 1KiB --batch-bytes 16KiB --sync every-batch --producers 16 --json | grep "^{" > "$out/engine-every-batch-16.json"
$bench engine --dir "$dir/log" --total-bytes 512MiB --record-bytes 1KiB --batch-bytes 16KiB --sync every-batch --producers 64 --json | grep "^{" > "$out/engine-every-batch-64.json"
{ echo "nproc=$(nproc) kernel=$(uname -r) date=$(date -u +%FT%TZ) load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""; } > "$out/machine.txt"
cat "$out"/*.json
