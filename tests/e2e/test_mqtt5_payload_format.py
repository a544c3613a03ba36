"""A payload whose Payload Format Indicator says UTF-8 must be well-formed UTF-8 (5.0
§3.3.2.3.2 [MQTT-3.3.2-4]); the server may check it and refuse with 0x99. Before, it was
forwarded, retained and queued as it came: a subscriber's client that checks it closes its
connection for it, and a persistent session's would be sent the same message again at each
reconnection. Now a PUBLISH whose payload is not what it says gets PUBACK/PUBREC 0x99 (at QoS
0, DISCONNECT 0x99) and goes nowhere, and a will that is not gets CONNACK 0x99 (§3.1.3.2.3).
A device over mutual TLS, its packets written by hand as a client library would not send
them; the subscriber is paho."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.mqtt.packets import (
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Puback,
    Publish,
    Pubrec,
    Will,
)
from broker.mqtt.properties import Properties, Property
from tests.e2e.harness import BrokerThread, write_pem
from tests.e2e.peers import Raw
from tests.e2e.v5_client import V5Client, v5_application

UTF8 = Properties([(Property.PAYLOAD_FORMAT_INDICATOR, 1)])
BYTES = Properties([(Property.PAYLOAD_FORMAT_INDICATOR, 0)])
NOT_UTF8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"ok \xe2\x82"]  # overlong, surrogate, cut


@pytest.fixture
def certfile(broker: BrokerThread, tmp_path: Path) -> Path:
    _, issued = broker.provision("sensor")
    return write_pem(tmp_path, issued, "sensor")


@pytest.fixture
def subscriber(broker: BrokerThread) -> Iterator[V5Client]:
    broker.application("reader", "reader", "pw-reader")
    reader = v5_application(broker, "reader", "pw-reader")
    try:
        assert reader.subscribe("devices/sensor/#", qos=2) == [2]
        yield reader
    finally:
        reader.close()


def _connected(broker: BrokerThread, certfile: Path) -> Raw:
    raw = Raw(broker.port, broker.server_cert, certfile, MQTT_5)
    raw.connect(Connect(MQTT_5, "sensor", True, 60))
    return raw


def test_a_payload_that_is_not_the_utf8_it_says_is_refused_with_0x99(
    broker: BrokerThread, certfile: Path, subscriber: V5Client
) -> None:
    with _connected(broker, certfile) as raw:
        for packet_id, payload in enumerate(NOT_UTF8, start=1):
            raw.send(Publish("v1/devices/me/t", payload, 1, True, packet_id=packet_id,
                             properties=UTF8))  # fmt: skip
            assert raw.read() == Puback(packet_id, 0x99)
        raw.send(Publish("v1/devices/me/t", b"\xff", 2, packet_id=9, properties=UTF8))
        assert raw.read() == Pubrec(9, 0x99)
        subscriber.assert_nothing_more()
        # What is what it says goes: UTF-8 (U+0000 is well-formed), or bytes said to be bytes.
        raw.send(Publish("v1/devices/me/t", "é\x00€".encode(), 1, packet_id=10, properties=UTF8))
        assert raw.read() == Puback(10)
        raw.send(Publish("v1/devices/me/t", b"\xff", 1, packet_id=11, properties=BYTES))
        assert raw.read() == Puback(11)
        assert [subscriber.next_message().payload for _ in range(2)] == ["é\x00€".encode(), b"\xff"]
        # At QoS 0 there is no answer to refuse with: the connection is closed.
        raw.send(Publish("v1/devices/me/t", b"\xff", 0, properties=UTF8))
        disconnect = raw.read()
        assert isinstance(disconnect, Disconnect)
        assert disconnect.code == 0x99  # with a Reason String that says why
        assert raw.closed()
    subscriber.assert_nothing_more()
    # Nothing was retained: a new subscription gets no retained message.
    broker.application("later", "later", "pw-later")
    later = v5_application(broker, "later", "pw-later")
    try:
        assert later.subscribe("devices/sensor/#") == [1]
        later.assert_nothing_more()
    finally:
        later.close()


def test_a_will_that_is_not_the_utf8_it_says_is_refused_with_0x99(
    broker: BrokerThread, certfile: Path
) -> None:
    will = Will("v1/devices/me/status", b"gone \xff", 1, properties=UTF8)
    with Raw(broker.port, broker.server_cert, certfile, MQTT_5) as raw:
        raw.send(Connect(MQTT_5, "sensor", True, 60, will=will))
        connack = raw.read()
        assert isinstance(connack, Connack)
        assert connack.code == 0x99
        assert raw.closed()
