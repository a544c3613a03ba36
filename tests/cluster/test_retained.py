"""Retained messages across a cluster of ``nanoiot serve`` processes: published on node A,
read on node B, and on node C started afterwards; an empty retained message deletes it
everywhere. Real paho clients over mutual TLS."""

from pathlib import Path

import pytest

from tests.cluster.nodes import cluster
from tests.cluster.retained import TOPIC, first_retained
from tests.e2e.harness import WAIT

pytestmark = pytest.mark.slow


def test_retained_on_a_is_read_on_b_and_on_a_node_started_later(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.start("a")
        nodes.start("b")
        device = nodes.connect("a", sensor, client_id="sensor")
        device.publish("v1/devices/me/telemetry", b"21.5", qos=1, retain=True)

        on_b = nodes.connect("b", app="backend", client_id="backend-b")
        assert first_retained(on_b, attempts=30) == b"21.5"
        nodes.start("c")  # reads the cluster's retained messages before it accepts clients
        on_c = nodes.connect("c", app="backend", client_id="backend-c")
        # It has it from the start: the one message is waited for as long as any event.
        assert first_retained(on_c, attempts=1, within=WAIT) == b"21.5"

        device.publish("v1/devices/me/telemetry", b"", qos=1, retain=True)  # §3.3.1.3: delete
        later = nodes.connect("c", app="backend", client_id="backend-c2")
        for _ in range(30):
            if first_retained(later, attempts=1) is None:
                break
            later.paho.unsubscribe(TOPIC)
        else:
            raise AssertionError("the deleted retained message is still on node C")
