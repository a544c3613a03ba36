"""A persistent session moves with its client between nodes (MQTT 3.1.1 §3.1.2.4): what node
A queued while the client was away, and what it had sent without an acknowledgement
(§4.4: sent again, DUP set), reach the client on node B, each once (QoS 2 exactly once), with
session present set; and from then on B, not A, routes for it. Real paho clients, nodes as
separate processes on the machine's NATS and PostgreSQL."""

from pathlib import Path

import pytest

from tests.cluster.nodes import Cluster, cluster, until_routed
from tests.e2e.harness import Client

pytestmark = pytest.mark.slow

TELEMETRY = "v1/devices/me/telemetry"


def _backend(nodes: Cluster, node: str) -> Client:
    """The persistent subscriber, acknowledging nothing until told (``paho.ack``)."""
    client = nodes.connect(node, app="backend", client_id="backend", clean_session=False)
    client.paho.manual_ack_set(True)
    return client


def test_a_session_taken_to_b_keeps_its_queue_and_in_flight_messages(tmp_path: Path) -> None:
    with cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("backend")
        for name in ("a", "b", "c"):
            nodes.start(name)
        backend = _backend(nodes, "a")
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

        backend = _backend(nodes, "b")
        assert backend.session_present.get_nowait() is True
        nodes.nodes["a"].log.wait_for(r"session \S+ handed over to another node")
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
        for name in ("a", "b"):
            nodes.start(name)
        on_a = _backend(nodes, "a")
        on_a.paho.reconnect_delay_set(600, 600)  # it does not take the session back
        assert on_a.subscribe("devices/+/telemetry", qos=1) == [1]
        device = nodes.connect("a", sensor, client_id="sensor")
        until_routed(device, TELEMETRY, on_a)
        sent = [f"m{i}".encode() for i in range(5)]
        for payload in sent:
            device.publish(TELEMETRY, payload, qos=1)
        assert [on_a.next_message().payload for _ in sent] == sent  # unacknowledged

        on_b = _backend(nodes, "b")
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
