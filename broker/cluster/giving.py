"""The giving of a gone member's parked messages to the sessions taken from it.

A replay (``broker.cluster.replay``) reads the frames parked for a gone member and hands each
to ``give_frame``: its messages go to the taken sessions still here they were for (held with
the rest of what reaches them, ``broker.sessions.Arrival``), and its barriers are marked read
for the replay's ``Awaited``. Once the frames parked so far are given, ``release_held`` gives
each session what it held, sorted by id, which is each publisher's order (MQTT 3.1.1 §4.6).
Apart from the replay, which is about reading the stream and waiting for barriers; this is
about sessions and copies, and does no I/O of its own.

A member back after a while away may hold tens of thousands of parked messages for one
session. Giving them all in one go holds the event loop for as long (a store write and a
queue entry each), and meanwhile the member writes no heartbeat, answers no frame and
serves no keep-alive. So ``release_held`` gives them ``SLICE`` seconds of work at a time
and lets the loop run in between; until the last is given the session keeps holding, so
what reaches it meanwhile takes its place among the held in each publisher's order, never
ahead of them (``Arrival.release``).
"""

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from broker.cluster.arrivals import follow
from broker.cluster.barriers import Awaited
from broker.cluster.frames import decode
from broker.mqtt.expiry import for_connected_only
from broker.peer import SessionKey
from broker.router import LocalRouter
from broker.sessions import Arrival, BrokerSession
from nanoiot.errors import ClusterError

if TYPE_CHECKING:
    from broker.registry import Registry

__all__ = ["SLICE", "give_frame", "release_held", "release_held_now"]

log = logging.getLogger("broker.cluster.replay")  # a replay's lines, under the replay's name

SLICE: Final = 0.01  # seconds of giving held messages before the loop gets a turn
_STEP: Final = 64  # held messages given between looks at the clock


def give_frame(
    frame: bytes,
    sessions: dict[SessionKey, BrokerSession],
    local: LocalRouter,
    registry: "Registry | None",
    clock: Callable[[], float],
    awaited: Awaited | None = None,
) -> int:
    """A frame's messages to the sessions here they were for; its barriers for
    ``awaited``, read. How many copies were given."""
    try:
        records = list(decode(frame, clock()))
    except (ClusterError, UnicodeDecodeError) as exc:
        log.warning("a parked frame skipped: %s", exc)
        return 0
    given = 0
    for routed in records:
        if routed.barrier:
            if awaited is not None and routed.session == awaited.token:
                awaited.read(routed.message.topic, clock())  # from that member
            continue
        if for_connected_only(routed.message.properties):
            continue  # parked for a gone member, whose clients were not connected then
        if routed.session is not None:
            one = sessions.get(routed.session)
            targets = [] if one is None else [one]
        else:
            targets = list(sessions.values())
        for session in targets:
            if registry is None or registry.sessions.get(session.key) is not session:
                continue  # it moved on, or ended
            one_session_plain = routed.session is not None and not routed.groups
            if routed.plain or one_session_plain:
                local.deliver_to(session, routed.message)
            for group in routed.groups:
                local.deliver_to_group(session, routed.message, group)
            given += 1
    local.waits.clear()  # acknowledged when parked: nothing waits for these
    return given


async def release_held(
    sessions: list[BrokerSession], local: LocalRouter, registry: "Registry | None"
) -> None:
    """What each session held, given to it ``SLICE`` seconds of work at a time (the loop
    runs in between); its ``released`` done once what it waits for is committed. A session
    that moved on or ended meanwhile is let go (``released`` done, or failed if refused)."""
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
    """``release_held`` in one go, for a replay that cannot wait (cancelled as the member
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
