#!/bin/bash
# A/B: kafka-consumer-perf-test over the same 2 GB (16 partitions, 1 KiB) against two strom binaries, interleaved.
cd /work/main
for r in 1 2 3; do
  for b in old new; do
    /tmp/cperf/strom-$b serve --data-dir /tmp/cperf/d --listen 127.0.0.1:29092 > /tmp/cperf/strom-$b.log 2>&1 &
    pid=$!
    for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/29092) 2>/dev/null && break; sleep 0.2; done
    line=$(scripts/kafka-peer class org.apache.kafka.tools.ConsumerPerformance --bootstrap-server 127.0.0.1:29092 --topic p1 --num-records 2000000 --timeout 60000 2>/dev/null | tail -1)
    echo "round $r $b: $line (load $(cut -d' ' -f1 /proc/loadavg))"
    kill $pid; wait $pid
  done
done
