"""A QoS 2 message routed again reaches a persistent session that completed the first copy
and then moved once (MQTT 3.1.1 / 5.0 §4.3.3). The device publishes on node A; B, where the
backend is connected with its persistent session, reaches NATS through a proxy that holds
back what NATS sends it, so B takes the first copy and gives it to the backend after A gave
up waiting for B's confirmation: A closes the device's connection without PUBREC. The
backend completes it (PUBCOMP: its queue row goes) and connects to C, which takes its
session over; the device sends the PUBLISH again, A routes it again with the same message
id, and C, which never delivered that id, must not give the backend a second copy. The
sibling of test_qos2_moved.py, where the copy was still queued. Nodes as separate processes
on the machine's NATS and PostgreSQL."""

from pathlib import Path

import pytest

from tests.cluster.nodes import backend_acking_when_told, cluster, counter, metrics, until_routed
from tests.cluster.proxy import nats_proxy
from tests.cluster.resent import TELEMETRY, sent_again, start_with_b_behind, unconfirmed

pytestmark = pytest.mark.slow


def test_a_session_that_completed_the_first_copy_before_it_moved_does_not_get_it_again(
    tmp_path: Path,
) -> None:
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        prober = nodes.device("prober")
        nodes.application("backend")
        start_with_b_behind(nodes, proxy, "c")
        backend = backend_acking_when_told(nodes, "b")
        assert backend.subscribe("devices/+/telemetry", qos=2) == [2]
        probe = nodes.connect("a", prober, client_id="prober")
        until_routed(probe, TELEMETRY, backend)

        unconfirmed(nodes, proxy, sensor)
        first = backend.next_message()  # given after its PUBREL (paho)
        assert (first.payload, first.qos) == (b"once", 2)
        backend.paho.ack(first.mid, first.qos)  # PUBCOMP
        # B reads the connection's packets in order: once this SUBACK came, B had the
        # PUBCOMP, and the copy's queue row went with it.
        assert backend.subscribe("devices/+/telemetry", qos=2) == [2]
        backend.close()

        backend = backend_acking_when_told(
            nodes, "c"
        )  # takes its session over, with nothing queued
        assert backend.session_present.get_nowait() is True
        sent_again(nodes, "a", sensor, 7)
        assert counter(metrics(nodes, "a"), "nanoiot_cluster_qos2_routed_again_total") == 1
        # A probe routed after the copy sent again reaches the backend after it would have.
        probe.publish(TELEMETRY, b"after", qos=1)
        after = backend.next_message()
        assert after.payload == b"after", "got the message twice"
        backend.paho.ack(after.mid, after.qos)
        assert backend.no_message(within=1.0)
