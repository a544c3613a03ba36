"""A live member whose route table lags behind a session's hand-over by more than
``cluster_handover_window``: what it routes with its old table after the window reaches
nobody through the session's old member, so the old member refuses it (its publisher is not
acknowledged and sends it again), and the new member gives its held messages up waiting for
that member's barrier. Nothing acknowledged may be lost, and a QoS 2 message is delivered
once (MQTT 3.1.1 §4.3.2, §4.3.3).

Node C's key-value watch reaches it ``LAG`` seconds late (a proxy holds back the route
bucket's messages, and only those: C is live); the window is ``WINDOW``. A publisher on C
sends a numbered stream to a persistent subscriber's topic while the subscriber's client
moves from A to B (a take-over, §3.1.4). Real paho clients over TLS, nodes as separate
processes on the machine's NATS and PostgreSQL."""

from pathlib import Path

import pytest

from tests.cluster.moving import (
    FILTER,
    ROOMY_QUEUES,
    Publisher,
    Subscriber,
    acknowledged_and_received,
    check_moved,
    subscribed_on_a,
)
from tests.cluster.nodes import cluster
from tests.cluster.proxy import nats_proxy

pytestmark = pytest.mark.slow

WINDOW = 2.5  # seconds: cluster_handover_window, at least HOLD_WITHIN
LAG = 6.0  # seconds C's route table is behind: past the window
BEFORE = 100  # numbers the subscriber gets on A before it moves
AFTER = 300  # new numbers it gets on B while C's table lags
MORE = 100  # numbers the publisher sends once C's table is no longer held back


@pytest.mark.parametrize("qos", [1, 2])
def test_a_member_lagging_past_the_window_loses_and_doubles_nothing(
    tmp_path: Path, qos: int
) -> None:
    with nats_proxy() as to_c, cluster(tmp_path) as nodes:
        name = nodes.env["NANOIOT_CLUSTER_NAME"]
        nodes.env["NANOIOT_CLUSTER_HANDOVER_WINDOW"] = str(WINDOW)
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.start("a", **ROOMY_QUEUES)
        nodes.start("b", **ROOMY_QUEUES)
        nodes.start("c", NANOIOT_NATS_URL=to_c.url, **ROOMY_QUEUES)
        with Subscriber(nodes, "backend", 4) as subscriber:
            device = subscribed_on_a(subscriber, FILTER, qos, sensor, "c", "sensor")
            with Publisher(device, qos) as publisher:
                assert subscriber.receive_new(BEFORE), subscriber.counts()
                to_c.delay(LAG, subjects=(f"$KV.{name}_routes.",))
                mark_a, mark_c = len(nodes.nodes["a"].log.lines), len(nodes.nodes["c"].log.lines)
                subscriber.move("b", "take-over")
                assert subscriber.receive_new(AFTER), subscriber.counts()
                to_c.delay(0)
                acknowledged = acknowledged_and_received(publisher, subscriber, MORE)
        a, c = nodes.nodes["a"].log, nodes.nodes["c"].log
    check_moved(subscriber, acknowledged, qos)
    # Past the window A refused what C still routed to it, and C's publisher sent it again.
    assert a.wait_for(r"no longer sent on to member b; QoS 1 and 2 .* refused", after=mark_a)
    assert a.wait_for(r"a forwarded message refused: routed at revision", after=mark_a)
    assert c.wait_for(r"could not be routed \(member a could not take a forwarded", after=mark_c)
