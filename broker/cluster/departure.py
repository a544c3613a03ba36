"""Which member settles a departure (``broker.cluster.wills``): the one whose entry for it in
``<cluster>_departures`` was created, as that entry itself says.

Every survivor of a member run tries to create the run's entry; NATS lets one create it.
The answer to a create can be lost (the request timed out while NATS was slow, or the
connection dropped) after NATS made the entry: that survivor cannot tell a lost race from its
own win, and the others all lost the race. So the entry's value names its creator, one value
per process (``creator``), and after any create that did not succeed the entry is read: it
names this process (won), another (lost, or done: ``DONE``), or is missing or unreadable
(undecided: try again later, the create included).

What must not import: the broker's client or session modules (this only reads and writes
the departures bucket).
"""

import logging
import secrets
from typing import Final

from broker.cluster.kv import KeyValue
from nanoiot.errors import ClusterConflictError, ClusterError

__all__ = [
    "DEPARTURES_KEPT", "DEPARTURE_TRIED", "DONE", "creator", "departure_done", "departure_won",
]  # fmt: skip

log = logging.getLogger(__name__)

DEPARTURES_KEPT: Final = 24 * 3600.0  # seconds a departure's entry stays (bucket age)
# A departure's value once its wills and sessions are taken care of (never a ``creator``).
DONE: Final = b"done"
# Seconds an undecided departure is tried again: half the entry's age, so that the entry a
# survivor made when it noticed the same departure (a few heartbeats earlier at most) is
# still there, and a late create here never succeeds after it aged out.
DEPARTURE_TRIED: Final = DEPARTURES_KEPT / 2


def creator(incarnation: str) -> bytes:
    """This process's value for the departures it creates: its run's name for operators,
    and a token of its own, since a member name and pid come back with a restarted process
    (a container's process is always pid 1), and its runs change with each fencing while a
    departure it created is still its own. Never the value a departure is marked done with."""
    return f"{incarnation} {secrets.token_hex(8)}".encode()


async def departure_won(departures: KeyValue, run: str, value: bytes) -> bool | None:
    """Whether the process whose creator value is ``value`` won the departure of ``run``;
    None while that cannot be known (NATS did not answer, or no entry was made)."""
    try:
        await departures.create(run, value)
        return True
    except ClusterConflictError:
        pass  # another survivor's entry, or this one's own create whose answer was lost
    except ClusterError as exc:
        log.info("%s: reading the departure of %s, which may have been made all the same",
                 exc, run)  # fmt: skip
    try:
        entry = await departures.get(run)
    except ClusterError as exc:
        log.warning("wills of %s not published yet: %s (tried again after the next heartbeat "
                    "written)", run, exc)  # fmt: skip
        return None
    if entry is None:
        log.warning("wills of %s not published yet: its departure has no entry (tried again "
                    "after the next heartbeat written)", run)  # fmt: skip
        return None
    return entry.value == value


async def departure_done(departures: KeyValue, run: str) -> None:
    """Return once the departure of ``run`` is marked done (``DONE``)."""
    watch = await departures.watch(run)
    try:
        while True:
            change = await watch.value()  # None once: the values there were given
            if change is not None and change[1] == DONE:
                return
    finally:
        await watch.stop()
