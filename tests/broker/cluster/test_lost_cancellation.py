"""A node stops while one of its loops waits for NATS: nats-py's wait (JetStream's publish, a
key-value put) can swallow the cancellation (CPython gh-86296, ``nanoiot.tasks``), and the
loop went on (the parker back to waiting for frames, the route writer through every write
still queued, then waiting for more), so the node's stop waited for it forever: seen as a node
stopped right after restoring 2,000 sessions (6,000 route writes queued), or as another member
left. So did the loops that write a waiting departure again, look at the parked frames' age,
ask whether anything still listens for a gone member (for up to 10 minutes), or purge the
buckets' delete markers; and the watches that follow the members, the routes, a bucket for
compaction or a departure being settled, a watch's start (opening it, asking whether its last
value is still there), the remake of a watch as NATS closes, and a restore reading claims. And
a stop cancelled while it waited for such a loop to end went on as if it had not been (its
own cancellation swallowed with the loop's), or left its NATS connection open. Pure: NATS is
a stand-in that loses the cancellation as nats-py's wait does."""

import asyncio
import contextlib
from collections.abc import Coroutine
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, Protocol
from unittest.mock import AsyncMock

import nats.errors

from broker.cluster.compaction import Compaction
from broker.cluster.compaction import _follow as compaction_follow
from broker.cluster.departure import departure_done, keep_departure
from broker.cluster.kv import Entry, KeyValue, Watch
from broker.cluster.link import ClusterLink
from broker.cluster.members import MemberRegistry
from broker.cluster.parked_age import ParkedAge
from broker.cluster.parking import Parker
from broker.cluster.routes import RouteAnnouncer, RouteTable
from broker.cluster.seat_view import SeatView
from broker.cluster.silence import nobody_listens
from broker.cluster.watches import OpenWatches
from broker.restore import Restoration
from nanoiot.errors import ClusterUnavailableError

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


class _Entered(Protocol):
    entered: asyncio.Event  # set once the work waits where the cancellation is lost


async def _ends_once_cancelled(work: Coroutine[Any, Any, object], nats: _Entered) -> None:
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
    """A put (or a watch's remake) that swallows the cancellation, then takes its time to
    return (a slow NATS): the task that made it ends only once ``done`` is set."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.done = asyncio.Event()
        self.stopped = False  # as a watch

    async def resume(self) -> None:
        await self.put("", b"")

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

    def __init__(self, change: tuple[str, bytes | None] = ("devices-1", b"{}")) -> None:
        self.entered = asyncio.Event()
        self.revision = 1
        self.written_at = None
        self._change = change
        self._lost = False

    async def value(self) -> tuple[str, bytes | None] | None:
        if self._lost:
            await asyncio.Event().wait()  # nothing more comes
        self._lost = True
        self.entered.set()
        with contextlib.suppress(asyncio.CancelledError):  # swallowed
            await asyncio.Event().wait()
        return self._change

    async def next(self) -> tuple[str, bool] | None:
        change = await self.value()
        return None if change is None else (change[0], change[1] is not None)

    async def stop(self) -> None:
        pass


class _WatchedBucket:
    def __init__(self, watching: Any = None) -> None:
        self.watching = _LosingWatch() if watching is None else watching
        self.bucket = "test"

    async def watch(self, _keys: str = ">") -> Any:
        return self.watching


async def test_the_device_seats_watch_ends_even_if_a_read_lost_its_cancellation() -> None:
    """Seen as a node's stop that never returned (the seats view waited for the next value)."""
    bucket = _WatchedBucket()
    view = SeatView(bucket, lambda _key, _seats: None)  # type: ignore[arg-type]
    view.start()
    await asyncio.wait_for(bucket.watching.entered.wait(), WAIT)
    await asyncio.wait_for(view.stop(), WAIT)


async def test_the_members_watch_ends_even_if_a_read_lost_its_cancellation() -> None:
    """A node's stop waited for ever on the members watch (``MemberRegistry.stop``)."""
    link = SimpleNamespace(member="node-a", started=1.0)
    watch = _LosingWatch(("node-b", None))  # node-b left
    registry = MemberRegistry(link, _WatchedBucket(watch), 1.0)  # type: ignore[arg-type]
    await _ends_once_cancelled(registry._follow(watch), watch)  # type: ignore[arg-type]


async def test_the_routes_watch_ends_even_if_a_read_lost_its_cancellation() -> None:
    watch = _LosingWatch(("node-b.ZGV2aWNlcy9k", None))  # a route of node-b deleted
    announcer = RouteAnnouncer(_WatchedBucket(watch), "node-a", RouteTable())  # type: ignore[arg-type]
    await _ends_once_cancelled(announcer._follow(watch), watch)  # type: ignore[arg-type]


async def test_a_compaction_watch_ends_even_if_a_read_lost_its_cancellation() -> None:
    watch = _LosingWatch(("devices-1", None))
    await _ends_once_cancelled(compaction_follow(watch), watch)  # type: ignore[arg-type]


async def test_waiting_for_a_departure_ends_even_if_a_read_lost_its_cancellation() -> None:
    """A survivor (``run_ended``) waiting for another's settling, the departure not done."""
    watch = _LosingWatch(("node-b.1-1", b"node-c.2-2 token"))  # still being settled
    await _ends_once_cancelled(departure_done(_WatchedBucket(watch), "node-b.1-1"), watch)  # type: ignore[arg-type]


class _Silent:
    """nats-py's watcher of a bucket whose last value at the watch's start does not come
    yet: each wait times out."""

    def __init__(self) -> None:
        self.stopped = False

    async def updates(self, **_wait: float | None) -> object:  # nats-py: timeout=
        await asyncio.sleep(0.001)  # the RECHECK timeout, shortened
        raise nats.errors.TimeoutError

    async def stop(self) -> None:
        self.stopped = True


async def test_a_watch_ends_even_if_asking_for_its_last_value_lost_its_cancellation() -> None:
    """A watch's start: whether the start's last value is still in the bucket is asked of
    NATS (``Watch._holds``), a request that can swallow the cancellation; the watch waited
    on for that value (the departure waited for, for ever)."""
    asked = LosingCancellation()

    async def holds(_revision: int) -> bool:
        await asked.get("")
        return True  # still there: waited for

    watch = Watch(_Silent(), "departures", 5, holds)  # type: ignore[arg-type]
    await _ends_once_cancelled(departure_done(_WatchedBucket(watch), "run"), asked)  # type: ignore[arg-type]


async def test_a_watch_opened_as_its_cancellation_was_lost_is_closed_and_cancelled() -> None:
    watcher = _Silent()
    opening = LosingCancellation()

    async def watch(_keys: str) -> _Silent:
        await opening.get("")
        return watcher

    js = SimpleNamespace(get_last_msg=lambda *_a: asyncio.sleep(0, SimpleNamespace(seq=0)))
    bucket = KeyValue(SimpleNamespace(watch=watch), "departures", js)  # type: ignore[arg-type]
    task = asyncio.create_task(bucket.watch())
    async with asyncio.timeout(WAIT):
        await opening.entered.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=WAIT)
    assert task in done
    assert task.cancelled(), "the watch was opened for a task that was stopped"
    assert watcher.stopped


class _Resuming:
    """A watch remade as NATS closes: the request swallows the cancellation, then every
    attempt fails (NATS is closing)."""

    def __init__(self) -> None:
        self.stopped = False
        self.entered = asyncio.Event()

    async def resume(self) -> None:
        if not self.entered.is_set():
            self.entered.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
        raise ClusterUnavailableError("closing")


async def test_closing_ends_a_remake_of_a_watch_even_if_its_request_lost_its_cancellation() -> None:
    """The connection's close (``ClusterLink.close``) waited for a remake retried for ever."""
    watches, watch = OpenWatches(), _Resuming()
    watches.add(watch)
    watches.reconnected()
    async with asyncio.timeout(WAIT):
        await watch.entered.wait()
    closing = asyncio.create_task(watches.close())
    done, _ = await asyncio.wait({closing}, timeout=WAIT)
    assert closing in done, "the remake went on"


async def test_a_restore_ends_even_if_reading_the_claims_lost_its_cancellation() -> None:
    """A node stopped while it restored sessions, NATS going away: the old restore retried
    reading the page's claims until NATS was back."""
    claims = LosingCancellation()

    async def owned(_keys: list[object]) -> set[object]:
        await claims.get("")
        raise ClusterUnavailableError("NATS away")

    async def load_page(_after: str | None, _count: int) -> tuple[list[object], None]:
        return [SimpleNamespace(key=("d", "c"))], None

    registry = SimpleNamespace(ownership=SimpleNamespace(owned=owned), sessions={})
    restoration = Restoration(registry, SimpleNamespace(load_page=load_page))  # type: ignore[arg-type]
    await _ends_once_cancelled(restoration._run(), claims)


async def _cancel_while_remaking(watches: OpenWatches, close: Coroutine[Any, Any, None]) -> None:
    watch = SlowToEnd()
    watches.add(watch)
    watches.reconnected()
    async with asyncio.timeout(WAIT):
        await watch.entered.wait()
    closing = asyncio.create_task(close)
    await asyncio.sleep(0)  # a loop turn: the close waits for the remake now
    closing.cancel()
    watch.done.set()
    await asyncio.wait({closing}, timeout=WAIT)
    assert closing.cancelled(), "the close went on as if it had not been cancelled"


async def test_a_close_cancelled_while_a_remake_ends_closes_and_remakes_nothing_after() -> None:
    """A node's stop timed out as the link's close waited for a remake: the connection was
    left open, and a reconnection remade the watches the close kept."""
    client = AsyncMock(is_closed=False)
    link = ClusterLink(client, "nanoiot", "node-a")
    await _cancel_while_remaking(link._watches, link.close())
    client.close.assert_awaited_once()  # the connection to NATS closed
    link._watches.reconnected()
    assert not link._watches._remaking, "a watch was remade after the close"
