"""MQTT 5 end to end over mutual TLS with paho-mqtt 2 (MQTTv5): CONNACK, refusals with their
reason codes and strings, server DISCONNECTs, message properties, subscription options, and
3.1.1 and 5.0 clients on the same broker."""

import datetime as dt
import time
from pathlib import Path
from typing import Any

import httpx
from paho.mqtt.packettypes import PacketTypes

from auth.kinds import CredentialStatus
from broker.mqtt.packets import (
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Puback,
    Publish,
    Pubrec,
    Suback,
    Subscribe,
    SubscribeRequest,
    Will,
)
from broker.mqtt.properties import Properties, Property
from tests.certgen import issue
from tests.e2e.harness import WAIT, BrokerThread, device_client, write_pem
from tests.e2e.peers import Raw
from tests.e2e.v5_client import V5Client, make_properties, publish_properties, v5_client


def _device(broker: BrokerThread, folder: Path, name: str, **options: object) -> V5Client:
    _, issued = broker.provision(name)
    certfile = write_pem(folder, issued, name)
    return v5_client(broker.port, broker.server_cert, certfile, **options)  # type: ignore[arg-type]


def _reason_string(properties: object) -> str:
    return str(getattr(properties, "ReasonString", ""))


def test_connack_announces_limits_and_assigns_a_client_id(
    broker: BrokerThread, tmp_path: Path
) -> None:
    client = _device(broker, tmp_path, "v5-device")
    try:
        code, props = client.wait_connack()
        assert code == 0
        assert props.AssignedClientIdentifier.startswith("auto-")  # 5.0 §3.2.2.3.7
        assert props.ReceiveMaximum == broker.settings.max_awaiting_pubrel
        assert props.MaximumPacketSize == broker.settings.max_packet_size
        assert props.TopicAliasMaximum == broker.settings.max_topic_aliases
        assert props.SharedSubscriptionAvailable == 1
    finally:
        client.close()


def test_every_refusal_reason_reaches_a_5_client(broker: BrokerThread, tmp_path: Path) -> None:
    """5.0 §3.2.2.2: the CONNACK's reason code and a reason string in the auth log's words."""
    store = broker.running.store
    disabled, disabled_cert = broker.provision("disabled-device")
    broker.call(store.set_device_enabled(disabled.id, False))
    revoked, revoked_cert = broker.provision("revoked-device")
    [credential] = broker.call(store.list_credentials(revoked.id))
    broker.call(store.set_credential_status(credential.id, CredentialStatus.REVOKED))
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    _, expired = broker.provision(
        "expired", issue("expired", not_before=past, not_after=past + dt.timedelta(days=1))
    )
    broker.application("backend", "backend", "right-password")
    unknown = issue("nobody")
    cases = [
        ("unknown key", write_pem(tmp_path, unknown, "nobody"), {}, 0x87, "unknown certificate"),
        ("revoked", write_pem(tmp_path, revoked_cert, "r"), {}, 0x87, "revoked"),
        ("expired", write_pem(tmp_path, expired, "e"), {}, 0x87, "expired"),
        ("disabled", write_pem(tmp_path, disabled_cert, "d"), {}, 0x87, "disabled"),
        ("bad password", None, {"username": "backend", "password": "wrong"}, 0x86,
         "bad user name or password"),
        ("no credential", None, {}, 0x87, "no client certificate and no user name"),
    ]  # fmt: skip
    for what, certfile, options, code, words in cases:
        client = v5_client(broker.port, broker.server_cert, certfile, **options)  # type: ignore[arg-type]
        try:
            got, props = client.wait_connack()
            assert got == code, what
            assert words in _reason_string(props), what
        finally:
            client.close()


def test_revocation_sends_disconnect_0x98(broker: BrokerThread, tmp_path: Path) -> None:
    store = broker.running.store
    device, issued = broker.provision("to-revoke")
    client = v5_client(broker.port, broker.server_cert, write_pem(tmp_path, issued, "to-revoke"))
    try:
        assert client.wait_connack()[0] == 0
        [credential] = broker.call(store.list_credentials(device.id))
        broker.call(store.set_credential_status(credential.id, CredentialStatus.REVOKED))
        code, props = client.wait_disconnect()
        assert code == 0x98  # 5.0 §3.14.2.1 administrative action
        assert _reason_string(props)
    finally:
        client.close()


def test_take_over_sends_disconnect_0x8e(broker: BrokerThread, tmp_path: Path) -> None:
    _, issued = broker.provision("twice")
    certfile = write_pem(tmp_path, issued, "twice")
    first = v5_client(broker.port, broker.server_cert, certfile, client_id="same")
    second = None
    try:
        assert first.wait_connack()[0] == 0
        second = v5_client(broker.port, broker.server_cert, certfile, client_id="same")
        assert second.wait_connack()[0] == 0
        assert first.wait_disconnect()[0] == 0x8E  # session taken over
    finally:
        first.paho.loop_stop()
        if second is not None:
            second.close()


def test_properties_pass_through_in_order_and_expiry_counts_down(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """5.0 §3.3.2.3: payload format, content type, response topic, correlation data and user
    properties reach the subscriber as sent; the expiry interval is what is left of it."""
    subscriber = _device(broker, tmp_path, "props-sub", client_id="s")
    publisher = _device(broker, tmp_path, "props-pub", client_id="p")
    broker.application("reader", "reader", "pw-reader")
    try:
        assert subscriber.wait_connack()[0] == 0
        assert publisher.wait_connack()[0] == 0
        app = v5_client(
            broker.port, broker.server_cert, None, username="reader", password="pw-reader"
        )
        assert app.wait_connack()[0] == 0
        assert app.subscribe("devices/props-pub/#") == [1]
        pairs = [("b", "2"), ("a", "1"), ("b", "0")]
        props = publish_properties(
            PayloadFormatIndicator=1, ContentType="application/json",
            ResponseTopic="devices/props-pub/response/1", CorrelationData=b"\x00\x01",
            UserProperty=pairs, MessageExpiryInterval=3600,
        )  # fmt: skip
        publisher.publish("v1/devices/me/telemetry", b'{"t": 1}', properties=props)
        message = app.next_message()
        got: Any = message.properties
        assert got is not None
        assert got.PayloadFormatIndicator == 1
        assert got.ContentType == "application/json"
        assert got.ResponseTopic == "devices/props-pub/response/1"
        assert got.CorrelationData == b"\x00\x01"
        assert got.UserProperty == pairs
        assert 3590 <= got.MessageExpiryInterval <= 3600
        app.close()
    finally:
        subscriber.close()
        publisher.close()


def test_a_5_publisher_reaches_a_3_1_1_subscriber_and_back(
    broker: BrokerThread, tmp_path: Path
) -> None:
    old, _ = device_client(broker, tmp_path, "old-device", client_id="old")
    new = _device(broker, tmp_path, "new-device", client_id="new")
    broker.application("bridge", "bridge", "pw-bridge")
    try:
        assert old.wait_connack() == 0
        assert new.wait_connack()[0] == 0
        app5 = v5_client(
            broker.port, broker.server_cert, None, username="bridge", password="pw-bridge"
        )
        assert app5.wait_connack()[0] == 0
        assert app5.subscribe("devices/old-device/#", noLocal=True) == [1]  # not its own
        assert old.subscribe("v1/devices/me/rpc/request/+") == [1]
        props = publish_properties(UserProperty=[("k", "v")], MessageExpiryInterval=60)
        app5.publish("devices/old-device/rpc/request/1", b"to 3.1.1", properties=props)
        assert old.next_message().payload == b"to 3.1.1"  # properties dropped (3.1.1)
        old.publish("v1/devices/me/telemetry", b"to 5.0")
        message = app5.next_message()
        assert message.payload == b"to 5.0"
        assert message.topic == "devices/old-device/telemetry"
        app5.close()
    finally:
        old.close()
        new.close()


def test_subscription_options(broker: BrokerThread, tmp_path: Path) -> None:
    """5.0 §3.8.3.1: No Local, Retain As Published, Retain Handling; §3.3.4 identifiers."""
    client = _device(broker, tmp_path, "options", client_id="o")
    try:
        assert client.wait_connack()[0] == 0
        client.publish("v1/devices/me/attributes", b"kept", retain=True)
        # No Local: its own messages do not come back.
        assert client.subscribe("v1/devices/me/telemetry", noLocal=True) == [1]
        # Retain Handling 2: no retained message at subscribe time.
        assert client.subscribe("v1/devices/me/attributes", retainHandling=2) == [1]
        # Retain As Published on an identified subscription.
        assert client.subscribe_with_id("v1/devices/me/rpc/#", 7) == [1]
        client.publish("v1/devices/me/telemetry", b"mine")
        client.publish("v1/devices/me/rpc/request/1", b"live", retain=True)
        message = client.next_message()
        assert message.payload == b"live"
        identified: Any = message.properties
        assert identified.SubscriptionIdentifier == [7]
        assert client.messages.empty()  # "mine" (No Local) did not come back before it
        # Retain Handling 0 on a new subscription sends the retained message, flagged
        # retained (§3.3.1.3).
        assert client.subscribe("v1/devices/me/attributes/#") == [1]
        retained = client.next_message()
        assert (retained.payload, retained.retain) == (b"kept", True)
    finally:
        client.close()


def test_a_subscription_counts_from_its_subscribe_not_its_suback(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """5.0 §3.8.4: the subscription exists once the SUBSCRIBE is processed, so a PUBLISH that
    reaches the broker behind it is delivered, before its subscriber has read the SUBACK.
    §3.8.3.1: No Local spares only the publishing connection's own session, not another
    session of the same device. (The Paho suite's ``test_subscribe_options`` publishes this
    way.)"""
    _, issued = broker.provision("pair")
    certfile = write_pem(tmp_path, issued, "pair")
    publisher = Raw(broker.port, broker.server_cert, certfile, MQTT_5)
    subscriber = Raw(broker.port, broker.server_cert, certfile, MQTT_5)
    try:
        for raw, client_id in ((publisher, "a"), (subscriber, "b")):
            raw.send(Connect(MQTT_5, client_id, True, 60))
            connack = raw.read()
            assert isinstance(connack, Connack)
            assert connack.code == 0
        topic = "v1/devices/me/telemetry"
        subscriber.send(Subscribe(1, (SubscribeRequest(topic, 1, no_local=True),)))
        publisher.send(Publish(topic, b"right behind", 1, packet_id=1))
        assert isinstance(publisher.read(), Puback)
        assert subscriber.read() == Suback(1, (1,))
        delivered = subscriber.read()
        assert isinstance(delivered, Publish)
        assert delivered.payload == b"right behind"
    finally:
        publisher.close()
        subscriber.close()


def test_topic_alias_from_the_client(broker: BrokerThread, tmp_path: Path) -> None:
    """5.0 §3.3.2.3.4: the broker resolves the aliases a client sets and uses."""
    client = _device(broker, tmp_path, "aliaser", client_id="a")
    try:
        assert client.wait_connack()[0] == 0
        assert client.subscribe("v1/devices/me/telemetry") == [1]
        alias = publish_properties(TopicAlias=1)
        client.publish("v1/devices/me/telemetry", b"first", properties=alias)
        client.publish("", b"second", properties=alias)
        payloads = [client.next_message().payload for _ in range(2)]
        assert payloads == [b"first", b"second"]
    finally:
        client.close()


def test_session_expiry_keeps_then_ends_a_session(broker: BrokerThread, tmp_path: Path) -> None:
    """5.0 §3.1.2.11.2: with an expiry interval the session outlives the connection (session
    present, queued message), and ends once the interval has passed."""
    _, issued = broker.provision("expiring")
    certfile = write_pem(tmp_path, issued, "expiring")
    expiry = make_properties(PacketTypes.CONNECT, SessionExpiryInterval=1)
    first = v5_client(
        broker.port, broker.server_cert, certfile, client_id="e", clean_start=False,
        connect_properties=expiry,
    )  # fmt: skip
    assert first.wait_connack()[0] == 0
    assert first.subscribe("v1/devices/me/rpc/request/+") == [1]
    first.close()
    again = v5_client(
        broker.port, broker.server_cert, certfile, client_id="e", clean_start=False,
        connect_properties=expiry,
    )  # fmt: skip
    try:
        assert again.wait_connack()[0] == 0
        assert again.session_present
    finally:
        again.close()
    registry = broker.running.broker.registry
    deadline = time.monotonic() + 10
    while any(key[1] == "e" for key in registry.sessions):
        assert time.monotonic() < deadline, "the session did not expire"
        time.sleep(0.05)


def _raw(broker: BrokerThread, folder: Path, name: str) -> Raw:
    _, issued = broker.provision(name)
    return Raw(broker.port, broker.server_cert, write_pem(folder, issued, name), MQTT_5)


def test_keep_alive_expiry_sends_disconnect_0x8d(broker: BrokerThread, tmp_path: Path) -> None:
    """5.0 §3.1.2.10 and §3.14.2.1: nothing for 1.5 x the keep-alive, then 0x8D."""
    raw = _raw(broker, tmp_path, "sleepy")
    raw.send(Connect(MQTT_5, "sleepy", True, 1))
    connack = raw.read()
    assert isinstance(connack, Connack)
    assert connack.code == 0
    bye = raw.read()
    assert isinstance(bye, Disconnect)
    assert bye.code == 0x8D
    assert raw.read() is None
    raw.sock.close()


def test_too_many_qos_2_in_flight_sends_disconnect_0x93(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """5.0 §4.9: more unacknowledged QoS 2 PUBLISHes than the announced Receive Maximum."""
    raw = _raw(broker, tmp_path, "flooder")
    raw.send(Connect(MQTT_5, "flooder", True, 60))
    connack = raw.read()
    assert isinstance(connack, Connack)
    most = connack.properties.get(Property.RECEIVE_MAXIMUM)
    assert most == broker.settings.max_awaiting_pubrel
    raw.send(
        *(Publish("v1/devices/me/telemetry", b"x", 2, packet_id=n) for n in range(1, most + 2))
    )
    packets = []
    while (packet := raw.read()) is not None:
        packets.append(packet)
    assert len(packets) == most + 1
    assert all(isinstance(packet, Pubrec) for packet in packets[:-1])
    bye = packets[-1]
    assert isinstance(bye, Disconnect)
    assert bye.code == 0x93  # receive maximum exceeded
    assert "await PUBREL" in str(bye.properties.get(Property.REASON_STRING))
    raw.sock.close()


def test_a_topic_alias_above_the_maximum_sends_disconnect_0x94(
    broker: BrokerThread, tmp_path: Path
) -> None:
    raw = _raw(broker, tmp_path, "aliasing")
    raw.send(Connect(MQTT_5, "aliasing", True, 60))
    assert isinstance(raw.read(), Connack)
    alias = broker.settings.max_topic_aliases + 1
    raw.send(Publish("v1/devices/me/telemetry", b"x", properties=Properties([(0x23, alias)])))
    bye = raw.read()
    assert isinstance(bye, Disconnect)
    assert bye.code == 0x94  # 5.0 §3.3.2.3.4 topic alias invalid
    assert "topic alias" in str(bye.properties.get(Property.REASON_STRING))
    raw.sock.close()


def _watch(broker: BrokerThread, topic: str) -> V5Client:
    broker.application("watcher", "watcher", "pw-watcher")
    watcher = v5_client(
        broker.port, broker.server_cert, None, username="watcher", password="pw-watcher"
    )
    assert watcher.wait_connack()[0] == 0
    assert watcher.subscribe(topic) == [1]
    return watcher


def _connect_with_will(raw: Raw, client_id: str, delay: int, expiry: int) -> None:
    will = Will(
        "v1/devices/me/status", b"gone", 1,
        properties=Properties([(Property.WILL_DELAY_INTERVAL, delay), (0x26, ("why", "lost"))]),
    )  # fmt: skip
    expiry_property = Properties([(Property.SESSION_EXPIRY_INTERVAL, expiry)])
    raw.send(Connect(MQTT_5, client_id, True, 60, will=will, properties=expiry_property))
    connack = raw.read()
    assert isinstance(connack, Connack)
    assert connack.code == 0


def test_will_waits_for_its_delay_and_a_reconnect_cancels_it(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """5.0 §3.1.3.2.2: the will goes after its delay, with its properties; none if the
    client takes its session again before."""
    watcher = _watch(broker, "devices/willing/status")
    try:
        raw = _raw(broker, tmp_path, "willing")
        _connect_with_will(raw, "w", delay=1, expiry=60)
        lost = time.monotonic()
        raw.sock.close()  # the network connection ends without DISCONNECT
        will = watcher.next_message()
        assert time.monotonic() - lost >= 0.9  # not before its delay
        assert will.payload == b"gone"
        props: Any = will.properties
        assert props.UserProperty == [("why", "lost")]
        certfile = tmp_path / "willing.nopass.pem"
        first = Raw(broker.port, broker.server_cert, certfile, MQTT_5)
        _connect_with_will(first, "w", delay=30, expiry=60)
        first.sock.close()
        again = Raw(broker.port, broker.server_cert, certfile, MQTT_5)
        resume = Properties([(Property.SESSION_EXPIRY_INTERVAL, 60)])
        again.send(Connect(MQTT_5, "w", False, 60, properties=resume))
        connack = again.read()
        assert isinstance(connack, Connack)
        assert connack.session_present
        again.send(Disconnect())
        assert again.read() is None
        again.sock.close()
        registry = broker.running.broker.registry
        session = next(s for key, s in registry.sessions.items() if key[1] == "w")
        assert session.will_timer is None  # cancelled by the reconnect
        assert watcher.messages.empty()
    finally:
        watcher.close()


def test_one_copy_carries_every_matching_subscription_identifier(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """5.0 §3.3.4: overlapping subscriptions, one message, both identifiers."""
    client = _device(broker, tmp_path, "overlap", client_id="ov")
    try:
        assert client.wait_connack()[0] == 0
        assert client.subscribe_with_id("v1/devices/me/rpc/request/+", 2) == [1]
        assert client.subscribe_with_id("v1/devices/me/#", 3) == [1]
        client.publish("v1/devices/me/rpc/request/9", b"once")
        message = client.next_message()
        props: Any = message.properties
        assert sorted(props.SubscriptionIdentifier) == [2, 3]
        assert client.messages.empty()
    finally:
        client.close()


def test_the_auth_event_says_which_reason_code_a_5_device_read(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """The REST API (and the web UI's device page, which shows the same text) tells an
    operator the reason code the device received."""
    store = broker.running.store
    device, issued = broker.provision("switched-off")
    broker.call(store.set_device_enabled(device.id, False))
    client = v5_client(broker.port, broker.server_cert, write_pem(tmp_path, issued, "off"))
    try:
        assert client.wait_connack()[0] == 0x87
    finally:
        client.close()
    broker.call(broker.running.auth_log.flushed())
    response = httpx.get(
        f"{broker.http_url}/api/v1/auth-events",
        params={"deviceId": str(device.id), "outcome": "denied"},
        headers={"Authorization": f"Bearer {broker.admin_token}"},
        timeout=WAIT,
    )
    assert response.status_code == 200
    [event] = response.json()
    assert event["reason"] == (
        "device_disabled: device 'switched-off' is disabled [MQTT 5 reason code 0x87]"
    )
