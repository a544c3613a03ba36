"""When a connected client's certificates are decided again (``broker.cert_expiry``), and what
the follower does when the store cannot answer then (the e2e tests close real connections)."""

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from auth.decision import Decision, store_unavailable
from broker import cert_expiry
from broker.authn import Authenticator, ConnectRequest
from broker.peer import Peer
from broker.revocation import RevocationFollower
from storage.sql import SqlCredentialStore
from tests.broker.standin_broker import StandInBroker
from tests.certgen import issue

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def request_with(*ends: dt.timedelta) -> ConnectRequest:
    """A request whose leaf ends ``ends[0]`` from NOW and whose chain certificates the rest."""
    start = NOW - dt.timedelta(days=1)
    leaf, *rest = (
        issue(f"c{i}", not_before=start, not_after=NOW + end) for i, end in enumerate(ends)
    )
    return ConnectRequest(leaf.cert, (leaf.cert, *(c.cert for c in rest)), None, None, "", "h")


def test_the_earliest_end_still_to_come_is_next() -> None:
    days = dt.timedelta(days=1)
    assert cert_expiry.next_expiry(request_with(30 * days, 2 * days), NOW) == NOW + 2 * days
    # a chain certificate that ended already (sent but not needed) is not waited for again
    assert cert_expiry.next_expiry(request_with(30 * days, -days), NOW) == NOW + 30 * days
    assert cert_expiry.next_expiry(request_with(-days), NOW) is None
    bare = ConnectRequest(None, (), "token", None, "", "h")
    assert cert_expiry.next_expiry(bare, NOW) is None


class _Unanswered(Authenticator):
    async def authenticate(self, request: ConnectRequest, within: float | None = None) -> Decision:
        return store_unavailable("database is locked")


class _NoKicks(StandInBroker):
    def kick_device(
        self, device_id: str, reason: str, which: Callable[[Peer], bool] | None = None
    ) -> int:
        raise AssertionError("kicked although the store did not answer")


async def test_a_decision_the_store_cannot_make_is_tried_again(tmp_path: Path) -> None:
    """The device stays connected (as on a change the store cannot be asked about), and the
    expiry is decided again RETRY_SECONDS later, not forgotten."""
    store = await SqlCredentialStore.open(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    authenticator = _Unanswered(store)
    follower = RevocationFollower(store, _NoKicks(), authenticator, interval=0.01)
    loop = asyncio.get_running_loop()
    broker = SimpleNamespace(certificate_due=follower.certificate_due, authenticator=authenticator)
    peer = SimpleNamespace(request=request_with(-dt.timedelta(seconds=1)), device_id="d")
    client: Any = SimpleNamespace(
        broker=broker, peer=peer, ended=False, _loop=loop, _cert_timer=None
    )
    await follower.start()
    try:
        follower.certificate_due(client)
        while client._cert_timer is None:
            await follower.applied.wait()
        left = client._cert_timer.when() - loop.time()
        assert cert_expiry.RETRY_SECONDS - 1 < left <= cert_expiry.RETRY_SECONDS
        client._cert_timer.cancel()
    finally:
        await follower.stop()
        await store.close()
