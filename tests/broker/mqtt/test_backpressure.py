"""Backpressure for MQTT 3.1/3.1.1 (``Connection.window_full``): the broker answers a QoS 1 or
2 PUBLISH only once the store has it (§4.3.2), and these versions have no Receive Maximum.
Once ``max_awaiting_pubrel`` of a client's PUBLISHes are unanswered, nothing more is read
until one is; nobody is disconnected for it. Keep-alive does not expire meanwhile: that is
the I/O layer's rule (``broker.keep_alive``, for every reason a client is not read), shown
with a real broker in tests/reliability/test_backpressure.py."""

from broker.mqtt.connection import CONNECTED, Connection
from broker.mqtt.limits import Limits
from broker.mqtt.packets import MQTT_5, Pingreq, Pingresp, Puback, Publish, Pubrec
from tests.broker.mqtt.wire_helpers import connected, feed, packets_in, wire

LIMITS = Limits(max_awaiting_pubrel=3)


def _publish(packet_id: int, qos: int = 1) -> Publish:
    return Publish("t", bytes([packet_id]), qos, packet_id=packet_id)


def _full_of(*publishes: Publish) -> Connection:
    connection, _ = connected(LIMITS)
    assert feed(connection, *publishes) == list(publishes)
    assert connection.window_full
    return connection


def test_reading_stops_at_the_bound_and_goes_on_for_each_answer() -> None:
    connection, _ = connected(LIMITS)
    # QoS 1 and 2 together; the PINGREQ behind them waits as well (nothing more is read).
    events = feed(connection, _publish(1), _publish(2, 2), _publish(3), _publish(4), Pingreq())
    assert events == [_publish(1), _publish(2, 2), _publish(3)]
    assert connection.window_full
    assert not connection.more_to_read
    assert connection.state == CONNECTED  # not closed for it
    assert connection.data_to_send() == b""  # no PINGRESP: the PINGREQ was not read
    connection.acknowledge(2, 2)  # the PUBREC of the QoS 2 one makes room
    assert connection.more_to_read
    assert connection.receive_data(b"", 1.0) == [_publish(4)]
    assert not connection.more_to_read  # full again
    connection.acknowledge(1, 1)
    assert connection.receive_data(b"", 1.0) == []
    assert packets_in(connection.data_to_send()) == [Pubrec(2), Puback(1), Pingresp()]


def test_what_comes_in_a_later_read_waits_too() -> None:
    connection = _full_of(_publish(1), _publish(2), _publish(3))
    assert connection.receive_data(wire(_publish(4), _publish(5)), 1.0) == []
    connection.acknowledge(1, 1)
    assert connection.receive_data(b"", 1.0) == [_publish(4)]
    connection.acknowledge(2, 1)
    assert connection.receive_data(b"", 1.0) == [_publish(5)]


def test_answered_at_once_it_reads_everything() -> None:
    # A store that keeps up: each PUBLISH is answered as the broker handles it, so reading
    # goes on after each batch (as ``broker.client`` calls it, while ``more_to_read``).
    connection, _ = connected(LIMITS)
    events = feed(connection, *(_publish(n) for n in range(1, 11)))
    read: list[Publish] = []
    while events:
        for publish in events:
            assert isinstance(publish, Publish)
            assert publish.packet_id is not None
            read.append(publish)
            connection.acknowledge(publish.packet_id, 1)
        events = connection.receive_data(b"", 0.0) if connection.more_to_read else []
    assert read == [_publish(n) for n in range(1, 11)]


def test_a_qos_2_publish_sent_again_counts_until_its_pubrec() -> None:
    connection, _ = connected(LIMITS)
    feed(connection, _publish(1, 2))
    connection.acknowledge(1, 2)
    again = Publish("t", b"\x01", 2, dup=True, packet_id=1)
    feed(connection, again, _publish(2), _publish(3))
    assert connection.window_full  # the repeated one is answered with PUBREC too (§4.3.3)
    connection.acknowledge(1, 2)
    assert not connection.window_full


def test_mqtt_5_is_bounded_by_the_receive_maximum_instead() -> None:
    connection, _ = connected(LIMITS, level=MQTT_5)
    feed(connection, _publish(1), _publish(2), _publish(3))
    assert not connection.window_full  # one more is a DISCONNECT 0x93 (5.0 §3.3.4)
