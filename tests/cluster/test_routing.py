"""Messages across a cluster of three ``nanoiot serve`` processes on the machine's NATS and
PostgreSQL: QoS 0, 1 and 2 from a device on one node to an application on another, in
order, each once; wildcard subscribers on every node; nothing crosses to a node without a
matching subscription. Real paho clients over mutual TLS."""

import contextlib
import time
from pathlib import Path
from queue import Empty

import pytest

from tests.cluster.nodes import cluster, counter, metrics, until_routed
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

TELEMETRY = "v1/devices/me/telemetry"


def test_device_on_a_reaches_application_on_c_at_each_qos_in_order(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.start_all("a", "b", "c")
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

        # /metrics of both ends: A routes to C (C's one filter) and forwarded, C received.
        on_a, on_c = metrics(nodes, "a"), metrics(nodes, "c")
        assert 'nanoiot_cluster_routes{member="c"} 1.0' in on_a
        name = nodes.env["NANOIOT_CLUSTER_NAME"]
        assert f'nanoiot_cluster_member{{cluster="{name}",member="c"}} 1.0' in on_c
        assert counter(on_a, "nanoiot_cluster_forwarded_messages_total") >= len(sent)
        assert counter(on_c, "nanoiot_cluster_received_messages_total") >= len(sent)


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


def test_a_shared_subscription_gets_each_message_once_across_nodes(tmp_path: Path) -> None:
    """MQTT 5.0 §4.8.2: one copy per group, whichever nodes its members are on."""
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        for name in ("a", "b", "c"):
            nodes.application(f"app-{name}")
            nodes.start(name)
        members = {}
        for name in ("b", "c"):
            app = members[name] = nodes.connect(name, app=f"app-{name}", client_id=f"app-{name}")
            assert app.subscribe("$share/workers/devices/+/telemetry", qos=1) == [1]
        watcher = nodes.connect("c", app="app-a", client_id="watcher")
        assert watcher.subscribe("devices/+/telemetry", qos=1) == [1]
        device = nodes.connect("a", sensor, client_id="sensor")
        until_routed(device, TELEMETRY, watcher)
        for member in members.values():  # probes that reached the group meanwhile
            while not member.no_message(within=0.3):
                pass

        sent = [f"s{i}".encode() for i in range(40)]
        for payload in sent:
            device.publish(TELEMETRY, payload, qos=1)
        assert [watcher.next_message().payload for _ in sent] == sent  # plain: every one
        got: dict[str, list[bytes]] = {name: [] for name in members}
        deadline = time.monotonic() + WAIT
        while sum(map(len, got.values())) < len(sent):
            assert time.monotonic() < deadline, got
            for name, member in members.items():
                with contextlib.suppress(Empty):
                    got[name].append(bytes(member.messages.get(timeout=0.05).payload))
        assert sorted(got["b"] + got["c"]) == sorted(sent)  # each message once in the group
        assert got["b"], got  # members on both nodes take turns
        assert got["c"], got
        assert all(member.no_message() for member in members.values())
