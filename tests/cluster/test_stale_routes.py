"""A member whose route table lags more than ``cluster_handover_window`` behind a session's
hand-over has its QoS 1 message for that session refused by the member the session left:
its publisher gets no PUBACK, sends the message again (MQTT 3.1.1 §4.4), and that copy
reaches the session once. Node C reaches NATS through a proxy that holds back what NATS
sends it (its route watch among it); real paho clients, nodes as separate processes on the
machine's NATS and PostgreSQL."""

from pathlib import Path

import pytest

from tests.cluster.nodes import (
    TELEMETRY,
    backend_acking_when_told,
    cluster,
    counter,
    metrics,
    until_routed,
)
from tests.cluster.proxy import nats_proxy
from tests.e2e.harness import V311_RETURN_CODE
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

WINDOW = 0.5  # cluster_handover_window: its least
# What NATS sends C reaches it this much later: more than the window (and the moment the
# test takes to publish after it), less than the 2 s C's own key-value requests may take.
LAG = 1.8
# C's reconnect: paho's second before it, then the client id's claim, two round trips to NATS
# each LAG late (4.7 s measured; 20 s when the device's seat took two more, behind the write of
# the session that ended).
RECONNECT_WITHIN = 15.0


def test_a_message_routed_with_routes_older_than_a_finished_hand_over_is_refused_then_sent_again(
    tmp_path: Path,
) -> None:
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.env["NANOIOT_CLUSTER_HANDOVER_WINDOW"] = str(WINDOW)
        nodes.start("a")
        nodes.start("b")
        nodes.start("c", NANOIOT_NATS_URL=proxy.url)
        backend = backend_acking_when_told(nodes, "a")
        assert backend.subscribe("devices/+/telemetry", qos=1) == [1]
        device = nodes.connect("c", sensor, client_id="sensor")
        until_routed(device, TELEMETRY, backend)

        # The backend's session moves from A to B while C's routes lag behind.
        proxy.delay(LAG)
        backend.close()
        mark = len(nodes.nodes["a"].log.lines)
        backend = backend_acking_when_told(nodes, "b")
        assert backend.session_present.get_nowait() is True
        nodes.nodes["a"].log.wait_for(r"no longer sent on to member b", after=mark)

        # C still routes to A, which the session left more than the window ago: refused.
        sent = device.paho.publish(TELEMETRY, b"late", qos=1)
        assert device.disconnected.wait(LAG + 5.0)  # the refusal, or C's confirmation bound
        assert not sent.is_published()
        nodes.nodes["a"].log.wait_for(
            r"a forwarded message refused: routed at revision", after=mark
        )

        # paho connects again and sends it again: routed to B now, delivered once. C's
        # CONNACK waits for the client id's claim, its round trips LAG late through the proxy;
        # not for the device's seat (``broker.cluster.seats``: one of 100, decided on C's view
        # of the devices bucket, the write of the session that ended under way meanwhile).
        assert V311_RETURN_CODE[device.connack.get(timeout=RECONNECT_WITHIN).value] == 0
        sent.wait_for_publish(WAIT)
        assert sent.is_published()  # acknowledged this time
        got = backend.next_message()
        assert got.payload == b"late"
        backend.paho.ack(got.mid, got.qos)
        assert backend.no_message(within=1.0)
        scraped = metrics(nodes, "a")
        assert counter(scraped, "nanoiot_cluster_sessions_handed_over_total") == 1
        # At least the first copy: one sent again before C's routes caught up is refused too.
        assert counter(scraped, "nanoiot_cluster_handover_messages_refused_total") >= 1
