"""Connects to a member still writing the routes of the sessions it restored
(``broker.cluster.pending_writes``): two real nodes in threads of their own on the machine's
NATS and a fresh PostgreSQL database, real paho clients over mutual TLS.

Node A restores 2,000 sessions (6,000 filters, written to the routes bucket one at a time:
seconds of writes). A device whose session node B held moves to A meanwhile: its CONNACK waits
for its own filter's route, not for the restore's, and a message published on B right after
the CONNACK reaches it; a subscription it makes then has its route written before the
restore's too (MQTT 3.1.1 §3.8.4)."""

import asyncio
from pathlib import Path

import pytest

from broker.cluster.router import ClusterRouter
from broker.cluster.routes import RouteAnnouncer
from nanoiot.settings import Settings
from tests.broker.cluster.restoring_fleet import node_b_settings, sensor_and_fleet
from tests.e2e.harness import WAIT, BrokerThread, mqtt_client

SESSIONS = 2_000  # 6,000 filters: a few seconds of route writes on this machine


@pytest.fixture
def settings(postgres_url: str, cluster_name: str, tmp_path: Path) -> Settings:
    return node_b_settings(postgres_url, cluster_name, tmp_path)


def _announcer(node: BrokerThread) -> RouteAnnouncer:
    router = node.running.broker.router
    assert isinstance(router, ClusterRouter)
    assert router.announcer is not None
    return router.announcer


async def _written(announcer: RouteAnnouncer, topic_filter: str) -> int:
    """Once ``topic_filter``'s entry is in the bucket: the revision naming it."""
    await announcer.written_for([topic_filter])
    return announcer.revision


def test_a_session_moving_in_waits_for_its_own_routes_not_for_a_restores(
    settings: Settings, postgres_url: str, tmp_path: Path
) -> None:
    b = BrokerThread(settings)  # B restores nothing: every claim names A
    a: BrokerThread | None = None
    try:
        _, certfile = sensor_and_fleet(b, postgres_url, tmp_path, SESSIONS)
        mover = mqtt_client(b.port, b.server_cert, certfile, client_id="mover",
                            clean_session=False)  # fmt: skip
        try:
            assert mover.wait_connack() == 0
            assert mover.subscribe("devices/sensor/in/8/+", qos=1) == [1]
        finally:
            mover.close()  # its session stays B's
        a = BrokerThread(settings.model_copy(update={"node_name": "node-a"}))
        restoration = a.running.restoration
        assert restoration is not None
        a.call(asyncio.wait_for(asyncio.shield(restoration.done), WAIT))
        on_a, on_b = _announcer(a), _announcer(b)
        before = on_a.waiting
        assert before > SESSIONS, f"only {before} route writes queued: nothing to wait behind"

        moved = mqtt_client(a.port, a.server_cert, certfile, client_id="mover",
                            clean_session=False)  # fmt: skip
        publisher = mqtt_client(b.port, b.server_cert, certfile, client_id="publisher")
        try:
            assert moved.wait_connack() == 0
            left = on_a.waiting
            assert left > before // 2, f"CONNACK after {before - left} of {before} writes"
            assert publisher.wait_connack() == 0
            publisher.publish("devices/sensor/in/8/x", b"after the CONNACK", qos=1)
            assert moved.next_message().payload == b"after the CONNACK"

            assert moved.subscribe("devices/sensor/in/7/+", qos=1) == [1]
            b.call(on_b.reached(a.call(_written(on_a, "devices/sensor/in/7/+"))))
            assert on_a.waiting > 0, "written after every restored route"
            publisher.publish("devices/sensor/in/7/x", b"after the SUBACK", qos=1)
            assert moved.next_message().payload == b"after the SUBACK"
        finally:
            moved.close()
            publisher.close()
    finally:
        try:
            b.stop()  # first: A, leaving first, would have B adopt its 2,000 sessions
        finally:
            if a is not None:
                a.stop()
