"""Long polls on an idle partition leave nothing behind (issue 13, finding 3).

A fetch that waits for data registers a waker with the partition (and with
its shard's shutdown signal). When the poll times out, the waker must go with
it; before the fix every timed-out poll left its waker, and the task it kept
alive, until the next append, which on an idle partition never comes.

Eight raw connections each run short long polls (max_wait_ms=1) back to back
on an empty partition for LOOP_S seconds, some hundred thousand in all; the
broker's RSS may not grow by more than GROWTH_LIMIT over that time.
"""

import threading
import time

import kafka_wire as kw
from conftest import create_topic

CONNECTIONS = 8
LOOP_S = 15.0
# Measured on the 2-core dev machine over ~38k polls: 3.8 MiB before the fix,
# 24 KiB after.
GROWTH_LIMIT = 1 << 20


def poll_loop(port, topic, stop, counts, i):
    with kw.connect(port) as s:
        cid = 0
        while not stop.is_set():
            cid += 1
            s.sendall(kw.fetch_v4(topic, 0, 0, max_wait_ms=1, correlation_id=cid))
            resp = kw.recv_frame(s)
            assert resp[:4] == cid.to_bytes(4, "big", signed=True)
        counts[i] = cid


def run_polls(port, topic, seconds):
    stop = threading.Event()
    counts = [0] * CONNECTIONS
    threads = [threading.Thread(target=poll_loop, args=(port, topic, stop, counts, i))
               for i in range(CONNECTIONS)]
    for t in threads:
        t.start()
    time.sleep(seconds)  # the load runs for a fixed time; nothing is awaited here
    stop.set()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive(), "a poll connection hung"
    return sum(counts)


def test_idle_long_polls_do_not_grow_memory(own_broker, topic_name):
    create_topic(own_broker.bootstrap, topic_name, partitions=1)
    # Warm up the allocator and the connection paths first.
    run_polls(own_broker.port, topic_name, 2.0)
    before = own_broker.rss_bytes()
    polls = run_polls(own_broker.port, topic_name, LOOP_S)
    after = own_broker.rss_bytes()
    assert polls > 10_000, f"only {polls} long polls ran"
    growth = after - before
    assert growth < GROWTH_LIMIT, (
        f"RSS grew {growth >> 10} KiB over {polls} idle long polls "
        f"({before >> 20} -> {after >> 20} MiB)\n{own_broker.log_tail()}"
    )
    assert own_broker.alive()
