"""Which member settles a departure (``broker.cluster.wills``): the one whose entry for it in
``<cluster>_departures`` was created, as that entry itself says.

Every survivor of a member run tries to create the run's entry; NATS lets one create it.
The answer to a create can be lost (the request timed out while NATS was slow, or the
connection dropped) after NATS made the entry: that survivor cannot tell a lost race from its
own win, and the others all lost the race. So the entry's value names its creator, one value
per process (``creator``), and after any create that did not succeed the entry is read: it
names this process (won), another (lost, or done: ``DONE``), or is missing or unreadable
(undecided: try again later, the create included).

The process an entry names can die before it settled the departure (killed between the
create and ``DONE``, or while delayed wills were waiting: ``waiting``). Its work would never
be finished: so an entry naming a process that is no longer a live member (``owner``; the
caller says which are live) is taken over by compare-and-set at the revision read, as the
creation race is decided: one survivor's value replaces it, the others' updates conflict.
Survivors look for such entries when the process they name goes away
(``left_unsettled``), and whenever they lose the creation race to one.

What must not import: the broker's client or session modules (this only reads and writes
the departures bucket).
"""

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Final

from broker.cluster.kv import Entry, KeyValue
from nanoiot.errors import ClusterConflictError, ClusterError
from nanoiot.tasks import cancel_requested, cancellable

__all__ = [
    "DEPARTURES_KEPT", "DEPARTURE_KEPT_EVERY", "DEPARTURE_TRIED", "DONE", "creator",
    "departure_done", "departure_won", "keep_departure", "left_unsettled", "owner", "waiting",
]  # fmt: skip

log = logging.getLogger(__name__)

DEPARTURES_KEPT: Final = 24 * 3600.0  # seconds a departure's entry stays (bucket age)
# A departure's value once its wills and sessions are taken care of (never a ``creator``).
DONE: Final = b"done"
# Prefix of a departure's value while its sessions are taken care of but delayed wills wait
# on the process named after it (``waiting``).
_WAITING: Final = b"waiting "
# Seconds an undecided departure is tried again: half the entry's age, so that the entry a
# survivor made when it noticed the same departure (a few heartbeats earlier at most) is
# still there, and a late create here never succeeds after it aged out.
DEPARTURE_TRIED: Final = DEPARTURES_KEPT / 2
# Seconds between rewrites of a departure's entry while delayed wills of it wait on its
# settler (``keep_departure``): a quarter of the entry's age, so that it outlives a NATS
# outage of hours as well as a Will Delay Interval of days (MQTT 5 §3.1.3.2.2).
DEPARTURE_KEPT_EVERY: Final = DEPARTURES_KEPT / 4

Live = Callable[[str], bool]  # whether the process named (``owner``) is a live member


def creator(incarnation: str) -> bytes:
    """This process's value for the departures it creates: its run's name for operators,
    and a token of its own, since a member name and pid come back with a restarted process
    (a container's process is always pid 1), and its runs change with each fencing while a
    departure it created is still its own. Never the value a departure is marked done with."""
    return f"{incarnation} {secrets.token_hex(8)}".encode()


def waiting(value: bytes) -> bytes:
    """The value of a departure whose sessions the process with creator value ``value``
    took care of, while delayed wills of it still wait there."""
    return _WAITING + value


def owner(value: bytes) -> str | None:
    """The process (``<member>.<pid>-<start in ms>``, as ``creator`` was given it) a
    departure's value leaves its work to; None once it is done."""
    if value == DONE:
        return None
    return value.removeprefix(_WAITING).decode(errors="replace").split(" ", 1)[0]


async def departure_won(
    departures: KeyValue, run: str, value: bytes, live: Live = lambda _process: True
) -> bool | None:
    """Whether the process whose creator value is ``value`` won the departure of ``run``
    (made its entry, or took it over from a process not ``live`` any more); None while that
    cannot be known (NATS did not answer, or no entry was made)."""
    try:
        await departures.create(run, value)
        return True
    except ClusterConflictError:
        pass  # another survivor's entry, or this one's own create whose answer was lost
    except ClusterError as exc:
        log.info("%s: reading the departure of %s, which may have been made all the same",
                 exc, run)  # fmt: skip
    entry = await _read(departures, run)
    if entry is None:
        return None
    process = owner(entry.value)
    if entry.value in (value, waiting(value)) or process is None or live(process):
        return entry.value == value
    return await _take_over(departures, run, entry, value)


async def _read(departures: KeyValue, run: str) -> Entry | None:
    try:
        entry = await departures.get(run)
    except ClusterError as exc:
        log.warning("wills of %s not published yet: %s (tried again after the next heartbeat "
                    "written)", run, exc)  # fmt: skip
        return None
    if entry is None:
        log.warning("wills of %s not published yet: its departure has no entry (tried again "
                    "after the next heartbeat written)", run)  # fmt: skip
    return entry


async def _take_over(departures: KeyValue, run: str, entry: Entry, value: bytes) -> bool | None:
    """Replace ``entry``, left by a process that is gone, with ``value``: whether this
    process won; None while that cannot be known."""
    log.warning("the departure of %s was left unsettled by %s, gone since: taking it over",
                run, owner(entry.value))  # fmt: skip
    try:
        await departures.update(run, value, entry.revision)
        return True
    except ClusterConflictError:
        return False  # another survivor took it over (a take-over of its own: it names it)
    except ClusterError as exc:
        log.info("%s: reading the departure of %s, which may have been taken over all the "
                 "same", exc, run)  # fmt: skip
    again = await _read(departures, run)
    return None if again is None else again.value == value


async def left_unsettled(departures: KeyValue, process: str) -> list[str]:
    """The runs whose departure's entry leaves its work to ``process`` (``owner``)."""
    runs: list[str] = []
    watch = await departures.watch()
    try:
        while (change := await watch.value()) is not None:
            run, value = change
            if value is not None and owner(value) == process:
                runs.append(run)
    finally:
        await watch.stop()
    return runs


async def keep_departure(departures: KeyValue, run: str, value: bytes, every: float) -> None:
    """Write the departure of ``run`` again every ``every`` seconds while it is ``value`` (its
    settler's ``waiting``). The bucket drops an entry not written for ``DEPARTURES_KEPT``
    seconds, and the survivors of a settler that dies find what it left by its entries
    (``left_unsettled``): a will delayed past that age would never be published. Returns
    once the entry is another's (taken over, or done)."""
    while True:
        await asyncio.sleep(every)
        try:
            entry = await departures.get(run)
            if entry is None:  # aged out all the same (NATS away for longer than its age)
                await departures.create(run, value)
            elif entry.value == value:
                await departures.update(run, value, entry.revision)
            else:
                return
        except ClusterConflictError:
            return  # taken over meanwhile
        except ClusterError as exc:
            log.info("the departure of %s not written again: %s (tried again in %g s)",
                     run, exc, every)  # fmt: skip
        if cancel_requested():  # lost in nats-py's wait (``nanoiot.tasks``): stopping
            raise asyncio.CancelledError


async def departure_done(departures: KeyValue, run: str) -> None:
    """Return once the sessions of the departure of ``run`` are taken care of (``DONE``, or
    delayed wills still ``waiting``)."""
    watch = await departures.watch(run)
    try:
        while True:
            # None once: the values there were given. A stop's cancellation nats-py lost
            # (``nanoiot.tasks``) is raised: else its survivor waited for the departure.
            change = await cancellable(watch.value())
            value = None if change is None else change[1]
            if value is not None and (value == DONE or value.startswith(_WAITING)):
                return
    finally:
        await watch.stop()
