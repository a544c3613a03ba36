"""Both ends of the wire without sockets: the client's packets as bytes, the server's bytes as
packets (with the core's own codec, which reads both directions)."""

from broker.mqtt.connection import Connection
from broker.mqtt.decode import decode, decode_connect, protocol_problem, read_protocol
from broker.mqtt.encode import encode
from broker.mqtt.events import Event
from broker.mqtt.limits import Limits
from broker.mqtt.packets import MQTT_3_1_1, Connect, Packet, Subscribe, Unsubscribe, Will
from broker.mqtt.rules import header_problem
from broker.mqtt.session import Session
from broker.mqtt.wire import Reader


def wire(*packets: Packet, level: int = MQTT_3_1_1) -> bytes:
    return b"".join(encode(packet, level) for packet in packets)


def packets_in(data: bytes, level: int = MQTT_3_1_1) -> list[Packet]:
    """The packets a server wrote, checked as a client would check them."""
    found: list[Packet] = []
    at = 0
    while at < len(data):
        first = data[at]
        assert header_problem(first, level=level, connected=True, from_server=True) is None
        reader = Reader(data, at + 1)
        length = reader.varint("remaining length")
        found.append(decode(first, data, reader.at, reader.at + length, level))
        at = reader.at + length
    return found


def decoded(data: bytes, level: int) -> Packet:
    """The one packet ``data`` holds, as the server reads it from a client at ``level``."""
    reader = Reader(data, 1)
    length = reader.varint("remaining length")
    assert reader.at + length == len(data)
    if data[0] >> 4 == 1:
        name, found = read_protocol(reader)
        assert protocol_problem(name, found) is None
        return decode_connect(reader, found)
    return decode(data[0], data, reader.at, len(data), level)


def connected(
    limits: Limits | None = None,
    *,
    level: int = MQTT_3_1_1,
    session: Session | None = None,
    present: bool = False,
    now: float = 0.0,
    client_id: str = "c",
    clean_start: bool = True,
    keep_alive: int = 60,
    will: Will | None = None,
) -> tuple[Connection, list[Packet]]:
    """A connection past CONNECT and CONNACK; what the server sent so far."""
    connection = Connection(limits or Limits(), now)
    connect = Connect(level, client_id, clean_start, keep_alive, will=will)
    events = connection.receive_data(wire(connect, level=level), now)
    assert [type(event) for event in events] == [Connect]
    connection.accept(session or Session("c", persistent=False), session_present=present)
    return connection, packets_in(connection.data_to_send(), level)


def feed(connection: Connection, *packets: Packet, now: float = 0.0) -> list[Event]:
    return connection.receive_data(wire(*packets, level=connection.level), now)


def drive(connection: Connection, data: bytes, now: float = 0.0) -> list[Event]:
    """``receive_data`` as the broker calls it: again while ``more_to_read``, answering each
    SUBSCRIBE (every filter granted) and UNSUBSCRIBE on the way."""
    found: list[Event] = []
    events = connection.receive_data(data, now)
    while events:
        found += events
        for event in events:
            if isinstance(event, Subscribe):
                connection.suback(event.packet_id, [r.qos for r in event.requests])
            elif isinstance(event, Unsubscribe):
                connection.unsuback(event.packet_id)
        if not connection.more_to_read:
            break
        events = connection.receive_data(b"", now)
    return found
