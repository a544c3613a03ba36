"""The MQTT 5 property table (OASIS MQTT 5.0 §2.2.2.2): identifiers, value types, and where
each may appear.

Plain data the property codec (``broker.mqtt.properties``) reads: each identifier has one
value type and a set of packets it may appear in; some byte properties are booleans, some
values may not be 0, and only User Property may repeat anywhere (the codec lets Subscription
Identifier repeat in a PUBLISH). Imports nothing of the broker.
"""

from enum import IntEnum
from typing import Final


class Property(IntEnum):
    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


# Where a property may appear (§2.2.2.2): packet type numbers (§2.1.2), and WILL for the
# will properties of a CONNECT (§3.1.3.2).
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH = 8, 9, 10, 11, 14, 15
WILL: Final = 0
_ACKS = frozenset({PUBACK, PUBREC, PUBREL, PUBCOMP})
_MESSAGE = frozenset({PUBLISH, WILL})

# The value types (§2.2.2.2): Byte, Two and Four Byte Integer, Variable Byte Integer, UTF-8
# Encoded String, Binary Data, UTF-8 String Pair.
BYTE, TWO, FOUR, VARINT, TEXT, BINARY, PAIR = range(7)
INT_SIZE: Final = {BYTE: 1, TWO: 2, FOUR: 4}
# Each identifier's value type and the packets it may appear in.
TABLE: Final[dict[int, tuple[int, frozenset[int]]]] = {
    Property.PAYLOAD_FORMAT_INDICATOR: (BYTE, _MESSAGE),
    Property.MESSAGE_EXPIRY_INTERVAL: (FOUR, _MESSAGE),
    Property.CONTENT_TYPE: (TEXT, _MESSAGE),
    Property.RESPONSE_TOPIC: (TEXT, _MESSAGE),
    Property.CORRELATION_DATA: (BINARY, _MESSAGE),
    Property.SUBSCRIPTION_IDENTIFIER: (VARINT, frozenset({PUBLISH, SUBSCRIBE})),
    Property.SESSION_EXPIRY_INTERVAL: (FOUR, frozenset({CONNECT, CONNACK, DISCONNECT})),
    Property.ASSIGNED_CLIENT_IDENTIFIER: (TEXT, frozenset({CONNACK})),
    Property.SERVER_KEEP_ALIVE: (TWO, frozenset({CONNACK})),
    Property.AUTHENTICATION_METHOD: (TEXT, frozenset({CONNECT, CONNACK, AUTH})),
    Property.AUTHENTICATION_DATA: (BINARY, frozenset({CONNECT, CONNACK, AUTH})),
    Property.REQUEST_PROBLEM_INFORMATION: (BYTE, frozenset({CONNECT})),
    Property.WILL_DELAY_INTERVAL: (FOUR, frozenset({WILL})),
    Property.REQUEST_RESPONSE_INFORMATION: (BYTE, frozenset({CONNECT})),
    Property.RESPONSE_INFORMATION: (TEXT, frozenset({CONNACK})),
    Property.SERVER_REFERENCE: (TEXT, frozenset({CONNACK, DISCONNECT})),
    Property.REASON_STRING: (
        TEXT, frozenset({CONNACK, SUBACK, UNSUBACK, DISCONNECT, AUTH}) | _ACKS
    ),
    Property.RECEIVE_MAXIMUM: (TWO, frozenset({CONNECT, CONNACK})),
    Property.TOPIC_ALIAS_MAXIMUM: (TWO, frozenset({CONNECT, CONNACK})),
    Property.TOPIC_ALIAS: (TWO, frozenset({PUBLISH})),
    Property.MAXIMUM_QOS: (BYTE, frozenset({CONNACK})),
    Property.RETAIN_AVAILABLE: (BYTE, frozenset({CONNACK})),
    Property.USER_PROPERTY: (PAIR, frozenset(range(16)) - {12, 13}),  # not PINGREQ/PINGRESP
    Property.MAXIMUM_PACKET_SIZE: (FOUR, frozenset({CONNECT, CONNACK})),
    Property.WILDCARD_SUBSCRIPTION_AVAILABLE: (BYTE, frozenset({CONNACK})),
    Property.SUBSCRIPTION_IDENTIFIER_AVAILABLE: (BYTE, frozenset({CONNACK})),
    Property.SHARED_SUBSCRIPTION_AVAILABLE: (BYTE, frozenset({CONNACK})),
}  # fmt: skip
# Byte properties that are booleans (§3.1.2.11, §3.2.2.3): any value but 0 or 1 is an error.
BOOLEAN: Final = frozenset(
    {Property.PAYLOAD_FORMAT_INDICATOR, Property.REQUEST_PROBLEM_INFORMATION,
     Property.REQUEST_RESPONSE_INFORMATION, Property.MAXIMUM_QOS, Property.RETAIN_AVAILABLE,
     Property.WILDCARD_SUBSCRIPTION_AVAILABLE, Property.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
     Property.SHARED_SUBSCRIPTION_AVAILABLE}
)  # fmt: skip
# Where 0 is not a value (§3.1.2.11.3, §3.1.2.11.4, §3.3.2.3.4, §3.3.2.3.8).
NON_ZERO: Final = frozenset(
    {Property.RECEIVE_MAXIMUM, Property.MAXIMUM_PACKET_SIZE, Property.TOPIC_ALIAS,
     Property.SUBSCRIPTION_IDENTIFIER}
)  # fmt: skip
REPEATABLE: Final = frozenset({Property.USER_PROPERTY})


def property_name(key: int) -> str:
    """The identifier's name as errors and ``repr`` show it (an unknown one in hex)."""
    try:
        return Property(key).name.lower()
    except ValueError:
        return hex(key)
