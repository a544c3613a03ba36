"""The cluster's NATS server crashes (SIGKILL) and starts again with the same store while
two nodes carry QoS 1/2 traffic: the persistent subscriber S holds its session on node a,
the publisher P on node b publishes a numbered stream to it.

Both nodes lose NATS at once; they fence themselves off two heartbeats later (neither can
tell the other is alive), and once the server is back both rejoin on their own, within a
bound. P is never acknowledged for what was not routed or parked (MQTT 3.1.1 §4.3.2): every
number it got acknowledged reaches S, QoS 2 once (§4.3.3), in P's order (§4.6). Real paho
clients over TLS, nodes as separate processes, a private ``nats-server -js`` (never the
machine's shared one), the machine's PostgreSQL."""

from pathlib import Path

import pytest

from tests.cluster.moving import (
    FILTER,
    ROOMY_QUEUES,
    Publisher,
    Subscriber,
    acknowledged_and_received,
    check_moved,
    subscribed_on_a,
)
from tests.cluster.nodes import cluster
from tests.natsserver import restartable_nats

pytestmark = pytest.mark.slow

HEARTBEAT = 1.0  # seconds: the nodes fence themselves off 2 after their last one written
BEFORE = 50  # new numbers S receives before the crash
AFTER = 100  # numbers P gets acknowledged once the cluster is back
BACK_WITHIN = 30.0  # seconds from NATS's restart to every node back in the cluster
SLOW_HEARTBEAT = 3.0  # seconds: NATS is back (within a second) long before the fencing


@pytest.mark.parametrize("qos", [1, 2])
def test_a_nats_crash_and_restart_loses_nothing_acknowledged(tmp_path: Path, qos: int) -> None:
    with restartable_nats(tmp_path / "nats") as server, cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_NATS_URL"] = server.url
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = str(HEARTBEAT)
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.start_all("a", "b", **ROOMY_QUEUES)
        a, b = nodes.nodes["a"], nodes.nodes["b"]
        with Subscriber(nodes, "backend", 4) as subscriber:
            device = subscribed_on_a(subscriber, FILTER, qos, sensor, "b", "sensor")
            device.paho.reconnect_delay_set(1, 1)  # back as soon as b accepts again
            with Publisher(device, qos, patience=2 * BACK_WITHIN) as publisher:
                assert subscriber.receive_new(BEFORE), subscriber.counts()
                on_a, on_b = len(a.log.lines), len(b.log.lines)
                server.kill()
                a.log.wait_for(r"fenced off the cluster", after=on_a)
                b.log.wait_for(r"fenced off the cluster", after=on_b)
                server.start()
                a.log.wait_for(r"back in the cluster as run 1", after=on_a, within=BACK_WITHIN)
                b.log.wait_for(r"back in the cluster as run 1", after=on_b, within=BACK_WITHIN)
                assert publisher.acknowledged_within(AFTER, BACK_WITHIN), "P got stuck"
                subscriber.move("a", "disconnect")  # its session, wherever it went
                acknowledged = acknowledged_and_received(publisher, subscriber, AFTER)
    check_moved(subscriber, acknowledged, qos)


@pytest.mark.parametrize("qos", [1, 2])
def test_a_session_taken_over_just_after_a_quick_nats_restart(tmp_path: Path, qos: int) -> None:
    """NATS back before the nodes fence themselves off (3 s heartbeats): both go on, and a is
    still reading what b parked for it while it was away when S takes its session to b.
    S's new session on b reads those parked messages and takes a's barriers as from any
    live member: it was taken for dead, and what reached S waited 5 s for barriers that
    never came, its publisher was closed unacknowledged and sent them again (QoS 2 messages
    delivered twice). A subscription made after the restart still reaches the other node
    (the nodes' key-value watches survive the restart), and b asks a, alive, for its
    hand-over barrier knowing it is: its members watch, remade on the reconnection, saw a's
    heartbeats since (not remade, it stayed silent ~20 s and b gave the barrier up after 2 s
    judging a by its heartbeats from before the restart)."""
    with restartable_nats(tmp_path / "nats") as server, cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_NATS_URL"] = server.url
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = str(SLOW_HEARTBEAT)
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.application("watcher")
        nodes.start_all("a", "b", **ROOMY_QUEUES)
        a, b = nodes.nodes["a"], nodes.nodes["b"]
        with Subscriber(nodes, "backend", 4) as subscriber:
            device = subscribed_on_a(subscriber, FILTER, qos, sensor, "b", "sensor")
            device.paho.reconnect_delay_set(1, 1)
            with Publisher(device, qos, patience=2 * BACK_WITHIN) as publisher:
                assert subscriber.receive_new(BEFORE), subscriber.counts()
                on_a, on_b = len(a.log.lines), len(b.log.lines)
                server.kill()
                server.start()
                a.log.wait_for(r"reconnected to NATS", after=on_a)
                b.log.wait_for(r"reconnected to NATS", after=on_b)
                assert publisher.acknowledged_within(AFTER, BACK_WITHIN), "P got stuck"
                watcher = nodes.connect("a", app="watcher", client_id="watcher")
                assert watcher.subscribe("devices/sensor/telemetry", qos=1) == [1]
                assert subscriber.receive_new(AFTER), subscriber.counts()
                assert not watcher.no_message(within=5), "a's new route never reached b"
                assert publisher.acknowledged_within(AFTER, BACK_WITHIN), "P got stuck"
                subscriber.move("b", "take-over")
                acknowledged = acknowledged_and_received(publisher, subscriber, AFTER)
                lines = b.log.lines[on_b:]
                given_up = [line for line in lines if "barrier" in line and "given up" in line]
                assert not given_up, given_up
    check_moved(subscriber, acknowledged, qos)
