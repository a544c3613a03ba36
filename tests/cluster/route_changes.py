"""What NATS records of one member's routes (``broker.cluster.routes``), for a test to check:
a route deleted then written again is back in the key-value bucket a moment later, and a
message published elsewhere in that moment matches no route, so the end state alone says
nothing. ``RouteChanges`` watches the member's keys from a thread of its own (the test's
clients are paho, threaded) and keeps every put and delete NATS delivers, in order."""

import asyncio
import threading
from typing import Self

import nats

from broker.cluster.frames import from_key
from tests.natsserver import NATS_URL, WAIT

_DELETES = ("DEL", "PURGE")  # the operations of a key-value entry that remove the key


class RouteChanges:
    """The changes to ``member``'s routes in cluster ``cluster_name`` from ``__enter__`` to
    ``__exit__``: (topic filter, present) each, in the bucket's order."""

    def __init__(self, cluster_name: str, member: str) -> None:
        self._bucket = f"{cluster_name}_routes"
        self._prefix = member + "."
        self.changes: list[tuple[str, bool]] = []
        self.held: set[str] = set()  # the filters the bucket held at ``__enter__``
        self._changed = threading.Condition()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def kept(self, topic_filter: str) -> bool:
        """Whether the bucket held ``topic_filter`` from ``__enter__`` on (there then, or
        first written), never deleted."""
        with self._changed:
            changes = [present for name, present in self.changes if name == topic_filter]
        there = topic_filter in self.held or changes[:1] == [True]
        return there and False not in changes

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(WAIT), "the routes bucket was not watched"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(WAIT)

    def _main(self) -> None:
        try:
            asyncio.run(self._watching())
        except BaseException as error:  # raised again in the test's thread, if not ready
            self._error = error
            self._ready.set()

    async def _watching(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        client = await nats.connect(NATS_URL)
        try:
            bucket = await client.jetstream().key_value(self._bucket)
            watcher = await bucket.watch(self._prefix + ">", include_history=False)
            current = True  # the values the bucket held already come first: not changes
            while True:
                try:
                    entry = await watcher.updates(timeout=3600)  # type: ignore[no-untyped-call]
                except nats.errors.TimeoutError:
                    continue
                if entry is None:  # the end of those: every change from now on follows
                    current = False
                    self._ready.set()
                    continue
                topic_filter = from_key(entry.key[len(self._prefix) :])
                if current:
                    if entry.operation not in _DELETES:
                        self.held.add(topic_filter)
                    continue
                with self._changed:
                    self.changes.append((topic_filter, entry.operation not in _DELETES))
                    self._changed.notify_all()
        except asyncio.CancelledError:
            pass
        finally:
            await client.close()
