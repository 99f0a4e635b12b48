#!/bin/bash
# Interleaved A/B of two strom builds under bench-harness/tests/run_strom.rs
# (eight tests in parallel: brokers with two shards, strom-bench with
# consumers, about 18 s per run).
# usage: suite-ab.sh OLD_STROM NEW_STROM PAIRS
# Build the test binary first: cargo test --release -p strom-bench --test run_strom --no-run
set -u
old=$1 new=$2 pairs=$3
root=$(cd "$(dirname "$0")/../.." && pwd)
test_bin=$(ls -t "$root"/target/release/deps/run_strom-* | grep -v '\.d$' | head -1)
cd "$root/bench-harness"
for i in $(seq 1 "$pairs"); do
  for build in old new; do
    bin=$old; [ "$build" = new ] && bin=$new
    log=$(mktemp)
    STROM_BIN=$bin CI=true "$test_bin" >"$log" 2>&1
    rc=$?
    echo "pair $i build=$build tests_rc=$rc broker_aborts=$(grep -c 'SIGABRT' "$log")"
    rm -f "$log"
  done
done
