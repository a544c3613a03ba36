"""A persistent session moving between nodes loses nothing its publisher got acknowledged
(MQTT 3.1.1 §4.3.2, §4.3.3: once the server sent PUBACK or PUBREC, the message is its to
deliver to every matching subscription, §3.3.4).

A publisher P keeps publishing numbered payloads at QoS q, never more than ``WINDOW`` of them
unacknowledged, while the persistent subscriber S (a wildcard filter at QoS q) moves from node
A to node B and back: by DISCONNECT and a CONNECT on the other node, and by a take-over (a
CONNECT on the other node while the first connection is up, which the server closes,
§3.1.4). Whichever node P is on (the one S leaves first, the one it joins first, or a third
one), a message P publishes while the session is on its way between nodes belongs to the
session: every number P got acknowledged reaches S; at QoS 2 none twice; and on each of S's
connections the numbers it gets for the first time come in the order P published them
(§4.6; a redelivery may come again out of that order).

The receiving half of S's QoS 2 exchanges (the PUBLISHes it answered with PUBREC and awaits
PUBREL for) is session state (§4.1) that one client keeps across its connections: S's
successive paho clients share it, so a PUBREL that reaches the new connection for a PUBLISH the
old one received delivers the message there (§4.3.3, method B). Real paho clients over TLS (P
with its device certificate), nodes as separate processes on the machine's NATS and
PostgreSQL.
"""

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

pytestmark = pytest.mark.slow

SHARED = "$share/backends/devices/+/telemetry"  # S alone in the group (MQTT 5.0 §4.8.2)
PER_CONNECTION = 100  # new numbers S receives on each connection before its next move
AFTER_MOVES = 300  # numbers P publishes once S made its last move
# A -> B and B -> A each way once by DISCONNECT then CONNECT, and once by take-over.
MOVES = (("b", "disconnect"), ("a", "take-over"), ("b", "take-over"), ("a", "disconnect"))

CASES = [
    pytest.param(4, qos, node, FILTER, id=f"mqtt311-qos{qos}-publisher-on-{node}")
    for qos in (1, 2)
    for node in ("a", "b", "c")
] + [
    pytest.param(5, 2, "c", FILTER, id="mqtt5-qos2-publisher-on-c"),
    pytest.param(5, 2, "c", SHARED, id="mqtt5-qos2-shared-publisher-on-c"),
    pytest.param(4, 1, "a", SHARED, id="mqtt311-qos1-shared-publisher-on-a"),
]


@pytest.mark.parametrize(("version", "qos", "publisher_on", "topic_filter"), CASES)
def test_a_moving_subscriber_gets_every_message_its_publisher_got_acknowledged(
    tmp_path: Path, version: int, qos: int, publisher_on: str, topic_filter: str
) -> None:
    case = f"{version}-{qos}-{publisher_on}-{len(topic_filter)}"
    with cluster(tmp_path) as nodes:
        sensor = nodes.device(f"sensor-{case}")
        nodes.application(f"backend-{case}")
        nodes.start_all("a", "b", "c", **ROOMY_QUEUES)
        with Subscriber(nodes, f"backend-{case}", version) as subscriber:
            device = subscribed_on_a(
                subscriber, topic_filter, qos, sensor, publisher_on, f"sensor-{case}"
            )
            with Publisher(device, qos) as publisher:
                assert subscriber.receive_new(PER_CONNECTION), subscriber.counts()
                for node, how in MOVES:
                    subscriber.move(node, how)
                    assert subscriber.receive_new(PER_CONNECTION), (node, how, subscriber.counts())
                acknowledged = acknowledged_and_received(publisher, subscriber, AFTER_MOVES)
        check_moved(subscriber, acknowledged, qos)
