"""After a restart the listener opens first and the persistent sessions come back behind it.

The store's pages are held back (a gate around the real ``load_page``) so that restoration is
certainly in progress: the broker is already listening, a device connecting meanwhile gets its
own session with its queued message (restored ahead of its page, never an empty one), and what
clients publish meanwhile is read only once every session is in, so it reaches a persistent
subscriber whose session was not restored yet (MQTT 3.1.1 §3.1.2.4), and its PUBACK follows.
"""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from broker.mqtt.packets import Connack, Connect, Pingreq, Pingresp
from broker.session_store import SqlSessionStore
from tests.certgen import Issued
from tests.e2e.harness import (
    WAIT,
    BrokerThread,
    Client,
    broker_settings,
    device_client,
    mqtt_client,
    write_pem,
)
from tests.e2e.peers import Raw
from tests.logwatch import watching

RPC = "v1/devices/me/rpc/request/+"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def backend(broker: BrokerThread) -> Client:
    client = mqtt_client(
        broker.port, broker.server_cert, None,
        client_id="backend", username="backend", password="backend-pass",
    )  # fmt: skip
    assert client.wait_connack() == 0
    return client


@pytest.fixture
def first_run(data_dir: Path, tmp_path: Path) -> dict[str, Issued]:
    """Two devices' persistent sessions, each with one queued message, in the store."""
    broker = BrokerThread(broker_settings(data_dir))
    try:
        broker.application("backend", "backend", "backend-pass")
        issued = {}
        for name in ("early", "other"):
            client, issued[name] = device_client(
                broker, tmp_path, name, client_id=name, clean_session=False
            )
            assert client.wait_connack() == 0
            assert client.subscribe(RPC)[0].value == 1
            client.close()
        sender = backend(broker)
        for name in ("early", "other"):
            sender.publish(f"devices/{name}/rpc/request/1", f"queued for {name}".encode())
        sender.close()
    finally:
        broker.stop()
    return issued


def test_a_device_connecting_during_restoration_gets_its_own_session(
    first_run: dict[str, Issued], data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()  # bound to the broker's loop when it first waits on it
    real = SqlSessionStore.load_page

    async def held_back(self: SqlSessionStore, after: str | None, limit: int) -> Any:
        await gate.wait()  # the broker's loop keeps serving meanwhile
        return await real(self, after, limit)

    async def open_gate() -> None:
        gate.set()

    monkeypatch.setattr(SqlSessionStore, "load_page", held_back)
    broker = BrokerThread(broker_settings(data_dir))  # returns once it listens
    try:
        restoration = broker.running.restoration
        early, _ = device_client(
            broker, tmp_path, "early", first_run["early"], client_id="early", clean_session=False
        )
        assert early.wait_connack() == 0
        assert early.next_message().payload == b"queued for early"  # its own, complete
        sender = backend(broker)
        late = sender.paho.publish("devices/other/rpc/request/2", b"published meanwhile", qos=1)
        assert not restoration.done.done()
        assert not late.is_published()  # read once every session is in

        broker.call(open_gate())
        late.wait_for_publish(WAIT)
        assert restoration.sessions == 2
        other, _ = device_client(
            broker, tmp_path, "other", first_run["other"], client_id="other", clean_session=False
        )
        assert other.wait_connack() == 0
        got = [other.next_message().payload for _ in range(2)]
        assert got == [b"queued for other", b"published meanwhile"]
        for client in (early, sender, other):
            client.close()
    finally:
        broker.call(open_gate())
        broker.stop()


def test_keep_alive_does_not_expire_while_the_connection_waits_for_restoration(
    first_run: dict[str, Issued], data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client is not read until every session is in: it is not silent for that
    (§3.1.2.10), and its PINGREQ, sent meanwhile, is answered once it is read."""
    gate = asyncio.Event()
    real = SqlSessionStore.load_page

    async def held_back(self: SqlSessionStore, after: str | None, limit: int) -> Any:
        await gate.wait()
        return await real(self, after, limit)

    async def open_gate() -> None:
        gate.set()

    monkeypatch.setattr(SqlSessionStore, "load_page", held_back)
    broker = BrokerThread(broker_settings(data_dir))
    try:
        certfile = write_pem(tmp_path, first_run["early"], "early")
        with (
            watching(WAIT, "broker.client") as log,
            Raw(broker.port, broker.server_cert, certfile) as raw,
        ):
            raw.send(Connect(4, "pinger", True, 1))
            assert raw.read() == Connack(False, 0)
            # Its keep-alive timer fires 1.5 s after CONNACK (1 s keep-alive), more than
            # 1.5 s after its CONNECT was read: it would expire now if it could.
            checked = log.next_of("keep-alive expired", "is not read")
            assert checked is not None
            assert "is not read" in checked, checked  # not timed out
            raw.send(Pingreq())
            assert not broker.running.restoration.done.done()
            broker.call(open_gate())
            assert raw.read() == Pingresp()  # read once every session is in
    finally:
        broker.call(open_gate())
        broker.stop()
