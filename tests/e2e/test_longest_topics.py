"""A topic as long as a PUBLISH carries (§1.5.3: 65,535 bytes), published in the form that
makes it longer for its subscribers: a device's own ``v1/devices/me/...`` topic is longer as
``devices/<its name>/...``, which no PUBLISH could carry. Before, the broker accepted it,
closed the device's connection failing to deliver it, and a persistent session that had
queued it failed to be admitted again at every reconnect. Now it is refused as a topic the
client may not publish to (``auth.acl.MAX_CANONICAL_TOPIC_BYTES``), and the rest flows.
Real paho clients over mutual TLS, one broker."""

from pathlib import Path

from auth.topics import MAX_TOPIC_BYTES
from tests.e2e.harness import BrokerThread, application_client, device_client, mqtt_client

PASSWORD = "backend-password-1"


def test_a_topic_no_publish_could_deliver_is_refused_and_the_rest_flows(
    broker: BrokerThread, tmp_path: Path
) -> None:
    backend = application_client(
        broker, "backend", PASSWORD, client_id="backend", clean_session=False
    )
    assert backend.wait_connack() == 0
    assert backend.subscribe("devices/#", qos=1) == [1]
    device, _ = device_client(broker, tmp_path, "sensor")
    assert device.wait_connack() == 0
    longest = "v1/devices/me/" + "x" * (MAX_TOPIC_BYTES - len("v1/devices/me/"))
    device.publish(longest, b"too long for its subscribers", qos=1)  # PUBACK: refused, not lost
    device.publish("v1/devices/me/telemetry", b"after", qos=1)  # the same connection
    assert bytes(backend.next_message().payload) == b"after"
    backend.close()
    device.publish(longest, b"again, while the backend is away", qos=1)
    device.publish("v1/devices/me/telemetry", b"queued", qos=1)
    again = mqtt_client(
        broker.port, broker.server_cert, None, username="backend", password=PASSWORD,
        client_id="backend", clean_session=False,
    )  # fmt: skip
    assert again.wait_connack() == 0
    assert bytes(again.next_message().payload) == b"queued"
    assert again.no_message()
    again.close()
    device.close()
