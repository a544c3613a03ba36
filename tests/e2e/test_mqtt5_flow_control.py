"""MQTT 5 flow control end to end (5.0 §4.9): what the broker sends keeps within the client's
Receive Maximum, on the connection that resumes a session too."""

from pathlib import Path

import pytest

from broker.mqtt.packets import (
    MQTT_5,
    Connect,
    Puback,
    Publish,
    Suback,
    Subscribe,
    SubscribeRequest,
)
from broker.mqtt.properties import Properties, Property
from tests.e2e.harness import BrokerThread, write_pem
from tests.e2e.peers import Raw

TOPIC = "v1/devices/me/telemetry"


def _resumer_connect(receive_maximum: int, *, clean_start: bool) -> Connect:
    asked = Properties(
        [(Property.SESSION_EXPIRY_INTERVAL, 60), (Property.RECEIVE_MAXIMUM, receive_maximum)]
    )
    return Connect(MQTT_5, "resumer", clean_start, 60, properties=asked)


@pytest.mark.parametrize("taken_over", [False, True], ids=["closed", "taken-over"])
def test_messages_in_flight_go_again_within_the_new_receive_maximum(
    broker: BrokerThread, tmp_path: Path, taken_over: bool
) -> None:
    """§4.4 and §4.9: a client back with Receive Maximum 2 gets 2 of its 5 messages in flight
    again, with DUP, and the next one for each PUBACK; not 5 at once. The same when the new
    connection takes the session over from the old one, still open (§3.1.4): Mosquitto 2.0
    then sends them all, skipping some."""
    _, issued = broker.provision("resumer")
    certfile = write_pem(tmp_path, issued, "resumer")
    first = Raw(broker.port, broker.server_cert, certfile, MQTT_5)
    first.connect(_resumer_connect(5, clean_start=True))
    first.send(Subscribe(1, (SubscribeRequest(TOPIC, 1),)))
    assert isinstance(first.read(), Suback)
    first.send(*(Publish(TOPIC, bytes([n]), 1, packet_id=n) for n in range(1, 6)))
    received: list[Publish] = []
    while len(received) < 5:  # its PUBACKs and the 5 messages, which it leaves unanswered
        if isinstance(packet := first.read(), Publish):
            received.append(packet)
    if not taken_over:
        first.sock.close()

    again = Raw(broker.port, broker.server_cert, certfile, MQTT_5)
    assert again.connect(_resumer_connect(2, clean_start=False)).session_present
    resent = again.publishes_before_pingresp()
    assert [p.payload for p in resent] == [b"\x01", b"\x02"]
    assert all(p.dup for p in resent)
    for n in range(3, 6):
        packet_id = received[n - 3].packet_id  # the PUBLISH sent again has the same (§4.4)
        assert packet_id is not None
        again.send(Puback(packet_id))
        [next_one] = again.publishes_before_pingresp()
        assert (next_one.payload, next_one.dup) == (bytes([n]), True)
    again.sock.close()
    first.sock.close()
