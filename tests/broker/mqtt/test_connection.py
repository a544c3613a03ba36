"""Every state transition of one connection, bytes in and bytes out, with the rule it follows."""

import pytest

from broker.mqtt.connection import CLOSED, CONNECTED, Connection
from broker.mqtt.events import (
    ConnectionRefused,
    DuplicateReceived,
    LimitExceeded,
    MessageCompleted,
    MessageDropped,
    MessageReleased,
    MessageSent,
    ProtocolViolation,
    PublishReleased,
    PubrelAgain,
)
from broker.mqtt.limits import Limits
from broker.mqtt.packets import (
    MQTT_3_1,
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    SubscribeRequest,
    Unsuback,
    Unsubscribe,
    Will,
)
from broker.mqtt.properties import Properties, Property
from broker.mqtt.session import RELEASED, Outgoing, Session
from tests.broker.mqtt.wire_helpers import connected, drive, feed, packets_in, wire


def test_connack_after_accept_with_session_present() -> None:
    # §3.2.2.2: session present is 1 when a persistent session was resumed.
    connection, sent = connected(session=Session("c", persistent=True), present=True)
    assert sent == [Connack(True, 0)]
    assert connection.state == CONNECTED


def test_the_first_packet_must_be_connect() -> None:
    connection = Connection(Limits())
    events = connection.receive_data(wire(Pingreq()), 0)
    assert events == [
        ProtocolViolation("first packet is PINGREQ, not CONNECT (§3.1.0)", 0x82, False)
    ]  # §3.1.0
    assert connection.state == CLOSED
    assert connection.receive_data(wire(Pingreq()), 0) == []


def test_a_second_connect_closes() -> None:
    connection, _ = connected()
    [violation] = feed(connection, Connect(4, "again", True, 0))
    assert isinstance(violation, ProtocolViolation)
    assert "second CONNECT" in violation.reason  # §3.1.0


def test_bytes_behind_connect_wait_for_the_decision_then_come_in_order() -> None:
    connection = Connection(Limits())
    data = wire(Connect(4, "c", True, 60), Subscribe(1, (SubscribeRequest("a", 1),)), Pingreq())
    events = connection.receive_data(data[:-1], 0)  # the PINGREQ's last byte comes later
    assert [type(e) for e in events] == [Connect]
    assert connection.receive_data(data[-1:], 0) == []  # still authenticating: kept
    assert connection.buffered == len(data) - len(wire(Connect(4, "c", True, 60)))
    connection.accept(Session("c", persistent=False), session_present=False)
    assert drive(connection, b"") == [Subscribe(1, (SubscribeRequest("a", 1),))]
    assert packets_in(connection.data_to_send()) == [Connack(False, 0), Suback(1, (1,)), Pingresp()]


def test_everything_before_disconnect_in_one_read_is_processed_in_order() -> None:
    """§4.6 and §3.14.4: SUBSCRIBE, UNSUBSCRIBE and PUBREL written together with DISCONNECT
    are each handled and answered in order; what follows DISCONNECT is not."""
    session = Session("c", persistent=False)
    session.awaiting_pubrel.update({1, 2, 3})
    connection, _ = connected(session=session)
    subscribe = Subscribe(5, (SubscribeRequest("a/#", 2),))
    unsubscribe = Unsubscribe(6, ("b",))
    data = wire(
        subscribe, unsubscribe, Pubrel(1), Pubrel(2), Pubrel(3), Disconnect(),
        Publish("after", b"x"),
    )  # fmt: skip
    assert connection.receive_data(data, 0) == [subscribe]  # the broker answers it first
    assert connection.more_to_read
    connection.suback(5, [2])
    assert drive(connection, b"") == [unsubscribe, Disconnect()]
    assert packets_in(connection.data_to_send()) == [
        Suback(5, (2,)), Unsuback(6), Pubcomp(1), Pubcomp(2), Pubcomp(3),
    ]  # fmt: skip
    assert session.awaiting_pubrel == set()
    assert connection.state == CLOSED
    assert not connection.more_to_read


def test_pingreq_is_answered() -> None:
    connection, _ = connected()
    assert feed(connection, Pingreq()) == []
    assert packets_in(connection.data_to_send()) == [Pingresp()]  # §3.12.4


def test_keep_alive_is_one_and_a_half_times_from_the_last_packet() -> None:
    connection, _ = connected(keep_alive=10, now=100.0)
    assert not connection.keep_alive_expired(115.0)  # §3.1.2.10: 1.5 x 10 s
    assert connection.keep_alive_expired(115.1)
    feed(connection, Pingreq(), now=110.0)
    assert not connection.keep_alive_expired(125.0)
    assert connection.keep_alive_expired(125.1)
    forever, _ = connected(keep_alive=0)  # 0 switches the mechanism off
    assert not forever.keep_alive_expired(1e9)


def test_a_packet_split_over_many_reads() -> None:
    connection, _ = connected()
    data = wire(Publish("a/b", b"payload", 1, packet_id=7))
    for byte in data[:-1]:
        assert connection.receive_data(bytes([byte]), 0) == []
    assert connection.receive_data(data[-1:], 0) == [Publish("a/b", b"payload", 1, packet_id=7)]


def test_a_packet_over_the_maximum_size_closes_before_its_body_arrives() -> None:
    connection, _ = connected(Limits(max_packet_size=1024))
    [violation] = connection.receive_data(b"\x32\xff\xff\x03", 0)  # a 65,535-byte claim
    assert violation == ProtocolViolation(
        "PUBLISH of 65539 bytes exceeds max_packet_size 1024", 0x95, True
    )


def test_outbound_qos1_waits_for_puback_in_a_bounded_window() -> None:
    """§4.3.2 and the in-flight window: beyond it messages wait, in order, QoS 0 too (§4.6)."""
    session = Session("c", persistent=False)
    connection, _ = connected(Limits(max_inflight=2), session=session)
    messages = [Outgoing("t", bytes([n]), 1) for n in range(3)] + [Outgoing("t", b"q0", 0)]
    events = [event for message in messages for event in connection.publish(message)]
    assert events == [MessageSent(messages[0]), MessageSent(messages[1])]
    sent = packets_in(connection.data_to_send())
    assert [p.packet_id for p in sent if isinstance(p, Publish)] == [1, 2]
    assert list(session.queue) == messages[2:]
    events = feed(connection, Puback(1))
    assert events == [MessageCompleted(messages[0]), MessageSent(messages[2])]
    assert packets_in(connection.data_to_send()) == [
        Publish("t", b"\x02", 1, packet_id=3),
        Publish("t", b"q0", 0),
    ]
    assert feed(connection, Puback(99)) == []  # unknown ids are ignored


def test_outbound_qos2_flow() -> None:
    session = Session("c", persistent=False)
    connection, _ = connected(session=session)
    message = Outgoing("t", b"m", 2)
    assert connection.publish(message) == [MessageSent(message)]
    assert packets_in(connection.data_to_send()) == [Publish("t", b"m", 2, packet_id=1)]
    assert feed(connection, Pubrec(1)) == [MessageReleased(message)]  # §4.3.3
    assert packets_in(connection.data_to_send()) == [Pubrel(1)]
    assert message.state == RELEASED
    assert feed(connection, Pubcomp(1)) == [MessageCompleted(message)]
    assert session.inflight == {}


def test_a_stored_message_s_pubrel_is_left_to_the_broker_each_time() -> None:
    """A stored message's PUBREL waits for the store's commit of its release (§4.3.3), which
    the broker knows of: on its PUBREC, a repeated PUBREC, and a resumed session (§4.4)."""
    session = Session("c", persistent=True)
    first, _ = connected(session=session)
    message = Outgoing("t", b"m", 2)
    message.stored = object()  # the store's handle
    first.publish(message)
    first.data_to_send()
    assert feed(first, Pubrec(1)) == [MessageReleased(message)]
    assert feed(first, Pubrec(1)) == [PubrelAgain(message)]
    assert first.data_to_send() == b""
    first.close()
    second = Connection(Limits())
    second.receive_data(wire(Connect(4, "c", False, 60)), 0)
    assert second.accept(session, session_present=True, pubrel_later=[1]) == [PubrelAgain(message)]
    assert packets_in(second.data_to_send()) == [Connack(True, 0)]
    second.release(message)  # the broker, once the store committed the release
    assert packets_in(second.data_to_send()) == [Pubrel(1)]


def _stored_and_released(session: Session, level: int = 4) -> tuple[Connection, Outgoing]:
    """A connection that sent a stored QoS 2 message (id 1) and got its PUBREC: its PUBREL
    waits for the broker (the store's commit)."""
    connection, _ = connected(level=level, session=session)
    message = Outgoing("t", b"m", 2)
    message.stored = object()
    connection.publish(message)
    connection.data_to_send()
    assert feed(connection, Pubrec(1)) == [MessageReleased(message)]
    return connection, message


@pytest.mark.parametrize("level", [4, MQTT_5])
def test_a_pubcomp_before_its_pubrel_went_out_is_a_protocol_error(level: int) -> None:
    """PUBCOMP is the answer to PUBREL (§4.3.3): one for a PUBREL not sent answers nothing
    (5.0 §4.13.1, 0x82; 3.1.1 §4.8). Taken as delivered, the message would leave its held
    PUBREL to go out for a packet id no longer in flight."""
    session = Session("c", persistent=True)
    connection, message = _stored_and_released(session, level)
    [violation] = feed(connection, Pubcomp(1))
    assert violation == ProtocolViolation(
        "PUBCOMP: packet id 1: no PUBREL was sent for it yet", 0x82, True
    )
    assert connection.state == CLOSED
    assert session.inflight == {1: message}  # its PUBREL goes on the next connection (§4.4)
    assert message.state == RELEASED


def test_a_pubcomp_once_the_pubrel_went_out_completes() -> None:
    session = Session("c", persistent=True)
    connection, message = _stored_and_released(session)
    connection.release(message)
    assert packets_in(connection.data_to_send()) == [Pubrel(1)]
    assert feed(connection, Pubcomp(1)) == [MessageCompleted(message)]
    assert session.inflight == {}


def test_a_resumed_session_s_pubcomp_before_its_pubrel_is_a_protocol_error() -> None:
    """The PUBREL of the last connection does not count: §4.4 sends it again, and the
    client's PUBCOMP answers that one."""
    session = Session("c", persistent=True)
    first, message = _stored_and_released(session)
    first.release(message)
    first.data_to_send()
    first.close()
    second = Connection(Limits())
    second.receive_data(wire(Connect(4, "c", False, 60)), 0)
    assert second.accept(session, session_present=True, pubrel_later=[1]) == [PubrelAgain(message)]
    [violation] = feed(second, Pubcomp(1))
    assert isinstance(violation, ProtocolViolation)
    assert session.inflight == {1: message}


def test_a_held_pubrel_of_a_message_no_longer_in_flight_is_not_sent() -> None:
    """A repeated PUBREC's PUBREL, held behind the store, after the first PUBREL's PUBCOMP:
    the packet id is free, and here already a new message's, which it would release unsent."""
    session = Session("c", persistent=True)
    connection, message = _stored_and_released(session)
    assert feed(connection, Pubrec(1)) == [PubrelAgain(message)]
    connection.release(message)  # the first PUBREL
    assert packets_in(connection.data_to_send()) == [Pubrel(1)]
    assert feed(connection, Pubcomp(1)) == [MessageCompleted(message)]
    new = Outgoing("t", b"new", 2)
    session._next_id = 1  # the id goes round to 1 again (§2.3.1)
    connection.publish(new)
    assert packets_in(connection.data_to_send()) == [Publish("t", b"new", 2, packet_id=1)]
    connection.release(message)  # the repeated PUBREC's, once the store committed
    assert connection.data_to_send() == b""
    assert session.inflight == {1: new}


def test_a_resumed_session_resends_in_flight_in_order_then_the_queue() -> None:
    """§4.4: PUBLISH again with DUP, PUBREL where PUBREC came, original packet ids."""
    session = Session("c", persistent=True)
    first, _ = connected(Limits(max_inflight=2), session=session)
    for topic, qos in (("a", 1), ("b", 2), ("c", 1)):
        first.publish(Outgoing(topic, topic.encode(), qos))
    feed(first, Pubrec(2))
    first.close()  # the network connection is gone

    second, sent = connected(Limits(max_inflight=2), session=session, present=True)
    assert sent == [
        Connack(True, 0),
        Publish("a", b"a", 1, dup=True, packet_id=1),
        Pubrel(2),
    ]
    feed(second, Puback(1))
    assert packets_in(second.data_to_send()) == [Publish("c", b"c", 1, packet_id=3)]


def test_inbound_qos2_delivers_once_until_pubrel() -> None:
    """§4.3.3 (method A): one delivery; a PUBLISH again before PUBREL is only acknowledged."""
    session = Session("c", persistent=False)
    connection, _ = connected(session=session)
    publish = Publish("t", b"x", 2, packet_id=9)
    assert feed(connection, publish) == [publish]
    connection.acknowledge(9, 2)
    assert packets_in(connection.data_to_send()) == [Pubrec(9)]
    again = Publish("t", b"x", 2, dup=True, packet_id=9)
    assert feed(connection, again) == [DuplicateReceived(9, again)]
    assert feed(connection, Pubrel(9)) == []
    assert packets_in(connection.data_to_send()) == [Pubcomp(9)]
    assert feed(connection, publish) == [publish]  # a new message with the id reused


def test_pubrel_of_a_persistent_session_frees_the_id_in_the_store_too() -> None:
    """§4.3.3: the broker's store keeps the ids of a persistent session until PUBREL, and
    PUBCOMP waits until the store has let the id go (the broker sends it: ``complete``),
    for an id it does not know as well (answered all the same); a clean session's ids
    concern the store not."""
    session = Session("c", persistent=True)
    session.awaiting_pubrel.add(4)  # read back with the session
    connection, _ = connected(session=session, present=True)
    connection.data_to_send()
    assert feed(connection, Pubrel(4)) == [PublishReleased(4)]
    assert connection.data_to_send() == b""  # not before the store committed the release
    connection.complete(4)
    assert packets_in(connection.data_to_send()) == [Pubcomp(4)]
    assert feed(connection, Pubrel(4)) == [PublishReleased(4, known=False)]  # sent again
    connection.complete(4, known=False)
    assert packets_in(connection.data_to_send()) == [Pubcomp(4)]
    clean, _ = connected(session=Session("d", persistent=False))
    publish = Publish("t", b"x", 2, packet_id=5)
    assert feed(clean, publish) == [publish]
    assert feed(clean, Pubrel(5)) == []
    assert packets_in(clean.data_to_send())[-1] == Pubcomp(5)


def test_too_many_qos2_awaiting_pubrel_closes() -> None:
    # Their PUBRECs went out: the client, not the store, holds them back (§4.3.3).
    connection, _ = connected(Limits(max_awaiting_pubrel=2))
    feed(connection, *(Publish("t", b"", 2, packet_id=n) for n in (1, 2)))
    connection.acknowledge(1, 2)
    connection.acknowledge(2, 2)
    [events] = feed(connection, Publish("t", b"", 2, packet_id=3))
    assert events == LimitExceeded("max_awaiting_pubrel", "2 QoS 2 messages await PUBREL")
    assert connection.state == CLOSED


def test_queue_overflow_drops_qos0_first_then_the_oldest() -> None:
    session = Session("c", persistent=False)
    connection, _ = connected(Limits(max_inflight=1, max_queued_messages=2), session=session)
    flying, old, qos0 = Outgoing("t", b"f", 1), Outgoing("t", b"o", 1), Outgoing("t", b"z", 0)
    for message in (flying, old, qos0):
        connection.publish(message)
    newer = Outgoing("t", b"n", 1)
    assert connection.publish(newer) == [MessageDropped(qos0, "max_queued_messages")]
    newest = Outgoing("t", b"m", 1)
    assert connection.publish(newest) == [MessageDropped(old, "max_queued_messages")]
    assert list(session.queue) == [newer, newest]


def test_the_queue_counts_a_message_s_properties_as_its_bytes() -> None:
    # MQTT 5 user properties (§3.3.2.3.7) can be most of a message: max_queued_bytes counts them.
    session = Session("c", persistent=False)
    connection, _ = connected(Limits(max_inflight=1, max_queued_bytes=1000), session=session)
    heavy = Properties([(Property.USER_PROPERTY, ("k", "v" * 600))])
    flying, first = Outgoing("t", b"f", 1), Outgoing("t", b"1", 1, properties=heavy)
    connection.publish(flying)  # in flight: the queue is what waits behind it
    assert connection.publish(first) == []
    second = Outgoing("t", b"2", 1, properties=heavy)
    assert connection.publish(second) == [MessageDropped(first, "max_queued_bytes")]
    assert list(session.queue) == [second]
    assert session.queued_bytes == len("t") + len(b"2") + len(heavy.wire)


def test_unsupported_protocol_level_gets_return_code_1_then_nothing() -> None:
    connection = Connection(Limits(levels=frozenset({3, 4})))  # a server without 5.0
    events = connection.receive_data(wire(Connect(MQTT_5, "c", True, 0), level=MQTT_5), 0)
    assert events == [ConnectionRefused("unsupported protocol 'MQTT' level 5", 1)]
    assert connection.data_to_send() == b"\x20\x02\x00\x01"  # §3.1.2.2, as 3.1.1 writes it
    assert connection.state == CLOSED
    five = Connection(Limits(levels=frozenset({4, 5})))
    [connect] = five.receive_data(wire(Connect(MQTT_5, "c", True, 0), level=MQTT_5), 0)
    assert isinstance(connect, Connect)


def test_mqtt_3_1_is_accepted_and_answered_in_its_own_form() -> None:
    connection, sent = connected(level=MQTT_3_1, client_id="old", present=True)
    assert connection.level == MQTT_3_1
    assert connection.data_to_send() == b""
    assert sent == [Connack(False, 0)]  # 3.1 has no session present flag


def test_refusal_sends_the_code_and_ends_the_connection() -> None:
    connection = Connection(Limits())
    connection.receive_data(wire(Connect(4, "c", True, 0), Pingreq()), 0)
    connection.refuse(5)  # §3.2.2.3: not authorised
    assert connection.data_to_send() == b"\x20\x02\x00\x05"
    assert connection.receive_data(wire(Pingreq()), 0) == []


@pytest.mark.parametrize(("graceful", "will_kept"), [(True, False), (False, True)])
def test_disconnect_discards_the_will_a_violation_keeps_it(graceful: bool, will_kept: bool) -> None:
    connection, _ = connected(will=Will("w", b"gone"))
    if graceful:
        feed(connection, Disconnect())  # §3.14.4
    else:
        connection.receive_data(b"\xf0\x00", 0)  # §3.1.2.5: a protocol error publishes it
    assert (connection.will is not None) == will_kept


def test_subscribe_is_answered_by_the_broker() -> None:
    connection, _ = connected()
    connection.suback(4, [1, 0x80])
    connection.unsuback(5)
    assert packets_in(connection.data_to_send())[0] == Suback(4, (1, 0x80))
