"""A QoS 2 message routed again reaches a persistent session that moved meanwhile once
(MQTT 3.1.1 / 5.0 §4.3.3). The device publishes on node A; B, where the backend's
persistent session waits for its client, reaches NATS through a proxy that holds back what
NATS sends it, so B takes the first copy and queues it for the backend after A gave up
waiting for B's confirmation: A closes the device's connection without PUBREC. The
backend then connects to C, which takes its session over with the copy queued; the device
sends the PUBLISH again, A routes it again with the same message id, and C, which never
delivered that id, must not give the backend a second copy. Nodes as separate processes on
the machine's NATS and PostgreSQL."""

from pathlib import Path

import pytest

from tests.cluster.nodes import backend_acking_when_told, cluster, counter, metrics, until_routed
from tests.cluster.proxy import nats_proxy
from tests.cluster.resent import TELEMETRY, sent_again, start_with_b_behind, unconfirmed

pytestmark = pytest.mark.slow


def test_a_session_that_moved_with_the_first_copy_does_not_get_the_copy_routed_again(
    tmp_path: Path,
) -> None:
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        prober = nodes.device("prober")
        nodes.application("backend")
        nodes.application("watcher")
        start_with_b_behind(nodes, proxy, "c")
        backend = backend_acking_when_told(nodes, "b")
        assert backend.subscribe("devices/+/telemetry", qos=2) == [2]
        watcher = nodes.connect("b", app="watcher", client_id="watcher")
        assert watcher.subscribe("devices/+/telemetry", qos=2) == [2]
        probe = nodes.connect("a", prober, client_id="prober")
        until_routed(probe, TELEMETRY, backend, watcher)
        backend.close()  # its session stays on B, queueing

        unconfirmed(nodes, proxy, sensor)
        # Once a probe from A reached the watcher, B has queued the first copy too.
        probe.publish(TELEMETRY, b"probe", qos=0)
        assert watcher.next_message().payload == b"once"
        assert watcher.next_message().payload == b"probe"

        backend = backend_acking_when_told(
            nodes, "c"
        )  # takes its session, with the first copy, over
        assert backend.session_present.get_nowait() is True
        first = backend.next_message()
        assert (first.payload, first.qos) == (b"once", 2)  # in flight, not acknowledged yet

        sent_again(nodes, "a", sensor, 7)
        assert counter(metrics(nodes, "a"), "nanoiot_cluster_qos2_routed_again_total") == 1
        backend.paho.ack(first.mid, first.qos)
        # A probe routed after the copy sent again reaches the backend after it would have.
        probe.publish(TELEMETRY, b"after", qos=1)
        assert backend.next_message().payload == b"after", "got the message twice"
        assert watcher.next_message().payload == b"after"
        assert backend.no_message(within=1.0)
        assert watcher.no_message(within=1.0)
