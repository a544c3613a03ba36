"""A persistent session's QoS 2 message that a member refused reaches every subscriber once
when its client sends it again (MQTT 3.1.1 §4.3.3, §4.4). The device publishes on node C,
which reaches NATS through a proxy that holds back what NATS sends it (its route watch
among it). The backend's persistent session moves from A to B; C, its routes lagging,
routes the message to A alone of the two, and A, which the session left, refuses it: no
PUBREC, the connection closes. The client sends the PUBLISH again (DUP, same packet id),
which C knows as received: it routes it again, and every subscriber gets it once: the
backend on B (the first copy never reached it), a watcher on A (A refused the first copy),
one on D (D took the first copy) and one on C (the publisher's own member). Real paho
clients, nodes as separate processes on the machine's NATS and PostgreSQL."""

from pathlib import Path

import pytest

from tests.cluster.nodes import Cluster, cluster, until_routed
from tests.cluster.proxy import nats_proxy
from tests.cluster.test_sessions import TELEMETRY, _backend
from tests.e2e.harness import Client
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

WINDOW = 0.5  # cluster_handover_window: its least
LAG = 1.8  # what NATS sends C comes this much later (as in test_stale_routes)


def test_a_qos2_message_a_member_refused_is_routed_again_when_sent_again_and_delivered_once(
    tmp_path: Path,
) -> None:
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.application("watcher")
        nodes.env["NANOIOT_CLUSTER_HANDOVER_WINDOW"] = str(WINDOW)
        for name in ("a", "b", "d"):
            nodes.start(name)
        nodes.start("c", NANOIOT_NATS_URL=proxy.url)
        backend = _backend(nodes, "a")
        assert backend.subscribe("devices/+/telemetry", qos=2) == [2]
        watchers = {name: _watcher(nodes, name) for name in ("a", "c", "d")}
        device = nodes.connect("c", sensor, client_id="sensor", clean_session=False)
        until_routed(device, TELEMETRY, backend, *watchers.values())

        # The backend's session moves from A to B while C's routes lag behind.
        proxy.delay(LAG)
        backend.close()
        mark = len(nodes.nodes["a"].log.lines)
        backend = _backend(nodes, "b")
        assert backend.session_present.get_nowait() is True
        nodes.nodes["a"].log.wait_for(r"no longer sent on to member b", after=mark)

        # C routes to A (refused: the session left it), D and its own watcher.
        sent = device.paho.publish(TELEMETRY, b"once", qos=2)
        assert device.disconnected.wait(LAG + 5.0)
        assert not sent.is_published()
        nodes.nodes["a"].log.wait_for(
            r"a forwarded message refused: routed at revision", after=mark
        )

        # paho connects again and sends it again (DUP): routed again, each gets it once.
        assert device.wait_connack() == 0
        sent.wait_for_publish(WAIT)
        assert sent.is_published()  # PUBREC, PUBREL, PUBCOMP
        got = backend.next_message()
        assert (got.payload, got.qos) == (b"once", 2)
        backend.paho.ack(got.mid, got.qos)
        for name, watcher in watchers.items():
            assert watcher.next_message().payload == b"once", name
        for name, client in {"backend": backend, **watchers}.items():
            assert client.no_message(within=1.0), f"{name} got the message twice"


def _watcher(nodes: Cluster, node: str) -> Client:
    watcher = nodes.connect(node, app="watcher", client_id=f"watcher-{node}")
    assert watcher.subscribe("devices/+/telemetry", qos=2) == [2]
    return watcher
