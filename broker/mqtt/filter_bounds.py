"""The bounds on a SUBSCRIBE or UNSUBSCRIBE the protocol core passes to the broker.

A packet carries at most ``max_filters_per_subscribe`` filters to the broker; the rest are
checked and counted as refused (``broker.mqtt.filters.decode_filters``), and here decided:
what its filters cost of the connection's turn (``broker.mqtt.intake``), whether its answer
can be given at all (a 3.1/3.1.1 UNSUBACK has no codes to refuse with), and whether a 5.0
answer fits the client's Maximum Packet Size. Pure functions: ``Connection`` acts on them.
"""

from typing import Final

from broker.mqtt.events import LimitExceeded
from broker.mqtt.packets import MQTT_5, Subscribe, Unsubscribe
from broker.mqtt.wire import varint

__all__ = ["CHECKS_PER_FILTER", "oversized_answer", "turn_cost", "unanswerable"]

# Filters past max_filters_per_subscribe checked (``broker.mqtt.filters``) for the cost of one
# granted (an ACL check and a subscription, about 8 µs): 0.5 to 1.5 µs each. They count against
# the turn at that rate, so that a packet of 60,000 of them ends its turn.
CHECKS_PER_FILTER: Final = 8


def turn_cost(packet: Subscribe | Unsubscribe) -> int:
    """What the packet's filters cost of the turn: one packet's worth per filter kept, and
    one per ``CHECKS_PER_FILTER`` refused.

    A SUBSCRIBE answers every filter on its own (§3.8.4, §3.9.3): those past the bound
    get 0x80 (3.1.1 "Failure"; 5.0 0x97 "Quota exceeded", an implementation limit, as
    ``max_subscriptions``). No DISCONNECT: the client did nothing wrong, and what it
    asked within the bound is granted. A 5.0 UNSUBACK's filters past it get 0x83
    ("Implementation specific error": valid, not accepted, §3.11.3; 0x97 is not an
    UNSUBACK code)."""
    kept = len(packet.filters) if isinstance(packet, Unsubscribe) else len(packet.requests)
    return kept + packet.refused // CHECKS_PER_FILTER


def unanswerable(packet: Subscribe | Unsubscribe, level: int) -> LimitExceeded | None:
    """Why the connection closes instead of answering, if it does: a 3.1/3.1.1 UNSUBACK
    carries no code (§3.11.3) and must still come (§3.10.4), so for an UNSUBSCRIBE with
    filters past the bound it would tell the client its subscriptions are gone while they
    stay; a 3.1.1 server that cannot go on closes the connection instead (§4.8)."""
    if isinstance(packet, Unsubscribe) and packet.refused and level != MQTT_5:
        count = len(packet.filters) + packet.refused
        return LimitExceeded("max_filters_per_subscribe", f"UNSUBSCRIBE of {count} filters")
    return None


def oversized_answer(packet: Subscribe | Unsubscribe, most: int) -> LimitExceeded | None:
    """Why the connection closes, if the SUBACK or UNSUBACK that answers ``packet`` (a code
    a filter, no properties) exceeds the 5.0 client's Maximum Packet Size ``most``. Nothing
    of the packet is done then (DISCONNECT 0x95, "for this Client"): the server may neither
    send it ([MQTT-3.1.2-24]) nor leave the packet unanswered ([MQTT-3.8.4-1],
    [MQTT-3.10.4-4]), nor answer fewer filters ([MQTT-3.8.4-6])."""
    if isinstance(packet, Subscribe):
        name, count = "SUBACK", len(packet.requests) + packet.refused
    else:
        name, count = "UNSUBACK", len(packet.filters) + packet.refused
    body = 3 + count  # packet id, an empty property list, the codes
    size = 1 + len(varint(body)) + body
    if size <= most:
        return None
    detail = f"its {name} of {size} bytes exceeds its Maximum Packet Size {most}"
    return LimitExceeded("client_maximum_packet_size", detail)
