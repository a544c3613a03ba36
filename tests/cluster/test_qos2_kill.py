"""MQTT 3.1.1 §4.3.3 (method B) when a node dies: node A routed a persistent session's QoS 2
PUBLISH and sent PUBREC, then A is killed (SIGKILL: no hand-over). The client sends the
PUBLISH again (DUP) to node B before PUBREL: B read the packet id with the session from the
shared store, so the subscriber gets the message once. A raw client, as paho does not send
a PUBLISH again on demand."""

from pathlib import Path

import pytest

from broker.mqtt.packets import Pubcomp, Publish, Pubrec, Pubrel
from tests.cluster.nodes import cluster, watched_on_b
from tests.cluster.resent import TELEMETRY, connected

pytestmark = pytest.mark.slow


def test_a_qos2_publish_sent_again_after_its_node_died_is_not_routed_twice(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = "0.5"
        sensor, watcher = watched_on_b(nodes)

        with connected(nodes, "a", sensor, session_present=False) as raw:
            raw.send(Publish(TELEMETRY, b"once", 2, packet_id=7))
            assert raw.read() == Pubrec(7)  # routed by A, its packet id committed
            nodes.kill("a")  # at once: nothing is handed over
        assert watcher.next_message().payload == b"once"

        with connected(nodes, "b", sensor, session_present=True) as raw:
            raw.publish_again_and_release(TELEMETRY, b"once", 7)
            # The id is free again: the next message with it is routed.
            raw.send(Publish(TELEMETRY, b"next", 2, packet_id=7))
            assert raw.read() == Pubrec(7)
            raw.send(Pubrel(7))
            assert raw.read() == Pubcomp(7)
        assert watcher.next_message().payload == b"next"  # "once" not again before it
        assert watcher.no_message(within=1.0)  # exactly once
