#!/usr/bin/env bash
# usage: results/retention-ab/discard-ab.sh NAME discard|nodiscard [strom-bench run args...]
# One fixed-workload run with retention on a fresh ext4 on a loop device
# (direct I/O to its backing file), mounted with or without online discard.
# Needs root (losetup, mkfs.ext4, mount). The image lives in $WORK (default
# /work, which must have 12 GiB free); results go to $WORK/ab-out.
set -euo pipefail
cd "$(dirname "$0")/../.."
name=$1 mode=$2
shift 2
work=${WORK:-/work}
img=$work/ab-loop.img mnt=$work/ab-loop port=19492
rm -f "$img"
truncate -s 12G "$img"
dev=$(losetup --direct-io=on --show -f "$img")
cleanup() { kill "${pid:-}" 2>/dev/null || true; umount "$mnt" 2>/dev/null || true; losetup -d "$dev"; rm -f "$img"; }
trap cleanup EXIT
mkfs.ext4 -q -E nodiscard "$dev"
mkdir -p "$mnt"
mount -o "$mode" "$dev" "$mnt"
echo "mount options: $(findmnt -no OPTIONS "$mnt")"
target/release/strom serve --data-dir "$mnt/data" --listen 127.0.0.1:$port > "$work/ab-$name.broker.log" 2>&1 &
pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
target/release/strom-bench run --bootstrap 127.0.0.1:$port \
    --workload bench-harness/workloads/1-topic-16-partitions-1kb.yaml \
    --out "$work/ab-out" --name "ab-$name" --duration 30 --warmup 10 --quiet --acks 1 \
    --topic-config segment.bytes=67108864 --topic-config retention.bytes=268435456 "$@"
kill "$pid"; wait "$pid" || true
