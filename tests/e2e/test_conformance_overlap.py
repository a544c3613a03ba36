"""Overlapping subscriptions of one MQTT 5 session with different options, against a real
broker over TLS with the exact bytes a raw client writes.

The broker sends one copy of a message for all of a session's matching subscriptions (5.0
§3.3.4 allows it), so the copy must still honour each subscription's own options: No Local
keeps the session's own messages out of the subscriptions that set it only (§3.8.3.1
[MQTT-3.8.3-3]), and Retain As Published is not lost to a subscription without it that
happens to be matched first.
"""

from pathlib import Path

from broker.mqtt.packets import MQTT_5, Connect, Puback, Publish, Suback, Subscribe
from broker.mqtt.packets import SubscribeRequest as Request
from tests.e2e.harness import BrokerThread, write_pem
from tests.e2e.peers import Raw

ME = "v1/devices/me"
TELEMETRY = f"{ME}/telemetry"


def _connected(broker: BrokerThread, folder: Path, name: str) -> Raw:
    _, issued = broker.provision(name)
    raw = Raw(broker.port, broker.server_cert, write_pem(folder, issued, name), MQTT_5)
    raw.connect(Connect(MQTT_5, name, True, 60))
    return raw


def test_no_local_spares_only_the_subscriptions_that_set_it(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """The session's own QoS 1 message comes back once, through the QoS 0 subscription
    without No Local (at its QoS, [MQTT-3.8.4-8]); the QoS 1 one with No Local adds
    nothing. Before, the copy took the options of the subscription of highest QoS, whose No
    Local then dropped it for both."""
    with _connected(broker, tmp_path, "overlap-nl") as raw:
        requests = (Request(f"{ME}/#", 1, no_local=True), Request(TELEMETRY, 0))
        raw.send(Subscribe(1, requests))
        assert raw.read() == Suback(1, (1, 0))
        raw.send(Publish(TELEMETRY, b"mine", 1, packet_id=7))
        answers = [raw.read(), raw.read()]
        assert Puback(7) in answers
        [delivered] = [packet for packet in answers if isinstance(packet, Publish)]
        assert (delivered.topic, delivered.payload, delivered.qos) == (TELEMETRY, b"mine", 0)


def test_retain_as_published_holds_whichever_subscription_matched_first(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """5.0 §3.8.3.1 [MQTT-3.3.1-13]: the subscription with Retain As Published gets the
    RETAIN flag as published. Before, the one copy took the options of the subscription
    met first in the walk of the topic's levels (the '+' branch before the exact one), so
    the flag was cleared."""
    with _connected(broker, tmp_path, "overlap-rap") as raw:
        requests = (Request(f"{ME}/+", 0), Request(TELEMETRY, 0, retain_as_published=True))
        raw.send(Subscribe(1, requests))
        assert raw.read() == Suback(1, (0, 0))
        raw.send(Publish(TELEMETRY, b"kept", 0, retain=True))
        delivered = raw.read()
        assert isinstance(delivered, Publish)
        assert (delivered.payload, delivered.retain) == (b"kept", True)
