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

from auth.connack import MQTT5_REASON_CODE, ConnackCode
from broker.mqtt.decode import decode_connect, protocol_problem, read_protocol
from broker.mqtt.encode import encode
from broker.mqtt.events import ConnectionRefused, Event, PubrelAgain
from broker.mqtt.outbound import Outbound
from broker.mqtt.packets import MQTT_5, Connack, Connect, Disconnect, Pubrel, Will
from broker.mqtt.properties import NO_PROPERTIES, Properties, Property
from broker.mqtt.session import RELEASED, SENT, Session
from broker.mqtt.v5 import connack_properties, negotiate, server_keep_alive
from broker.mqtt.wire import Reader
from nanoiot.errors import ConnectRefused
from nanoiot.text import printable

AWAITING_CONNECT, AUTHENTICATING, CONNECTED, CLOSED = range(4)


class Handshake(Outbound):
    """CONNECT in, CONNACK or DISCONNECT out; the state they change (``Connection`` sets it)."""

    # And Outbound's.
    __slots__ = ("keep_alive", "state", "will")

    keep_alive: int
    state: int
    will: Will | None

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
        self.session = session
        self.state = CONNECTED
        properties = NO_PROPERTIES
        v5 = self.v5
        if v5 is not None:
            properties = connack_properties(
                v5, self.limits, assigned_client_id=assigned_client_id,
                response_information=response_information,
            )  # fmt: skip
            v5.start_aliases(self.limits)
        self._out.append(encode(Connack(session_present, 0, properties), self.level))
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
            self._out.append(self._fitting(packet))
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
        reads (5.0 §3.2.2.3.9 [MQTT-3.2.2-19], §3.14.2.2.3 [MQTT-3.14.2-3])."""
        data = encode(packet, MQTT_5)
        v5 = self.v5
        if v5 is not None and len(data) > v5.maximum_packet_size and packet.properties:
            data = encode(replace(packet, properties=NO_PROPERTIES), MQTT_5)
        return data

    def _reason(self, reason: str | None) -> Properties:
        """A Reason String property (§3.2.2.3.9) for a CONNACK or DISCONNECT, if the setting
        allows it. Whatever the client's Request Problem Information: §3.1.2.11.7 forbids
        one only on packets other than PUBLISH, CONNACK and DISCONNECT (and the server
        sends none on those)."""
        if reason is None or not self.limits.reason_strings:
            return NO_PROPERTIES
        return Properties(((Property.REASON_STRING, reason),))
