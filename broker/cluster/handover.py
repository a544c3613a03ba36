"""A persistent session moving between members, with nothing routed to it meanwhile lost or
doubled.

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
  ``HOLD_WITHIN`` seconds (a member that died) releases what is held anyway.
- **A lets go.** Once B's filters are visible, A drops its own routes for them: a table at
  that revision or later names B. A keeps sending on for ``cluster_handover_window``
  seconds for members whose tables lag; after that, a QoS 1 or 2 message routed at an older
  revision than B's ``visible`` is refused, so its publisher is not acknowledged and sends
  it again (a member lagging so far is broken).

B tells A its ``visible`` and asks for barriers on ``<cluster>.handover.<member>``.
Shared subscriptions are not sent on: a group's copy goes to one member of the group
wherever it is (MQTT 5.0 §4.8.2), and a member whose group has no one left passes it over.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Final

from nats.aio.msg import Msg

from auth.topics import split_shared
from broker.cluster.errors import nats_errors
from broker.cluster.forward import Forwarder, all_of
from broker.cluster.frames import DIRECT, RELAYED, Routed
from broker.cluster.link import ClusterLink
from broker.cluster.routes import RouteAnnouncer
from broker.mqtt.trie import SubscriptionTrie
from broker.peer import SessionKey, store_key
from broker.router import LocalRouter, Message
from broker.sessions import Arrival, BrokerSession
from nanoiot.errors import ClusterError, ClusterUnavailableError

if TYPE_CHECKING:
    from broker.registry import Registry

__all__ = ["Departure", "Handovers", "Taken"]

log = logging.getLogger(__name__)

HOLD_WITHIN: Final = 2.0  # seconds an arriving session's messages wait for barriers at most

Taken = bool | asyncio.Future[None]  # True: the store was written; a future: wait for it


class Departure:
    """A session that left for ``member``, and its plain filters."""

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
        self.registry: Registry | None = None
        self.departures: dict[SessionKey, Departure] = {}
        self._filters: SubscriptionTrie[SessionKey] = SubscriptionTrie()
        self._arriving: dict[SessionKey, tuple[str, list[tuple[Message, asyncio.Future[None]]]]]
        self._arriving = {}
        # Messages routed before this revision are refused: a departure that old is over.
        self.fence = 0
        # Arriving sessions whose held messages wait for barriers: which barriers, (member,
        # DIRECT or RELAYED), are still to come.
        self._sessions: dict[SessionKey, BrokerSession] = {}
        self._expected: dict[SessionKey, set[tuple[str, int]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent_on = 0  # messages sent on to a session's new member
        self.refused = 0  # messages refused (publishers not acknowledged)
        self._loop = asyncio.get_running_loop()

    async def start(self) -> None:
        with nats_errors("listening for hand-overs"):
            await self.link.client.subscribe(self._subject(self.link.member), cb=self._notice)

    def _subject(self, member: str) -> str:
        return self.link.subject("handover", member)

    # --- the member a session leaves ------------------------------------------------------

    def depart(self, session: BrokerSession, member: str) -> None:
        """``session`` goes to ``member`` now (called as it is forgotten here): its filters
        stay routed here and matching messages are sent on, until ``member``'s are visible."""
        filters = [f for f in session.subscriptions if split_shared(f) is None]
        earlier = self.departures.get(session.key)
        if earlier is not None:
            self._end(earlier)
        if not filters:
            return
        departure = self.departures[session.key] = Departure(session.key, member, filters)
        for topic_filter in filters:
            self._filters.add(topic_filter, session.key, session.subscriptions[topic_filter])
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

    def stale(self, message: Message) -> bool:
        """A QoS 1/2 message routed with a table older than a finished departure's
        ``visible``: it may have been for that session, which no one sends on to now."""
        return bool(message.qos) and message.routed_at < self.fence

    def refuse_stale(self, message: Message) -> "asyncio.Future[None]":
        return self._refuse(None, f"routed at revision {message.routed_at} of the routes, "
                            f"before {self.fence}")  # fmt: skip

    async def _notice(self, msg: Msg) -> None:
        """A session's new member asks for a barrier once this member's table is at
        ``visible`` (and, if this member is the one it left, says its routes are there)."""
        try:
            notice = json.loads(msg.data)
            key = (str(notice["key"][0]), str(notice["key"][1]))
            visible, old, new = int(notice["visible"]), str(notice["old"]), str(notice["new"])
        except (ValueError, TypeError, KeyError, IndexError):
            log.warning("ignored a malformed hand-over notice on %s", msg.subject)
            return
        await self._barrier(key, visible, old, new)

    async def _barrier(self, key: SessionKey, visible: int, old: str, new: str) -> None:
        """This member's barrier for ``key``, to its old and new member (not to itself),
        once its table is at ``visible``: behind whatever it routed with an older one."""
        me = self.link.member
        if me == old:
            self._visible(key, visible)
        await self.announcer.reached(visible)
        if me != old:
            self.forwarder.barrier(old, me, key, relayed=False)
        if me != new:
            self.forwarder.barrier(new, me, key, relayed=False)

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
        expected = self._expected.get(key)
        if expected is not None:
            expected.discard((origin, routed.barrier))
            if not expected:
                self._release(key)

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
        self._end(departure)

    def _end(self, departure: Departure) -> None:
        del self.departures[departure.key]
        if departure.timer is not None:
            departure.timer.cancel()
        if departure.visible is None:
            self._release_routes(departure)
        for topic_filter in departure.filters:
            self._filters.remove(topic_filter, departure.key)

    def _release_routes(self, departure: Departure) -> None:
        for topic_filter in departure.filters:
            self.announcer.remove(topic_filter)

    # --- the member a session comes to ------------------------------------------------------

    def arriving(self, key: SessionKey, member: str) -> None:
        """``key`` is being taken from ``member``: what it sends on is held meanwhile. A
        departure of the session from here is over: it is coming back."""
        earlier = self.departures.get(key)
        if earlier is not None:
            self._end(earlier)
        self._arriving[key] = (member, [])

    def take(self, routed: Routed, max_held: int) -> Taken:
        """A message the member a session left sent on for it."""
        key = routed.session
        assert key is not None
        message = routed.message
        arriving = self._arriving.get(key)
        if arriving is not None:
            held = arriving[1]
            if len(held) >= max_held:
                return self._refuse(key, f"{max_held} messages held (max_queued_messages)")
            waiting: asyncio.Future[None] = self._loop.create_future()
            held.append((message, waiting))
            return waiting
        session = self.registry.sessions.get(key) if self.registry is not None else None
        if session is None:
            departure = self.departures.get(key)
            if departure is not None:  # it moved on: sent on again
                self.sent_on += 1
                confirmed = self.forwarder.send_on(departure.member, message, key)
                return False if confirmed is None else confirmed
            return self._refuse(key, "the session is not here")
        return self.local.deliver_to(session, message)

    def loaded(self, session: BrokerSession | None) -> None:
        """The session was read from the store here (before any message can reach it): from
        now on what reaches it is held. At most its queue limit, twice, is counted."""
        if session is not None and session.key in self._arriving:
            session.arrival = Arrival(2 * self.local.limits.max_queued_messages)

    async def arrived(self, key: SessionKey, session: BrokerSession | None) -> None:
        """The session is here for good: its filters written (again, so that the revision
        is a later one than its reading), what was sent on before it was read joins what is
        held, and every member is asked for its barrier."""
        if key not in self._arriving:
            await self.announcer.written()
            return
        filters = [] if session is None else [
            f for f in session.subscriptions if split_shared(f) is None
        ]  # fmt: skip
        self.announcer.rewrite(filters)
        await self.announcer.written()
        visible = self.announcer.revision
        old, early = self._arriving.pop(key, ("", []))
        arrival = session.arrival if session is not None else None
        if session is None or arrival is None:
            for _message, waiting in early:
                waiting.set_result(None)
            return
        arrival.visible = visible
        local = self.local
        for message, waiting in early:
            local.deliver_to(session, message)
            _follow(waiting, local.waits)
            local.waits.clear()
        self._sessions[key] = session
        self._ask_for_barriers(key, old, visible)
        self._loop.call_later(HOLD_WITHIN, self._held_too_long, key, arrival)
        self._loop.call_later(2 * self.window, _forget_arrival, session, arrival)

    def _ask_for_barriers(self, key: SessionKey, old: str, visible: int) -> None:
        """Each member's barrier is expected directly and relayed by ``old``; ``old``'s
        only directly (it sends on and routes on one stream), this member's only relayed
        (what it routes to the session here is held in the order it routed it)."""
        me = self.link.member
        members = self.members() | {old, me}
        expected: set[tuple[str, int]] = set()
        for member in members:
            if member != me:
                expected.add((member, DIRECT))
            if member != old:
                expected.add((member, RELAYED))
        self._expected[key] = expected
        notice = json.dumps({"key": list(key), "visible": visible, "old": old, "new": me})
        for member in members - {me}:
            self._spawn(self._tell(member, notice.encode()))
        self._spawn(self._barrier(key, visible, old, me))

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        task = self._loop.create_task(work, name="cluster hand-over")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _tell(self, member: str, notice: bytes) -> None:
        try:
            await self.link.publish(self._subject(member), notice)
        except ClusterError as exc:  # its barrier does not come: released after HOLD_WITHIN
            log.warning("could not ask member %s for a hand-over barrier: %s", member, exc)

    def _held_too_long(self, key: SessionKey, arrival: Arrival) -> None:
        if arrival.held is None or self._sessions.get(key) is None:
            return
        missing = sorted(name for name, _ in self._expected.get(key, ()))
        log.warning("session %s: no hand-over barrier from %s within %g s: released",
                    store_key(key), ", ".join(missing), HOLD_WITHIN)  # fmt: skip
        self._release(key)

    def _release(self, key: SessionKey) -> None:
        """Every barrier came: the held messages go to the session, in order."""
        self._expected.pop(key, None)
        session = self._sessions.pop(key, None)
        if session is None or session.arrival is None:
            return
        arrival = session.arrival
        held = arrival.release()
        if self.registry is None or self.registry.sessions.get(key) is not session:
            arrival.released.set_result(None)  # it ended meanwhile (a clean start)
            return
        durable = False
        for message in held:
            durable |= self.local.deliver_to(session, message, released=True)
        _settle(arrival.released, durable, self.local)

    def abandoned(self, key: SessionKey) -> None:
        """Another member took the session while it was being read: what was held for it
        is refused (its publishers send it again, and it is routed to that member)."""
        _member, held = self._arriving.pop(key, ("", []))
        for _message, waiting in held:
            waiting.set_exception(ClusterUnavailableError("the session moved on"))

    def _refuse(self, key: SessionKey | None, why: str) -> "asyncio.Future[None]":
        self.refused += 1
        if key is None:
            log.warning("a forwarded message refused: %s", why)
        else:
            log.warning("a message sent on for session %s refused: %s", store_key(key), why)
        refused: asyncio.Future[None] = self._loop.create_future()
        refused.set_exception(ClusterUnavailableError(why))
        return refused


def _forget_arrival(session: BrokerSession, arrival: Arrival) -> None:
    if session.arrival is arrival:
        session.arrival = None


def _follow(waiting: "asyncio.Future[None]", futures: list["asyncio.Future[None]"]) -> None:
    """``waiting`` done once ``futures`` are (failed if one failed)."""
    combined = all_of(list(futures))
    if combined is None:
        waiting.set_result(None)
        return

    def done(finished: "asyncio.Future[None]") -> None:
        if waiting.done():
            return
        if finished.cancelled() or finished.exception() is not None:
            waiting.set_exception(ClusterUnavailableError("a held message was not delivered"))
        else:
            waiting.set_result(None)

    combined.add_done_callback(done)


def _settle(waiting: "asyncio.Future[None]", durable: bool, local: LocalRouter) -> None:
    """``waiting`` done once what the delivery wrote is committed."""
    pending = local.store.pending_commit() if durable else None
    _follow(waiting, [] if pending is None else [pending])
