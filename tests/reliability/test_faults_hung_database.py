"""A PostgreSQL that stops answering: calls fail within their timeouts instead of hanging.

A PostgreSQL cluster of this test's own is paused with SIGSTOP (the server and every backend:
connections stay open and nothing answers, as with a hung host) under a real
``nanoiot serve``. A device connecting meanwhile gets CONNACK 3 (server unavailable) within
about ``auth_timeout`` and the log says the database is not answering; QoS 1 messages for an
offline persistent session are routed but not acknowledged, and the journal's commit gives
up after ``database_statement_timeout``, saying so. After SIGCONT the waiting PUBACKs go out
by themselves, and a SIGKILL right after the last one loses none of them.
"""

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from auth.certificate import parse_credential
from storage.migrate import upgrade
from storage.sql import SqlCredentialStore
from tests.certgen import issue
from tests.e2e.harness import WAIT, write_pem
from tests.reliability.pg_cluster import PgCluster, pg_cluster
from tests.reliability.serve_process import PASSWORD, ServeProcess, Session, connect

RPC = "v1/devices/me/rpc/request/+"
AUTH_TIMEOUT = 2.0
BURST = 20  # paho's in-flight window: all of them wait for their PUBACK at once


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    with pg_cluster() as started:
        try:
            yield started
        finally:
            started.resume()  # whatever the test did, so that it can be stopped


def _provision(url: str, directory: Path) -> dict[str, Path]:
    async def run() -> dict[str, Path]:
        admin = await asyncpg.connect(url.replace("+asyncpg", "").rsplit("/", 1)[0] + "/postgres")
        try:
            await admin.execute('CREATE DATABASE "nanoiot"')
        finally:
            await admin.close()
        await upgrade(url)
        store = await SqlCredentialStore.open(url)
        try:
            files = {}
            for name in ("sensor", "late"):
                issued = issue(name)
                await store.create_device_with_credential(
                    name, x509=parse_credential(issued.cert_pem)
                )
                files[name] = write_pem(directory, issued, name)
            backend = await store.create_device("backend", type="application")
            await store.add_basic_credential(
                backend.id, username="backend", password=PASSWORD, application=True
            )
            return files
        finally:
            await store.close()

    return asyncio.run(run())


def _publish(backend: Session, first: int) -> list[int]:
    return [
        backend.paho.publish(f"devices/sensor/rpc/request/{n}", str(n).encode(), qos=1).mid
        for n in range(first, first + BURST)
    ]


def _wait_acknowledged(backend: Session, mids: list[int]) -> None:
    missing = set(mids)
    while missing:
        missing.discard(backend.published.get(timeout=WAIT))


def test_a_paused_database_gives_connack_3_in_time_and_no_early_puback(
    cluster: PgCluster, tmp_path: Path
) -> None:
    url = cluster.url("nanoiot")
    files = _provision(url, tmp_path)
    env = {
        "NANOIOT_DATABASE_URL": url,
        "NANOIOT_AUTH_TIMEOUT": str(AUTH_TIMEOUT),
        "NANOIOT_DATABASE_STATEMENT_TIMEOUT": "2",
        "NANOIOT_ACK_TIMEOUT": "60",  # longer than the pause: the PUBACKs are still owed
    }
    data = tmp_path / "data"
    broker = ServeProcess(data, **env)
    clients: list[Session] = []
    try:
        sensor = connect(broker, files["sensor"], "sensor", clean_session=False)
        clients.append(sensor)
        assert sensor.wait_connack() == (0, False)
        assert sensor.subscribe(RPC) == [1]
        sensor.close()
        backend = connect(broker, None, "backend", clean_session=True,
                          credentials=("backend", PASSWORD))  # fmt: skip
        clients.append(backend)
        assert backend.wait_connack() == (0, False)
        before = _publish(backend, 0)
        _wait_acknowledged(backend, before)

        cluster.pause()
        during = _publish(backend, BURST)
        started = time.monotonic()
        late = connect(broker, files["late"], "late", clean_session=True)
        clients.append(late)
        assert late.wait_connack()[0] == 3
        refused_after = time.monotonic() - started
        assert refused_after < AUTH_TIMEOUT + 1.5, f"CONNACK 3 after {refused_after:.1f} s"
        broker.wait_for_log("not answering")
        broker.wait_for_log("session changes cannot be saved")
        assert backend.published.empty(), "PUBACK while the database was paused"

        cluster.resume()
        _wait_acknowledged(backend, during)
        os.kill(broker.process.pid, signal.SIGKILL)  # at once: nothing more is saved
        assert broker.process.wait(WAIT) == -signal.SIGKILL
        broker.kill()  # closes its output pipe
        for client in clients:
            client.close()
        clients.clear()

        broker = ServeProcess(data, **env)
        sensor = connect(broker, files["sensor"], "sensor", clean_session=False)
        clients.append(sensor)
        assert sensor.wait_connack() == (0, True)
        received = [m.payload for m in sensor.receive(2 * BURST)]
        assert received == [str(n).encode() for n in range(2 * BURST)]
    finally:
        for client in clients:
            client.close()
        broker.kill()
