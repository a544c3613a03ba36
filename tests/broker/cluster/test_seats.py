"""The devices bucket on the machine's NATS (``broker.cluster.seats``): the seats members hold
for a device, counted only for members live in the run that wrote them; a connect well under
the limit decided on the watched bucket without a request (nor waiting for the writer), one
near it by compare-and-set (of two members racing for the last seat, one gets it); the
writer's counts, many changes in one write, written again if another member dropped them, and
the key gone once no member holds a session;
NATS away: the local count decides, and what changed meanwhile is written once NATS is back;
a deleted key's marker is purged by the compaction of the cluster's buckets."""

import asyncio
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bench.seats_bench import member
from broker.cluster.compaction import Compaction
from broker.cluster.frames import to_key
from broker.cluster.kv import Entry, KeyValue
from broker.cluster.seat_view import Seat, decode, encode
from broker.cluster.seats import DeviceSeats
from nanoiot.errors import SessionQuotaExceeded
from nanoiot.settings import Settings
from tests.cluster.proxy import nats_proxy
from tests.natsserver import fresh_cluster_name, modern_nats

WAIT = 10.0
INTERVAL = 0.2
DEVICE = "device-1"


class Seated:
    """A member with its seats, whose table holds ``held`` sessions per device."""

    def __init__(self, seats: DeviceSeats, held: Counter[str]) -> None:
        self.seats = seats
        self.held = held

    async def reserve(self, limit: int) -> None:
        await self.seats.reserve(DEVICE, limit)
        self.held[DEVICE] += 1  # the session added to the table, as the registry does
        self.seats.changed(DEVICE)


@asynccontextmanager
async def seated(settings: Settings) -> AsyncIterator[Seated]:
    async with member(settings, INTERVAL, WAIT) as (seats, held):
        yield Seated(seats, held)


class Requests:
    """The requests a member's devices bucket makes (reads and writes), counted as they
    start; ``started`` is set by each."""

    def __init__(self, bucket: KeyValue) -> None:
        self.made = 0
        self.started = asyncio.Event()
        self._get, bucket.get = bucket.get, self.get  # type: ignore[method-assign]
        self._update, bucket.update = bucket.update, self.update  # type: ignore[method-assign]
        self._create, bucket.create = bucket.create, self.create  # type: ignore[method-assign]

    def _count(self) -> None:
        self.made += 1
        self.started.set()

    async def get(self, key: str) -> Entry | None:
        self._count()
        return await self._get(key)

    async def update(self, key: str, value: bytes, revision: int) -> int:
        self._count()
        return await self._update(key, value, revision)

    async def create(self, key: str, value: bytes) -> int:
        self._count()
        return await self._create(key, value)


async def until_seen(seats: DeviceSeats, holds: Callable[[dict[str, int]], bool]) -> None:
    """Until the member's view of the device's entry (member -> count) satisfies ``holds``."""
    seen = asyncio.Event()
    key = to_key(DEVICE)

    def check() -> None:
        if holds({name: seat[3] for name, seat in seats.view.seats(key).items()}):
            seen.set()

    told = seats.view._on_entry

    def on_entry(entry_key: str, entry: dict[str, Seat]) -> None:
        told(entry_key, entry)
        check()

    seats.view._on_entry = on_entry
    check()
    await asyncio.wait_for(seen.wait(), WAIT)
    seats.view._on_entry = told


async def until_seats(bucket: KeyValue, holds: Callable[[dict[str, int]], bool]) -> None:
    """Until the device's entry (member -> count; {} once deleted) satisfies ``holds``."""
    watch = await bucket.watch(to_key(DEVICE))
    try:
        async with asyncio.timeout(WAIT):
            seats: dict[str, int] = {}
            while True:
                change = await watch.value()  # None: every value there was at the start given
                if change is not None:
                    value = change[1]
                    seats = {} if value is None else {k: v[3] for k, v in decode(value).items()}
                if holds(seats):
                    return
    finally:
        await watch.stop()


async def test_seats_of_live_members_count_and_others_do_not(
    cluster_settings: Callable[..., Settings],
) -> None:
    async with (
        seated(cluster_settings(node_name="node-a")) as a,
        seated(cluster_settings(node_name="node-b")) as b,
    ):
        await a.seats.members.until_live("node-b", WAIT)
        await b.seats.members.until_live("node-a", WAIT)
        await a.reserve(2)
        await b.reserve(2)
        for member in (a, b):
            with pytest.raises(SessionQuotaExceeded):
                await member.seats.reserve(DEVICE, 2)
        # A member not live, and a live member's earlier run, hold no seats: only a's 1.
        bucket = b.seats.bucket
        entry = await bucket.get(to_key(DEVICE))
        assert entry is not None
        seats = decode(entry.value)
        old_b = seats["node-b"]
        seats["node-b"] = (old_b[0], old_b[1], old_b[2] - 1, 5)  # the run before this one
        seats["node-c"] = (os.getpid(), 1.0, 0, 5)
        await bucket.update(to_key(DEVICE), encode(seats), entry.revision)
        b.held[DEVICE] = 0
        await a.reserve(2)
        with pytest.raises(SessionQuotaExceeded):
            await a.seats.reserve(DEVICE, 2)


async def test_a_members_count_is_written_once_for_many_changes_and_dropped_at_zero(
    cluster_settings: Callable[..., Settings],
) -> None:
    async with seated(cluster_settings(node_name="node-a")) as a:
        bucket = a.seats.bucket
        for _ in range(3):  # a restore: many sessions in one turn, one write
            a.held[DEVICE] += 1
            a.seats.changed(DEVICE)
        await until_seats(bucket, lambda seats: seats == {"node-a": 3})
        entry = await bucket.get(to_key(DEVICE))
        assert entry is not None
        first = entry.revision
        a.held[DEVICE] = 0
        a.seats.changed(DEVICE)
        await until_seats(bucket, lambda seats: seats == {})
        assert await bucket.get(to_key(DEVICE)) is None
        # One write for the three sessions, then the delete.
        last = await bucket._last_revision(to_key(DEVICE))
        assert last == first + 1


async def test_nats_away_the_local_count_decides_and_the_count_is_written_when_back(
    cluster_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "broker.cluster.seats")
    with nats_proxy() as proxy:
        async with (
            seated(cluster_settings(node_name="node-a", nats_url=proxy.url)) as a,
            seated(cluster_settings(node_name="node-b")) as b,
        ):
            await a.seats.members.until_live("node-b", WAIT)
            await b.reserve(2)  # the cluster's count would refuse a's second
            link = a.seats.members.link
            lost, back = asyncio.Event(), asyncio.Event()
            link.on_lost(lost.set)
            link.on_reconnected(back.set)
            proxy.cut()
            try:
                await asyncio.wait_for(lost.wait(), WAIT)
                await a.reserve(2)
                await a.reserve(2)
                with pytest.raises(SessionQuotaExceeded):
                    await a.seats.reserve(DEVICE, 2)
            finally:
                proxy.restore()
            await asyncio.wait_for(back.wait(), WAIT)
            told = [
                r.getMessage()
                for r in caplog.records
                if r.name == "broker.cluster.seats" and r.levelno == logging.WARNING
            ]
            assert len(told) == 1, told  # once per outage
            assert "checked against this node's sessions" in told[0]
            await until_seats(b.seats.bucket, lambda seats: seats.get("node-a") == 2)


async def test_a_devices_key_deleted_leaves_a_marker_compaction_purges(tmp_path: Path) -> None:
    """On a nats-server 2.9.12 or later (a private 2.10), as the routes' and claims'."""
    with modern_nats(tmp_path) as url:
        settings = Settings(
            data_dir=tmp_path, nats_url=url, cluster_name=fresh_cluster_name(),
            node_name="node-a",
        )  # fmt: skip
        async with seated(settings) as a:
            bucket = a.seats.bucket
            a.held[DEVICE] = 1
            a.seats.changed(DEVICE)
            await until_seats(bucket, lambda seats: seats == {"node-a": 1})
            a.held[DEVICE] = 0
            a.seats.changed(DEVICE)
            await until_seats(bucket, lambda seats: seats == {})
            compaction = Compaction(a.seats.members.link.client, [bucket], every=0.0, kept=0.0)
            assert await compaction.compact() == 1
            js = a.seats.members.link.client.jetstream()
            info = await js.stream_info(f"KV_{bucket.bucket}")
            assert info.state.messages == 0


async def test_a_connect_well_under_the_limit_asks_nats_nothing_nor_waits_for_the_writer(
    cluster_settings: Callable[..., Settings],
) -> None:
    with nats_proxy() as proxy:
        async with (
            seated(cluster_settings(node_name="node-a", nats_url=proxy.url)) as a,
            seated(cluster_settings(node_name="node-b")) as b,
        ):
            await a.seats.members.until_live("node-b", WAIT)
            requests = Requests(a.seats.bucket)
            await a.reserve(100)  # the device's first session: one seat of 100 taken
            assert requests.made == 0
            await until_seen(b.seats, lambda seats: seats == {"node-a": 1})  # written after
            await until_seen(a.seats, lambda seats: seats == {"node-a": 1})
            # The session ends; its count's write is held on its way to NATS meanwhile.
            requests.started.clear()
            proxy.hold()
            try:
                a.held[DEVICE] = 0
                a.seats.changed(DEVICE)
                await asyncio.wait_for(requests.started.wait(), WAIT)
                made = requests.made
                await asyncio.wait_for(a.reserve(100), WAIT)  # a clean reconnect
                assert requests.made == made
            finally:
                proxy.release()
            await until_seats(b.seats.bucket, lambda seats: seats == {"node-a": 1})
        assert a.seats.decided_here == 2
        assert a.seats.asked == 0


async def test_near_the_limit_a_connect_asks_and_one_of_two_takes_the_last_seat(
    cluster_settings: Callable[..., Settings],
) -> None:
    async with (
        seated(cluster_settings(node_name="node-a")) as a,
        seated(cluster_settings(node_name="node-b")) as b,
    ):
        await a.seats.members.until_live("node-b", WAIT)
        await b.seats.members.until_live("node-a", WAIT)
        await a.reserve(3)  # a seat free for b's one more, and a's: decided on the view
        await until_seen(b.seats, lambda seats: seats == {"node-a": 1})
        await b.reserve(3)  # 1 + 1, one more of a's would fill it: asked
        await until_seen(a.seats, lambda seats: seats == {"node-a": 1, "node-b": 1})
        found = await asyncio.gather(a.reserve(3), b.reserve(3), return_exceptions=True)
        assert sorted(type(r).__name__ for r in found) == ["NoneType", "SessionQuotaExceeded"]
        assert (a.seats.decided_here, b.seats.decided_here) == (1, 0)
        assert a.seats.asked + b.seats.asked == 3


async def test_a_gone_members_seats_in_the_view_count_for_nobody(
    cluster_settings: Callable[..., Settings],
) -> None:
    async with seated(cluster_settings(node_name="node-a")) as a:
        # Written by node-c, gone (no members entry), and by node-a's run before this one.
        me = a.seats.members
        stale = {"node-c": (os.getpid(), 1.0, 0, 50), "node-a": (os.getpid(), me.started, -1, 48)}
        await a.seats.bucket.create(to_key(DEVICE), encode(stale))
        await until_seen(a.seats, lambda seats: seats.get("node-c") == 50)
        requests = Requests(a.seats.bucket)
        await a.reserve(3)  # neither counts: one seat of 3, decided on the view
        assert requests.made == 0
        await until_seats(a.seats.bucket, lambda seats: seats == {"node-a": 1})


async def test_a_seat_another_member_dropped_is_written_again(
    cluster_settings: Callable[..., Settings],
) -> None:
    async with seated(cluster_settings(node_name="node-a")) as a:
        a.held[DEVICE] = 1
        a.seats.changed(DEVICE)
        await until_seen(a.seats, lambda seats: seats == {"node-a": 1})
        # Another member, taking node-a as gone for a moment, wrote the key without its seat.
        bucket = a.seats.bucket
        entry = await bucket.get(to_key(DEVICE))
        assert entry is not None
        await bucket.update(to_key(DEVICE), encode({"node-c": (1, 1.0, 0, 1)}), entry.revision)
        await until_seats(bucket, lambda seats: seats.get("node-a") == 1)
