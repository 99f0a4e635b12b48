#!/usr/bin/env bash
# usage: results/compaction/ab.sh NAME on|off RATE
# One fixed-rate run of keyed records into a compacted topic (16 MiB
# segments), with the log cleaner on (1 s backoff, dirty ratio 0.01: it
# cleans all through the run) or off (log.cleaner.enable=false). The keyless
# check runs in both. Results go to results/compaction/NAME.json (or $AB_OUT).
set -euo pipefail
cd "$(dirname "$0")/../.."
name=$1 mode=$2 rate=$3
port=19493
data=$(mktemp -d /work/ab-compaction.XXXX)
conf=$data.toml
if [ "$mode" = on ]; then
  printf 'log.cleaner.backoff.ms = 1000\n' > "$conf"
else
  printf 'log.cleaner.enable = false\n' > "$conf"
fi
# Extra broker config lines, e.g. AB_CONF='log.cleaner.io.max.bytes.per.second = 52428800'
if [ -n "${AB_CONF:-}" ]; then printf '%s\n' "$AB_CONF" >> "$conf"; fi
"${STROM_BIN:-target/release/strom}" serve --data-dir "$data/data" --listen 127.0.0.1:$port --config "$conf" > "$data.broker.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data" "$conf"; }
trap cleanup EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
target/release/strom-bench run --bootstrap 127.0.0.1:$port \
    --workload results/compaction/keyed-fixed-rate.yaml \
    --out "${AB_OUT:-results/compaction}" --name "$name" --duration 30 --warmup 5 --quiet --acks 1 --rate "$rate" \
    --topic-config cleanup.policy=compact --topic-config segment.bytes=16777216 \
    --topic-config min.cleanable.dirty.ratio=0.01
echo "cleans: $(grep -c 'log cleaned' "$data.broker.log" || true); data left: $(du -sh "$data/data" | cut -f1)"
grep 'log cleaned' "$data.broker.log" | tail -1 || true
rm -f "$data.broker.log"
