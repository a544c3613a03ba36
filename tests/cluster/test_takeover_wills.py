"""A take-over across nodes publishes the old connection's will only if the session ends, as
within one node (``BrokerSession.ends_with_connect``): 5.0 §3.1.3.2.2 [MQTT-3.1.3-9], and 3.1.1
as Mosquitto's 07-will-takeover has it.

A device's persistent session is on node A with a will; the device connects again on node B,
its first connection still up (or, MQTT 5, gone with its will waiting for its Will Delay
Interval): Clean Start 0 takes the session on, and no will is published; Clean Start 1 ends
it, and the will is published once, at once. A watcher on node C sees what is published. The
device's connections are raw clients (exact CONNECT flags and properties); nodes are separate
processes on the machine's NATS and PostgreSQL.
"""

from collections.abc import Iterator

import pytest

from broker.mqtt.codes import Reason
from broker.mqtt.packets import MQTT_3_1_1, MQTT_5, Connack, Connect, Disconnect, Publish, Will
from broker.mqtt.properties import NO_PROPERTIES, Properties, Property
from tests.cluster.nodes import Cluster, cluster, until_routed
from tests.e2e.harness import Client
from tests.e2e.peers import Raw

pytestmark = pytest.mark.slow

STATUS = "v1/devices/me/status"
EXPIRY = 600  # seconds (5.0 §3.1.2.11.2): longer than the test
DELAY = 300  # a Will Delay Interval the test never waits out: a will that comes is not late


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Client]]:
    """Nodes a, b and c; an application "watcher" on c subscribed to every device's status,
    reached from a and b."""
    with cluster(tmp_path_factory.mktemp("takeover-wills")) as made:
        made.application("watcher")
        prober = made.device("prober")
        made.start_all("a", "b", "c")
        watcher = made.connect("c", app="watcher", client_id="watcher")
        assert watcher.subscribe("devices/+/status", qos=1) == [1]
        for name in ("a", "b"):
            probe = made.connect(name, prober, client_id=f"prober-{name}")
            until_routed(probe, STATUS, watcher)
            probe.close()
        yield made, watcher


def _connect(raw: Raw, name: str, clean: bool, will: Will | None = None) -> None:
    """CONNECT as the device's one client id (5.0: a kept session unless ``clean``)."""
    expiry = Properties([(Property.SESSION_EXPIRY_INTERVAL, 0 if clean else EXPIRY)])
    v5 = raw.level == MQTT_5
    raw.send(
        Connect(raw.level, name, clean, 60, will=will, properties=expiry if v5 else NO_PROPERTIES)
    )
    connack = raw.read()
    assert isinstance(connack, Connack)
    assert connack.code == 0


def _published(watcher: Client, name: str, count: int) -> list[bytes]:
    """The payloads of the next ``count`` messages on the device's status topic (the will's
    and the new connection's arrive on C from two nodes: in either order), then nothing."""
    topic = f"devices/{name}/status"
    payloads: list[bytes] = []
    while len(payloads) < count:
        message = watcher.next_message()
        if message.topic == topic:
            payloads.append(bytes(message.payload))
    assert watcher.no_message(within=1.0)  # the will once, or none, even a little late
    return sorted(payloads)


@pytest.mark.parametrize(
    ("level", "delay", "away", "clean", "will"),
    [
        (MQTT_3_1_1, 0, False, False, False),  # the session goes on: no will
        (MQTT_3_1_1, 0, False, True, True),  # CleanSession 1 ends it: the will goes
        (MQTT_5, 0, False, False, False),  # [MQTT-3.1.3-9]: a connection to the session came
        (MQTT_5, 0, False, True, True),  # Clean Start ends it: the will goes
        (MQTT_5, DELAY, False, False, False),  # taken on within the delay: never
        (MQTT_5, DELAY, False, True, True),  # the session ends before the delay: now
        (MQTT_5, DELAY, True, False, False),  # the client was away, waiting: never
        (MQTT_5, DELAY, True, True, True),  # ... and ends the session: now
    ],
)
def test_a_take_over_from_another_node_publishes_the_will_only_if_the_session_ends(
    nodes: tuple[Cluster, Client], level: int, delay: int, away: bool, clean: bool, will: bool
) -> None:
    made, watcher = nodes
    name = f"taker-{level}-{delay}-{int(away)}{int(clean)}"
    certfile = made.device(name)
    delayed = Properties([(Property.WILL_DELAY_INTERVAL, delay)]) if delay else NO_PROPERTIES
    first = Raw(made.nodes["a"].port, made.server_cert, certfile, level)
    _connect(first, name, False, Will(STATUS, b"gone", properties=delayed))
    if away:  # 5.0 §3.14.2.1: gone, its will to be published (after its delay)
        first.send(Disconnect(Reason.DISCONNECT_WITH_WILL))
        assert first.closed()  # A has read it
    second = Raw(made.nodes["b"].port, made.server_cert, certfile, level)
    try:
        _connect(second, name, clean)
        assert first.closed()  # by node A (before B's CONNACK)
        second.send(Publish(STATUS, b"after"))
        assert _published(watcher, name, 2 if will else 1) == (
            [b"after", b"gone"] if will else [b"after"]
        )
    finally:
        first.close()
        second.close()
