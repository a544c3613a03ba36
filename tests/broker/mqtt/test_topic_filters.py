"""A topic filter that breaks §4.7's syntax: MQTT 3.1 and 3.1.1 close the connection (§4.8),
MQTT 5 lets the broker refuse that filter alone (SUBACK 0x8F, 5.0 §3.9.3)."""

import pytest

from broker.mqtt.connection import CLOSED, CONNECTED
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


@pytest.mark.parametrize("level", [MQTT_3_1, MQTT_3_1_1])
@pytest.mark.parametrize("kind", ["SUBSCRIBE", "UNSUBSCRIBE"])
@pytest.mark.parametrize("before", [[], [VALID]], ids=["alone", "after-a-valid-one"])
@pytest.mark.parametrize("topic_filter", list(MALFORMED))
def test_a_malformed_filter_closes_a_3_1_or_3_1_1_connection(
    level: int, kind: str, before: list[str], topic_filter: str
) -> None:
    connection, _ = connected(level=level)
    events = feed(connection, _packet(kind, [*before, topic_filter, "b"]))
    # No SUBSCRIBE or UNSUBSCRIBE event: the broker acts on none of the packet's filters.
    [violation] = events
    assert isinstance(violation, ProtocolViolation)
    assert violation.reason.startswith(f"{kind}: ")
    assert MALFORMED[topic_filter] in violation.reason
    assert connection.state == CLOSED
    assert connection.data_to_send() == b""  # no SUBACK or UNSUBACK


@pytest.mark.parametrize("kind", ["SUBSCRIBE", "UNSUBSCRIBE"])
@pytest.mark.parametrize("topic_filter", [f for f in MALFORMED if f])
def test_mqtt_5_leaves_a_malformed_filter_to_the_broker(kind: str, topic_filter: str) -> None:
    """5.0 §3.9.3: the broker answers that filter 0x8F (``broker.inbound``); the rest of
    the packet is served and the connection stays."""
    connection, _ = connected(level=MQTT_5)
    packet = _packet(kind, [VALID, topic_filter])
    assert feed(connection, packet) == [packet]
    assert connection.state == CONNECTED


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
