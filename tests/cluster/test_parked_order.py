"""A frame parked late for a dead node, by a node whose route table lags, still reaches the
session's new node in its publisher's order (MQTT 3.1.1 §4.6): the new node holds what comes
directly until the lagging node's barrier behind what it parked is read from the parked
stream (``broker.cluster.replay``), whether the session's client took it there or that node
adopted it. Real nodes, paho clients, NATS JetStream and PostgreSQL; node B, where the
device publishes, reaches NATS through a proxy that holds back what NATS sends it (its route
and member watches, and the answers to what it sends and parks).
"""

import asyncio
from pathlib import Path

import pytest

from tests.cluster.nodes import TELEMETRY, Cluster, cluster, heartbeat_runs, until_routed
from tests.cluster.parking import (
    MAX_PACKET_SIZE,
    adopter_of_a,
    check_numbers,
    collect,
    large_payload,
    published,
    received,
    until_nobody_listens,
)
from tests.cluster.proxy import Proxy, nats_proxy
from tests.e2e.harness import Client

pytestmark = pytest.mark.slow

# What NATS sends B comes this much later: less than the 2 s its key-value requests may
# take, than a hand-over's wait for its barrier (HOLD_WITHIN), and than its heartbeat
# interval.
LAG = 0.8


def test_messages_parked_late_reach_the_client_that_took_the_session_in_order(
    tmp_path: Path,
) -> None:
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        device = _set_up(nodes, proxy, heartbeat=5.0)  # A is not adopted meanwhile
        backend = nodes.connect("c", app="backend", client_id="backend", clean_session=False)
        assert backend.session_present.get_nowait() is True
        # The backend took its session on C; B's table names A for it LAG seconds more.
        acked = _publish(device)
        check_numbers(collect(backend, acked), acked, 1)


def test_messages_parked_late_reach_the_adopted_session_in_order(tmp_path: Path) -> None:
    with nats_proxy() as proxy, cluster(tmp_path) as nodes:
        device = _set_up(nodes, proxy, heartbeat=1.0, late_death=True)
        # B saw A's last heartbeat LAG seconds after C did, so C takes A as gone first and
        # adopts the session (were it B, what B publishes would reach the session on B).
        assert adopter_of_a(nodes) == "c"
        # B's table names A for the session LAG seconds more.
        acked = _publish(device)
        check_numbers(received(nodes, "c", acked), acked, 1)


def _set_up(nodes: Cluster, proxy: Proxy, heartbeat: float, late_death: bool = False) -> Client:
    """Nodes a, b (through ``proxy``) and c; the backend's persistent session on a, its
    client away; the device "sensor" on b; then what NATS sends b late by LAG, and a killed
    (``late_death``: once NATS had a heartbeat of a's since, which b sees late). The
    device's client."""
    nodes.env["NANOIOT_CLUSTER_HEARTBEAT_INTERVAL"] = str(heartbeat)
    nodes.env["NANOIOT_MAX_PACKET_SIZE"] = str(MAX_PACKET_SIZE)
    sensor = nodes.device("sensor")
    nodes.application("backend")
    nodes.start("a")
    nodes.start("b", NANOIOT_NATS_URL=proxy.url)
    nodes.start("c")
    backend = nodes.connect("a", app="backend", client_id="backend", clean_session=False)
    assert backend.subscribe("devices/+/telemetry", qos=1) == [1]
    device = nodes.connect("b", sensor, client_id="sensor")
    until_routed(device, TELEMETRY, backend)
    backend.close()
    proxy.delay(LAG)
    if late_death:  # the entry as it is now, then the next one
        asyncio.run(heartbeat_runs(nodes.env["NANOIOT_CLUSTER_NAME"], "a", count=2))
    nodes.kill("a")
    asyncio.run(until_nobody_listens(f"{nodes.env['NANOIOT_CLUSTER_NAME']}.route.a"))
    return device


def _publish(device: Client) -> list[int]:
    """Once the session's new node wrote its routes, which B sees LAG seconds later: 0 to 2
    at once, which B parks one after the other, each LAG seconds after the one before; then,
    once 0's PUBACK came, behind those routes, 3 to 5, which B routes to the new node
    directly while 2 is not parked yet. The numbers sent, all acknowledged."""
    sent = [device.paho.publish(TELEMETRY, large_payload(n), qos=1) for n in (0, 1, 2)]
    published(sent[:1])
    sent += [device.paho.publish(TELEMETRY, large_payload(n), qos=1) for n in (3, 4, 5)]
    published(sent)
    return list(range(6))
