"""The giving of a gone member's parked messages to the sessions taken from it.

A replay (``broker.cluster.replay``) reads the frames parked for a gone member and hands each
to ``give_frame``: its messages go to the taken sessions still here they were for (held with
the rest of what reaches them, ``broker.sessions.Arrival``), and its barriers are marked read
for the replay's ``Awaited``. Once the frames parked so far are given, what each session held
is given to it a part at a time (``broker.cluster.releasing``). Apart from the replay, which
is about reading the stream and waiting for barriers; this is about sessions and copies, and
does no I/O of its own.
"""

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from broker.cluster.barriers import Awaited
from broker.cluster.frames import decode
from broker.mqtt.expiry import for_connected_only
from broker.peer import SessionKey
from broker.router import LocalRouter
from broker.sessions import BrokerSession
from nanoiot.errors import ClusterError

if TYPE_CHECKING:
    from broker.registry import Registry

__all__ = ["give_frame"]

log = logging.getLogger("broker.cluster.replay")  # a replay's lines, under the replay's name


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
