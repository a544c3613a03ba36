"""Messages across a cluster of three ``nanoiot serve`` processes on the machine's NATS and
PostgreSQL: QoS 0, 1 and 2 from a device on one node to an application on another, in
order, each once; wildcard subscribers on every node; nothing crosses to a node without a
matching subscription. Real paho clients over mutual TLS."""

from pathlib import Path

import pytest

from tests.cluster.nodes import cluster, until_routed

pytestmark = pytest.mark.slow

TELEMETRY = "v1/devices/me/telemetry"


def test_device_on_a_reaches_application_on_c_at_each_qos_in_order(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("backend")
        for name in ("a", "b", "c"):
            nodes.start(name)
        app = nodes.connect("c", app="backend", client_id="backend")
        assert app.subscribe("devices/+/telemetry", qos=2) == [2]
        device = nodes.connect("a", sensor, client_id="sensor")
        until_routed(device, TELEMETRY, app)

        sent = [(qos, f"{qos}-{i}".encode()) for qos in (0, 1, 2) for i in range(30)]
        for qos, payload in sent:
            device.publish(TELEMETRY, payload, qos=qos)  # QoS 1/2: returns once acknowledged
        received = [app.next_message() for _ in sent]
        assert [(m.qos, m.payload) for m in received] == sent  # in order, at their QoS
        assert {m.topic for m in received} == {"devices/sensor/telemetry"}
        assert app.no_message()  # nothing twice (QoS 2: exactly once)


def test_wildcard_subscribers_on_every_node_get_each_message_once(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        for name in ("a", "b", "c"):
            nodes.application(f"app-{name}")
            nodes.start(name)
        apps = {}
        for name in ("a", "b", "c"):
            app = apps[name] = nodes.connect(name, app=f"app-{name}", client_id=f"app-{name}")
            assert app.subscribe("devices/#", qos=1) == [1]
        # Two overlapping filters on one node: still one copy for that node's client.
        assert apps["c"].subscribe("devices/+/telemetry", qos=1) == [1]
        device = nodes.connect("b", sensor, client_id="sensor")
        until_routed(device, TELEMETRY, *apps.values())

        for i in range(20):
            device.publish(TELEMETRY, f"m{i}".encode(), qos=1)
        for name, app in apps.items():
            got = [app.next_message().payload for _ in range(20)]
            assert got == [f"m{i}".encode() for i in range(20)], name
            assert app.no_message(), name
