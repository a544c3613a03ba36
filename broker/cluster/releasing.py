"""The giving of what an arriving session held (``broker.sessions.Arrival``) once nothing
older can still come for it: its hand-over's barriers all came (``broker.cluster.arrivals``),
or a gone member's parked frames were read (``broker.cluster.replay``).

The held messages go to the session sorted by id, which is each publisher's order (MQTT 3.1.1
§4.6). A session taken from a member that was away may hold tens of thousands of them: given
all in one go, they would hold the event loop for as long (a store write and a queue entry
each), and meanwhile the member writes no heartbeat, answers no frame and serves no
keep-alive. So ``release_held`` gives them ``SLICE`` seconds of work at a time and lets the
loop run in between; until the last is given the session keeps holding, so what reaches it
meanwhile takes its place among the held in each publisher's order, never ahead of them
(``Arrival.release``). This does no I/O of its own.
"""

import asyncio
from typing import TYPE_CHECKING, Final

from broker.cluster.confirmations import all_of, fail
from broker.router import LocalRouter
from broker.sessions import Arrival, BrokerSession

if TYPE_CHECKING:
    from broker.registry import Registry

__all__ = ["SLICE", "follow", "release_held", "release_held_now"]

SLICE: Final = 0.01  # seconds of giving held messages before the loop gets a turn
_STEP: Final = 64  # held messages given between looks at the clock


async def release_held(
    sessions: list[BrokerSession], local: LocalRouter, registry: "Registry | None"
) -> None:
    """What each session held, given to it ``SLICE`` seconds of work at a time (the loop
    runs in between); its ``released`` done once what it waits for is committed. A session
    that moved on or ended meanwhile is let go (``released`` done, or failed if refused).
    Cancelled, what is left is given at once (``release_held_now``): nothing stays held."""
    try:
        await _release_held(sessions, local, registry)
    finally:
        release_held_now(sessions, local, registry)  # nothing left once all was given


async def _release_held(
    sessions: list[BrokerSession], local: LocalRouter, registry: "Registry | None"
) -> None:
    loop = asyncio.get_running_loop()
    for session in sessions:
        arrival = session.arrival
        if arrival is None or arrival.held is None:
            continue
        pending: list[asyncio.Future[None]] = []
        while True:
            if registry is None or registry.sessions.get(session.key) is not session:
                arrival.release()
                if not arrival.released.done():
                    arrival.released.set_result(None)
                break
            if _give_slice(session, arrival, local, loop.time() + SLICE):
                committing = local.store.pending_commit()
                if committing is not None and committing not in pending:
                    pending.append(committing)
            if arrival.held is None:  # all given: the session holds no more
                follow(arrival.released, pending)
                break
            await asyncio.sleep(0)
            if arrival.held is None:  # refused meanwhile (it moved on): released failed
                break


def _give_slice(session: BrokerSession, arrival: Arrival, local: LocalRouter, until: float) -> bool:
    """Held messages given to ``session`` in order until ``until`` (loop time) or all
    are; True if the store was written."""
    clock = asyncio.get_running_loop().time
    durable = False
    while arrival.held is not None and clock() < until:
        durable |= local.deliver_released(session, arrival.release(_STEP))
    local.waits.clear()
    return durable


def release_held_now(
    sessions: list[BrokerSession], local: LocalRouter, registry: "Registry | None"
) -> None:
    """``release_held`` in one go, for a release that cannot wait (cancelled as the member
    stops): what is held is not left held."""
    for session in sessions:
        arrival = session.arrival
        if arrival is None or arrival.held is None:
            continue
        held = arrival.release()
        if registry is None or registry.sessions.get(session.key) is not session:
            if not arrival.released.done():
                arrival.released.set_result(None)
            continue
        durable = local.deliver_released(session, held)
        pending = local.store.pending_commit() if durable else None
        follow(arrival.released, [] if pending is None else [pending])
    local.waits.clear()


def follow(waiting: "asyncio.Future[None]", futures: list["asyncio.Future[None]"]) -> None:
    """``waiting`` done once ``futures`` are (failed if one failed)."""
    combined = all_of(list(futures))
    if combined is None:
        waiting.set_result(None)
        return

    def done(finished: "asyncio.Future[None]") -> None:
        if finished.cancelled() or finished.exception() is not None:
            fail(waiting, "a held message was not delivered")
        elif not waiting.done():
            waiting.set_result(None)

    combined.add_done_callback(done)
