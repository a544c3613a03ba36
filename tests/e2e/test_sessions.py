"""Sessions belong to devices: session defects measured in amqtt 0.12.1 must not come back.

Each test here fails against vanilla amqtt 0.12.1: a client id is enough to take over a
persistent session and its queued messages; an unauthenticated CONNECT wipes a session's
subscriptions; retained messages are sent without an ACL check; delivery goes above the
publisher's QoS; keep-alive is never enforced.
"""

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.certgen import issue
from tests.e2e.harness import (
    WAIT,
    BrokerThread,
    Client,
    application_client,
    device_client,
    mqtt_client,
    write_pem,
)


@pytest.fixture
def backend(broker: BrokerThread) -> Iterator[Client]:
    """A backend application (MQTT basic credentials, no certificate)."""
    client = application_client(broker, "backend", "s3cret-pass", client_id="backend")
    assert client.wait_connack() == 0
    yield client
    client.close()


def test_client_id_alone_never_reaches_another_devices_session(
    broker: BrokerThread, backend: Client, tmp_path: Path
) -> None:
    victim, victim_cert = device_client(
        broker, tmp_path, "victim", client_id="shared", clean_session=False
    )
    assert victim.wait_connack() == 0
    assert victim.subscribe("v1/devices/me/rpc/request/+", qos=1) == [1]
    victim.close()
    backend.publish("devices/victim/rpc/request/1", b"queued for victim", qos=1)

    # Another device, same client id, persistent session: it gets a session of its own.
    intruder, _ = device_client(
        broker, tmp_path, "intruder", client_id="shared", clean_session=False
    )
    assert intruder.wait_connack() == 0
    assert intruder.paho.is_connected()
    # A certless client with a token, same client id.
    token_device = broker.call(broker.running.store.create_device("token-device"))
    broker.call(broker.running.store.add_token_credential(token_device.id, "tok-123"))
    certless = mqtt_client(
        broker.port,
        broker.server_cert,
        None,
        client_id="shared",
        clean_session=False,
        username="tok-123",
    )
    assert certless.wait_connack() == 0

    # The victim comes back and finds its message: the queue worked and nobody took it.
    back, _ = device_client(
        broker, tmp_path, "victim", victim_cert, client_id="shared", clean_session=False
    )
    try:
        assert back.wait_connack() == 0
        message = back.next_message()
        assert (message.topic, message.payload) == (
            "v1/devices/me/rpc/request/1",
            b"queued for victim",
        )
        assert intruder.no_message()
        assert certless.no_message()
    finally:
        for client in (back, intruder, certless):
            client.close()


def test_refused_connect_never_touches_a_session(
    broker: BrokerThread, backend: Client, tmp_path: Path
) -> None:
    victim, victim_cert = device_client(
        broker, tmp_path, "victim", client_id="v", clean_session=False
    )
    assert victim.wait_connack() == 0
    assert victim.subscribe("v1/devices/me/attributes", qos=1) == [1]
    victim.close()
    # An unknown certificate, same client id, clean session: refused before any session work.
    stranger = mqtt_client(
        broker.port, broker.server_cert, write_pem(tmp_path, issue("x"), "x"), client_id="v"
    )
    assert stranger.wait_connack() == 5
    stranger.close()

    backend.publish("devices/victim/attributes", b"still subscribed", qos=1)
    back, _ = device_client(
        broker, tmp_path, "victim", victim_cert, client_id="v", clean_session=False
    )
    try:
        assert back.wait_connack() == 0
        assert back.next_message().payload == b"still subscribed"
    finally:
        back.close()


def test_retained_messages_honour_the_acl(
    broker: BrokerThread, backend: Client, tmp_path: Path
) -> None:
    owner, _ = device_client(broker, tmp_path, "owner", client_id="o", clean_session=False)
    assert owner.wait_connack() == 0
    assert owner.subscribe("v1/devices/me/#") == [1]
    owner.publish("v1/devices/me/attributes", b"secret", qos=1, retain=True)
    assert owner.next_message().topic == "v1/devices/me/attributes"

    other, _ = device_client(broker, tmp_path, "other", client_id="x")
    try:
        assert other.wait_connack() == 0
        assert other.subscribe("v1/devices/me/#") == [1]
        assert other.subscribe("devices/owner/#") == [128]  # another device's topics: refused
        # The backend may read it, so the retained message exists and is delivered on subscribe.
        assert backend.subscribe("devices/+/attributes") == [1]
        retained = backend.next_message()
        assert (retained.topic, retained.payload, retained.retain) == (
            "devices/owner/attributes",
            b"secret",
            True,
        )
        assert other.no_message()
    finally:
        owner.close()
        other.close()


def test_delivery_qos_is_the_lower_of_publish_and_subscription(
    broker: BrokerThread, backend: Client, tmp_path: Path
) -> None:
    device, _ = device_client(broker, tmp_path, "meter", client_id="m")
    try:
        assert device.wait_connack() == 0
        assert backend.subscribe("devices/+/telemetry", qos=0) == [0]
        device.publish("v1/devices/me/telemetry", b"q1", qos=1)
        message = backend.next_message()
        assert (message.topic, message.qos) == ("devices/meter/telemetry", 0)

        assert device.subscribe("v1/devices/me/rpc/request/+", qos=1) == [1]
        backend.publish("devices/meter/rpc/request/5", b"q0", qos=0)
        assert device.next_message().qos == 0
    finally:
        device.close()


def test_me_topics_are_per_device(broker: BrokerThread, backend: Client, tmp_path: Path) -> None:
    first, _ = device_client(broker, tmp_path, "first", client_id="a")
    second, _ = device_client(broker, tmp_path, "second", client_id="b")
    try:
        assert first.wait_connack() == 0
        assert second.wait_connack() == 0
        for client in (first, second):
            assert client.subscribe("v1/devices/me/telemetry") == [1]
        assert backend.subscribe("devices/+/telemetry") == [1]
        first.publish("v1/devices/me/telemetry", b"from first")
        assert first.next_message().topic == "v1/devices/me/telemetry"
        seen = backend.next_message()
        assert (seen.topic, seen.payload) == ("devices/first/telemetry", b"from first")
        assert second.no_message()
        assert first.subscribe("#") == [128]
        assert first.subscribe("devices/+/telemetry") == [128]
    finally:
        first.close()
        second.close()


def test_keep_alive_is_enforced(broker: BrokerThread, tmp_path: Path) -> None:
    """MQTT 3.1.1 §3.1.2.10: no packet within 1.5 x keep-alive closes the connection."""
    _, device = broker.provision("quiet")
    context = ssl.create_default_context(cafile=str(broker.server_cert))
    context.load_cert_chain(str(write_pem(tmp_path, device, "quiet")))
    connect = bytes([0x10, 14, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 1, 0, 2]) + b"kq"
    raw = socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(connect)  # keep-alive 1 s, then silence
        assert tls.recv(4) == bytes([0x20, 2, 0, 0])
        started = time.monotonic()
        assert tls.recv(1) == b""  # the broker closed the connection
        quiet_for = time.monotonic() - started
    assert quiet_for >= 1.0  # not before the keep-alive itself has passed
