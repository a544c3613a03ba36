"""A packet sent a few bytes a read (``broker.mqtt.intake``): gathered once, read whole.

A client may send each byte of a packet in a TLS record of its own. Each read used to be
appended to the bytes kept before it, copying them all again: a 256 KiB PUBLISH sent a byte a
read was 34 GB of copying (3.4 s of CPU), quadratic in the packet's size.
"""

from broker.mqtt.connection import CONNECTED
from broker.mqtt.limits import Limits
from broker.mqtt.packets import Publish
from tests.broker.mqtt.wire_helpers import connected, wire

BIG = Publish("t/trickled", bytes(range(256)) * 1024, 0)  # 256 KiB


def test_the_bytes_before_a_packet_is_whole_are_not_copied_again_at_each_read() -> None:
    connection, _ = connected(Limits(max_packet_size=1024 * 1024))
    data = wire(BIG)
    half = len(data) // 2
    assert connection.receive_data(data[:half], 0.0) == []
    kept = connection._pending  # what came before the trickle
    for at in range(half, half + 20_000):
        assert connection.receive_data(data[at : at + 1], 0.0) == []
        assert connection._pending is kept  # not joined (copied) with each new byte
    assert connection.buffered == half + 20_000
    assert connection.receive_data(data[half + 20_000 :], 0.0) == [BIG]
    assert connection.buffered == 0


def test_a_trickled_packet_is_read_whole_and_what_follows_it_too() -> None:
    connection, _ = connected(Limits(max_packet_size=1024 * 1024))
    small = Publish("t/next", b"after", 0)
    last = Publish("t/last", b"end", 0)
    data = wire(BIG, small, last)
    end = len(wire(BIG))
    events = []
    for at in range(0, end - 10, 997):  # reads that never end where a packet does
        events += connection.receive_data(data[at : min(at + 997, end - 10)], 0.0)
    assert events == []
    # The read that completes it carries the next packets, the last one cut short; 256 KiB
    # fill a turn (``intake.TURN_BYTES``), so the next waits for the next turn.
    assert connection.receive_data(data[end - 10 : -1], 0.0) == [BIG]
    connection.new_turn()
    assert connection.receive_data(b"", 0.0) == [small]
    assert connection.receive_data(data[-1:], 0.0) == [last]
    assert connection.state == CONNECTED
    assert connection.buffered == 0
