"""The frames parked for a gone member, given to the sessions taken from it.

Who takes a gone member's persistent sessions reads its parked frames back
(``broker.cluster.parked``): the survivor that adopts them (``SessionClaims.adopt``), a member
a client took its session to (``broker.cluster.arrivals``), or the member itself, restarted,
restoring its own (``SessionClaims.restored``) or back on NATS after a moment away (``own``).
As in a hand-over (``broker.cluster.handover``), a taken session may get a message two ways:
parked, and routed to it directly once the others' tables show its new member's filters. So:

1. Before the session can be routed to here, what reaches it is held
   (``broker.sessions.Arrival``), one copy per cluster-wide message id.
2. Its filters are written again; ``visible`` is the route table revision that shows them. A
   message routed at ``visible`` or later came directly, and its parked copy is not given.
   (Not for a member's own sessions: what was parked for it did not also come to it.)
3. The frames parked so far are read and their messages given to each session they match
   (held with the others); then what is held goes to the session sorted by id, which is each
   publisher's order (MQTT 3.1.1 §4.6), and QoS 2 once (§4.3.3).
4. Frames parked later (by members whose tables still named the gone member) are read for
   ``cluster_handover_window`` seconds more and given unless the session had them; the
   adopter and the restarted member then purge the gone member's parked frames.
"""

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

from auth.topics import split_shared
from broker.cluster.arrivals import follow
from broker.cluster.frames import decode
from broker.cluster.parked import ParkedFrames, Reader
from broker.cluster.routes import RouteAnnouncer
from broker.peer import SessionKey
from broker.router import LocalRouter
from broker.sessions import Arrival, BrokerSession
from nanoiot.errors import ClusterError
from nanoiot.tasks import cancel_and_wait

if TYPE_CHECKING:
    from broker.registry import Registry

__all__ = ["Replays"]

log = logging.getLogger(__name__)

READ_WITHIN: Final = 5.0  # seconds a parked frame known to be there may take to come
QUIET: Final = 0.2  # seconds without a parked frame after which a member's own are all in
QUIET_WITHIN: Final = 3.0  # seconds after which they are taken as all in anyway


class Replays:
    def __init__(
        self,
        parked: ParkedFrames,
        announcer: RouteAnnouncer,
        local: LocalRouter,
        window: float,
    ) -> None:
        self.parked = parked
        self.announcer = announcer
        self.local = local
        self.window = window
        self.registry: Registry | None = None
        self.replayed = 0  # parked messages given to taken sessions
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()

    def hold(self, sessions: Iterable[BrokerSession]) -> None:
        """From now on what reaches these sessions is held (step 1); called before their
        filters can be seen by anyone, in the turn they were taken in."""
        most = 2 * self.local.limits.max_queued_messages
        for session in sessions:
            if session.arrival is None:
                session.arrival = Arrival(most)

    def back(self) -> list[BrokerSession]:
        """This member is back on NATS after a moment away, its sessions still here: the
        others may have parked frames for it meanwhile (``broker.cluster.forward``). What
        reaches its persistent sessions is held from now on; ``start`` them once its next
        heartbeat is written (the others park for it until they see one)."""
        held = self.registry.sessions.values() if self.registry is not None else ()
        sessions = [session for session in held if session.persistent]
        self.hold(sessions)
        return sessions

    def start(
        self,
        gone: str,
        sessions: list[BrokerSession],
        *,
        purge: bool,
        caught_up: Callable[[], None] | None = None,
    ) -> None:
        """Replay ``gone``'s parked frames to ``sessions`` (held since ``hold``). With
        ``caught_up``, the caller releases what is held (its own hand-over) and is told when
        the frames parked so far are given; else they are released here."""
        work = self._replay(gone, sessions, purge, caught_up)
        task = self._loop.create_task(work, name=f"cluster replay of {gone}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            await cancel_and_wait(task)

    async def _replay(
        self,
        gone: str,
        sessions: list[BrokerSession],
        purge: bool,
        caught_up: Callable[[], None] | None,
    ) -> None:
        by_key = {session.key: session for session in sessions}
        arrivals = [(session, session.arrival) for session in sessions]
        released = False
        try:
            if caught_up is None and gone != self.parked.link.member:
                await self._visible(sessions)  # its own: a message came one way only
            last = await self.parked.last(gone)
            async with self.parked.reading(gone) as reader:
                quiet = QUIET if gone == self.parked.link.member else 0.0
                await self._catch_up(reader, last, by_key, quiet)
                released = True
                self._caught_up(sessions, caught_up)
                await self._follow(reader, by_key)
            if purge:
                await self.parked.purge(gone)
        except ClusterError as exc:
            log.warning("parked frames of member %s: %s", gone, exc)
        finally:
            if not released:
                self._caught_up(sessions, caught_up)
            self._loop.call_later(2 * self.window, _forget_arrivals, arrivals)

    async def _visible(self, sessions: list[BrokerSession]) -> None:
        """Step 2: the sessions' filters written again; their ``visible`` revision."""
        filters = {f for s in sessions for f in s.subscriptions if split_shared(f) is None}
        self.announcer.rewrite(sorted(filters))
        await self.announcer.written()
        visible = self.announcer.revision
        for session in sessions:
            if session.arrival is not None and session.arrival.visible is None:
                session.arrival.visible = visible

    async def _catch_up(
        self,
        reader: Reader,
        last: int,
        sessions: dict[SessionKey, BrokerSession],
        quiet: float,
    ) -> None:
        """Step 3: the frames parked up to sequence ``last``, given (held); then, for a
        member's own, those that keep coming until none did for ``quiet`` seconds (the
        others' last ones, parked before they saw its heartbeat and sent to it again)."""
        count, sequence = 0, 0
        until = self._loop.time() + QUIET_WITHIN  # what is held waits no longer for them
        while sequence < last or self._loop.time() < until:
            got = await reader.next(READ_WITHIN if sequence < last else quiet)
            if got is None:
                if sequence < last:
                    log.warning("parked frames: %d of up to %d read, the rest did not come",
                                count, last)  # fmt: skip
                break
            sequence, frame = got
            self._give(frame, sessions)
            count += 1
        if count:
            log.info("%d parked frames given to %d taken sessions", count, len(sessions))

    async def _follow(self, reader: Reader, sessions: dict[SessionKey, BrokerSession]) -> None:
        """Step 4: frames parked later, for ``window`` seconds."""
        deadline = self._loop.time() + self.window
        while (left := deadline - self._loop.time()) > 0:
            got = await reader.next(left)
            if got is not None:
                self._give(got[1], sessions)

    def _give(self, frame: bytes, sessions: dict[SessionKey, BrokerSession]) -> None:
        """A frame's messages to the sessions here they were for."""
        local, registry = self.local, self.registry
        try:
            records = list(decode(frame, self._loop.time()))
        except (ClusterError, UnicodeDecodeError) as exc:
            log.warning("a parked frame skipped: %s", exc)
            return
        for routed in records:
            if routed.barrier:
                continue
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
                self.replayed += 1
        local.waits.clear()  # acknowledged when parked: nothing waits for these

    def _caught_up(
        self, sessions: list[BrokerSession], caught_up: Callable[[], None] | None
    ) -> None:
        if caught_up is not None:
            caught_up()
            return
        local = self.local
        for session in sessions:
            arrival = session.arrival
            if arrival is None or arrival.held is None:
                continue
            held = arrival.release()
            registry = self.registry
            if registry is None or registry.sessions.get(session.key) is not session:
                arrival.released.set_result(None)
                continue
            durable = local.deliver_released(session, held)
            pending = local.store.pending_commit() if durable else None
            follow(arrival.released, [] if pending is None else [pending])
        local.waits.clear()


def _forget_arrivals(arrivals: list[tuple[BrokerSession, Arrival | None]]) -> None:
    """Late copies are no longer told apart (the window is over)."""
    for session, arrival in arrivals:
        if arrival is not None and session.arrival is arrival and arrival.held is None:
            session.arrival = None
