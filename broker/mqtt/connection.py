"""One client's network connection, server side: the whole protocol state, no I/O.

Bytes in, events out: ``receive_data(data, now)`` splits what the client sent into packets,
checks each (a violation ends the connection, 3.1.1 §4.8), answers what needs no decision
(PINGRESP, PUBREL, PUBCOMP) and returns the events the broker acts on, in arrival order
(§4.6). It stops after a SUBSCRIBE or UNSUBSCRIBE, which the broker answers, so that answers
leave in the order of the packets they answer: ``more_to_read`` then says to call again
(with ``b""``). A DISCONNECT ends processing: whatever came after it in the same read is
ignored, whatever came before it is returned first.

Backpressure and fairness (``broker.mqtt.intake``): processing stops before the next packet
once ``window_full`` (MQTT 3.1/3.1.1: ``max_awaiting_pubrel`` QoS 1/2 PUBLISHes unanswered) or
``turn_over`` (``TURN_BUDGET`` packets this call, a packet counting one more per KB of it);
the rest stays unread until then. A SUBSCRIBE or UNSUBSCRIBE carries at most
``max_filters_per_subscribe`` filters to the broker; the rest are checked, then refused. A 5.0
SUBACK or UNSUBACK larger than the client reads closes the connection instead (both
``broker.mqtt.filter_bounds``).

Commands in, bytes out: ``accept``, ``refuse``, ``publish``, ``acknowledge``, ``suback`` and
``unsuback`` queue the packets they make; ``data_to_send()`` returns them, in order, for the
I/O layer to write. The sending half (the in-flight window, the queue, acknowledgements) is
``broker.mqtt.outbound``; the CONNECT's reading, ``accept``, ``refuse`` and the server's
``disconnect`` are ``broker.mqtt.handshake``, where the states are.

States: waiting for CONNECT, then authenticating (the broker decides; bytes that arrive
meanwhile are kept, unread, until ``accept``), connected, closed. The clock is passed in
(``now``, in seconds), so keep-alive (§3.1.2.10) and message expiry are tested without waiting.

MQTT 5 (level 5) on the same machine: the CONNECT's requests and the CONNACK's answer, topic
aliases both ways, the client's Receive Maximum and Maximum Packet Size on what it is sent,
reason codes and strings on refusals and on a server DISCONNECT (``broker.mqtt.v5``).
"""

from typing import Final

from auth.connack import ConnackCode
from broker.mqtt.codes import Reason
from broker.mqtt.decode import decode, decode_publish
from broker.mqtt.encode import PINGRESP_BYTES
from broker.mqtt.events import (
    ConnectionRefused,
    DuplicateReceived,
    Event,
    LimitExceeded,
    MessageCompleted,
    MessageReleased,
    ProtocolViolation,
    PublishReleased,
    PubrelAgain,
)
from broker.mqtt.filter_bounds import oversized_answer, turn_cost, unanswerable
from broker.mqtt.filters import decode_filters
from broker.mqtt.handshake import AUTHENTICATING, AWAITING_CONNECT, CLOSED, CONNECTED
from broker.mqtt.intake import KEEP_ALIVE_GRACE, TURN_BUDGET, TURN_BYTES, Intake
from broker.mqtt.limits import Limits
from broker.mqtt.outbound import NO_EVENTS
from broker.mqtt.packets import (
    MQTT_5,
    Disconnect,
    PacketType,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Unsubscribe,
    Will,
)
from broker.mqtt.properties import NO_PROPERTIES
from broker.mqtt.rules import header_problem, header_reason, packet_name
from broker.mqtt.session import RELEASED, SENT, Session
from broker.mqtt.v5 import Negotiated
from broker.mqtt.wire import Reader
from nanoiot.errors import ConnectRefused, ProtocolError

__all__ = [
    "AUTHENTICATING", "AWAITING_CONNECT", "CLOSED", "CONNECTED", "KEEP_ALIVE_GRACE", "TURN_BUDGET",
    "Connection",
]  # fmt: skip

_MQTT_5_CONNECT: Final = b"\x00\x04MQTT\x05"  # how a 5.0 CONNECT body starts (§3.1.2.1-2)
# A PUBLISH's new property list costs a packet's work per 32 bytes read: 256 empty user
# properties (1.3 KB) as much as 40 small PUBLISHes. Counted against the turn at that rate.
_PROPERTY_BYTES: Final = 32


class Connection(Intake):
    # And Intake's, Handshake's and Outbound's.
    __slots__ = ("_known",)

    def __init__(self, limits: Limits, now: float = 0.0) -> None:
        self.limits = limits
        self.state = AWAITING_CONNECT
        self.level = 0  # the protocol level, once CONNECT is read
        self.keep_alive = 0
        self.last_received = now
        self.will: Will | None = None  # dropped when the client says DISCONNECT (§3.14.4)
        self.session: Session | None = None
        self._pending = b""
        self._read_at = 0
        self._wanted = 0
        self._tail = bytearray()
        self._known = NO_PROPERTIES  # the properties of the client's last PUBLISH (MQTT 5)
        self._out: list[bytes] = []
        self._pubrel_held = None
        self._deferred = None
        self.now = now  # the clock at the last call that passed it
        self.window = limits.max_inflight  # QoS 1 and 2 messages in flight to the client
        self.v5: Negotiated | None = None  # what a 5.0 CONNECT asked for, its topic aliases
        self._unacknowledged = 0  # QoS 1 PUBLISHes received whose PUBACK has not gone
        self._pubrec_due = 0  # QoS 2 PUBLISHes received whose PUBREC has not gone
        self._read_limit = limits.max_awaiting_pubrel  # 5.0: none (``_negotiate``)
        self._turn_left = TURN_BUDGET  # packets (and filters) this turn still handles

    # --- output -------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """What the connection made since the last call, to write to the client."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    # --- input --------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Process what the client sent; the events, in order."""
        if self.state == CLOSED:
            return NO_EVENTS
        self.now = now
        if data:
            self.keep(data)
        if self.state == AUTHENTICATING or self._tail:
            return NO_EVENTS  # read once the broker has decided (``accept``); not whole yet
        data, start = self._pending, self._read_at
        self._pending, self._read_at = b"", 0
        events: list[Event] = []
        at = self._split(data, start, now, events)
        if at < len(data) and self.state != CLOSED:
            self._pending, self._read_at = data, at
        return events

    def _split(self, data: bytes, at: int, now: float, events: list[Event]) -> int:
        """Handle every whole packet in ``data`` from ``at`` on; where the rest starts."""
        size, turn_bytes = len(data), TURN_BYTES
        while at < size and self.state in (AWAITING_CONNECT, CONNECTED):
            if self._unacknowledged + self._pubrec_due >= self._read_limit:
                return at  # ``window_full`` (inline: once per packet): the rest waits
            if self._turn_left <= 0:
                return at  # ``turn_over``: other connections' turn first
            first = data[at]
            connected = self.state != AWAITING_CONNECT
            problem = header_problem(first, level=self.level, connected=connected)
            if problem is not None:
                code = header_reason(first, level=self.level, connected=connected)
                self._violation(events, problem, code)
                return at
            index, length, shift = at + 1, 0, 0
            while True:
                if index >= size:
                    return at  # the remaining length is not all here yet
                byte = data[index]
                index += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift == 28:
                    message = "remaining length longer than 4 bytes (§2.2.3)"
                    self._violation(events, message, Reason.MALFORMED_PACKET)
                    return at
            end = index + length
            if end - at > self.limits.max_packet_size:
                message = (
                    f"{packet_name(first)} of {end - at} bytes exceeds "
                    f"max_packet_size {self.limits.max_packet_size}"
                )
                if self.state == AWAITING_CONNECT and data[index : index + 7] == _MQTT_5_CONNECT:
                    self.level = MQTT_5  # 5.0 §3.2.2.2: a CONNACK says why, 0x95
                    self.refuse(ConnackCode.SERVER_UNAVAILABLE, Reason.PACKET_TOO_LARGE, message)
                    events.append(ConnectionRefused(message, ConnackCode.SERVER_UNAVAILABLE))
                    return at
                self._violation(events, message, Reason.PACKET_TOO_LARGE)
                return at
            if end > size:
                self._wanted = end - at  # ``intake``: the rest is gathered, then read
                return at  # the body is not all here yet
            self.last_received = now
            try:
                self._packet(first, data, index, end, events)
            except ConnectRefused as refused:
                self._refuse_connect(events, refused)
            except ProtocolError as exc:
                name = packet_name(first, self.level)
                self._violation(events, f"{name}: {exc}", exc.reason_code)
            self._turn_left -= 1 + (end - at) // turn_bytes  # ``intake``: bytes cost too
            at = end
            if events and isinstance(events[-1], Subscribe | Unsubscribe):
                # The broker answers it; what follows waits, so that answers keep the
                # order of the packets they answer (a PUBCOMP after the SUBACK before it).
                return at
        return at

    def _violation(self, events: list[Event], reason: str, code: int) -> None:
        events.append(ProtocolViolation(reason, code, self.state != AWAITING_CONNECT))
        self.state = CLOSED

    def _packet(self, first: int, data: bytes, start: int, end: int, events: list[Event]) -> None:
        kind = first >> 4
        if self.state == AWAITING_CONNECT:
            self._connect(Reader(data, start, end), events)
            return
        session = self.session
        assert session is not None
        if kind == PacketType.PUBLISH:
            publish = decode_publish(first, data, start, end, self.level, self._known)
            if publish.properties is not NO_PROPERTIES:  # what an empty list decodes to
                assert self.v5 is not None  # only 5.0 PUBLISHes have properties
                if publish.properties is not self._known:  # a list read, not the last again
                    self._turn_left -= len(publish.properties.wire) // _PROPERTY_BYTES
                self._known = publish.properties  # the next PUBLISH most likely has the same
                publish = self.v5.resolve(publish)
            if publish.qos and not self._received(publish, session, events):
                return
            events.append(publish)
            return
        if kind == PacketType.PUBACK and end - start == 2:
            # QoS 1 delivery's other half, read without a packet object: 3.1.1's only form,
            # and 5.0's for reason 0 without properties (5.0 §3.4.2.1).
            self._completed((data[start] << 8) | data[start + 1], 1, events)
            return
        if kind == PacketType.SUBSCRIBE or kind == PacketType.UNSUBSCRIBE:
            self._filters(first, data, start, end, events)
            return
        packet = decode(first, data, start, end, self.level)
        if isinstance(packet, Puback | Pubcomp):
            self._completed(packet.packet_id, 1 if isinstance(packet, Puback) else 2, events)
        elif isinstance(packet, Pubrec):
            self._pubrec(packet.packet_id, packet.code, events)
        elif isinstance(packet, Pubrel):
            missing = packet.packet_id not in session.awaiting_pubrel
            session.awaiting_pubrel.discard(packet.packet_id)
            if session.persistent:  # PUBCOMP once the store let the id go
                events.append(PublishReleased(packet.packet_id, known=not missing))
            else:
                self._ack(Pubcomp, packet.packet_id, missing)  # §4.3.3: always answered
        elif isinstance(packet, Disconnect):
            if self.v5 is not None:
                self.v5.check_disconnect(packet)
            if packet.code == Reason.SUCCESS:
                # §3.14.4 [MQTT-3.14.4-3]: the will goes. 5.0 §3.1.2.5 [MQTT-3.1.2-8]: only
                # a DISCONNECT with 0x00 deletes it; after 0x04 or an error code it is sent.
                self.will = None
            events.append(packet)
            self.state = CLOSED
        elif kind == PacketType.PINGREQ:
            self._out.append(PINGRESP_BYTES)  # §3.12.4
        else:  # AUTH: no authentication method was agreed (5.0 §4.12)
            raise ProtocolError("no authentication method was agreed in CONNECT (MQTT 5 §4.12)")

    def _filters(self, first: int, data: bytes, start: int, end: int, events: list[Event]) -> None:
        """A SUBSCRIBE or UNSUBSCRIBE for the broker, within its bounds
        (``broker.mqtt.filter_bounds``), its filters counted against this turn; or, past
        them, the connection closed."""
        bound = self.limits.max_filters_per_subscribe
        filters = decode_filters(first, data, start, end, self.level, bound)
        v5 = self.v5
        exceeded = None if v5 is None else oversized_answer(filters, v5.maximum_packet_size)
        if exceeded is None:
            exceeded = unanswerable(filters, self.level)
        if exceeded is not None:
            events.append(exceeded)
            self.state = CLOSED
            return
        self._turn_left -= turn_cost(filters)
        events.append(filters)

    def _received(self, publish: Publish, session: Session, events: list[Event]) -> bool:
        """Count a QoS 1 or 2 PUBLISH until it is answered; False if it is not to be routed:
        a QoS 2 one sent again before its PUBREL (§4.3.3), or one past the limit, which
        closes the connection.

        ``max_awaiting_pubrel`` bounds the QoS 2 packet ids whose PUBREL has not come. A 5.0
        client is told it as the server's Receive Maximum, which counts its QoS 1 PUBLISHes
        whose PUBACK has not gone too (5.0 §3.3.4, §4.9: more is a 0x93 DISCONNECT): the
        broker holds a PUBACK until the store commits the message (``broker.acks``), and
        nothing else bounds what a client that does not wait for them makes it hold."""
        packet_id = publish.packet_id
        assert packet_id is not None  # QoS 1 and 2 have one (§2.3.1)
        awaiting = session.awaiting_pubrel
        qos = publish.qos
        if qos == 2 and packet_id in awaiting:
            self._pubrec_due += 1  # it is answered with PUBREC as well
            events.append(DuplicateReceived(packet_id, publish))
            return False
        v5 = self.level == MQTT_5
        held = len(awaiting) + self._unacknowledged if v5 else len(awaiting)
        if (qos == 2 or v5) and held >= self.limits.max_awaiting_pubrel:
            detail = (
                f"{held} QoS 1 and 2 messages are not acknowledged (Receive Maximum "
                f"{self.limits.max_awaiting_pubrel})"
                if v5
                else f"{held} QoS 2 messages await PUBREL"
            )
            events.append(LimitExceeded("max_awaiting_pubrel", detail))
            self.state = CLOSED
            return False
        if qos == 2:
            awaiting.add(packet_id)
            self._pubrec_due += 1
        else:
            self._unacknowledged += 1
        return True

    def _pubrec(self, packet_id: int, code: int, events: list[Event]) -> None:
        """PUBREL answers a PUBREC, a repeated one too (§4.3.3), a stored message's once the
        store has its release (the events). 5.0: a code of 0x80 or more ends the flow, no
        PUBREL, the message done with as if completed (§4.3.3, §4.4, §4.9)."""
        session = self.session
        assert session is not None
        message = session.inflight.get(packet_id)
        if code >= Reason.UNSPECIFIED_ERROR:  # 3.1.1 PUBRECs have none: 0
            if message is not None and message.qos == 2 and message.state == SENT:
                message.state = RELEASED  # no PUBREL, so nothing to record of it
                self._completed(packet_id, 2, events)
            return
        if message is None or message.qos != 2:
            # No QoS 2 message has this id: 5.0 §3.6.2.1, 0x92 "Packet Identifier not found",
            # also when a QoS 1 message has it (a PUBREL of 0x00 would claim a flow it is not).
            self._ack(Pubrel, packet_id, True)
            return
        first = session.released(packet_id) is not None
        if first:
            self._undefer(message)
        if message.stored is None:
            self._ack(Pubrel, packet_id, False)
        if first:
            if message.stored is not None:
                self._hold_pubrel(packet_id)
            events.append(MessageReleased(message))
        elif message.stored is not None:  # repeated before its first PUBREL may have gone
            events.append(PubrelAgain(message))

    def _completed(self, packet_id: int, qos: int, events: list[Event]) -> None:
        """PUBACK or PUBCOMP: the message is delivered (§4.3.2, §4.3.3), and the in-flight
        window has room for what waits in the queue."""
        assert self.session is not None
        held = self._pubrel_held
        if qos == 2 and held and packet_id in held:
            # PUBCOMP is the response to PUBREL (§3.7, §4.3.3), and this id's is still held
            # for the store: it answers nothing sent. 5.0 §4.13.1: a packet inconsistent
            # with the server's state is a protocol error (0x82); 3.1.1 §4.8: close the
            # connection. The message stays in flight; its PUBREL goes on the next (§4.4).
            raise ProtocolError(f"packet id {packet_id}: no PUBREL was sent for it yet")
        message = self.session.completed(packet_id, qos)
        if message is not None:
            self._undefer(message)
            events.append(MessageCompleted(message))
            self._pump(events)

    # --- commands (and Handshake's and Outbound's) --------------------------------------------

    def close(self) -> None:
        """Process nothing more (the broker is closing the network connection)."""
        self.state = CLOSED
