"""A Message Expiry Interval of 0 with paho MQTTv5 clients over mutual TLS (5.0 §3.3.2.3.3,
``broker.mqtt.expiry``): the message is for whoever is subscribed and connected when it is
published. They get it at every QoS, forwarded with an interval of 0, clean and persistent
sessions alike (a persistent one's QoS 1/2 copy is in the store before it goes); a
persistent session whose client is away gets nothing of it on reconnect, nor after a
restart; a retained one reaches the current subscribers and leaves the topic with no
retained message; a will with it reaches the connected subscribers. Across cluster nodes in
tests/cluster/test_mqtt5_properties.py."""

from pathlib import Path
from typing import Any

import pytest

from broker.mqtt.packets import MQTT_5, Connect, Puback, Publish, Will
from broker.mqtt.properties import Properties, Property
from tests.e2e.harness import BrokerThread, broker_settings, write_pem
from tests.e2e.peers import Raw
from tests.e2e.v5_client import V5Client, publish_properties, v5_application, v5_resuming

PASSWORD = "pw-expiry-0"
TOPIC = "devices/z/rpc/request/1"
ZERO = publish_properties(MessageExpiryInterval=0)
MINUTE = publish_properties(MessageExpiryInterval=60)


def _app(broker: BrokerThread, name: str) -> V5Client:
    broker.application(name, name, PASSWORD)
    return v5_application(broker, name, PASSWORD)


def _keeper(broker: BrokerThread) -> V5Client:
    """The application "keeper" with a persistent session (Session Expiry Interval of an
    hour), resumed if there is one."""
    return v5_resuming(broker, "keeper", PASSWORD, "keeper", 3600)


def _interval(message: Any) -> int | None:
    return getattr(message.properties, "MessageExpiryInterval", None)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_the_connected_subscribers_get_it_at_every_qos(broker: BrokerThread, qos: int) -> None:
    broker.application("keeper", "keeper", PASSWORD)
    clean, keeper, pub = _app(broker, "clean"), _keeper(broker), _app(broker, "pub")
    try:
        for client in (clean, keeper):
            assert client.subscribe("devices/z/#", qos=2) == [2]
        pub.publish(TOPIC, b"zero", qos=qos, properties=ZERO)
        pub.publish(TOPIC, b"after", qos=qos)
        for client in (clean, keeper):
            got = client.next_message()
            assert (got.payload, got.qos, _interval(got)) == (b"zero", qos, 0)  # [MQTT-3.3.2-6]
            assert client.next_message().payload == b"after"
        keeper.assert_nothing_more()
    finally:
        for client in (clean, keeper, pub):
            client.close()


def test_a_session_whose_client_is_away_gets_none_of_it(tmp_path: Path) -> None:
    """Not queued for the session (nor written to its store): neither the reconnect nor
    a restart brings it, while a message with a minute to live comes with both."""
    settings = broker_settings(tmp_path / "data")
    broker = BrokerThread(settings)
    try:
        for name in ("keeper", "pub"):
            broker.application(name, name, PASSWORD)
        keeper = _keeper(broker)
        assert keeper.subscribe("devices/z/#", qos=2) == [2]
        for restart in (False, True):
            keeper.close()
            pub = v5_application(broker, "pub", PASSWORD)
            for qos in (0, 1, 2):
                pub.publish(TOPIC, b"zero", qos=qos, properties=ZERO)
            pub.publish(TOPIC, b"minute", qos=1, properties=MINUTE)
            pub.close()
            if restart:
                broker.stop()
                broker = BrokerThread(settings)
            keeper = _keeper(broker)
            assert keeper.session_present
            got = keeper.next_message()
            assert (got.payload, got.qos) == (b"minute", 1)
            assert 0 < (_interval(got) or 0) <= 60
            keeper.assert_nothing_more()
        keeper.close()
    finally:
        broker.stop()


def test_retained_it_reaches_the_subscribers_and_leaves_no_retained_message(
    broker: BrokerThread,
) -> None:
    """It has expired before a later subscription could be sent it: the topic's previous
    retained message goes too, as if the new one had been kept and expired at once."""
    sub, pub = _app(broker, "sub"), _app(broker, "pub")
    late = None
    try:
        assert sub.subscribe("devices/r/#") == [1]
        pub.publish("devices/r/attributes", b"kept", retain=True)
        pub.publish("devices/r/attributes", b"zero", retain=True, properties=ZERO)
        assert sub.next_message().payload == b"kept"
        got = sub.next_message()
        assert (got.payload, _interval(got)) == (b"zero", 0)
        late = _app(broker, "late")
        assert late.subscribe("devices/r/#") == [1]  # a retained message would follow it
        pub.publish("devices/r/attributes", b"marker")
        got = late.next_message()
        assert (got.payload, got.retain) == (b"marker", False)
    finally:
        for client in (sub, pub, late):
            if client is not None:
                client.close()


def test_a_will_with_it_reaches_the_connected_subscribers(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """5.0 §3.1.3.2.3: a will's Message Expiry Interval is its PUBLISH's; retained, it
    replaces the device's retained status and leaves none."""
    watcher = _app(broker, "watcher")
    _, issued = broker.provision("w")
    raw = Raw(broker.port, broker.server_cert, write_pem(tmp_path, issued, "w"), MQTT_5)
    late = None
    try:
        assert watcher.subscribe("devices/w/#") == [1]
        zero = Properties([(Property.MESSAGE_EXPIRY_INTERVAL, 0)])
        will = Will("v1/devices/me/status", b"gone", 1, retain=True, properties=zero)
        raw.connect(Connect(MQTT_5, "w", True, 60, will=will))
        raw.send(Publish("v1/devices/me/status", b"online", 1, retain=True, packet_id=1))
        assert isinstance(raw.read(), Puback)
        assert watcher.next_message().payload == b"online"
        raw.sock.close()  # no DISCONNECT: the will goes
        got = watcher.next_message()
        assert (got.topic, got.payload, _interval(got)) == ("devices/w/status", b"gone", 0)
        late = _app(broker, "late")
        assert late.subscribe("devices/w/#") == [1]
        pub = _app(broker, "pub")
        pub.publish("devices/w/attributes", b"marker")
        pub.close()
        assert late.next_message().payload == b"marker"  # no retained status before it
    finally:
        for client in (watcher, late):
            if client is not None:
                client.close()
        raw.close()
