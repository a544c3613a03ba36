"""When a watch says it has given the values there were at its start: decided from the last
revision there was, not from nats-py's marker; a watch remade after a reconnection gives each
revision once, in order, and is remade until NATS takes it (pure logic: scripted watchers)."""

import asyncio
from collections.abc import Iterator

import nats.errors
import pytest
from nats.js.kv import KeyValue as NatsKeyValue

from broker.cluster import watches
from broker.cluster.kv import Watch
from nanoiot.errors import ClusterUnavailableError


class Scripted:
    """nats-py's watcher giving ``items`` in order; a ``TimeoutError`` item times out."""

    def __init__(self, *items: object) -> None:
        self._items: Iterator[object] = iter(items)

    async def updates(self, timeout: float | None = 5.0) -> object:  # noqa: ASYNC109 (nats-py)
        item = next(self._items)
        if item is TimeoutError:
            assert timeout is not None, "waited for ever on a value that expired"
            raise nats.errors.TimeoutError
        return item


def entry(key: str, revision: int) -> NatsKeyValue.Entry:
    return NatsKeyValue.Entry("b", key, b"v", revision, None, None, None)


def watch(last: int, *items: object, held: bool = True) -> Watch:
    async def holds(_revision: int) -> bool:
        return held

    return Watch(Scripted(*items), "b", last, holds)  # type: ignore[arg-type]


async def test_nats_marker_before_the_start_values_is_not_the_end_of_them() -> None:
    w = watch(7, None, entry("a", 3), None, entry("b", 7), entry("c", 9))
    assert await w.next() == ("a", True)
    assert await w.next() == ("b", True)
    assert await w.next() is None  # after revision 7, the last there was
    assert await w.next() == ("c", True)


async def test_an_empty_start_ends_at_once() -> None:
    w = watch(0, entry("a", 3))
    assert await w.next() is None
    assert await w.next() == ("a", True)


async def test_a_last_value_that_expired_before_it_came_ends_the_start() -> None:
    w = watch(7, entry("a", 3), None, TimeoutError, held=False)
    assert await w.next() == ("a", True)
    assert await w.next() is None


async def test_a_last_value_still_there_is_waited_for() -> None:
    w = watch(7, TimeoutError, TimeoutError, entry("b", 7))
    assert await w.next() == ("b", True)
    assert await w.next() is None


class Remade(Scripted):
    """A watcher that can be stopped, as a remade watch stops the one it replaces."""

    stopped = False

    async def stop(self) -> None:
        self.stopped = True


async def test_a_remade_watch_gives_each_revision_once_in_order() -> None:
    """Remade after a reconnection, the new watcher starts after the last revision given; if
    it gives one again, it is skipped; what the old one held but had not given comes from the
    new one."""
    old = Remade(None, entry("a", 1), entry("b", 2), entry("c", 3))
    new = Remade(None, entry("a", 1), entry("b", 2), entry("c", 3), entry("d", 4))

    async def holds(_revision: int) -> bool:
        return True

    async def remade(start: int) -> Remade:
        assert start == 3  # after the last revision given
        return new

    w = Watch(old, "b", 0, holds, remade)  # type: ignore[arg-type]
    assert await w.next() is None
    assert await w.next() == ("a", True)
    assert await w.next() == ("b", True)
    await w.resume()
    assert old.stopped
    assert await w.next() == ("c", True)
    assert await w.next() == ("d", True)
    assert w.revision == 4


class Refused:
    """A watch whose remake NATS refuses ``refusals`` times (JetStream still recovering)."""

    def __init__(self, refusals: int) -> None:
        self.stopped = False
        self.refusals = refusals
        self.remade = asyncio.Event()

    async def resume(self) -> None:
        if self.refusals:
            self.refusals -= 1
            raise ClusterUnavailableError("JetStream not ready")
        self.remade.set()


async def test_a_refused_remake_is_tried_again_and_a_stopped_watch_is_not_remade(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watches, "RETRY_EVERY", 0.0)
    kept, stopped = Refused(2), Refused(0)
    open_watches = watches.OpenWatches()
    open_watches.add(kept)
    open_watches.add(stopped)
    open_watches.discard(stopped)
    open_watches.reconnected()
    async with asyncio.timeout(5):
        await kept.remade.wait()
    assert kept.refusals == 0
    assert not stopped.remade.is_set()
    await open_watches.close()
