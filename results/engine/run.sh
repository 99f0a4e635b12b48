#!/usr/bin/env bash
# Reproduces results/engine/: the fio baseline and the engine bench,
# interleaved, ITERATIONS times (default 3), with the disk settled (sync, no
# I/O in flight) before each measurement. This disk is a shared virtio disk
# whose bandwidth swings by 2x from minute to minute, so one fio run next to
# one engine run proves little; the summary compares medians and each
# iteration's own ratio.
# Usage: results/engine/run.sh [DIR on the data disk, default /work/engine-bench-tmp] [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-/work/engine-bench-tmp}
iterations=${2:-3}
out=results/engine
mkdir -p "$dir"
bench=target/release/strom-bench
export RUST_LOG=off
dev=$(basename "$(findmnt -no SOURCE -T "$dir")")
settle() {
  rm -rf "$dir/log"
  sync
  # Discards of the files just removed (the mount has -o discard) and the
  # journal commit finish before the next measurement starts.
  if [ -r "/sys/block/$dev/inflight" ]; then
    for _ in $(seq 1 600); do
      read -r r w <"/sys/block/$dev/inflight"
      [ "$r$w" = "00" ] && break
      sleep 0.1
    done
  fi
}
engine() {
  settle
  $bench engine --dir "$dir/log" --record-bytes 1KiB --batch-bytes 16KiB --json "$@" | grep "^{"
}
rm -rf "$out"/run-*
for i in $(seq 1 "$iterations"); do
  run="$out/run-$i"
  mkdir -p "$run"
  settle
  scripts/disk-baseline "$dir" --json --size 4G --sync-size 256M | grep "^{" >"$run/disk-baseline.json"
  engine --total-bytes 4GiB --sync never >"$run/engine-never.json"
  engine --total-bytes 2GiB --sync interval >"$run/engine-interval.json"
  engine --total-bytes 256MiB --sync every-batch --producers 16 >"$run/engine-every-batch-16.json"
  engine --total-bytes 512MiB --sync every-batch --producers 64 >"$run/engine-every-batch-64.json"
  echo "nproc=$(nproc) kernel=$(uname -r) date=$(date -u +%FT%TZ) load=\"$(cut -d' ' -f1-3 /proc/loadavg)\"" >"$run/machine.txt"
done
settle
python3 "$out/summarize.py" "$out"
