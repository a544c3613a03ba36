"""What MQTT 5 adds to one connection: the CONNECT's requests, topic aliases, CONNACK properties.

A 5.0 CONNECT carries the client's own limits (§3.1.2.11): how many QoS 1 and 2 messages it
takes unacknowledged (Receive Maximum), the largest packet it reads, how many topic aliases
the server may give it, and how long its session outlives the connection. ``negotiate``
reads them, with the standard's defaults for what is absent, and ``connack_properties``
answers with the server's own (§3.2.2.3), which bind the client in turn.

Topic aliases (§3.3.2.3.4) are per connection and per direction: ``AliasesIn`` maps the
numbers a client set to topics; ``AliasesOut`` gives topics the broker sends numbers, first
come first served up to the client's maximum (a fixed set: a client never has to follow a
reassignment).
"""

import math
from dataclasses import dataclass
from typing import Final

from broker.mqtt.codes import CLIENT_DISCONNECT_REASONS, Reason
from broker.mqtt.encode import encode_publish
from broker.mqtt.limits import NEVER_EXPIRES, Limits
from broker.mqtt.packets import MQTT_5, Connect, Disconnect, Publish
from broker.mqtt.properties import (
    Properties,
    Property,
    PropertyValue,
)
from broker.mqtt.session import Outgoing
from nanoiot.errors import ConnectRefused, ProtocolError
from nanoiot.text import printable

NO_MAXIMUM: Final = 268_435_460  # §3.1.2.11.4: absent means the protocol's own bound


@dataclass(slots=True)
class Negotiated:
    """What a 5.0 client asked for in its CONNECT, and what it was given; the connection's
    topic aliases both ways, and what follows from them for PUBLISH in and out."""

    session_expiry: int = 0  # §3.1.2.11.2: absent is 0, the session ends with the connection
    receive_maximum: int = 65535  # §3.1.2.11.3
    maximum_packet_size: int = NO_MAXIMUM  # §3.1.2.11.4
    topic_alias_maximum: int = 0  # §3.1.2.11.5: absent is 0, no aliases towards the client
    request_response_information: bool = False  # §3.1.2.11.6
    request_problem_information: bool = True  # §3.1.2.11.7
    server_keep_alive: int | None = None  # set when the server imposed one (§3.2.2.3.14)
    asked_session_expiry: int = 0  # before the server's maximum cut it
    aliases_in: "AliasesIn | None" = None
    aliases_out: "AliasesOut | None" = None

    def start_aliases(self, limits: Limits, told: int) -> None:
        """At CONNACK: the client may set the ``told`` aliases its Topic Alias Maximum says
        (``max_topic_aliases``, or 0 when the CONNACK could not carry it); the broker gives
        at most as many as both sides allow (§3.2.2.3.8, §3.1.2.11.5)."""
        self.aliases_in = AliasesIn(told)
        most = min(self.topic_alias_maximum, limits.max_topic_aliases)
        self.aliases_out = AliasesOut(most) if most else None

    def resolve(self, publish: Publish) -> Publish:
        """A PUBLISH from the client, its topic alias resolved and dropped (it names a topic
        on this connection only, §3.3.2.3.4)."""
        properties = publish.properties
        if properties.has_subscription_identifier:
            raise ProtocolError("a client's PUBLISH carries a subscription identifier (§3.3.4)")
        alias = properties.topic_alias
        if alias is None:
            return publish
        aliases = self.aliases_in or AliasesIn(0)
        if publish.topic or alias not in aliases.topics:
            publish.topic = aliases.resolve(publish, alias)
        else:  # the common case: a known alias alone
            publish.topic = aliases.topics[alias]
        publish.properties = properties.without_topic_alias()
        return publish

    def check_disconnect(self, packet: Disconnect) -> None:
        if packet.code not in CLIENT_DISCONNECT_REASONS:
            # A reason code outside §3.14.2.1's table, or one only a server sends: the
            # DISCONNECT breaks [MQTT-3.14.2-1], a protocol error (§4.13) rather than a
            # normal disconnection, so the will stays (§3.1.2.5).
            raise ProtocolError(
                f"reason code {packet.code:#04x} is not one a client sends (§3.14.2.1)"
            )
        expiry = packet.properties.get(Property.SESSION_EXPIRY_INTERVAL)
        if expiry and not self.asked_session_expiry:
            raise ProtocolError("session expiry set by DISCONNECT after 0 in CONNECT (§3.14.2.2.2)")

    def publish_bytes(self, message: Outgoing, now: float, *, dup: bool) -> bytes:
        """A PUBLISH to the client: the time left of its expiry interval (§3.3.2.3.3), a
        topic alias where one is free (§3.3.2.3.4); b"" if it is larger than the client reads
        (§3.1.2.11.4). The publisher's other properties go as their bytes came."""
        properties = message.properties
        if message.expires_at is not None:
            properties = outgoing_properties(properties, message.expires_at, now)
        topic, aliases, new = message.topic, self.aliases_out, False
        alias = aliases.numbers.get(topic) if aliases is not None else None
        if alias is not None:
            encoded = b""  # the client knows the alias: it stands for the topic
        else:
            encoded, alias = topic.encode(), b""
            if aliases is not None and (alias := aliases.new_alias(topic)):
                new = True
        data = encode_publish(
            encoded, message.payload, message.qos, message.packet_id,
            retain=message.retain, dup=dup, level=MQTT_5, properties=properties.block(alias),
        )  # fmt: skip
        if len(data) > self.maximum_packet_size:
            if new and aliases is not None:
                aliases.forget(message.topic)
            return b""
        return data


def negotiate(connect: Connect, limits: Limits) -> Negotiated:
    """The client's requests (§3.1.2.11) within the server's limits; a CONNECT that asks for
    enhanced authentication is refused with 0x8C (§4.12: the server supports none)."""
    found = Negotiated()
    properties = connect.properties
    has_method = properties.get(Property.AUTHENTICATION_METHOD) is not None
    if properties.get(Property.AUTHENTICATION_DATA) is not None and not has_method:
        # A protocol error, answered with CONNACK 0x82 before closing, as Mosquitto does
        # (§3.1.4 [MQTT-3.1.4-1] allows it; ``broker.mqtt.decode._answered``).
        raise ConnectRefused(
            "authentication data without an authentication method (MQTT 5 §3.1.2.11.10)",
            1, reason_code=Reason.PROTOCOL_ERROR,
        )  # fmt: skip
    for key, value in properties:
        if key == Property.AUTHENTICATION_METHOD:
            raise ConnectRefused(
                f"authentication method '{printable(str(value))}' is not supported (MQTT 5 §4.12)",
                5, reason_code=Reason.BAD_AUTHENTICATION_METHOD,
            )  # fmt: skip
        _take(found, key, value)
    found.asked_session_expiry = found.session_expiry
    if found.session_expiry > limits.max_session_expiry:
        found.session_expiry = limits.max_session_expiry
    return found


def _take(found: Negotiated, key: int, value: PropertyValue) -> None:
    if not isinstance(value, int):
        return  # user properties of a CONNECT mean nothing to the server
    if key == Property.SESSION_EXPIRY_INTERVAL:
        found.session_expiry = value
    elif key == Property.RECEIVE_MAXIMUM:
        found.receive_maximum = value
    elif key == Property.MAXIMUM_PACKET_SIZE:
        found.maximum_packet_size = value
    elif key == Property.TOPIC_ALIAS_MAXIMUM:
        found.topic_alias_maximum = value
    elif key == Property.REQUEST_RESPONSE_INFORMATION:
        found.request_response_information = bool(value)
    elif key == Property.REQUEST_PROBLEM_INFORMATION:
        found.request_problem_information = bool(value)


def server_keep_alive(asked: int, limits: Limits) -> int | None:
    """The keep-alive the server imposes (§3.2.2.3.14), or None to keep the client's."""
    most = limits.max_keep_alive
    if most and (asked == 0 or asked > most):
        return most
    return None


def connack_properties(
    negotiated: Negotiated,
    limits: Limits,
    *,
    assigned_client_id: str | None,
    response_information: str | None,
) -> Properties:
    """The server's side of the bargain (§3.2.2.3): its limits, so that the client keeps
    within them, and what it changed of the client's requests."""
    items: list[tuple[int, PropertyValue]] = []
    if negotiated.session_expiry != negotiated.asked_session_expiry:
        items.append((Property.SESSION_EXPIRY_INTERVAL, negotiated.session_expiry))
    if assigned_client_id is not None:
        items.append((Property.ASSIGNED_CLIENT_IDENTIFIER, assigned_client_id))
    if negotiated.server_keep_alive is not None:
        items.append((Property.SERVER_KEEP_ALIVE, negotiated.server_keep_alive))
    items += [
        (Property.RECEIVE_MAXIMUM, limits.max_awaiting_pubrel),
        (Property.MAXIMUM_PACKET_SIZE, limits.max_packet_size),
        (Property.TOPIC_ALIAS_MAXIMUM, limits.max_topic_aliases),
        (Property.RETAIN_AVAILABLE, 1),
        (Property.WILDCARD_SUBSCRIPTION_AVAILABLE, 1),
        (Property.SUBSCRIPTION_IDENTIFIER_AVAILABLE, 1),
        (Property.SHARED_SUBSCRIPTION_AVAILABLE, 1),  # $share/{group}/{filter} (§4.8.2)
    ]
    if negotiated.request_response_information and response_information is not None:
        items.append((Property.RESPONSE_INFORMATION, response_information))
    return Properties(items)


# CONNACK properties whose absence tells the client the same, or a narrower bound it keeps
# within (§3.2.2.3): Topic Alias Maximum (absent: 0, it sets none, §3.2.2.3.8), the four
# "available" flags (absent: 1, what they say), and Response Information (optional,
# §3.2.2.3.15). Left out of a CONNACK larger than the client's Maximum Packet Size (§3.1.2.11.4
# [MQTT-3.1.2-24]). The others it cannot do without: Receive Maximum and Maximum Packet Size
# bound what it may send, Assigned Client Identifier is required ([MQTT-3.2.2-16]), and it
# must use the Session Expiry Interval and Server Keep Alive the server chose.
OPTIONAL_IN_CONNACK: Final = frozenset(
    {
        Property.TOPIC_ALIAS_MAXIMUM, Property.RETAIN_AVAILABLE,
        Property.WILDCARD_SUBSCRIPTION_AVAILABLE, Property.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        Property.SHARED_SUBSCRIPTION_AVAILABLE, Property.RESPONSE_INFORMATION,
    }
)  # fmt: skip


def never_expires(seconds: int) -> bool:
    return seconds == NEVER_EXPIRES


def outgoing_properties(properties: Properties, expires_at: float, now: float) -> Properties:
    """§3.3.2.3.3: the Message Expiry Interval a subscriber receives is what is left of it,
    in place (user properties keep their order), never more than the publisher set
    ([MQTT-3.3.2-6]): sent in the millisecond it came (uvloop's clock counts whole ones),
    3018.342 + 3600 - 3018.342 is 3600.0000000000005, which rounds up to 3601."""
    left = max(1, math.ceil(expires_at - now))
    interval = properties.message_expiry  # as received (a copy's is spliced, not this list's)
    if interval is not None and left > interval:
        left = interval
    return properties.with_message_expiry(left)


class AliasesIn:
    """Topic aliases a client set (§3.3.2.3.4), at most ``maximum`` of them."""

    __slots__ = ("maximum", "topics")

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.topics: dict[int, str] = {}

    def resolve(self, publish: Publish, alias: int) -> str:
        """The topic of a PUBLISH that carries Topic Alias ``alias``: its own topic (which the
        alias then stands for) or, when empty, the topic the alias was set to."""
        if alias > self.maximum:
            raise ProtocolError(
                f"topic alias {alias} is above the maximum {self.maximum} (MQTT 5 §3.3.2.3.4)",
                Reason.TOPIC_ALIAS_INVALID,
            )
        if publish.topic:
            self.topics[alias] = publish.topic
            return publish.topic
        topic = self.topics.get(alias)
        if topic is None:
            raise ProtocolError(f"topic alias {alias} was never set (MQTT 5 §3.3.2.3.4)")
        return topic


class AliasesOut:
    """Topic aliases the broker gives its client, at most ``maximum`` (the smaller of the
    client's Topic Alias Maximum and the server's own limit)."""

    __slots__ = ("maximum", "numbers")

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.numbers: dict[str, bytes] = {}  # topic -> its Topic Alias property, encoded

    def new_alias(self, topic: str) -> bytes:
        """The Topic Alias property for a ``topic`` without one (``numbers`` has those the
        client knows), or b"" when every alias is taken by another topic."""
        if len(self.numbers) >= self.maximum:
            return b""
        encoded = self.numbers[topic] = _alias_property(len(self.numbers) + 1)
        return encoded

    def forget(self, topic: str) -> None:
        """Undo a new alias whose PUBLISH was not sent after all."""
        if self.numbers.get(topic) == _alias_property(len(self.numbers)):
            del self.numbers[topic]


def _alias_property(number: int) -> bytes:
    return b"\x23" + number.to_bytes(2, "big")  # Topic Alias, two bytes (§3.3.2.3.4)
