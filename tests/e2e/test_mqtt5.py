"""MQTT 5 end to end over mutual TLS with paho-mqtt 2 (MQTTv5): CONNACK, refusals with their
reason codes and strings, message properties, subscription options, and 3.1.1 and 5.0 clients
on the same broker. How the server ends a 5.0 connection is in ``test_mqtt5_disconnect``."""

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
from paho.mqtt.packettypes import PacketTypes

from auth.kinds import CredentialStatus
from broker.mqtt.packets import (
    MQTT_5,
    Connect,
    Puback,
    Publish,
    Suback,
    Subscribe,
    SubscribeRequest,
)
from tests.certgen import issue
from tests.e2e.expiries import Expiries
from tests.e2e.harness import WAIT, BrokerThread, device_client, write_pem
from tests.e2e.peers import Raw
from tests.e2e.v5_client import (
    V5Client,
    make_properties,
    publish_properties,
    reason_string,
    v5_client,
)


def _device(broker: BrokerThread, folder: Path, name: str, **options: object) -> V5Client:
    _, issued = broker.provision(name)
    certfile = write_pem(folder, issued, name)
    return v5_client(broker.port, broker.server_cert, certfile, **options)  # type: ignore[arg-type]


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
            assert words in reason_string(props), what
        finally:
            client.close()


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
            raw.connect(Connect(MQTT_5, client_id, True, 60))
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


def test_session_expiry_keeps_then_ends_a_session(
    broker: BrokerThread, tmp_path: Path, expiries: Expiries
) -> None:
    """5.0 §3.1.2.11.2: with an expiry interval the session outlives the connection (session
    present, queued message), and ends once the interval has passed."""
    device, issued = broker.provision("expiring")
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
    assert expiries.keys.get(timeout=WAIT) == f"{device.id}/e"

    async def kept() -> bool:  # on the broker's loop: once the expiry's callback has run
        return (str(device.id), "e") in broker.running.broker.registry.sessions

    assert not broker.call(kept())


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
