"""When a watch says it has given the values there were at its start: decided from the last
revision there was, not from nats-py's marker (pure logic: a scripted nats-py watcher)."""

from collections.abc import Iterator

import nats.errors
from nats.js.kv import KeyValue as NatsKeyValue

from broker.cluster.kv import Watch


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
