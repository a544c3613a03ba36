"""Purging a gone member's parked frames on the machine's NATS: a purge waits while another
member pins them (it took one of the gone member's sessions and is still to read them for
it), and drops them once nobody does (``broker.cluster.parked``); a replay purges only what
it read, and nothing once its member fenced itself off (``broker.cluster.replay``)."""

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from broker.cluster import replay
from broker.cluster.forward import Forwarder
from broker.cluster.giving import give_frame
from broker.cluster.link import ClusterLink
from broker.cluster.parked import ParkedFrames
from broker.cluster.replay import Replays
from broker.cluster.routes import BUCKET, RouteAnnouncer, RouteTable
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.router import LocalRouter, Message
from broker.session_store import MemorySessionStore
from nanoiot.settings import Settings
from tests.broker.cluster.parking import parked_payloads
from tests.logwatch import attached

WAIT = 10.0
FRAMES = 5
WINDOW = 30.0  # seconds a replay reads frames parked late (``cluster_handover_window``)
STOPPED_WITHIN = 5.0  # seconds: a replay that read on would take WINDOW


class _Purging(logging.Handler):
    """Set once a purge of parked frames logged what it did: purged, or waits (``seen``);
    purged (``done``)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = asyncio.Event()
        self.done = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "purged" in message:
            self.seen.set()
            if "readers are done" not in message:
                self.done.set()


@pytest.fixture
def purging() -> Iterator[_Purging]:
    with attached(_Purging(), "broker.cluster.parked") as handler:
        yield handler


async def _park(link: ClusterLink, parked: ParkedFrames, member: str, first: int = 0) -> None:
    """``FRAMES`` frames parked for ``member``, nobody listening for it, numbered from
    ``first``."""
    forwarder = Forwarder(link, 8 * 1024 * 1024, lambda _member: None)
    forwarder.parking = parked
    await forwarder.start()
    try:
        for number in range(first, first + FRAMES):
            confirmed = forwarder.forward([member], Message("t", b"%d" % number, 1), [member], {})
            assert confirmed is not None
            await asyncio.sleep(0)  # the turn ends: the frame leaves
            await asyncio.wait_for(confirmed, WAIT)
    finally:
        await forwarder.stop()


async def test_a_purge_waits_until_no_other_member_pins_the_frames(
    cluster_settings: Callable[..., Settings], purging: _Purging
) -> None:
    """Member b adopted what member a held and purges a's frames, while member c, which a
    client took one of a's sessions to, pinned them before its claim and reads them only
    now: c gets every frame, and the purge drops them once c's pin is gone."""
    adopter = await ClusterLink.connect(cluster_settings(node_name="b"))
    taker = await ClusterLink.connect(cluster_settings(node_name="c"))
    parked_b, parked_c = ParkedFrames(adopter, 1024 * 1024), ParkedFrames(taker, 1024 * 1024)
    try:
        await parked_b.start()
        await _park(adopter, parked_b, "a")
        pin = await parked_c.pin("a")
        assert await parked_b.pins("a") == {pin}  # seen from any member

        purge = asyncio.create_task(parked_b.purge("a", await parked_b.last("a")))
        await asyncio.wait_for(purging.seen.wait(), WAIT)  # it looked at the pins
        assert await parked_payloads(parked_c, "a") == [b"%d" % n for n in range(FRAMES)]
        assert not purge.done()

        await parked_c.unpin(pin)
        await asyncio.wait_for(purge, WAIT)
        assert await parked_b.last("a") == 0
        assert await parked_b.pins("a") == set()
    finally:
        await adopter.close()
        await taker.close()


async def test_pins_are_per_member_and_a_purge_without_any_is_at_once(
    cluster_settings: Callable[..., Settings], purging: _Purging
) -> None:
    """A pin on another gone member's frames does not hold this one's purge; unpinning a pin
    the server dropped already is no error."""
    link = await ClusterLink.connect(cluster_settings(node_name="b"))
    parked = ParkedFrames(link, 1024 * 1024)
    try:
        await parked.start()
        await _park(link, parked, "a")
        other = await parked.pin("d")
        await asyncio.wait_for(parked.purge("a", await parked.last("a")), WAIT)
        assert await parked.last("a") == 0
        await parked.unpin(other)
        await parked.unpin(other)  # gone already
        assert await parked.pins("d") == set()
    finally:
        await link.close()


async def test_a_replay_purges_only_the_frames_it_read(
    cluster_settings: Callable[..., Settings], purging: _Purging
) -> None:
    """Member a's replay of what b parked for it while it was away (at its start, or back
    from fencing) purges what it read once nobody pins it. Frames b parks for a after that
    replay's reading ended (a away again: a process stopped and run again, its replay's
    purge due as it runs) are not the replay's: they stay, for a's next replay to give its
    sessions, never dropped unread (their publishers were acknowledged)."""
    link_a = await ClusterLink.connect(cluster_settings(node_name="a"))
    link_b = await ClusterLink.connect(cluster_settings(node_name="b"))
    parked_a, parked_b = ParkedFrames(link_a, 1024 * 1024), ParkedFrames(link_b, 1024 * 1024)
    local = LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())
    announcer = RouteAnnouncer(await link_a.key_value(BUCKET), "a", RouteTable())
    replays = Replays(parked_a, announcer, local, window=0.5)
    try:
        await parked_b.start()
        await _park(link_b, parked_b, "a")
        pin = await parked_b.pin("a")  # b reads them too: a's purge waits for it
        replays.start("a", [], purge=True)
        await asyncio.wait_for(purging.seen.wait(), WAIT)  # read, its window over
        await _park(link_b, parked_b, "a", first=FRAMES)  # a away again
        await parked_b.unpin(pin)
        await asyncio.wait_for(purging.done.wait(), WAIT)
        later = [b"%d" % n for n in range(FRAMES, 2 * FRAMES)]
        assert await parked_payloads(parked_b, "a") == later
    finally:
        await replays.stop()
        await link_a.close()
        await link_b.close()


async def test_a_replay_under_way_as_its_member_fences_itself_off_purges_nothing(
    cluster_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Member a's replay (at its start: nothing parked for it yet) reads what b parks for it
    late, for its ``window``. A process stopped meanwhile reads on, as it runs again, what b
    parked for it while it was stopped, and fences itself off: the replay stops there and
    purges nothing. Those frames are a's new absence's, for its replay as it rejoins; read
    and purged by the old one, given to no session (a gave them all up), their messages
    would reach nobody though their publishers were acknowledged."""
    link_a = await ClusterLink.connect(cluster_settings(node_name="a"))
    link_b = await ClusterLink.connect(cluster_settings(node_name="b"))
    parked_a, parked_b = ParkedFrames(link_a, 1024 * 1024), ParkedFrames(link_b, 1024 * 1024)
    local = LocalRouter(MemorySessionStore(), Limits(), BrokerMetrics())
    announcer = RouteAnnouncer(await link_a.key_value(BUCKET), "a", RouteTable())
    replays = Replays(parked_a, announcer, local, window=WINDOW)
    read = asyncio.Event()
    frames: list[bytes] = []

    def reading(frame: bytes, *args: Any, **kwargs: Any) -> int:
        frames.append(frame)
        if len(frames) == FRAMES:
            read.set()
        return give_frame(frame, *args, **kwargs)

    monkeypatch.setattr(replay, "give_frame", reading)
    try:
        await parked_b.start()
        replays.start("a", [], purge=True)
        await _park(link_b, parked_b, "a")  # a away again, its replay still reading
        await asyncio.wait_for(read.wait(), WAIT)
        replays.fenced()
        async with asyncio.timeout(STOPPED_WITHIN):  # stopped: its pin taken away
            assert await parked_b.unpinned("a", "looked at")
        assert await parked_payloads(parked_b, "a") == [b"%d" % n for n in range(FRAMES)]
    finally:
        await replays.stop()
        await link_a.close()
        await link_b.close()
