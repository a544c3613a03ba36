"""A node stopped cleanly (SIGTERM) leaves the cluster at once: the others see it gone from
the members bucket, and its clients' wills stay unpublished, as a single node's do at
shutdown (it closed their connections itself). ``nanoiot serve`` processes, real paho
clients over mutual TLS."""

import signal
import threading
import time
from pathlib import Path

import pytest

from tests.cluster.nodes import cluster
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow


def test_a_node_stopped_cleanly_is_gone_at_once_and_publishes_no_will(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = "30"  # a departure by heartbeat
        sensor = nodes.device("sensor")  # would take longer than this test waits
        nodes.application("watcher")
        nodes.start("a")
        nodes.start("b")
        watcher = nodes.connect("b", app="watcher", client_id="watcher")
        assert watcher.subscribe("devices/+/status", qos=1) == [1]
        nodes.connect("a", sensor, client_id="sensor", will=("v1/devices/me/status", b"gone"))

        a = nodes.nodes["a"]
        a.process.send_signal(signal.SIGTERM)
        assert a.process.wait(WAIT) == 0
        b_log = nodes.nodes["b"].log
        deadline = time.monotonic() + WAIT
        while not any("cluster member a " in line and " left" in line for line in b_log.lines):
            assert time.monotonic() < deadline, "node b never saw node a leave"
            threading.Event().wait(0.05)
        # A survivor reads the departed run's wills as soon as it sees the departure: one
        # left behind would be published within this second.
        assert watcher.no_message(within=1.0)
