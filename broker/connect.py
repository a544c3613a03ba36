"""Reading and answering the CONNECT packet (MQTT 3.1.1 §3.1, §3.2).

We read and parse CONNECT ourselves instead of amqtt's
``BrokerProtocolHandler.init_from_connect``: it hides whether the client id was empty (which
the strict client-id policy needs), closes MQTT 3.1 clients without any CONNACK, builds the
session before anyone is authenticated, and decodes leniently (invalid UTF-8, trailing
bytes). Nothing here touches a session.
"""

import logging
from dataclasses import dataclass

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.errors import AMQTTError
from amqtt.mqtt.connack import ConnackPacket

from auth.decision import ConnackCode
from broker.framing import DEFAULT_MAX_PACKET_SIZE, Truncated, read_first_packet
from broker.packet_rules import Body, Malformed, utf8

log = logging.getLogger(__name__)

_LEVEL_3_1_1 = 4  # MQTT 3.1.1 §3.1.2.2


@dataclass(frozen=True)
class Connect:
    """The fields of a valid CONNECT that the broker uses."""

    client_id: str  # "" when the client sent an empty one (§3.1.3.1)
    clean_session: bool
    keep_alive: int
    username: str | None
    password: str | None
    will_topic: str | None
    will_message: bytes | None
    will_qos: int
    will_retain: bool


class ConnectRefused(Exception):
    """The CONNECT was invalid; ``code`` (if any) was already sent in a CONNACK.
    ``violation``: the client broke MQTT 3.1.1 (§4.8), as opposed to going silent or away."""

    def __init__(self, reason: str, code: ConnackCode | None, *, violation: bool = False) -> None:
        super().__init__(reason)
        self.code = code
        self.violation = violation


async def read_connect(
    reader: ReaderAdapter,
    writer: WriterAdapter,
    wait: float,
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
) -> Connect:
    """The client's CONNECT, or ConnectRefused after answering it (MQTT 3.1.1 §3.1.4).

    The packet is read whole (at most ``max_packet_size`` bytes) within ``wait`` seconds and
    parsed here, strictly: amqtt's decoder would read invalid UTF-8 as text and ignore bytes
    left over, and answers nothing to an MQTT 3.1 client.
    """
    try:
        body = await read_first_packet(reader, max_packet_size, wait)
    except TimeoutError:
        raise ConnectRefused(f"no CONNECT within {wait:g} s", None) from None
    except Malformed as exc:
        raise ConnectRefused(
            f"first packet is not a valid CONNECT ({exc})", None, violation=True
        ) from None
    except Truncated as exc:
        raise ConnectRefused(f"connection closed inside the CONNECT ({exc})", None) from None
    try:
        connect, problem, code = _parse(Body(body))
    except Malformed as exc:
        raise ConnectRefused(f"malformed CONNECT ({exc})", None, violation=True) from None
    if problem is not None:
        if code is not None:
            await send_connack(writer, code)
        raise ConnectRefused(problem, code, violation=code is None)
    assert connect is not None
    return connect


_Parsed = tuple[Connect | None, str | None, ConnackCode | None]


def _parse(body: Body) -> _Parsed:
    """The CONNECT, or why it is refused and the CONNACK code to answer with (None: close)."""
    name = utf8(body.take(body.uint16("protocol name"), "protocol name"), "protocol name")
    (level,) = body.take(1, "protocol level")
    if name == "MQIsdp" or level != _LEVEL_3_1_1:
        # §3.1.2.2: answer an unsupported level with return code 0x01, then close. MQTT 3.1
        # ("MQIsdp", level 3) understands this CONNACK; MQTT 5 clients read it as "unsupported".
        return (
            None,
            f"unsupported protocol {name!r} level {level}: only MQTT 3.1.1 is supported",
            ConnackCode.UNACCEPTABLE_PROTOCOL,
        )
    if name != "MQTT":
        return None, f"protocol name {name!r} is not 'MQTT' (§3.1.2.1)", None
    (flags,) = body.take(1, "connect flags")
    keep_alive = body.uint16("keep alive")
    problem = _flags_problem(flags)
    if problem is not None:
        return None, problem, None
    will, username_flag, password_flag = bool(flags & 0x04), bool(flags & 0x80), bool(flags & 0x40)
    client_id = body.text("client identifier")
    will_topic = body.text("will topic") if will else None
    will_message = body.take(body.uint16("will message"), "will message") if will else None
    username = body.text("user name") if username_flag else None
    password = body.take(body.uint16("password"), "password") if password_flag else None
    if body.left:
        raise Malformed(f"{body.left} bytes after the CONNECT payload (§2.2.3)")
    clean_session = bool(flags & 0x02)
    if password_flag and not username_flag:
        return None, "password without user name (§3.1.2.9)", ConnackCode.BAD_USERNAME_OR_PASSWORD
    if not client_id and not clean_session:
        return (
            None,
            "empty client id with a persistent session (§3.1.3.1)",
            ConnackCode.IDENTIFIER_REJECTED,
        )
    text_password = _password_text(password)
    if password is not None and text_password is None:
        # §3.1.3.5 allows binary passwords; ours are text, so none can match this one.
        return None, "password is not UTF-8 text", ConnackCode.BAD_USERNAME_OR_PASSWORD
    connect = Connect(
        client_id=client_id,
        clean_session=clean_session,
        keep_alive=keep_alive,
        username=username,
        password=text_password,
        will_topic=will_topic,
        will_message=will_message,
        will_qos=(flags >> 3) & 0x03,
        will_retain=bool(flags & 0x20),
    )
    return connect, None, None


def _flags_problem(flags: int) -> str | None:
    if flags & 0x01:
        return "CONNECT reserved flag is set (§3.1.2.3)"
    will, will_qos, will_retain = flags & 0x04, (flags >> 3) & 0x03, flags & 0x20
    if will_qos > 2 or (not will and (will_qos or will_retain)):
        return "invalid will QoS or retain flag (§3.1.2.6, §3.1.2.7)"
    return None


def _password_text(password: bytes | None) -> str | None:
    if password is None:
        return None
    try:
        return utf8(password, "password")
    except Malformed:
        return None


async def send_connack(
    writer: WriterAdapter, code: ConnackCode, *, session_present: bool = False
) -> None:
    """Send a CONNACK; a peer that is already gone is not an error here."""
    try:
        await ConnackPacket.build(1 if session_present else 0, int(code)).to_stream(writer)
    except (ConnectionError, AMQTTError) as exc:
        log.debug("could not send CONNACK %d: %s", code, exc)
