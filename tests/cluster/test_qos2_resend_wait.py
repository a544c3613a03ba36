"""A persistent session's QoS 2 PUBLISH sent again while the first copy's routing still
waits for another member's confirmation is not acknowledged before that routing's outcome
(MQTT 3.1.1 §4.3.3: PUBREC once the message is the server's, delivered once). The device
publishes on node A; B, with a watcher, reaches NATS through a proxy that holds back what
NATS sends it, so the copy A forwards reaches B (and B confirms it) late. The device's
connection ends before its PUBREC and the client sends the PUBLISH again on a new one.
Nodes as separate processes on the machine's NATS and PostgreSQL."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.mqtt.packets import Pubcomp, Publish, Pubrec, Pubrel
from tests.cluster.nodes import Cluster, cluster, counter, metrics, until_routed
from tests.cluster.proxy import Proxy, nats_proxy
from tests.cluster.resent import TELEMETRY, TOO_LATE, connected, sent_again, start_with_b_behind
from tests.e2e.harness import Client

pytestmark = pytest.mark.slow

LATE = 2.0  # B confirms this much late: within CONFIRM_WITHIN (5 s), with room to spare
RECEIVED = "nanoiot_cluster_received_messages_total"


@dataclass
class Scene:
    nodes: Cluster
    proxy: Proxy
    sensor: Path  # the device's .nopass.pem
    watcher: Client  # on B
    probe: Client  # another device, on A

    def received_by_b(self) -> float:
        return counter(metrics(self.nodes, "b"), RECEIVED)


@contextmanager
def b_behind_a_proxy(tmp_path: Path) -> Iterator[Scene]:
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        prober = nodes.device("prober")
        nodes.application("watcher")
        start_with_b_behind(nodes, proxy)
        watcher = nodes.connect("b", app="watcher", client_id="watcher")
        assert watcher.subscribe("devices/+/telemetry", qos=2) == [2]
        probe = nodes.connect("a", prober, client_id="prober")
        until_routed(probe, TELEMETRY, watcher)
        yield Scene(nodes, proxy, sensor, watcher, probe)


def _publish_and_leave(scene: Scene) -> None:
    """The device's QoS 2 PUBLISH on A, its connection closed before any PUBREC."""
    with connected(scene.nodes, "a", scene.sensor, session_present=False) as raw:
        raw.send(Publish(TELEMETRY, b"once", 2, packet_id=7))


def test_a_resend_while_the_first_routing_is_pending_gets_its_pubrec_once_confirmed(
    tmp_path: Path,
) -> None:
    with b_behind_a_proxy(tmp_path) as scene:
        before = scene.received_by_b()
        scene.proxy.delay(LATE)
        _publish_and_leave(scene)
        with connected(scene.nodes, "a", scene.sensor, session_present=True) as raw:
            raw.send(Publish(TELEMETRY, b"once", 2, dup=True, packet_id=7))
            assert raw.read() == Pubrec(7)
            # B counts what it receives before it confirms it: it had the first copy.
            assert scene.received_by_b() == before + 1
            raw.send(Pubrel(7))
            assert raw.read() == Pubcomp(7)
        assert scene.watcher.next_message().payload == b"once"
        assert scene.watcher.no_message(within=1.0)  # once
        assert counter(metrics(scene.nodes, "a"), "nanoiot_cluster_qos2_routed_again_total") == 0


def test_if_the_first_routing_then_fails_the_resend_is_not_acknowledged_either(
    tmp_path: Path,
) -> None:
    """As for the first copy: no PUBREC, the connection closes; the next copy sent again
    is routed again, and B, which took the first copy late, does not deliver it again."""
    with b_behind_a_proxy(tmp_path) as scene:
        scene.proxy.delay(TOO_LATE)
        _publish_and_leave(scene)
        with connected(scene.nodes, "a", scene.sensor, session_present=True) as raw:
            raw.send(Publish(TELEMETRY, b"once", 2, dup=True, packet_id=7))
            assert raw.read() is None  # B did not confirm in time: closed, no PUBREC
        scene.proxy.delay(0)
        # Once a probe from A reached the watcher, B has all that the proxy held back.
        scene.probe.publish(TELEMETRY, b"probe", qos=0)
        assert scene.watcher.next_message().payload == b"once"  # the first copy, late
        assert scene.watcher.next_message().payload == b"probe"
        sent_again(scene.nodes, "a", scene.sensor, 7)
        assert scene.watcher.no_message(within=1.0)  # not again
        assert counter(metrics(scene.nodes, "a"), "nanoiot_cluster_qos2_routed_again_total") == 1
        assert counter(metrics(scene.nodes, "b"), "nanoiot_cluster_qos2_repeats_total") == 1
