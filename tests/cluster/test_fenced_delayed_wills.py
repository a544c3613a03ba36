"""The delayed MQTT 5 will of a device whose node fenced itself off: 5.0 §3.1.3.2.2, the will is
published when the delay passes or the session ends, whichever comes first; [MQTT-3.1.3-9],
never if a connection to the session is made before the delay passed.

The device connects to node A while A has lost NATS (its connect cannot claim its session nor
keep its will in the cluster: A alone knows of the will), with a will of delay 300 s (never
waited out here) and a session kept 600 s. A fences itself off and closes the connection
without its will (0x9C), and holds the will until it is back. The device connects to node B,
while A is fenced off or once it is back: with Clean Start 1, which ends the session, A
publishes the will at once, once; with Clean Start 0, which takes the session on, never. Node A
reaches NATS through a TCP proxy the test cuts; a watcher on B sees what is published; the
device's connections are raw clients (exact CONNECT flags and properties); nodes are separate
processes on the machine's NATS and PostgreSQL.
"""

from pathlib import Path

import pytest

from broker.mqtt.packets import MQTT_5, Disconnect
from tests.cluster.delayed_wills import (
    STATUS,
    at_once_or_never,
    connect,
    connect_with_delayed_will,
)
from tests.cluster.nodes import cluster, cut_off_a_watched_on_b, until_routed
from tests.cluster.proxy import nats_proxy
from tests.e2e.peers import Raw

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("when", "clean"),
    [("while-fenced", True), ("while-fenced", False), ("once-back", True)],
)
def test_a_fenced_nodes_delayed_will_goes_at_once_if_a_reconnect_elsewhere_ends_the_session(
    tmp_path: Path, when: str, clean: bool
) -> None:
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        watcher = cut_off_a_watched_on_b(nodes, proxy)
        a, b = nodes.nodes["a"], nodes.nodes["b"]
        probe = nodes.connect("a", sensor, client_id="probe")
        until_routed(probe, STATUS, watcher)
        probe.close()

        proxy.cut()
        first = Raw(a.port, nodes.server_cert, sensor, MQTT_5)
        connect_with_delayed_will(first)
        a.log.wait_for(r"session \S+sensor not claimed in the cluster")
        a.log.wait_for(r"fenced off the cluster")
        packet = first.read()
        assert isinstance(packet, Disconnect)
        assert packet.code == 0x9C  # use another server (5.0 §3.14.2.1), without its will
        first.close()
        if when == "once-back":
            proxy.restore()
            a.log.wait_for(r"back in the cluster as run 1")  # the will waits there now
        second = Raw(b.port, nodes.server_cert, sensor, MQTT_5)
        try:
            connect(second, clean)
            if when == "while-fenced":
                proxy.restore()
                a.log.wait_for(r"back in the cluster as run 1")
            at_once_or_never(watcher, a.log, clean)
        finally:
            second.close()
