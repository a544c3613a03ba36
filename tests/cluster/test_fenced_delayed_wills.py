"""The delayed MQTT 5 will of a device whose node fenced itself off: 5.0 §3.1.3.2.2, the will is
published when the delay passes or the session ends, whichever comes first; [MQTT-3.1.3-9],
never if a connection to the session is made before the delay passed; a connection made
after it does not cancel it.

The device connects to node A while A has lost NATS (its connect cannot claim its session nor
keep its will in the cluster: A alone knows of the will), with a will of delay 300 s (never
waited out here; or 2 s, waited out while A is fenced off) and a session kept 600 s. A fences
itself off and closes the connection without its will (0x9C), and holds the will until it is
back. The device connects to node B, while A is fenced off or once it is back: with Clean Start
1, which ends the session, A publishes the will at once, once; with Clean Start 0, which takes
the session on, never, unless the delay had ended before: then the will was due, and A
publishes it late. Node A reaches NATS through a TCP proxy the test cuts; a watcher on B sees
what is published; the device's connections are raw clients (exact CONNECT flags and
properties); nodes are separate processes on the machine's NATS and PostgreSQL.
"""

import time
from pathlib import Path

import pytest

from broker.mqtt.packets import MQTT_5, Disconnect
from tests.cluster.delayed_wills import (
    DELAY,
    STATUS,
    at_once_or_never,
    connect,
    connect_with_delayed_will,
)
from tests.cluster.nodes import Cluster, cluster, cut_off_a_watched_on_b, until_routed
from tests.cluster.proxy import Proxy, nats_proxy
from tests.e2e.harness import Client
from tests.e2e.peers import Raw

pytestmark = pytest.mark.slow

SHORT_DELAY = 2  # seconds: a Will Delay Interval that ends while A is fenced off


def _closed_by_the_fencing(nodes: Cluster, proxy: Proxy, delay: int) -> tuple[Path, Client]:
    """The device's connection to A with a will of ``delay`` seconds, made while A has lost
    NATS, closed by A's fencing (0x9C, without its will): the device's .nopass.pem file and
    the watcher on B."""
    sensor = nodes.device("sensor")
    watcher = cut_off_a_watched_on_b(nodes, proxy)
    a = nodes.nodes["a"]
    probe = nodes.connect("a", sensor, client_id="probe")
    until_routed(probe, STATUS, watcher)
    probe.close()

    proxy.cut()
    first = Raw(a.port, nodes.server_cert, sensor, MQTT_5)
    connect_with_delayed_will(first, delay)
    a.log.wait_for(r"session \S+sensor not claimed in the cluster")
    a.log.wait_for(r"fenced off the cluster")
    packet = first.read()
    assert isinstance(packet, Disconnect)
    assert packet.code == 0x9C  # use another server (5.0 §3.14.2.1), without its will
    first.close()
    return sensor, watcher


@pytest.mark.parametrize(
    ("when", "clean"),
    [("while-fenced", True), ("while-fenced", False), ("once-back", True)],
)
def test_a_fenced_nodes_delayed_will_goes_at_once_if_a_reconnect_elsewhere_ends_the_session(
    tmp_path: Path, when: str, clean: bool
) -> None:
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        sensor, watcher = _closed_by_the_fencing(nodes, proxy, DELAY)
        a, b = nodes.nodes["a"], nodes.nodes["b"]
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


def test_a_fenced_nodes_delayed_will_due_before_a_reconnect_elsewhere_goes_late(
    tmp_path: Path,
) -> None:
    """The will's delay ends while A is fenced off, and only then the device connects to B
    with Clean Start 0: the will was due before that connect (§3.1.3.2.2: when the delay
    passes or the session ends, whichever comes first), so A publishes it once it is back,
    late, once."""
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        sensor, watcher = _closed_by_the_fencing(nodes, proxy, SHORT_DELAY)
        time.sleep(SHORT_DELAY + 0.5)  # the delay itself, counted from the fencing's close
        a, b = nodes.nodes["a"], nodes.nodes["b"]
        second = Raw(b.port, nodes.server_cert, sensor, MQTT_5)
        try:
            connect(second, False)
            proxy.restore()
            a.log.wait_for(r"back in the cluster as run 1")
            will = watcher.next_message()
            assert (will.topic, will.payload) == ("devices/sensor/status", b"gone")
            assert watcher.no_message(within=1.0)  # once
        finally:
            second.close()
