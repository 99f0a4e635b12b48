"""Until Strom has transactions, a transactional producer fails at once with
a fatal error that says why, while idempotent producers keep working.

librdkafka treats only TRANSACTIONAL_ID_AUTHORIZATION_FAILED (53) from the
transaction coordinator lookup as fatal; any other error there is retried
until init_transactions' own timeout (rdkafka_txnmgr.c,
rd_kafka_txn_handle_FindCoordinator)."""

from confluent_kafka import KafkaError, KafkaException, Producer

from clients import consume_exact

# Far longer than the answer needs: a retried lookup ends in _TIMED_OUT, not
# in a fatal error, so the assertions below tell the two apart.
INIT_TIMEOUT_S = 30


def test_confluent_transactional_producer_fails_fatally(broker, topic):
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": f"tx-{topic}"})
    try:
        p.init_transactions(INIT_TIMEOUT_S)
        raise AssertionError("init_transactions succeeded on a broker without transactions")
    except KafkaException as e:
        err = e.args[0]
        assert err.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, err
        assert err.fatal(), f"not fatal: {err}"
        assert not err.retriable(), err
        assert "transactions are not supported" in err.str(), err

    # An idempotent producer on the same broker keeps working.
    q = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    errors = []
    for i in range(10):
        q.produce(topic, value=f"v{i}".encode(), partition=0, on_delivery=lambda e, m: e and errors.append(e))
    assert q.flush(30) == 0
    assert errors == []
    got = consume_exact(broker.bootstrap, topic, 0, 0, 10)
    assert [r.value for r in got] == [f"v{i}".encode() for i in range(10)]
