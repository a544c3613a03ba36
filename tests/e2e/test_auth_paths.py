"""Every way in, and every refusal with its CONNACK code and recorded reason."""

import asyncio
import datetime as dt
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher

import storage.credentials
from auth.kinds import CredentialStatus
from storage.records import AuthOutcome
from tests.certgen import issue
from tests.e2e.harness import (
    V311_RETURN_CODE,
    BrokerThread,
    broker_settings,
    device_client,
    mqtt_client,
)


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


def test_a_password_check_slower_than_auth_timeout_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``auth_timeout`` bounds the database's answer, not the argon2 verification after it:
    that is CPU work on this machine, bounded by the password gate and the connect timeout.
    On a busy machine it took longer than the 2 s default while the database answered at
    once, and a valid application got CONNACK 3. Here a costlier hash stands for the load."""
    costly = PasswordHasher(time_cost=30)  # verification costs what the hash names
    hashes: list[str] = []

    def costly_hash(password: str) -> str:
        hashes.append(costly.hash(password))
        return hashes[-1]

    monkeypatch.setattr(
        storage.credentials, "hash_password_async", lambda pw: asyncio.to_thread(costly_hash, pw)
    )
    limit = 0.25
    settings = broker_settings(tmp_path / "data", auth_timeout=limit, tls_handshake_timeout=120)
    with BrokerThread(settings) as broker:
        store = broker.running.store
        device = broker.call(store.create_device("backend"))
        adding = store.add_basic_credential(device.id, username="app", password="app-pass")
        broker.call(adding, timeout=120)  # hashed at that cost too: seconds under load
        started = time.monotonic()
        assert PasswordHasher().verify(hashes[0], "app-pass")
        assert time.monotonic() - started > limit, "the verification is not slower than the bound"
        client = mqtt_client(
            broker.port, broker.server_cert, None, username="app", password="app-pass"
        )
        try:
            assert V311_RETURN_CODE[client.connack.get(timeout=120).value] == 0
        finally:
            client.close()
