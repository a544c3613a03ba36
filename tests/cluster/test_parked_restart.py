"""A node restarted while another still parks frames for it gets every acknowledged message of
that node's publisher, in order (MQTT 3.1.1 §4.3.2, §4.6): its replay reads the parked frames
until that node's barrier, sent once it stopped parking, says none is left
(``broker.cluster.replay``), however long that takes. Real nodes, paho clients, NATS JetStream
and PostgreSQL; node B, where the device publishes, reaches NATS through a proxy that holds
back what NATS sends it.
"""

import asyncio
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.cluster.nodes import TELEMETRY, cluster, until_routed
from tests.cluster.parking import (
    MAX_PACKET_SIZE,
    check_numbers,
    collect,
    large_payload,
    published,
    until_nobody_listens,
)
from tests.cluster.proxy import nats_proxy
from tests.e2e.harness import Client
from tests.serve_process import WAIT

pytestmark = pytest.mark.slow

# What NATS sends B comes this much later: B parks one frame each LAG seconds (each once
# JetStream acknowledged the one before) and sees A's heartbeat LAG seconds late.
LAG = 0.8
# Messages the device publishes with at most IN_FLIGHT unacknowledged: B's queue of frames
# to park never empties meanwhile, so it parks for A for about COUNT * LAG seconds, far
# longer than A's replay used to read for (3 s, then the hand-over window, 10 s).
COUNT = 30
IN_FLIGHT = 6


def test_a_restarted_node_gets_what_is_still_parked_for_it_in_order(tmp_path: Path) -> None:
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = "5.0"  # restarted before taken gone
        nodes.env["NANOIOT_MAX_PACKET_SIZE"] = str(MAX_PACKET_SIZE)
        sensor = nodes.device("sensor")
        nodes.application("backend")
        nodes.start("a")
        nodes.start("b", NANOIOT_NATS_URL=proxy.url)
        backend = nodes.connect("a", app="backend", client_id="backend", clean_session=False)
        assert backend.subscribe("devices/+/telemetry", qos=1) == [1]
        device = nodes.connect("b", sensor, client_id="sensor")
        until_routed(device, TELEMETRY, backend)
        backend.close()
        nodes.kill("a")
        asyncio.run(until_nobody_listens(f"{nodes.env['NANOIOT_CLUSTER_NAME']}.route.a"))
        published([device.paho.publish(TELEMETRY, large_payload(0), qos=1)])  # B parks for A
        proxy.delay(LAG)
        failed: list[AssertionError] = []
        publishing = threading.Thread(target=_publish, args=(device, failed), daemon=True)
        publishing.start()
        nodes.start("a")
        nodes.nodes["a"].log.wait_for(r"restored 1 persistent sessions")
        backend = nodes.connect("a", app="backend", client_id="backend", clean_session=False)
        assert backend.session_present.get_nowait() is True
        publishing.join(WAIT * 2)
        assert not publishing.is_alive()
        assert not failed, "the device's messages not all acknowledged"
        nodes.nodes["b"].log.wait_for(r"cluster member a is back")
        later = [
            device.paho.publish(TELEMETRY, large_payload(n), qos=1) for n in (COUNT, COUNT + 1)
        ]
        published(later)  # directly
        acked = list(range(COUNT + 2))
        check_numbers(collect(backend, acked), acked, 1)


def _publish(device: Client, failed: list[AssertionError]) -> None:
    """1 to COUNT - 1, at most IN_FLIGHT unacknowledged, each acknowledged (else in
    ``failed``)."""
    sent: list[mqtt.MQTTMessageInfo] = []
    try:
        for number in range(1, COUNT):
            sent.append(device.paho.publish(TELEMETRY, large_payload(number), qos=1))
            if len(sent) >= IN_FLIGHT:
                published([sent[-IN_FLIGHT]])
        published(sent)
    except AssertionError as exc:
        failed.append(exc)
