"""What MQTT 5 user properties can cost the broker (5.0 §3.3.2.3.7: they repeat at will).

Each costs about 2.4 µs to read. Before, a 256 KiB PUBLISH of 50,000 empty ones held the event
loop for 140 ms, and a turn of 256 PUBLISHes of 256 new ones each (1.3 KB a packet) 150 ms: two
clients sending them made another's PINGREQ wait 0.56 s (p50) to 1.08 s (p99). Now one packet
carries at most ``MAX_USER_PROPERTIES``, a new property list counts against the turn by its
size (``broker.mqtt.connection``), and a list read is kept as its bytes, not as Python values.
"""

import tracemalloc

from broker.mqtt.codes import Reason
from broker.mqtt.connection import CLOSED, CONNECTED, TURN_BUDGET
from broker.mqtt.events import ProtocolViolation
from broker.mqtt.intake import TURN_BYTES
from broker.mqtt.packets import MQTT_5, Publish
from broker.mqtt.properties import Properties, Property
from tests.broker.mqtt.wire_helpers import connected, feed, wire

MAX_USER_PROPERTIES = 1024  # broker.mqtt.properties.MAX_USER_PROPERTIES


def _publish(users: int, first: str = "") -> Publish:
    items = [(Property.USER_PROPERTY, (first, ""))] + [(Property.USER_PROPERTY, ("", ""))] * (
        users - 1
    )
    return Publish("a", b"x", properties=Properties(items))


def test_a_packet_of_the_bound_is_read_and_one_more_closes_with_quota_exceeded() -> None:
    connection, _ = connected(level=MQTT_5)
    [event] = feed(connection, _publish(MAX_USER_PROPERTIES))
    assert isinstance(event, Publish)
    assert len(event.properties.all(Property.USER_PROPERTY)) == MAX_USER_PROPERTIES
    [event] = feed(connection, _publish(MAX_USER_PROPERTIES + 1))
    assert isinstance(event, ProtocolViolation)
    assert event.code == Reason.QUOTA_EXCEEDED
    assert f"more than {MAX_USER_PROPERTIES} user properties" in event.reason
    assert connection.state == CLOSED


def test_new_property_lists_count_against_the_turn_by_their_size() -> None:
    connection, _ = connected(level=MQTT_5)
    # 1.3 KB lists, each new: about 41 packets' work each.
    packets = [_publish(256, first=str(n)) for n in range(20)]
    connection.new_turn()
    events = connection.receive_data(wire(*packets, level=MQTT_5), 0.0)
    assert connection.turn_over
    assert 1 < len(events) < 10
    connection.new_turn()
    assert len(connection.receive_data(b"", 0.0)) == len(events)  # the next turn's share


def test_the_same_list_again_costs_a_packet_of_its_size() -> None:
    # A busy client sends the same properties with every PUBLISH: not read again, so it costs
    # what any packet of its 1.3 KB costs (``broker.mqtt.intake``): 2, not 42.
    connection, _ = connected(level=MQTT_5)
    same = _publish(256)
    assert len(wire(same, level=MQTT_5)) // TURN_BYTES == 1
    feed(connection, same)  # its list read once
    connection.new_turn()
    count = TURN_BUDGET // 2 + 5
    events = connection.receive_data(wire(*[same] * count, level=MQTT_5), 0.0)
    assert len(events) == TURN_BUDGET // 2
    assert connection.turn_over
    assert connection.state == CONNECTED


def test_a_long_list_read_is_held_as_its_bytes() -> None:
    # Decoded, 1,024 empty user properties held 128 KB for the 5 KB that max_queued_bytes and
    # the retained bounds count: a queue of 1,000 such messages held 128 MB.
    connection, _ = connected(level=MQTT_5)
    data = [wire(_publish(MAX_USER_PROPERTIES, first=str(n)), level=MQTT_5) for n in range(11)]
    # One read first: what the first decode of the process caches (about 110 KB when this test
    # runs before any other of its kind) is not what a message holds.
    connection.receive_data(data.pop(), 0.0)
    tracemalloc.start(64)  # deep enough that each trace reaches this test's frame
    try:
        events = [connection.receive_data(packet, 0.0) for packet in data]
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # What this call still holds, not what other threads of the process allocated meanwhile.
    ours = snapshot.filter_traces([tracemalloc.Filter(True, __file__, all_frames=True)])
    held = sum(stat.size for stat in ours.statistics("filename"))
    assert len(events) == 10
    assert held < 2 * sum(len(packet) for packet in data)
    [[first]] = events[:1]
    assert isinstance(first, Publish)
    assert first.properties.all(Property.USER_PROPERTY)[0] == ("0", "")  # read when asked
