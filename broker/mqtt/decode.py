"""Strict decoding of one whole packet's body, for MQTT 3.1, 3.1.1 and 5.0, both directions.

Every MUST of the standards about a packet's form is checked here, so that nothing half
parsed reaches the broker: a string that is not UTF-8, bytes left over, a packet id of 0, a
reserved bit set, a property where none may be. A violation raises ``MalformedPacket`` or
``ProtocolError`` (the connection closes, 3.1.1 §4.8); a CONNECT the server must answer with a
refusal before closing raises ``ConnectRefused`` with the return code (3.1.1 §3.1.4).

The fixed header was already checked (``broker.mqtt.rules``) and the body is
``data[start:end]``: the caller splits packets without copying them first.
"""

from collections.abc import Callable
from typing import Final

from auth.connack import ConnackCode
from auth.topics import topic_name_problem
from broker.mqtt.codes import Reason
from broker.mqtt.filters import read_subscribe, read_unsubscribe
from broker.mqtt.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Unsuback,
    Will,
)
from broker.mqtt.properties import NO_PROPERTIES, WILL, Properties, read_properties
from broker.mqtt.publish_properties import payload_problem, read_publish_properties
from broker.mqtt.wire import Reader
from nanoiot.errors import ConnectRefused, MalformedPacket, ProtocolError
from nanoiot.text import printable

MQTT_3_1_CLIENT_ID_MAX: Final = 23  # MQTT 3.1: a client id is 1 to 23 characters


def decode(first: int, data: bytes, start: int, end: int, level: int) -> Packet:
    """The packet whose first byte is ``first`` and body ``data[start:end]``, at ``level``.

    Not for CONNECT: see ``read_protocol`` and ``decode_connect``.
    """
    kind = first >> 4
    if kind == PacketType.PUBLISH:
        return decode_publish(first, data, start, end, level)
    reader = Reader(data, start, end)
    packet = _DECODERS[kind](reader, level)
    if reader.at != reader.end:
        raise MalformedPacket(f"{reader.end - reader.at} bytes after the packet's end (§2.2.3)")
    return packet


def decode_publish(
    first: int, data: bytes, start: int, end: int, level: int, known: Properties = NO_PROPERTIES
) -> Publish:
    """A PUBLISH (§3.3): the hot path, so the common case reads bytes without a Reader.
    ``known``: the properties of the sender's previous PUBLISH (``read_publish_properties``)."""
    if end - start < 2:
        raise MalformedPacket("topic name runs past the remaining length (§2.2.3)")
    after = start + 2 + ((data[start] << 8) | data[start + 1])
    qos = (first >> 1) & 0x03
    if after + (2 if qos else 0) > end:
        raise MalformedPacket("topic name runs past the remaining length (§2.2.3)")
    try:
        topic = data[start + 2 : after].decode()
    except UnicodeDecodeError:
        raise MalformedPacket("topic name is not valid UTF-8 (§1.5.3)") from None
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        if "\x00" in topic:
            raise MalformedPacket("topic name contains U+0000 (§1.5.3)")
        problem = topic_name_problem(topic)
        if problem is not None and topic:
            # [MQTT-3.3.2-2]: no wildcard in a topic name. The packet parses, so 5.0 calls
            # it a Protocol Error (0x82, §1.2), as Mosquitto does; ill-formed UTF-8 and
            # U+0000 are malformed (0x81, §1.5.4).
            raise ProtocolError(f"topic name {problem}")
        if problem is not None and level != MQTT_5:  # 5.0: empty with an alias (below)
            raise MalformedPacket(f"topic name {problem}")
    packet_id = None
    if qos:
        packet_id = (data[after] << 8) | data[after + 1]
        if not packet_id:  # [MQTT-2.3.1-1]; a Protocol Error as ``Reader.packet_id`` says
            raise ProtocolError("packet identifier 0 (§2.3.1)")
        after += 2
    properties = NO_PROPERTIES
    if level == MQTT_5:
        properties, after = read_publish_properties(data, after, end, known)
        if not topic and not properties.topic_alias:  # 5.0 §3.3.2.1: empty needs an alias
            raise ProtocolError("empty topic name without a topic alias (§3.3.2.1)")
    return Publish(
        topic, data[after:end], qos, bool(first & 0x01), bool(first & 0x08), packet_id, properties
    )


# --- CONNECT ---------------------------------------------------------------------------------


def read_protocol(reader: Reader) -> tuple[str, int]:
    """The protocol name and level that start a CONNECT body (3.1.1 §3.1.2.1-2)."""
    return reader.text("protocol name"), reader.byte("protocol level")


def protocol_problem(name: str, level: int) -> ProtocolError | None:
    """Why a CONNECT with this name and level cannot be read as a protocol we speak."""
    if name not in ("MQTT", "MQIsdp"):
        # §3.1.2.1: the server MAY disconnect a client with an unknown protocol name.
        return ProtocolError(f"protocol name '{printable(name)}' is not 'MQTT' (§3.1.2.1)")
    if (name, level) not in (("MQIsdp", MQTT_3_1), ("MQTT", MQTT_3_1_1), ("MQTT", MQTT_5)):
        # §3.1.2.2: return code 0x01, then close.
        return ConnectRefused(
            f"unsupported protocol '{printable(name)}' level {level}",
            ConnackCode.UNACCEPTABLE_PROTOCOL,
        )
    return None


def decode_connect(reader: Reader, level: int) -> Connect:
    """The rest of a CONNECT after its protocol name and level (§3.1.2.3 on)."""
    flags = reader.byte("connect flags")
    keep_alive = reader.uint16("keep alive")
    if flags & 0x01:
        raise MalformedPacket("CONNECT reserved flag is set (§3.1.2.3)")
    if flags & 0xC0 == 0x40 and level != MQTT_5:
        # 3.1.1 §3.1.2.9 [MQTT-3.1.2-22]: no Password flag without the User Name flag. A
        # CONNECT that breaks it does not conform, and §3.1.4 [MQTT-3.1.4-1] has the server
        # close without CONNACK, as the standard's reference broker and Mosquitto do. 5.0
        # allows a password alone (5.0 §3.1.2.9).
        raise ProtocolError("Password flag set without the User Name flag (§3.1.2.9)")
    has_will, will_qos, will_retain = bool(flags & 0x04), (flags >> 3) & 0x03, bool(flags & 0x20)
    if will_qos > 2 or (not has_will and (will_qos or will_retain)):
        raise MalformedPacket("invalid will QoS or retain flag (§3.1.2.6, §3.1.2.7)")
    v5 = level == MQTT_5
    properties = _connect_properties(reader, PacketType.CONNECT) if v5 else NO_PROPERTIES
    try:
        client_id = reader.text("client identifier")
    except MalformedPacket as exc:
        if v5:
            # 5.0 §1.5.4 [MQTT-1.5.4-1, -2]: ill-formed UTF-8 or U+0000 makes the packet
            # malformed, so the CONNACK says 0x81 (§4.13.1); 0x85 "Client Identifier not
            # valid" is for "a valid string" the server does not allow (§3.2.2.2).
            raise ConnectRefused(
                str(exc), ConnackCode.IDENTIFIER_REJECTED, reason_code=exc.reason_code
            ) from None
        raise
    will = None
    if has_will:
        will_properties = _connect_properties(reader, WILL) if v5 else NO_PROPERTIES
        topic = reader.text("will topic")
        problem = topic_name_problem(topic)
        if not topic and v5:
            raise _answered(ProtocolError(f"will topic {problem}"))
        if problem is not None:
            raise MalformedPacket(f"will topic {problem}")
        will = Will(topic, reader.binary("will message"), will_qos, will_retain, will_properties)
        if (problem := payload_problem(will_properties, will.payload)) is not None:
            # 5.0 §3.1.3.2.3: the server may check it, and refuse with CONNACK 0x99.
            raise ConnectRefused(
                f"will {problem}", ConnackCode.UNACCEPTABLE_PROTOCOL,
                reason_code=Reason.PAYLOAD_FORMAT_INVALID,
            )  # fmt: skip
    username = reader.text("user name") if flags & 0x80 else None
    password = reader.binary("password") if flags & 0x40 else None
    if reader.left:
        error = MalformedPacket(f"{reader.left} bytes after the CONNECT payload (§2.2.3)")
        raise _answered(error) if v5 else error
    clean = bool(flags & 0x02)
    _refusal(level, client_id, clean)
    return Connect(level, client_id, clean, keep_alive, username, password, will, properties)


def _connect_properties(reader: Reader, kind: int) -> Properties:
    """A 5.0 CONNECT's (or its will's) property list; a broken one is answered (``_answered``)."""
    try:
        return read_properties(reader, kind)
    except ProtocolError as exc:
        raise _answered(exc) from None


def _answered(exc: ProtocolError) -> ConnectRefused:
    """A 5.0 CONNECT that breaks the rules in its properties, its will's, an empty will topic
    or bytes after its end: 5.0 §3.1.4 [MQTT-3.1.4-1] lets the server send a CONNACK with
    0x80 or more before it closes (§4.13), and Mosquitto answers these with 0x81 or 0x82
    (handle_connect.c); other malformed CONNECTs close unanswered, in both. Never at 3.1 or
    3.1.1, whose §3.1.4 closes without CONNACK (the return code is only for the log)."""
    return ConnectRefused(str(exc), ConnackCode.UNACCEPTABLE_PROTOCOL, reason_code=exc.reason_code)


def _refusal(level: int, client_id: str, clean: bool) -> None:
    """The CONNACK refusals the standards prescribe for a well-formed CONNECT."""
    if level == MQTT_5:
        return  # 5.0 allows a server-assigned id with Clean Start 0 (5.0 §3.1.3.1)
    if level == MQTT_3_1 and not 1 <= len(client_id) <= MQTT_3_1_CLIENT_ID_MAX:
        raise ConnectRefused(
            f"MQTT 3.1 client id of {len(client_id)} characters (1 to 23 allowed)",
            ConnackCode.IDENTIFIER_REJECTED,
        )
    if not client_id and not clean:
        raise ConnectRefused(
            "empty client id with a persistent session (§3.1.3.1)", ConnackCode.IDENTIFIER_REJECTED
        )


# --- the other packets -------------------------------------------------------------------------


def _props(reader: Reader, level: int, kind: int) -> Properties:
    return read_properties(reader, kind) if level == MQTT_5 else NO_PROPERTIES


def _ack(
    cls: type[Puback] | type[Pubrec] | type[Pubrel] | type[Pubcomp], kind: int
) -> Callable[[Reader, int], Packet]:
    def read(reader: Reader, level: int) -> Packet:
        if level != MQTT_5 and reader.left != 2:
            # §3.4-§3.7: the variable header is the packet id alone.
            raise MalformedPacket(f"remaining length {reader.left}, must be 2 (§3.4.1)")
        packet_id = reader.uint16("packet identifier")
        if level != MQTT_5:
            return cls(packet_id)
        # 5.0 §3.4.2.1: no reason code means 0; no property length means none.
        code = reader.byte("reason code") if reader.left else 0
        properties = read_properties(reader, kind) if reader.left else NO_PROPERTIES
        return cls(packet_id, code, properties)

    return read


def _connack(reader: Reader, level: int) -> Packet:
    flags = reader.byte("acknowledge flags")
    if flags & 0xFE:
        raise MalformedPacket("CONNACK reserved flags are set (§3.2.2.1)")
    code = reader.byte("return code")
    return Connack(bool(flags), code, _props(reader, level, PacketType.CONNACK))


def _suback(reader: Reader, level: int) -> Packet:
    packet_id = reader.packet_id()
    properties = _props(reader, level, PacketType.SUBACK)
    return Suback(packet_id, tuple(reader.rest()), properties)


def _unsuback(reader: Reader, level: int) -> Packet:
    packet_id = reader.packet_id()
    if level != MQTT_5:
        return Unsuback(packet_id)
    properties = read_properties(reader, PacketType.UNSUBACK)
    return Unsuback(packet_id, tuple(reader.rest()), properties)


def _empty(packet: Pingreq | Pingresp) -> Callable[[Reader, int], Packet]:
    def read(reader: Reader, level: int) -> Packet:
        if reader.left:
            raise MalformedPacket("remaining length must be 0 (§3.12.1, §3.13.1)")
        return packet

    return read


def _disconnect(reader: Reader, level: int) -> Packet:
    if level != MQTT_5:
        if reader.left:
            raise MalformedPacket("remaining length must be 0 (§3.14.1)")
        return Disconnect()
    code = reader.byte("reason code") if reader.left else 0
    properties = read_properties(reader, PacketType.DISCONNECT) if reader.left else NO_PROPERTIES
    return Disconnect(code, properties)


def _auth(reader: Reader, level: int) -> Packet:
    code = reader.byte("reason code") if reader.left else 0
    properties = read_properties(reader, PacketType.AUTH) if reader.left else NO_PROPERTIES
    return Auth(code, properties)


def _connect(reader: Reader, level: int) -> Packet:
    name, found = read_protocol(reader)
    problem = protocol_problem(name, found)
    if problem is not None:
        raise problem
    return decode_connect(reader, found)


_DECODERS: Final[dict[int, Callable[[Reader, int], Packet]]] = {
    PacketType.CONNECT: _connect,
    PacketType.CONNACK: _connack,
    PacketType.PUBACK: _ack(Puback, PacketType.PUBACK),
    PacketType.PUBREC: _ack(Pubrec, PacketType.PUBREC),
    PacketType.PUBREL: _ack(Pubrel, PacketType.PUBREL),
    PacketType.PUBCOMP: _ack(Pubcomp, PacketType.PUBCOMP),
    PacketType.SUBSCRIBE: read_subscribe,
    PacketType.SUBACK: _suback,
    PacketType.UNSUBSCRIBE: read_unsubscribe,
    PacketType.UNSUBACK: _unsuback,
    PacketType.PINGREQ: _empty(Pingreq()),
    PacketType.PINGRESP: _empty(Pingresp()),
    PacketType.DISCONNECT: _disconnect,
    PacketType.AUTH: _auth,
}
