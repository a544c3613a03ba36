"""A subscriber that stops reading: bounded memory, losses counted, others unaffected.

Real broker with a small ``max_outgoing_buffer`` and queue, real TLS; the slow subscriber is
a raw TLS socket that subscribes and then never reads (its receive buffer made small, so the
broker's own buffer is what fills), the publisher and the healthy subscriber are paho
clients. The publisher sends in batches and waits for the healthy subscriber to have each
batch, so only the slow one falls behind. QoS 0 to it is dropped past the buffer; QoS 1
waits behind the in-flight window, then in its session's queue, whose oldest messages go
past ``max_queued_messages``. Also: ``nanoiot_protocol_violations_total``.
"""

import asyncio
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from broker.client import MqttClient
from broker.mqtt.encode import encode_publish
from tests.e2e.harness import (
    WAIT,
    BrokerThread,
    Client,
    application_client,
    device_client,
    mqtt_client,
    running_broker,
)

CAP = 64 * 1024
PAYLOAD = 1024
INFLIGHT, QUEUE = 20, 100
BATCH = 32  # messages per round trip: below CAP, so the healthy subscriber never lags a cap
TOPIC = "devices/source/telemetry"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    limits = {
        "max_outgoing_buffer": CAP, "max_inflight_messages": INFLIGHT, "max_queued_messages": QUEUE
    }  # fmt: skip
    with running_broker(tmp_path / "data", **limits) as running:
        yield running


@pytest.fixture
def healthy(broker: BrokerThread) -> Iterator[Client]:
    client = application_client(broker, "healthy", "healthy-pass", client_id="healthy")
    assert client.wait_connack() == 0
    assert client.subscribe(TOPIC, qos=1) == [1]
    yield client
    client.close()


def _string(value: str) -> bytes:
    return len(value).to_bytes(2, "big") + value.encode()


def stalled_subscriber(broker: BrokerThread, qos: int, *, clean: bool) -> ssl.SSLSocket:
    """An application client, subscribed to TOPIC, that will never read again."""
    broker.application("stalled", "stalled", "stalled-pass")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(WAIT)
    raw.connect(("127.0.0.1", broker.port))
    context = ssl.create_default_context(cafile=str(broker.server_cert))
    context.check_hostname = False
    tls = context.wrap_socket(raw)
    flags = 0xC0 | (0x02 if clean else 0)  # user name, password (§3.1.2.8, §3.1.2.9)
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x00"
    body += _string("stalled") + _string("stalled") + _string("stalled-pass")
    tls.sendall(b"\x10" + bytes([len(body)]) + body)
    assert tls.recv(4)[:2] == b"\x20\x02"
    subscribe = b"\x00\x01" + _string(TOPIC) + bytes([qos])
    tls.sendall(b"\x82" + bytes([len(subscribe)]) + subscribe)
    assert tls.recv(5) == b"\x90\x03\x00\x01" + bytes([qos])
    return tls


def _client(broker: BrokerThread, client_id: str) -> MqttClient:
    return next(
        c for c in broker.running.broker.clients() if c.peer and c.peer.client_id == client_id
    )


def _buffered(broker: BrokerThread, client: MqttClient) -> int:
    async def size() -> int:
        return client.tls.buffered()

    return broker.call(size())


def flood(publisher: Client, healthy: Client, batches: int, qos: int, start: int = 0) -> int:
    """Publish ``batches`` batches; the healthy subscriber gets every message, in order."""
    number = start
    for _ in range(batches):
        first = number
        for _ in range(BATCH):
            payload = number.to_bytes(4, "big") + bytes(PAYLOAD - 4)
            publisher.paho.publish("v1/devices/me/telemetry", payload, qos=qos)
            number += 1
        got = [int.from_bytes(healthy.next_message().payload[:4], "big") for _ in range(BATCH)]
        assert got == list(range(first, number))
    return number


def test_qos0_to_a_subscriber_that_stops_reading_is_dropped_and_counted(
    broker: BrokerThread, healthy: Client, tmp_path: Path
) -> None:
    metrics = broker.running.broker.metrics
    stalled = stalled_subscriber(broker, qos=0, clean=True)
    publisher, _ = device_client(broker, tmp_path, "source", client_id="src")
    try:
        assert publisher.wait_connack() == 0
        stalled_client = _client(broker, "stalled")
        sent = 0
        highest = 0
        # Enough to fill the kernel's socket buffers and then the cap, several times over.
        while metrics.messages_dropped < 4 * CAP // PAYLOAD:
            sent = flood(publisher, healthy, 8, qos=0, start=sent)
            highest = max(highest, _buffered(broker, stalled_client))
            assert sent < 40_000, "the stalled subscriber's messages were never dropped"
        assert highest <= CAP + 2 * PAYLOAD  # one message past the cap, TLS overhead
        assert not stalled_client.ended  # QoS 0 alone never closes it
        assert metrics.limit_hits["max_outgoing_buffer"] == metrics.messages_dropped
        scraped = _scrape(broker)
        assert f"nanoiot_messages_dropped_total {float(metrics.messages_dropped)}" in scraped
    finally:
        publisher.close()
        stalled.close()


def test_qos1_to_a_subscriber_that_stops_reading_is_bounded_by_window_and_queue(
    broker: BrokerThread, healthy: Client, tmp_path: Path
) -> None:
    metrics = broker.running.broker.metrics
    # The healthy subscriber's copies at QoS 0: a batch is more than the in-flight window,
    # and at QoS 1 its acknowledgements, late on a busy machine, would make its copies wait
    # behind the window too, counted with the stalled subscriber's.
    assert healthy.subscribe(TOPIC, qos=0) == [0]
    stalled = stalled_subscriber(broker, qos=1, clean=False)
    publisher, _ = device_client(broker, tmp_path, "source", client_id="src")
    batches = 10
    try:
        assert publisher.wait_connack() == 0
        stalled_client = _client(broker, "stalled")
        sent = flood(publisher, healthy, batches, qos=1)
        session = stalled_client.session
        assert session is not None
        assert (len(session.inflight), len(session.queue)) == (INFLIGHT, QUEUE)
        assert _buffered(broker, stalled_client) <= INFLIGHT * 2 * PAYLOAD
        assert metrics.limit_hits["max_queued_messages"] == sent - INFLIGHT - QUEUE
        assert metrics.limit_hits["max_inflight_messages"] == sent - INFLIGHT  # each waited
        assert metrics.messages_dropped == 0  # QoS 1 is never dropped for the buffer
    finally:
        publisher.close()
        stalled.close()

    back = mqtt_client(
        broker.port, broker.server_cert, None, client_id="stalled", clean_session=False,
        username="stalled", password="stalled-pass",
    )  # fmt: skip
    try:
        assert back.wait_connack() == 0
        received = [int.from_bytes(back.next_message().payload[:4], "big") for _ in range(120)]
        # The window, re-sent first (§4.4), then the newest of the queue, in order.
        assert received == [*range(INFLIGHT), *range(sent - QUEUE, sent)]
        assert back.no_message()
    finally:
        back.close()


def _scrape(broker: BrokerThread) -> str:
    return generate_latest(broker.running.broker.metrics.registry).decode()


def test_protocol_violations_are_counted(broker: BrokerThread, tmp_path: Path) -> None:
    metrics = broker.running.broker.metrics
    _, issued = broker.provision("pump")
    certfile = tmp_path / "pump.pem"
    certfile.write_text(issued.key_pem + issued.cert_pem)
    context = ssl.create_default_context(cafile=str(broker.server_cert))
    context.check_hostname = False
    context.load_cert_chain(certfile)

    def connection() -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT)
        return context.wrap_socket(raw)

    connect = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01p"
    with connection() as tls:  # CONNECT with the reserved flag set (§3.1.2.3)
        tls.sendall(b"\x10\x0d\x00\x04MQTT\x04\x03\x00\x3c\x00\x01p")
        assert tls.recv(1) == b""
    assert metrics.protocol_violations == 1
    with connection() as tls:  # PUBLISH to a wildcard topic (§3.3.2.1)
        tls.sendall(connect)
        assert tls.recv(4) == b"\x20\x02\x00\x00"
        tls.sendall(encode_publish(b"v1/devices/me/+", b"x", 0, 0))
        assert tls.recv(1) == b""
    assert _settled(broker, lambda: metrics.protocol_violations) == 2
    with connection() as tls:  # SUBSCRIBE with reserved flags 0 (§3.8.1)
        tls.sendall(connect)
        assert tls.recv(4) == b"\x20\x02\x00\x00"
        tls.sendall(b"\x80\x06\x00\x01\x00\x01t\x00")
        assert tls.recv(1) == b""
    assert _settled(broker, lambda: metrics.protocol_violations) == 3
    assert "nanoiot_protocol_violations_total 3.0" in _scrape(broker)


def _settled(broker: BrokerThread, value: Callable[[], int]) -> int:
    """``value()`` read on the broker's loop after the work already queued there."""

    async def read() -> int:
        await asyncio.sleep(0)
        return value()

    return broker.call(read())
