"""An MQTT 3.1.1 client that does not wait for its PUBACKs while the store cannot write.

The broker acknowledges a QoS 1 message only once the store has it (§4.3.2), and 3.1.1 has
no Receive Maximum: before backpressure, such a client made the broker hold everything it
sent within ``ack_timeout``. Now the broker stops reading its socket once
``max_awaiting_pubrel`` of its messages are unanswered, and reads on as the PUBACKs go out.
A real broker on SQLite whose write lock another process holds, a raw 3.1.1 client over
mutual TLS, a persistent subscriber that is away: the broker holds the bound and no more,
does not close the client (nor for keep-alive, which is shorter than the outage), and once the
lock is gone every message is acknowledged and reaches the subscriber, in order.
"""

import threading
from pathlib import Path

import pytest

from broker.client import MqttClient
from broker.mqtt.packets import (
    MQTT_3_1_1,
    Connack,
    Connect,
    Disconnect,
    Puback,
    Publish,
    Suback,
    Subscribe,
    SubscribeRequest,
)
from broker.server import RunningBroker
from tests.e2e.harness import WAIT, BrokerThread, broker_settings, write_pem
from tests.e2e.peers import Raw
from tests.logwatch import Lines, watching
from tests.reliability.store_faults import SqliteLock

BOUND = 10  # max_awaiting_pubrel
COUNT = 300  # messages the client sends without waiting
PAYLOAD = b"p" * 1024
KEEP_ALIVE = 1  # seconds: the broker allows 1.5 (§3.1.2.10), less than the lock lasts
# The store's first write fails after this: past the broker's second keep-alive check
# (1.5 s after CONNACK, then every 1.5 s while the client is not read).
BUSY_TIMEOUT = 4.0
TOPIC = "v1/devices/me/telemetry"


def _connect(raw: Raw, client_id: str, *, clean: bool, keep_alive: int = 60) -> Connack:
    raw.send(Connect(MQTT_3_1_1, client_id, clean, keep_alive))
    connack = raw.read()
    assert isinstance(connack, Connack)
    assert connack.code == 0
    return connack


async def _held(running: RunningBroker, client_id: str) -> tuple[int | None, int]:
    """The publisher's messages the broker holds unanswered (None: it is not connected), and
    every PUBLISH the broker read."""
    clients = [c for c in running.broker.registry.live_clients() if _named(c, client_id)]
    held = len(clients[0]._acks._held or ()) if clients else None
    return held, running.broker.metrics.messages_in


def _named(client: MqttClient, client_id: str) -> bool:
    return client.peer is not None and client.peer.client_id == client_id


def test_the_broker_stops_reading_a_publisher_at_the_bound_and_loses_nothing(
    tmp_path: Path,
) -> None:
    settings = broker_settings(
        tmp_path / "data", max_awaiting_pubrel=BOUND, ack_timeout=60,
        database_statement_timeout=BUSY_TIMEOUT,
    )  # fmt: skip
    with BrokerThread(settings) as broker, watching(WAIT, "broker.client", "broker.journal") as log:
        _, issued = broker.provision("sensor")
        certfile = write_pem(tmp_path, issued, "sensor")
        with Raw(broker.port, broker.server_cert, certfile) as away:
            _connect(away, "away", clean=False)
            away.send(Subscribe(1, (SubscribeRequest(TOPIC, 1),)))
            assert away.read() == Suback(1, (1,))
            away.send(Disconnect())
            assert away.closed()
        lock = SqliteLock(tmp_path / "data" / "nanoiot.db")
        lock.begin()
        sent = [Publish(TOPIC, PAYLOAD + b"%d" % n, 1, packet_id=n) for n in range(1, COUNT + 1)]
        try:
            with Raw(broker.port, broker.server_cert, certfile) as publisher:
                _published(broker, log, lock, publisher, sent)
        finally:
            lock.end()  # (again: it ends within ``_published``)

        with Raw(broker.port, broker.server_cert, certfile) as back:
            assert _connect(back, "away", clean=False).session_present
            assert _receive(back, COUNT) == [p.payload for p in sent]


def _published(
    broker: BrokerThread, log: Lines, lock: SqliteLock, publisher: Raw, sent: list[Publish]
) -> None:
    """``sent`` without waiting while the store is locked, then the lock is gone: what the
    broker held meanwhile, and every PUBACK afterwards."""
    try:
        _connect(publisher, "publisher", clean=True, keep_alive=KEEP_ALIVE)
        # Blocks once the broker stops reading and the socket buffers are full.
        sender = threading.Thread(target=publisher.send, args=sent, daemon=True)
        sender.start()
        if not log.saw("reading paused"):
            held, read = broker.call(_held(broker.running, "publisher"))
            pytest.fail(f"not paused; {read} PUBLISHes read, {held} held unanswered")
        assert broker.call(_held(broker.running, "publisher")) == (BOUND, BOUND)
        # The first write fails after BUSY_TIMEOUT, longer than the keep-alive allows:
        # a client the broker does not read is not timed out.
        assert log.saw("session changes cannot be saved")
        assert broker.call(_held(broker.running, "publisher")) == (BOUND, BOUND)
    finally:
        lock.end()
    sender.join(WAIT)
    assert not sender.is_alive()
    answers = [publisher.read() for _ in sent]
    assert answers == [Puback(n) for n in range(1, COUNT + 1)]  # in order (§4.6)
    publisher.send(Disconnect())
    assert publisher.closed()
    assert broker.running.broker.metrics.publishers_paused >= 1
    assert "nanoiot_publishers_paused_total" in broker.metrics()


def _receive(raw: Raw, count: int) -> list[bytes]:
    """The payloads of ``count`` messages, each acknowledged (the broker sends the next ones
    as the in-flight window allows)."""
    payloads: list[bytes] = []
    while len(payloads) < count:
        packet = raw.read()
        assert isinstance(packet, Publish)
        assert packet.packet_id is not None
        payloads.append(packet.payload)
        raw.send(Puback(packet.packet_id))
    return payloads
