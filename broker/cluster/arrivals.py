"""The member a persistent session moves to: what reaches the session is held until every
member's barrier came, then given to it once and in each publisher's order.

The protocol is in ``broker.cluster.handover``; this is its arriving half. The steps, for a
session taken from member ``old``:

1. ``arriving``: before asking ``old`` to give the session up. What ``old`` sends on for it
   meanwhile is kept (at most ``max_queued_messages``, then refused: its publisher sends it
   again).
2. ``loaded``: the session was read from the store. From now on whatever reaches it,
   directly or sent on, is held in its ``broker.sessions.Arrival``.
3. ``arrived``: its filters are written again (so the revision that shows them all,
   ``visible``, comes after its reading), what was kept joins what is held, and every member
   is asked for a barrier once its table is at ``visible``.
4. ``barrier``: each member's barrier, directly and relayed by ``old``. When all are in,
   nothing routed with an older table can still come: the held messages go to the session
   sorted by id, a part at a time (``broker.cluster.releasing``). A member whose barrier is
   missing ``HOLD_WITHIN`` seconds after the asking is waited for while it is live (its
   heartbeats keep coming, ``broker.cluster.liveness``), up to ``cluster_handover_window``
   seconds from the asking: a live member whose table lags still routes to ``old``, which
   sends on to here, and what it routes once its table shows this member must not overtake
   that. A member that died, or is gone, is given up, and the
   held messages go once no barrier is awaited. What is held stays within twice
   ``max_queued_messages`` however long it is held (``broker.sessions.Arrival``).

A session taken from a member that is gone (``from_gone``) expects no barrier from it, nor
relayed through it: instead, the frames parked for it (``broker.cluster.replay``) are given
to the session, held with the rest, and their end counts as that member's barrier. The
notice says that member is gone, so each member's barrier to it goes into its parked frames
behind what that member parked for it, and the end is where every member's was read there
(``Replays`` waits for them; a direct barrier from a member says its parked one is on its
way). A session taken from a live member that had not given it a gone member's parked
frames yet (its adopter, ``Replays.taken_with``) expects both: the live member's barriers,
and the end of the gone member's parked frames. So does one taken from a live member still
reading its own parked frames (back on NATS after a moment away): those are read here, and
the member, live, gives its barriers as any other.
"""

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Final

from auth.topics import split_shared
from broker.cluster.confirmations import fail
from broker.cluster.frames import DIRECT, RELAYED, Group
from broker.cluster.link import ClusterLink
from broker.cluster.liveness import Hearing, sort_out, unheard
from broker.cluster.releasing import follow, release_held, release_held_now
from broker.cluster.routes import RouteAnnouncer
from broker.peer import SessionKey, store_key
from broker.router import LocalRouter, Message
from broker.sessions import Arrival, BrokerSession
from nanoiot.errors import ClusterError

if TYPE_CHECKING:
    from broker.cluster.replay import Replays
    from broker.registry import Registry

__all__ = ["HOLD_WITHIN", "Arrivals", "forget_arrivals"]

log = logging.getLogger(__name__)

# Seconds an arriving session's messages wait for every member's barrier; past that, only
# for those of live members (``broker.cluster.liveness``).
HOLD_WITHIN: Final = 2.0
_PARKED: Final = 3  # the "barrier" a gone member's parked frames end with

# A message sent on before its session was here: for its shared subscription (if any), and
# the future of its delivery.
Kept = tuple[Message, Group | None, "asyncio.Future[None]"]


class Arrivals:
    def __init__(
        self,
        link: ClusterLink,
        announcer: RouteAnnouncer,
        local: LocalRouter,
        window: float,
        members: Callable[[], set[str]],
        spawn: Callable[[Coroutine[None, None, None]], None],
        barrier: Callable[[SessionKey, int, str, str, bool], Coroutine[None, None, None]],
    ) -> None:
        self.link = link
        self.announcer = announcer
        self.local = local
        self.window = window
        self.members = members  # every member's name this member knows of
        self.spawn = spawn
        self.barrier_here = barrier  # this member's own barrier, as any member gives it
        self.registry: Registry | None = None
        self.heard: Hearing = unheard  # the members' heartbeats (``MemberRegistry.heard``)
        self._loop = asyncio.get_running_loop()
        # Sessions being taken: the member they come from, and what it sent on meanwhile.
        self._kept: dict[SessionKey, tuple[str, list[Kept]]] = {}
        # Sessions whose held messages wait for barriers, and which barriers, (member,
        # DIRECT or RELAYED), are still to come.
        self._holding: dict[SessionKey, BrokerSession] = {}
        self._expected: dict[SessionKey, set[tuple[str, int]]] = {}
        self._replays: Replays | None = None
        # Sessions taken with a gone member's parked frames: that member, and whether it is
        # the one the session was taken from (False: that one answered, it is live).
        self._gone: dict[SessionKey, tuple[str, bool]] = {}
        self._releasing: dict[SessionKey, BrokerSession] = {}  # given what they held

    @property
    def replays(self) -> "Replays | None":
        return self._replays

    @replays.setter
    def replays(self, replays: "Replays") -> None:
        """What was parked for gone members, given to the sessions taken from them: its
        adoptions ask for barriers here (``ask_parked``)."""
        self._replays = replays
        replays.ask = self.ask_parked

    def arriving(self, key: SessionKey, member: str) -> None:
        self._kept[key] = (member, [])
        self._gone.pop(key, None)

    def from_gone(self, key: SessionKey, member: str, *, answered: bool = False) -> None:
        """``key`` is taken with ``member``'s parked frames: from ``member``, which is gone;
        or, ``answered``, from a live member that had not given it those frames yet, which
        may be that live member's own (back on NATS after a moment away, its own replay
        still reading what the others parked for it meanwhile)."""
        if self.replays is not None:
            self._gone[key] = (member, not answered)

    def keep(
        self, key: SessionKey, message: Message, group: Group | None, most: int
    ) -> "asyncio.Future[None] | None":
        """A message sent on for a session being taken (for its shared subscription
        ``group``, if given): kept until it is here, the future of its delivery; None if the
        session is not being taken. Past ``most`` kept, refused."""
        kept = self._kept.get(key)
        if kept is None:
            return None
        waiting: asyncio.Future[None] = self._loop.create_future()
        if len(kept[1]) >= most:
            fail(waiting, f"{most} messages kept for it (max_queued_messages)")
        else:
            kept[1].append((message, group, waiting))
        return waiting

    def loaded(self, session: BrokerSession | None) -> None:
        """Read from the store here: from now on what reaches it is held. At most its
        queue limit, twice, is counted and held."""
        if session is not None and session.key in self._kept:
            session.arrival = Arrival(2 * self.local.limits.max_queued_messages)

    async def arrived(self, key: SessionKey, session: BrokerSession | None) -> None:
        """Here for good (its CONNACK comes next): filters written again, what was kept
        held, every member asked for its barrier."""
        if key not in self._kept:  # its own filters: not all those of a restore
            await self.announcer.written_for(session.subscriptions if session else ())
            return
        filters = [] if session is None else [
            f for f in session.subscriptions if split_shared(f) is None
        ]  # fmt: skip
        self.announcer.rewrite(filters)
        await self.announcer.written_for(session.subscriptions if session else ())
        visible = self.announcer.revision  # as of its own filters, if not of the others'
        old, kept = self._kept.pop(key, ("", []))
        # ``old`` (gone, or live and owing its own parked frames), or the one ``old`` took
        # it from. A live ``old`` gives its barriers as in any hand-over: taken as gone, the
        # barriers asked of the members would go to it directly, never into its parked
        # frames, and what is held would wait for them in vain (``READ_WITHIN``).
        parked_from, old_gone = self._gone.pop(key, (None, False))
        gone = parked_from == old and old_gone
        arrival = session.arrival if session is not None else None
        if session is None or arrival is None:
            for _message, _group, waiting in kept:
                waiting.set_result(None)
            return
        arrival.visible = visible
        local = self.local
        for message, group, waiting in kept:  # held: ``local.waits``
            if group is None:
                local.deliver_to(session, message)
            else:
                local.deliver_to_group(session, message, group)
            follow(waiting, local.waits)
            local.waits.clear()
        self._holding[key] = session
        groups = [g for g in map(split_shared, session.subscriptions) if g is not None]
        asked = self._ask_for_barriers(key, old, visible, gone, groups, parked_from)
        if parked_from is not None and self.replays is not None:
            # Taken from a live member that had not given it those frames: only what was
            # parked is read (the others' barriers come directly and through ``old``).
            parked = functools.partial(self.barrier, key, parked_from, _PARKED)
            asked = asked - {old} if gone else set()
            self.replays.start(
                parked_from, [session], purge=False, caught_up=parked, token=key, asked=asked
            )
        now = self._loop.time()
        self._loop.call_later(HOLD_WITHIN, self._held_too_long, key, arrival, now)
        self._loop.call_later(2 * self.window, _forget_arrival, session, arrival, self.window)

    def abandoned(self, key: SessionKey) -> None:
        """Another member took the session while it was being read: what was kept for it is
        refused (its publishers send it again, and it is routed to that member)."""
        _member, kept = self._kept.pop(key, ("", []))
        for _message, _group, waiting in kept:
            fail(waiting, "the session moved on")

    def barrier(self, key: SessionKey, member: str, kind: int) -> None:
        if kind == DIRECT and self.replays is not None:
            self.replays.answered(key, member)  # its barrier behind what it parked is queued
        expected = self._expected.get(key)
        if expected is not None:
            expected.discard((member, kind))
            if not expected:
                self._release(key)

    def ask_parked(self, token: SessionKey, gone: str, visible: int) -> set[str]:
        """Every member asked for a barrier for ``token`` behind what it parked for ``gone``,
        once its table is at ``visible`` (an adoption's, ``broker.cluster.replay``); the
        members asked, this one among them."""
        members = (self.members() | {self.link.member}) - {gone}
        self._notify(token, visible, gone, members, [], parked=True)
        return members

    def _ask_for_barriers(
        self, key: SessionKey, old: str, visible: int, gone: bool, groups: list[Group],
        parked_from: str | None = None,
    ) -> set[str]:  # fmt: skip
        """Each member's barrier is expected directly and relayed by ``old``; ``old``'s
        only directly (it sends on and routes on one stream), this member's only relayed
        (what it routes to the session here is held in the order it routed it). When
        ``old`` is gone: each other member's directly, and the end of ``old``'s parked
        frames. The notice names the session's shared subscriptions ``groups``: the members
        choose this member rather than ``old`` for them (``broker.cluster.moves``). With
        ``parked_from``, the end of that gone member's parked frames too. The members asked,
        this one and ``old`` among them."""
        me = self.link.member
        members = self.members() | {old, me}
        expected: set[tuple[str, int]] = set()
        for member in members:
            if gone:
                if member not in (me, old):
                    expected.add((member, DIRECT))
                continue
            if member != me:
                expected.add((member, DIRECT))
            if member != old:
                expected.add((member, RELAYED))
        if parked_from is not None:
            expected.add((parked_from, _PARKED))
        self._expected[key] = expected
        self._notify(key, visible, old, members, groups, parked=gone)
        return members

    def _notify(
        self, key: SessionKey, visible: int, old: str, members: set[str], groups: list[Group],
        parked: bool,
    ) -> None:  # fmt: skip
        """The notice to ``members`` but this one, and this member's own barrier."""
        me = self.link.member
        notice = json.dumps({
            "key": list(key), "visible": visible, "old": old, "new": me, "groups": groups,
            "parked": parked,
        })  # fmt: skip
        for member in members - {me}:
            self.spawn(self._tell(member, notice.encode()))
        self.spawn(self.barrier_here(key, visible, old, me, parked))

    async def _tell(self, member: str, notice: bytes) -> None:
        try:
            await self.link.publish(self.link.subject("handover", member), notice)
        except ClusterError as exc:  # its barrier does not come: given up (``_held_too_long``)
            log.warning("could not ask member %s for a hand-over barrier: %s", member, exc)

    def _held_too_long(
        self, key: SessionKey, arrival: Arrival, asked: float, told: bool = False
    ) -> None:
        """``HOLD_WITHIN`` seconds after the asking at ``asked``, and then whenever a live
        member's wait is up: the members not live are given up, the held messages released
        once no barrier is awaited. ``told``: the wait for live members was logged."""
        if arrival.held is None or self._holding.get(key) is None:
            return
        expected = self._expected.get(key, set())
        if any(kind == _PARKED for _member, kind in expected):
            # Its parked frames are still being read (that ends, within its own bounds).
            self._loop.call_later(HOLD_WITHIN, self._held_too_long, key, arrival, asked, told)
            return
        now = self._loop.time()
        members = {member for member, _kind in expected}
        late, again = sort_out(members, asked, now, self.heard, self.window)
        if late:
            log.warning("session %s: no hand-over barrier from %s within %.1f s: given up",
                        store_key(key), ", ".join(late), now - asked)  # fmt: skip
            expected -= {(member, kind) for member, kind in expected if member in late}
        if not expected or again is None:
            self._release(key)
            return
        if not told:
            live = ", ".join(sorted(members - set(late)))
            log.info("session %s: waiting for the hand-over barrier of live members %s "
                     "(their route tables lag)", store_key(key), live)  # fmt: skip
        self._loop.call_at(again, self._held_too_long, key, arrival, asked, True)

    def _release(self, key: SessionKey) -> None:
        """Every barrier came: the held messages go to the session, in order, a part at a
        time (``broker.cluster.releasing``: a large backlog would stop the loop); the
        session holds until the last part, so what reaches it meanwhile keeps its place."""
        self._expected.pop(key, None)
        session = self._holding.pop(key, None)
        if session is None or session.arrival is None or session.arrival.held is None:
            return  # none, or refused as it moved on (``Arrival.refuse``)
        self._releasing[key] = session
        self.spawn(self._give(key, session))

    async def _give(self, key: SessionKey, session: BrokerSession) -> None:
        try:
            await release_held([session], self.local, self.registry)
        finally:
            if self._releasing.get(key) is session:
                del self._releasing[key]

    def stop(self) -> None:
        """The member stops, its tasks cancelled: what a release cancelled before it began
        still held is given at once, never left held."""
        releasing, self._releasing = list(self._releasing.values()), {}
        release_held_now(releasing, self.local, self.registry)


def _forget_arrival(session: BrokerSession, arrival: Arrival, after: float) -> None:
    """Late copies are no longer told apart, ``after`` seconds after its release: one still
    held (barriers or parked frames awaited longer than the window) is not dropped."""
    if session.arrival is not arrival:
        return
    if arrival.held is not None:
        asyncio.get_running_loop().call_later(after, _forget_arrival, session, arrival, after)
        return
    session.arrival = None


def forget_arrivals(arrivals: list[tuple[BrokerSession, Arrival | None]]) -> None:
    """Late copies are no longer told apart (the window is over)."""
    for session, arrival in arrivals:
        if arrival is not None and session.arrival is arrival and arrival.held is None:
            session.arrival = None
