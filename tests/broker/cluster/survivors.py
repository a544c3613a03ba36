"""Survivors settling a dead member's run (``broker.cluster.wills``, ``departure``) over the
machine's NATS: the buckets they share, a dead run's wills, and waits on the buckets' changes
(``tests/broker/cluster/test_survivor.py``)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from broker.cluster.claim_value import adoption_value, holder_of
from broker.cluster.departure import DONE, waiting
from broker.cluster.frames import to_key
from broker.cluster.kv import KeyValue
from broker.cluster.link import ClusterLink
from broker.cluster.will_entries import StoredWill, encode_will, incarnation
from broker.cluster.wills import DEPARTURES, Wills
from broker.peer import store_key
from nanoiot.members import Figures, Member
from nanoiot.settings import Settings

WAIT = 10.0
SETTLE_WITHIN = 30.0  # seconds a member back from fencing waits for its settler at most
DEVICE = "0190d4a0-0000-7000-8000-000000000001"
GONE = Member("a", "host", 41, 0.0, 1.0, Figures())  # the member that died first
DEAD = incarnation("a", 41, 0.0, 0)  # its run: its wills' prefix, its departure's key
WINNER = Member("c", "host", 7, 0.0, 1.0, Figures())  # made the departure, then was killed
KILLED = incarnation("c", 7, 0.0, 0)  # its process, as its creator value names it
AGE = 1.0  # seconds the departures of ``aging_buckets`` are kept after their last write


@dataclass
class Buckets:
    wills: KeyValue
    departures: KeyValue
    claims: KeyValue
    published: list[tuple[str, str]] = field(default_factory=list)  # (survivor, client id)
    published_at: list[float] = field(default_factory=list)  # loop time of each
    adopted: list[tuple[str, str]] = field(default_factory=list)  # (survivor, member)
    survivors: list[Wills] = field(default_factory=list)

    async def will(self, client_id: str, delay: int = 0) -> StoredWill:
        """A will of the dead run's client ``client_id``, kept as its member kept it."""
        claim = await self.claims.put(claim_key(client_id), b"a")
        will = StoredWill(
            (DEVICE, client_id), claim, f"devices/sensor/{client_id}", b"gone", 1, False, b"",
            delay,
        )  # fmt: skip
        await self.wills.put(f"{DEAD}.{claim_key(client_id)}", encode_will(will))
        return will

    def survivor(
        self, name: str, live: tuple[str, ...] = ("b.1-0", "d.1-0"), *, adopts: bool = True
    ) -> Wills:
        """Member ``name``'s process ``<name>.1-0``, to which the processes ``live`` are;
        its adoptions rewrite the claims of the member they adopt from, unless not ``adopts``
        (as NATS still has the subscriptions of a frozen member: ``adoption.adopt``)."""

        def publish(will: StoredWill) -> None:
            self.published.append((name, will.key[1]))
            self.published_at.append(asyncio.get_running_loop().time())

        async def adopt(member: str) -> int:
            self.adopted.append((name, member))
            if adopts:
                await self.claimed_by_adoption(name, member)
            return 0

        process = incarnation(name, 1, 0.0, 0)
        wills = Wills(self.wills, self.departures, self.claims, process, publish)
        wills.adopt = adopt
        wills.live = live.__contains__
        self.survivors.append(wills)
        return wills

    async def claimed_by_adoption(self, name: str, member: str) -> None:
        """The claims naming ``member`` rewritten as ``name``'s adoption writes them."""
        for kv_key in await self.claims.values():
            entry = await self.claims.get(kv_key)
            if entry is not None and holder_of(entry.value) == member:
                adoption = adoption_value(name, entry.value, entry.revision)
                await self.claims.update(kv_key, adoption, entry.revision)

    async def settled(self) -> None:
        """Until the dead run's departure is marked ``DONE``."""
        async with asyncio.timeout(WAIT):
            while (entry := await self.departures.get(DEAD)) is None or entry.value != DONE:
                await changed(self.departures, DEAD, entry.revision if entry else 0)


async def changed(bucket: KeyValue, key: str, revision: int) -> None:
    watch = await bucket.watch(key)
    try:
        while watch.revision <= revision:
            await watch.value()
    finally:
        await watch.stop()


def claim_key(client_id: str) -> str:
    return to_key(store_key((DEVICE, client_id)))


async def winner_waiting(buckets: Buckets, delay: int) -> tuple[Wills, float]:
    """Survivor b, the winner of the dead run's departure, once it has adopted the sessions
    and started the delay of a will ``delayed`` of ``delay`` seconds (its entry ``waiting``);
    with the loop time at which it was told the member gone."""
    await buckets.will("delayed", delay=delay)
    winner = buckets.survivor("b")
    noticed = asyncio.get_running_loop().time()
    winner.member_gone(GONE)
    async with asyncio.timeout(WAIT):
        while (entry := await buckets.departures.get(DEAD)) is None or entry.value != waiting(
            winner.creator
        ):
            await changed(buckets.departures, DEAD, entry.revision if entry else 0)
    return winner, noticed


@contextlib.asynccontextmanager
async def open_buckets(settings: Settings, departures_kept: float | None) -> AsyncIterator[Buckets]:
    link = await ClusterLink.connect(settings)
    try:
        made = Buckets(
            await link.key_value("wills"),
            await link.key_value(DEPARTURES, ttl=departures_kept),
            await link.key_value("clients"),
        )
        yield made
        for survivor in made.survivors:
            await survivor.stop()
    finally:
        await link.close()
