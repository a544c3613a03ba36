"""The Eclipse Paho MQTT 5 interoperability suite, continued: its cases on what the broker
announces and enforces (topic aliases, packet size, keep-alive, flow control), will delay and
shared subscriptions. Same broker settings and peers as tests/e2e/test_paho_suite5.py; the
suite reads these packets one by one, so most clients here are raw.
"""

import time
from queue import Empty

import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from broker.mqtt.packets import (
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Publish,
    Suback,
    Subscribe,
    SubscribeRequest,
    Will,
)
from broker.mqtt.properties import Properties, Property
from tests.e2e.harness import WAIT
from tests.e2e.peers import Raw
from tests.e2e.suite5 import (
    MAX_PACKET_SIZE,
    PREFIX,
    RECEIVE_MAXIMUM,
    SERVER_KEEP_ALIVE,
    TOPIC_ALIAS_MAXIMUM,
    TOPICS,
    Suite5,
)
from tests.e2e.v5_client import V5Client


def _alias(alias: int) -> Properties:
    return Properties([(Property.TOPIC_ALIAS, alias)])


def _subscribe(raw: Raw, topic_filter: str) -> None:
    raw.send(Subscribe(1, (SubscribeRequest(topic_filter, 2),)))
    assert raw.read() == Suback(1, (2,))


def _next_publish(raw: Raw) -> Publish:
    """The next PUBLISH from the broker, past the acknowledgements of the client's own."""
    while not isinstance(packet := raw.read(), Publish):
        assert packet is not None
        assert not isinstance(packet, Disconnect), packet
    return packet


def _acked(raw: Raw) -> Publish:
    """``_next_publish``, acknowledged as the suite's client does (QoS 1 here)."""
    publish = _next_publish(raw)
    if publish.qos == 1 and publish.packet_id is not None:
        raw.send(Puback(publish.packet_id))
    return publish


def _no_publish(raw: Raw) -> bool:
    """True if the broker answers a PINGREQ with no PUBLISH before it."""
    raw.send(Pingreq())
    while not isinstance(packet := raw.read(), Pingresp):
        if isinstance(packet, Publish):
            return False
    return True


def _disconnected(raw: Raw) -> int:
    """The reason code of the DISCONNECT the broker closes with, past anything before it."""
    while not isinstance(packet := raw.read(), Disconnect):
        assert packet is not None, "closed without DISCONNECT"
    assert raw.closed()
    return packet.code


def test_client_topic_alias(suite: Suite5) -> None:
    raw, _ = suite.raw_connected()
    with raw:  # §3.3.2.3.4: Topic Alias 0 is not allowed: DISCONNECT 0x94
        raw.send(Publish(TOPICS[0], b"topic alias 0", 1, packet_id=1, properties=_alias(0)))
        assert _disconnected(raw) == 0x94
    raw, connack = suite.raw_connected(TOPIC_ALIAS_MAXIMUM=0, SESSION_EXPIRY_INTERVAL=99999)
    with raw:
        assert connack.properties.get(Property.TOPIC_ALIAS_MAXIMUM) == TOPIC_ALIAS_MAXIMUM
        _subscribe(raw, TOPICS[0])
        raw.send(Publish(TOPICS[0], b"topic alias 1", 1, packet_id=2, properties=_alias(1)))
        assert _acked(raw).payload == b"topic alias 1"
        raw.send(Publish("", b"topic alias 2", 1, packet_id=3, properties=_alias(1)))
        assert _acked(raw).payload == b"topic alias 2"
        raw.send(Disconnect())
    raw, _ = suite.raw_connected(clean_start=False)  # aliases went with the connection
    with raw:
        raw.send(Publish(TOPICS[0], b"topic alias 3", 1, packet_id=4))
        assert _acked(raw).payload == b"topic alias 3"  # the subscription stayed
        raw.send(Publish("", b"topic alias 4", 1, packet_id=5, properties=_alias(1)))
        assert _disconnected(raw) == 0x82  # an unknown alias: a protocol error
    suite.client().close()


def test_server_topic_alias(suite: Suite5) -> None:
    for told in (1, None, 0):  # the client's Topic Alias Maximum; absent is 0 (§3.1.2.11.5)
        if told is None:
            raw, _ = suite.raw_connected()
        else:
            raw, _ = suite.raw_connected(TOPIC_ALIAS_MAXIMUM=told)
        with raw:
            _subscribe(raw, TOPICS[0])
            for qos in (0, 1, 2):
                raw.send(Publish(TOPICS[0], b"topic alias 1", qos, packet_id=qos or None))
            got = [_next_publish(raw) for _ in range(3)]
        aliases = [p.properties.get(Property.TOPIC_ALIAS) for p in got]
        if told:  # the first sets the alias, the others use it alone
            assert aliases[0]
            assert aliases == [aliases[0]] * 3
            assert [p.topic for p in got] == [TOPICS[0], "", ""]
        else:
            assert aliases == [None] * 3
            assert {p.topic for p in got} == {TOPICS[0]}


def test_maximum_packet_size(suite: Suite5) -> None:
    raw, connack = suite.raw_connected()
    with raw:  # 1. the server's: §3.2.2.3.6; a larger packet gets DISCONNECT 0x95
        assert connack.properties.get(Property.MAXIMUM_PACKET_SIZE) == MAX_PACKET_SIZE < 65535
        raw.send(Publish(TOPICS[0], b"." * MAX_PACKET_SIZE, 0))
        assert _disconnected(raw) == 0x95
    raw, _ = suite.raw_connected(MAXIMUM_PACKET_SIZE=64)
    with raw:  # 2. the client's: §3.1.2.11.4, a larger message is not sent to it
        _subscribe(raw, TOPICS[0])
        raw.send(Publish(TOPICS[0], b"." * 32, 0))
        assert _next_publish(raw).payload == b"." * 32
        raw.send(Publish(TOPICS[0], b"." * 64, 1, packet_id=1))
        assert raw.read() == Puback(1)
        assert _no_publish(raw)


def test_server_keep_alive(suite: Suite5) -> None:
    client, connack = suite.connect(keepalive=120)
    client.close()
    assert connack.ServerKeepAlive == SERVER_KEEP_ALIVE  # §3.2.2.3.14


def test_flow_control1(suite: Suite5) -> None:
    """§4.9: no more QoS 1/2 messages unacknowledged than the client's Receive Maximum."""
    raw, _ = suite.raw_connected(RECEIVE_MAXIMUM=2, SESSION_EXPIRY_INTERVAL=0)
    with raw:
        _subscribe(raw, TOPICS[0])
        raw.send(*(Publish(TOPICS[0], b"message %d" % n, 1, packet_id=n) for n in (1, 2, 3)))
        first, second = _next_publish(raw), _next_publish(raw)
        assert first.qos == second.qos == 1
        assert _no_publish(raw)  # the third waits for a PUBACK
        assert first.packet_id is not None
        assert second.packet_id is not None
        raw.send(Puback(first.packet_id))
        third = _next_publish(raw)
        assert third.payload == b"message 3"
        assert third.packet_id is not None
        raw.send(Puback(second.packet_id), Puback(third.packet_id), Disconnect())


def test_flow_control2(suite: Suite5) -> None:
    """§3.3.4: one QoS 2 message past the server's Receive Maximum: DISCONNECT 0x93."""
    raw, connack = suite.raw_connected(SESSION_EXPIRY_INTERVAL=0)
    with raw:
        assert connack.properties.get(Property.RECEIVE_MAXIMUM) == RECEIVE_MAXIMUM
        raw.send(*(Publish(TOPICS[0], b"message %d" % n, 2, packet_id=n)
                   for n in range(1, RECEIVE_MAXIMUM + 2)))  # fmt: skip
        assert _disconnected(raw) == 0x93


@pytest.mark.parametrize(
    ("delay", "expiry", "after"),
    [(3, 5, 3.0), (5, 0, 0.0), (5, 2, 2.0)],
    ids=["delay-first", "no-session", "session-first"],
)
def test_will_delay(suite: Suite5, delay: int, expiry: int, after: float) -> None:
    """§3.1.3.2.2: the will goes when its delay ends or the session does, whichever first:
    3 s, at once, 2 s. The suite expects 4 ± 1 s, 1 ± 1 s and 3 ± 1 s: the spec's times
    are at the edges of the first and last, which pass by a margin of the time the broker
    takes to see the connection close; these bounds are the spec's."""
    bclient = suite.client("myclientid2")
    try:
        assert bclient.subscribe(TOPICS[0], qos=2) == [2]
        will = Will(TOPICS[0], b"test_will_delay will message",
                    properties=Properties([(Property.WILL_DELAY_INTERVAL, delay)]))  # fmt: skip
        raw, _ = suite.raw_connected(will=will, SESSION_EXPIRY_INTERVAL=expiry)
        raw.close()  # terminated, no DISCONNECT
        gone = time.monotonic()
        message = bclient.messages.get(timeout=WAIT)
        took = time.monotonic() - gone
        assert message.payload == b"test_will_delay will message"
        assert after - 0.2 <= took < after + 1.5, took
    finally:
        bclient.close()
    suite.client().close()


def _first(clients: tuple[V5Client, V5Client]) -> int:
    """Which of ``clients`` gets the next message."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for index, client in enumerate(clients):
            try:
                client.messages.get(timeout=0.05)
            except Empty:
                continue
            return index
    raise AssertionError("no message")


def test_shared_subscriptions(suite: Suite5) -> None:
    shared = f"$share/sharename/{PREFIX}x"
    clients = (suite.client(), suite.client("myclientid2"))
    try:
        for client in clients:  # one SUBSCRIBE with both filters, as the suite's
            client.paho.subscribe(
                [(shared, SubscribeOptions(qos=2)), (TOPICS[0], SubscribeOptions(qos=2))]
            )
            assert client.subacks.get(timeout=WAIT) == [2, 2]
        clients[1].publish(TOPICS[0], b"message 0", 0)
        assert [c.next_message().payload for c in clients] == [b"message 0"] * 2
        clients[1].publish(PREFIX + "x", b"message 0", 0)
        _first(clients)  # §4.8.2: to one member of the group only
        for client in clients:
            client.assert_nothing_more()
    finally:
        for client in clients:
            client.close()
