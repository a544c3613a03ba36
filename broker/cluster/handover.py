"""A persistent session moving between members, with nothing routed to it meanwhile lost,
doubled or reordered.

When a session moves from member A to member B (a take-over, ``broker.cluster.sessions``),
the other members' route tables name A for its filters until B's reach them, a KV watch
later. A message routed in that moment goes to A, which no longer has the session; without
more, it would reach nobody while its publisher had its PUBACK or PUBREC. So:

- **A sends on.** A keeps the session's filters (``Departure``) and its own routes for them,
  and sends on to B, for that session alone, each message matching them that was routed by a
  member whose table did not show B's filters yet. A message carries the revision of the
  route table it was routed with (``Message.routed_at``); B names the revision from which
  all its filters are in the bucket (``visible``). A's confirmation to the routing member
  waits for B's, so the publisher's acknowledgement does too (MQTT 3.1.1 §4.3.2, §4.3.3).
- **B holds, then releases in order.** From the moment B has read the session from the
  store, whatever reaches it (directly, or sent on by A; what A sent on before is held too)
  is held, one copy of each message by its cluster-wide id. B asks every member for a
  *barrier* once its table is at ``visible``: each sends one to B and one to A, behind what
  it routed before, and A relays the latter to B behind what it sent on. When every
  barrier is in, nothing routed with an older table can still come: the held messages go to
  the session sorted by id, which is each publisher's order (MQTT 3.1.1 §4.6), and QoS 2
  ones once (§4.3.3; ``broker.sessions.Arrival``). A member gives its barrier once its
  table is at ``visible``, however late within ``cluster_handover_window``. B waits
  ``HOLD_WITHIN`` seconds for every barrier, and past that for those of members still live
  (their heartbeats keep coming), up to ``cluster_handover_window`` seconds from the asking:
  a live member whose table lags routes to A meanwhile, and what it routes to B once its
  table shows B must not overtake that. A member that died is given up, and what is held is
  released without its barrier (``broker.cluster.arrivals``, ``broker.cluster.liveness``).
  A session that moves on from B while B still holds for it has what B held refused
  (``Registry.forget``): its publishers send it again.
- **A lets go.** Once B's filters are visible, A drops its own routes for them: a table at
  that revision or later names B. A keeps sending on for ``cluster_handover_window``
  seconds for members whose tables lag; after that, a QoS 1 or 2 message routed at an older
  revision than B's ``visible`` is refused, so its publisher is not acknowledged and sends
  it again (a member lagging so far is broken).

B tells A its ``visible`` and asks for barriers on ``<cluster>.handover.<member>``. When A is
gone (killed), the notice says so: each member's barrier to A then goes into A's parked
frames, behind what it parked for A, where B reads it (``broker.cluster.replay``). A
restarted member asks for its own (A and B the same): each member still parking for it
parks one, then sends one directly once it no longer does.
A shared subscription (MQTT 5.0 §4.8.2) the session had is held the same way: a member
chosen for the group's copy that no longer has a member of the group here sends the copy on
to the session's new member, where it is held with the rest and goes to the session as the
group's member. The notice names the session's groups: from then on, a member choosing for
them passes over A while its table lists B too (``broker.cluster.moves``), so no copy it
routes after its barrier takes the longer way through A.

A's half is ``broker.cluster.departing`` (``Departures``), B's ``broker.cluster.arrivals``;
``Handovers`` joins them, answers the notices and gives this member's barriers.
"""

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Final

from nats.aio.msg import Msg

from broker.cluster.arrivals import HOLD_WITHIN, Arrivals
from broker.cluster.departing import Departure, Departures
from broker.cluster.errors import nats_errors
from broker.cluster.forward import Forwarder
from broker.cluster.frames import DIRECT, Routed
from broker.cluster.link import ClusterLink
from broker.cluster.moves import MovedGroups
from broker.cluster.routes import RouteAnnouncer
from broker.peer import SessionKey, store_key
from broker.router import LocalRouter
from broker.sessions import BrokerSession
from nanoiot.tasks import cancel_and_wait

if TYPE_CHECKING:
    from broker.registry import Registry

__all__ = ["Departure", "Handovers", "Taken"]

log = logging.getLogger(__name__)

UNPARKED_WITHIN: Final = 60.0  # seconds a restarted member's barrier waits for its unparking

Taken = bool | asyncio.Future[None]  # True: the store was written; a future: wait for it


class Handovers(Departures):
    """Both halves of a hand-over on this member: the departing one (``Departures``), the
    arriving one (``arrivals``), and the barriers each member gives."""

    def __init__(
        self,
        link: ClusterLink,
        forwarder: Forwarder,
        announcer: RouteAnnouncer,
        local: LocalRouter,
        window: float,
        members: Callable[[], set[str]],
    ) -> None:
        super().__init__(forwarder, announcer, local, window)
        self.link = link
        self.members = members  # every member's name this member knows of
        self.arrivals = Arrivals(
            link, announcer, local, window, members, self._spawn, self._barrier
        )
        # Shared subscriptions whose member moved: the member it left is not chosen for them.
        self.moved_groups = MovedGroups(window)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def registry(self) -> "Registry | None":
        return self.arrivals.registry

    @registry.setter
    def registry(self, registry: "Registry") -> None:
        self.arrivals.registry = registry

    async def start(self) -> None:
        """Listen for the notices: NATS has the subscription once this returns
        (``ClusterLink.flush``), so a notice sent then is not dropped for want of it."""
        with nats_errors("listening for hand-overs"):
            await self.link.client.subscribe(self._subject(self.link.member), cb=self._notice)
            await self.link.flush()

    def _subject(self, member: str) -> str:
        return self.link.subject("handover", member)

    # --- barriers (the member a session leaves is ``Departures``) ----------------------------

    async def _notice(self, msg: Msg) -> None:
        """A session's new member asks for a barrier once this member's table is at
        ``visible`` (and, if this member is the one it left, says its routes are there)."""
        try:
            notice = json.loads(msg.data)
            key = (str(notice["key"][0]), str(notice["key"][1]))
            visible, old, new = int(notice["visible"]), str(notice["old"]), str(notice["new"])
            # Its shared subscriptions, and whether ``old`` is gone (absent from a member of
            # an earlier version).
            groups = [(str(name), str(f)) for name, f in notice.get("groups", [])]
            parked = notice.get("parked") is True
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            log.warning("ignored a malformed hand-over notice on %s", msg.subject)
            return
        if groups:  # before this member's barrier: what it routes after goes to ``new``
            self.moved_groups.moved(groups, old, new, visible, self._loop.time(), gone=parked)
        # Not holding up the next notice.
        self._spawn(self._barrier(key, visible, old, new, parked))

    async def _barrier(
        self, key: SessionKey, visible: int, old: str, new: str, parked: bool = False
    ) -> None:
        """This member's barrier for ``key``, to its old and new member (not to itself),
        once its table is at ``visible``: behind whatever it routed with an older one.
        ``parked``: ``old`` is gone, and the barrier to it goes behind what this member
        parked for it (``broker.cluster.replay``)."""
        me = self.link.member
        if me == old:
            self._visible(key, visible)
        # A table that lags is waited for as long as the new member waits for this live
        # member's barrier (``broker.cluster.liveness``): given late, it keeps what this
        # member routed to ``old`` meanwhile ahead of what it routes to ``new`` after.
        within = max(HOLD_WITHIN, self.window)
        try:
            async with asyncio.timeout(within):  # never loses a cancellation (``cancellable``)
                await self.announcer.reached(visible)
        except TimeoutError:  # the new member released what it holds without this barrier
            log.warning("routes not at revision %d within %g s: no hand-over barrier for %s",
                        visible, within, store_key(key))  # fmt: skip
            return
        if me != old and old == new:  # a restarted member's own (``broker.cluster.replay``)
            await self._restart_barrier(key, old)
            return
        if me != old:
            self.forwarder.barrier(old, me, key, relayed=False, parked=parked)
        if me != new:
            self.forwarder.barrier(new, me, key, relayed=False)

    async def _restart_barrier(self, key: SessionKey, member: str) -> None:
        """Still parking for restarted ``member``: a barrier behind what is parked says so;
        then, once no longer (all parked are in JetStream), one directly says none is left."""
        if member in self.forwarder.parked:
            self.forwarder.barrier(member, self.link.member, key, relayed=False, parked=True)
        try:
            async with asyncio.timeout(UNPARKED_WITHIN):
                await self.forwarder.unparked(member)
        except TimeoutError:  # it died again: its replay gave this member up
            return
        self.forwarder.barrier(member, self.link.member, key, relayed=False)

    def relay(self, routed: Routed) -> None:
        """A barrier that came here: relayed to the session's new member if the session left
        from here, else counted if it is arriving here."""
        key = routed.session
        assert key is not None
        origin = routed.message.topic
        departure = self.departures.get(key)
        if routed.barrier == DIRECT and departure is not None:
            self.forwarder.barrier(departure.member, origin, key, relayed=True)
            return
        self.arrivals.barrier(key, origin, routed.barrier)

    # --- the member a session comes to (``broker.cluster.arrivals``) -------------------------

    def arriving(self, key: SessionKey, member: str) -> None:
        """``key`` is being taken from ``member``. A departure of the session from here is
        over: it is coming back."""
        earlier = self.departures.get(key)
        if earlier is not None:
            self._end(earlier)
        self.arrivals.arriving(key, member)

    def take(self, routed: Routed, max_kept: int) -> Taken:
        """A message the member a session left sent on for it."""
        key = routed.session
        assert key is not None
        message = routed.message
        group = routed.groups[0] if routed.groups else None
        kept = self.arrivals.keep(key, message, group, max_kept)
        if kept is not None:
            if kept.done():
                self.refused += 1
                log.warning("a message sent on for session %s refused: %s", store_key(key),
                            kept.exception())  # fmt: skip
            return kept
        session = self.registry.sessions.get(key) if self.registry is not None else None
        if session is not None:
            if group is not None:
                return self.local.deliver_to_group(session, message, group)
            return self.local.deliver_to(session, message)
        departure = self.departures.get(key)
        if departure is not None:  # it moved on: sent on again
            self.sent_on += 1
            confirmed = self.forwarder.send_on(departure.member, message, key, group)
            return False if confirmed is None else confirmed
        return self._refuse(key, "the session is not here")

    def loaded(self, session: BrokerSession | None) -> None:
        self.arrivals.loaded(session)

    async def arrived(self, key: SessionKey, session: BrokerSession | None) -> None:
        await self.arrivals.arrived(key, session)

    def abandoned(self, key: SessionKey) -> None:
        self.arrivals.abandoned(key)

    # --- tasks ------------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        task = self._loop.create_task(work, name="cluster hand-over")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            await cancel_and_wait(task)
        self.arrivals.stop()
