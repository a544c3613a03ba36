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
3. Every member is asked for a *barrier* once its table is at ``visible``
   (``broker.cluster.handover``; a client's taking asks with its own notice): each parks one
   for the gone member behind whatever it parked for it, and sends one here directly. A
   member whose table lagged may still be parking frames routed with its older table after
   the others' tables show the session here; its barrier in the stream says none is left.
4. The frames parked so far are read, up to the last one there when the reading began and
   then until every member's barrier is read among them (those up to that last one asked
   of the stream's leader if the reader's copy lags, ``broker.cluster.parked``), and their
   messages given to each session they match (held with the others,
   ``broker.cluster.giving``); then what is held goes to the session sorted by id, which is
   each publisher's order (MQTT 3.1.1 §4.6), and QoS 2 once (§4.3.3); a part at a time,
   the loop running in between (a backlog of tens of thousands would otherwise stop the
   member's heartbeat). A member's barrier is waited for ``HOLD_WITHIN`` seconds from the
   asking (a member that died answers none), and past that, while the member is live and
   gave no barrier yet, up to ``cluster_handover_window`` seconds from the asking (a live
   member whose table lags parks for the gone member until its table shows the session
   here: ``broker.cluster.liveness``); or ``READ_WITHIN`` seconds from its direct one (its
   parked one is queued behind its frames, which JetStream takes one at a time); then given
   up once no frame came for a moment (or ``READ_WITHIN`` more while frames keep coming).
5. Frames parked later (copies of messages routed with tables that also showed the session
   here, or from a member given up in step 4) are read for ``cluster_handover_window``
   seconds more and given unless the session had them; the adopter and the restarted
   member then purge the gone member's parked frames they read, once no other member
   reads them. Not those parked since: the member may be away again by then (a stopped
   process run again after its replay's window), and its next replay gives them.

A member that fences itself off (``broker.cluster.fence``) stops the replays it has under
way (``fenced``): it gave their sessions up, and a replay's reading may reach into the
member's new absence (a process stopped during a replay's step 5, its own at start-up
included, reads on as it runs again what the others parked for it meanwhile): read, given to
sessions no longer held, then purged, those frames' messages would reach nobody though their
publishers were acknowledged. Stopped, it purges nothing: the replay as the member rejoins
reads them all.

A replay pins the frames it reads from its start to its end (``broker.cluster.parked``); a
client's taking pins them before its claim (``pin_taken``), so that an adopter that finds
the session taken cannot purge them before they are read for it. A session taken from a
member that had not given it a gone member's parked frames yet (an adopter, from its claim
until its replay for the session ended) takes them along: that member pins the frames for
it and names them in its take-over answer (``Owed.handing_over``), and the session's new member
reads them for it as for a session taken from the gone member itself (``taken_with``).

A member's own sessions (restored, or back on NATS) are asked for barriers too, but no
``visible`` is set for them (what was parked for it did not also come to it), and the
others park for it until they see its heartbeat, which a member whose view lags sees late.
So a member still parking for it parks a barrier that says so, and, once it no longer does
(all it parked in JetStream), sends one directly: that one counts as read once the reader
is at the stream's last sequence as of its coming (``broker.cluster.barriers``). The
reading goes on while frames keep coming, and ``READ_WITHIN`` seconds after the last.
"""

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Final

from auth.topics import split_shared
from broker.cluster.arrivals import forget_arrivals
from broker.cluster.barriers import READ_WITHIN, Awaited
from broker.cluster.giving import give_frame
from broker.cluster.liveness import Hearing, unheard
from broker.cluster.parked import Owed, ParkedFrames, Reader
from broker.cluster.releasing import release_held, release_held_now
from broker.cluster.routes import RouteAnnouncer
from broker.peer import SessionKey
from broker.router import LocalRouter
from broker.sessions import Arrival, BrokerSession
from nanoiot.errors import ClusterError
from nanoiot.tasks import cancel_and_wait, cancel_requested

if TYPE_CHECKING:
    from broker.registry import Registry

__all__ = ["Replays"]

log = logging.getLogger(__name__)

POLL: Final = 0.2  # seconds between looks at a member's own barriers while no frame comes
UNTAKEN: Final = 60.0  # seconds a taking's pin waits for its replay at most


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
        self.heard: Hearing = unheard  # the members' heartbeats (``MemberRegistry.heard``)
        self.replayed = 0  # parked messages given to taken sessions
        # Asks every member for a barrier for a token behind what it parked for a gone
        # member, once its table is at a revision; the members asked (``Arrivals``).
        self.ask: Callable[[SessionKey, str, int], set[str]] | None = None
        self._awaited: dict[SessionKey, Awaited] = {}  # by token
        self._adoptions = 0
        self._pins: dict[SessionKey, tuple[str, str]] = {}  # by session: (gone member, pin)
        self.owed = Owed(parked)  # sessions not given their gone member's frames yet
        self._tasks: set[asyncio.Task[None]] = set()
        self._replaying: set[asyncio.Task[None]] = set()  # replays under way (``fenced``)
        self.fencings = 0  # this member's fencings: a replay begun before one purges nothing
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
        token: SessionKey | None = None,
        asked: Iterable[str] = (),
    ) -> None:
        """Replay ``gone``'s parked frames to ``sessions`` (held since ``hold``). With
        ``caught_up``, the caller releases what is held (its own hand-over, which asked the
        members ``asked`` for barriers for ``token``) and is told when the frames parked so
        far are given; else they are released here."""
        for session in sessions:
            self.owed.adopting(session.key, gone, again=False)
        awaited = None if token is None else self._await(token, asked)
        pin = self._pins.pop(token, None) if token is not None else None
        if pin is not None and pin[0] != gone:
            self._unpin(pin[1])
            pin = None
        work = self._replay(gone, sessions, purge, caught_up, awaited, pin[1] if pin else None)
        replaying = self._spawn(work, f"cluster replay of {gone}")
        self._replaying.add(replaying)
        replaying.add_done_callback(self._replaying.discard)

    def fenced(self) -> None:
        """This member fenced itself off, its sessions given up: the replays under way stop,
        and purge nothing (module docstring)."""
        self.fencings += 1
        for replaying in list(self._replaying):
            replaying.cancel()

    async def pin_taken(self, key: SessionKey, gone: str) -> None:
        """Session ``key`` is being taken from ``gone``, before its claim replaces
        ``gone``'s: ``gone``'s frames pinned until its replay (``start``) reads them, or
        ``UNTAKEN`` seconds if none starts (the connect failed)."""
        if self._pins.get(key, ("", ""))[0] == gone:
            return  # pinned before its claim
        try:
            name = await self.parked.pin(gone, taking=True)
        except ClusterError as exc:
            log.warning("parked frames of member %s not pinned: %s", gone, exc)
            return
        if (earlier := self._pins.pop(key, None)) is not None:
            self._unpin(earlier[1])
        self._pins[key] = (gone, name)
        self._loop.call_later(UNTAKEN, self._untaken, key, name)

    async def taken_with(self, key: SessionKey, gone: str, pin: str) -> None:
        """``key`` taken here from a member that had not given it ``gone``'s frames yet, with
        the pin that member took on them for it (``Owed.handing_over``)."""
        if not pin:
            await self.pin_taken(key, gone)
            return
        if (earlier := self._pins.pop(key, None)) is not None:
            self._unpin(earlier[1])
        self._pins[key] = (gone, pin)
        self._loop.call_later(UNTAKEN, self._untaken, key, pin)

    def forget(self, gone: str) -> None:
        """``gone``'s sessions all taken: its routes deleted (the others stop parking for
        it), once those taken from it directly read their frames (their routes are seen)."""
        self._spawn(self._forget(gone), f"cluster routes of {gone} deleted")

    async def _forget(self, gone: str) -> None:
        try:
            await self.parked.unpinned(gone, "its routes deleted", taking=True)
            await self.announcer.forget(gone)
        except ClusterError as exc:
            log.warning("routes of member %s not deleted: %s", gone, exc)

    def _untaken(self, key: SessionKey, name: str) -> None:
        pin = self._pins.get(key)
        if pin is not None and pin[1] == name:
            del self._pins[key]
            self._unpin(name)

    def _unpin(self, name: str) -> None:
        self._spawn(self.parked.unpin(name), "cluster parked frames unpinned")

    def _spawn(self, work: Coroutine[None, None, None], name: str) -> asyncio.Task[None]:
        task = self._loop.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        for task in list(self._tasks):
            await cancel_and_wait(task)

    def answered(self, token: SessionKey, member: str) -> None:
        """``member``'s barrier for ``token`` came directly (step 3)."""
        awaited = self._awaited.get(token)
        if awaited is not None:
            awaited.answered(member, self._loop.time())
            if awaited.own:
                self._spawn(self._answered(awaited, member), "cluster parked frames' last")

    async def _answered(self, awaited: Awaited, member: str) -> None:
        """A member's own replay: ``member``'s direct barrier counts once the reader is at
        the stream's last sequence as of now (all ``member`` parked is there)."""
        try:
            last = await self.parked.last(self.parked.link.member)
        except ClusterError as exc:
            log.warning("parked frames: no last sequence for %s's barrier: %s", member, exc)
            return
        awaited.answered(member, self._loop.time(), last)

    def _await(self, token: SessionKey, members: Iterable[str], own: bool = False) -> Awaited:
        me, now = self.parked.link.member, self._loop.time()
        awaited = Awaited(token, members, me, now, own, window=self.window, heard=self.heard)
        self._awaited[token] = awaited
        return awaited

    def _ask(self, gone: str, visible: int) -> Awaited | None:
        """An adoption's or a member's own replay's barriers (step 3), for a token no
        session has (no device id is empty); asked and awaited in one turn, before any
        answer can come."""
        if self.ask is None:
            return None
        self._adoptions += 1
        me = self.parked.link.member
        token = ("", f"{me} {self._adoptions}")
        return self._await(token, self.ask(token, gone, visible), own=gone == me)

    async def _replay(
        self,
        gone: str,
        sessions: list[BrokerSession],
        purge: bool,
        caught_up: Callable[[], None] | None,
        awaited: Awaited | None,
        pin: str | None,
    ) -> None:
        by_key = {session.key: session for session in sessions}
        arrivals = [(session, session.arrival) for session in sessions]
        released = False
        fencings = self.fencings
        try:
            if pin is None:
                pin = await self.parked.pin(gone)
            if caught_up is None and sessions:
                awaited = self._ask(gone, await self._visible(sessions, gone))
            last = await self.parked.last(gone)
            async with self.parked.reading(gone) as reader:
                await self._catch_up(reader, last, by_key, awaited)
                if caught_up is not None:
                    released = True
                    caught_up()
                else:  # a part at a time: the loop runs in between (``releasing``)
                    await release_held(sessions, self.local, self.registry)
                    released = True
                await self._follow(reader, by_key)
            unpinned, pin = pin, None
            await self.parked.unpin(unpinned)  # before the purge: no purger waits for another
            if purge and reader.sequence:  # what it read: later ones are a later absence's
                # Not once this member fenced itself off (should nats-py lose the cancel).
                await self.parked.purge(gone, reader.sequence, lambda: self.fencings == fencings)
        except ClusterError as exc:
            log.warning("parked frames of member %s: %s", gone, exc)
        finally:
            for session in sessions:
                self.owed.given(session.key, gone)
            if pin is not None:
                self._unpin(pin)
            if awaited is not None:
                self._awaited.pop(awaited.token, None)
            if not released:
                self._release_now(sessions, caught_up)
            self._loop.call_later(2 * self.window, forget_arrivals, arrivals)

    async def _visible(self, sessions: list[BrokerSession], gone: str) -> int:
        """Step 2: the sessions' filters written again; their ``visible`` revision. Not
        for a member's own: a message came one way only (parked, or directly once the
        others stopped parking for it), and its own filters are written."""
        if gone == self.parked.link.member:
            await self.announcer.written()
            return self.announcer.revision
        filters = {f for s in sessions for f in s.subscriptions if split_shared(f) is None}
        self.announcer.rewrite(sorted(filters))
        await self.announcer.written()
        visible = self.announcer.revision
        for session in sessions:
            if session.arrival is not None and session.arrival.visible is None:
                session.arrival.visible = visible
        return visible

    async def _catch_up(
        self,
        reader: Reader,
        last: int,
        sessions: dict[SessionKey, BrokerSession],
        awaited: Awaited | None,
    ) -> None:
        """Step 4: the frames parked up to sequence ``last``, then up to each ``awaited``
        barrier, given (held)."""
        count, sequence, frame_read = 0, 0, False
        while True:
            if cancel_requested():  # lost in a NATS call before (``cancellable``)
                raise asyncio.CancelledError
            now = self._loop.time()
            if awaited is not None:
                awaited.reached(sequence, now, frame_read)
            barriers = awaited.left(now) if awaited is not None else None
            if sequence < last:
                within = READ_WITHIN
            elif barriers is None:
                break
            else:  # a member's own: its barriers may come directly meanwhile
                within = min(barriers, POLL) if awaited and awaited.own else barriers
            got = await reader.next(within, there=last)
            frame_read = got is not None
            if got is None:
                if sequence < last:
                    log.warning("parked frames: %d of up to %d read, the rest did not come",
                                count, last)  # fmt: skip
                    break
                if awaited is not None:
                    awaited.give_up(self._loop.time())  # none came: those due are given up
                continue
            sequence, frame = got
            self._give(frame, sessions, awaited)
            count += 1
            if awaited is not None:
                awaited.give_up(self._loop.time(), grace=READ_WITHIN)
        if count:
            log.info("%d parked frames given to %d taken sessions", count, len(sessions))

    async def _follow(self, reader: Reader, sessions: dict[SessionKey, BrokerSession]) -> None:
        """Step 5: frames parked later, for ``window`` seconds."""
        deadline = self._loop.time() + self.window
        while (left := deadline - self._loop.time()) > 0:
            if cancel_requested():  # lost in a NATS call before (``cancellable``)
                raise asyncio.CancelledError
            got = await reader.next(left)
            if got is not None:
                self._give(got[1], sessions)

    def _give(
        self,
        frame: bytes,
        sessions: dict[SessionKey, BrokerSession],
        awaited: Awaited | None = None,
    ) -> None:
        clock = self._loop.time
        self.replayed += give_frame(frame, sessions, self.local, self.registry, clock, awaited)

    def _release_now(
        self, sessions: list[BrokerSession], caught_up: Callable[[], None] | None
    ) -> None:
        """A replay that failed or was cancelled (the member stopping) leaves nothing held."""
        if caught_up is not None:
            caught_up()
        else:
            release_held_now(sessions, self.local, self.registry)
