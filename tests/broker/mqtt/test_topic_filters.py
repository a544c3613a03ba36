"""A topic filter that breaks §4.7's syntax closes the connection: MQTT 3.1 and 3.1.1 §4.8,
MQTT 5 §4.13.1 (a Protocol Error, 0x82; SUBACK 0x8F is for a filter "correctly formed" that
the server does not allow, 5.0 §3.9.3). MQTT 5 also holds ``$share/`` filters to §4.8.2."""

import pytest

from broker.mqtt.connection import CLOSED
from broker.mqtt.events import ProtocolViolation
from broker.mqtt.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    Packet,
    Subscribe,
    SubscribeRequest,
    Unsubscribe,
)
from nanoiot.text import SHOWN
from tests.broker.mqtt.wire_helpers import connected, feed

# Each malformed filter, and the rule its violation names.
MALFORMED = {
    "a/#/b": "'#' must be the last level and stand alone in it (§4.7.1.2)",
    "a#": "'#' must be the last level and stand alone in it (§4.7.1.2)",
    "a/b+": "'+' must occupy a whole level (§4.7.1.3)",
    "": "empty topic filter (§4.7.3)",
}
VALID = "v1/devices/me/attributes"


def _packet(kind: str, filters: list[str]) -> Packet:
    if kind == "SUBSCRIBE":
        return Subscribe(3, tuple(SubscribeRequest(f, 1) for f in filters))
    return Unsubscribe(3, tuple(filters))


@pytest.mark.parametrize("level", [MQTT_3_1, MQTT_3_1_1, MQTT_5])
@pytest.mark.parametrize("kind", ["SUBSCRIBE", "UNSUBSCRIBE"])
@pytest.mark.parametrize("before", [[], [VALID]], ids=["alone", "after-a-valid-one"])
@pytest.mark.parametrize("topic_filter", list(MALFORMED))
def test_a_malformed_filter_closes_the_connection(
    level: int, kind: str, before: list[str], topic_filter: str
) -> None:
    connection, _ = connected(level=level)
    events = feed(connection, _packet(kind, [*before, topic_filter, "b"]))
    # No SUBSCRIBE or UNSUBSCRIBE event: the broker acts on none of the packet's filters.
    [violation] = events
    assert isinstance(violation, ProtocolViolation)
    assert violation.reason.startswith(f"{kind}: ")
    assert MALFORMED[topic_filter] in violation.reason
    # 5.0: the broker's DISCONNECT says 0x82 Protocol Error (0x81 for the empty one, which
    # is no string the standard allows as a filter at all, §4.7.3 [MQTT-4.7.3-1]).
    assert violation.code == (0x81 if not topic_filter else 0x82)
    assert connection.state == CLOSED
    assert connection.data_to_send() == b""  # no SUBACK or UNSUBACK


@pytest.mark.parametrize("kind", ["SUBSCRIBE", "UNSUBSCRIBE"])
@pytest.mark.parametrize(
    ("topic_filter", "rule"),
    [
        ("$share//x", "the share name must not be empty (MQTT 5.0 §4.8.2)"),
        ("$share/g", "a shared subscription is $share/{share name}/{topic filter}"),
        ("$share/g#x/y", "'#' must be the last level"),  # §4.7.1.2 before §4.8.2
    ],
)
def test_mqtt_5_holds_a_shared_filter_to_4_8_2(kind: str, topic_filter: str, rule: str) -> None:
    """5.0 §4.8.2 [MQTT-4.8.2-1, -2]; a 3.1.1 client's is the broker's to refuse (below)."""
    connection, _ = connected(level=MQTT_5)
    [violation] = feed(connection, _packet(kind, [VALID, topic_filter]))
    assert isinstance(violation, ProtocolViolation)
    assert rule in violation.reason
    assert (violation.code, connection.state) == (0x82, CLOSED)


@pytest.mark.parametrize(
    ("topic_filter", "closes"),
    [
        ("$share/a+b/x", True),  # §4.7.1.3, whatever $share/ means
        ("$share/g/a/#/b", True),  # §4.7.1.2
        ("$share//x", False),  # a fine 3.1.1 filter: the broker refuses it (SUBACK 0x80)
        ("$share/g", False),
        ("$share/g/#", False),
    ],
)
def test_a_shared_filter_is_judged_as_written(topic_filter: str, closes: bool) -> None:
    connection, _ = connected()
    packet = Subscribe(3, (SubscribeRequest(topic_filter, 1),))
    events = feed(connection, packet)
    assert (connection.state == CLOSED) is closes
    if not closes:
        assert events == [packet]


def test_the_reason_shows_the_filter_escaped_and_cut() -> None:
    """The reason goes to the log: the client's text on one line, at most SHOWN characters."""
    connection, _ = connected()
    [violation] = feed(connection, Unsubscribe(3, ("a\n#",)))
    assert isinstance(violation, ProtocolViolation)
    assert "topic filter 'a\\n#': '#' must be the last level" in violation.reason
    connection, _ = connected()
    [violation] = feed(connection, Unsubscribe(3, ("+x" * 10_000,)))
    assert isinstance(violation, ProtocolViolation)
    assert f"...(+{20_000 - SHOWN} characters)': '+' must occupy a whole level" in violation.reason
