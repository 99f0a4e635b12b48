"""The ports the suite hands to brokers and controllers.

A port taken from `bind(:0)` and released lies in the kernel's ephemeral
range, where any outgoing connection may take it as its local port before
the node binds it. In CI a Java cluster node's controller failed to start
with EADDRINUSE that way; `free_port()` had the same flaw.
"""

from conftest import ephemeral_range, free_port


def test_free_ports_lie_below_the_ephemeral_range_and_never_repeat():
    low, _ = ephemeral_range()
    ports = [free_port() for _ in range(200)]
    outside = [p for p in ports if p >= low]
    assert not outside, f"ports inside the ephemeral range [{low}, ...): {outside[:10]}"
    assert len(set(ports)) == len(ports), "a port was handed out twice"
