"""MQTT 5 application message properties on each path a message takes, with paho MQTTv5
clients over mutual TLS (5.0 §3.3.2.3: the server forwards them unaltered, but the Message
Expiry Interval, which is the time left, and the Topic Alias, which is per connection; a
Subscription Identifier per matching subscription of the receiver, §3.3.4). Live delivery
with two identified subscriptions, the offline queue across a restart (SQLite, PostgreSQL),
a retained message, a will, a shared subscription and a receiver's Maximum Packet Size.
Live delivery of each property alone is in ``test_mqtt5``; MQTT.js in
``test_interop_mqtt5_cli``."""

import time
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes

from broker.mqtt.packets import MQTT_5, Connect, Will
from broker.mqtt.properties import Properties, Property
from tests.e2e.harness import BrokerThread, broker_settings, write_pem
from tests.e2e.peers import Raw
from tests.e2e.v5_client import (
    V5Client,
    make_properties,
    publish_properties,
    v5_application,
    v5_resuming,
)

PASSWORD = "pw-props-1"
# Duplicates and an order no sort gives: both kept (5.0 §3.3.2.3.7).
PAIRS = [("b", "2"), ("a", "1"), ("b", "2"), ("é", "ü"), ("", "")]
EXPIRY = 3600


def _full(**more: Any) -> Any:
    values: dict[str, Any] = {
        "PayloadFormatIndicator": 1, "ContentType": "application/json; charset=utf-8",
        "ResponseTopic": "devices/p/response/1", "CorrelationData": b"\x00\xffcorr",
        "UserProperty": PAIRS, "MessageExpiryInterval": EXPIRY,
    }  # fmt: skip
    return publish_properties(**(values | more))


def _assert_full(message: Any, identifiers: list[int] | None) -> None:
    got: Any = message.properties
    assert got.PayloadFormatIndicator == 1
    assert got.ContentType == "application/json; charset=utf-8"
    assert got.ResponseTopic == "devices/p/response/1"
    assert got.CorrelationData == b"\x00\xffcorr"
    assert got.UserProperty == PAIRS
    assert EXPIRY - 10 <= got.MessageExpiryInterval <= EXPIRY
    assert not hasattr(got, "TopicAlias")  # §3.3.2.3.4: the publisher's, its connection's
    if identifiers is None:
        assert not hasattr(got, "SubscriptionIdentifier")
    else:
        assert sorted(got.SubscriptionIdentifier) == identifiers


def _app(broker: BrokerThread, name: str, **options: Any) -> V5Client:
    broker.application(name, name, PASSWORD)
    return v5_application(broker, name, PASSWORD, **options)


# The three ways a PUBLISH's list is read (``broker.mqtt.publish_properties``): scanned (user
# properties, expiry and alias alone, ASCII, under 128 bytes), read in full (anything else),
# and a list of 128 bytes or more; each sent twice, the second time the same bytes as before.
ASCII_PAIRS = [("b", "2"), ("a", "1"), ("b", "2")]
LONG_PAIRS = [*PAIRS, ("long", "x" * 100)]


@pytest.mark.parametrize("way", ["scanned", "read", "long"])
def test_live_with_alias_and_two_identified_subscriptions(broker: BrokerThread, way: str) -> None:
    sub = _app(broker, "sub")
    pub = _app(broker, "pub")
    try:
        assert sub.subscribe_with_id("devices/p/#", 3) == [1]
        assert sub.subscribe_with_id("devices/+/rpc/request/+", 268_435_455) == [1]  # 4 bytes
        assert sub.subscribe("devices/p/rpc/#") == [1]  # matches too, no identifier
        if way == "scanned":
            sent = publish_properties(
                UserProperty=ASCII_PAIRS, MessageExpiryInterval=EXPIRY, TopicAlias=1
            )
        else:
            sent = _full(TopicAlias=1, UserProperty=LONG_PAIRS if way == "long" else PAIRS)
        pub.publish("devices/p/rpc/request/1", b"1", properties=sent)
        pub.publish("", b"2", properties=sent)  # the alias alone
        for payload in (b"1", b"2"):
            got = sub.next_message()
            assert (got.topic, got.payload) == ("devices/p/rpc/request/1", payload)
            props: Any = got.properties
            assert not hasattr(props, "TopicAlias")  # §3.3.2.3.4: the publisher's connection's
            assert sorted(props.SubscriptionIdentifier) == [3, 268_435_455]
            assert EXPIRY - 10 <= props.MessageExpiryInterval <= EXPIRY
            if way == "scanned":
                assert props.UserProperty == ASCII_PAIRS
            else:
                assert props.UserProperty == (LONG_PAIRS if way == "long" else PAIRS)
                assert props.ContentType == "application/json; charset=utf-8"
                assert props.CorrelationData == b"\x00\xffcorr"
        sub.assert_nothing_more()
    finally:
        sub.close()
        pub.close()


def test_retained_carries_the_new_subscribers_identifier(broker: BrokerThread) -> None:
    pub = _app(broker, "pub")
    sub = _app(broker, "sub")
    try:
        assert pub.subscribe_with_id("devices/r/#", 11) == [1]
        pub.publish("devices/r/attributes", b"kept", retain=True, properties=_full(TopicAlias=2))
        _assert_full(pub.next_message(), [11])  # live, with the publisher's own
        assert sub.subscribe_with_id("devices/r/+", 4) == [1]
        got = sub.next_message()
        assert (got.payload, got.retain) == (b"kept", True)
        _assert_full(got, [4])
        assert sub.subscribe("devices/+/attributes") == [1]  # no identifier: none sent
        got = sub.next_message()
        _assert_full(got, None)
        sub.assert_nothing_more()
    finally:
        sub.close()
        pub.close()


def test_will_goes_with_its_properties_but_the_delay(broker: BrokerThread, tmp_path: Path) -> None:
    """5.0 §3.1.3.2: a will's properties become its PUBLISH's, but the Will Delay Interval."""
    watcher = _app(broker, "watcher")
    _, issued = broker.provision("w")
    raw = Raw(broker.port, broker.server_cert, write_pem(tmp_path, issued, "w"), MQTT_5)
    try:
        assert watcher.subscribe_with_id("devices/w/#", 8) == [1]
        items: list[tuple[int, Any]] = [
            (Property.PAYLOAD_FORMAT_INDICATOR, 1),
            (Property.CONTENT_TYPE, "application/json; charset=utf-8"),
            (Property.WILL_DELAY_INTERVAL, 0),
            (Property.RESPONSE_TOPIC, "devices/p/response/1"),
            (Property.CORRELATION_DATA, b"\x00\xffcorr"),
            (Property.MESSAGE_EXPIRY_INTERVAL, EXPIRY),
            *((Property.USER_PROPERTY, pair) for pair in PAIRS),
        ]
        will = Will("v1/devices/me/status", b"gone", 1, properties=Properties(items))
        raw.connect(Connect(MQTT_5, "w", True, 60, will=will))
        raw.sock.close()  # no DISCONNECT: the will goes
        got = watcher.next_message()
        assert (got.topic, got.payload) == ("devices/w/status", b"gone")
        _assert_full(got, [8])
        assert not hasattr(got.properties, "WillDelayInterval")
    finally:
        watcher.close()
        raw.close()


def test_a_shared_subscription_gets_the_properties_and_its_identifier(
    broker: BrokerThread,
) -> None:
    members = [_app(broker, f"member-{n}") for n in range(2)]
    pub = _app(broker, "pub")
    try:
        for n, member in enumerate(members):
            assert member.subscribe_with_id("$share/g/devices/+/rpc/request/+", 20 + n) == [1]
        pub.publish("devices/s/rpc/request/1", b"1", properties=_full(TopicAlias=1))
        pub.publish("", b"2", properties=_full(TopicAlias=1))
        for n, member in enumerate(members):  # round robin: one each
            got = member.next_message()
            assert got.topic == "devices/s/rpc/request/1"
            _assert_full(got, [20 + n])
            member.assert_nothing_more()
    finally:
        for member in members:
            member.close()
        pub.close()


def test_properties_past_a_receivers_maximum_packet_size_drop_it_for_that_one(
    broker: BrokerThread,
) -> None:
    """5.0 §3.1.2.11.4 [MQTT-3.1.2-25]: a PUBLISH larger than the receiver's Maximum Packet
    Size is not sent to it; other subscribers get it, and it gets what fits."""
    small = _app(
        broker, "small",
        connect_properties=make_properties(PacketTypes.CONNECT, MaximumPacketSize=1024),
    )  # fmt: skip
    large = _app(broker, "large")
    pub = _app(broker, "pub")
    try:
        for client in (small, large):
            assert client.subscribe_with_id("devices/m/#", 1) == [1]
        big = [("k", "v" * 100)] * 10  # 1 KiB of properties, a short payload
        pub.publish(
            "devices/m/rpc/request/1", b"big", properties=publish_properties(UserProperty=big)
        )
        pub.publish("devices/m/rpc/request/2", b"fits", properties=_full())
        first: Any = large.next_message().properties
        assert first.UserProperty == big
        _assert_full(large.next_message(), [1])
        got = small.next_message()
        assert got.payload == b"fits"
        _assert_full(got, [1])
        small.assert_nothing_more()
    finally:
        for client in (small, large, pub):
            client.close()


def test_a_queued_message_past_the_maximum_packet_size_is_dropped_not_kept(
    broker: BrokerThread,
) -> None:
    """[MQTT-3.1.2-25] on the offline queue: the reconnecting client's Maximum Packet Size
    decides; what it cannot read is discarded as if delivered (§3.1.2.11.4), not sent at the
    next connection either."""
    broker.application("small", "small", PASSWORD)

    def small() -> V5Client:
        return v5_resuming(broker, "small", PASSWORD, "small", EXPIRY, MaximumPacketSize=1024)

    receiver = small()
    assert receiver.subscribe_with_id("devices/m/#", 1) == [1]
    receiver.close()
    pub = _app(broker, "pub")
    try:
        big = publish_properties(UserProperty=[("k", "v" * 100)] * 10)
        pub.publish("devices/m/rpc/request/1", b"big", properties=big)
        pub.publish("devices/m/rpc/request/2", b"fits", properties=_full())
        receiver = small()
        got = receiver.next_message()
        assert got.payload == b"fits"
        _assert_full(got, [1])
        receiver.assert_nothing_more()
        receiver.close()
        receiver = small()
        assert receiver.session_present
        pub.publish("devices/m/rpc/request/3", b"marker")
        assert receiver.next_message().payload == b"marker"  # nothing queued before it
        receiver.close()
    finally:
        pub.close()


def test_the_offline_queue_keeps_them_and_a_restart_too(database_url: str, tmp_path: Path) -> None:
    """A persistent session's queue, read on reconnect and read back after a restart: every
    property kept, each matching subscription's identifier; the interval left counts from
    receipt and a message whose interval ran out is not sent (§3.3.2.3.3 [MQTT-3.3.2-5])."""
    settings = broker_settings(tmp_path / "data", database_url=database_url)
    broker = BrokerThread(settings)
    try:
        broker.application("keeper", "keeper", PASSWORD)  # kept in the store
        keeper = _keeper(broker)
        assert keeper.subscribe_with_id("devices/q/#", 2) == [1]
        assert keeper.subscribe_with_id("devices/+/rpc/request/+", 9) == [1]
        for restart in (False, True):
            keeper.close()
            _publish_three(broker)
            ran_out = time.monotonic() + 1.2
            if restart:
                broker.stop()
            _wait_until(ran_out)
            if restart:
                broker = BrokerThread(settings)
            keeper = _keeper(broker)
            assert keeper.session_present
            for payload in (b"kept", b"again"):
                got = keeper.next_message()
                assert (got.topic, got.payload) == ("devices/q/rpc/request/2", payload)
                _assert_full(got, [2, 9])
                held: Any = got.properties
                assert held.MessageExpiryInterval < EXPIRY  # 1.2 s held at least
            keeper.assert_nothing_more()
        keeper.close()
    finally:
        broker.stop()


def _keeper(broker: BrokerThread) -> V5Client:
    return v5_resuming(broker, "keeper", PASSWORD, "k", EXPIRY)


def _publish_three(broker: BrokerThread) -> None:
    pub = v5_application(broker, "keeper", PASSWORD)
    short = publish_properties(MessageExpiryInterval=1, UserProperty=PAIRS)
    pub.publish("devices/q/rpc/request/1", b"expires", properties=short)
    pub.publish("devices/q/rpc/request/2", b"kept", properties=_full(TopicAlias=3))
    pub.publish("", b"again", properties=_full(TopicAlias=3))
    pub.close()


def _wait_until(moment: float) -> None:
    # The event waited for is time itself passing: an interval must run out.
    time.sleep(max(0.0, moment - time.monotonic()))
