#!/usr/bin/env bash
# io_uring SEND against SEND_ZC (issue 18: "SEND_ZC for large fetch
# responses where it pays") on the two network paths this machine has:
# loopback, and a veth pair into another network namespace. For each path
# and message size, `strom-bench send-zc` alternates the two modes over
# ROUNDS rounds of TOTAL bytes. Needs root (ip netns).
#
# Usage: results/send-zc/run.sh OUT_DIR [ROUNDS] [TOTAL]
#   STROM_BENCH_BIN: the harness (default target/release/strom-bench)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: run.sh OUT_DIR [ROUNDS] [TOTAL]}
rounds=${2:-3}
total=${3:-4GiB}
bench=${STROM_BENCH_BIN:-$root/target/release/strom-bench}
ns=stromzc
mkdir -p "$out"
cleanup() { ip netns del "$ns" 2>/dev/null || true; ip link del stromzc0 2>/dev/null || true; }
trap cleanup EXIT
cleanup
ip netns add "$ns"
ip link add stromzc0 type veth peer name stromzc1
ip link set stromzc1 netns "$ns"
ip addr add 10.213.0.1/24 dev stromzc0
ip link set stromzc0 up
ip netns exec "$ns" ip addr add 10.213.0.2/24 dev stromzc1
ip netns exec "$ns" ip link set stromzc1 up
ip netns exec "$ns" ip link set lo up
echo "# $(date -u +%FT%TZ) $(nproc) cores, kernel $(uname -r), commit $(git -C "$root" rev-parse --short HEAD)"
for size in 64KiB 1MiB; do
    "$bench" send-zc --total-bytes "$total" --message-bytes "$size" --rounds "$rounds" \
        --json "$out/loopback-$size.json"
    "$bench" send-zc --total-bytes "$total" --message-bytes "$size" --rounds "$rounds" \
        --listen 10.213.0.1:0 --sender-netns "$ns" --json "$out/veth-$size.json"
done
