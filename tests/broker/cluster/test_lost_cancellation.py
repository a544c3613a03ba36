"""A node stops while one of its loops waits for NATS: nats-py's wait (JetStream's publish, a
key-value put) can swallow the cancellation (CPython gh-86296, ``nanoiot.tasks``), and the
loop went on (the parker back to waiting for frames, the route writer through every write
still queued, then waiting for more), so the node's stop waited for it forever: seen as a node
stopped right after restoring 2,000 sessions (6,000 route writes queued), or as another member
left. So did the loops that write a waiting departure again, look at the parked frames' age,
ask whether anything still listens for a gone member (for up to 10 minutes), or purge the
buckets' delete markers. And a stop cancelled while it waited for such a loop to end went on
as if it had not been (its own cancellation swallowed with the loop's). Pure: NATS is a
stand-in that loses the cancellation as nats-py's wait does."""

import asyncio
import contextlib
from collections.abc import Coroutine
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from broker.cluster.compaction import Compaction
from broker.cluster.departure import keep_departure
from broker.cluster.kv import Entry
from broker.cluster.parked_age import ParkedAge
from broker.cluster.parking import Parker
from broker.cluster.routes import RouteAnnouncer, RouteTable
from broker.cluster.seat_view import SeatView
from broker.cluster.silence import nobody_listens

WAIT = 5.0


class LosingCancellation:
    """Parks and puts nothing; a cancellation that comes while its first call waits is
    swallowed, and the call returns as if JetStream had the frame or the value."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def park(self, _member: str, _frame: bytes) -> None:
        await self._wait()

    async def put(self, _key: str, _value: bytes) -> int:
        await self._wait()
        return 1

    async def get(self, _key: str) -> Entry:
        await self._wait()
        return Entry(b"waiting", 1)

    async def update(self, _key: str, _value: bytes, _revision: int) -> int:
        return 2

    async def oldest(self, _member: str) -> datetime:
        await self._wait()
        return datetime.now(UTC)

    async def answers(self, _subject: str) -> bool:
        await self._wait()
        return True  # it still listens: asked again

    async def delete_markers(self, _older_than: float) -> list[tuple[str, int]]:
        await self._wait()
        return []

    async def purge(self, _markers: list[tuple[str, int]]) -> None:
        return None

    async def _wait(self) -> None:
        if self.entered.is_set():
            return  # the first call only waits
        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return


async def test_a_stop_while_a_frame_is_parked_ends_even_if_the_publish_lost_its_cancellation() -> (
    None
):
    parker = Parker(1 << 20, lambda _member: None)
    parking = LosingCancellation()
    parker.parking = parking  # type: ignore[assignment]
    parker._start_parker()
    parked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    parker._park("node-b", b"frame", parked)
    async with asyncio.timeout(WAIT):
        await parking.entered.wait()
    stopping = asyncio.create_task(parker._stop_parker())
    done, _ = await asyncio.wait({stopping}, timeout=WAIT)  # not awaited: the old parker never ends
    assert stopping in done, "the parker went on waiting for frames"
    assert parked.done()
    assert parked.exception() is None  # the publish returned: JetStream has it


async def test_a_stop_while_routes_are_written_ends_even_if_a_put_lost_its_cancellation() -> None:
    bucket = LosingCancellation()
    announcer = RouteAnnouncer(bucket, "node-a", RouteTable())  # type: ignore[arg-type]
    for n in range(3):  # queued behind the one on its way
        announcer.add(f"devices/d/in/{n}/+")
    writer = asyncio.create_task(announcer._write())
    async with asyncio.timeout(WAIT):
        await bucket.entered.wait()
    writer.cancel()
    done, _ = await asyncio.wait({writer}, timeout=WAIT)  # not awaited: the old one never ends
    assert writer in done, "the route writer went on"


async def _ends_once_cancelled(work: Coroutine[Any, Any, object], nats: LosingCancellation) -> None:
    """Run ``work`` until it waits in ``nats``, cancel it there: it must end."""
    task = asyncio.create_task(work)
    async with asyncio.timeout(WAIT):
        await nats.entered.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=WAIT)  # not awaited: the old loop never ends
    assert task in done, "the loop went on"


async def test_a_departure_written_again_ends_even_if_a_read_lost_its_cancellation() -> None:
    departures = LosingCancellation()
    await _ends_once_cancelled(
        keep_departure(departures, "run", b"waiting", 0.001),  # type: ignore[arg-type]
        departures,
    )


async def test_the_parked_age_watch_ends_even_if_a_look_lost_its_cancellation() -> None:
    parking = LosingCancellation()
    parker = SimpleNamespace(parking=parking, parked={"node-b"})
    age = ParkedAge(parker)  # type: ignore[arg-type]
    await _ends_once_cancelled(age.watch(every=0.001), parking)


async def test_asking_after_a_gone_member_ends_even_if_a_request_lost_its_cancellation() -> None:
    link = LosingCancellation()
    link.subject = lambda *tokens: ".".join(tokens)  # type: ignore[attr-defined]

    async def until_back(_member: str, _within: float) -> None:
        await asyncio.sleep(0)  # a loop turn, not a second: the asking goes on at once

    await _ends_once_cancelled(
        nobody_listens(link, "node-b", lambda _m: True, until_back),  # type: ignore[arg-type]
        link,
    )


async def test_compaction_ends_even_if_a_read_of_the_bucket_lost_its_cancellation() -> None:
    bucket = LosingCancellation()
    bucket.markers = None  # type: ignore[attr-defined]
    bucket.bucket = "routes"  # type: ignore[attr-defined]
    modern = SimpleNamespace(connected_server_version=SimpleNamespace(major=2, minor=10, patch=0))
    compaction = Compaction(modern, [bucket], every=0.001, kept=0.0)  # type: ignore[arg-type, list-item]
    await _ends_once_cancelled(compaction._run(), bucket)


class SlowToEnd:
    """A put that swallows the cancellation, then takes its time to return (a slow NATS):
    the task that made it ends only once ``done`` is set."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.done = asyncio.Event()

    async def put(self, _key: str, _value: bytes) -> int:
        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await self.done.wait()
        return 1


async def test_a_stop_cancelled_while_it_waits_for_the_route_writer_is_cancelled() -> None:
    """A node's stop bounded by a timeout (or itself cancelled) must not go on past it: the
    old stop swallowed its own cancellation with the writer's."""
    bucket = SlowToEnd()
    announcer = RouteAnnouncer(bucket, "node-a", RouteTable())  # type: ignore[arg-type]
    announcer.add("devices/d/in")
    writer = asyncio.create_task(announcer._write())
    announcer._tasks = [writer]
    async with asyncio.timeout(WAIT):
        await bucket.entered.wait()
    stopping = asyncio.create_task(announcer.stop())
    await asyncio.sleep(0)  # a loop turn: the stop waits for the writer now
    stopping.cancel()
    bucket.done.set()
    done, _ = await asyncio.wait({stopping}, timeout=WAIT)
    assert stopping in done
    assert stopping.cancelled(), "the stop went on as if it had not been cancelled"
    assert writer.done()


class _LosingWatch:
    """A watch whose first wait swallows a cancellation and gives a value, as nats-py's
    request inside a key-value watch can; later waits wait for good."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.revision = 1
        self._lost = False

    async def value(self) -> tuple[str, bytes | None] | None:
        if self._lost:
            await asyncio.Event().wait()  # nothing more comes
        self._lost = True
        self.entered.set()
        with contextlib.suppress(asyncio.CancelledError):  # swallowed
            await asyncio.Event().wait()
        return ("devices-1", b"{}")

    async def stop(self) -> None:
        pass


class _WatchedBucket:
    def __init__(self) -> None:
        self.watching = _LosingWatch()

    async def watch(self) -> _LosingWatch:
        return self.watching


async def test_the_device_seats_watch_ends_even_if_a_read_lost_its_cancellation() -> None:
    """Seen as a node's stop that never returned (the seats view waited for the next value)."""
    bucket = _WatchedBucket()
    view = SeatView(bucket, lambda _key, _seats: None)  # type: ignore[arg-type]
    view.start()
    await asyncio.wait_for(bucket.watching.entered.wait(), WAIT)
    await asyncio.wait_for(view.stop(), WAIT)
