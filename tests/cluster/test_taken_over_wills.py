"""A killed node's delayed MQTT 5 will, its departure taken over after the session was
adopted: 5.0 §3.1.3.2.2, the will is published when its delay ends, once.

The device's persistent session is on node A with a will of delay ``DELAY``; A is killed. The
survivor that wins A's departure (B or C) starts the delay, adopts the session (its claim is
that survivor's now) and is then killed, stopped cleanly (SIGTERM) or frozen (SIGSTOP) before
the delay ends. The other survivor takes the departure over (and, but for the frozen one,
adopts the first survivor's sessions in turn): the adoptions are not the device coming back,
so it publishes the will when the delay the first one started ends. A watcher on each
survivor sees what is published. The device's connection is a raw client (exact CONNECT
properties); nodes are separate processes on the machine's NATS and PostgreSQL.
"""

import os
import signal
import time
from pathlib import Path

import pytest

from broker.mqtt.packets import MQTT_5
from tests.cluster.delayed_wills import STATUS, connect_with_delayed_will, stored
from tests.cluster.nodes import adopting_node, cluster, until_routed
from tests.e2e.peers import Raw
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

# Seconds: past what it takes to notice A gone, adopt its session and take the departure
# over (a few heartbeats), so that the will comes when due, not at the take-over.
DELAY = 10


@pytest.mark.parametrize("end", ["killed", "stopped", "frozen"])
def test_a_delayed_will_of_a_departure_taken_over_after_its_adoption_comes_when_due(
    tmp_path: Path, end: str
) -> None:
    with cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = "0.5"
        sensor, prober = nodes.device("sensor"), nodes.device("prober")
        nodes.application("watcher")
        nodes.start_all("a", "b", "c")
        watchers = {name: nodes.connect(name, app="watcher", client_id=name) for name in "bc"}
        for watcher in watchers.values():
            assert watcher.subscribe("devices/+/status", qos=1) == [1]
        until_routed(nodes.connect("a", prober, client_id="prober"), STATUS, *watchers.values())
        first = Raw(nodes.nodes["a"].port, nodes.server_cert, sensor, MQTT_5)
        connect_with_delayed_will(first, DELAY)
        stored(first)
        for watcher in watchers.values():
            assert watcher.next_message().payload == b"up"

        nodes.kill("a")
        killed = time.monotonic()
        first.close()
        winner = adopting_node(nodes, "b", "c")
        taker = "c" if winner == "b" else "b"
        process = nodes.nodes[winner].process
        if end == "frozen":
            os.kill(process.pid, signal.SIGSTOP)
        else:
            process.send_signal(signal.SIGKILL if end == "killed" else signal.SIGTERM)
            process.wait(WAIT)
        try:
            log = nodes.nodes[taker].log
            log.wait_for(r"the departure of a\.[\d-]+ was left unsettled by ")
            will = watchers[taker].messages.get(timeout=DELAY + WAIT)
            assert time.monotonic() - killed >= DELAY  # not before its delay ended
            assert (will.topic, will.payload) == ("devices/sensor/status", b"gone")
            log.wait_for(r"published the will of session \S+/sensor")
        finally:
            if end == "frozen":
                thawed = len(nodes.nodes[winner].log.lines)
                os.kill(process.pid, signal.SIGCONT)
        if end == "frozen":  # its own delay ended while frozen: it leaves the will to C
            nodes.nodes[winner].log.wait_for(r"fenced off the cluster", after=thawed)
        assert watchers[taker].no_message(within=2.0)  # once
