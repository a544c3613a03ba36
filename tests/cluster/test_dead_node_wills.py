"""A delayed MQTT 5 will of a killed node's client, and its client connecting again to a
survivor within the delay: 5.0 §3.1.3.2.2, the will is published when the delay passes or the
session ends, whichever comes first; [MQTT-3.1.3-9], never if a connection to the session is
made before the delay passed.

The device's persistent session is on node A, with a will of delay 300 s (never waited out
here); A is killed (SIGKILL) and the device connects to node B, before B took A as gone or
after B adopted A's sessions. Clean Start 1 ends the session: the will is published at once,
once. Clean Start 0 takes the session on: B drops the will at once, and it never comes. A
watcher on B sees what is published. The device's connections are raw clients (exact CONNECT
flags and properties); nodes are separate processes on the machine's NATS and PostgreSQL.
"""

from pathlib import Path

import pytest

from broker.mqtt.packets import MQTT_5
from tests.cluster.delayed_wills import at_once_or_never, connect, connect_with_delayed_will, stored
from tests.cluster.nodes import cluster
from tests.e2e.peers import Raw

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("adopted", [False, True], ids=["before-adoption", "after-adoption"])
@pytest.mark.parametrize("clean", [True, False], ids=["clean-start-1", "clean-start-0"])
def test_a_dead_nodes_delayed_will_goes_at_once_if_a_reconnect_ends_the_session(
    tmp_path: Path, adopted: bool, clean: bool
) -> None:
    with cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = "0.5"
        sensor = nodes.device("sensor")
        nodes.application("watcher")
        nodes.start_all("a", "b")
        b = nodes.nodes["b"]
        watcher = nodes.connect("b", app="watcher", client_id="watcher")
        assert watcher.subscribe("devices/+/status", qos=1) == [1]
        first = Raw(nodes.nodes["a"].port, nodes.server_cert, sensor, MQTT_5)
        connect_with_delayed_will(first)  # kept before
        stored(first)
        assert watcher.next_message().payload == b"up"
        nodes.kill("a")
        first.close()
        if adopted:
            b.log.wait_for(r"adopted 1 persistent sessions of member a")
        second = Raw(b.port, nodes.server_cert, sensor, MQTT_5)
        try:
            connect(second, clean)
            at_once_or_never(watcher, b.log, clean)
        finally:
            second.close()
