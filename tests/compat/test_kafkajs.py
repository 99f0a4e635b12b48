"""kafkajs (Node) against strom, driven through js/kafkajs_client.js.
Without consumer groups kafkajs cannot consume, so records written by kafkajs
are read back with confluent-kafka by assignment (group consumers are in
test_groups.py)."""

import base64
import json
import random
import subprocess
from pathlib import Path

import pytest

from clients import Rec, assert_same, consume_exact

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "js" / "kafkajs_client.js"


def b64(b):
    return None if b is None else base64.b64encode(b).decode()


def run_kafkajs(cmd, spec, tmp_path, timeout=120):
    spec_path = tmp_path / f"{cmd}.json"
    spec_path.write_text(json.dumps(spec))
    r = subprocess.run(["node", str(SCRIPT), cmd, str(spec_path)], capture_output=True,
                       timeout=timeout, cwd=HERE)
    assert r.returncode == 0, f"kafkajs {cmd} exited {r.returncode}:\n{r.stderr.decode(errors='replace')}"
    return json.loads(r.stdout)


@pytest.mark.parametrize("gzip", [False, True], ids=["none", "gzip"])
def test_admin_and_producer(broker, topic_name, tmp_path, gzip):
    rng = random.Random(1)
    nparts = 2
    want = {p: [] for p in range(nparts)}
    batches = []
    for b in range(5):
        batch = []
        for j in range(40):
            i = b * 40 + j
            part = i % nparts
            r = Rec(
                None if i % 9 == 0 else f"k{i}".encode(),
                rng.randbytes(rng.choice([0, 5, 500, 5000])),
                [("n", str(i).encode()), ("bin", bytes([i % 256, 0, 255]))],
                timestamp=1_700_000_000_000 + i,
            )
            want[part].append(r)
            batch.append({"partition": part, "key": b64(r.key), "value": b64(r.value),
                          "headers": [[k, b64(v)] for k, v in r.headers], "timestamp": r.timestamp})
        batches.append(batch)
    spec = {"bootstrap": broker.bootstrap, "topic": topic_name, "partitions": nparts,
            "batches": batches, "gzip": gzip}
    out = run_kafkajs("produce", spec, tmp_path)

    assert out["created"] is True
    assert out["createdAgain"] is False  # TOPIC_ALREADY_EXISTS is reported as false
    assert out["listed"] is True
    assert [p["id"] for p in out["partitions"]] == list(range(nparts))
    assert all(p["error"] == 0 and p["leader"] >= 0 for p in out["partitions"]), out["partitions"]
    for res in out["offsets"]:
        assert all(r["errorCode"] == 0 for r in res), res
    # Each send() is one batch per partition; base offsets advance by 20.
    per_part = {p: [] for p in range(nparts)}
    for res in out["offsets"]:
        for r in res:
            per_part[r["partition"]].append(r["baseOffset"])
    for p in range(nparts):
        assert per_part[p] == [20 * b for b in range(5)], per_part
    assert out["topicOffsets"] == [{"partition": p, "low": 0, "high": 100} for p in range(nparts)]

    for p in range(nparts):
        for o, r in enumerate(want[p]):
            r.offset = o
        assert_same(consume_exact(broker.bootstrap, topic_name, p, 0, 100), want[p])


def test_admin_delete_topic(broker, topic_name, tmp_path):
    spec = {"bootstrap": broker.bootstrap, "topic": topic_name, "partitions": 1,
            "batches": [], "gzip": False}
    assert run_kafkajs("produce", spec, tmp_path)["created"] is True
    assert run_kafkajs("deleteTopic", spec, tmp_path)["listed"] is False
