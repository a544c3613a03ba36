"""PUBLISH delivery (``broker.inbound``, ``broker.router``, ``broker.client.deliver``).

Real broker, real TLS, real paho clients: order per publisher, QoS 1 held until PUBACK and
re-sent with DUP to a persistent session, the ACL on delivery, retained messages, wills, the
message counters, and a protocol violation closing the sender.
"""

import asyncio
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.mqtt.encode import encode_publish
from nanoiot.cli.serve import run_event_loop
from tests.e2e.harness import (
    WAIT,
    BrokerThread,
    Client,
    application_client,
    device_client,
    mqtt_client,
    write_pem,
)

COUNT = 300


@pytest.fixture
def backend(broker: BrokerThread) -> Iterator[Client]:
    client = application_client(broker, "backend", "s3cret-pass", client_id="backend")
    assert client.wait_connack() == 0
    yield client
    client.close()


@pytest.mark.parametrize("qos", [0, 1])
def test_one_publishers_messages_arrive_all_and_in_order(
    broker: BrokerThread, backend: Client, tmp_path: Path, qos: int
) -> None:
    device, _ = device_client(broker, tmp_path, "sensor", client_id="s")
    try:
        assert device.wait_connack() == 0
        assert backend.subscribe("devices/sensor/telemetry", qos=qos) == [qos]
        for number in range(COUNT):
            device.paho.publish("v1/devices/me/telemetry", str(number).encode(), qos=qos)
        received = [backend.next_message() for _ in range(COUNT)]
        assert [int(m.payload) for m in received] == list(range(COUNT))
        assert {m.qos for m in received} == {qos}
        assert {m.topic for m in received} == {"devices/sensor/telemetry"}
    finally:
        device.close()


def test_every_subscriber_gets_its_own_copy_and_counters_count(
    broker: BrokerThread, backend: Client, tmp_path: Path
) -> None:
    device, _ = device_client(broker, tmp_path, "meter", client_id="m")
    metrics = broker.running.broker.metrics
    try:
        assert device.wait_connack() == 0
        assert device.subscribe("v1/devices/me/telemetry", qos=1) == [1]
        assert backend.subscribe("devices/+/telemetry", qos=1) == [1]
        before_in, before_out = metrics.messages_in, metrics.messages_out
        device.publish("v1/devices/me/telemetry", b"21.5", qos=1)
        # The device gets it back in the form it subscribed in; the backend by name.
        assert device.next_message().topic == "v1/devices/me/telemetry"
        assert backend.next_message().topic == "devices/meter/telemetry"
        assert (metrics.messages_in - before_in, metrics.messages_out - before_out) == (1, 2)
    finally:
        device.close()


def test_delivery_honours_the_acl(broker: BrokerThread, backend: Client, tmp_path: Path) -> None:
    owner, _ = device_client(broker, tmp_path, "owner", client_id="o")
    other, _ = device_client(broker, tmp_path, "other", client_id="x")
    try:
        assert owner.wait_connack() == 0
        assert other.wait_connack() == 0
        assert other.subscribe("v1/devices/me/#") == [1]
        assert other.subscribe("devices/owner/#") == [128]
        assert backend.subscribe("devices/#") == [1]
        owner.publish("devices/other/telemetry", b"not mine to write", qos=1)  # dropped
        owner.publish("v1/devices/me/telemetry", b"mine", qos=1)
        seen = backend.next_message()
        assert (seen.topic, seen.payload) == ("devices/owner/telemetry", b"mine")
        assert other.no_message()
        assert backend.no_message()
    finally:
        owner.close()
        other.close()


def test_retained_message_is_kept_replaced_and_cleared(
    broker: BrokerThread, backend: Client, tmp_path: Path
) -> None:
    device, _ = device_client(broker, tmp_path, "lamp", client_id="l")
    try:
        assert device.wait_connack() == 0
        device.publish("v1/devices/me/attributes", b"on", qos=1, retain=True)
        device.publish("v1/devices/me/attributes", b"off", qos=0, retain=True)
        device.publish("v1/devices/me/telemetry", b"not retained", qos=1)
        assert backend.subscribe("devices/lamp/#", qos=1) == [1]
        retained = backend.next_message()
        assert (retained.topic, retained.payload, retained.retain, retained.qos) == (
            "devices/lamp/attributes", b"off", True, 0,
        )  # fmt: skip
        assert backend.no_message()
        device.publish("v1/devices/me/attributes", b"", qos=1, retain=True)  # §3.3.1.3
        assert backend.next_message().payload == b""
        late = mqtt_client(
            broker.port, broker.server_cert, None,
            client_id="late", username="backend", password="s3cret-pass",
        )  # fmt: skip
        try:
            assert late.wait_connack() == 0
            assert late.subscribe("devices/lamp/#", qos=1) == [1]
            assert late.no_message()
        finally:
            late.close()
    finally:
        device.close()


def test_unacknowledged_qos1_is_resent_with_dup_to_a_persistent_session(
    broker: BrokerThread, backend: Client, tmp_path: Path
) -> None:
    first, issued = device_client(broker, tmp_path, "valve", client_id="v", clean_session=False)
    first.paho.manual_ack_set(True)  # receive, never acknowledge
    assert first.wait_connack() == 0
    assert first.subscribe("v1/devices/me/rpc/request/+", qos=1) == [1]
    backend.publish("devices/valve/rpc/request/1", b"open", qos=1)
    original = first.next_message()
    assert (original.payload, original.dup) == (b"open", False)
    first.close()

    again, _ = device_client(broker, tmp_path, "valve", issued, client_id="v", clean_session=False)
    try:
        assert again.wait_connack() == 0
        resent = again.next_message()
        assert (resent.payload, resent.dup, resent.mid) == (b"open", True, original.mid)
        assert again.no_message()  # acknowledged this time (paho's automatic PUBACK)
    finally:
        again.close()


def test_will_is_published_when_the_broker_closes_for_a_violation(
    broker: BrokerThread, backend: Client, tmp_path: Path
) -> None:
    assert backend.subscribe("devices/+/status", qos=1) == [1]
    _, issued = broker.provision("pump")
    certfile = write_pem(tmp_path, issued, "pump")
    context = ssl.create_default_context(cafile=str(broker.server_cert))
    context.check_hostname = False
    context.load_cert_chain(certfile)
    with (
        socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT) as raw,
        context.wrap_socket(raw) as tls,
    ):
        will_topic, will = b"v1/devices/me/status", b"gone"
        variable = b"\x00\x04MQTT\x04\x0e\x00\x3c"  # clean session, will QoS 1
        payload = b"\x00\x01p" + len(will_topic).to_bytes(2, "big") + will_topic
        payload += len(will).to_bytes(2, "big") + will
        tls.sendall(b"\x10" + bytes([len(variable) + len(payload)]) + variable + payload)
        assert tls.recv(4) == b"\x20\x02\x00\x00"
        # A PUBLISH to a wildcard topic is a protocol violation: the broker closes the
        # connection, and a close the client did not ask for publishes its will (§3.1.2.5).
        tls.sendall(encode_publish(b"v1/devices/me/+", b"x", 0, 0))
        assert tls.recv(1) == b""
    message = backend.next_message()
    assert (message.topic, message.payload, message.qos) == ("devices/pump/status", b"gone", 1)


def test_serve_runs_on_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    seen: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        seen.append(asyncio.get_running_loop())

    run_event_loop(main())
    assert isinstance(seen[0], uvloop.Loop)
