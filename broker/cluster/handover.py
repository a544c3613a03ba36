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
- **B holds, then counts.** What A sends on before B has read the session from the store
  is held (at most ``max_queued_messages``), then given to the session. A message routed
  while B's filters were not yet visible may reach B twice, directly and through A; each
  message has a cluster-wide id, and the session counts the ids of those
  (``broker.sessions.Arrival``), so that it gets one copy (QoS 2: exactly once, §4.3.3).
- **A lets go.** Once B's filters are visible, A drops its own routes for them: a table at
  that revision or later names B. A keeps sending on for ``cluster_handover_window``
  seconds for members whose tables lag; after that, a QoS 1 or 2 message routed at an older
  revision than B's ``visible`` is refused, so its publisher is not acknowledged and sends
  it again (a member lagging so far is broken).

B tells A its ``visible`` on ``<cluster>.handover.<A>``. Shared subscriptions are not sent
on: a group's copy goes to one member of the group wherever it is (MQTT 5.0 §4.8.2), and a
member whose group has no one left passes it over.
"""

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from nats.aio.msg import Msg

from auth.topics import split_shared
from broker.cluster.errors import nats_errors
from broker.cluster.forward import Forwarder
from broker.cluster.frames import Routed
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
    ) -> None:
        self.link = link
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
        self.sent_on = 0  # messages sent on to a session's new member
        self.refused = 0  # messages refused (publishers not acknowledged)
        self._loop = asyncio.get_running_loop()

    async def start(self) -> None:
        with nats_errors("listening for hand-overs"):
            await self.link.client.subscribe(self._subject(self.link.member), cb=self._told)

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

    async def _told(self, msg: Msg) -> None:
        """The new member's filters are visible from a revision on."""
        try:
            told = json.loads(msg.data)
            key = (str(told["key"][0]), str(told["key"][1]))
            visible = int(told["visible"])
        except (ValueError, TypeError, KeyError, IndexError):
            log.warning("ignored a malformed hand-over notice on %s", msg.subject)
            return
        departure = self.departures.get(key)
        if departure is None or departure.visible is not None:
            return
        departure.visible = visible
        self._release_routes(departure)
        if departure.timer is not None:
            departure.timer.cancel()
        departure.timer = self._loop.call_later(self.window, self._expired, departure)

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
        """``key`` is being taken from ``member``: what it sends on is held meanwhile."""
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
            return self._refuse(key, "the session is not here")
        arrival = session.arrival
        if arrival is not None and not arrival.first_sent_on(message):
            return False
        return self.local.deliver_to(session, message)

    def loaded(self, session: BrokerSession | None) -> None:
        """The session was read from the store here (before any message can reach it): from
        now on it counts what it gets. The ids counted are those of messages routed in the
        moments before its filters were visible, which its queue limit bounds: twice that
        many are kept."""
        if session is not None and session.key in self._arriving:
            session.arrival = Arrival(2 * self.local.limits.max_queued_messages)

    async def arrived(self, key: SessionKey, session: BrokerSession | None) -> None:
        """The session is here for good: its filters written (again, so that the revision
        is a later one than its reading), the held messages given to it, and the member
        it left told from which revision the others route to it here."""
        if key not in self._arriving:
            await self.announcer.written()
            return
        filters = [] if session is None else [
            f for f in session.subscriptions if split_shared(f) is None
        ]  # fmt: skip
        self.announcer.rewrite(filters)
        await self.announcer.written()
        visible = self.announcer.revision
        member, held = self._arriving.pop(key, ("", []))
        arrival = session.arrival if session is not None else None
        if session is not None and arrival is not None:
            arrival.visible = visible
            self._loop.call_later(2 * self.window, _forget_arrival, session, arrival)
        for message, waiting in held:
            if session is None or (arrival is not None and not arrival.first_sent_on(message)):
                waiting.set_result(None)
                continue
            _settle(waiting, self.local.deliver_to(session, message), self.local)
        if member:
            notice = json.dumps({"key": list(key), "visible": visible}).encode()
            try:
                await self.link.publish(self._subject(member), notice)
            except ClusterError as exc:  # it sends on until its window ends
                log.warning("session %s: could not tell member %s: %s", store_key(key), member,
                            exc)  # fmt: skip

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


def _settle(waiting: "asyncio.Future[None]", durable: bool, local: LocalRouter) -> None:
    """``waiting`` done once what the delivery wrote is committed."""
    pending = local.store.pending_commit() if durable else None
    if pending is None:
        waiting.set_result(None)
        return

    def done(finished: "asyncio.Future[None]") -> None:
        if waiting.done():
            return
        if finished.cancelled() or finished.exception() is not None:
            waiting.set_exception(ClusterUnavailableError("the store did not commit"))
        else:
            waiting.set_result(None)

    pending.add_done_callback(done)
