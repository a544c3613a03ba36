"""MQTT 5 application message properties across nodes: a message published on one node
reaches a subscriber on another with every property the publisher set, in order (5.0
§3.3.2.3: forwarded unaltered but the Topic Alias, per connection, §3.3.2.3.4), the time left
of its expiry (§3.3.2.3.3) and the subscriber's own Subscription Identifier (§3.3.4); a
retained message kept by the other node carries the new subscriber's; one whose Message
Expiry Interval is 0 reaches the subscribers connected to the other node. Real paho MQTTv5
clients over TLS, nodes as separate processes on the machine's NATS and PostgreSQL."""

from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes

from tests.cluster.nodes import APP_PASSWORD, Cluster, cluster
from tests.e2e.v5_client import V5Client, make_properties, publish_properties, v5_client

pytestmark = pytest.mark.slow

PAIRS = [("b", "2"), ("a", "1"), ("b", "2"), ("é", "ü"), ("long", "x" * 100)]
SENT = publish_properties(
    PayloadFormatIndicator=1, ContentType="application/json", ResponseTopic="devices/p/reply",
    CorrelationData=b"\x00\xff", UserProperty=PAIRS, MessageExpiryInterval=3600, TopicAlias=1,
)  # fmt: skip
# User properties and an expiry alone, ASCII: the list the publisher's member checks in one
# pass when shorter than 128 bytes (``broker.mqtt.publish_properties``), as the receiving
# member now does the frame's.
PLAIN = [("k", "v"), ("k", "w"), ("n", "1" * 20)]
PLAIN_SENT = publish_properties(UserProperty=PLAIN, MessageExpiryInterval=60)
ZERO = publish_properties(MessageExpiryInterval=0)
MINUTE = publish_properties(MessageExpiryInterval=60)


def _app(nodes: Cluster, node: str, name: str) -> V5Client:
    port = nodes.nodes[node].port
    client = v5_client(port, nodes.server_cert, None, username=name, password=APP_PASSWORD)
    assert client.wait_connack()[0] == 0
    return client


def _received(message: Any, identifier: int) -> None:
    got: Any = message.properties
    assert got.PayloadFormatIndicator == 1
    assert got.ContentType == "application/json"
    assert got.ResponseTopic == "devices/p/reply"
    assert got.CorrelationData == b"\x00\xff"
    assert got.UserProperty == PAIRS
    assert 3590 <= got.MessageExpiryInterval <= 3600  # [MQTT-3.3.2-6]
    assert not hasattr(got, "TopicAlias")
    assert got.SubscriptionIdentifier == [identifier]


def _until_routed(publisher: V5Client, subscriber: V5Client) -> None:
    """Probes until one crosses: a subscription reaches the other node's routes
    asynchronously (milliseconds); then the rest drained."""
    for attempt in range(200):
        publisher.publish("devices/probe/rpc/request/1", f"probe {attempt}", qos=0)
        try:
            subscriber.messages.get(timeout=0.05)
            break
        except Empty:
            continue
    else:
        raise AssertionError("no probe crossed")
    while True:
        try:
            subscriber.messages.get(timeout=0.3)
        except Empty:
            return


def test_properties_cross_nodes_live_and_retained(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        for name in ("pub", "sub", "late"):
            nodes.application(name)
        nodes.start_all("a", "b")
        pub, sub = _app(nodes, "a", "pub"), _app(nodes, "b", "sub")
        late = None
        try:
            assert sub.subscribe_with_id("devices/#", 6) == [1]
            _until_routed(pub, sub)
            pub.publish("devices/p/rpc/request/1", b"live", properties=SENT)
            pub.publish("", b"again", properties=SENT)  # the alias alone, the same list
            for payload in (b"live", b"again"):
                got = sub.next_message()
                assert (got.topic, got.payload) == ("devices/p/rpc/request/1", payload)
                _received(got, 6)
            pub.publish("devices/p/rpc/request/1", b"plain", properties=PLAIN_SENT)
            plain = sub.next_message()
            listed: Any = plain.properties
            assert (plain.payload, listed.UserProperty) == (b"plain", PLAIN)
            assert 50 <= listed.MessageExpiryInterval <= 60  # [MQTT-3.3.2-6]
            pub.publish("devices/p/attributes", b"kept", retain=True, properties=SENT)
            assert sub.next_message().payload == b"kept"  # b keeps it by now
            late = _app(nodes, "b", "late")
            assert late.subscribe_with_id("devices/+/attributes", 300) == [1]
            got = late.next_message()
            assert (got.payload, got.retain) == (b"kept", True)
            _received(got, 300)
        finally:
            for client in (pub, sub, late):
                if client is not None:
                    client.close()


def test_lifetime_0_reaches_the_subscribers_connected_to_another_node(tmp_path: Path) -> None:
    """5.0 §3.3.2.3.3 with an interval of 0 (``broker.mqtt.expiry``): the frame carries no
    time left, and the publisher's interval; the other node gives it to the subscribers
    connected there at every QoS, with an interval of 0, and queues none of it for a
    persistent session whose client is away, which a message with a minute left reaches.

    The subscriber's messages are compared per QoS (§4.6 orders them per topic and QoS):
    paho hands a QoS 2 message to the application when its PUBREL comes (the receiver's
    choice, §4.3.3), so "minute" (QoS 1), whose PUBLISH reaches it after the PUBLISH of
    "zero 2", reaches the application first whenever it comes before that PUBREL."""
    with cluster(tmp_path) as nodes:
        for name in ("pub", "sub", "keeper"):
            nodes.application(name)
        nodes.start_all("a", "b")
        pub, sub, keeper = _app(nodes, "a", "pub"), _app(nodes, "b", "sub"), _keeper(nodes)
        try:
            assert sub.subscribe("devices/#", qos=2) == [2]
            assert keeper.subscribe("devices/z/#", qos=2) == [2]
            _until_routed(pub, sub)
            keeper.close()  # its session stays on b
            for qos in (0, 1, 2):
                pub.publish("devices/z/rpc/request/1", f"zero {qos}", qos=qos, properties=ZERO)
            pub.publish("devices/z/rpc/request/1", b"minute", properties=MINUTE)
            got = [sub.next_message() for _ in range(4)]
            for qos in (0, 1, 2):  # each once, in the order sent at its QoS
                at_qos = [message.payload for message in got if message.qos == qos]
                assert at_qos == [f"zero {qos}".encode()] + [b"minute"] * (qos == 1)
            left = {m.payload: getattr(m.properties, "MessageExpiryInterval", None) for m in got}
            assert [left[f"zero {qos}".encode()] for qos in (0, 1, 2)] == [0, 0, 0]
            assert 0 < (left[b"minute"] or 0) <= 60  # [MQTT-3.3.2-6]
            keeper = _keeper(nodes)
            assert keeper.session_present
            assert keeper.next_message().payload == b"minute"
            with pytest.raises(Empty):
                keeper.messages.get(timeout=0.3)  # nothing more
            assert sub.messages.empty()  # nor for the subscriber, by then
        finally:
            for client in (pub, sub, keeper):
                client.close()


def _keeper(nodes: Cluster) -> V5Client:
    """The application "keeper" on node b, its session kept an hour after it leaves."""
    resume = make_properties(PacketTypes.CONNECT, SessionExpiryInterval=3600)
    client = v5_client(
        nodes.nodes["b"].port, nodes.server_cert, None, username="keeper",
        password=APP_PASSWORD, client_id="keeper", clean_start=False, connect_properties=resume,
    )  # fmt: skip
    assert client.wait_connack()[0] == 0
    return client
