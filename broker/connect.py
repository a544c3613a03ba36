"""Reading and answering the CONNECT packet (MQTT 3.1.1 §3.1, §3.2).

We read CONNECT ourselves, with amqtt's packet codec, instead of amqtt's
``BrokerProtocolHandler.init_from_connect``: it hides whether the client id was empty (which
the strict client-id policy needs), closes MQTT 3.1 clients without any CONNACK, and builds the
session before anyone is authenticated. Nothing here touches a session.
"""

import asyncio
import logging
from dataclasses import dataclass

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.connect import ConnectPacket

from auth.decision import ConnackCode

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
    """The CONNECT was invalid; ``code`` (if any) was already sent in a CONNACK."""

    def __init__(self, reason: str, code: ConnackCode | None) -> None:
        super().__init__(reason)
        self.code = code


async def read_connect(reader: ReaderAdapter, writer: WriterAdapter, wait: float) -> Connect:
    """The client's CONNECT, or ConnectRefused after answering it (MQTT 3.1.1 §3.1.4)."""
    try:
        packet = await asyncio.wait_for(ConnectPacket.from_stream(reader), wait)
    except TimeoutError:
        raise ConnectRefused(f"no CONNECT within {wait:g} s", None) from None
    except (AMQTTError, MQTTError, NoDataError, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ConnectRefused(f"first packet is not a valid CONNECT ({exc})", None) from None
    header, payload = packet.variable_header, packet.payload
    if header is None or payload is None:
        raise ConnectRefused("CONNECT without header or payload", None)
    problem, code = _problem(packet)
    if problem is not None:
        if code is not None:
            await send_connack(writer, code)
        raise ConnectRefused(problem, code)
    return Connect(
        client_id="" if payload.client_id_is_random else (payload.client_id or ""),
        clean_session=header.clean_session_flag,
        keep_alive=max(header.keep_alive, 0),
        username=payload.username if header.username_flag else None,
        password=payload.password if header.password_flag else None,
        will_topic=payload.will_topic if header.will_flag else None,
        will_message=bytes(payload.will_message or b"") if header.will_flag else None,
        will_qos=header.will_qos if header.will_flag else 0,
        will_retain=header.will_retain_flag if header.will_flag else False,
    )


def _problem(packet: ConnectPacket) -> tuple[str | None, ConnackCode | None]:
    header, payload = packet.variable_header, packet.payload
    if header.proto_name == "MQIsdp" or header.proto_level != _LEVEL_3_1_1:
        # §3.1.2.2: answer an unsupported level with return code 0x01, then close. MQTT 3.1
        # ("MQIsdp", level 3) understands this CONNACK; MQTT 5 clients read it as "unsupported".
        return (
            f"unsupported protocol {header.proto_name!r} level {header.proto_level}: "
            "only MQTT 3.1.1 is supported",
            ConnackCode.UNACCEPTABLE_PROTOCOL,
        )
    if header.proto_name != "MQTT":
        return f"protocol name {header.proto_name!r} is not 'MQTT' (§3.1.2.1)", None
    if header.reserved_flag:
        return "CONNECT reserved flag is set (§3.1.2.3)", None
    if header.will_flag and (payload.will_topic is None or payload.will_message is None):
        return "will flag set without will topic and message (§3.1.2.5)", None
    if header.will_qos > 2 or (
        not header.will_flag and (header.will_qos or header.will_retain_flag)
    ):
        return "invalid will QoS or retain flag (§3.1.2.6, §3.1.2.7)", None
    if header.password_flag and not header.username_flag:
        return "password without user name (§3.1.2.9)", ConnackCode.BAD_USERNAME_OR_PASSWORD
    if payload.client_id_is_random and not header.clean_session_flag:
        return (
            "empty client id with a persistent session (§3.1.3.1)",
            ConnackCode.IDENTIFIER_REJECTED,
        )
    return None, None


async def send_connack(
    writer: WriterAdapter, code: ConnackCode, *, session_present: bool = False
) -> None:
    """Send a CONNACK; a peer that is already gone is not an error here."""
    try:
        await ConnackPacket.build(1 if session_present else 0, int(code)).to_stream(writer)
    except (ConnectionError, AMQTTError) as exc:
        log.debug("could not send CONNACK %d: %s", code, exc)
