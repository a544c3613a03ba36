"""The device "sensor" as a raw client of a node of ``tests.cluster.nodes``' cluster, with
a persistent session (clean session 0), for tests of a QoS 2 PUBLISH whose first copy went
unacknowledged and that the client sends again: DUP set, the same packet id (MQTT 3.1.1
§4.3.3, §4.4). Their shared set-up too: node B reaches NATS through a proxy that can hold
back what NATS sends it, so that B confirms A's forwarded copy late, or too late."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from broker.mqtt.packets import Connack, Connect, Publish
from tests.cluster.nodes import Cluster
from tests.cluster.proxy import Proxy
from tests.e2e.peers import Raw

TELEMETRY = "v1/devices/me/telemetry"
TOO_LATE = 6.0  # past CONFIRM_WITHIN (5 s): A's first routing of a copy B confirms fails
# Every member's heartbeat interval: B's writes are answered late while the proxy holds
# what NATS sends it, and a member none of whose heartbeats is written for two intervals
# fences itself off (``broker.cluster.fence``); at the longest interval, B writes its first
# at its start and the next long after the test.
HEARTBEAT = "60"


def start_with_b_behind(nodes: Cluster, proxy: Proxy, *others: str) -> None:
    """Nodes "a", "b" (reaching NATS through ``proxy``), then ``others``, at ``HEARTBEAT``."""
    nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = HEARTBEAT
    nodes.start("a")
    nodes.start("b", NANOIOT_NATS_URL=proxy.url)
    for name in others:
        nodes.start(name)


@contextmanager
def connected(nodes: Cluster, node: str, sensor: Path, *, session_present: bool) -> Iterator[Raw]:
    """The sensor (``sensor``: its .nopass.pem file) connected to ``node``, its CONNACK
    (return code 0) read."""
    with Raw(nodes.nodes[node].port, nodes.server_cert, sensor) as raw:
        raw.send(Connect(4, "sensor", False, 60))
        assert raw.read() == Connack(session_present, 0)
        yield raw


def sent_again(nodes: Cluster, node: str, sensor: Path, packet_id: int) -> None:
    """The sensor back on ``node``, its session there: its QoS 2 PUBLISH "once" with
    ``packet_id`` sent again and released, PUBREC and PUBCOMP answered."""
    with connected(nodes, node, sensor, session_present=True) as raw:
        raw.publish_again_and_release(TELEMETRY, b"once", packet_id)


def unconfirmed(nodes: Cluster, proxy: Proxy, sensor: Path) -> None:
    """The sensor's QoS 2 PUBLISH "once" (packet id 7) on A, B's confirmation held back by
    the proxy past ``TOO_LATE``: A's first routing fails and it closes the connection
    without PUBREC (§4.3.3: not the server's yet). The proxy lets B read on afterwards."""
    proxy.delay(TOO_LATE)
    with connected(nodes, "a", sensor, session_present=False) as raw:
        raw.send(Publish(TELEMETRY, b"once", 2, packet_id=7))
        assert raw.read() is None  # B did not confirm in time: closed, no PUBREC
    proxy.delay(0)
