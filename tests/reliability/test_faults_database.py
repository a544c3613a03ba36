"""The database goes away under a running broker, and comes back.

Two outages: the database refuses connections (``ALLOW_CONNECTIONS false`` and its sessions
terminated, on the shared server) and the PostgreSQL server itself stops (a cluster of this
test's own, shut down with ``-m immediate``). Meanwhile new connections get CONNACK 3
("server unavailable": the credentials cannot be checked); connected clients keep publishing
and receiving, and a QoS 1 message for an offline persistent session is taken and queued in
memory, but not acknowledged: its PUBACK waits for the store (MQTT 3.1.1 §4.3.2). When the
database is back, new connections are accepted, the message reaches the store and the PUBACK
goes out, with no restart of the broker.
"""

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from storage.migrate import upgrade
from tests.certgen import Issued
from tests.e2e.harness import BrokerThread, broker_settings, device_client, mqtt_client
from tests.reliability.pg_cluster import pg_cluster
from tests.storage.pg import PG_ADMIN_DSN

RECOVERY = 30.0  # seconds: bound on the broker noticing the database is back


@dataclass
class Outage:
    url: str
    begin: Callable[[], None]
    end: Callable[[], None]


@pytest.fixture(params=["refusing", "stopped"])
def outage(request: pytest.FixtureRequest) -> Iterator[Outage]:
    if request.param == "refusing":
        url: str = request.getfixturevalue("postgres_url")
        database = url.rsplit("/", 1)[1]
        refuse = Outage(
            url,
            lambda: asyncio.run(_allow_connections(database, allowed=False)),
            lambda: asyncio.run(_allow_connections(database, allowed=True)),
        )
        try:
            yield refuse
        finally:
            refuse.end()
        return
    with pg_cluster() as cluster:
        asyncio.run(_create_database(cluster.admin_dsn, "nanoiot"))
        yield Outage(cluster.url("nanoiot"), cluster.stop, cluster.start)


@pytest.mark.postgres
def test_database_outage_gives_server_unavailable_and_recovers(
    outage: Outage, tmp_path: Path
) -> None:
    asyncio.run(upgrade(outage.url))
    # ack_timeout longer than the outage: the PUBACK is still owed when the database is back.
    settings = broker_settings(tmp_path / "data", database_url=outage.url, ack_timeout=120)
    broker = BrokerThread(settings)
    try:
        _, online_cert = broker.provision("online")
        _, later_cert = broker.provision("later")
        broker.application("backend", "backend", "backend-pass")
        online, _ = device_client(broker, tmp_path, "online", online_cert, client_id="on")
        assert online.wait_connack() == 0
        assert online.subscribe("v1/devices/me/attributes") == [1]
        sensor, sensor_cert = device_client(
            broker, tmp_path, "sensor", client_id="s", clean_session=False
        )
        assert sensor.wait_connack() == 0
        assert sensor.subscribe("v1/devices/me/rpc/request/+") == [1]
        sensor.close()
        backend = mqtt_client(
            broker.port, broker.server_cert, None,
            client_id="b", username="backend", password="backend-pass",
        )  # fmt: skip
        assert backend.wait_connack() == 0

        outage.begin()
        refused, _ = device_client(broker, tmp_path, "later", later_cert, client_id="l1")
        assert refused.wait_connack() == 3
        refused.close()
        queued = backend.paho.publish(
            "devices/sensor/rpc/request/1", b"queued during the outage", qos=1
        )
        online.publish("v1/devices/me/attributes", b"still working")
        assert online.next_message().payload == b"still working"
        assert not queued.is_published()  # no PUBACK: the store does not have it

        outage.end()
        _connect_until_accepted(broker, tmp_path, later_cert)
        queued.wait_for_publish(RECOVERY)
        assert queued.is_published()  # the PUBACK, which waits for the store (§4.3.2)
        assert _stored(broker, b"queued during the outage")
        back, _ = device_client(
            broker, tmp_path, "sensor", sensor_cert, client_id="s", clean_session=False
        )
        assert back.wait_connack() == 0
        assert back.next_message().payload == b"queued during the outage"
        for client in (back, online, backend):
            client.close()
    finally:
        broker.stop()


def _connect_until_accepted(broker: BrokerThread, directory: Path, issued: Issued) -> None:
    """A device retries as devices do; the broker must accept it again without a restart."""
    deadline = time.monotonic() + RECOVERY
    for attempt in range(1000):
        client, _ = device_client(broker, directory, "later", issued, client_id=f"l{attempt}")
        code = client.wait_connack()
        client.close()
        if code == 0:
            return
        assert code == 3
        assert time.monotonic() < deadline, "still CONNACK 3 after the database came back"
        time.sleep(0.2)  # a device's retry interval, not a wait for an event


def _stored(broker: BrokerThread, payload: bytes) -> bool:
    """Whether a session's queue in the store holds a message with ``payload``."""
    sessions = broker.call(broker.running.store.load_sessions())
    return any(m.payload == payload for s in sessions for m in s.queued)


async def _allow_connections(database: str, *, allowed: bool) -> None:
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                database,
            )
    finally:
        await admin.close()


async def _create_database(admin_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
