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
  ones once (§4.3.3; ``broker.sessions.Arrival``). A barrier missing after
  ``HOLD_WITHIN`` seconds (a member that died) releases what is held anyway
  (``broker.cluster.arrivals``). A session that moves on from B while B still holds for it
  has what B held refused (``Registry.forget``): its publishers send it again.
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
"""

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Final

from nats.aio.msg import Msg

from auth.topics import split_shared
from broker.cluster.arrivals import HOLD_WITHIN, Arrivals
from broker.cluster.errors import nats_errors
from broker.cluster.forward import Forwarder
from broker.cluster.frames import DIRECT, Group, Routed
from broker.cluster.link import ClusterLink
from broker.cluster.moves import MovedGroups
from broker.cluster.routes import RouteAnnouncer
from broker.mqtt.trie import SubscriptionTrie
from broker.peer import SessionKey, store_key
from broker.router import LocalRouter, Message
from broker.sessions import BrokerSession
from nanoiot.errors import ClusterUnavailableError
from nanoiot.tasks import cancel_and_wait

if TYPE_CHECKING:
    from broker.registry import Registry

__all__ = ["Departure", "Handovers", "Taken"]

log = logging.getLogger(__name__)

UNPARKED_WITHIN: Final = 60.0  # seconds a restarted member's barrier waits for its unparking

Taken = bool | asyncio.Future[None]  # True: the store was written; a future: wait for it


class Departure:
    """A session that left for ``member``, and its filters (plain and shared)."""

    __slots__ = ("filters", "key", "member", "timer", "visible")

    def __init__(self, key: SessionKey, member: str, filters: list[str]) -> None:
        self.key = key
        self.member = member
        self.filters = filters
        self.visible: int | None = None  # the revision from which the others route to it
        self.timer: asyncio.TimerHandle | None = None


class Handovers:
    def __init__(
        self,
        link: ClusterLink,
        forwarder: Forwarder,
        announcer: RouteAnnouncer,
        local: LocalRouter,
        window: float,
        members: Callable[[], set[str]],
    ) -> None:
        self.link = link
        self.members = members  # every member's name this member knows of
        self.forwarder = forwarder
        self.announcer = announcer
        self.local = local
        self.window = window
        self.arrivals = Arrivals(
            link, announcer, local, window, members, self._spawn, self._barrier
        )
        self.departures: dict[SessionKey, Departure] = {}
        # Shared subscriptions whose member moved: the member it left is not chosen for them.
        self.moved_groups = MovedGroups(window)
        self._filters: SubscriptionTrie[SessionKey] = SubscriptionTrie()
        # Their shared subscriptions: (session, share name, filter) by filter.
        self._groups: SubscriptionTrie[tuple[SessionKey, str, str]] = SubscriptionTrie()
        # Messages routed before this revision are refused: a departure that old is over.
        self.fence = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent_on = 0  # messages sent on to a session's new member
        self.refused = 0  # messages refused (publishers not acknowledged)
        self._loop = asyncio.get_running_loop()

    @property
    def registry(self) -> "Registry | None":
        return self.arrivals.registry

    @registry.setter
    def registry(self, registry: "Registry") -> None:
        self.arrivals.registry = registry

    async def start(self) -> None:
        with nats_errors("listening for hand-overs"):
            await self.link.client.subscribe(self._subject(self.link.member), cb=self._notice)

    def _subject(self, member: str) -> str:
        return self.link.subject("handover", member)

    # --- the member a session leaves ------------------------------------------------------

    def depart(self, session: BrokerSession, member: str) -> None:
        """``session`` goes to ``member`` now (called as it is forgotten here): its filters
        stay routed here and matching messages are sent on, until ``member``'s are visible."""
        earlier = self.departures.get(session.key)
        if earlier is not None:
            self._end(earlier)
        if not session.subscriptions:
            return
        key, filters = session.key, list(session.subscriptions)
        departure = self.departures[key] = Departure(key, member, filters)
        for topic_filter, sub in session.subscriptions.items():
            shared = split_shared(topic_filter)
            if shared is None:
                self._filters.add(topic_filter, key, sub)
            else:
                self._groups.add(shared[1], (key, *shared), sub)
            self.announcer.add(topic_filter)
        departure.timer = self._loop.call_later(self.window, self._expired, departure)

    def send_on(self, message: Message) -> list["asyncio.Future[None]"]:
        """Copies of ``message`` for the sessions that left and may not have it; the
        futures of their confirmations (QoS > 0)."""
        confirmations: list[asyncio.Future[None]] = []
        for key in self._filters.match(message.topic):
            departure = self.departures[key]
            visible = departure.visible
            if visible is not None and message.routed_at >= visible:
                continue  # routed to the new member directly
            self.sent_on += 1
            confirmed = self.forwarder.send_on(departure.member, message, key)
            if confirmed is not None:
                confirmations.append(confirmed)
        return confirmations

    def send_on_groups(
        self, message: Message, unserved: Callable[[Group], bool]
    ) -> list["asyncio.Future[None]"]:
        """A copy of ``message`` for each shared subscription a session that left had here
        and that this member was to serve but cannot (``unserved``, no member of it here):
        the group's copy goes to that session on its new member (MQTT 5.0 §4.8.2)."""
        confirmations: list[asyncio.Future[None]] = []
        for key, name, topic_filter in self._groups.match(message.topic):
            group = (name, topic_filter)
            departure = self.departures.get(key)
            if departure is None or not unserved(group):
                continue
            self.sent_on += 1
            confirmed = self.forwarder.send_on(departure.member, message, key, group)
            if confirmed is not None:
                confirmations.append(confirmed)
        return confirmations

    def send_on_published(
        self, message: Message, chosen: dict[str, list[Group]]
    ) -> list["asyncio.Future[None]"]:
        """What sessions that left this member would have had of a message published here:
        its plain copies, and the copy of a shared subscription no member has here and no
        other member was chosen for."""
        shared = self.local.shared
        elsewhere = {group for groups in chosen.values() for group in groups}
        return self.send_on(message) + self.send_on_groups(
            message, lambda group: shared.group(*group) is None and group not in elsewhere
        )

    def send_on_routed(self, routed: Routed) -> list["asyncio.Future[None]"]:
        """The same for a message another member routed here, for its plain subscribers
        and for the shared subscriptions it chose this member for."""
        message, sent = routed.message, []
        if routed.plain:
            sent = self.send_on(message)
        if routed.groups:
            shared, chosen = self.local.shared, set(routed.groups)
            sent += self.send_on_groups(
                message, lambda group: group in chosen and shared.group(*group) is None
            )
        return sent

    def refused_if_stale(self, message: Message) -> "asyncio.Future[None] | None":
        """The refusal of a QoS 1/2 message routed with a table older than a finished
        departure's ``visible`` (it may have been for that session, which no one sends on to
        now: its publisher sends it again); None for any other."""
        if not message.qos or message.routed_at >= self.fence:
            return None
        why = f"routed at revision {message.routed_at} of the routes, before {self.fence}"
        return self._refuse(None, why)

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
            self.moved_groups.moved(groups, old, new, visible, self._loop.time())
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
        try:
            await asyncio.wait_for(self.announcer.reached(visible), HOLD_WITHIN)
        except TimeoutError:  # the new member releases what it holds without this barrier
            log.warning("routes not at revision %d within %g s: no hand-over barrier for %s",
                        visible, HOLD_WITHIN, store_key(key))  # fmt: skip
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
            await asyncio.wait_for(self.forwarder.unparked(member), UNPARKED_WITHIN)
        except TimeoutError:  # it died again: its replay gave this member up
            return
        self.forwarder.barrier(member, self.link.member, key, relayed=False)

    def _visible(self, key: SessionKey, visible: int) -> None:
        departure = self.departures.get(key)
        if departure is None or departure.visible is not None:
            return
        departure.visible = visible
        self._release_routes(departure)
        if departure.timer is not None:
            departure.timer.cancel()
        departure.timer = self._loop.call_later(self.window, self._expired, departure)

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

    def _expired(self, departure: Departure) -> None:
        if self.departures.get(departure.key) is not departure:
            return
        if departure.visible is None:
            log.warning(
                "session %s: member %s did not say within %g s when its routes were visible",
                store_key(departure.key), departure.member, self.window,
            )  # fmt: skip
        else:
            self.fence = max(self.fence, departure.visible)
            log.info("session %s: no longer sent on to member %s; QoS 1 and 2 messages routed "
                     "with routes older than revision %d are refused from now on",
                     store_key(departure.key), departure.member, self.fence)  # fmt: skip
        self._end(departure)

    def _end(self, departure: Departure) -> None:
        del self.departures[departure.key]
        if departure.timer is not None:
            departure.timer.cancel()
        if departure.visible is None:
            self._release_routes(departure)
        for topic_filter in departure.filters:
            shared = split_shared(topic_filter)
            if shared is None:
                self._filters.remove(topic_filter, departure.key)
            else:
                self._groups.remove(shared[1], (departure.key, *shared))

    def _release_routes(self, departure: Departure) -> None:
        for topic_filter in departure.filters:
            self.announcer.remove(topic_filter)

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

    def _refuse(self, key: SessionKey | None, why: str) -> "asyncio.Future[None]":
        self.refused += 1
        if key is None:
            log.warning("a forwarded message refused: %s", why)
        else:
            log.warning("a message sent on for session %s refused: %s", store_key(key), why)
        refused: asyncio.Future[None] = self._loop.create_future()
        refused.set_exception(ClusterUnavailableError(why))
        return refused
