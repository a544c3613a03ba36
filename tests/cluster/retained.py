"""A retained message read back on a node of ``tests.cluster.nodes``' cluster, by a new
subscription of a real paho client (MQTT 3.1.1 §3.3.1.3)."""

from queue import Empty

from tests.e2e.harness import Client

TOPIC = "devices/sensor/telemetry"


def first_retained(client: Client, attempts: int, within: float = 0.3) -> bytes | None:
    """The retained message a new subscription to TOPIC gets (None: none within ``within``
    seconds of its SUBACK). Another node learns of a retained message about a millisecond
    after its PUBACK, so a node that was running then is asked again, a bounded number of
    times."""
    for _ in range(attempts):
        assert client.subscribe(TOPIC, qos=1) == [1]
        try:
            message = client.messages.get(timeout=within)
        except Empty:  # not there yet
            client.paho.unsubscribe(TOPIC)
            continue
        assert message.retain
        return bytes(message.payload)
    return None
