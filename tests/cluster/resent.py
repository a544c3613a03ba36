"""The device "sensor" as a raw client of a node of ``tests.cluster.nodes``' cluster, with
a persistent session (clean session 0), for tests of a QoS 2 PUBLISH whose first copy went
unacknowledged and that the client sends again: DUP set, the same packet id (MQTT 3.1.1
§4.3.3, §4.4)."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from broker.mqtt.packets import Connack, Connect
from tests.cluster.nodes import Cluster
from tests.e2e.peers import Raw

TELEMETRY = "v1/devices/me/telemetry"


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
