"""What the entry of a departure settled here says of how far its settling went
(``broker.cluster.survivor``): the creator's value while its wills are published and its
sessions adopted; ``waiting`` once the sessions are taken care of while delayed wills wait
here (the entry written again meanwhile, ``keep_departure``, so that it does not age out);
``DONE`` once none is left. A mark that could not be written (NATS lost) is written again
after the next heartbeat (``unmarked``); one whose entry another process took over meanwhile
is left to it.

What must not import: the broker's client or session modules (this only writes the
departures bucket).
"""

import asyncio
import logging

from broker.cluster.departure import DEPARTURE_KEPT_EVERY, DONE, keep_departure, owner, waiting
from broker.cluster.kv import KeyValue
from nanoiot.errors import ClusterError
from nanoiot.tasks import cancel_and_wait

__all__ = ["DepartureMarks"]

log = logging.getLogger(__name__)


class DepartureMarks:
    """The marks of the departures settled by the process whose creator value is
    ``creator``, and the delayed wills of each still waiting here."""

    def __init__(self, departures: KeyValue, creator: bytes) -> None:
        self.departures = departures
        self.creator = creator
        # Delayed wills waiting here by departure, and the departures marked ``waiting``.
        self.delayed: dict[str, int] = {}
        self._marked: set[str] = set()
        # Their entries, written again while they wait (``keep_departure``): every how many
        # seconds, and the task writing each.
        self.keep_every = DEPARTURE_KEPT_EVERY
        self._keeping: dict[str, asyncio.Task[None]] = {}
        # Departures settled here whose entry could not be marked (NATS lost): tried again.
        self._unmarked: set[str] = set()

    def unmarked(self) -> set[str]:
        """The departures settled here but not marked so, forgotten here: the caller marks
        them again (``settled``)."""
        unmarked, self._unmarked = self._unmarked, set()
        return unmarked

    def keeping(self) -> list["asyncio.Task[None]"]:
        """The tasks writing entries again, to cancel on a stop."""
        return list(self._keeping.values())

    async def settled(self, run: str) -> None:
        """Mark the departure of ``run``, settled here, ``DONE`` (or ``waiting`` while delayed
        wills wait here): the member, if it fenced itself off and is back, waits for this."""
        if not self.delayed.get(run):
            self.delayed.pop(run, None)
            await self._mark(run, DONE)
        elif await self._mark(run, waiting(self.creator)):
            self._marked.add(run)
            await self._not_kept(run)  # its departure taken back here
            self._keeping[run] = asyncio.get_running_loop().create_task(
                keep_departure(self.departures, run, waiting(self.creator), self.keep_every)
            )
            if not self.delayed.get(run):  # the last delayed will went out meanwhile
                await self._done(run)

    async def will_out(self, run: str) -> None:
        """A delayed will of ``run`` was published or dropped: done once none is left."""
        self.delayed[run] = left = self.delayed.get(run, 1) - 1
        if left <= 0 and run in self._marked:
            await self._done(run)

    async def _mark(self, run: str, value: bytes) -> bool:
        """Write ``value`` to the departure of ``run`` if it still names this process (not
        taken over by another while this one could not write, cut off from NATS)."""
        try:
            entry = await self.departures.get(run)
            if entry is None:  # aged out: a delay longer than the entry's age
                await self.departures.create(run, value)
            elif entry.value in (self.creator, waiting(self.creator)):
                await self.departures.update(run, value, entry.revision)
            else:
                log.info("the departure of %s was taken over by %s", run, owner(entry.value))
                return False
        except ClusterError as exc:
            log.warning("departure of %s not marked %s: %s (tried again after the next "
                        "heartbeat written)", run, value.decode(), exc)  # fmt: skip
            self._unmarked.add(run)
            return False
        return True

    async def _done(self, run: str) -> None:
        self.delayed.pop(run, None)
        self._marked.discard(run)
        await self._not_kept(run)  # no write of it under way to conflict with this one
        await self._mark(run, DONE)

    async def _not_kept(self, run: str) -> None:
        keeping = self._keeping.pop(run, None)
        if keeping is not None:
            await cancel_and_wait(keeping)
