"""One connection's read does not hold the others: a SUBSCRIBE or UNSUBSCRIBE brings at most
``max_filters_per_subscribe`` filters to the broker (the rest are checked, then refused
without an ACL check or a subscription), and one call of the core handles at most a turn's
budget of packets, filters and KBs (``Connection.turn_over``), the rest waiting for
``new_turn``."""

import re

import pytest

from broker.mqtt.connection import CLOSED, CONNECTED, TURN_BUDGET, Connection
from broker.mqtt.encode import encode
from broker.mqtt.events import Event, LimitExceeded, ProtocolViolation
from broker.mqtt.intake import TURN_BYTES
from broker.mqtt.limits import Limits
from broker.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Pingreq,
    Pingresp,
    Publish,
    Subscribe,
    SubscribeRequest,
    Unsubscribe,
)
from tests.broker.mqtt.wire_helpers import connected, feed, packets_in, wire

LIMITS = Limits(max_filters_per_subscribe=10)


def _requests(count: int) -> tuple[SubscribeRequest, ...]:
    return tuple(SubscribeRequest(f"a/{n}", 1) for n in range(count))


@pytest.mark.parametrize("level", [MQTT_3_1_1, MQTT_5])
def test_a_subscribe_brings_the_bound_and_counts_the_rest(level: int) -> None:
    connection, _ = connected(LIMITS, level=level)
    [event] = feed(connection, Subscribe(1, _requests(25)))
    assert event == Subscribe(1, _requests(10), refused=15)
    assert connection.state == CONNECTED


def test_within_the_bound_nothing_is_refused() -> None:
    connection, _ = connected(LIMITS)
    assert feed(connection, Subscribe(1, _requests(10))) == [Subscribe(1, _requests(10))]


def _past_the_bound(level: int, extra: bytes, kind: int = 0x82) -> bytes:
    """A SUBSCRIBE (UNSUBSCRIBE: ``kind`` 0xA2) of 10 valid filters and ``extra`` after them."""
    packet = (
        Subscribe(1, _requests(10))
        if kind == 0x82
        else Unsubscribe(1, tuple(r.topic_filter for r in _requests(10)))
    )
    body = encode(packet, level)[2:] + extra  # packet id, properties, 10 filters
    return bytes([kind, len(body)]) + body


@pytest.mark.parametrize(
    ("level", "extra", "kind", "problem"),
    [
        (MQTT_3_1_1, b"\x00\x02\xff\xfe\x01", 0x82, "not valid UTF-8"),  # §1.5.3
        (MQTT_5, b"\x00\x02\xc3\x28\x01", 0x82, "not valid UTF-8"),
        (MQTT_3_1_1, b"\x00\x01a\x07", 0x82, "requested QoS byte 0x07"),  # §3.8.3.1
        (MQTT_5, b"\x00\x01a\xc1", 0x82, "reserved bits set"),  # [MQTT-3.8.3-5]
        (MQTT_5, b"\x00\x01a\x03", 0x82, "Maximum QoS or Retain Handling of 3"),
        (MQTT_5, b"\x00\x0a$share/g/a\x04", 0x82, "No Local set on a shared"),
        (MQTT_3_1_1, b"\x00\x00\x01", 0x82, "empty topic filter"),  # [MQTT-4.7.3-1]
        (MQTT_5, b"\x00\x00", 0xA2, "empty topic filter"),
        (MQTT_3_1_1, b"\x00\x03a\x00b\x01", 0x82, "U\\+0000"),
        (MQTT_3_1_1, b"\x00\x03#/a\x01", 0x82, "'#' must be the last level"),  # §4.7.1.2
        (MQTT_3_1_1, b"\x00\x03a+/\x00", 0x82, "'\\+' must occupy a whole level"),
        (MQTT_3_1_1, b"\x00\x02\xc3\xa9\x00\x02a#", 0xA2, "'#' must be the last"),
        (MQTT_5, b"\x00\x03#/a\x01", 0x82, "'#' must be the last level"),  # 5.0 §4.13.1
        (MQTT_5, b"\x00\x02a+", 0xA2, "'\\+' must occupy a whole level"),
        (MQTT_5, b"\x00\x08$share/g\x01", 0x82, "shared subscription is"),  # §4.8.2
    ],
)
def test_a_malformed_filter_past_the_bound_still_closes(
    level: int, extra: bytes, kind: int, problem: str
) -> None:
    # 3.1.1 §4.8, 5.0 §4.13: a malformed packet closes the connection, wherever in it the
    # filter is; being past max_filters_per_subscribe spares it the broker, not the check.
    connection, _ = connected(LIMITS, level=level)
    data = _past_the_bound(level, extra * 2, kind)  # two of them: the last is not special
    [event] = connection.receive_data(data, 0.0)
    assert isinstance(event, ProtocolViolation)
    assert re.search(problem, event.reason), event.reason
    assert connection.state == CLOSED


@pytest.mark.parametrize("level", [MQTT_3_1_1, MQTT_5])
def test_valid_filters_past_the_bound_are_checked_and_refused(
    level: int,
) -> None:
    # Not ASCII, wildcards in their place, a shared one: checked and counted, not kept.
    # (A wildcard out of place closes at either level: ``test_topic_filters``.)
    extra = b"\x00\x02\xc3\xa9\x01\x00\x03a/#\x02\x00\x03+/a\x00\x00\x0a$share/g/a\x01"
    connection, _ = connected(LIMITS, level=level)
    [event] = connection.receive_data(_past_the_bound(level, extra), 0.0)
    assert event == Subscribe(1, _requests(10), refused=4)
    assert connection.state == CONNECTED


def test_lengths_past_the_bound_must_still_end_with_the_packet() -> None:
    connection, _ = connected(LIMITS)
    body = encode(Subscribe(1, _requests(10)), MQTT_3_1_1)[2:] + b"\x00\x09ab\x01"
    events = connection.receive_data(bytes([0x82, len(body)]) + body, 0.0)
    assert connection.state == CLOSED
    assert "do not end with the packet" in str(events)
    connection, _ = connected(LIMITS)
    body = encode(Subscribe(1, _requests(10)), MQTT_3_1_1)[2:] + b"\x00\x01a"  # no options
    events = connection.receive_data(bytes([0x82, len(body)]) + body, 0.0)
    assert connection.state == CLOSED
    assert "do not end with the packet" in str(events)


def test_an_mqtt_5_unsubscribe_past_the_bound_is_answered() -> None:
    connection, _ = connected(LIMITS, level=MQTT_5)
    filters = tuple(f"a/{n}" for n in range(12))
    [event] = feed(connection, Unsubscribe(1, filters))
    assert event == Unsubscribe(1, filters[:10], refused=2)
    assert connection.state == CONNECTED


def test_an_mqtt_3_1_1_unsubscribe_past_the_bound_closes() -> None:
    # Its UNSUBACK has no codes (§3.11.3): it would say the filters are gone while they stay.
    connection, _ = connected(LIMITS)
    events = feed(connection, Unsubscribe(1, tuple(f"a/{n}" for n in range(11))), Pingreq())
    assert events == [LimitExceeded("max_filters_per_subscribe", "UNSUBSCRIBE of 11 filters")]
    assert connection.state == CLOSED
    assert connection.data_to_send() == b""  # nothing after it is read


def test_one_turn_handles_at_most_its_budget_of_packets() -> None:
    connection, _ = connected()
    connection.new_turn()
    assert connection.receive_data(wire(*[Pingreq()] * (TURN_BUDGET + 5)), 0.0) == []
    assert packets_in(connection.data_to_send()) == [Pingresp()] * TURN_BUDGET
    assert connection.turn_over
    assert connection.more_to_read
    assert connection.receive_data(b"", 0.0) == []  # the same turn: nothing more
    connection.new_turn()
    assert connection.receive_data(b"", 0.0) == []
    assert packets_in(connection.data_to_send()) == [Pingresp()] * 5
    assert not connection.turn_over
    assert not connection.more_to_read


def test_bytes_kept_meanwhile_are_read_in_the_next_turn() -> None:
    connection, _ = connected()
    connection.new_turn()
    connection.receive_data(wire(*[Pingreq()] * TURN_BUDGET), 0.0)
    connection.keep(wire(Pingreq()))
    connection.data_to_send()
    connection.new_turn()
    assert connection.receive_data(b"", 0.0) == []
    assert packets_in(connection.data_to_send()) == [Pingresp()]


def test_a_subscribe_s_filters_count_against_the_turn() -> None:
    limits = Limits(max_filters_per_subscribe=100)
    connection, _ = connected(limits)
    packets = [Subscribe(n, _requests(100)) for n in range(1, 5)]
    connection.new_turn()
    events = connection.receive_data(wire(*packets), 0.0)
    while connection.more_to_read and not connection.turn_over:
        events += connection.receive_data(b"", 0.0)
    # 101 each: the third goes past 256, the fourth waits for the next turn.
    assert events == packets[:3]
    assert connection.turn_over
    connection.new_turn()
    assert connection.receive_data(b"", 0.0) == packets[3:]


def test_filters_refused_past_the_bound_count_against_the_turn_too() -> None:
    # Each is checked (``broker.mqtt.filters``): an eighth of a granted one's cost, counted
    # as such, so that a packet of thousands ends its turn.
    connection, _ = connected(LIMITS)
    connection.new_turn()
    many = Subscribe(1, _requests(10 + 8 * TURN_BUDGET))
    [event] = connection.receive_data(wire(many, Pingreq()), 0.0)
    assert event == Subscribe(1, _requests(10), refused=8 * TURN_BUDGET)
    assert connection.turn_over
    assert connection.data_to_send() == b""  # the PINGREQ waits for the next turn
    connection.new_turn()
    assert connection.receive_data(b"", 0.0) == []
    assert packets_in(connection.data_to_send()) == [Pingresp()]


def _turns(connection: Connection, data: bytes) -> list[list[Event]]:
    """The events of each turn the core takes to read ``data`` (as ``broker.client`` drives
    it: a new turn, then again while ``more_to_read`` and the turn is not over)."""
    turns: list[list[Event]] = []
    while data or connection.more_to_read:
        connection.new_turn()
        events = connection.receive_data(data, 0.0)
        data = b""
        while connection.more_to_read and not connection.turn_over:
            events += connection.receive_data(b"", 0.0)
        turns.append(events)
    return turns


def test_large_publishes_end_a_turn_by_their_bytes() -> None:
    # 40 PUBLISHes of 100 KB in one read: as packets alone, 40 of 256, one turn of 4 MB.
    limits = Limits(max_packet_size=256 * 1024)
    connection, _ = connected(limits)
    publishes = [Publish("t", bytes([n]) * 100_000) for n in range(40)]
    turns = _turns(connection, wire(*publishes, Pingreq()))
    # 1 + 97 KB each: the third goes past the budget, so a turn is three of them.
    assert [len(events) for events in turns] == [3] * 13 + [1]
    for events in turns:
        assert sum(len(e.payload) for e in events if isinstance(e, Publish)) <= (
            TURN_BUDGET * TURN_BYTES + 100_000
        )
    assert [event for events in turns for event in events] == publishes  # all, in order
    assert packets_in(connection.data_to_send()) == [Pingresp()]  # after the last turn's
    assert connection.state == CONNECTED


def test_a_turn_always_reads_one_packet_a_max_size_one_too() -> None:
    limits = Limits(max_packet_size=256 * 1024)
    connection, _ = connected(limits)
    biggest = Publish("t", bytes(limits.max_packet_size - 7))  # fixed header 4, topic 3
    assert len(wire(biggest)) == limits.max_packet_size
    turns = _turns(connection, wire(biggest, biggest, Publish("t", b"small")))
    assert turns == [[biggest], [biggest], [Publish("t", b"small")]]


def test_small_packets_are_not_held_by_the_byte_count() -> None:
    # A PUBLISH of 1,000 bytes costs one packet, as before: a turn still reads 256.
    connection, _ = connected()
    publishes = [Publish("t", bytes(1000)) for _ in range(TURN_BUDGET + 1)]
    assert [len(events) for events in _turns(connection, wire(*publishes))] == [TURN_BUDGET, 1]
