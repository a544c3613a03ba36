"""Reading the topic filters of a SUBSCRIBE or UNSUBSCRIBE (§3.8.3, §3.10.3), strictly, as
``broker.mqtt.decode`` reads the other packets: a filter that is not UTF-8, an empty one,
reserved option bits make the packet malformed, and a filter that breaks §4.7.1's syntax (or,
from an MQTT 5 client, §4.8.2's for ``$share/``) a protocol violation: the connection closes
(3.1.1 §4.8, 5.0 §4.13). The filters past
``max_filters_per_subscribe`` are checked the same way but counted, not kept
(``_check_refused``).
"""

from typing import Final

from auth.topics import SHARE_PREFIX, shared_problem, topic_filter_problem
from broker.mqtt.packets import MQTT_5, PacketType, Subscribe, SubscribeRequest, Unsubscribe
from broker.mqtt.properties import NO_PROPERTIES, Properties, read_properties
from broker.mqtt.wire import Reader
from nanoiot.errors import MalformedPacket, ProtocolError
from nanoiot.text import printable

_NO_BOUND: Final = 1 << 28  # more filters than a packet (256 MB, §2.2.3) can carry
_SHARE: Final = SHARE_PREFIX.encode()


def decode_filters(
    first: int, data: bytes, start: int, end: int, level: int, bound: int
) -> Subscribe | Unsubscribe:
    """A SUBSCRIBE or UNSUBSCRIBE (``first``) of which the filters past ``bound`` are checked
    and counted (``refused``), not kept: the broker refuses them whatever they hold."""
    reader = Reader(data, start, end)
    if first >> 4 == PacketType.SUBSCRIBE:
        return read_subscribe(reader, level, bound)
    return read_unsubscribe(reader, level, bound)


def read_subscribe(reader: Reader, level: int, bound: int = _NO_BOUND) -> Subscribe:
    packet_id = reader.packet_id()
    properties = _properties(reader, level, PacketType.SUBSCRIBE)
    requests: list[SubscribeRequest] = []
    refused = 0
    while reader.left:
        if len(requests) == bound:
            refused = _check_refused(reader, level, subscribe=True)
            break
        topic_filter = reader.text("topic filter")
        if not topic_filter:
            raise MalformedPacket("empty topic filter (§4.7.3)")
        options = reader.byte("subscription options")
        requests.append(_subscription(topic_filter, options, level))
    if not requests:
        raise ProtocolError("no topic filter (§3.8.3)")
    _check_filters([request.topic_filter for request in requests], level)
    return Subscribe(packet_id, tuple(requests), properties, refused)


def _check_refused(reader: Reader, level: int, *, subscribe: bool) -> int:
    """The filters past the bound, counted: the broker refuses them whatever they hold, so
    none costs an ACL check, a subscription or a look-up. Each is still checked as the others
    are (a SUBSCRIBE's options too): a malformed packet closes the connection whatever the
    bound (3.1.1 §4.8, 5.0 §4.13; §1.5.3, [MQTT-4.7.3-1], §3.8.3.1, [MQTT-3.8.3-5]), and so
    does a filter that breaks §4.7.1 or (5.0) §4.8.2 (``_check_filters``).

    Bounded by the packet (``max_packet_size``) and cheap: the common filter, ASCII without
    a wildcard or U+0000, with valid options, is judged on its bytes; any other is read as
    one within the bound is, which raises the same error."""
    data, at, end = reader.data, reader.at, reader.end
    trailer = 1 if subscribe else 0
    good_options = _GOOD_OPTIONS_5 if level == MQTT_5 else _GOOD_OPTIONS_3
    # Whether a filter may need more than its bytes looked at, judged once for them all:
    # what is not ASCII, a wildcard, whose place §4.7.1 rules, and (5.0) a shared one.
    rest = data[at:end]
    suspect = not rest.isascii() or b"+" in rest or b"#" in rest
    suspect = suspect or (level == MQTT_5 and _SHARE in rest)
    count = 0
    while at < end:
        if at + 2 > end:
            break
        start = at + 2
        stop = start + ((data[at] << 8) | data[at + 1])
        at = stop + trailer
        if at > end:
            break
        raw = data[start:stop]
        options = data[stop] if subscribe else 0
        if (
            not raw
            or b"\x00" in raw
            or options not in good_options
            or (options & 0x04 and raw.startswith(b"$share/"))
            or (suspect and not _plain(raw, level))
        ):
            _check_one(Reader(data, start - 2, at), level, subscribe=subscribe)
        count += 1
    if at != end:
        raise MalformedPacket("topic filters do not end with the packet (§2.2.3)")
    reader.at = end
    return count


# Subscription options that are valid whatever the filter (3.1.1 §3.8.3.1: the QoS alone;
# 5.0 §3.8.3.1: no reserved bit, Maximum QoS and Retain Handling below 3).
_GOOD_OPTIONS_3: Final = frozenset(range(3))
_GOOD_OPTIONS_5: Final = frozenset(
    option for option in range(0x40) if option & 0x03 != 3 and option >> 4 != 3
)


def _plain(raw: bytes, level: int) -> bool:
    """Whether a filter's bytes are well-formed UTF-8 and keep ``_check_filters``'s rules."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return False
    return _filter_problem(text, level) is None


def _check_one(reader: Reader, level: int, *, subscribe: bool) -> None:
    """One filter (and its options) past the bound, read as one within it: its error."""
    topic_filter = reader.text("topic filter")
    if not topic_filter:
        raise MalformedPacket("empty topic filter (§4.7.3)")
    if subscribe:
        _subscription(topic_filter, reader.byte("subscription options"), level)
    _check_filters([topic_filter], level)


def _subscription(topic_filter: str, options: int, level: int) -> SubscribeRequest:
    if level != MQTT_5:
        if options > 2:  # 3.1.1 §3.8.3.1: reserved bits 0, QoS 0..2
            raise MalformedPacket(f"requested QoS byte {options:#04x} (§3.8.3.1)")
        return SubscribeRequest(topic_filter, options)
    qos, retain_handling = options & 0x03, (options >> 4) & 0x03
    if options & 0xC0:  # 5.0 §3.8.3.1 [MQTT-3.8.3-5]: reserved bits make it malformed
        raise MalformedPacket(
            f"subscription options {options:#04x}: reserved bits set (MQTT 5 §3.8.3.1)"
        )
    if qos == 3 or retain_handling == 3:  # 5.0 §3.8.3.1: either is a protocol error
        raise ProtocolError(
            f"subscription options {options:#04x}: Maximum QoS or Retain Handling of 3 "
            "(MQTT 5 §3.8.3.1)"
        )
    if options & 0x04 and topic_filter.startswith("$share/"):
        raise ProtocolError("No Local set on a shared subscription (MQTT 5 §3.8.3.1)")
    return SubscribeRequest(
        topic_filter, qos, bool(options & 0x04), bool(options & 0x08), retain_handling
    )


def _check_filters(topic_filters: list[str], level: int) -> None:
    """A topic filter that breaks §4.7's syntax ('#' last and alone in its level, §4.7.1.2;
    '+' a whole level, §4.7.1.3) is a protocol violation, and the connection closes, as the
    standard's reference broker and Mosquitto do: 3.1.1 §4.8; 5.0 §4.13.1 [MQTT-4.13.1-1]
    (a Protocol Error, 0x82: the packet parses, its data is not allowed, §1.2). Not a 5.0
    SUBACK or UNSUBACK 0x8F, which is for a filter "correctly formed" that the server does
    not allow (§3.9.3, §3.11.3). Checked for the whole packet before any filter in it is
    acted on, so none of them is subscribed.

    A ``$share/...`` filter from an MQTT 5 client must also be a shared subscription's
    (§4.8.2 [MQTT-4.8.2-1, -2]: a share name without '/', '+' or '#', then a filter). From a
    3.1 or 3.1.1 client, which has no shared subscriptions in its standard, it is judged by
    §4.7 alone, as written: whether it is one is the broker's decision (``broker.inbound``,
    SUBACK 0x80).
    """
    for topic_filter in topic_filters:
        problem = _filter_problem(topic_filter, level)
        if problem is not None:
            raise ProtocolError(f"topic filter '{printable(topic_filter)}': {problem}")


def _filter_problem(topic_filter: str, level: int) -> str | None:
    problem = topic_filter_problem(topic_filter)
    if problem is None and level == MQTT_5 and topic_filter.startswith(SHARE_PREFIX):
        problem = shared_problem(topic_filter)
    return problem


def read_unsubscribe(reader: Reader, level: int, bound: int = _NO_BOUND) -> Unsubscribe:
    packet_id = reader.packet_id()
    properties = _properties(reader, level, PacketType.UNSUBSCRIBE)
    filters: list[str] = []
    refused = 0
    while reader.left:
        if len(filters) == bound:
            refused = _check_refused(reader, level, subscribe=False)
            break
        topic_filter = reader.text("topic filter")
        if not topic_filter:
            raise MalformedPacket("empty topic filter (§4.7.3)")
        filters.append(topic_filter)
    if not filters:
        raise ProtocolError("no topic filter (§3.10.3)")
    _check_filters(filters, level)
    return Unsubscribe(packet_id, tuple(filters), properties, refused)


def _properties(reader: Reader, level: int, kind: int) -> Properties:
    return read_properties(reader, kind) if level == MQTT_5 else NO_PROPERTIES
