"""A group whose members' sessions have all expired is empty at the deadline,
for DescribeGroups, DeleteGroups and ListGroups alike, not at the
coordinator's next timer tick.

The broker's timer is set to tick once in ten minutes, so nothing but the
requests themselves can expire a session during the test. A static member
(group.instance.id) sends no LeaveGroup when it closes, so its session ends
at its last contact plus session.timeout.ms, and its last contact is before
close() returned: the test waits until that bound has passed, then asks."""

import time

from confluent_kafka import Consumer, ConsumerGroupState, KafkaException
from confluent_kafka.admin import AdminClient

from conftest import create_topic

SESSION_TIMEOUT_MS = 6000
CONFIG = (
    "strom.group.tick.interval.ms = 600000\n"
    "group.initial.rebalance.delay.ms = 0\n"
)


def join_static(bootstrap, topic, group, instance):
    """A static member that has joined `group` and got its assignment."""
    assigned = []
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.instance.id": instance,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    c.subscribe([topic], on_assign=lambda _c, parts: assigned.append(parts))
    deadline = time.monotonic() + 60
    while not assigned:
        assert time.monotonic() < deadline, f"{instance} got no assignment in {group}"
        c.poll(0.2)
    return c


def describe(admin, group):
    return admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)


def test_expired_static_members_leave_an_empty_group_at_the_deadline(broker_with, topic_name):
    b = broker_with(CONFIG)
    create_topic(b.bootstrap, topic_name, 1)
    groups = {k: f"{k}-{topic_name}" for k in ("describe", "delete", "list")}
    consumers = [join_static(b.bootstrap, topic_name, g, f"static-{k}") for k, g in groups.items()]
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    # Before the deadline the members are there.
    assert len(describe(admin, groups["list"]).members) == 1

    for c in consumers:
        c.close()
    # The last contact of every member is before this instant; the broker's
    # clock has millisecond steps, hence the margin.
    closed_at = time.time()
    deadline = closed_at + SESSION_TIMEOUT_MS / 1000 + 0.005
    while time.time() < deadline:
        time.sleep(min(0.05, max(0.0, deadline - time.time())))

    fut = admin.delete_consumer_groups([groups["delete"]], request_timeout=10)[groups["delete"]]
    try:
        fut.result(timeout=15)
    except KafkaException as e:
        raise AssertionError(f"DeleteGroups right after the session deadline: {e}") from e

    d = describe(admin, groups["describe"])
    assert d.members == [], d.members
    assert d.state == ConsumerGroupState.EMPTY, d.state

    listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
    states = {g.group_id: g.state for g in listed.valid}
    assert states.get(groups["list"]) == ConsumerGroupState.EMPTY, states
    assert groups["delete"] not in states, states
