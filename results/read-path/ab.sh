#!/bin/bash
# A/B: Kafka's ConsumerPerformance (default consumer settings) reading the same
# topics from two or more strom binaries on one data directory, interleaved;
# per run, fetch.MB.sec and what the disk read meanwhile (/sys/block/DEV/stat).
#
#   results/read-path/ab.sh DATA_DIR ROUNDS TOPIC[:RECORDS]... -- NAME=BINARY...
#
# DATA_DIR holds the topics already (see README.md for how they were made).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=$1 rounds=$2; shift 2
topics=(); while [ "$1" != "--" ]; do topics+=("$1"); shift; done; shift
bins=("$@")
dev=$(lsblk -no PKNAME "$(findmnt -no SOURCE --target "$data")" 2>/dev/null || true)
[ -n "$dev" ] || dev=$(basename "$(findmnt -no SOURCE --target "$data")")
sectors() { awk '{print $3}' "/sys/block/$dev/stat"; }
echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD) device $dev $(nproc) cores"
printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' round binary topic fetch_MB_s consumed_MB disk_read_MB read_per_consumed
for r in $(seq "$rounds"); do
  for t in "${topics[@]}"; do
    topic=${t%%:*} n=${t#*:}; [ "$n" = "$t" ] && n=2000000
    for nb in "${bins[@]}"; do
      name=${nb%%=*} bin=${nb#*=}
      "$bin" serve --data-dir "$data" --listen 127.0.0.1:29092 > "/tmp/read-path-$name.log" 2>&1 &
      pid=$!
      for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/29092) 2>/dev/null && break; sleep 0.1; done
      s0=$(sectors)
      line=$(scripts/kafka-peer class org.apache.kafka.tools.ConsumerPerformance --bootstrap-server 127.0.0.1:29092 \
             --topic "$topic" --num-records "$n" --timeout 60000 2>/dev/null | tail -1)
      s1=$(sectors)
      kill "$pid"; wait "$pid" || true
      awk -F', *' -v r="$r" -v b="$name" -v t="$topic" -v rd="$(( (s1 - s0) * 512 ))" \
        '{ printf "%s\t%s\t%s\t%.1f\t%.0f\t%.0f\t%.2f\n", r, b, t, $9, $3, rd/1e6, rd/1e6/($3*1.048576) }' <<< "$line"
    done
  done
done
