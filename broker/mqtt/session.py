"""What outlives one network connection: a session (MQTT 3.1.1 §3.1.2.4, 5.0 §4.1).

A ``Session`` holds the client's subscriptions with their options, the messages waiting for
it (the queue, with its size in bytes), the messages sent and not yet acknowledged (with their
QoS 2 state), the ids of QoS 2 messages it sent whose PUBREL has not come yet, and the next
packet id. It is the same object whether its client is connected or not: a connection
(``broker.mqtt.connection``) works on it, and the broker keeps it after when persistent.

``Outgoing`` is one message on its way to the session's client. It is mutable on purpose:
its packet id and state change as the QoS flow advances (§4.3), and the persistence layer
keeps a handle to it (``stored``) that follows those changes.
"""

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

from broker.mqtt.limits import Limits
from broker.mqtt.properties import NO_PROPERTIES, Properties
from broker.mqtt.queues import NEVER, NO_QUEUE, expired_of_device, next_expiry, remove, take_expired
from broker.mqtt.queues import QueueTally as QueueTally  # where it was first
from broker.mqtt.wire import utf8_length

QUEUED, SENT, RELEASED = 0, 1, 2  # an Outgoing's state
_MAX_PACKET_ID = 65535  # §2.3.1: a two-byte, non-zero id


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription's options (3.1.1 §3.8.3.1, 5.0 §3.8.3.1).

    ``me_form``: the client wrote the filter in the ``v1/devices/me`` form, so its messages go
    out in that form (``auth.acl.to_device_form``); the core only stores it.
    """

    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    identifier: int | None = None
    me_form: bool = False
    # When several subscriptions of one session match a message, the one copy sent carries
    # the identifiers of all of them (MQTT 5 §3.3.4): the others', set by the matching.
    more_identifiers: tuple[int, ...] = ()

    @property
    def identifiers(self) -> tuple[int, ...]:
        own = (self.identifier,) if self.identifier is not None else ()
        return own + self.more_identifiers

    def for_publisher(self) -> "Subscription | None":
        """What delivers a message that the subscribing session published itself: None
        under No Local (5.0 §3.8.3.1 [MQTT-3.8.3-3])."""
        return None if self.no_local else self


@dataclass(frozen=True, slots=True)
class Overlap(Subscription):
    """Several subscriptions of one session that match one message, which gets one copy
    (5.0 §3.3.4, 3.1.1 §3.3.5): at the highest QoS of them [MQTT-3.3.4-2], with all their
    identifiers [MQTT-3.3.4-4] and the RETAIN flag kept if one has Retain As Published. No
    Local is each subscription's own (§3.8.3.1): ``no_local`` is set only if all have it,
    and ``publisher`` is, when only some have it, those without it merged, which deliver
    the session's own messages (at their QoS and identifiers, not the others')."""

    publisher: Subscription | None = None

    def for_publisher(self) -> Subscription | None:
        if self.no_local:
            return None
        return self.publisher or self


def overlap(known: Subscription, other: Subscription) -> Subscription:
    """The one copy's subscription for two subscriptions of a session matching a message."""
    chosen = other if other.qos > known.qos else known
    if (
        type(known) is Subscription  # not an Overlap already
        and known.identifier is None
        and other.identifier is None
        and known.no_local == other.no_local
        and known.retain_as_published == other.retain_as_published
    ):
        return chosen  # the common case (3.1.1 has none of these options)
    mine, theirs = known.for_publisher(), other.for_publisher()
    if mine is None or theirs is None:
        publisher = mine or theirs  # only one of them delivers the session's own messages
    elif mine is known and theirs is other:
        publisher = None  # both do: the overlap itself
    else:
        publisher = overlap(mine, theirs)
    return Overlap(
        chosen.qos,
        no_local=mine is None and theirs is None,
        retain_as_published=known.retain_as_published or other.retain_as_published,
        retain_handling=chosen.retain_handling,
        me_form=chosen.me_form,
        more_identifiers=tuple(dict.fromkeys((*known.identifiers, *other.identifiers))),
        publisher=publisher,
    )


class Outgoing:
    """One application message for a session's client, at the QoS it is delivered with."""

    __slots__ = (
        "expires_at", "message_id", "packet_id", "payload", "properties", "qos", "retain",
        "sent", "size", "state", "stored", "topic",
    )  # fmt: skip

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool = False,
        properties: Properties = NO_PROPERTIES,
        expires_at: float | None = None,
    ) -> None:
        self.topic = topic  # as the client sees it
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties  # MQTT 5's, as they go to the client (§3.3.2.3)
        # When it expires on the broker's clock (5.0 §3.3.2.3.3: Message Expiry Interval).
        self.expires_at = expires_at
        self.packet_id = 0  # assigned when first sent (QoS 1 and 2)
        self.state = QUEUED
        self.sent = False  # sent at least once: a re-delivery carries DUP (§3.3.1.1)
        # What the queue accounts for: MQTT 5 properties too (§3.3.2.3.7), and the topic's
        # UTF-8 bytes (§1.5.3), not its characters.
        self.size = len(payload) + utf8_length(topic) + (len(properties.wire) if properties else 0)
        self.stored: object | None = None  # the persistence layer's handle
        # In a cluster, a QoS 2 message's cluster-wide id (``broker.cluster.resend``); 0: none.
        self.message_id = 0

    def __repr__(self) -> str:
        return f"Outgoing({self.topic!r}, qos={self.qos}, id={self.packet_id}, state={self.state})"


class Session:
    __slots__ = (
        "_next_id", "awaiting_pubrel", "expiring", "expiry_due", "inflight", "key", "persistent",
        "queue", "queued_bytes", "queued_qos0", "subscriptions", "tally",
    )  # fmt: skip

    def __init__(self, key: Hashable, *, persistent: bool) -> None:
        self.key = key
        self.persistent = persistent  # CleanSession 0 (3.1.1 §3.1.2.4)
        self.subscriptions: dict[str, Subscription] = {}
        # Sent and not yet acknowledged, in the order sent (§4.6): packet id -> message.
        self.inflight: dict[int, Outgoing] = {}
        self.queue: deque[Outgoing] = NO_QUEUE  # its own once something is queued
        self.queued_bytes = 0
        self.queued_qos0 = 0
        self.tally: QueueTally | None = None  # its device's queues (None: not bounded)
        # The queued messages that have an expiry, in queue order; and when a scan of them
        # is due (NEVER: their deadlines are in that order), ``broker.mqtt.queues``.
        self.expiring: deque[Outgoing] = NO_QUEUE
        self.expiry_due = NEVER
        self.awaiting_pubrel: set[int] = set()  # inbound QoS 2 ids (§4.3.3, method A)
        self._next_id = 1

    def __repr__(self) -> str:
        return f"Session({self.key!r}, persistent={self.persistent})"

    # --- the queue ---------------------------------------------------------------------------

    def attach(self, tally: QueueTally) -> None:
        """Count this session's queue in its device's ``tally`` from now on (once)."""
        if self.tally is tally:
            return
        assert self.tally is None, "a session counts in one device's tally"
        self.tally = tally
        tally.bytes += self.queued_bytes
        tally.messages += len(self.queue)
        tally.sessions.append(self)
        tally.expiry_due = min(tally.expiry_due, next_expiry(self))

    def enqueue(
        self, message: Outgoing, limits: Limits, now: float | None = None
    ) -> list[tuple[Outgoing, str]]:
        """Queue ``message``; the messages dropped to keep within the limits (it may be one),
        each with the limit it hit.

        Past ``max_queued_messages`` or ``max_queued_bytes``, QoS 0 messages go first (they
        may be lost anyway, §4.3.1), then the oldest. Past a device's bound (all its
        sessions' queues together) the same, from this session's own queue, never another
        session's; if the device's other sessions hold the bound without it, ``message``
        itself is dropped (dropping this queue would make no room). Before any of that, the
        messages expired by ``now`` (5.0 §3.3.2.3.3), of the device's other queues too, go
        ("message_expiry"): never delivered, they take no room from live ones. A queue read
        back past a bound (``_over``) keeps what it has: ``message`` goes.
        """
        if message.size > limits.max_queued_bytes:
            return [(message, "max_queued_bytes")]
        dropped: list[tuple[Outgoing, str]] = []
        crowded = self._crowded(message, limits)
        if crowded is not None and now is not None:  # expired messages make room first
            dropped, now = self._expired(now), None  # once: ``now`` is spent
            crowded = self._crowded(message, limits)
        if crowded is not None:
            dropped.append((message, crowded))
            return dropped
        while (limit := self._past(message, limits)) is not None:
            if now is not None:
                dropped, now = self._expired(now), None
                if dropped:
                    continue
            over = self._over(limits)  # read back past a bound: those stay, ``message`` goes
            if over is not None or not self.queue or (not self.queued_qos0 and message.qos == 0):
                dropped.append((message, over or limit))
                return dropped
            dropped.append((self._remove_victim(), limit))
        self._append(message)
        return dropped

    def _expired(self, now: float) -> list[tuple[Outgoing, str]]:
        """Make room at a bound: the expired messages of this queue, then of the device's."""
        tally = self.tally
        if (tally is None or now < tally.expiry_due) and now < next_expiry(self):
            return []  # the usual case: nothing due
        gone = self.purge_expired(now)
        if tally is not None:
            gone += expired_of_device(tally, now, self)
        return [(message, "message_expiry") for message in gone]

    def purge_expired(self, now: float) -> list[Outgoing]:
        """Take the messages expired by ``now`` out of the queue, no longer counted, for the
        caller to forget (``broker.mqtt.queues``)."""
        if now < next_expiry(self):
            return []
        gone, self.expiry_due = take_expired(self.expiring, now, self.expiry_due)
        remove(self.queue, gone)
        for message in gone:
            self._left_queue(message)
        return gone

    def _crowded(self, message: Outgoing, limits: Limits) -> str | None:
        """The device's bound ``message`` passes even with this session's queue empty."""
        tally = self.tally
        if tally is None:
            return None
        if tally.messages - len(self.queue) >= limits.max_queued_messages_per_device:
            return "max_queued_messages_per_device"
        if tally.bytes - self.queued_bytes + message.size > limits.max_queued_bytes_per_device:
            return "max_queued_bytes_per_device"
        return None

    def _past(self, message: Outgoing, limits: Limits) -> str | None:
        """The limit queueing ``message`` now would pass, if any."""
        if len(self.queue) >= limits.max_queued_messages:
            return "max_queued_messages"
        if self.queued_bytes + message.size > limits.max_queued_bytes:
            return "max_queued_bytes"
        tally = self.tally
        if tally is None:
            return None
        if tally.messages >= limits.max_queued_messages_per_device:
            return "max_queued_messages_per_device"
        if tally.bytes + message.size > limits.max_queued_bytes_per_device:
            return "max_queued_bytes_per_device"
        return None

    def _over(self, limits: Limits) -> str | None:
        """The bound this queue or its device's is past already: only one read back can be,
        whose messages were acknowledged to their publishers and are kept (3.1.1 §4.1)."""
        if len(self.queue) > limits.max_queued_messages:
            return "max_queued_messages"
        if self.queued_bytes > limits.max_queued_bytes:
            return "max_queued_bytes"
        if (tally := self.tally) and tally.messages > limits.max_queued_messages_per_device:
            return "max_queued_messages_per_device"
        if tally and tally.bytes > limits.max_queued_bytes_per_device:
            return "max_queued_bytes_per_device"
        return None

    def _append(self, message: Outgoing) -> None:
        if self.queue is NO_QUEUE:
            self.queue = deque()
        self.queue.append(message)
        self.queued_bytes += message.size
        if message.qos == 0:
            self.queued_qos0 += 1
        expires = message.expires_at
        if expires is not None:
            expiring = self.expiring
            if expiring is NO_QUEUE:
                expiring = self.expiring = deque()
            elif expiring and expires < expiring[-1].expires_at:  # type: ignore[operator]  # it has one
                self.expiry_due = min(self.expiry_due, expires)  # out of order: a scan finds it
            expiring.append(message)
        if self.tally is not None:
            self.tally.bytes += message.size
            self.tally.messages += 1
            if expires is not None and expires < self.tally.expiry_due:
                self.tally.expiry_due = expires

    def _left_queue(self, message: Outgoing) -> None:
        """``message`` is out of the queue (sent, dropped): its bytes are released."""
        self.queued_bytes -= message.size
        if message.qos == 0:
            self.queued_qos0 -= 1
        if self.tally is not None:
            self.tally.bytes -= message.size
            self.tally.messages -= 1

    def _remove_victim(self) -> Outgoing:
        if self.queued_qos0:
            for index, queued in enumerate(self.queue):
                if queued.qos == 0:
                    del self.queue[index]
                    if queued.expires_at is not None:
                        self.expiring.remove(queued)
                    self._left_queue(queued)
                    return queued
        victim = self.queue.popleft()
        if victim.expires_at is not None:  # the first of ``expiring`` too (queue order)
            self.expiring.popleft()
        self._left_queue(victim)
        return victim

    def next_to_send(self, window: int) -> Outgoing | None:
        """The first queued message, if the in-flight window (``window`` messages) lets it go
        now: QoS 1 and 2 messages get their packet id and join the in-flight messages
        (§4.3.2, §4.3.3)."""
        if not self.queue:
            return None
        message = self.queue[0]
        if message.qos and len(self.inflight) >= window:
            return None
        self.queue.popleft()
        if message.expires_at is not None:  # the first of ``expiring`` too (queue order)
            self.expiring.popleft()
        self._left_queue(message)
        if message.qos:
            self.start_flight(message)
        return message

    def start_flight(self, message: Outgoing) -> None:
        """Give a QoS 1 or 2 message its packet id and count it in flight."""
        message.packet_id = self.next_packet_id()
        message.state = SENT
        self.inflight[message.packet_id] = message

    def next_packet_id(self) -> int:
        """An id no message in flight uses (§2.3.1); ids go round from 65535 to 1."""
        if len(self.inflight) >= _MAX_PACKET_ID:
            raise RuntimeError("every packet id is in use")
        candidate = self._next_id
        while candidate in self.inflight:
            candidate = candidate % _MAX_PACKET_ID + 1
        self._next_id = candidate % _MAX_PACKET_ID + 1
        return candidate

    def restore(self, message: Outgoing) -> None:
        """Put back a message read from the store: in flight with its original packet id
        (§4.4) if it was sent, else at the end of the queue, whatever the limits."""
        if message.state != QUEUED and message.packet_id:
            self.inflight[message.packet_id] = message
            self._next_id = message.packet_id % _MAX_PACKET_ID + 1
            return
        self._append(message)

    # --- acknowledgements ----------------------------------------------------------------

    def released(self, packet_id: int) -> Outgoing | None:
        """PUBREC for a QoS 2 message: it now waits for PUBCOMP (§4.3.3)."""
        message = self.inflight.get(packet_id)
        if message is None or message.qos != 2 or message.state != SENT:
            return None
        message.state = RELEASED
        return message

    def completed(self, packet_id: int, qos: int) -> Outgoing | None:
        """PUBACK (``qos`` 1) or PUBCOMP (``qos`` 2): the message is delivered."""
        message = self.inflight.get(packet_id)
        if message is None or message.qos != qos:
            return None
        if qos == 2 and message.state != RELEASED:
            return None
        del self.inflight[packet_id]
        return message

    def clear(self) -> list[Outgoing]:
        """Forget every message, as a clean session ends (§3.1.2.4); what was forgotten.
        The session no longer counts in its device's tally: it is gone from the broker."""
        gone = [*self.inflight.values(), *self.queue]
        if self.tally is not None:
            self.tally.bytes -= self.queued_bytes
            self.tally.messages -= len(self.queue)
            self.tally.sessions.remove(self)
            self.tally = None
        self.inflight.clear()
        self.queue.clear()
        self.expiring.clear()
        self.queued_bytes = self.queued_qos0 = 0
        self.expiry_due = NEVER
        self.awaiting_pubrel.clear()
        return gone
