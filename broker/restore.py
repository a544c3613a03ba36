"""Persistent sessions of the previous run, restored behind an open listener.

Reading 10^5 sessions with their subscriptions and messages takes seconds; devices should not
wait for it. The listener opens first and ``Restoration`` reads the sessions a page at a time
in the background, yielding to connections between pages. Two rules keep that invisible to
clients (MQTT 3.1.1 §3.1.2.4: a persistent session keeps its subscriptions and messages):

- A client that connects meanwhile gets its own session, complete: ``claim`` reads that one
  from the store before the take-over, and the pages skip it afterwards. Never an empty one.
- What connected clients send is read only once every session is in (``MqttClient`` pauses
  reading, and wills wait too), so no message published meanwhile misses a persistent
  subscriber whose session is not restored yet.

In a cluster the store holds every member's sessions: a member restores only those it holds
(``Registry.ownership``), the others stay with their members. Which those are is read once,
as the restore starts; a device that connects to another member meanwhile takes its session
from this one (``Registry.hand_over``, MQTT 3.1.1 §3.1.4: one live connection), and the
pages skip it afterwards (``taken``): restored here too, it would be held by two members,
routed to on both, and its copy here would queue messages its client never gets.
"""

import asyncio
import logging
import time
from typing import Final

from broker.peer import SessionKey
from broker.registry import Registry
from broker.session_store import SessionStore
from broker.sessions import BrokerSession
from nanoiot.errors import ClusterError, StoreError
from nanoiot.tasks import cancel_and_wait, cancel_requested

log = logging.getLogger(__name__)

PAGE: Final = 1000  # sessions per read: the loop serves connections between pages
_RETRY_FIRST, _RETRY_MAX = 0.2, 5.0  # seconds between attempts while the store fails


class Restoration:
    def __init__(self, registry: Registry, store: SessionStore) -> None:
        self._registry = registry
        self._store = store
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Restored ahead of the pages, or taken by another member: the pages skip them.
        self._claimed: set[SessionKey] = set()
        self.sessions = 0
        self.messages = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="restore sessions")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        if not self.done.done():
            self.done.cancel()

    def pending(self) -> "asyncio.Future[None] | None":
        """Done once every session is restored; None if that is so already."""
        return None if self.done.done() else self.done

    async def claim(self, key: SessionKey) -> None:
        """Restore the session stored under ``key`` now, ahead of its page (a client takes
        it over). Raises StoreError when the store cannot be read."""
        if self.done.done() or key in self._registry.sessions or key in self._claimed:
            return
        self._claimed.add(key)
        try:
            session = await self._store.load_one(key)
        except BaseException:
            self._claimed.discard(key)  # its page restores it, or a retry of the connect
            raise
        if session is not None and key not in self._registry.sessions:
            self._adopt([session])

    def taken(self, key: SessionKey) -> None:
        """Another member took the session stored under ``key`` (its client connected
        there): it is not restored here, whatever the claims read at the start said."""
        if not self.done.done():
            self._claimed.add(key)

    async def _run(self) -> None:
        started = time.monotonic()
        after: str | None = None
        delay = _RETRY_FIRST
        while True:
            # A page's claims are read from NATS (``Ownership.owned``), whose waits can swallow
            # the stop's cancellation (``nanoiot.tasks``): else restored on, or retried for
            # ever while NATS is away.
            if cancel_requested():
                raise asyncio.CancelledError
            try:
                page, after_next = await self._page(after)
            except (StoreError, ClusterError) as exc:
                log.warning("restoring sessions: %s (retrying in %g s)", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            delay = _RETRY_FIRST
            # One a client claimed meanwhile is restored, and may have changed since.
            self._adopt([s for s in page if s.key not in self._claimed])
            if after_next is None:
                break
            after = after_next
            await asyncio.sleep(0)  # connections in between pages
        self._claimed.clear()
        if self._registry.ownership is not None:
            self._registry.ownership.restoration_done()
        self.done.set_result(None)
        if self.sessions:
            log.info("restored %d persistent sessions, %d messages, in %.1f s",
                     self.sessions, self.messages, time.monotonic() - started)  # fmt: skip

    async def _page(self, after: str | None) -> tuple[list[BrokerSession], str | None]:
        """The next page of stored sessions, of those this member holds."""
        page, after_next = await self._store.load_page(after, PAGE)
        ownership = self._registry.ownership
        if ownership is not None and page:
            mine = await ownership.owned([s.key for s in page])
            page = [s for s in page if s.key in mine]
        return page, after_next

    def _adopt(self, sessions: list[BrokerSession]) -> None:
        fresh = [s for s in sessions if s.key not in self._registry.sessions]
        fresh = self._registry.restore(fresh)
        if self._registry.ownership is not None and fresh:
            self._registry.ownership.restored(fresh)
        self.sessions += len(fresh)
        self.messages += sum(len(s.inflight) + len(s.queue) for s in fresh)
