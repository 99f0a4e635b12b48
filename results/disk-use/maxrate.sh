#!/usr/bin/env bash
# Issue 13, finding 9: strom-bench at max rate on one topic of PARTITIONS
# partitions (1 KiB records, acks=1, default segment.bytes of 1 GiB), with the
# data dir's disk use (du, allocated blocks) sampled every second during the
# run, after it, after the idle trim, and after a clean shutdown (when every
# segment is trimmed to its data: that is the data written). The data dir is
# removed at the end.
# Usage: results/disk-use/maxrate.sh STROM STROM_BENCH DIR [PARTITIONS] [SECONDS] [OUT]
set -euo pipefail
strom=$1; bench=$2; dir=$3; parts=${4:-1000}; secs=${5:-5}; out=${6:-/dev/stdout}
port=${STROM_PORT:-19293}
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$dir/data" "$dir/bench"; mkdir -p "$dir/data" "$dir/bench"
RUST_LOG=warn "$strom" serve --data-dir "$dir/data" --listen "127.0.0.1:$port" --shards 2 >"$dir/broker.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir/data" "$dir/bench"' EXIT
for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
du_b() { du -sB1 "$dir/data" | cut -f1; }
rss() { awk '/VmRSS/ {print $2 * 1024}' /proc/$pid/status; }
{
  echo "partitions=$parts seconds=$secs strom=$strom"
  "$bench" run --bootstrap "127.0.0.1:$port" --workload "$here/../../bench-harness/workloads/1-topic-100-partitions-1kb.yaml" \
    --partitions "$parts" --acks 1 --duration "$secs" --warmup 1 --out "$dir/bench" --quiet >"$dir/bench/stdout" 2>&1 &
  bpid=$!
  t=0; max=0
  while kill -0 $bpid 2>/dev/null; do
    u=$(du_b); [ "$u" -gt "$max" ] && max=$u
    echo "t=${t}s du=$u rss=$(rss)"
    sleep 1; t=$((t + 1))
    if [ "$u" -gt $((40 << 30)) ]; then echo "over 40 GiB: stopping"; kill $bpid; fi
  done
  wait $bpid || true
  echo "max_du_during_run=$max"
  echo "du_after_run=$(du_b) rss=$(rss)"
  sleep 7
  echo "du_after_7s_idle=$(du_b) rss=$(rss)"
  kill $pid; wait $pid || true
  echo "du_after_clean_shutdown=$(du_b)"
  python3 -c 'import json,glob,sys; d=json.load(open(glob.glob(sys.argv[1]+"/*.json")[0])); print("bench:", {k: v for k, v in d.items() if not isinstance(v, (list, dict))})' "$dir/bench"
} >"$out"
