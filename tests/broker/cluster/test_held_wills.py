"""Wills a member held back because NATS could not delete their entries
(``broker.cluster.held_wills``), NATS back before the member fenced itself off: each is
decided again before it goes out, as a survivor decides a dead member's
(``broker.cluster.will_decision``), so a device disabled meanwhile publishes nothing (they
went out unchecked). On the machine's NATS, cut by a proxy, and a real SQLite store."""

import asyncio
import functools
from collections.abc import Callable
from types import SimpleNamespace
from uuid import UUID

from broker.authn import Authenticator
from broker.cluster.link import ClusterLink
from broker.cluster.will_decision import Decisions
from broker.cluster.will_entries import StoredWill
from broker.cluster.wills import DEPARTURES, Wills
from broker.mqtt.packets import Will
from nanoiot.settings import Settings
from storage.sql import SqlCredentialStore
from tests.cluster.proxy import nats_proxy

WAIT = 10.0


class _Client:
    """What ``Wills`` reads of a connection admitted with an access token."""

    def __init__(self, device_id: str, credential_id: str) -> None:
        self.peer = SimpleNamespace(
            key=(device_id, "c"), canonical=lambda topic: f"devices/d/{topic}",
            decision=SimpleNamespace(holder=SimpleNamespace(credential_id=credential_id)),
            request=SimpleNamespace(chain=(), certificate=None),
        )  # fmt: skip
        self.label = device_id
        self.core = SimpleNamespace(will=Will("status", b"gone", 1), v5=None)
        self.ended = False


async def _admitted(store: SqlCredentialStore, name: str) -> _Client:
    device = await store.create_device(name)
    token = await store.add_token_credential(device.id, f"token-of-{name}-0123456789")
    return _Client(str(device.id), str(token.id))


async def test_a_will_held_after_a_failed_delete_is_dropped_if_its_device_was_disabled(
    cluster_settings: Callable[..., Settings], sqlite_store: SqlCredentialStore
) -> None:
    revoked, admitted = await _admitted(sqlite_store, "d1"), await _admitted(sqlite_store, "d2")
    published: list[str] = []
    decisions, settled = Decisions(Authenticator(sqlite_store), 1), asyncio.Event()

    def publish(client: _Client) -> None:
        published.append(client.label)
        settled.set()

    async def refusal(will: StoredWill) -> str | None:
        refused = await decisions(will)
        settled.set()  # counted (``Wills.refused``) before this test wakes
        return refused

    with nats_proxy() as proxy:
        link = await ClusterLink.connect(cluster_settings(nats_url=proxy.url))
        lost, back = asyncio.Event(), asyncio.Event()
        link.on_lost(lost.set)
        link.on_reconnected(back.set)
        wills = Wills(
            await link.key_value("wills"), await link.key_value(DEPARTURES),
            await link.key_value("clients"), "a.1", lambda will: published.append(will.key[0]),
        )  # fmt: skip
        wills.survivor.refusal = refusal
        try:
            for client in (revoked, admitted):
                await wills.written(client, 1)  # type: ignore[arg-type]
            proxy.cut()
            await asyncio.wait_for(lost.wait(), WAIT)
            for client in (revoked, admitted):  # their connections end: the wills fall due
                wills.due(client, functools.partial(publish, client))  # type: ignore[arg-type]
            await wills.settle(WAIT)  # the deletes failed: both held
            assert published == []
            await sqlite_store.set_device_enabled(UUID(revoked.label), False)
            proxy.restore()
            await asyncio.wait_for(back.wait(), WAIT)
            wills.back()  # this member's heartbeat written again
            async with asyncio.timeout(WAIT):  # each published or dropped
                while len(published) + wills.refused < 2:
                    await settled.wait()
                    settled.clear()
            await wills.settle(WAIT)
        finally:
            await wills.stop()
            await link.close()
    assert published == [admitted.label]
    assert wills.refused == 1
