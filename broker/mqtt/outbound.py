"""The sending half of a client connection (``broker.mqtt.connection``), no I/O.

Messages go to the client at once while its in-flight window has room, else they wait in the
session's queue, so one subscriber gets them in order (MQTT 3.1.1 §4.6); a completed flight
lets the next ones go (§4.4). An expired message (5.0 §3.3.2.3.3) or one larger than a 5.0
client reads (§3.1.2.11.4) leaves as if delivered; one whose Message Expiry Interval is 0
goes at once or not at all (``broker.mqtt.expiry``). Also here: the acknowledgements of what
the client sent (PUBACK, PUBREC, and the PUBREL / PUBCOMP of a QoS 2 flow, §4.3) and SUBACK /
UNSUBACK. Everything made is queued in ``_out`` for ``Connection.data_to_send``.
"""

from collections import deque
from typing import Final

from broker.mqtt.codes import Reason
from broker.mqtt.encode import encode, encode_publish
from broker.mqtt.events import Event, MessageDropped, MessageSent
from broker.mqtt.expiry import expired, for_connected_only
from broker.mqtt.limits import Limits
from broker.mqtt.packets import MQTT_5, Puback, Pubcomp, Pubrec, Pubrel, Suback, Unsuback
from broker.mqtt.session import Outgoing, Session
from broker.mqtt.v5 import Negotiated

NO_EVENTS: Final[list[Event]] = []  # returned, never appended to


class Outbound:
    """What ``Connection`` sends; the state it sends from (``Connection`` sets it)."""

    __slots__ = (
        "_deferred",
        "_out",
        "_pubrec_due",
        "_pubrel_held",
        "_unacknowledged",
        "level",
        "limits",
        "now",
        "session",
        "v5",
        "window",
    )

    limits: Limits
    level: int
    now: float
    session: Session | None
    v5: Negotiated | None
    window: int
    _out: list[bytes]
    # Messages in flight from the last connection that go again once the client's Receive
    # Maximum lets them (5.0 §4.9, ``Handshake._resend_quota``), in order. None: none.
    _deferred: deque[Outgoing] | None
    _unacknowledged: int  # QoS 1 PUBLISHes the client sent whose PUBACK has not gone yet
    _pubrec_due: int  # QoS 2 PUBLISHes the client sent (again too) whose PUBREC has not gone
    # Packet ids of stored QoS 2 messages whose PUBREC came and whose PUBREL has not gone out
    # on this connection yet (the broker holds it for the store, ``release``). None: none
    # yet; most connections never hold one.
    _pubrel_held: set[int] | None

    def publish(self, message: Outgoing, now: float | None = None) -> list[Event]:
        """Send ``message`` to the client now, or queue it behind the in-flight window or
        the messages already waiting (so one subscriber gets them in order, §4.6). Called as
        the message is published: one whose lifetime is 0 is sent now or never."""
        if now is not None:
            self.now = now
        session = self.session
        assert session is not None
        if session.queue or (message.qos and len(session.inflight) >= self.window):
            if for_connected_only(message.properties):
                # 5.0 §3.3.2.3.3: a lifetime of 0 does not wait for a turn that comes later.
                return [MessageDropped(message, "message_expiry")]
            return self._dropped(session.enqueue(message, self.limits, self.now))
        if message.qos:
            session.start_flight(message)
        event = self._send_first(message, publishing=True)
        return [event] if event is not None else NO_EVENTS

    def acknowledge(self, packet_id: int, qos: int, reason_code: int = 0) -> None:
        """Acknowledge a PUBLISH the client sent: PUBACK for QoS 1, PUBREC for QoS 2; a 5.0
        client learns a refusal from ``reason_code`` (§3.4.2.1), which ends a QoS 2 flow."""
        kind = Puback if qos == 1 else Pubrec
        if qos == 1 and self._unacknowledged:
            self._unacknowledged -= 1  # 5.0 §4.9: one more the client may send
        elif qos == 2 and self._pubrec_due:
            self._pubrec_due -= 1
        if reason_code and self.level == MQTT_5:
            if reason_code >= Reason.UNSPECIFIED_ERROR and self.session is not None:
                self.session.awaiting_pubrel.discard(packet_id)  # §4.3.3: no PUBREL follows
            self._out.append(encode(kind(packet_id, reason_code), MQTT_5))
            return
        self._ack(kind, packet_id, False)

    def release(self, message: Outgoing) -> None:
        """PUBREL for a stored QoS 2 message's PUBREC (``MessageReleased``, ``PubrelAgain``),
        once the store committed its release. Nothing if the message is no longer in flight
        (completed by the PUBCOMP of a PUBREL sent before this one): its packet id may be a
        new message's already, which this PUBREL would release unsent (§4.3.3)."""
        session = self.session
        packet_id = message.packet_id
        if session is None or session.inflight.get(packet_id) is not message:
            return
        if self._pubrel_held is not None:
            self._pubrel_held.discard(packet_id)
        self._ack(Pubrel, packet_id, False)

    def _hold_pubrel(self, packet_id: int) -> None:
        """The PUBREL for ``packet_id`` waits for the broker (``release``): until it is out,
        the client has nothing to answer with PUBCOMP (``Connection._completed``)."""
        if self._pubrel_held is None:
            self._pubrel_held = set()
        self._pubrel_held.add(packet_id)

    def complete(self, packet_id: int, *, known: bool = True) -> None:
        """PUBCOMP for a persistent session's PUBREL (``PublishReleased``), once the store
        committed the packet id's release; a 5.0 client learns of an id not ``known``."""
        self._ack(Pubcomp, packet_id, not known)

    def suback(self, packet_id: int, codes: list[int]) -> None:
        self._out.append(encode(Suback(packet_id, tuple(codes)), self.level))

    def unsuback(self, packet_id: int, codes: list[int] | None = None) -> None:
        self._out.append(encode(Unsuback(packet_id, tuple(codes or ())), self.level))

    def _pump(self, events: list[Event]) -> None:
        """Send queued messages while the in-flight window has room (§4.4, §4.6)."""
        session = self.session
        assert session is not None
        deferred = self._deferred
        while deferred and len(session.inflight) - len(deferred) < self.window:
            self._resend(deferred.popleft(), events)  # they go before any queued one (§4.6)
        while (message := session.next_to_send(self.window)) is not None:
            event = self._send_first(message)
            if event is not None:
                events.append(event)

    def _resend(self, message: Outgoing, events: list[Event]) -> None:
        """A message in flight since an earlier connection, again with DUP (§4.4); one
        larger than the client reads now leaves as if delivered (5.0 §3.1.2.11.4)."""
        message.sent = True
        data = self._publish_bytes(message, dup=True)
        if data:
            self._out.append(data)
            return
        assert self.session is not None
        del self.session.inflight[message.packet_id]
        events.append(MessageDropped(message, "client_maximum_packet_size"))

    def _defer(self, message: Outgoing) -> None:
        if self._deferred is None:
            self._deferred = deque()
        self._deferred.append(message)

    def _undefer(self, message: Outgoing) -> None:
        """The client answered a message waiting to go again (it had it after all)."""
        deferred = self._deferred
        if deferred and message in deferred:
            deferred.remove(message)

    def _send_first(self, message: Outgoing, *, publishing: bool = False) -> Event | None:
        """The first send of a message (in flight already if QoS 1 or 2). An expired one
        is not delivered (5.0 §3.3.2.3.3), nor one larger than the client reads (§3.1.2.11.4):
        both leave as if delivered. ``publishing``: sent as part of its publish, where a
        Message Expiry Interval of 0 has not expired (``broker.mqtt.expiry``)."""
        expires = message.expires_at
        if expires is not None and expired(message, self.now, publishing=publishing):
            return self._unsent(message, "message_expiry")
        data = self._publish_bytes(message)
        if not data:
            return self._unsent(message, "client_maximum_packet_size")
        self._out.append(data)
        if not message.qos:
            return None
        message.sent = True
        return MessageSent(message)

    def _unsent(self, message: Outgoing, why: str) -> MessageDropped:
        """``message`` leaves as if delivered, out of flight if it was in it."""
        if message.qos:
            assert self.session is not None
            del self.session.inflight[message.packet_id]
        return MessageDropped(message, why)

    def _publish_bytes(self, message: Outgoing, *, dup: bool = False) -> bytes:
        """The PUBLISH for ``message``; b"" if it is larger than a 5.0 client reads (the
        properties, topic aliases and the client's limit are ``Negotiated``'s business)."""
        level = self.level
        if level != MQTT_5:
            return encode_publish(
                message.topic.encode(), message.payload, message.qos, message.packet_id,
                retain=message.retain, dup=dup, level=level,
            )  # fmt: skip
        assert self.v5 is not None
        return self.v5.publish_bytes(message, self.now, dup=dup)

    def _ack(
        self, kind: type[Puback | Pubrec | Pubrel | Pubcomp], packet_id: int, missing: bool
    ) -> None:
        if self.level == MQTT_5 and missing:
            self._out.append(encode(kind(packet_id, Reason.PACKET_IDENTIFIER_NOT_FOUND), MQTT_5))
        elif kind is Pubrel:
            self._out.append(b"\x62\x02" + packet_id.to_bytes(2, "big"))
        else:
            first = 0x40 if kind is Puback else 0x50 if kind is Pubrec else 0x70
            self._out.append(bytes((first, 2)) + packet_id.to_bytes(2, "big"))

    def _dropped(self, dropped: list[tuple[Outgoing, str]]) -> list[Event]:
        if not dropped:
            return NO_EVENTS
        return [MessageDropped(message, limit) for message, limit in dropped]
