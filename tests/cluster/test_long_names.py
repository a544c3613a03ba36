"""Topics and filters too long to be NATS subjects, across a cluster of ``nanoiot serve``
processes: a retained message on a 3,500-byte topic and a subscription to a filter of 1,000
four-byte characters are replicated like any other (keyed by their digest,
``broker.cluster.frames.to_key``), and neither costs the node its NATS connection (NATS closes
a connection that sends a subject longer than its 4,096-byte protocol line) nor the other
devices their traffic. Real paho clients over mutual TLS."""

from pathlib import Path
from queue import Empty

import pytest

from tests.cluster.nodes import cluster, until_routed
from tests.e2e.harness import Client

pytestmark = pytest.mark.slow

LONG_LEVEL = "\U0001f600" * 1000  # 4,000 bytes: a filter of 1,015 characters, within 1,024
LONG_TOPIC = "x" * 3500  # read through devices/sensor/+: a filter is at most 1,024 characters


def _retained_on(client: Client, topic_filter: str, attempts: int = 30) -> bytes | None:
    """The retained message a new subscription gets; another node learns of one about a
    millisecond after its PUBACK, so the subscription is made again a bounded number of times."""
    for _ in range(attempts):
        assert client.subscribe(topic_filter, qos=1) == [1]
        try:
            message = client.messages.get(timeout=0.3)
        except Empty:
            client.paho.unsubscribe(topic_filter)
            continue
        assert message.retain
        return bytes(message.payload)
    return None


def test_long_topics_and_filters_cross_without_costing_the_node_its_nats(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        other = nodes.device("other")
        nodes.application("watcher")
        a = nodes.start("a")
        nodes.start("b")
        watcher = nodes.connect("b", app="watcher", client_id="watcher")
        assert watcher.subscribe("devices/other/telemetry", qos=1) == [1]
        assert watcher.subscribe(f"devices/sensor/{LONG_LEVEL}", qos=1) == [1]
        bystander = nodes.connect("a", other, client_id="other")
        device = nodes.connect("a", sensor, client_id="sensor")
        # The long filter's route reached node a: the device's message crosses to b.
        until_routed(device, f"v1/devices/me/{LONG_LEVEL}", watcher)
        device.publish(f"v1/devices/me/{LONG_TOPIC}", b"kept", qos=1, retain=True)

        reader = nodes.connect("b", app="watcher", client_id="reader")
        assert _retained_on(reader, "devices/sensor/+") == b"kept"
        bystander.publish("v1/devices/me/telemetry", b"still flowing", qos=1)
        assert bytes(watcher.next_message().payload) == b"still flowing"
        assert not [line for line in a.log.lines if "fenced off" in line or "(retrying)" in line]

        device.publish(f"v1/devices/me/{LONG_TOPIC}", b"", qos=1, retain=True)  # §3.3.1.3
        later = nodes.connect("b", app="watcher", client_id="later")
        for _ in range(30):
            if _retained_on(later, "devices/sensor/+", attempts=1) is None:
                break
            later.paho.unsubscribe("devices/sensor/+")
        else:
            raise AssertionError("the deleted retained message is still on node b")


def test_shared_subscriptions_past_what_a_record_names_get_their_messages(tmp_path: Path) -> None:
    """70 shared subscriptions with names of 983 characters on node b, all matching what a
    device on node a publishes: 70 KB of group names for each of its messages, more than a
    frame's record names (before: building the frame failed, and every device on node a that
    published such a topic was disconnected)."""
    names = [f"g{n:02}" + "n" * 980 for n in range(70)]  # filters of 1,010 characters
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.start("a")
        nodes.start(  # past the default 128 characters and 16 KiB of one application's
            "b",
            NANOIOT_MAX_SHARE_NAME_LENGTH="1000",
            NANOIOT_MAX_SHARED_SUBSCRIPTION_BYTES_PER_DEVICE=str(256 * 1024),
        )
        watcher = nodes.connect("b", app="backend", client_id="watcher")
        assert watcher.subscribe("devices/+/telemetry", qos=1) == [1]
        backend = nodes.connect("b", app="backend", client_id="backend")
        for name in names:
            assert backend.subscribe(f"$share/{name}/devices/+/telemetry", qos=1) == [1]
        device = nodes.connect("a", sensor, client_id="sensor")
        until_routed(device, "v1/devices/me/telemetry", watcher)
        while not backend.no_message(within=0.3):
            pass  # the probes' copies
        device.publish("v1/devices/me/telemetry", b"21.5", qos=1)
        assert bytes(watcher.next_message().payload) == b"21.5"
        copies = [bytes(backend.next_message().payload) for _ in names]  # one per group
        assert copies == [b"21.5"] * len(names)
        assert backend.no_message()
