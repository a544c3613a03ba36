"""A gone member something still listens for (``broker.cluster.silence``), on the machine's
NATS. One that answers after it left the members bucket and then stops listening, as a member
of an earlier version stopping cleanly did (it left the bucket before it stopped taking
frames; ``tests/broker/cluster/test_leaving.py`` has this version's order), has its
persistent sessions adopted; one that answers and is back keeps them, and the survivor's
adoption ends as soon as its heartbeat is seen (a member back from fencing waits for it)."""

import asyncio
from collections.abc import Callable

import pytest
from nats.aio.subscription import Subscription

from broker.cluster import silence
from broker.cluster.claim_value import claim_value, holder_of
from broker.cluster.frames import to_key
from broker.cluster.link import ClusterLink
from broker.cluster.members import BUCKET, MISSED_BEATS, MemberRegistry
from broker.cluster.sessions import SessionClaims
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.peer import SessionKey, store_key
from broker.registry import Registry
from broker.router import LocalRouter
from broker.session_store import MemorySessionStore
from broker.sessions import BrokerSession
from nanoiot.members import Figures
from nanoiot.settings import Settings
from nanoiot.tasks import cancel_and_wait
from tests.broker.cluster.joined import joined

WAIT = 10.0
KEY = ("0190d4a0-0000-7000-8000-000000000001", "backend")
CLAIM = to_key(store_key(KEY))


class _Stored(MemorySessionStore):
    """The shared store, holding the persistent session member a left (its client away)."""

    async def load_one(self, key: SessionKey) -> BrokerSession | None:
        return BrokerSession(key, "backend", persistent=True) if key == KEY else None


class _MemberA:
    """Member a, gone from the members bucket, still listening on its forwarding subject:
    it answers the first request there and stops listening before the answer leaves
    (``stops``), or answers and is back (a heartbeat of it seen: ``is_gone`` false), or,
    ``silent_back``, answers and says nothing of being back (its heartbeat tells)."""

    def __init__(self, link: ClusterLink, *, stops: bool, silent_back: bool = False) -> None:
        self.link = link
        self.stops = stops
        self.silent_back = silent_back
        self.answered = 0
        self.asked = asyncio.Event()  # it answered once
        self.back = False
        self._answering: asyncio.Task[None] | None = None

    async def listen(self) -> None:
        subscription = await self.link.client.subscribe(self.link.subject("route", "a"))
        await self.link.flush()
        self._answering = asyncio.create_task(self._answer(subscription))

    async def _answer(self, subscription: Subscription) -> None:
        while True:
            msg = await subscription.next_msg(timeout=WAIT)
            self.answered += 1
            if self.stops:  # NATS has it before the asking member reads the answer
                await subscription.unsubscribe()
                await self.link.flush()
            elif not self.silent_back:
                self.back = True
            await msg.respond(b"")
            self.asked.set()
            if self.stops:
                return

    async def stop(self) -> None:
        if self._answering is not None:
            await cancel_and_wait(self._answering)

    def is_gone(self, member: str) -> bool:
        return member == "a" and not self.back


async def _adopted_on_b(
    cluster_settings: Callable[..., Settings], *, stops: bool
) -> tuple[int, bytes, Registry]:
    """Member b adopts what a holds: how many sessions, the session's claim then, b's
    registry; a answered once meanwhile."""
    async with (
        joined(cluster_settings(node_name="a")) as link_a,
        joined(cluster_settings(node_name="b")) as link_b,
    ):
        bucket = await link_b.key_value("clients")
        await bucket.put(CLAIM, claim_value("a", clean=False))
        member_a = _MemberA(link_a, stops=stops)
        await member_a.listen()
        store = _Stored()
        registry = Registry(LocalRouter(store, Limits(), BrokerMetrics()), store)
        claims = SessionClaims(link_b, bucket, registry)
        claims.is_gone = member_a.is_gone
        adopted = await asyncio.wait_for(claims.adopt("a"), WAIT)
        await member_a.stop()
        assert member_a.answered == 1
        entry = await bucket.get(CLAIM)
        assert entry is not None
        return adopted, entry.value, registry


async def test_a_member_answering_after_it_left_then_not_listening_has_its_sessions_adopted(
    cluster_settings: Callable[..., Settings],
) -> None:
    adopted, claim, registry = await _adopted_on_b(cluster_settings, stops=True)
    assert adopted == 1
    assert holder_of(claim) == "b"
    assert KEY in registry.sessions


async def test_a_member_answering_and_back_keeps_its_sessions(
    cluster_settings: Callable[..., Settings],
) -> None:
    adopted, claim, registry = await _adopted_on_b(cluster_settings, stops=False)
    assert adopted == 0
    assert claim == claim_value("a", clean=False)
    assert KEY not in registry.sessions


INTERVAL = 0.2  # seconds between member a's heartbeats once it is back


async def _members(link: ClusterLink, *, writes: bool) -> MemberRegistry:
    """``link``'s member in the members bucket: writing its heartbeats, or only watching."""
    bucket = await link.key_value(BUCKET, ttl=INTERVAL * MISSED_BEATS)
    registry = MemberRegistry(link, bucket, INTERVAL, Figures if writes else None)
    await registry.start()
    return registry


async def test_a_member_back_ends_the_survivors_wait_at_its_heartbeat(
    cluster_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Member a, gone from b's members (missed its heartbeats), answers b's ask (a thawed
    member refuses what waited in its socket as it fences itself off), then writes its
    heartbeat: b's adoption ends when b sees that heartbeat, not one ``ADOPT_RETRY`` later
    (made longer than the test's bound here). The member back from fencing waits for it."""
    monkeypatch.setattr(silence, "ADOPT_RETRY", 10 * WAIT)
    async with (
        joined(cluster_settings(node_name="a")) as link_a,
        joined(cluster_settings(node_name="b")) as link_b,
    ):
        bucket = await link_b.key_value("clients")
        await bucket.put(CLAIM, claim_value("a", clean=False))
        member_a = _MemberA(link_a, stops=False, silent_back=True)
        await member_a.listen()
        members_b = await _members(link_b, writes=False)
        store = _Stored()
        registry = Registry(LocalRouter(store, Limits(), BrokerMetrics()), store)
        claims = SessionClaims(link_b, bucket, registry)
        claims.is_gone = lambda name: not members_b.is_live(name)
        claims.until_back = members_b.until_live
        adopting = asyncio.create_task(claims.adopt("a"))
        await asyncio.wait_for(member_a.asked.wait(), WAIT)
        members_a = await _members(link_a, writes=True)  # a's heartbeat: it is back
        try:
            assert await asyncio.wait_for(adopting, WAIT) == 0
        finally:
            await cancel_and_wait(adopting)
            await member_a.stop()
            await members_a.stop()
            await members_b.stop()
        entry = await bucket.get(CLAIM)
        assert entry is not None
        assert entry.value == claim_value("a", clean=False)
        assert KEY not in registry.sessions
