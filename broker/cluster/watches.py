"""The key-value watches a member keeps open, remade each time its connection to NATS is back.

A watch is a JetStream ordered consumer, held by the NATS server in memory: a server that
restarted has forgotten it, and nats-py makes it again only once its idle-heartbeat check
finds two 5 s heartbeats missed, so a watch stayed silent for up to ~20 s after the
reconnection (19 s measured). Meanwhile a member saw neither the other members' new runs nor
their new routes, and judged them by stale heartbeats. So on each reconnection every open
watch is remade from the revision after the last one it gave (``broker.cluster.kv.Watch``),
at once, and again until it is made while connected: JetStream may still be recovering its
streams when the client is back.
"""

import asyncio
import logging
from functools import partial
from typing import Final, Protocol

from nanoiot.errors import ClusterError
from nanoiot.tasks import cancel_all_and_wait, cancel_requested, cancellable

__all__ = ["OpenWatches"]

log = logging.getLogger(__name__)

# Seconds between attempts to remake a watch after a reconnection (JetStream not ready yet).
RETRY_EVERY: Final = 0.5


class Resumable(Protocol):
    stopped: bool

    async def resume(self) -> None: ...


class OpenWatches:
    """The watches open on one connection to NATS; ``reconnected`` remakes each of them."""

    def __init__(self) -> None:
        self._open: set[Resumable] = set()
        self._remaking: dict[Resumable, asyncio.Task[None]] = {}
        self._reconnections = 0  # a remake made before the last reconnection is made again

    def add(self, watch: Resumable) -> None:
        self._open.add(watch)

    def discard(self, watch: Resumable) -> None:
        """A stopped watch: not remade any more (a remake under way sees it stopped)."""
        self._open.discard(watch)

    def reconnected(self) -> None:
        self._reconnections += 1
        for watch in self._open:
            if watch not in self._remaking:
                task = asyncio.get_running_loop().create_task(
                    self._remake(watch), name="cluster watch remade"
                )
                self._remaking[watch] = task
                task.add_done_callback(partial(self._remade, watch))

    async def _remake(self, watch: Resumable) -> None:
        made = 0  # the reconnections the watch was remade after
        while made < self._reconnections and not watch.stopped:
            # nats-py's request (a consumer made) can swallow ``close``'s cancellation
            # (``nanoiot.tasks``): else, NATS closing, the remake was tried for ever.
            if cancel_requested():
                raise asyncio.CancelledError
            after = self._reconnections
            try:
                await cancellable(watch.resume())
                made = after
            except ClusterError as exc:
                log.debug("remaking a watch after the reconnection to NATS: %s", exc)
                await asyncio.sleep(RETRY_EVERY)  # JetStream recovering, or NATS lost again
            except Exception:  # not NATS being away: trying again would not help
                log.exception("remaking a watch after the reconnection to NATS")
                return

    def _remade(self, watch: Resumable, _task: "asyncio.Task[None]") -> None:
        self._remaking.pop(watch, None)

    async def close(self) -> None:
        """Stop remaking (the connection is closing). The watches are forgotten first: a
        close cancelled while it waits for a remake to end leaves none to remake on a later
        reconnection, and keeps its own cancellation (``cancel_all_and_wait``)."""
        self._open.clear()
        await cancel_all_and_wait(self._remaking.values())
