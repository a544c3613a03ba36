"""What ``$SYS`` reads each ``sys_interval`` (``broker.sys_topics``): counts kept as sessions
and connections come and go, never a look at every session or connection (with 100,000
persistent sessions a scan for ``$SYS/broker/clients/disconnected`` stalled the loop once an
interval). Counted, not timed: each read of a session's client is one session looked at.
The figures themselves, across connects, take-overs, expiries and a restart, are checked
against a real broker in tests/e2e/test_sys_sessions.py.
"""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from auth.acl import Acl
from broker.authn import Authenticator
from broker.core import Broker
from broker.sessions import BrokerSession
from broker.sys_topics import SysTopics
from broker.telemetry import AuthLog
from storage.sql import SqlCredentialStore

FLEET = 1000


class _Session(BrokerSession):
    """Counts each look at its client."""

    __slots__ = ("_client", "looks")

    @property  # type: ignore[override]
    def client(self) -> object:
        self.looks = getattr(self, "looks", 0) + 1
        return self._client

    @client.setter
    def client(self, client: object) -> None:
        self._client = client


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    store = await SqlCredentialStore.open(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    yield Broker(Authenticator(store), Acl(), AuthLog(store))
    await store.close()


async def test_the_figures_look_at_no_session(broker: Broker) -> None:
    sessions = [_Session((f"device-{n}", "c"), "d", persistent=True) for n in range(FLEET)]
    for session in sessions:
        broker.registry.sessions[session.key] = session
    for session in sessions:
        session.looks = 0
    figures = dict(SysTopics(broker, 0).figures())
    assert figures["$SYS/broker/clients/disconnected"] == str(FLEET)
    assert sum(session.looks for session in sessions) == 0  # before: each looked at once
