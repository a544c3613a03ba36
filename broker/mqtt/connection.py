"""One client's network connection, server side: the whole protocol state, no I/O.

Bytes in, events out: ``receive_data(data, now)`` splits what the client sent into packets,
checks each (a violation ends the connection, 3.1.1 §4.8), answers what needs no decision
(PINGRESP, PUBREL, PUBCOMP) and returns the events the broker acts on, in arrival order
(§4.6). It stops after a SUBSCRIBE or UNSUBSCRIBE, which the broker answers, so that answers
leave in the order of the packets they answer: ``more_to_read`` then says to call again
(with ``b""``). A DISCONNECT ends processing: whatever came after it in the same read is
ignored, whatever came before it is returned first.

Commands in, bytes out: ``accept``, ``refuse``, ``publish``, ``acknowledge``, ``suback`` and
``unsuback`` queue the packets they make; ``data_to_send()`` returns them, in order, for the
I/O layer to write.

States: waiting for CONNECT, then authenticating (the broker decides; bytes that arrive
meanwhile are kept, unread, until ``accept``), connected, closed. The clock is passed in
(``now``, in seconds), so keep-alive (§3.1.2.10) is tested without waiting.
"""

from typing import Final

from broker.mqtt.codes import Reason, ReturnCode
from broker.mqtt.decode import (
    decode,
    decode_connect,
    decode_publish,
    protocol_problem,
    read_protocol,
)
from broker.mqtt.encode import PINGRESP_BYTES, encode, encode_publish
from broker.mqtt.events import (
    ConnectionRefused,
    DuplicateReceived,
    Event,
    LimitExceeded,
    MessageCompleted,
    MessageDropped,
    MessageReleased,
    MessageSent,
    ProtocolViolation,
)
from broker.mqtt.limits import Limits
from broker.mqtt.packets import (
    MQTT_5,
    Connack,
    Disconnect,
    PacketType,
    Puback,
    Pubcomp,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
)
from broker.mqtt.properties import encode_properties
from broker.mqtt.rules import header_problem, packet_name
from broker.mqtt.session import RELEASED, SENT, Outgoing, Session
from broker.mqtt.wire import Reader
from nanoiot.errors import ConnectRefused, ProtocolError

AWAITING_CONNECT, AUTHENTICATING, CONNECTED, CLOSED = range(4)
KEEP_ALIVE_GRACE: Final = 1.5  # §3.1.2.10: one and a half times the keep-alive
_NONE: Final[list[Event]] = []  # returned, never appended to


class Connection:
    __slots__ = (
        "_out", "_pending", "keep_alive", "last_received", "level", "limits", "session",
        "state", "will",
    )  # fmt: skip

    def __init__(self, limits: Limits, now: float = 0.0) -> None:
        self.limits = limits
        self.state = AWAITING_CONNECT
        self.level = 0  # the protocol level, once CONNECT is read
        self.keep_alive = 0
        self.last_received = now
        self.will: Will | None = None  # dropped when the client says DISCONNECT (§3.14.4)
        self.session: Session | None = None
        self._pending = b""  # the start of a packet not yet whole, or bytes kept unread
        self._out: list[bytes] = []

    # --- output -------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """What the connection made since the last call, to write to the client."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    @property
    def more_to_read(self) -> bool:
        """Bytes are waiting that ``receive_data(b"", now)`` may turn into events."""
        return bool(self._pending) and self.state == CONNECTED

    @property
    def buffered(self) -> int:
        """Bytes received and not processed yet (kept while authenticating)."""
        return len(self._pending)

    def keep_alive_expired(self, now: float) -> bool:
        """§3.1.2.10: nothing received within 1.5 x the keep-alive the client asked for."""
        return 0 < self.keep_alive * KEEP_ALIVE_GRACE < now - self.last_received

    # --- input --------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Process what the client sent; the events, in order."""
        if self.state == CLOSED:
            return _NONE
        if self._pending:
            data, self._pending = self._pending + data, b""
        if self.state == AUTHENTICATING:
            self._pending = data  # read once the broker has decided (``accept``)
            return _NONE
        events: list[Event] = []
        at = self._split(data, now, events)
        if at < len(data) and self.state != CLOSED:
            self._pending = data[at:]
        return events

    def _split(self, data: bytes, now: float, events: list[Event]) -> int:
        """Handle every whole packet in ``data``; where the unprocessed rest starts."""
        at, size = 0, len(data)
        while at < size and self.state in (AWAITING_CONNECT, CONNECTED):
            first = data[at]
            problem = header_problem(
                first, level=self.level, connected=self.state != AWAITING_CONNECT
            )
            if problem is not None:
                self._violation(events, problem, Reason.PROTOCOL_ERROR)
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
                self._violation(events, message, Reason.PACKET_TOO_LARGE)
                return at
            if end > size:
                return at  # the body is not all here yet
            self.last_received = now
            try:
                self._packet(first, data, index, end, events)
            except ConnectRefused as refused:
                self._refuse_connect(events, refused)
            except ProtocolError as exc:
                self._violation(events, f"{packet_name(first)}: {exc}", exc.reason_code)
            at = end
            if events and isinstance(events[-1], Subscribe | Unsubscribe):
                # The broker answers it; what follows waits, so that answers keep the
                # order of the packets they answer (a PUBCOMP after the SUBACK before it).
                return at
        return at

    def _violation(self, events: list[Event], reason: str, code: int) -> None:
        events.append(ProtocolViolation(reason, code, self.state != AWAITING_CONNECT))
        self.state = CLOSED

    def _refuse_connect(self, events: list[Event], refused: ConnectRefused) -> None:
        # §3.1.2.2: an unsupported level is answered in the 3.1.1 form the client may read.
        self.refuse(refused.return_code)
        events.append(ConnectionRefused(str(refused), refused.return_code))

    def _packet(self, first: int, data: bytes, start: int, end: int, events: list[Event]) -> None:
        kind = first >> 4
        if self.state == AWAITING_CONNECT:
            self._connect(Reader(data, start, end), events)
            return
        session = self.session
        assert session is not None
        if kind == PacketType.PUBLISH:
            publish = decode_publish(first, data, start, end, self.level)
            if publish.qos == 2 and publish.packet_id is not None:
                if publish.packet_id in session.awaiting_pubrel:
                    events.append(DuplicateReceived(publish.packet_id))
                    return
                if len(session.awaiting_pubrel) >= self.limits.max_awaiting_pubrel:
                    detail = f"{len(session.awaiting_pubrel)} QoS 2 messages await PUBREL"
                    events.append(LimitExceeded("max_awaiting_pubrel", detail))
                    self.state = CLOSED
                    return
                session.awaiting_pubrel.add(publish.packet_id)
            events.append(publish)
            return
        packet = decode(first, data, start, end, self.level)
        if isinstance(packet, Puback | Pubcomp):
            qos = 1 if isinstance(packet, Puback) else 2
            message = session.completed(packet.packet_id, qos)
            if message is not None:
                events.append(MessageCompleted(message))
                self._pump(events)
        elif isinstance(packet, Pubrec):
            released = session.released(packet.packet_id)
            missing = released is None and packet.packet_id not in session.inflight
            self._ack(Pubrel, packet.packet_id, missing)
            if released is not None:
                events.append(MessageReleased(released))
        elif isinstance(packet, Pubrel):
            missing = packet.packet_id not in session.awaiting_pubrel
            session.awaiting_pubrel.discard(packet.packet_id)
            self._ack(Pubcomp, packet.packet_id, missing)  # §4.3.3: always answered
        elif isinstance(packet, Subscribe | Unsubscribe):
            events.append(packet)
        elif isinstance(packet, Disconnect):
            if self.level != MQTT_5 or packet.code != Reason.DISCONNECT_WITH_WILL:
                self.will = None  # §3.14.4
            events.append(packet)
            self.state = CLOSED
        elif kind == PacketType.PINGREQ:
            self._out.append(PINGRESP_BYTES)  # §3.12.4
        else:  # AUTH: no authentication method was agreed (5.0 §4.12)
            raise ProtocolError(f"unexpected {packet_name(first)}")

    def _connect(self, reader: Reader, events: list[Event]) -> None:
        name, level = read_protocol(reader)
        problem = protocol_problem(name, level)
        if problem is None and level not in self.limits.levels:
            problem = ConnectRefused(
                f"unsupported protocol {name!r} level {level}", ReturnCode.UNACCEPTABLE_PROTOCOL
            )
        if problem is not None:
            raise problem
        connect = decode_connect(reader, level)
        self.level = level
        self.keep_alive = connect.keep_alive
        self.will = connect.will
        self.state = AUTHENTICATING
        events.append(connect)

    # --- commands -----------------------------------------------------------------------------

    def accept(self, session: Session, *, session_present: bool) -> list[Event]:
        """CONNACK 0, then what the session still owes its client (§4.4): every message in
        flight again, in order (PUBLISH with DUP, or PUBREL once PUBREC came), then queued
        ones as the in-flight window allows. Call ``receive_data(b"", now)`` afterwards for
        whatever the client sent behind its CONNECT."""
        assert self.state == AUTHENTICATING
        self.session = session
        self.state = CONNECTED
        self._out.append(encode(Connack(session_present, 0), self.level))
        for message in session.inflight.values():
            if message.state == SENT:
                message.sent = True
                self._out.append(self._publish_bytes(message, dup=True))
            elif message.state == RELEASED:
                self._out.append(encode(Pubrel(message.packet_id), self.level))
        events: list[Event] = []
        self._pump(events)
        return events

    def refuse(self, return_code: int) -> None:
        """CONNACK with a refusal (§3.2.2.3), then nothing more (§3.1.4)."""
        level = self.level if self.level == MQTT_5 else 4
        self._out.append(encode(Connack(False, return_code), level))
        self.state = CLOSED

    def close(self) -> None:
        """Process nothing more (the broker is closing the network connection)."""
        self.state = CLOSED

    def disconnect(self, code: int) -> None:
        """MQTT 5: DISCONNECT with this reason code before the broker closes (§3.14);
        MQTT 3.1.1 has no such packet, the network connection is just closed. Nothing is
        processed afterwards."""
        if self.level == MQTT_5 and self.state == CONNECTED:
            self._out.append(encode(Disconnect(code), MQTT_5))
        self.state = CLOSED

    def publish(self, message: Outgoing) -> list[Event]:
        """Send ``message`` to the client now, or queue it behind the in-flight window or
        the messages already waiting (so one subscriber gets them in order, §4.6)."""
        session = self.session
        assert session is not None
        if session.queue or (message.qos and len(session.inflight) >= self.limits.max_inflight):
            return self._dropped(session.enqueue(message, self.limits))
        if not message.qos:
            self._out.append(self._publish_bytes(message))
            return _NONE
        session.start_flight(message)
        message.sent = True
        self._out.append(self._publish_bytes(message))
        return [MessageSent(message)]

    def acknowledge(self, packet_id: int, qos: int) -> None:
        """Acknowledge a PUBLISH the client sent: PUBACK for QoS 1, PUBREC for QoS 2."""
        self._ack(Puback if qos == 1 else Pubrec, packet_id, False)

    def suback(self, packet_id: int, codes: list[int]) -> None:
        self._out.append(encode(Suback(packet_id, tuple(codes)), self.level))

    def unsuback(self, packet_id: int, codes: list[int] | None = None) -> None:
        self._out.append(encode(Unsuback(packet_id, tuple(codes or ())), self.level))

    # --- helpers ------------------------------------------------------------------------------

    def _pump(self, events: list[Event]) -> None:
        """Send queued messages while the in-flight window has room (§4.4, §4.6)."""
        session = self.session
        assert session is not None
        while (message := session.next_to_send(self.limits)) is not None:
            if message.qos:
                message.sent = True
                events.append(MessageSent(message))
            self._out.append(self._publish_bytes(message))

    def _publish_bytes(self, message: Outgoing, *, dup: bool = False) -> bytes:
        level = self.level
        properties = encode_properties(message.properties) if level == MQTT_5 else b""
        return encode_publish(
            message.topic.encode(), message.payload, message.qos, message.packet_id,
            retain=message.retain, dup=dup, level=level, properties=properties,
        )  # fmt: skip

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
        return [MessageDropped(message, limit) for message, limit in dropped] if dropped else _NONE
