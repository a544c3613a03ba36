"""Who gets a message: the ``Router`` interface and its local implementation.

``publish`` takes a message a client of this broker sent; ``deliver`` takes one that came
from elsewhere (another node of a cluster, later) and gives it to this broker's subscribers
only. ``LocalRouter`` does both the same way: one walk of the subscription trie (the cost
follows the topic's levels, not the number of filters), then one copy per subscribing
session at min(publish QoS, subscription QoS) (3.1.1 §3.8.4), with the retain flag 0
(§3.3.1.3: it matched an established subscription). MQTT 5 subscription options apply here:
No Local skips the publisher's own session, Retain As Published keeps the flag, and the
subscription's identifier joins the message's properties (5.0 §3.8.3.1, §3.3.4). A cluster
router adds forwarding to the nodes that have interest; subscribe and unsubscribe are where
it learns it. A QoS 2 message's copy routed again (``broker.cluster.resend``) skips a
session that brought a copy of it from another member (``BrokerSession.brought``).

For a persistent session every QoS 1 and 2 message is handed to the ``SessionStore`` before
it is sent, whether its client is connected or not, so that nothing the publisher had
acknowledged is lost (§4.3.2, §4.4); ``publish`` says whether it did, and the publisher's
PUBACK then waits for the commit. A session whose client is away keeps its copies within
its queue limits (``broker.away_queue``). A message whose Message Expiry Interval is 0 reaches only
the sessions whose client is connected (5.0 §3.3.2.3.3, ``broker.mqtt.expiry``).

Shared subscriptions (``$share/{group}/{filter}``, MQTT 5.0 §4.8.2, for 3.1.1 clients too)
are kept apart (``broker.mqtt.shared``): a message gets one copy per matching group, for the
member whose turn it is among those that can take it now, else one whose in-flight window is
full (it waits in that session's queue), else a persistent session whose client is away (it is
queued for it). A member whose ACL denies it the topic is passed over. When a member's session
ends with such copies not yet acknowledged, they go to another member (§4.8.2). The ranking
of members and the copy that remembers its group are ``broker.shared_members``. A message
with no shared subscription on the broker costs one emptiness test for them.
"""

import asyncio
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from auth.topics import split_shared, topic_matches
from broker.away_queue import AwayQueue
from broker.metrics import BrokerMetrics
from broker.mqtt.connection import CONNECTED
from broker.mqtt.expiry import for_connected_only
from broker.mqtt.limits import Limits
from broker.mqtt.properties import NO_PROPERTIES, Properties
from broker.mqtt.session import Outgoing, Subscription
from broker.mqtt.shared import SharedGroup, SharedSubscriptions
from broker.mqtt.trie import SubscriptionTrie, collect
from broker.outgoing import copy_for
from broker.session_store import SessionStore
from broker.sessions import BrokerSession, Group, Held
from broker.shared_members import SharedOutgoing, member_rank, takes_now
from broker.subscription_bytes import SubscriptionBytes

if TYPE_CHECKING:
    from broker.client import MqttClient


# Not frozen, as the hot path makes one per packet: a frozen dataclass's __init__ sets
# each field through object.__setattr__, four times the cost. Nothing changes one once made.
@dataclass(slots=True)
class Message:
    """An application message as routed: its topic in the broker's canonical form."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    properties: Properties = NO_PROPERTIES
    expires_at: float | None = None  # on the broker's clock (5.0 §3.3.2.3.3)
    origin: object | None = None  # the publisher's session, for No Local (5.0 §3.8.3.1)
    # In a cluster: its id there (the routing member's, then a count), and the revision of
    # the route table the member that first routed it had then (``broker.cluster.handover``).
    id: int = 0
    routed_at: int = 0


class Router(Protocol):
    def publish(self, message: Message) -> "bool | asyncio.Future[None]":
        """Route a message one of this broker's clients published; True if it made writes
        the publisher's acknowledgement must wait for the store to commit, or a future for
        everything it must wait for (other nodes' confirmations too)."""
        ...

    def publish_qos2(
        self, message: Message, session: BrokerSession, packet_id: int
    ) -> "bool | asyncio.Future[None]":
        """``publish`` for a persistent session's QoS 2 message, whose packet id the store
        keeps until PUBREL (§4.3.3): a cluster router keeps with it, until other members
        confirm it, what the PUBLISH sent again needs (``broker.cluster.resend``)."""
        ...

    def publish_again(
        self, message: Message, session: BrokerSession, packet_id: int
    ) -> "bool | asyncio.Future[None] | None":
        """Route again a QoS 2 message sent again whose first routing failed (as
        ``publish``), or what its first routing still waits for; None if neither."""
        ...

    def deliver(self, message: Message) -> bool:
        """Give a message that came from elsewhere to this broker's subscribers."""
        ...

    def subscribe(self, session: BrokerSession, topic_filter: str, sub: Subscription) -> None: ...
    def unsubscribe(self, session: BrokerSession, topic_filter: str) -> None: ...

    def seen(self, filters: list[str], within: float) -> "asyncio.Future[None] | None":
        """Done once messages published anywhere reach this broker's subscriptions to
        ``filters`` (a cluster's other members see them), or after ``within`` seconds; None
        if they do already (a single node: at once). Never fails."""
        ...

    def session_ended(self, gone: list[Outgoing]) -> None:
        """The messages an ended session had not delivered: those routed through a shared
        subscription go to another member (5.0 §4.8.2)."""
        ...

    @property
    def subscription_count(self) -> int: ...


class LocalRouter:
    def __init__(self, store: SessionStore, limits: Limits, metrics: BrokerMetrics) -> None:
        self.subscriptions: SubscriptionTrie[BrokerSession] = SubscriptionTrie()
        # Counted by device (or application) too, whose share of them the broker bounds.
        self.shared: SharedSubscriptions[BrokerSession] = SharedSubscriptions(_device)
        # What every session's filters, and every device's, are counted as (their bounds).
        self.subscription_bytes = SubscriptionBytes()
        self.store = store
        self.limits = limits
        # In a cluster: releases of messages held for a session arriving from another member
        # (``broker.sessions.Arrival``) that the acknowledgement of what was just routed
        # waits for. The caller takes them.
        self.waits: list[asyncio.Future[None]] = []
        self.metrics = metrics
        self.away = AwayQueue(store, limits, metrics)
        # While a batch is routed (a frame from another member): the clients given messages,
        # each written to once the batch is done (``MqttClient.deliver``), not once a message.
        self.later: set[MqttClient] | None = None

    @property
    def subscription_count(self) -> int:
        return len(self.subscriptions) + len(self.shared)

    def subscribe(self, session: BrokerSession, topic_filter: str, sub: Subscription) -> None:
        shared = split_shared(topic_filter)
        if shared is None:
            new = self.subscriptions.add(topic_filter, session, sub)
        else:
            new = self.shared.add(*shared, session, sub)
        if new:  # not an identical filter's options replaced (§3.8.4)
            self.subscription_bytes.added(session, topic_filter)

    def unsubscribe(self, session: BrokerSession, topic_filter: str) -> None:
        shared = split_shared(topic_filter)
        if shared is None:
            gone = self.subscriptions.remove(topic_filter, session)
        else:
            gone = self.shared.remove(*shared, session)
        if gone:
            self.subscription_bytes.removed(session, topic_filter)

    def seen(self, filters: list[str], within: float) -> "asyncio.Future[None] | None":
        return None  # every publisher is here

    def deliver(self, message: Message) -> bool:
        # No call for the plain subscriptions when none matches (a topic read through shared
        # subscriptions alone, as a fleet's telemetry often is).
        matches = self.subscriptions.match(message.topic)
        durable = self._deliver_plain(message, matches) if matches else False
        if self.shared.groups:
            durable |= self._deliver_shared(message)
        return durable

    # A client's message goes as one from elsewhere (a call less than a method calling it).
    publish = deliver

    def publish_qos2(self, message: Message, session: BrokerSession, packet_id: int) -> bool:
        self.store.pubrel_awaited(session, packet_id)
        return self.deliver(message)  # routing here never fails: nothing is sent again

    def publish_again(self, message: Message, session: BrokerSession, packet_id: int) -> None:
        return None

    def deliver_since(self, message: Message, since: float) -> bool:
        """A QoS 2 message routed again (``broker.cluster.resend``) that this broker gave
        its subscribers before, at ``since``: to the plain subscribers whose sessions came
        here after that only (none of them had it here); True if the store was written."""
        matches = self.subscriptions.match(message.topic)
        later = {session: sub for session, sub in matches.items() if session.since > since}
        return self._deliver_plain(message, later) if later else False

    def deliver_forwarded(
        self, message: Message, *, plain: bool, groups: Collection[tuple[str, str]]
    ) -> bool:
        """A message another node of a cluster routed here: to the subscribers of plain
        filters if ``plain``, and to the shared subscriptions ``groups`` (share name, filter)
        that node chose this one for (one node per group, MQTT 5.0 §4.8.2)."""
        durable = self._deliver_plain(message) if plain else False
        if groups:
            durable |= self._deliver_shared(message, groups)
        return durable

    def _deliver_plain(
        self,
        message: Message,
        matches: Mapping[BrokerSession, Subscription] | None = None,
        sent_on: bool = False,
        released: bool = False,
    ) -> bool:
        if matches is None:
            matches = self.subscriptions.match(message.topic)
        if not matches:
            return False
        durable = False
        topic, published_qos = message.topic, message.qos
        again = message.id if published_qos == 2 else 0
        connected_only = for_connected_only(message.properties)
        for session, sub in matches.items():
            denied = session.receive_denied
            if denied is not None and denied.fullmatch(topic) is not None:
                continue  # a deny rule wins over the wider filter it subscribed with
            if again and session.brought and again in session.brought:
                continue  # §4.3.3: it has this message, queued or sent, from another member
            if session is message.origin:
                mine = sub.for_publisher()  # No Local (5.0 §3.8.3.1)
                if mine is None:
                    continue
                sub = mine
            qos = published_qos if published_qos < sub.qos else sub.qos
            arrival = session.arrival
            if arrival is not None and not released:
                if arrival.held is not None:  # until every member's barrier came
                    self.waits.append(arrival.hold(message, sent_on))
                    continue
                if not (arrival.first_sent_on(message) if sent_on else arrival.first(message)):
                    continue  # a second copy: directly, and from the member it moved from
            client = session.client
            if connected_only and not self._connected(session):
                continue
            out = copy_for(message, session, sub, qos, Outgoing)
            if qos and session.persistent:
                if client is None:
                    durable |= self.away.keep(session, out)
                    continue
                self.store.message_queued(session, out)
                durable = True
            if client is not None:
                client.deliver(out, self.later)
        return durable

    # A message from another member for plain subscriptions alone (``deliver_forwarded``,
    # a call less: a frame holds hundreds).
    deliver_plain = _deliver_plain

    def deliver_to(
        self, session: BrokerSession, message: Message, *, released: bool = False
    ) -> bool:
        """A copy of ``message`` sent on for ``session`` alone (by the member of a cluster it
        moved from), through those of its plain subscriptions that match it, unless it had
        the message already (``broker.sessions.Arrival``), or one it held (``released``);
        True if the store was written."""
        topic = message.topic
        found: dict[BrokerSession, Subscription] = {}
        for topic_filter, sub in session.subscriptions.items():
            if split_shared(topic_filter) is None and topic_matches(topic, topic_filter):
                collect(found, {session: sub})
        if not found:
            return False
        return self._deliver_plain(message, found, sent_on=not released, released=released)

    def deliver_to_group(
        self, session: BrokerSession, message: Message, group: Group, *, released: bool = False
    ) -> bool:
        """``message`` to ``session`` as the member of its shared subscription ``group``
        (share name, filter) that gets the group's copy (a cluster hand-over sent it on),
        held if the session is arriving, unless it was held already (``released``); True
        if the store was written."""
        name, topic_filter = group
        shared = self.shared.group(name, topic_filter)
        sub = session.subscriptions.get(f"$share/{name}/{topic_filter}")
        if shared is None or sub is None:
            return False  # it left the group
        return self._send(shared, session, sub, message, released=released)

    def deliver_released(self, session: BrokerSession, held: list[Held]) -> bool:
        """What an arriving session held (``broker.sessions.Arrival.release``), in that
        order; True if the store was written."""
        durable = False
        for message, group in held:
            if group is None:
                durable |= self.deliver_to(session, message, released=True)
            else:
                durable |= self.deliver_to_group(session, message, group, released=True)
        return durable

    def _deliver_shared(
        self, message: Message, only: Collection[tuple[str, str]] | None = None
    ) -> bool:
        """One copy per shared subscription matching the message (MQTT 5.0 §4.8.2), or per
        one of ``only`` (share name, filter)."""
        topic, published_qos = message.topic, message.qos
        durable = False
        if only is None:
            groups: Iterable[SharedGroup[BrokerSession]] = self.shared.match(topic)
        else:
            found = (self.shared.group(name, topic_filter) for name, topic_filter in only)
            groups = [group for group in found if group is not None]
        for group in groups:
            # The member whose turn it is, if it can take the message now (most messages):
            # what ranking every member would choose, without ranking them (``pick``).
            session, sub = group.turn
            if takes_now(session, sub, topic, published_qos):
                group.passed()
            else:
                chosen = group.pick(member_rank(message))
                if chosen is None:
                    continue
                session, sub = chosen
            durable |= self._send(group, session, sub, message)
        return durable

    def session_ended(self, gone: list[Outgoing]) -> None:
        """§4.8.2: a message sent to a member whose session ended before it was acknowledged
        SHOULD go to another member of the shared subscription. The ended session has left
        its groups by now, so the pick is among the others. A QoS 2 message sent once goes
        to no other member [MQTT-4.8.2-5]: the client may have it, and exactly once is the
        promise (a queued one, never sent, does go). No publisher waits for an arriving
        member's release."""
        mark = len(self.waits)
        for out in gone:
            if not isinstance(out, SharedOutgoing) or (out.qos == 2 and out.sent):
                continue
            group = out.group
            if self.shared.group(group.name, group.topic_filter) is not group:
                continue  # nobody is left in it
            chosen = group.pick(member_rank(out.message))
            if chosen is not None:
                self._send(group, *chosen, out.message)
        del self.waits[mark:]

    def _send(
        self,
        group: SharedGroup[BrokerSession],
        session: BrokerSession,
        sub: Subscription,
        message: Message,
        *,
        released: bool = False,
    ) -> bool:
        """Give the member of ``group`` chosen its copy; True if the store was written. A
        session arriving from another member of a cluster holds it with the rest of what
        reaches it, to be given in each publisher's order (``broker.sessions.Arrival``)."""
        arrival = session.arrival
        if arrival is not None and arrival.held is not None and not released:
            group_id = (group.name, group.topic_filter)
            self.waits.append(arrival.hold(message, sent_on=False, group=group_id))
            return False
        published_qos = message.qos
        qos = published_qos if published_qos < sub.qos else sub.qos  # not min(): a call less
        if qos == 2 and session.brought and message.id in session.brought:
            return False  # as in ``_deliver_plain``: it has this message
        client = session.client
        if for_connected_only(message.properties) and not self._connected(session):
            return False
        out = copy_for(message, session, sub, qos, SharedOutgoing)
        out.group, out.message = group, message
        if client is None:
            return self.away.keep(session, out) if qos and session.persistent else False
        durable = False
        if qos and session.persistent:
            self.store.message_queued(session, out)
            durable = True
        client.deliver(out, self.later)
        return durable

    def _connected(self, session: BrokerSession) -> bool:
        """Whether a message of lifetime 0 goes to ``session`` (``broker.mqtt.expiry``)."""
        client = session.client
        if client is not None and client.core.state == CONNECTED:  # not after DISCONNECT
            return True
        self.metrics.count_limit("message_expiry")  # its copy expired, as the core counts it
        return False


def _device(session: BrokerSession) -> str:
    """Whose a shared subscription's member is (``SharedSubscriptions.named_by``)."""
    return session.key[0]
