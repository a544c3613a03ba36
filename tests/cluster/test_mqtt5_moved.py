"""An MQTT 5 persistent session keeps its subscriptions' options and identifiers when it moves
to another node: taken over by a CONNECT there (§3.1.4), or adopted by a survivor after its
node was killed (SIGKILL).

The session's subscriptions are part of its state (5.0 §4.1), each with its options
(§3.8.3.1) and its Subscription Identifier (§3.8.2.1.2). On the node the session moved to, a
matching message carries the subscription's identifier (§3.3.4); No Local keeps the session's
own messages from it; Retain As Published keeps the retain flag; and a SUBSCRIBE with Retain
Handling 1 of a filter the session has already gets no retained message, as the subscription
is not new. An adopted session ends its own Session Expiry Interval after its node died
(§3.1.2.11.2), and not before. Real paho MQTTv5 clients over TLS, nodes as separate processes
on the machine's NATS and PostgreSQL.
"""

import ssl
from contextlib import ExitStack
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

from tests.cluster.nodes import APP_PASSWORD, Cluster, cluster, until_routed
from tests.cluster.retained import first_retained
from tests.e2e.harness import WAIT, Client, wired
from tests.e2e.v5_client import make_properties

pytestmark = pytest.mark.slow

TELEMETRY = "v1/devices/me/telemetry"  # the sensor's, as it writes it
READINGS = "devices/+/telemetry"  # Retain As Published, Retain Handling 1, identifier 7
REQUESTS = "devices/sensor/rpc/request/+"  # No Local, identifier 9
OTHER_REQUESTS = "devices/other/rpc/request/+"  # the short-lived session's
KEPT = 600  # seconds (§3.1.2.11.2): longer than the test
BRIEF = 3  # seconds: the adopted session that ends on the survivor
NO_RECONNECT = 600  # seconds paho waits before reconnecting: a closed client stays closed


def _v5(nodes: Cluster, node: str, client_id: str, expiry: int, stack: ExitStack) -> Client:
    """Application "backend"'s MQTT 5 client ``client_id`` (Clean Start 0, Session Expiry
    Interval ``expiry``) connected to ``node``, once its CONNACK (reason code 0) came."""
    paho = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    paho.reconnect_delay_set(NO_RECONNECT, NO_RECONNECT)
    paho.tls_set(
        ca_certs=str(nodes.server_cert),
        cert_reqs=ssl.CERT_REQUIRED,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    paho.username_pw_set("backend", APP_PASSWORD)
    client = wired(paho)
    stack.callback(client.close)
    connect = make_properties(PacketTypes.CONNECT, SessionExpiryInterval=expiry)
    paho.connect_async("127.0.0.1", nodes.nodes[node].port, clean_start=False, properties=connect)
    paho.loop_start()
    assert client.wait_connack() == 0
    return client


def _subscribe(client: Client, topic_filter: str, identifier: int, **options: object) -> None:
    """One SUBSCRIBE of ``topic_filter`` at QoS 1 with these options (paho's names) and
    Subscription Identifier ``identifier``; granted."""
    properties = make_properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=identifier)
    wanted = SubscribeOptions(qos=1, **options)  # type: ignore[arg-type]
    client.paho.subscribe(topic_filter, options=wanted, properties=properties)
    assert client.subacks.get(timeout=WAIT) == [1]


def _subscribe_all(backend: Client) -> None:
    _subscribe(backend, READINGS, 7, retainAsPublished=True, retainHandling=1)
    _subscribe(backend, REQUESTS, 9, noLocal=True)


def _identifiers(message: mqtt.MQTTMessage) -> list[int]:
    return list(getattr(message.properties, "SubscriptionIdentifier", []))


def _options_hold(backend: Client, device: Client, publisher: Client, watcher: Client) -> None:
    """What the backend's subscriptions do on the node it is on now, after the move;
    ``watcher``: another client on that node."""
    # No Local: its own request does not come back to it; the publisher's comes (published
    # after its own was acknowledged), with the identifier of the subscription it matched.
    backend.publish("devices/sensor/rpc/request/1", b"own")
    publisher.publish("devices/sensor/rpc/request/2", b"theirs")
    request = backend.next_message()
    assert (request.payload, _identifiers(request)) == (b"theirs", [9])

    # Retain As Published: the retain flag as the sensor set it.
    device.publish(TELEMETRY, b"21.5", retain=True)
    reading = backend.next_message()
    assert (reading.topic, reading.payload, reading.retain) == ("devices/sensor/telemetry",
                                                                b"21.5", True)  # fmt: skip
    assert _identifiers(reading) == [7]

    # Retain Handling 1: the subscription is there already, so the retained message the node
    # has (a new subscription gets it) is not sent; the next message is one published after.
    assert first_retained(watcher, attempts=30) == b"21.5"
    _subscribe(backend, READINGS, 7, retainAsPublished=True, retainHandling=1)
    device.publish(TELEMETRY, b"22.0")
    after = backend.next_message()
    assert (after.payload, after.retain, _identifiers(after)) == (b"22.0", False, [7])


@pytest.mark.parametrize("how", ["take-over", "disconnect"])
def test_a_session_moved_to_another_node_keeps_its_subscription_options(
    tmp_path: Path, how: str
) -> None:
    """Moved from A to B by a CONNECT on B while the connection on A is up (A closes it,
    §3.1.4), or after a DISCONNECT on A, with a message queued there meanwhile."""
    with cluster(tmp_path) as nodes, ExitStack() as stack:
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.application("publisher")
        nodes.start_all("a", "b", "c")
        on_a = _v5(nodes, "a", "backend", KEPT, stack)
        _subscribe_all(on_a)
        device = nodes.connect("c", sensor, client_id="sensor")
        publisher = nodes.connect("c", app="publisher", client_id="publisher")
        until_routed(device, TELEMETRY, on_a)
        publisher.publish("devices/sensor/rpc/request/0", b"on a")
        before = on_a.next_message()
        assert (before.payload, _identifiers(before)) == (b"on a", [9])
        if how == "disconnect":
            on_a.close()
            publisher.publish("devices/sensor/rpc/request/0", b"queued on a")  # PUBACK: kept

        on_b = _v5(nodes, "b", "backend", KEPT, stack)
        assert on_b.session_present.get_nowait() is True
        if how == "take-over":
            assert on_a.disconnected.wait(5), "the connection on A stays"
        else:
            queued = on_b.next_message()
            assert (queued.payload, _identifiers(queued)) == (b"queued on a", [9])
        nodes.nodes["a"].log.wait_for(r"session \S+/backend handed over to another node")
        until_routed(device, TELEMETRY, on_b)
        watcher = nodes.connect("b", app="publisher", client_id="watcher")
        _options_hold(on_b, device, publisher, watcher)


def test_a_session_adopted_after_its_node_was_killed_keeps_its_options_and_expiry(
    tmp_path: Path,
) -> None:
    """Two sessions with their clients connected to A when it is killed: B adopts both. The
    one with a 3 s interval ends there (counted from the adoption, its node having died
    while its client was connected); the other is present for its client on B."""
    with cluster(tmp_path) as nodes, ExitStack() as stack:
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = "0.5"
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.application("publisher")
        nodes.start_all("a", "b")
        backend = _v5(nodes, "a", "backend", KEPT, stack)
        _subscribe_all(backend)
        brief = _v5(nodes, "a", "brief", BRIEF, stack)
        _subscribe(brief, OTHER_REQUESTS, 5)
        publisher = nodes.connect("b", app="publisher", client_id="publisher")
        # PUBACKed once A committed the message for the brief session, and what it wrote
        # before it: both sessions and their subscriptions.
        publisher.publish("devices/other/rpc/request/0", b"committed")
        assert brief.next_message().payload == b"committed"

        nodes.kill("a")
        b = nodes.nodes["b"].log
        adopted = b.wait_for(r"adopted 2 persistent sessions of member a")
        # Queued on B for the backend, whose client is away: through the adopted subscription.
        publisher.publish("devices/sensor/rpc/request/1", b"queued")
        b.wait_for(r"session \S+/brief expired", after=b.lines.index(adopted.string))

        again = _v5(nodes, "b", "backend", KEPT, stack)
        assert again.session_present.get_nowait() is True  # its 600 s are not over
        queued = again.next_message()
        assert (queued.payload, _identifiers(queued)) == (b"queued", [9])
        device = nodes.connect("b", sensor, client_id="sensor")
        _options_hold(again, device, publisher, publisher)
        short = _v5(nodes, "b", "brief", BRIEF, stack)
        assert short.session_present.get_nowait() is False  # §3.1.2.11.2: it ended
