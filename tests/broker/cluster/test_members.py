"""The members bucket on the machine's NATS: who is live with which figures, and who went
away (left, missed its heartbeats, restarted), as node-failure handling needs it."""

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator, Callable

import pytest

from broker.cluster.link import ClusterLink
from broker.cluster.members import BUCKET, MISSED_BEATS, MemberRegistry
from nanoiot.members import Figures, Member, decode_member, encode_member, totals
from nanoiot.settings import Settings

WAIT = 10.0
INTERVAL = 0.2


class Node:
    """A member with figures a test sets, and what its registry told it."""

    def __init__(self, link: ClusterLink) -> None:
        self.link = link
        self.figures = Figures()
        self.gone: asyncio.Queue[Member] = asyncio.Queue()
        self._registry: MemberRegistry | None = None

    @property
    def registry(self) -> MemberRegistry:
        assert self._registry is not None, "not joined"
        return self._registry

    async def join(self, interval: float = INTERVAL, *, writes: bool = True) -> MemberRegistry:
        bucket = await self.link.key_value(BUCKET, ttl=interval * MISSED_BEATS)
        registry = MemberRegistry(
            self.link, bucket, interval, (lambda: self.figures) if writes else None, mqtt_port=1
        )
        registry.on_gone(self.gone.put_nowait)
        await registry.start()
        self._registry = registry
        return registry

    async def until(self, holds: Callable[[list[Member]], bool]) -> list[Member]:
        """The live members once ``holds`` is true of them (checked at each change)."""
        registry = self.registry
        changed = asyncio.Event()
        registry.on_change(changed.set)
        async with asyncio.timeout(WAIT):
            while not holds(registry.live()):
                await changed.wait()
                changed.clear()
        return registry.live()


@pytest.fixture
async def links(cluster_settings: Callable[..., Settings]) -> AsyncIterator[list[ClusterLink]]:
    made = [await ClusterLink.connect(cluster_settings(), worker=i) for i in range(3)]
    yield made
    for link in made:
        await link.close()


def named(members: list[Member]) -> dict[str, Member]:
    return {member.name: member for member in members}


async def test_each_member_sees_the_others_and_their_figures(links: list[ClusterLink]) -> None:
    a, b = Node(links[0]), Node(links[1])
    await a.join()
    b.figures = Figures(clients=3, subscriptions=5, messages_received=7)
    await b.join()
    try:
        seen = named(await a.until(lambda live: len(live) == 2))
        assert set(seen) == {"node-a-w0", "node-a-w1"}
        assert seen["node-a-w1"].figures.clients == 3
        assert (seen["node-a-w1"].pid, seen["node-a-w1"].interval) == (os.getpid(), INTERVAL)
        # Figures go out with every heartbeat, and when each was seen is known.
        heard = a.registry.heard("node-a-w1")
        assert heard is not None
        assert heard.interval == INTERVAL
        b.figures = Figures(clients=4, subscriptions=6, messages_received=70, bytes_sent=9)
        live = await a.until(lambda live: named(live)["node-a-w1"].figures.clients == 4)
        later = a.registry.heard("node-a-w1")
        assert later is not None
        assert later.at > heard.at
        assert named(live)["node-a-w1"].figures == b.figures
        assert totals(live).messages_received == 70
        assert a.gone.empty()
    finally:
        await b.registry.stop()
        await a.registry.stop()


async def test_a_member_that_stops_is_gone_at_once(links: list[ClusterLink]) -> None:
    a, b = Node(links[0]), Node(links[1])
    await a.join(interval=30.0)  # liveness by heartbeat could not explain it within WAIT
    b_registry = await b.join(interval=30.0)
    await a.until(lambda live: len(live) == 2)
    await b_registry.stop()
    async with asyncio.timeout(WAIT):
        left = await a.gone.get()
    assert left.name == "node-a-w1"
    assert [m.name for m in await a.until(lambda live: len(live) == 1)] == ["node-a-w0"]
    assert a.registry.heard("node-a-w1") is None  # its barriers are not waited for
    await a.registry.stop()


async def test_a_member_that_stops_beating_is_gone_after_its_missed_beats(
    links: list[ClusterLink],
) -> None:
    a, b, watcher = Node(links[0]), Node(links[1]), Node(links[2])
    await a.join()
    await watcher.join(writes=False)  # a supervisor's view: watches, writes no entry
    b_registry = await b.join()
    await a.until(lambda live: len(live) == 2)
    await watcher.until(lambda live: len(live) == 2)
    loop = asyncio.get_running_loop()
    silent_since = loop.time()
    for task in b_registry._tasks:  # as if killed: no more beats, no delete
        task.cancel()
    async with asyncio.timeout(WAIT):
        dead = await a.gone.get()
        assert (await watcher.gone.get()).name == "node-a-w1"
    assert dead.name == "node-a-w1"
    assert loop.time() - silent_since >= INTERVAL * (MISSED_BEATS - 1)
    assert [m.name for m in a.registry.live()] == ["node-a-w0"]
    await watcher.registry.stop()
    await a.registry.stop()


async def test_a_restarted_member_ends_its_previous_run(links: list[ClusterLink]) -> None:
    a, b = Node(links[0]), Node(links[1])
    await a.join(interval=30.0)
    first = await b.join(interval=30.0)
    first_started = named(await a.until(lambda live: len(live) == 2))["node-a-w1"].started
    for task in first._tasks:  # killed; the same name starts again before it aged out
        task.cancel()
    links[1].started += 1.0  # a new process with the same name (and pid: a container's)
    second = await Node(links[1]).join(interval=30.0)
    async with asyncio.timeout(WAIT):
        previous = await a.gone.get()
    assert (previous.name, previous.started) == ("node-a-w1", first_started)
    now = named(a.registry.live())["node-a-w1"]
    assert now.started > first_started
    await second.stop()
    await a.registry.stop()


async def test_a_member_that_does_not_hear_itself_takes_nobody_as_gone(
    links: list[ClusterLink],
) -> None:
    """Cut off from NATS, every entry falls silent, its own too: it must not act for the
    others (their wills, their sessions) on what is its own outage."""
    a, b = Node(links[0]), Node(links[1])
    a_registry = await a.join()
    b_registry = await b.join()
    await a.until(lambda live: len(live) == 2)
    for task in a_registry._tasks:  # a hears nothing more, itself included; b goes on
        task.cancel()
    async with asyncio.timeout(WAIT):
        assert (await b.gone.get()).name == "node-a-w0"  # a fell silent a window ago
    # a's judgement of b (silent for a as long as a for b) would have come by now.
    await asyncio.sleep(INTERVAL * MISSED_BEATS * 2)
    assert a.gone.empty()
    assert "node-a-w1" in named(a_registry.live())
    await b_registry.stop()
    await a_registry.stop()


def test_entries_round_trip_and_foreign_ones_are_refused() -> None:
    member = Member("n1", "host", 12, 1.5, 2.0, Figures(1, 2, 3, 4, 5, 6), 8883)
    assert decode_member(encode_member(member)) == member
    older = encode_member(dataclasses.replace(member, mqtt_port=0)).replace(b',"mqtt_port":0', b"")
    assert decode_member(older).mqtt_port == 0
    from nanoiot.errors import ClusterError

    for bad in (b"", b"[]", b'{"name": "x"}', b"\xff"):
        with pytest.raises(ClusterError, match="not one"):
            decode_member(bad)
