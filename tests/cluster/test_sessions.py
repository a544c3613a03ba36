"""A persistent session moves with its client between nodes (MQTT 3.1.1 §3.1.2.4): what node
A queued while the client was away, and what it had sent without an acknowledgement
(§4.4: sent again, DUP set), reach the client on node B, each once (QoS 2 exactly once), with
session present set; and from then on B, not A, routes for it. Real paho clients, nodes as
separate processes on the machine's NATS and PostgreSQL."""

import os
import signal
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes

from broker.mqtt.packets import Publish, Pubrec
from tests.cluster.nodes import (
    APP_PASSWORD,
    SLOW_HEARTBEAT,
    TELEMETRY,
    Cluster,
    adopting_node,
    any_closed,
    backend_acking_when_told,
    cluster,
    counter,
    logged,
    metrics,
    until_routed,
    wait_for,
    watched_on_b,
)
from tests.cluster.resent import connected, sent_again
from tests.e2e.harness import mqtt_client
from tests.e2e.v5_client import make_properties, v5_client
from tests.paho_loop import stop_loop

pytestmark = pytest.mark.slow


def _stall_a_holding_the_backend(nodes: Cluster) -> int:
    """Nodes a, b and c with a 0.5 s heartbeat; the backend's persistent session on A with one
    message queued for it (PUBACKed: A committed it), the device's clean session ended; then A
    stopped (SIGSTOP). Its pid."""
    nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = "0.5"
    sensor = nodes.device("sensor")
    nodes.application("backend")
    nodes.start_all("a", "b", "c")
    backend = backend_acking_when_told(nodes, "a")
    assert backend.subscribe("devices/+/telemetry", qos=1) == [1]
    backend.close()
    device = nodes.connect("a", sensor, client_id="sensor")
    device.publish(TELEMETRY, b"kept", qos=1)
    device.close()
    pid = nodes.nodes["a"].process.pid
    os.kill(pid, signal.SIGSTOP)
    return pid


def test_a_session_taken_to_b_keeps_its_queue_and_in_flight_messages(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.start_all("a", "b", "c")
        backend = backend_acking_when_told(nodes, "a")
        assert backend.session_present.get_nowait() is False
        assert backend.subscribe("devices/+/telemetry", qos=2) == [2]
        device = nodes.connect("c", sensor, client_id="sensor")
        until_routed(device, TELEMETRY, backend)

        # In flight on A: sent to the backend, never acknowledged (QoS 2: PUBREC'd, the
        # PUBCOMP held back).
        in_flight = [(qos, f"f{qos}-{i}".encode()) for qos in (1, 2) for i in range(3)]
        for qos, payload in in_flight:
            device.publish(TELEMETRY, payload, qos=qos)
        got = [backend.next_message() for _ in in_flight]
        assert [(m.qos, m.payload) for m in got] == in_flight
        backend.close()  # DISCONNECT with nothing acknowledged: the session stays on A

        # Queued on A while the backend is away.
        queued = [(qos, f"q{qos}-{i}".encode()) for qos in (1, 2) for i in range(5)]
        for qos, payload in queued:
            device.publish(TELEMETRY, payload, qos=qos)  # returns once acknowledged

        backend = backend_acking_when_told(nodes, "b")
        assert backend.session_present.get_nowait() is True
        nodes.nodes["a"].log.wait_for(r"session \S+ handed over to another node")
        assert counter(metrics(nodes, "a"), "nanoiot_cluster_sessions_handed_over_total") == 1
        # §4.4: the QoS 1 ones are sent again with DUP set; the QoS 2 ones had reached the
        # client (paho acknowledges PUBREL only on ``ack``), so B sends only their PUBREL.
        resent = [(qos, payload) for qos, payload in in_flight if qos == 1]
        again = [backend.next_message() for _ in resent + queued]
        assert [(m.qos, m.payload) for m in again] == resent + queued
        assert [m.dup for m in again] == [True] * len(resent) + [False] * len(queued)
        for message in again:
            backend.paho.ack(message.mid, message.qos)
        assert backend.no_message(within=1.0)  # nothing twice, QoS 2 exactly once

        # From now on B routes for it: a message published on C arrives once, from B.
        device.publish(TELEMETRY, b"after", qos=2)
        after = backend.next_message()
        assert (after.payload, after.dup) == (b"after", False)
        backend.paho.ack(after.mid, after.qos)
        assert backend.no_message()


def test_a_live_take_over_moves_the_session_before_the_connack(tmp_path: Path) -> None:
    """The client is still connected on A when it connects on B: A closes it, commits and
    gives the session up, and B's CONNACK says the session is present."""
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.start_all("a", "b")
        on_a = backend_acking_when_told(nodes, "a")
        on_a.paho.reconnect_delay_set(600, 600)  # it does not take the session back
        assert on_a.subscribe("devices/+/telemetry", qos=1) == [1]
        device = nodes.connect("a", sensor, client_id="sensor")
        until_routed(device, TELEMETRY, on_a)
        sent = [f"m{i}".encode() for i in range(5)]
        for payload in sent:
            device.publish(TELEMETRY, payload, qos=1)
        assert [on_a.next_message().payload for _ in sent] == sent  # unacknowledged

        on_b = backend_acking_when_told(nodes, "b")
        assert on_b.session_present.get_nowait() is True
        assert on_a.disconnected.wait(5)
        again = [on_b.next_message() for _ in sent]
        assert [(m.payload, m.dup) for m in again] == [(p, True) for p in sent]
        for message in again:
            on_b.paho.ack(message.mid, message.qos)
        # A publisher on A reaches the subscriber now on B (B announced the filter).
        until_routed(device, TELEMETRY, on_b)
        device.publish(TELEMETRY, b"later", qos=1)
        later = on_b.next_message()
        assert later.payload == b"later"
        on_b.paho.ack(later.mid, later.qos)
        assert on_b.no_message()


def test_node_killed_loses_nothing_acknowledged_and_its_clients_wills_are_published(
    tmp_path: Path,
) -> None:
    """SIGKILL of node A with a persistent subscriber and a publisher (with a will) on it:
    a survivor publishes the will (seen on C), and the subscriber reconnecting to B gets
    every message A acknowledged to the publisher."""
    with cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = "0.5"
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.application("watcher")
        nodes.start_all("a", "b", "c")
        watcher = nodes.connect("c", app="watcher", client_id="watcher")
        assert watcher.subscribe("devices/+/status", qos=1) == [1]
        backend = backend_acking_when_told(nodes, "a")
        backend.paho.reconnect_delay_set(600, 600)  # it comes back on B, not A
        assert backend.subscribe("devices/+/telemetry", qos=1) == [1]
        device = nodes.connect(
            "a", sensor, client_id="sensor", will=("v1/devices/me/status", b"gone")
        )
        device.paho.reconnect_delay_set(600, 600)
        until_routed(device, TELEMETRY, backend)

        sent = [f"m{i}".encode() for i in range(40)]
        for payload in sent:
            device.publish(TELEMETRY, payload, qos=1)  # PUBACKed by A: A's to deliver
        got = [backend.next_message() for _ in range(5)]  # some reached it, none acked
        assert [m.payload for m in got] == sent[:5]

        nodes.kill("a")
        will = watcher.next_message()  # published by a survivor once A is seen gone
        assert (will.topic, will.payload) == ("devices/sensor/status", b"gone")
        assert watcher.no_message()  # once

        # The survivor that published it adopted the backend's session: what the device
        # publishes there now is queued for the backend too.
        adopter = adopting_node(nodes, "b", "c")
        figures = metrics(nodes, adopter)
        assert counter(figures, "nanoiot_cluster_sessions_adopted_total") == 1
        assert counter(figures, "nanoiot_cluster_wills_published_total") == 1
        device = nodes.connect(adopter, sensor, client_id="sensor")
        later = [f"later{i}".encode() for i in range(5)]
        for payload in later:
            device.publish(TELEMETRY, payload, qos=1)

        backend = backend_acking_when_told(nodes, "b")
        assert backend.session_present.get_nowait() is True
        again = []
        for _ in sent + later:  # acknowledged as they come: the in-flight window moves on
            again.append(backend.next_message())
            backend.paho.ack(again[-1].mid, again[-1].qos)
        assert [m.payload for m in again] == sent + later
        assert backend.no_message()


def test_a_restarted_node_restores_only_the_sessions_it_holds(tmp_path: Path) -> None:
    """The store holds every node's sessions: a node that starts again takes in the ones
    whose claim names it, not one that moved to another node meanwhile."""
    with cluster(tmp_path) as nodes:
        # A must start again before B takes it as gone (three missed heartbeats) and adopts
        # "other": slow heartbeats leave a loaded machine's restart time for that.
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = str(SLOW_HEARTBEAT)
        nodes.application("backend")
        nodes.application("other")
        nodes.start_all("a", "b")
        for app in ("backend", "other"):
            client = nodes.connect("a", app=app, client_id=app, clean_session=False)
            assert client.subscribe("devices/+/telemetry", qos=1) == [1]
            client.close()
        moved = backend_acking_when_told(nodes, "b")  # handed over by A: B holds it now
        assert moved.session_present.get_nowait() is True
        moved.close()

        nodes.kill("a")
        nodes.start("a")
        nodes.nodes["a"].log.wait_for(r"restored 1 persistent sessions")  # "other" only
        assert counter(metrics(nodes, "a"), "nanoiot_sessions") == 1
        assert counter(metrics(nodes, "b"), "nanoiot_sessions") == 1


def test_racing_connects_leave_a_persistent_session_on_one_node(tmp_path: Path) -> None:
    """Two connects for one persistent session on two nodes at once: one connection stays,
    and only its node holds the session (the other gave it up or never took it)."""
    with cluster(tmp_path) as nodes:
        nodes.application("backend")
        nodes.start_all("a", "b")
        first = backend_acking_when_told(nodes, "a")
        assert first.subscribe("devices/+/telemetry", qos=1) == [1]
        first.close()
        for attempt in range(3):
            clients = []
            for node in ("a", "b"):  # both connects in flight at once (paho's own threads)
                client = mqtt_client(
                    nodes.nodes[node].port, nodes.server_cert, None, client_id="backend",
                    clean_session=False, username="backend", password=APP_PASSWORD,
                )  # fmt: skip
                client.paho.reconnect_delay_set(600, 600)
                clients.append(client)
            assert wait_for(lambda: any_closed(clients)), attempt  # noqa: B023 - called here
            live = [n for n, c in zip("ab", clients, strict=True) if not c.disconnected.is_set()]
            assert len(live) == 1, attempt
            # The connection closed may be the one the other took the session from: the
            # winner's CONNACK comes after that close (a take-over), so it is waited for.
            winner = clients["ab".index(live[0])]
            assert winner.wait_connack() == 0, attempt
            assert not winner.disconnected.is_set(), attempt
            held = {n: counter(metrics(nodes, n), "nanoiot_sessions") for n in "ab"}
            assert held == {n: float(n in live) for n in "ab"}, attempt
            for client in clients:
                client.close()


def test_a_qos2_publish_sent_again_after_a_hand_over_is_not_routed_twice(
    tmp_path: Path,
) -> None:
    """MQTT 3.1.1 §4.3.3 (method A): node A routed a QoS 2 PUBLISH and sent PUBREC; the
    client, gone before it got it, sends the PUBLISH again (DUP) to node B. B knows the
    packet id from A's hand-over: PUBREC again, nothing routed again."""
    with cluster(tmp_path) as nodes:
        sensor, watcher = watched_on_b(nodes)

        publish = Publish(TELEMETRY, b"once", 2, packet_id=7)
        with connected(nodes, "a", sensor, session_present=False) as raw:
            raw.send(publish)
            assert raw.read() == Pubrec(7)  # routed (and committed) by A
        assert watcher.next_message().payload == b"once"

        sent_again(nodes, "b", sensor, 7)
        assert watcher.no_message(within=1.0)  # exactly once


def test_a_stalled_node_keeps_its_sessions_until_asked(tmp_path: Path) -> None:
    """A node that misses its heartbeats while its process is stopped (SIGSTOP) still has
    its NATS subscriptions: the survivor does not adopt its sessions; a device connecting
    elsewhere meanwhile does not wait for it, and the node gives the session up once it runs
    again (it fences itself off, its heartbeats silent for longer than the others wait, or
    reads B's request first), so that one node only holds it."""
    with cluster(tmp_path) as nodes:
        stalled = _stall_a_holding_the_backend(nodes)
        try:
            logged(nodes, "missed its heartbeats but NATS still has its subscriptions", "b", "c")
            held = {n: counter(metrics(nodes, n), "nanoiot_sessions") for n in "bc"}
            assert held == {"b": 0, "c": 0}  # not adopted
            # The backend connects to B meanwhile: B does not wait for A to answer.
            backend = backend_acking_when_told(nodes, "b")
            assert backend.session_present.get_nowait() is True
        finally:
            os.kill(stalled, signal.SIGCONT)
        assert backend.next_message().payload == b"kept"
        # A, running again, gives the session up.
        nodes.nodes["a"].log.wait_for(r"session \S+ handed over to another node|fenced off")
        held = {n: counter(metrics(nodes, n), "nanoiot_sessions") for n in "abc"}
        assert held == {"a": 0, "b": 1, "c": 0}


def test_a_will_waiting_for_its_delay_survives_its_node(tmp_path: Path) -> None:
    """MQTT 5 §3.1.3.2.2: a device gone without DISCONNECT, its will waiting for its delay
    on node A, and A killed meanwhile: a survivor publishes it after the delay."""
    with cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = "0.5"
        sensor = nodes.device("sensor")
        nodes.application("watcher")
        nodes.start_all("a", "b", "c")
        watcher = nodes.connect("c", app="watcher", client_id="watcher")
        assert watcher.subscribe("devices/+/status", qos=1) == [1]
        device = v5_client(
            nodes.nodes["a"].port, nodes.server_cert, sensor, client_id="sensor",
            clean_start=False,
            connect_properties=make_properties(PacketTypes.CONNECT, SessionExpiryInterval=60),
            will=("v1/devices/me/status", b"gone",
                  make_properties(PacketTypes.WILLMESSAGE, WillDelayInterval=2)),
        )  # fmt: skip
        assert device.wait_connack()[0] == 0
        stop_loop(device.paho)  # gone without DISCONNECT, as a device losing its network
        device.paho._reset_sockets()  # its socket, and paho's wake-up pair (no warning later)
        # A saw it go and waits 2 s before the will (polled: no event tells the test).
        assert wait_for(
            lambda: counter(metrics(nodes, "a"), "nanoiot_connected_clients") == 0, within=2
        )
        nodes.kill("a")
        will = watcher.next_message()  # the survivor waits the delay too, then publishes
        assert (will.topic, will.payload) == ("devices/sensor/status", b"gone")
        assert watcher.no_message()


def test_a_stalled_node_killed_later_has_its_sessions_adopted_then(tmp_path: Path) -> None:
    """The survivor asks a silent node again while NATS still has its subscriptions: once
    the node is killed for good (NATS drops them), its sessions are adopted."""
    with cluster(tmp_path) as nodes:
        _stall_a_holding_the_backend(nodes)
        try:
            adopter = logged(nodes, "NATS still has its subscriptions", "b", "c")
        finally:
            nodes.kill("a")  # stopped, then killed: its connection to NATS closes
        nodes.nodes[adopter].log.wait_for(r"adopted 1 persistent sessions of member a")
        backend = backend_acking_when_told(nodes, adopter)
        assert backend.session_present.get_nowait() is True
        assert backend.next_message().payload == b"kept"
