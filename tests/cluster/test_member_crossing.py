"""The messages crossing between members, counted on both sides in every member's figures:
``/metrics`` of any node (and of a workers' supervisor) labels them by member, as of each
one's last heartbeat. ``nanoiot serve`` processes, real paho clients over mutual TLS."""

import re
from pathlib import Path

import pytest

from tests.cluster.nodes import TELEMETRY, cluster, metrics, until_routed, wait_for

pytestmark = pytest.mark.slow

FAST = {"NANOIOT_CLUSTER_HEARTBEAT_INTERVAL": "0.2"}


def figure(text: str, name: str, member: str) -> float:
    """``name`` of ``member`` in a ``/metrics`` text; -1 when it is not there."""
    found = re.search(rf'^{name}{{member="{member}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else -1.0


def test_messages_crossing_are_counted_by_the_sender_and_the_receiver(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.start("a", **FAST)
        nodes.start("b", **FAST)
        device = nodes.connect("a", sensor, client_id="sensor")
        app = nodes.connect("b", app="backend", client_id="backend")
        assert app.subscribe("devices/+/telemetry", qos=1) == [1]
        until_routed(device, TELEMETRY, app)
        for n in range(5):
            device.publish(TELEMETRY, f"{n}".encode(), qos=1)
        for _ in range(5):
            app.next_message()

        def crossed() -> bool:
            text = metrics(nodes, "b")
            received = figure(text, "nanoiot_cluster_member_messages_received_total", "a")
            sent = figure(text, "nanoiot_cluster_member_messages_forwarded_total", "a")
            taken = figure(text, "nanoiot_cluster_member_messages_from_members_total", "b")
            # Every message a received has its one subscriber on b: each one crossed.
            return (
                received >= 6
                and sent == received
                and taken == sent
                and (
                    figure(text, "nanoiot_cluster_member_messages_forwarded_total", "b") == 0
                    and figure(text, "nanoiot_cluster_member_messages_from_members_total", "a") == 0
                )
            )

        assert wait_for(crossed), metrics(nodes, "b")
