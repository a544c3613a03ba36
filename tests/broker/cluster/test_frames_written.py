"""What a crossing message costs beyond one that stays, counted, not timed: a frame's messages
reach a subscriber in one write (``broker.cluster.frames_in``), and queueing a message for a
member makes no call beyond its encoding (``Forwarder.forward``). A real node on the machine's
NATS, a real paho subscriber over mutual TLS; the frame is sent as its sending member would.
A subscriber that stops reading still holds ``max_outgoing_buffer`` bytes at most, past it
by one message, as when each message is written alone."""

from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from broker.client import MqttClient
from broker.cluster.forward import Forwarder
from broker.cluster.frames import encode
from broker.cluster.link import ClusterLink
from broker.cluster.router import ClusterRouter
from broker.router import Message
from broker.tls_protocol import TlsProtocol
from tests.broker.cluster.test_frames_cost import calls_per
from tests.broker.test_outgoing_buffer import CAP, PAYLOAD, TOPIC, stalled_subscriber
from tests.e2e.conftest import broker_settings
from tests.e2e.harness import BrokerThread, mqtt_client, write_pem
from tests.natsserver import NATS_URL

RECORDS = 100
MIB = 1024 * 1024


@pytest.fixture
def node(cluster_name: str, tmp_path: Path) -> Iterator[BrokerThread]:
    settings = broker_settings(
        tmp_path / "data", nats_url=NATS_URL, cluster_name=cluster_name, node_name="node-b",
        max_outgoing_buffer=CAP,
    )  # fmt: skip
    with BrokerThread(settings) as running:
        yield running


def _frame(topic: str, records: int = RECORDS, size: int = 0) -> bytes:
    """``records`` QoS 0 messages on ``topic`` as another member's frame holds them: their
    numbers, padded to ``size`` bytes."""
    frame = bytearray()
    for i in range(records):
        payload = str(i).encode().ljust(size, b".")
        encode(Message(topic, payload, 0, id=i + 1), frame, 0.0)
    return bytes(frame)


async def _send(subject: str, frame: bytes) -> None:
    client = await nats.connect(NATS_URL)
    try:
        await client.publish(subject, frame)
        await client.flush()
    finally:
        await client.close()


def test_a_frames_messages_reach_a_subscriber_in_one_write(
    node: BrokerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _device, issued = node.provision("sensor")
    certfile = write_pem(tmp_path, issued, "sensor")
    subscriber = mqtt_client(node.port, node.server_cert, certfile, client_id="reader")
    try:
        assert subscriber.wait_connack() == 0
        assert subscriber.subscribe("devices/sensor/in/+", qos=0) == [0]
        writes: list[int] = []
        send_plain = TlsProtocol.send_plain

        def counted(link: TlsProtocol, data: bytes) -> None:
            writes.append(len(data))
            send_plain(link, data)

        monkeypatch.setattr(TlsProtocol, "send_plain", counted)
        router = node.running.broker.router
        assert isinstance(router, ClusterRouter)
        node.call(_send(router.forwarder.subject("node-b"), _frame("devices/sensor/in/x")))
        got = [subscriber.next_message() for _ in range(RECORDS)]
        assert [m.payload for m in got] == [str(i).encode() for i in range(RECORDS)]  # in order
        assert {m.topic for m in got} == {"devices/sensor/in/x"}
        assert len(writes) == 1, f"{len(writes)} writes for one frame of {RECORDS} messages"
        assert subscriber.no_message()
    finally:
        subscriber.close()


async def test_queueing_a_message_for_a_member_calls_its_encoding_alone(
    link: ClusterLink,
) -> None:
    forwarder = Forwarder(link, MIB, lambda _member: None)
    message = Message("devices/d1/telemetry", b"x" * 64, 0, id=7, routed_at=3)

    def queue() -> None:
        for _ in range(RECORDS):
            assert forwarder.forward(("node-b",), message, ("node-b",), {}) is None

    # forward and encode; the frame made and its sending scheduled once (was: the loop's
    # clock, the frame's checks, the confirmations combined and the properties' bytes, each)
    assert calls_per(RECORDS, queue) < 2.1
    expected = bytearray()
    for _ in range(RECORDS):
        encode(message, expected, 0.0)
    assert forwarder._frames["node-b"].data == expected
    forwarder._frames.clear()  # nothing sent: the forwarder was not started


async def _taken(subject: str, frame: bytes, times: int) -> None:
    """``frame`` sent ``times`` times, each once the node took the one before (it answers a
    frame sent with a reply subject once it routed it)."""
    client = await nats.connect(NATS_URL)
    try:
        for _ in range(times):
            await client.request(subject, frame, timeout=10)
    finally:
        await client.close()


def test_a_subscriber_that_stops_reading_holds_its_buffer_and_one_message_at_most(
    node: BrokerThread,
) -> None:
    metrics = node.running.broker.metrics
    stalled = stalled_subscriber(node, qos=0, clean=True)
    try:
        client = next(c for c in node.running.broker.clients() if c.peer is not None)
        router = node.running.broker.router
        assert isinstance(router, ClusterRouter)
        records = 32
        frame = _frame(TOPIC, records, PAYLOAD)
        subject = router.forwarder.subject("node-b")
        highest = 0
        while metrics.messages_dropped < 4 * CAP // PAYLOAD:  # the cap hit, many times over
            node.call(_taken(subject, frame, 4))
            highest = max(highest, node.call(_buffered(client)))
            assert metrics.messages_out < 40_000, "its messages were never dropped"
        assert highest <= CAP + 2 * PAYLOAD  # one message past it, and TLS overhead
        assert not client.ended  # QoS 0 alone never closes it
        assert metrics.limit_hits["max_outgoing_buffer"] == metrics.messages_dropped
    finally:
        stalled.close()


async def _buffered(client: MqttClient) -> int:
    return client.tls.buffered()
