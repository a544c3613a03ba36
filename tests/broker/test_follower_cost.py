"""What the change-feed follower (``broker.revocation``) looks at for a batch: the changed
devices' connections and sessions only, through the broker's per-device indexes, not every
connection and session of the fleet (a fleet's provisioning is a change per device, a batch
every quarter second). Counted, not timed: each read of a session's waiting will and of a
connection's peer is one thing examined.
"""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from auth.acl import Acl
from broker.authn import Authenticator, ConnectRequest
from broker.client import MqttClient
from broker.core import Broker
from broker.last_will import DelayedWill
from broker.peer import Peer
from broker.revocation import RevocationFollower
from broker.session_table import SessionTable
from broker.sessions import BrokerSession
from broker.telemetry import AuthLog
from storage.sql import SqlCredentialStore

FLEET = 1000


class _Session(BrokerSession):
    """Counts each look at its waiting will."""

    __slots__ = ("_will", "looks")

    @property  # type: ignore[override]
    def pending_will(self) -> object:
        self.looks = getattr(self, "looks", 0) + 1
        return self._will

    @pending_will.setter
    def pending_will(self, will: object) -> None:
        self._will = will


class _Peer:
    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        # No credentials at all: decided again, refused without asking the store.
        self.request = ConnectRequest(None, (), None, None, "c", "127.0.0.1:1")


class _Client:
    """A live connection as the registry holds it; counts each look at its peer."""

    def __init__(self, peer: _Peer) -> None:
        self._peer = peer
        self.kicked: str | None = None
        self.looks = 0

    @property
    def peer(self) -> _Peer:
        self.looks += 1
        return self._peer

    def kick(self, reason: str) -> None:
        self.kicked = reason


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlCredentialStore]:
    opened = await SqlCredentialStore.open(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    yield opened
    await opened.close()


def _fleet(broker: Broker, changed: str) -> tuple[dict[str, _Session], dict[str, _Client]]:
    """FLEET devices, ``changed`` among them, each with a session away whose will waits for
    its delay and with a live connection (another client id)."""
    sessions, clients = {}, {}
    for device_id in [changed, *(str(uuid.uuid4()) for _ in range(FLEET - 1))]:
        peer = _Peer(device_id)
        session = sessions[device_id] = _Session((device_id, "away"), "d", persistent=True)
        session.pending_will = DelayedWill(lambda: None, cast(Peer, peer))
        broker.registry.sessions[session.key] = session
        client = clients[device_id] = _Client(peer)
        broker.registry.live[device_id] = {cast(MqttClient, client)}
    return sessions, clients


async def test_a_batch_examines_only_the_changed_devices(store: SqlCredentialStore) -> None:
    device = await store.create_device("changed")
    broker = Broker(Authenticator(store), Acl(), AuthLog(store))
    follower = RevocationFollower(store, broker, broker.authenticator)
    sessions, clients = _fleet(broker, str(device.id))
    await follower.start()
    try:
        await store.set_device_enabled(device.id, False)
        for session, client in zip(sessions.values(), clients.values(), strict=True):
            session.looks = client.looks = 0
        assert len(await follower.poll_once()) == 1
    finally:
        await follower.stop()
    changed = str(device.id)
    others = [d for d in sessions if d != changed]
    # Before the indexes: each of the 999 others' will and connection looked at once.
    assert sum(sessions[d].looks for d in others) == 0
    assert sum(clients[d].looks for d in others) == 0
    # and what it touched it decided as before: the changed device's will dropped, its
    # connection closed; the others' untouched
    assert sessions[changed]._will is None
    assert clients[changed].kicked is not None
    assert all(isinstance(sessions[d]._will, DelayedWill) for d in others)
    assert all(clients[d].kicked is None for d in others)


async def test_a_deleted_device_loses_only_its_own_sessions(store: SqlCredentialStore) -> None:
    broker = Broker(Authenticator(store), Acl(), AuthLog(store))
    _fleet(broker, "gone")
    second = _Session(("gone", "second"), "d", persistent=False)
    broker.registry.sessions[second.key] = second
    broker.forget_device("gone")
    assert broker.registry.sessions.held_by("gone") == 0
    assert broker.registry.sessions.of_device("gone") == []
    assert len(broker.registry.sessions) == FLEET - 1
    assert all(key[0] != "gone" for key in broker.registry.sessions)


def test_the_table_keeps_each_devices_sessions_as_they_come_and_go() -> None:
    table = SessionTable()
    a1, a2, b1 = (
        BrokerSession(k, "d", persistent=False) for k in [("a", "1"), ("a", "2"), ("b", "1")]
    )
    for session in (a1, a2, b1):
        table[session.key] = session
    assert table.of_device("a") == [a1, a2]
    assert table.held_by("a") == 2
    del table[a1.key]
    replaced = BrokerSession(a2.key, "d", persistent=False)
    table[a2.key] = replaced  # a take-over's new session under the same key
    table[a1.key] = a1
    assert table.of_device("a") == [replaced, a1]
    assert table.held_by("a") == 2
    del table[a1.key], table[a2.key]
    assert table.of_device("a") == []
    assert table.held_by("a") == 0
    assert "a" not in table._per_device
    assert table.of_device("b") == [b1]
