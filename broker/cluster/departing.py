"""The member a persistent session leaves: what is routed to the session here goes on to its
new member, until no member routes it here any more.

The protocol is in ``broker.cluster.handover``; this is its departing half (the arriving
half is ``broker.cluster.arrivals``). For each session that left (a ``Departure``), this
member keeps the session's filters, plain and shared (MQTT 5.0 §4.8.2), and its own routes
for them; a message matching them that was routed with a table older than the new member's
``visible`` revision is sent on to it, and the publisher's acknowledgement waits for the new
member's confirmation (MQTT 3.1.1 §4.3.2, §4.3.3). Once the new member's filters are visible
the routes here go; ``cluster_handover_window`` seconds later the departure is over, and a
QoS 1 or 2 message routed before its ``visible`` (``fence``) is refused: its publisher is not
acknowledged and sends it again.

Not ``broker.cluster.departure``, which is about a member's run leaving the cluster.

Only ``broker.cluster.handover`` imports this (``Handovers`` builds on ``Departures``); it
must not import ``broker.cluster.handover`` nor ``broker.cluster.arrivals``.
"""

import asyncio
import logging
from collections.abc import Callable

from auth.topics import split_shared
from broker.cluster.forward import Forwarder
from broker.cluster.frames import Group, Routed
from broker.cluster.routes import RouteAnnouncer
from broker.mqtt.trie import SubscriptionTrie
from broker.peer import SessionKey, store_key
from broker.router import LocalRouter, Message
from broker.sessions import BrokerSession
from nanoiot.errors import ClusterUnavailableError

__all__ = ["Departure", "Departures"]

log = logging.getLogger("broker.cluster.handover")  # logged as the hand-over it belongs to


class Departure:
    """A session that left for ``member``, and its filters (plain and shared)."""

    __slots__ = ("filters", "key", "member", "timer", "visible")

    def __init__(self, key: SessionKey, member: str, filters: list[str]) -> None:
        self.key = key
        self.member = member
        self.filters = filters
        self.visible: int | None = None  # the revision from which the others route to it
        self.timer: asyncio.TimerHandle | None = None


class Departures:
    """The sessions that left this member, what is sent on to them and what is refused
    (``Handovers`` adds the rest of the protocol)."""

    def __init__(
        self, forwarder: Forwarder, announcer: RouteAnnouncer, local: LocalRouter, window: float
    ) -> None:
        self.forwarder = forwarder
        self.announcer = announcer
        self.local = local
        self.window = window
        self.departures: dict[SessionKey, Departure] = {}
        self._filters: SubscriptionTrie[SessionKey] = SubscriptionTrie()
        # Their shared subscriptions: (session, share name, filter) by filter.
        self._groups: SubscriptionTrie[tuple[SessionKey, str, str]] = SubscriptionTrie()
        # Messages routed before this revision are refused: a departure that old is over.
        self.fence = 0
        self.sent_on = 0  # messages sent on to a session's new member
        self.refused = 0  # messages refused (publishers not acknowledged)
        self._loop = asyncio.get_running_loop()

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

    def _visible(self, key: SessionKey, visible: int) -> None:
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

    def _refuse(self, key: SessionKey | None, why: str) -> "asyncio.Future[None]":
        self.refused += 1
        if key is None:
            log.warning("a forwarded message refused: %s", why)
        else:
            log.warning("a message sent on for session %s refused: %s", store_key(key), why)
        refused: asyncio.Future[None] = self._loop.create_future()
        refused.set_exception(ClusterUnavailableError(why))
        return refused
