#!/usr/bin/env bash
# A/B of acks=1 acknowledged from memory (A) against acks=1 acknowledged once
# written to the device (B, issue 13), interleaved on this machine. Derived
# from results/restructure/run.sh, shortened: per iteration fio's sequential
# write, each build's `strom-bench engine` (1 KiB records in 16 KiB batches,
# 2 GiB, no sync: every append is Durability::Written), and each build's
# broker under `strom-bench run` of the 16-partition 1 KiB workload with
# acks=1, 10 s after 3 s of warm-up, at max rate and at a fixed 50,000
# msgs/s. The order of A and B alternates between iterations; the same
# strom-bench (B's) drives both brokers.
#
# Usage: results/acks1-written/run.sh DIR ITERATIONS A_ROOT B_ROOT [OUT]
#   DIR: scratch directory on the disk to measure
#   *_ROOT: directories holding release/strom and release/strom-bench
#   OUT: where run-N/ go (default: this script's directory)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
dir=$1; iterations=$2; a=$3; b=$4; out=${5:-$here}
port=${STROM_AB_PORT:-19213}
fixed_rate=${STROM_AB_FIXED_RATE:-50000}
mkdir -p "$dir"
export RUST_LOG=off
dev=$(basename "$(findmnt -no SOURCE -T "$dir")")
settle() {
  rm -rf "$dir/log" "$dir/data"
  sync
  if [ -r "/sys/block/$dev/inflight" ]; then
    for _ in $(seq 1 600); do
      read -r r w <"/sys/block/$dev/inflight"
      [ "$r$w" = "00" ] && break
      sleep 0.1
    done
  fi
}
engine() { # root args...
  local t=$1; shift
  settle
  "$t/release/strom-bench" engine --dir "$dir/log" --record-bytes 1KiB --batch-bytes 16KiB --json "$@" | grep "^{"
}
broker() { # root out-json rate
  local t=$1 json=$2 rate=$3 pid
  settle
  mkdir -p "$dir/data"
  "$t/release/strom" serve --data-dir "$dir/data" --listen "127.0.0.1:$port" >"$dir/broker.log" 2>&1 &
  pid=$!
  local up=0
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$up" != 1 ]; then
    echo "broker from $t did not start:" >&2; cat "$dir/broker.log" >&2; kill "$pid" 2>/dev/null || true; exit 1
  fi
  local tmp; tmp=$(mktemp -d)
  "$b/release/strom-bench" run --bootstrap "127.0.0.1:$port" \
    --workload bench-harness/workloads/1-topic-16-partitions-1kb.yaml --acks 1 --rate "$rate" \
    --duration 10 --warmup 3 --out "$tmp" --quiet \
    --topic-config segment.bytes=67108864 --topic-config retention.bytes=268435456 >/dev/null
  cp "$tmp/1-topic-16-partitions-1kb.json" "$json"
  rm -rf "$tmp"
  kill "$pid"; wait "$pid" || true
}
rm -rf "$out"/run-*
for i in $(seq 1 "$iterations"); do
  run="$out/run-$i"; mkdir -p "$run"
  if [ $((i % 2)) = 1 ]; then order="a b"; else order="b a"; fi
  settle
  scripts/disk-baseline "$dir" --json --size 1G --sync-size 64M | grep "^{" >"$run/disk-baseline.json"
  for side in $order; do
    t=$a; [ "$side" = b ] && t=$b
    engine "$t" --total-bytes 2GiB --sync never >"$run/engine-never-$side.json"
  done
  for side in $order; do
    t=$a; [ "$side" = b ] && t=$b
    broker "$t" "$run/broker-max-$side.json" 0
    broker "$t" "$run/broker-fixed-$side.json" "$fixed_rate"
  done
  echo "order=\"$order\" nproc=$(nproc) kernel=$(uname -r) date=$(date -u +%FT%TZ) load=\"$(cut -d' ' -f1-3 /proc/loadavg)\"" >"$run/machine.txt"
  echo "iteration $i done" >&2
done
settle
