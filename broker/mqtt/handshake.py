"""How a client connection opens (MQTT's handshake, CONNECT to CONNACK; TLS's is
``broker.transport``'s) and how the server ends it: part of ``broker.mqtt.connection``, no I/O.

The CONNECT is read and checked: the protocol name and level (MQTT 3.1.1 §3.1.2.1-2; an
unsupported level is refused in the 3.1.1 form the client may read), and, from a 5.0 client,
its requests against the server's limits (5.0 §3.1.2.11). The broker then decides
(``broker.connecting``): ``accept`` sends CONNACK 0 and what the session still owes its client
(§4.4), ``refuse`` a CONNACK refusal and nothing more (§3.2.2.3, §3.1.4). ``disconnect`` is a
5.0 server DISCONNECT (5.0 §3.14) saying why the server closes; a refusal and a DISCONNECT
carry a Reason String if the settings allow it (``_reason``).

The connection's states are here, as the handshake moves it through them: waiting for
CONNECT, authenticating (the broker decides), connected; closed ends any of them.

Part of the protocol core: imports only the standard library, ``broker.mqtt``'s codec,
``auth.connack`` and ``nanoiot.errors``; never ``broker.mqtt.connection`` (which builds on
this), nor any I/O.
"""

from collections.abc import Collection
from dataclasses import replace
from typing import Final

from auth.connack import MQTT5_REASON_CODE, ConnackCode
from broker.mqtt.decode import decode_connect, protocol_problem, read_protocol
from broker.mqtt.encode import encode
from broker.mqtt.events import ConnectionRefused, Event, PubrelAgain
from broker.mqtt.outbound import Outbound
from broker.mqtt.packets import MQTT_5, Connack, Connect, Disconnect, Pubrel, Will
from broker.mqtt.properties import NO_PROPERTIES, Properties, Property
from broker.mqtt.session import RELEASED, SENT, Session
from broker.mqtt.v5 import (
    NO_MAXIMUM,
    OPTIONAL_IN_CONNACK,
    connack_properties,
    negotiate,
    server_keep_alive,
)
from broker.mqtt.wire import Reader
from nanoiot.errors import ConnectRefused
from nanoiot.text import printable

AWAITING_CONNECT, AUTHENTICATING, CONNECTED, CLOSED = range(4)
NEVER: Final = 1 << 62  # a read limit no count reaches


class Handshake(Outbound):
    """CONNECT in, CONNACK or DISCONNECT out; the state they change (``Connection`` sets it)."""

    # And Outbound's.
    __slots__ = ("_read_limit", "keep_alive", "state", "will")

    keep_alive: int
    state: int
    will: Will | None
    # Unanswered QoS 1 and 2 PUBLISHes at which reading stops (``Connection.window_full``).
    _read_limit: int

    # --- the CONNECT --------------------------------------------------------------------------

    def _connect(self, reader: Reader, events: list[Event]) -> None:
        name, level = read_protocol(reader)
        problem = protocol_problem(name, level)
        if problem is None and level not in self.limits.levels:
            problem = ConnectRefused(
                f"unsupported protocol '{printable(name)}' level {level}",
                ConnackCode.UNACCEPTABLE_PROTOCOL,
            )
        if problem is not None:
            raise problem
        self.level = level
        connect = decode_connect(reader, level)
        self.keep_alive = connect.keep_alive
        if level == MQTT_5:
            self._negotiate(connect)
        self.will = connect.will
        self.state = AUTHENTICATING
        events.append(connect)

    def _negotiate(self, connect: Connect) -> None:
        """5.0 §3.1.2.11: the client's limits bind what it is sent; §3.2.2.3.14: the server's
        keep-alive replaces the client's."""
        v5 = self.v5 = negotiate(connect, self.limits)
        # The Receive Maximum bounds a 5.0 client instead (``Connection._received``): one
        # PUBLISH more is a DISCONNECT 0x93, which reading must not hide by stopping first.
        self._read_limit = NEVER
        self.window = min(self.limits.max_inflight, v5.receive_maximum)
        imposed = server_keep_alive(connect.keep_alive, self.limits)
        if imposed is not None:
            v5.server_keep_alive = self.keep_alive = imposed

    def _refuse_connect(self, events: list[Event], refused: ConnectRefused) -> None:
        # §3.1.2.2: an unsupported level is answered in the 3.1.1 form the client may read.
        self.refuse(refused.return_code, refused.connack_reason, str(refused))
        events.append(ConnectionRefused(str(refused), refused.return_code))

    # --- commands -----------------------------------------------------------------------------

    def accept(
        self,
        session: Session,
        *,
        session_present: bool,
        assigned_client_id: str | None = None,
        response_information: str | None = None,
        pubrel_later: Collection[int] = (),
    ) -> list[Event]:
        """CONNACK 0, then what the session still owes its client (§4.4): every message in
        flight again, in order (PUBLISH with DUP, or PUBREL once PUBREC came; one of
        ``pubrel_later``, whose release the store has not committed, an event instead), then
        queued ones as the in-flight window allows. Call ``receive_data(b"", now)`` afterwards
        for whatever the client sent behind its CONNECT."""
        assert self.state == AUTHENTICATING
        v5 = self.v5
        if v5 is None:
            self._out.append(encode(Connack(session_present, 0), self.level))
        else:
            properties = connack_properties(
                v5, self.limits, assigned_client_id=assigned_client_id,
                response_information=response_information,
            )  # fmt: skip
            connack = self._fitting_connack(Connack(session_present, 0, properties))
            if isinstance(connack, str):
                self.state = CLOSED  # nothing sent, no DISCONNECT either: [MQTT-3.2.0-1]
                return [ConnectionRefused(connack, ConnackCode.SERVER_UNAVAILABLE)]
            data, told = connack
            self._out.append(data)
            v5.start_aliases(self.limits, told)
        self.session = session
        self.state = CONNECTED
        events: list[Event] = []
        quota = self._resend_quota(session)
        for message in list(session.inflight.values()):
            if message.state == SENT:
                if quota > 0:
                    quota -= 1
                    self._resend(message, events)
                else:
                    self._defer(message)
            elif message.packet_id in pubrel_later:
                self._hold_pubrel(message.packet_id)
                events.append(PubrelAgain(message))
            elif message.state == RELEASED:
                self._out.append(encode(Pubrel(message.packet_id), self.level))
        self._pump(events)
        return events

    def _resend_quota(self, session: Session) -> int:
        """How many PUBLISHes in flight go again at once. 5.0 §4.9: the send quota starts at
        the client's Receive Maximum on each connection (it may be lower than on the last
        one), PUBLISHes sent again take from it, and so do QoS 2 messages whose PUBCOMP has
        not come (only their PUBREL goes again): the rest wait for acknowledgements. 3.1.1
        §4.4: every one goes again."""
        inflight = session.inflight
        if self.level != MQTT_5 or len(inflight) <= self.window:
            return len(inflight)
        return self.window - sum(1 for message in inflight.values() if message.state != SENT)

    def refuse(
        self, return_code: int, reason_code: int | None = None, reason: str | None = None
    ) -> None:
        """CONNACK with a refusal (§3.2.2.3), then nothing more (§3.1.4). A 5.0 client gets
        ``reason_code`` (or the one ``return_code`` stands for, 5.0 §3.2.2.2) and ``reason``
        as its Reason String."""
        if self.level == MQTT_5:
            code = reason_code
            if code is None:
                code = MQTT5_REASON_CODE[ConnackCode(return_code)]
            packet = Connack(False, code, self._reason(reason))
            self._out.append(self._fitting(packet))  # b"" if not even 5 bytes fit
        else:
            self._out.append(encode(Connack(False, return_code), 4))
        self.state = CLOSED

    def disconnect(self, reason_code: int, reason: str | None = None) -> None:
        """A 5.0 server DISCONNECT (§3.14) saying why the server closes the connection; only
        after a successful CONNACK (§3.14.0: the session is set then), also once a violation
        or limit has stopped the processing, and nothing for 3.1.1, which has none."""
        if self.level == MQTT_5 and self.session is not None:
            packet = Disconnect(reason_code, self._reason(reason))
            self._out.append(self._fitting(packet))
        self.state = CLOSED

    def _fitting(self, packet: Connack | Disconnect) -> bytes:
        """``packet``, without its Reason String if that would make it larger than the client
        reads (5.0 §3.2.2.3.9 [MQTT-3.2.2-19], §3.14.2.2.3 [MQTT-3.14.2-3]); b"" if even
        that is too large: §3.1.2.11.4 [MQTT-3.1.2-24] forbids sending it at all, and the
        connection closes without it, as Mosquitto's does (send_connack.c)."""
        data = encode(packet, MQTT_5)
        most = self.v5.maximum_packet_size if self.v5 is not None else NO_MAXIMUM
        if len(data) > most and packet.properties:
            data = encode(replace(packet, properties=NO_PROPERTIES), MQTT_5)
        return data if len(data) <= most else b""

    def _fitting_connack(self, connack: Connack) -> tuple[bytes, int] | str:
        """The accepting CONNACK's bytes and the Topic Alias Maximum it tells the client, or
        why it cannot be sent: larger than the client reads (§3.1.2.11.4 [MQTT-3.1.2-24])
        even without what it can do without (``OPTIONAL_IN_CONNACK``). That CONNACK, when
        it is sent, is at least 10 bytes (it says the Maximum Packet Size), so everything
        else the server sends but PUBLISH, SUBACK and UNSUBACK fits after it: the
        acknowledgements are 4 or 5 bytes, PINGRESP 2, a DISCONNECT without a Reason
        String 4 (the others are ``Outbound``'s and ``Connection``'s to check)."""
        assert self.v5 is not None
        most = self.v5.maximum_packet_size
        data = encode(connack, MQTT_5)
        if len(data) > most:
            kept = [item for item in connack.properties if item[0] not in OPTIONAL_IN_CONNACK]
            connack = replace(connack, properties=Properties(kept))
            data = encode(connack, MQTT_5)
            if len(data) > most:
                return (
                    f"its CONNACK of {len(data)} bytes exceeds its Maximum Packet Size "
                    f"{most} (MQTT 5 §3.1.2.11.4)"
                )
        told = connack.properties.get(Property.TOPIC_ALIAS_MAXIMUM)
        return data, told if isinstance(told, int) else 0

    def _reason(self, reason: str | None) -> Properties:
        """A Reason String property (§3.2.2.3.9) for a CONNACK or DISCONNECT, if the setting
        allows it. Whatever the client's Request Problem Information: §3.1.2.11.7 forbids
        one only on packets other than PUBLISH, CONNACK and DISCONNECT (and the server
        sends none on those)."""
        if reason is None or not self.limits.reason_strings:
            return NO_PROPERTIES
        return Properties(((Property.REASON_STRING, reason),))
