"""A persistent session's QoS 2 message that a member refused reaches every subscriber once
when its client sends it again (MQTT 3.1.1 §4.3.3, §4.4). The device publishes on node C,
which reaches NATS through a proxy that holds back what NATS sends it (its route watch
among it). The backend's persistent session moves from A to B; C, its routes lagging,
routes the message to A alone of the two, and A, which the session left, refuses it: no
PUBREC, the connection closes. The client sends the PUBLISH again (DUP, same packet id),
which the session knows as received: it is routed again, and every subscriber gets it
once: the backend on B (the first copy never reached it), a watcher on A (A refused the
first copy), one on D (D took the first copy) and one on C (the publisher's first member).
So too when C is killed before the client sends it again: what routing it again needs was
stored with the session. Nodes as separate processes on the machine's NATS and PostgreSQL."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.mqtt.packets import Publish
from tests.cluster.nodes import (
    Cluster,
    backend_acking_when_told,
    cluster,
    counter,
    metrics,
    until_routed,
)
from tests.cluster.proxy import Proxy, nats_proxy
from tests.cluster.resent import TELEMETRY, connected, sent_again
from tests.e2e.harness import Client
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

WINDOW = 0.5  # cluster_handover_window: its least
LAG = 1.8  # what NATS sends C comes this much later (as in test_stale_routes)


@dataclass
class Scene:
    nodes: Cluster
    proxy: Proxy
    sensor: Path  # the device's .nopass.pem
    backend: Client  # on A, then on B
    watchers: dict[str, Client]  # on A, C and D

    def move_backend(self) -> None:
        """The backend's session moves from A to B while C's routes lag behind; whatever
        C routes with its routes of before is refused by A."""
        nodes = self.nodes
        self.proxy.delay(LAG)
        self.backend.close()
        mark = len(nodes.nodes["a"].log.lines)
        self.backend = backend_acking_when_told(nodes, "b")
        assert self.backend.session_present.get_nowait() is True
        nodes.nodes["a"].log.wait_for(r"no longer sent on to member b", after=mark)

    def refused_on_c(self) -> None:
        """The sensor's QoS 2 PUBLISH (packet id 7) on C while the backend moves: A, which
        C's lagging routes name, refuses it, and C closes the connection without PUBREC."""
        with connected(self.nodes, "c", self.sensor, session_present=False) as raw:
            self.move_backend()
            raw.send(Publish(TELEMETRY, b"once", 2, packet_id=7))
            assert raw.read() is None


@contextmanager
def four_nodes(tmp_path: Path) -> Iterator[Scene]:
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        prober = nodes.device("prober")
        nodes.application("backend")
        nodes.application("watcher")
        nodes.env["NANOIOT_CLUSTER_HANDOVER_WINDOW"] = str(WINDOW)
        nodes.start_all("a", "b", "d")
        nodes.start("c", NANOIOT_NATS_URL=proxy.url)
        backend = backend_acking_when_told(nodes, "a")
        assert backend.subscribe("devices/+/telemetry", qos=2) == [2]
        watchers = {name: _watcher(nodes, name) for name in ("a", "c", "d")}
        probe = nodes.connect("c", prober, client_id="prober")
        until_routed(probe, TELEMETRY, backend, *watchers.values())
        try:
            yield Scene(nodes, proxy, sensor, backend, watchers)
        finally:
            # C stops with NATS's answers on time: each of its stop's requests waited LAG.
            proxy.delay(0)


def test_a_qos2_message_a_member_refused_is_routed_again_when_sent_again_and_delivered_once(
    tmp_path: Path,
) -> None:
    with four_nodes(tmp_path) as scene:
        device = scene.nodes.connect("c", scene.sensor, client_id="sensor", clean_session=False)
        scene.move_backend()
        sent = device.paho.publish(TELEMETRY, b"once", qos=2)
        assert device.disconnected.wait(LAG + 5.0)  # A refused it: C closed the connection
        assert not sent.is_published()

        # paho connects again and sends it again (DUP): routed again, each gets it once.
        assert device.wait_connack() == 0
        sent.wait_for_publish(WAIT)
        assert sent.is_published()  # PUBREC, PUBREL, PUBCOMP
        _each_got_it_once(scene)
        assert _counted(scene, "c", "qos2_routed_again") == 1
        assert _counted(scene, "d", "qos2_repeats") == 1  # D had it: its watcher not again


def test_sent_again_to_another_member_it_is_routed_again_from_there(tmp_path: Path) -> None:
    """The client sends it again on a connection to D: the session is handed over from C
    with what its resend needs."""
    with four_nodes(tmp_path) as scene:
        nodes = scene.nodes
        scene.refused_on_c()
        sent_again(nodes, "d", scene.sensor, 7)
        _each_got_it_once(scene)
        assert _counted(scene, "d", "qos2_routed_again") == 1
        assert _counted(scene, "c", "qos2_repeats") == 1  # C had it: its watcher not again


def test_sent_again_after_the_death_of_the_member_that_held_it_it_is_routed_again(
    tmp_path: Path,
) -> None:
    """C is killed (SIGKILL: nothing handed over) after A refused the first copy; D reads
    the session, its packet id and what routing the message again needs from the store."""
    with four_nodes(tmp_path) as scene:
        nodes = scene.nodes
        scene.refused_on_c()
        nodes.kill("c")
        del scene.watchers["c"]  # its clean session went with C
        sent_again(nodes, "d", scene.sensor, 7)
        _each_got_it_once(scene)
        assert _counted(scene, "d", "qos2_routed_again") == 1


def _watcher(nodes: Cluster, node: str) -> Client:
    watcher = nodes.connect(node, app="watcher", client_id=f"watcher-{node}")
    assert watcher.subscribe("devices/+/telemetry", qos=2) == [2]
    return watcher


def _each_got_it_once(scene: Scene) -> None:
    got = scene.backend.next_message()
    assert (got.payload, got.qos) == (b"once", 2)
    scene.backend.paho.ack(got.mid, got.qos)
    for name, watcher in scene.watchers.items():
        assert watcher.next_message().payload == b"once", name
    # Each had its copy before this second: a second copy would come within it. One second
    # for all of them, each watched until its end.
    end = time.monotonic() + 1.0
    for name, client in {"backend": scene.backend, **scene.watchers}.items():
        left = max(0.0, end - time.monotonic())
        assert client.no_message(within=left), f"{name} got the message twice"


def _counted(scene: Scene, node: str, name: str) -> float:
    return counter(metrics(scene.nodes, node), f"nanoiot_cluster_{name}_total")
