#!/bin/bash
# The same consumer against Apache Kafka (started with scripts/kafka-peer on
# 127.0.0.1:39092 and filled like Strom's directory, see README.md): warm
# (its page cache holds the log: the run right after the cold one) and cold (the
# page cache dropped before the run).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=$1; shift
dev=vda
sectors() { awk '{print $3}' "/sys/block/$dev/stat"; }
printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' round binary topic fetch_MB_s consumed_MB disk_read_MB read_per_consumed
for r in $(seq "$rounds"); do
  for t in "$@"; do
    for cache in cold warm; do
      [ "$cache" = cold ] && { sync; echo 3 > /proc/sys/vm/drop_caches; }
      s0=$(sectors)
      line=$(scripts/kafka-peer class org.apache.kafka.tools.ConsumerPerformance --bootstrap-server 127.0.0.1:39092 \
             --topic "$t" --num-records 2000000 --timeout 60000 2>/dev/null | tail -1)
      s1=$(sectors)
      awk -F', *' -v r="$r" -v b="kafka-$cache" -v t="$t" -v rd="$(( (s1 - s0) * 512 ))" \
        '{ printf "%s\t%s\t%s\t%.1f\t%.0f\t%.0f\t%.2f\n", r, b, t, $9, $3, rd/1e6, rd/1e6/($3*1.048576) }' <<< "$line"
    done
  done
done
