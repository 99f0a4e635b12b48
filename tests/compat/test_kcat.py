"""kcat (Debian 12: kcat 1.7.1 on librdkafka 2.0.2) against strom.

Produced records are read back with a kcat format string that frames every
record with its offset and key/value lengths, so keys and values compare byte
for byte, NULL distinct from empty.
"""

import json
import os
import random
import subprocess
import time

import pytest

from clients import Rec, assert_same, consume_exact

KCAT = "kcat"
# Kafka's default message.max.bytes is 1 MiB + 12; the largest value tested
# leaves room for the record and batch overhead.
MAX_BYTES = 1048588
BIG_VALUE = 1024 * 1024 - 1024
FMT = r"R %o %K %S %T %h\n%k%s"
DELIM = b"\x1e"  # record separator
KDELIM = b"\x1f"  # key separator


def kcat(broker, *args, input=None, timeout=60):
    cmd = [KCAT, "-b", broker.bootstrap, "-m", "15", *args]
    r = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.decode(errors='replace')}"
    return r


def kcat_produce(broker, topic, *args, input=None):
    return kcat(
        broker, "-P", "-t", topic, "-p", "0",
        "-X", "acks=all", "-X", f"message.max.bytes={MAX_BYTES}",
        *args, input=input,
    )


def parse_headers(s: str):
    if not s:
        return []
    out = []
    for kv in s.split(","):
        k, _, v = kv.partition("=")
        out.append((k, v.encode()))
    return out


def parse_fmt(data: bytes):
    """Records from kcat output produced with FMT."""
    recs = []
    pos = 0
    while pos < len(data):
        nl = data.index(b"\n", pos)
        fields = data[pos:nl].decode().split(" ", 5)
        assert fields[0] == "R", f"bad kcat output at byte {pos}: {data[pos:pos + 80]!r}"
        off, klen, vlen, ts = (int(x) for x in fields[1:5])
        hdrs = parse_headers(fields[5] if len(fields) > 5 else "")
        pos = nl + 1
        key = None if klen < 0 else data[pos : pos + klen]
        pos += max(klen, 0)
        value = None if vlen < 0 else data[pos : pos + vlen]
        pos += max(vlen, 0)
        recs.append(Rec(key, value, hdrs, off, ts))
    return recs


def kcat_consume(broker, topic, offset="beginning", *args, timeout=60):
    r = kcat(
        broker, "-C", "-t", topic, "-p", "0", "-o", str(offset), "-e",
        "-X", "fetch.message.max.bytes=2000000", "-f", FMT, *args, timeout=timeout,
    )
    return parse_fmt(r.stdout)


def safe_bytes(rng, n, compressible):
    """Bytes without the delimiters; compressible ones repeat a short phrase."""
    if compressible:
        phrase = bytes(rng.choice(range(32, 127)) for _ in range(16))
        return (phrase * (n // 16 + 1))[:n]
    alphabet = [b for b in range(256) if bytes([b]) not in (DELIM, KDELIM)]
    return bytes(rng.choices(alphabet, k=n))


def delimited(recs):
    out = b""
    for r in recs:
        out += (r.key + KDELIM if r.key is not None else b"") + r.value + DELIM
    return out


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume_codec_keys_headers(broker, topic, codec):
    rng = random.Random(codec)
    headers = [("trace", b"abc-123"), ("h2", b"second value")]
    want = []
    for i in range(300):
        key = f"key-{i}".encode() if i % 3 else safe_bytes(rng, rng.randint(1, 40), False)
        value = safe_bytes(rng, rng.choice([1, 10, 100, 1000, 20000]), compressible=i % 2 == 0)
        want.append(Rec(key, value, headers, i))
    kcat_produce(
        broker, topic, "-z", codec, "-K", r"\x1f", "-D", r"\x1e",
        "-H", "trace=abc-123", "-H", "h2=second value", input=delimited(want),
    )
    got = kcat_consume(broker, topic)
    assert_same(got, want)
    # The same bytes through a second, newer client.
    assert_same(consume_exact(broker.bootstrap, topic, 0, 0, len(want)), want)


def test_empty_and_null_keys_values(broker, topic):
    # Empty input lines are skipped by kcat; "k<US>" is an empty value,
    # "<US>v" an empty key, a line without <US> has no key at all.
    data = b"k1\x1fv1\x1ek2\x1f\x1e\x1fv3\x1ev4\x1e"
    kcat_produce(broker, topic, "-K", r"\x1f", "-D", r"\x1e", input=data)
    # -Z: empty keys and values are sent as NULL.
    kcat_produce(broker, topic, "-K", r"\x1f", "-D", r"\x1e", "-Z", input=data)
    want = [
        Rec(b"k1", b"v1"), Rec(b"k2", b""), Rec(b"", b"v3"), Rec(None, b"v4"),
        Rec(b"k1", b"v1"), Rec(b"k2", None), Rec(None, b"v3"), Rec(None, b"v4"),
    ]
    for i, w in enumerate(want):
        w.offset = i
    got = kcat_consume(broker, topic)
    assert_same(got, want, check_headers=False)
    assert_same(consume_exact(broker.bootstrap, topic, 0, 0, len(want)), want, check_headers=False)


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_binary_values_up_to_1mib(broker, topic, tmp_path, codec):
    """Each file is one message: every byte value, sizes up to ~1 MiB."""
    rng = random.Random(7)
    sizes = [1, 255, 4096, 65536, 300_000, BIG_VALUE]
    paths = []
    want = []
    for i, n in enumerate(sizes):
        value = bytes(range(256)) + rng.randbytes(n) if n > 256 else rng.randbytes(n)
        value = value[:n]
        p = tmp_path / f"m{i}"
        p.write_bytes(value)
        paths.append(str(p))
        want.append(Rec(b"fixed-key", value, [("bin", b"1")], i))
    kcat_produce(broker, topic, "-z", codec, "-k", "fixed-key", "-H", "bin=1", *paths)
    got = kcat_consume(broker, topic)
    assert_same(got, want)


def test_consume_from_offsets(broker, topic):
    want = [Rec(f"k{i}".encode(), f"value-{i}".encode(), [], i) for i in range(50)]
    kcat_produce(broker, topic, "-K", r"\x1f", "-D", r"\x1e", input=delimited(want))
    assert_same(kcat_consume(broker, topic, "beginning"), want, check_headers=False)
    assert_same(kcat_consume(broker, topic, 17), want[17:], check_headers=False)
    assert_same(kcat_consume(broker, topic, 49), want[49:], check_headers=False)
    assert_same(kcat_consume(broker, topic, -5), want[45:], check_headers=False)  # relative to end
    # -c limits the count.
    got = kcat_consume(broker, topic, 10, "-c", "3")
    assert_same(got, want[10:13], check_headers=False)


def test_consume_from_end_then_produce(broker, topic):
    before = [Rec(None, f"old-{i}".encode(), [], i) for i in range(5)]
    kcat_produce(broker, topic, "-D", r"\x1e", input=delimited(before))
    n = 4
    cmd = [KCAT, "-b", broker.bootstrap, "-m", "15", "-C", "-t", topic, "-p", "0", "-o", "end",
           "-c", str(n), "-f", FMT]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # kcat reports reaching the end of the partition on stderr once its
        # first fetch at the log end returned; only then produce.
        os.set_blocking(proc.stderr.fileno(), False)
        err = b""
        deadline = time.monotonic() + 30
        while b"Reached end" not in err:
            assert proc.poll() is None, f"kcat exited early: {err!r}"
            assert time.monotonic() < deadline, f"kcat never reached the partition end: {err!r}"
            chunk = proc.stderr.read()
            if chunk:
                err += chunk
            time.sleep(0.05)
        after = [Rec(None, f"new-{i}".encode(), [], 5 + i) for i in range(n)]
        kcat_produce(broker, topic, "-D", r"\x1e", input=delimited(after))
        out, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"kcat exited {proc.returncode}: {err + rest!r}"
    assert_same(parse_fmt(out), after, check_headers=False)


def test_consume_timestamps_and_query(broker, topic):
    want = [Rec(None, f"v{i}".encode(), [], i) for i in range(10)]
    t0 = int(time.time() * 1000)
    kcat_produce(broker, topic, "-D", r"\x1e", input=delimited(want))
    got = kcat_consume(broker, topic)
    assert_same(got, want, check_headers=False)
    for g in got:
        assert abs(g.timestamp - t0) < 600_000, f"timestamp {g.timestamp} far from {t0}"
    # -Q: the offset of the first record at or after a timestamp.
    r = kcat(broker, "-Q", "-t", f"{topic}:0:{got[0].timestamp}")
    assert f"{topic} [0] offset 0" in r.stdout.decode(), r.stdout


def test_metadata_list(broker, topic):
    r = kcat(broker, "-L", "-J")
    md = json.loads(r.stdout)
    names = [b["name"] for b in md["brokers"]]
    assert names == [broker.bootstrap], md["brokers"]  # the advertised address, one broker
    ids = {b["id"] for b in md["brokers"]}
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic in topics, f"{topic} not in {sorted(topics)}"
    parts = topics[topic]["partitions"]
    assert [p["partition"] for p in parts] == [0]
    assert parts[0]["leader"] in ids
    # -t restricts the listing to one topic.
    md1 = json.loads(kcat(broker, "-L", "-J", "-t", topic).stdout)
    assert [t["topic"] for t in md1["topics"]] == [topic]
    assert not md1["topics"][0].get("error")


def test_auto_create_on_produce(broker, topic_name):
    """Producing to a topic that does not exist creates it (auto.create.topics.enable)."""
    want = [Rec(b"k", b"auto-created", [], 0)]
    kcat_produce(broker, topic_name, "-K", r"\x1f", "-D", r"\x1e", input=delimited(want))
    assert_same(kcat_consume(broker, topic_name), want, check_headers=False)
