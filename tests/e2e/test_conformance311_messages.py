"""MQTT 3.1.1 statements about PUBLISH, retained messages, the QoS flows, SUBSCRIBE,
UNSUBSCRIBE and topics, each against a real broker over mutual TLS with the exact bytes a
raw client writes (docs/conformance-3.1.1.md maps every statement to its test)."""

import pytest

from broker.mqtt.packets import (
    Disconnect,
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
)
from broker.mqtt.wire import utf8_field, varint
from tests.e2e.conformance311 import Broker, marker, publishes, until_marker
from tests.e2e.conformance311 import conformance as conformance


def test_retained_messages_stored_replaced_and_removed(conformance: Broker) -> None:
    topic = "retain/one"
    with conformance.client("retainer") as publisher:
        publisher.send(Publish(topic, b"first", 1, retain=True, packet_id=1))
        assert publisher.read() == Puback(1)
        # [MQTT-3.3.1-12]: RETAIN 0 neither stores nor replaces the retained message.
        publisher.send(Publish(topic, b"not kept", 1, packet_id=2))
        assert publisher.read() == Puback(2)
        with conformance.subscribed("late", (topic, 2)) as late:
            # [MQTT-3.3.1-6/8]: sent to a new subscription, RETAIN 1, at the stored QoS.
            [kept] = publishes(late, 1)
            assert (kept.payload, kept.retain, kept.qos) == (b"first", True, 1)
            assert kept.packet_id is not None
            late.send(Puback(kept.packet_id))
            # [MQTT-3.3.1-7]: a QoS 0 retained message replaces it; [MQTT-3.3.1-9]: an
            # established subscription gets RETAIN 0.
            publisher.send(Publish(topic, b"second", 0, retain=True))
            [live] = publishes(late, 1)
            assert (live.payload, live.retain, live.qos) == (b"second", False, 0)
            # [MQTT-3.3.1-10]: a zero-byte retained message goes to subscribers as usual
            # (RETAIN 0 to an established subscription) and removes the retained one.
            publisher.send(Publish(topic, b"", 1, retain=True, packet_id=3))
            assert publisher.read() == Puback(3)
            [empty] = publishes(late, 1)
            assert (empty.payload, empty.retain) == (b"", False)
            assert empty.packet_id is not None
            late.send(Puback(empty.packet_id))
        # [MQTT-3.3.1-11]: it is not stored either.
        with conformance.subscribed("later", (topic, 1)) as later:
            assert until_marker(later, "later") == []


def test_a_resubscription_replaces_and_resends_retained(conformance: Broker) -> None:
    # [MQTT-3.8.4-3]: the subscription is replaced (its QoS with it), the retained message
    # is sent again, and only one copy of a message comes afterwards.
    topic = "retain/resub"
    with conformance.client("resub-pub") as publisher:
        publisher.send(Publish(topic, b"kept", 1, retain=True, packet_id=1))
        assert publisher.read() == Puback(1)
        with conformance.subscribed("resub", (topic, 1)) as raw:
            [first] = publishes(raw, 1)
            assert first.packet_id is not None
            raw.send(Puback(first.packet_id), Subscribe(2, (SubscribeRequest(topic, 0),)))
            assert raw.read() == Suback(2, (0,))
            [again] = publishes(raw, 1)
            assert (again.payload, again.retain, again.qos) == (b"kept", True, 0)
            publisher.send(Publish(topic, b"live", 1, packet_id=2))
            assert publisher.read() == Puback(2)
            [live] = publishes(raw, 1)
            assert (live.payload, live.qos) == (b"live", 0)  # the new QoS ([MQTT-3.3.5-1])
            assert until_marker(raw, "resub") == []
        publisher.send(Publish(topic, b"", 1, retain=True, packet_id=3))
        assert publisher.read() == Puback(3)


def test_several_filters_one_suback_in_order(conformance: Broker) -> None:
    # [MQTT-3.8.4-4/5], [MQTT-3.9.3-1]: one SUBACK, a code each, in the order asked;
    # [MQTT-3.8.4-2]: with the SUBSCRIBE's packet id. 3 is not a QoS ([MQTT-3.8.3-4]).
    with conformance.subscribed("many") as raw:
        requests = (SubscribeRequest("m/a", 2), SubscribeRequest("m/b", 0),
                    SubscribeRequest("m/+", 1), SubscribeRequest("m/a", 1))  # fmt: skip
        raw.send(Subscribe(4242, requests))
        assert raw.read() == Suback(4242, (2, 0, 1, 1))
        raw.send(Publish("m/a", b"x", 2, packet_id=9))
        answers = until_marker(raw, "many")
        assert Pubrec(9) in answers
        # One copy, at the highest QoS of the matching subscriptions (§3.3.5).
        delivered = [packet for packet in answers if isinstance(packet, Publish)]
        assert [(p.topic, p.qos) for p in delivered] == [("m/a", 1)]


def test_publish_without_subscribers_is_still_acknowledged(conformance: Broker) -> None:
    # [MQTT-3.3.5-2], [MQTT-4.3.2-2], [MQTT-4.3.3-2]: acknowledged whoever receives it.
    with conformance.client("nobody") as raw:
        raw.send(Publish("no/one/listens", b"x", 1, packet_id=1))
        assert raw.read() == Puback(1)
        raw.send(Publish("no/one/listens", b"x", 2, packet_id=2))
        assert raw.read() == Pubrec(2)
        raw.send(Pubrel(2))
        assert raw.read() == Pubcomp(2)


def test_qos_2_is_delivered_once_and_ids_are_reused_after_completion(conformance: Broker) -> None:
    # [MQTT-4.3.3-2]: until PUBREL, a repeated PUBLISH (DUP) is not delivered again; after
    # PUBCOMP the same id is a new message. [MQTT-4.3.2-2] likewise at QoS 1 after PUBACK.
    # [MQTT-3.3.1-3]: the DUP flag is not passed on to subscribers.
    with conformance.subscribed("once-sub", ("once/t", 0)) as subscriber:
        with conformance.client("once-pub") as raw:
            raw.send(Publish("once/t", b"a", 2, packet_id=5))
            assert raw.read() == Pubrec(5)
            raw.send(Publish("once/t", b"a", 2, dup=True, packet_id=5))
            assert raw.read() == Pubrec(5)
            raw.send(Pubrel(5))
            assert raw.read() == Pubcomp(5)
            raw.send(Publish("once/t", b"b", 2, dup=True, packet_id=5))
            assert raw.read() == Pubrec(5)
            raw.send(Pubrel(5))
            assert raw.read() == Pubcomp(5)
            raw.send(Publish("once/t", b"c", 1, packet_id=5))
            assert raw.read() == Puback(5)
            raw.send(Publish("once/t", b"d", 1, dup=True, packet_id=5))
            assert raw.read() == Puback(5)
        got = publishes(subscriber, 4)
        assert [(p.payload, p.dup, p.packet_id) for p in got] == [
            (b"a", False, None),
            (b"b", False, None),
            (b"c", False, None),
            (b"d", False, None),
        ]  # fmt: skip  ([MQTT-2.3.1-5], [MQTT-3.3.1-2]: QoS 0, no id, DUP 0)
        assert until_marker(subscriber, "once-sub") == []


def test_messages_of_a_topic_arrive_in_order(conformance: Broker) -> None:
    # [MQTT-4.6.0-5/6]: every topic is ordered; ids unused and distinct ([MQTT-2.3.1-4]),
    # each acknowledged with its own id ([MQTT-2.3.1-6]).
    with conformance.subscribed("order-sub", ("order/+", 1)) as subscriber:
        with conformance.client("order-pub") as raw:
            for n in range(1, 21):
                raw.send(Publish(f"order/{n % 2}", str(n).encode(), 1 + n % 2, packet_id=n))
            answers = [raw.read() for _ in range(20)]
            assert answers == [Puback(n) if n % 2 == 0 else Pubrec(n) for n in range(1, 21)]
            raw.send(*(Pubrel(n) for n in range(1, 21, 2)))
            assert [raw.read() for _ in range(10)] == [Pubcomp(n) for n in range(1, 21, 2)]
        got = publishes(subscriber, 20)  # at the subscription's QoS 1 ([MQTT-3.3.5-1])
        assert [(p.payload, p.qos) for p in got] == [(str(n).encode(), 1) for n in range(1, 21)]
        assert len({p.packet_id for p in got}) == 20
        for packet in got:
            assert packet.packet_id is not None
            subscriber.send(Puback(packet.packet_id))


@pytest.mark.parametrize(
    ("filters", "matched", "unmatched"),
    [
        (("w/+/c",), ("w/b/c", "w//c"), ("w/b/c/d", "w/c")),  # [MQTT-4.7.1-3]
        (("w/#",), ("w", "w/b", "w/b/c"), ("wx",)),  # [MQTT-4.7.1-2]: parent level too
        (("+",), ("w2", "solo"), ("w/b", "/w")),
        (("+/+",), ("/w", "w/", "/"), ("w", "w//")),
        (("w/+",), ("w/", "w/b"), ("w", "w/b/c")),
        (("$conf/#",), ("$conf/x",), ()),  # a filter that starts with '$' matches '$' topics
    ],
)
def test_wildcards(
    conformance: Broker, filters: tuple[str, ...], matched: tuple[str, ...],
    unmatched: tuple[str, ...],
) -> None:  # fmt: skip
    with conformance.subscribed("wild", *((f, 0) for f in filters)) as raw:
        for topic in (*unmatched, *matched):
            raw.send(Publish(topic, topic.encode()))
        got = [p.topic for p in until_marker(raw, "wild") if isinstance(p, Publish)]
        assert got == list(matched)


def test_wildcards_do_not_match_dollar_topics(conformance: Broker) -> None:
    # [MQTT-4.7.2-1]: '#' and '+' at the first level do not match a topic starting with '$'.
    with conformance.subscribed("dollar", ("#", 0), ("+/x", 0), ("+/+", 0)) as raw:
        raw.send(Publish("$conf/x", b"no"), Publish("plain/x", b"yes"))
        got = [(p.topic, p.payload) for p in until_marker(raw, "dollar") if isinstance(p, Publish)]
        assert got == [("plain/x", b"yes")]


def test_topics_are_compared_as_they_are(conformance: Broker) -> None:
    # [MQTT-4.7.3-4]: no normalisation; [MQTT-1.5.3-3]: U+FEFF is not stripped; case counts.
    with conformance.subscribed("exact", ("n/a", 0), ("\ufeffn/b", 0)) as raw:
        for topic in ("n//a", "N/a", "n/a/", "n/b", "\ufeffn/b", "n/a"):
            raw.send(Publish(topic, b"x"))
        got = [p.topic for p in until_marker(raw, "exact") if isinstance(p, Publish)]
        assert got == ["\ufeffn/b", "n/a"]


def test_unsubscribe(conformance: Broker) -> None:
    # [MQTT-3.10.4-1]: filters are compared character by character, not matched: 'u/+' does
    # not remove 'u/a'. [MQTT-3.10.4-4/5/6]: one UNSUBACK with the packet id, matched or not.
    with conformance.subscribed("unsub", ("u/a", 0), ("u/#", 0)) as raw:
        raw.send(Unsubscribe(77, ("u/+", "u/#", "never/subscribed")))
        assert raw.read() == Unsuback(77)
        raw.send(Publish("u/a", b"1"), Publish("u/b", b"2"))
        got = [p.topic for p in until_marker(raw, "unsub") if isinstance(p, Publish)]
        assert got == ["u/a"]  # [MQTT-3.10.4-2]: no new messages for 'u/#'


def _raw_packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


@pytest.mark.parametrize(
    "data",
    [
        _raw_packet(0x30, utf8_field("a/+") + b"x"),  # [MQTT-3.3.2-2], [MQTT-4.7.1-1]
        _raw_packet(0x30, utf8_field("a/#") + b"x"),
        _raw_packet(0x30, b"\x00\x00x"),  # [MQTT-4.7.3-1]: empty topic name
        _raw_packet(0x30, b"\x00\x02\xed\xa0"),  # [MQTT-1.5.3-1]: a surrogate is ill-formed
        _raw_packet(0x30, b"\x00\x02\xc3\x28"),  # [MQTT-3.3.2-1]: not UTF-8
        _raw_packet(0x30, b"\x00\x02\xc0\x80"),  # an overlong U+0000 is ill-formed too
        _raw_packet(0x30, utf8_field("a\x00")),  # [MQTT-1.5.3-2], [MQTT-4.7.3-2]
        _raw_packet(0x82, b"\x00\x01"),  # [MQTT-3.8.3-3]: SUBSCRIBE without a filter
        _raw_packet(0xA2, b"\x00\x01"),  # [MQTT-3.10.3-2]: UNSUBSCRIBE without one
        _raw_packet(0x82, b"\x00\x01" + utf8_field("a") + b"\x03"),  # [MQTT-3.8.3-4]: QoS 3
        _raw_packet(0x82, b"\x00\x01" + utf8_field("a") + b"\x04"),  # reserved bits
        _raw_packet(0x82, b"\x00\x01" + utf8_field("a/#/b") + b"\x00"),  # [MQTT-4.7.1-2]
        _raw_packet(0x82, b"\x00\x01" + utf8_field("a+") + b"\x00"),  # [MQTT-4.7.1-3]
        _raw_packet(0x82, b"\x00\x01\x00\x00\x00"),  # [MQTT-4.7.3-1]: empty filter
        _raw_packet(0x82, b"\x00\x01\x00\x01\xff\x00"),  # [MQTT-3.8.3-1]: not UTF-8
        _raw_packet(0xA2, b"\x00\x01\x00\x01\xff"),  # [MQTT-3.10.3-1]
        _raw_packet(0xA2, b"\x00\x01" + utf8_field("a/#/b")),  # an invalid filter
        _raw_packet(0x32, utf8_field("q")),  # QoS 1 without a packet id
        _raw_packet(0x82, b"\x00\x00" + utf8_field("a") + b"\x00"),  # [MQTT-2.3.1-1]: id 0
        _raw_packet(0xA2, b"\x00\x00" + utf8_field("a")),
        _raw_packet(0x32, utf8_field("q") + b"\x00\x00"),
    ],
)
def test_a_packet_that_does_not_conform_closes(conformance: Broker, data: bytes) -> None:
    # [MQTT-4.8.0-1]: closed, and nothing else answered before.
    raw = conformance.client("bad-packet")
    raw.send(data)
    assert raw.closed()
    raw.close()


def test_unsubscribing_completes_the_deliveries_begun(conformance: Broker) -> None:
    # [MQTT-3.10.4-3]: a QoS 1 and a QoS 2 message sent before UNSUBSCRIBE are completed.
    with conformance.subscribed("begun", ("begun/t", 2)) as raw:
        raw.send(Publish("begun/t", b"1", 1, packet_id=1), Publish("begun/t", b"2", 2, packet_id=2))
        answers = [raw.read() for _ in range(4)]
        assert Puback(1) in answers
        assert Pubrec(2) in answers
        got = [packet for packet in answers if isinstance(packet, Publish)]
        assert [(p.payload, p.qos) for p in got] == [(b"1", 1), (b"2", 2)]
        raw.send(Unsubscribe(3, ("begun/t",)))
        assert raw.read() == Unsuback(3)
        first, second = (p.packet_id for p in got)
        assert first is not None
        assert second is not None
        raw.send(Puback(first), Pubrec(second), Pubrel(2))
        assert [raw.read(), raw.read()] == [Pubrel(second), Pubcomp(2)]
        raw.send(Pubcomp(second))
        assert until_marker(raw, "begun") == []


def test_acknowledgements_of_unknown_packet_ids(conformance: Broker) -> None:
    # §4.3.3 [MQTT-4.3.3-2]: a PUBREL is answered by PUBCOMP with its id, also one the
    # server no longer holds (its PUBCOMP was lost); a stray PUBACK or PUBCOMP is ignored.
    with conformance.subscribed("unknown") as raw:
        raw.send(Pubrel(99), Puback(98), Pubcomp(97), Pubrec(96))
        answers = until_marker(raw, "unknown")
        assert Pubcomp(99) in answers


def test_retained_dollar_topics_do_not_go_to_wildcards(conformance: Broker) -> None:
    # [MQTT-4.7.2-1] for retained messages too; a '$' filter gets them.
    with conformance.client("dollar-retainer") as publisher:
        publisher.send(Publish("$conf/kept", b"d", 1, retain=True, packet_id=1))
        assert publisher.read() == Puback(1)
        with conformance.subscribed("hash-sub", ("#", 0), ("+/kept", 0)) as raw:
            assert until_marker(raw, "hash-sub") == []
        with conformance.subscribed("dollar-sub", ("$conf/+", 0)) as raw:
            assert until_marker(raw, "dollar-sub") == [Publish("$conf/kept", b"d", 0, True)]
        publisher.send(Publish("$conf/kept", b"", 1, retain=True, packet_id=2))
        assert publisher.read() == Puback(2)


def test_clients_with_empty_ids_are_sessions_of_their_own(conformance: Broker) -> None:
    # [MQTT-3.1.3-6]: each gets a unique id: a second one does not take over the first.
    with conformance.client("") as first, conformance.client("") as second:
        for raw in (first, second):
            raw.send(Subscribe(1, (SubscribeRequest("empty/t", 0),)))
            assert raw.read() == Suback(1, (0,))
        first.send(Publish("empty/t", b"both"))
        assert publishes(first, 1)[0].payload == b"both"
        assert publishes(second, 1)[0].payload == b"both"


def test_a_qos_2_message_sent_again_on_a_resumed_session_is_not_delivered_twice(
    conformance: Broker,
) -> None:
    # [MQTT-4.3.3-2] across connections: the session holds the packet id until PUBREL
    # ([MQTT-4.4.0-1]: the client sends the PUBLISH again, DUP set, on reconnection).
    with conformance.subscribed("twice-sub", ("twice/t", 0)) as subscriber:
        with conformance.client("twice-pub", clean=False) as raw:
            raw.send(Publish("twice/t", b"once", 2, packet_id=7))
            assert raw.read() == Pubrec(7)
        with conformance.client("twice-pub", clean=False, present=True) as raw:
            raw.publish_again_and_release("twice/t", b"once", 7)
            raw.send(Publish(marker("twice-sub"), b"marker"))
        assert [p.payload for p in publishes(subscriber, 2)] == [b"once", b"marker"]
    conformance.client("twice-pub").close()


def test_nothing_after_disconnect_is_processed(conformance: Broker) -> None:
    # [MQTT-3.14.4-2] is the client's; the server closes at DISCONNECT and routes nothing
    # written after it.
    with conformance.subscribed("after-sub", ("after/t", 0)) as subscriber:
        with conformance.client("after-pub") as raw:
            raw.send(Publish("after/t", b"before"), Disconnect(), Publish("after/t", b"after"))
            assert raw.closed()
        assert [p.payload for p in publishes(subscriber, 1)] == [b"before"]
        assert until_marker(subscriber, "after-sub") == []


@pytest.mark.parametrize(
    ("topic", "topic_filter"),
    [
        ("with spaces/and more", "with spaces/and more"),  # [MQTT-4.7.3-1]: a space too
        ("日本語/トピック/😀", "日本語/トピック/😀"),  # [MQTT-1.5.3-1]: beyond ASCII
        ("/leading/and/trailing/", "/leading/and/trailing/"),
        ("t" * 65535, "+"),  # [MQTT-4.7.3-3]: the longest a UTF-8 string can be
    ],
    ids=["spaces", "non-ascii", "slashes", "longest"],
)
def test_any_well_formed_topic_is_delivered(
    conformance: Broker, topic: str, topic_filter: str
) -> None:
    with conformance.subscribed("any-topic", (topic_filter, 1)) as raw:
        raw.send(Publish(topic, b"x", 1, packet_id=1))
        answers = [raw.read(), raw.read()]
        assert Puback(1) in answers
        [delivered] = [packet for packet in answers if isinstance(packet, Publish)]
        assert (delivered.topic, delivered.payload) == (topic, b"x")
        assert delivered.packet_id is not None
        raw.send(Puback(delivered.packet_id))


def test_a_filter_longer_than_the_store_keeps_is_refused_alone(conformance: Broker) -> None:
    # A filter past the 1024 characters a session keeps (``storage.models``) is refused with
    # 0x80 ([MQTT-3.8.4-5], §3.9.3: a server may refuse any filter); the others are granted.
    with conformance.client("long-filter") as raw:
        requests = (SubscribeRequest("f" * 1025, 1), SubscribeRequest("f" * 1024, 1))
        raw.send(Subscribe(1, requests))
        assert raw.read() == Suback(1, (0x80, 1))


def test_remaining_lengths_of_one_to_three_bytes(conformance: Broker) -> None:
    # §2.2.3: 127 in one byte, 128 and 16383 in two, 16384 and up in three.
    with conformance.subscribed("lengths", ("lengths/t", 0)) as raw:
        topic = utf8_field("lengths/t")
        sizes = (127, 128, 16383, 16384, 200_000)
        raw.send(*(_raw_packet(0x30, topic + b"p" * (size - len(topic))) for size in sizes))
        got = publishes(raw, len(sizes))
        assert [len(p.payload) + len(topic) for p in got] == list(sizes)


def test_messages_kept_for_a_disconnected_session_come_in_order_as_first_sent(
    conformance: Broker,
) -> None:
    # [MQTT-3.1.2-5]: kept; [MQTT-3.3.1-9]: RETAIN 0 (an established subscription), and
    # [MQTT-3.3.1-1]: DUP 0 (never sent before); [MQTT-4.6.0-6]: in order, live ones after.
    with conformance.client("kept-sub", clean=False) as raw:
        raw.send(Subscribe(1, (SubscribeRequest("kept/+", 2),)))
        assert raw.read() == Suback(1, (2,))
    with conformance.client("kept-pub") as publisher:
        for n, qos in enumerate((1, 2, 1)):
            publisher.send(Publish(f"kept/{n}", bytes([n]), qos, retain=n == 0, packet_id=n + 1))
        assert [publisher.read() for _ in range(3)] == [Puback(1), Pubrec(2), Puback(3)]
        publisher.send(Pubrel(2))
        assert publisher.read() == Pubcomp(2)
        with conformance.client("kept-sub", clean=False, present=True) as raw:
            publisher.send(Publish("kept/3", b"\x03", 1, packet_id=4))
            assert publisher.read() == Puback(4)
            got = publishes(raw, 4)
            assert [(p.payload, p.qos, p.retain, p.dup) for p in got] == [
                (b"\x00", 1, False, False), (b"\x01", 2, False, False),
                (b"\x02", 1, False, False), (b"\x03", 1, False, False),
            ]  # fmt: skip
        publisher.send(Publish("kept/0", b"", 0, retain=True))
    conformance.client("kept-sub").close()
