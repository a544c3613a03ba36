"""Every way in, and every refusal with its CONNACK code and recorded reason."""

import asyncio
import datetime as dt
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from auth.kinds import CredentialStatus
from storage.migrate import upgrade
from storage.records import AuthOutcome
from tests.certgen import issue
from tests.e2e.conftest import broker_settings
from tests.e2e.harness import BrokerThread, device_client, mqtt_client
from tests.storage.pg import PG_ADMIN_DSN


def test_tokens_and_basic_credentials_without_a_certificate(broker: BrokerThread) -> None:
    store = broker.running.store
    device = broker.call(store.create_device("gateway"))
    broker.call(store.add_token_credential(device.id, "gw-token-1"))
    broker.call(store.add_basic_credential(device.id, username="gw", password="gw-pass"))
    cases = [
        ({"username": "gw-token-1"}, 0),
        ({"username": "no-such-token"}, 5),
        ({"username": "gw", "password": "gw-pass"}, 0),
        ({"username": "gw", "password": "wrong"}, 4),
        ({}, 5),
    ]
    for options, expected in cases:
        client = mqtt_client(broker.port, broker.server_cert, None, **options)  # type: ignore[arg-type]
        try:
            assert client.wait_connack() == expected, options
        finally:
            client.close()


def test_certificate_ignores_username_and_password(broker: BrokerThread, tmp_path: Path) -> None:
    client, _ = device_client(broker, tmp_path, "d", username="whatever", password="x")
    try:
        assert client.wait_connack() == 0
    finally:
        client.close()


def test_state_refusals_are_recorded_with_their_reasons(
    broker: BrokerThread, tmp_path: Path
) -> None:
    store = broker.running.store
    disabled, disabled_cert = broker.provision("disabled-device")
    broker.call(store.set_device_enabled(disabled.id, False))
    paused, paused_cert = broker.provision("paused-credential")
    [credential] = broker.call(store.list_credentials(paused.id))
    broker.call(store.set_credential_status(credential.id, CredentialStatus.DISABLED))
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    _, expired = broker.provision(
        "expired", issue("expired", not_before=past, not_after=past + dt.timedelta(days=1))
    )
    for name, issued in (
        ("disabled-device", disabled_cert),
        ("paused-credential", paused_cert),
        ("expired", expired),
    ):
        client, _ = device_client(broker, tmp_path, name, issued)
        try:
            assert client.wait_connack() == 5, name
        finally:
            client.close()
    counts = broker.running.auth_log.counts
    assert (
        counts["device_disabled"],
        counts["credential_disabled"],
        counts["certificate_expired"],
    ) == (1, 1, 1)
    broker.call(broker.running.auth_log.stop())  # flush the event writer
    events = broker.call(store.list_auth_events(device_id=disabled.id, outcome=AuthOutcome.DENIED))
    assert [e.reason for e in events] == ["device_disabled: device 'disabled-device' is disabled"]


def test_strict_client_id_policy(tmp_path: Path) -> None:
    broker = BrokerThread(broker_settings(tmp_path / "data", strict_client_id=True))
    try:
        _, issued = broker.provision("meter-7")
        for client_id, expected in (("meter-7", 0), ("", 0), ("someone-else", 2)):
            client, _ = device_client(broker, tmp_path, "meter-7", issued, client_id=client_id)
            try:
                assert client.wait_connack() == expected, client_id
            finally:
                client.close()
    finally:
        broker.stop()


@pytest.mark.postgres
def test_store_unreachable_gives_server_unavailable_and_recovers(
    tmp_path: Path, postgres_url: str
) -> None:
    """CONNACK 3 while the database refuses connections; connected devices keep working."""
    asyncio.run(upgrade(postgres_url))
    database = postgres_url.rsplit("/", 1)[1]
    broker = BrokerThread(broker_settings(tmp_path / "data", database_url=postgres_url))
    try:
        _, online_cert = broker.provision("online")
        _, later_cert = broker.provision("later")
        online, _ = device_client(broker, tmp_path, "online", online_cert, client_id="on")
        assert online.wait_connack() == 0
        assert online.subscribe("v1/devices/me/attributes") == [1]
        asyncio.run(_allow_connections(database, allowed=False))
        refused, _ = device_client(broker, tmp_path, "later", later_cert, client_id="l1")
        assert refused.wait_connack() == 3
        refused.close()
        online.publish("v1/devices/me/attributes", b"still working")
        assert online.next_message().payload == b"still working"
        asyncio.run(_allow_connections(database, allowed=True))
        recovered, _ = device_client(broker, tmp_path, "later", later_cert, client_id="l2")
        assert recovered.wait_connack() == 0
        recovered.close()
        online.close()
    finally:
        asyncio.run(_allow_connections(database, allowed=True))
        broker.stop()


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
