"""The cluster as the admin surfaces see it (``nanoiot.members.ClusterView``): the live
members from the members bucket (each says whether it is fenced off), and where a device is
connected, asked of the members.

Where a device is connected is asked, not read from the claims bucket
(``<cluster>_clients``): a claim names the member that holds a session, connected or not
(a persistent session stays claimed while its client is away), and finding a device's claims
means reading every key, since keys are per session. Instead the admin publishes the device
ids it shows on ``<cluster>.clients.where`` and every member answers with the client ids it
has live connections for, from its registry: one request per page, answered by each member
within ``ASK_WITHIN`` seconds (a member that does not answer in time shows no connections).
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Final

from nats.aio.msg import Msg

from broker.cluster.errors import nats_errors
from broker.cluster.link import ClusterLink
from broker.cluster.members import MemberRegistry
from nanoiot.errors import ClusterError
from nanoiot.members import Member

if TYPE_CHECKING:
    from broker.registry import Registry

__all__ = ["ASK_WITHIN", "ClusterAdminView", "answer_where"]

log = logging.getLogger(__name__)

ASK_WITHIN: Final = 0.5
_MAX_ASKED: Final = 1000  # device ids in one question: a page shows at most a few dozen


async def answer_where(link: ClusterLink, registry: "Registry") -> None:
    """Answer ``<cluster>.clients.where``: {device id: [client id, ...]} of those asked that
    have live connections on this member."""

    async def where(payload: bytes, _reply: str | None) -> bytes:
        asked = json.loads(payload)[:_MAX_ASKED]
        found: dict[str, list[str]] = {}
        for device_id in asked:
            clients = registry.live.get(str(device_id))
            if clients:
                found[str(device_id)] = sorted(c.peer.key[1] for c in clients if c.peer)
        return json.dumps({"member": link.member, "devices": found}).encode()

    await link.subscribe(link.subject("clients", "where"), where)


class ClusterAdminView:
    def __init__(self, link: ClusterLink, members: MemberRegistry) -> None:
        self._link = link
        self._members = members

    @property
    def cluster(self) -> str:
        return self._link.cluster

    @property
    def member(self) -> str:
        return self._link.member

    def members(self) -> list[Member]:
        """The live members, by name; this member as it is now while it is fenced off: cut
        off from NATS it sees none of its own heartbeats, so its last entry ages out of what
        it reads of the bucket, though it still runs (and serves this view)."""
        live = self._members.live()
        if not self._members.fenced:
            return live
        me = self._members.me()
        return sorted([m for m in live if m.name != me.name] + [me], key=lambda m: m.name)

    async def connections(self, device_ids: Collection[str]) -> Mapping[str, list[tuple[str, str]]]:
        asked = sorted(device_ids)[:_MAX_ASKED]
        if not asked:
            return {}
        found: dict[str, list[tuple[str, str]]] = {}
        try:
            for answer in await self._ask(json.dumps(asked).encode()):
                member = str(answer["member"])
                for device_id, clients in answer["devices"].items():
                    found.setdefault(device_id, []).extend((member, str(c)) for c in clients)
        except ClusterError as exc:
            log.warning("asking where devices are connected: %s", exc)
        return {device_id: sorted(pairs) for device_id, pairs in found.items()}

    async def _ask(self, payload: bytes) -> list[dict[str, Any]]:
        """The members' answers: all the live members', or those that came in time."""
        expect = len(self._members.live())
        answers: asyncio.Queue[bytes] = asyncio.Queue()
        client = self._link.client

        async def collect(msg: Msg) -> None:
            if msg.data:  # not a status message (nobody listening)
                answers.put_nowait(msg.data)

        inbox = client.new_inbox()
        with nats_errors("asking the members where devices are connected"):
            subscription = await client.subscribe(inbox, cb=collect)
            try:
                await client.publish(self._link.subject("clients", "where"), payload, reply=inbox)
                found: list[dict[str, Any]] = []
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ASK_WITHIN):
                        while len(found) < expect:
                            found.append(json.loads(await answers.get()))
                return found
            finally:
                await subscription.unsubscribe()
