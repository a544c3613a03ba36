"""MQTT control packets as frozen dataclasses: one class per packet type (3.1.1 §2.2.1, 5.0 §2.1.2).

The same classes serve MQTT 3.1 (protocol level 3), 3.1.1 (level 4) and 5.0 (level 5): fields
that exist only in MQTT 5 (properties, reason codes, subscription options beyond the QoS)
keep their defaults at the lower levels, and the codec (``broker.mqtt.decode`` /
``broker.mqtt.encode``) reads and writes them only at level 5.
"""

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from broker.mqtt.properties import NO_PROPERTIES, Properties

MQTT_3_1: Final = 3  # protocol name "MQIsdp"
MQTT_3_1_1: Final = 4  # protocol name "MQTT" (3.1.1 §3.1.2.2)
MQTT_5: Final = 5  # protocol name "MQTT" (5.0 §3.1.2.2)
PROTOCOL_NAMES: Final = {MQTT_3_1: "MQIsdp", MQTT_3_1_1: "MQTT", MQTT_5: "MQTT"}


class PacketType(IntEnum):
    """The control packet type, bits 7-4 of the first byte (§2.2.1)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15  # MQTT 5 only (5.0 §3.15)


@dataclass(frozen=True, slots=True)
class Will:
    """The will message of a CONNECT (§3.1.2.5, §3.1.3.2-3)."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Connect:
    level: int
    client_id: str  # "" when the client sent an empty one (§3.1.3.1)
    clean_start: bool  # CleanSession in 3.1.1 (§3.1.2.4), Clean Start in 5.0 (§3.1.2.4)
    keep_alive: int
    username: str | None = None
    password: bytes | None = None  # binary data (§3.1.3.5)
    will: Will | None = None
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    code: int  # a 3.1.1 return code (§3.2.2.3) or a 5.0 reason code (§3.2.2.2)
    properties: Properties = NO_PROPERTIES


# Not frozen, as the hot path makes one per packet: a frozen dataclass's __init__ sets
# each field through object.__setattr__, four times the cost. Nothing changes one once made,
# but the connection that read it, to resolve a topic alias (``broker.mqtt.v5``).
@dataclass(slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None  # only for QoS 1 and 2 (§2.3.1)
    properties: Properties = NO_PROPERTIES


# Not frozen: see Publish.
@dataclass(slots=True)
class Puback:
    packet_id: int
    code: int = 0  # MQTT 5 reason code (§3.4.2.1); 3.1.1 has none
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Pubrec:
    packet_id: int
    code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Pubrel:
    packet_id: int
    code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Pubcomp:
    packet_id: int
    code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """One topic filter of a SUBSCRIBE with its options (3.1.1 §3.8.3.1, 5.0 §3.8.3.1)."""

    topic_filter: str
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    requests: tuple[SubscribeRequest, ...]
    properties: Properties = NO_PROPERTIES
    # Filters past ``max_filters_per_subscribe``, dropped unread by the broker: each is
    # refused in the SUBACK, after the answers to ``requests`` (§3.9.3).
    refused: int = 0


@dataclass(frozen=True, slots=True)
class Suback:
    packet_id: int
    codes: tuple[int, ...]  # granted QoS or 0x80 (3.1.1 §3.9.3); 5.0 reason codes
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES
    refused: int = 0  # as ``Subscribe.refused``: MQTT 5 only, 0x83 each (§3.11.3)


@dataclass(frozen=True, slots=True)
class Unsuback:
    packet_id: int
    codes: tuple[int, ...] = ()  # MQTT 5 only (§3.11.3)
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Pingreq:
    pass


@dataclass(frozen=True, slots=True)
class Pingresp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    code: int = 0  # MQTT 5 reason code (§3.14.2.1)
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Auth:
    code: int = 0  # MQTT 5 only (§3.15.2.1)
    properties: Properties = NO_PROPERTIES


Packet = (
    Connect | Connack | Publish | Puback | Pubrec | Pubrel | Pubcomp | Subscribe | Suback
    | Unsubscribe | Unsuback | Pingreq | Pingresp | Disconnect | Auth
)  # fmt: skip
Ack = Puback | Pubrec | Pubrel | Pubcomp
